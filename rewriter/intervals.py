"""``DP_INTERVAL_LOW(expr)`` / ``DP_INTERVAL_HIGH(expr)``: interval arithmetic over released aggregates.

Called by :mod:`~dpsql.rewriter.analyze` once ``expr``'s aggregates are ``__dp_a{j}`` and its
group keys ``__dp_k{i}``. Each aggregate becomes the pair of noisy-table columns
``__dp_a{j}_lo_{tag}`` / ``__dp_a{j}_hi_{tag}`` (filled after noise from the public noise scales,
:mod:`dpsql.proxy.intervals`), and the expression becomes its interval-arithmetic image: exact
whenever every component interval covers (inclusion-monotone rules only). Supported: keys and
constants (degenerate intervals), ``+``, ``-`` (binary and unary), ``*``, ``/`` (NULL when the
divisor's interval holds 0), parentheses, numeric casts, ``ABS``, ``ROUND``/``FLOOR``/``CEIL``
(monotone), ``GREATEST``/``LEAST``. Anything else around an aggregate is refused (0A000).

>>> from sqlglot import parse_one
>>> lo, hi = interval_bounds(parse_one("__dp_a0 - 2 * __dp_a1"), "i0")
>>> lo.sql()
'__dp_a0_lo_i0 - (GREATEST(2 * __dp_a1_lo_i0, 2 * __dp_a1_hi_i0))'
"""

from __future__ import annotations

from sqlglot import exp

from dpsql.errors import UnsupportedQuery

FUNCTIONS = ("dp_interval_low", "dp_interval_high")
INTERVAL_COLUMN = r"__dp_a(\d+)_(lo|hi)_(i\d+|r)"  # a noisy-table interval column
HALF_WIDTH_PREFIX = "__dp_hw"  # hidden post-processing outputs: 95% half-width of output i, for rounding
_AGG = "__dp_a"

_MONOTONE = (exp.Round, exp.Floor, exp.Ceil)


def interval_call(node: exp.Expression) -> str | None:
    """``"low"``/``"high"`` when ``node`` is a DP_INTERVAL_LOW/HIGH call, else None."""
    if isinstance(node, exp.Anonymous) and node.name.lower() in FUNCTIONS:
        return node.name.lower().rsplit("_", 1)[1]
    return None


def _refuse(what: str) -> UnsupportedQuery:
    return UnsupportedQuery(
        f"DP_INTERVAL_LOW/HIGH cannot bound {what}",
        hint="use it over aggregates combined with +, -, *, /, ABS, ROUND, FLOOR, CEIL, GREATEST, LEAST or numeric casts",
    )


def _has_agg(node: exp.Expression) -> bool:
    return any(c.name.startswith(_AGG) and not c.table for c in node.find_all(exp.Column))


def interval_bounds(node: exp.Expression, tag: str) -> tuple[exp.Expression, exp.Expression]:
    """(low, high) SQL expressions enclosing every value ``node`` takes when each aggregate it
    reads lies in its interval columns of ``tag``. UnsupportedQuery for an unsupported node."""
    if not _has_agg(node):
        return node.copy(), node.copy()
    if isinstance(node, exp.Column):
        name = node.name
        if not name[len(_AGG):].isdigit():
            raise _refuse(f"the column {name}")
        return exp.column(f"{name}_lo_{tag}"), exp.column(f"{name}_hi_{tag}")
    if isinstance(node, exp.Paren):
        lo, hi = interval_bounds(node.this, tag)
        return exp.paren(lo, copy=False), exp.paren(hi, copy=False)
    if isinstance(node, exp.Neg):
        lo, hi = interval_bounds(node.this, tag)
        return exp.Neg(this=exp.paren(hi, copy=False)), exp.Neg(this=exp.paren(lo, copy=False))
    if isinstance(node, exp.Cast | exp.TryCast):
        if not node.to.is_type(*exp.DataType.NUMERIC_TYPES):
            raise _refuse(f"a cast to {node.to.sql()}")
        lo, hi = interval_bounds(node.this, tag)
        return node.__class__(this=lo, to=node.to.copy()), node.__class__(this=hi, to=node.to.copy())
    if isinstance(node, exp.Add | exp.Sub):
        alo, ahi = interval_bounds(node.this, tag)
        blo, bhi = interval_bounds(node.expression, tag)
        if isinstance(node, exp.Add):
            return exp.Add(this=alo, expression=blo), exp.Add(this=ahi, expression=bhi)
        return exp.Sub(this=alo, expression=_p(bhi)), exp.Sub(this=ahi, expression=_p(blo))
    if isinstance(node, exp.Mul | exp.Div | exp.IntDiv):
        alo, ahi = interval_bounds(node.this, tag)
        blo, bhi = interval_bounds(node.expression, tag)
        if not _has_agg(node.expression):  # a constant factor or divisor: two corners suffice
            pairs = [(alo, blo), (ahi, blo)]
        elif not _has_agg(node.this):
            pairs = [(alo, blo), (alo, bhi)]
        else:
            pairs = [(alo, blo), (alo, bhi), (ahi, blo), (ahi, bhi)]

        def op(a: exp.Expression, b: exp.Expression) -> exp.Expression:
            return node.__class__(this=_p(a.copy()), expression=_p(b.copy()))

        lo: exp.Expression = exp.Least(this=op(*pairs[0]), expressions=[op(a, b) for a, b in pairs[1:]])
        hi: exp.Expression = exp.Greatest(this=op(*pairs[0]), expressions=[op(a, b) for a, b in pairs[1:]])
        if isinstance(node, exp.Div | exp.IntDiv) and _has_agg(node.expression):
            safe = exp.or_(exp.GT(this=_p(blo.copy()), expression=exp.Literal.number(0)),
                           exp.LT(this=_p(bhi.copy()), expression=exp.Literal.number(0)))
            lo = exp.Case(ifs=[exp.If(this=safe, true=lo)])
            hi = exp.Case(ifs=[exp.If(this=safe.copy(), true=hi)])
        return lo, hi
    if isinstance(node, exp.Abs):
        lo, hi = interval_bounds(node.this, tag)
        zero = exp.Literal.number(0)
        low = exp.Case(ifs=[
            exp.If(this=exp.GTE(this=_p(lo.copy()), expression=zero.copy()), true=_p(lo.copy())),
            exp.If(this=exp.LTE(this=_p(hi.copy()), expression=zero.copy()), true=exp.Neg(this=_p(hi.copy()))),
        ], default=zero.copy())
        high = exp.Greatest(this=exp.Abs(this=lo), expressions=[exp.Abs(this=hi)])
        return low, high
    if isinstance(node, _MONOTONE):
        for k, v in node.args.items():
            if k != "this" and v is not None and _has_agg(v):
                raise _refuse(f"{node.sql_name()} with an aggregate argument other than the first")
        lo, hi = interval_bounds(node.this, tag)
        low, high = node.copy(), node.copy()
        low.set("this", lo)
        high.set("this", hi)
        return low, high
    if isinstance(node, exp.Greatest | exp.Least):
        parts = [interval_bounds(e, tag) for e in [node.this, *node.expressions]]
        cls = node.__class__
        return (cls(this=parts[0][0], expressions=[p[0] for p in parts[1:]]),
                cls(this=parts[0][1], expressions=[p[1] for p in parts[1:]]))
    what = f"{node.sql_name().upper()}()" if isinstance(node, exp.Func) else f"the {node.key.upper()} operator"
    raise _refuse(what)


def _p(node: exp.Expression) -> exp.Expression:
    return node if isinstance(node, exp.Column | exp.Literal | exp.Paren) else exp.paren(node, copy=False)
