"""Pass 8 (``rowcost``): bound the per-row cost of row-level expressions by constants derived from the query text.

A query may not make one row much more expensive than another: a ``CASE WHEN <one person> THEN
replace(replace(…))`` that grows a string only on that person's rows made their presence visible
in the query's time and memory (issue "side channels"). With L the longest text value a row
holds, this pass computes for every text expression a bound ``mult·L + add`` on its size in bytes
and for the whole row the text work ``Σ mult`` (bytes processed by text functions, in units of L),
and refuses with 54001 (before the charge) when a bound exceeds
:data:`~dpsql.rewriter.functions.MAX_TEXT_GROWTH`, ``MAX_TEXT_CONSTANT`` or ``MAX_TEXT_WORK``, or
when expressions nest deeper than ``MAX_EXPRESSION_DEPTH``. Numbers, booleans, dates and
timestamps cost O(1) per operation (see :mod:`~dpsql.rewriter.functions`).

>>> from sqlglot import parse_one
>>> check_row_cost(parse_one("SELECT COUNT(*) FROM t AS t WHERE replace(t.h, 'a', 'bb') = 'x'"), {"t.h": "text"})
>>> nested = "replace(replace(replace(t.h, 'a', 'bbbb'), 'b', 'cccc'), 'c', 'dddd')"
>>> check_row_cost(parse_one(f"SELECT COUNT(*) FROM t AS t WHERE {nested} = 'x'"), {"t.h": "text"})
Traceback (most recent call last):
...
dpsql.errors.StatementTooComplex: a row-level text value could grow to 64 times the longest input value (the limit is 16) ...
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from sqlglot import exp

from dpsql.errors import StatementTooComplex
from dpsql.rewriter import functions as F
from dpsql.rewriter.families import Families, type_family

_NON_TEXT_AS_TEXT = 64  # bytes of a number, date or timestamp printed as text
_NEUTRAL = (exp.Paren, exp.Alias, exp.Column, exp.Literal, exp.Identifier, exp.Null, exp.Boolean, exp.Star, exp.Var,
            exp.DataType, exp.DataTypeParam, exp.Table, exp.TableAlias, exp.Placeholder)
_STRUCTURE = (exp.Select, exp.From, exp.Join, exp.Where, exp.Group, exp.Having, exp.Order, exp.Ordered, exp.Limit,
              exp.Offset, exp.With, exp.CTE, exp.Subquery, exp.Filter, exp.Distinct)


@dataclass(frozen=True)
class Size:
    """A bound ``mult·L + add`` on a text value's size in bytes (L: the longest text value of the row)."""

    mult: Fraction
    add: Fraction

    def __add__(self, other: Size) -> Size:
        return Size(self.mult + other.mult, self.add + other.add)

    def scaled(self, factor: Fraction) -> Size:
        """This bound times ``factor``."""
        return Size(self.mult * factor, self.add * factor)

    def join(self, other: Size) -> Size:
        """A bound for a value that is one of the two (componentwise maximum)."""
        return Size(max(self.mult, other.mult), max(self.add, other.add))


_ZERO = Size(Fraction(0), Fraction(0))
# operators and functions that read their text operands once (besides those with a text_size)
_TEXT_SCANNING = (exp.Like, exp.ILike, exp.StrPosition, exp.StartsWith, exp.Length, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT,
                  exp.LTE, exp.In)


def check_row_cost(select: exp.Expression, families: Families) -> None:
    """Raise StatementTooComplex (54001) when a row-level expression of ``select`` nests too deep,
    can grow a text value beyond the limits, or does too much text work per row."""
    depth = _depth(select)
    if depth > F.MAX_EXPRESSION_DEPTH:
        raise StatementTooComplex(
            f"expressions nest {depth} levels deep (the limit is {F.MAX_EXPRESSION_DEPTH})",
            hint="simplify the expression",
        )
    work = [Fraction(0)]
    _size(select, families, work)
    if work[0] > F.MAX_TEXT_WORK:
        raise StatementTooComplex(
            f"the text functions of one row would process {_fmt(work[0])} times the longest input value "
            f"(the limit is {F.MAX_TEXT_WORK})",
            hint="use fewer string functions over text columns",
        )


def _fmt(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{float(v):.3g}"


def _depth(node: exp.Expression) -> int:
    """The nesting depth of operators and functions (structure and leaves count 0)."""
    best = 0
    stack: list[tuple[exp.Expression, int]] = [(node, 0)]
    while stack:
        n, d = stack.pop()
        if not isinstance(n, _NEUTRAL + _STRUCTURE):
            d += 1
            best = max(best, d)
        for value in n.args.values():
            if isinstance(value, exp.Expression):
                stack.append((value, d))
            elif isinstance(value, list):
                stack.extend((v, d) for v in value if isinstance(v, exp.Expression))
    return best


def _check(size: Size) -> Size:
    if size.mult > F.MAX_TEXT_GROWTH:
        raise StatementTooComplex(
            f"a row-level text value could grow to {_fmt(size.mult)} times the longest input value (the limit is {F.MAX_TEXT_GROWTH})",
            hint="use fewer nested replace/concat calls, or shorter replacement strings",
        )
    if size.add > F.MAX_TEXT_CONSTANT:
        raise StatementTooComplex(
            f"a row-level text value could hold {_fmt(size.add)} bytes of literal text (the limit is {F.MAX_TEXT_CONSTANT})",
            hint="use shorter string literals",
        )
    return size


def _literal_length(node: exp.Expression | None) -> int:
    while isinstance(node, exp.Paren | exp.Cast):
        node = node.this
    if isinstance(node, exp.Literal):
        return len(node.this.encode())
    return 0


def _size(node: exp.Expression, fams: Families, work: list[Fraction]) -> Size:
    """The size bound of ``node`` as text; adds the text work of ``node``'s subtree to ``work[0]``."""
    kids = [v for value in node.args.values() for v in (value if isinstance(value, list) else [value]) if isinstance(v, exp.Expression)]
    if isinstance(node, exp.Column):
        return Size(Fraction(1), Fraction(0)) if type_family(node, fams) == "text" else Size(Fraction(0), Fraction(_NON_TEXT_AS_TEXT))
    if isinstance(node, exp.Literal):
        return Size(Fraction(0), Fraction(len(node.this.encode())))
    sizes = {id(k): _size(k, fams, work) for k in kids}
    text_inputs = sum((sizes[id(k)].mult for k in kids if type_family(k, fams) in ("text", "unknown")), Fraction(0))
    rule = F.SCALAR_FUNCTIONS.get(type(node))
    first = sizes[id(node.this)] if isinstance(node.args.get("this"), exp.Expression) else _ZERO
    if (rule is not None and rule.text_size != "none") or isinstance(node, _TEXT_SCANNING):
        work[0] += text_inputs
    if rule is not None:
        if rule.text_size == "fixed":
            return Size(Fraction(0), Fraction(32))
        if rule.text_size == "same":
            return _check(first)
        if rule.text_size == "case":
            return _check(first.scaled(Fraction(2)))
        if rule.text_size == "sum":
            total = _ZERO
            for k in kids:
                total = total + sizes[id(k)]
            return _check(total)
        if rule.text_size == "replace":
            source, target = _literal_length(node.args.get("expression")), _literal_length(node.args.get("replacement"))
            ratio = Fraction(1) if source == 0 else max(Fraction(1), Fraction(target, source))
            return _check(first.scaled(ratio))
    if isinstance(node, exp.Cast | exp.TryCast):
        return first if type_family(node.this, fams) in ("text", "literal") else Size(Fraction(0), Fraction(_NON_TEXT_AS_TEXT))
    if isinstance(node, exp.Case | exp.Coalesce | exp.Greatest | exp.Least | exp.Nullif | exp.If | exp.Paren):
        out = _ZERO
        for k in kids:
            out = out.join(sizes[id(k)])
        return out
    return Size(Fraction(0), Fraction(_NON_TEXT_AS_TEXT))
