"""Pass 7 (``typecheck``): type checks that keep run-time casts of private values out of the engine (R14).

DuckDB converts a text value to a number, boolean or date *at run time* when a query mixes them
(``WHERE text_col = 5``, ``WHERE text_col``, ``NULLIF(text_col, 0)``, ``CASE text_col WHEN 1 …``),
and fails with "Could not convert string 'abc' …" — an error that quotes one person's value and
fires only if that row exists. PostgreSQL refuses these queries when it parses them; so does this
pass, with PostgreSQL's SQLSTATEs. It also makes the engine's implied cast of a string literal
explicit (``date_col > '2024-01-01'`` → ``date_col > CAST('2024-01-01' AS DATE)``) so that the
engine can check every constant before the query is charged (:func:`constant_subexpressions`).

>>> from sqlglot import parse_one
>>> q = parse_one("SELECT COUNT(*) FROM t AS t WHERE t.d > '2024-01-01'")
>>> check_types(q, {"t.d": "date"}).sql()
"SELECT COUNT(*) FROM t AS t WHERE t.d > CAST('2024-01-01' AS DATE)"
>>> check_types(parse_one("SELECT COUNT(*) FROM t AS t WHERE t.h"), {"t.h": "text"})
Traceback (most recent call last):
...
dpsql.errors.DatatypeMismatch: argument of WHERE must be type boolean, not type text (hint: compare the column with a value, e.g. col = 'x')
"""

from __future__ import annotations

from sqlglot import exp

from dpsql.errors import DatatypeMismatch, InvalidEscapeSequence, InvalidTextRepresentation, UndefinedFunction, UnsupportedQuery
from dpsql.rewriter.families import Families, type_family, widen
from dpsql.rewriter.subquery_ref import is_ref

_NUMERIC = {"int", "float", "numeric"}
_TEMPORAL = {"date", "timestamp"}
_LOOSE = {"unknown", "literal"}
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
_CAST_TARGET = {
    "int": "BIGINT",
    "float": "DOUBLE",
    "numeric": "DECIMAL",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "bool": "BOOLEAN",
    "interval": "INTERVAL",
}
# The type a string literal takes next to an operand of each family in arithmetic (PostgreSQL's choice).
_ARITH_LITERAL_TYPE = {"date": "int", "timestamp": "interval"}
_NUMERIC_FUNCTIONS = (exp.Abs, exp.Round, exp.Floor, exp.Ceil, exp.Trunc, exp.Sign, exp.Sqrt, exp.Ln, exp.Log, exp.Exp, exp.Pow, exp.Pi)
_TEXT_FUNCTIONS = (
    exp.Lower,
    exp.Upper,
    exp.Length,
    exp.Trim,
    exp.Replace,
    exp.Left,
    exp.Right,
    exp.Substring,
    exp.StrPosition,
    exp.StartsWith,
    exp.SplitPart,
    exp.Reverse,
    exp.MD5,
    exp.Like,
    exp.ILike,
)
_PG_NAMES = {"int": "integer", "float": "double precision", "numeric": "numeric", "text": "text", "bool": "boolean",
             "date": "date", "timestamp": "timestamp without time zone", "interval": "interval"}


def compatible(a: str, b: str) -> bool:
    """True when values of families ``a`` and ``b`` can be compared or mixed without a run-time text cast."""
    if a in _LOOSE or b in _LOOSE or a == b:
        return True
    if a in _NUMERIC and b in _NUMERIC:
        return True
    return a in _TEMPORAL and b in _TEMPORAL


def check_types(select: exp.Expression, families: Families) -> exp.Expression:
    """Check the row-level parts of a flattened, qualified query; make literal casts explicit.

    Raises DatatypeMismatch (42804) for a non-boolean condition or mixed CASE/COALESCE types, and
    UndefinedFunction (42883) for an operator or function applied to the wrong type family.
    Modifies ``select`` in place and returns it.
    """
    for where in [select.args.get("where"), *(j.args.get("on") for j in select.args.get("joins") or [])]:
        if where is None:
            continue
        cond = where.this if isinstance(where, exp.Where) else where
        _boolean(cond, families, "WHERE" if isinstance(where, exp.Where) else "JOIN/ON")
    for node in list(select.walk()):
        if isinstance(node, exp.Filter):
            w = node.expression
            _boolean(w.this if isinstance(w, exp.Where) else w, families, "FILTER")
        elif isinstance(node, exp.If) and isinstance(node.parent, exp.Case) and node.parent.this is None:
            _boolean(node.this, families, "CASE/WHEN")
        elif isinstance(node, exp.And | exp.Or):
            _boolean(node.this, families, node.key.upper())
            _boolean(node.expression, families, node.key.upper())
        elif isinstance(node, exp.Not):
            _boolean(node.this, families, "NOT")
        elif isinstance(node, exp.Is) and isinstance(node.expression, exp.Boolean):
            _boolean(node.this, families, "IS TRUE/FALSE")
        _check_node(node, families)
    return select


_INERT = (exp.Literal, exp.Null, exp.Boolean, exp.Star, exp.Identifier, exp.Var, exp.DataType, exp.DataTypeParam,
          exp.CurrentDate, exp.CurrentTimestamp, exp.Placeholder)


def constant_subexpressions(tree: exp.Expression) -> list[exp.Expression]:
    """The largest subexpressions of the row-level query that read no column and do something (a
    cast, an operator, a function, an interval): whether they fail depends only on the query text,
    so the engine evaluates them before the charge. Inside the bounded SQL a failing constant would
    fire only when some row reaches it — an error that depends on the data (and on the engine's
    constant-folding rules)."""
    out: list[exp.Expression] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, exp.Select | exp.From | exp.Join | exp.Table | exp.TableAlias | exp.Subquery | exp.With | exp.CTE):
            stack.extend(_children(node))
            continue
        if _is_constant(node):
            if not _inert(node):
                out.append(node)
            continue
        stack.extend(_children(node))
    return out


def _children(node: exp.Expression) -> list[exp.Expression]:
    kids: list[exp.Expression] = []
    for value in node.args.values():
        if isinstance(value, exp.Expression):
            kids.append(value)
        elif isinstance(value, list):
            kids.extend(v for v in value if isinstance(v, exp.Expression))
    return kids[::-1]


def _is_constant(node: exp.Expression) -> bool:
    if isinstance(node, exp.Column | exp.AggFunc | exp.Select | exp.Star | exp.Ordered | exp.Order | exp.Group | exp.Where
                  | exp.Having | exp.Limit | exp.Offset | exp.Alias | exp.Filter | exp.Distinct | exp.Lock | exp.Into):
        return False
    return node.find(exp.Column, exp.AggFunc, exp.Select, exp.Star) is None and not any(is_ref(n) for n in node.walk())


def _inert(node: exp.Expression) -> bool:
    while isinstance(node, exp.Paren | exp.Neg):
        node = node.this
    return isinstance(node, _INERT)



def _boolean(node: exp.Expression | None, families: Families, where: str) -> None:
    if node is None:
        return
    fam = type_family(node, families)
    if fam == "literal" and isinstance(node, exp.Literal):
        node.replace(exp.Boolean(this=_boolean_literal(node.name)))
        return
    if fam not in ("bool", "unknown"):
        raise DatatypeMismatch(
            f"argument of {where} must be type boolean, not type {_PG_NAMES.get(fam, fam)}",
            hint="compare the column with a value, e.g. col = 'x'",
        )


def _boolean_literal(text: str) -> bool:
    """A string literal where a boolean is required, read as PostgreSQL's boolin reads it (true,
    yes, on, 1 and their unique prefixes, any case); anything else is 22P02, as in PostgreSQL."""
    word = text.strip().lower()
    for value, spellings in ((True, ("true", "yes")), (False, ("false", "no"))):
        if word and any(s.startswith(word) for s in spellings):
            return value
    if word in ("on", "1"):
        return True
    if word in ("of", "off", "0"):
        return False
    raise InvalidTextRepresentation(f'invalid input syntax for type boolean: "{text[:60]}"')


def _check_node(node: exp.Expression, families: Families) -> None:
    pairs: list[tuple[exp.Expression, exp.Expression]] = []
    if isinstance(node, _COMPARISONS):
        pairs.append((node.this, node.expression))
    elif isinstance(node, exp.In):
        pairs.extend((node.this, e) for e in node.expressions)
    elif isinstance(node, exp.Between):
        pairs.extend([(node.this, node.args["low"]), (node.this, node.args["high"])])
    elif isinstance(node, exp.Nullif):
        pairs.append((node.this, node.expression))
    elif isinstance(node, exp.Case) and node.this is not None:
        pairs.extend((node.this, i.this) for i in node.args.get("ifs") or [])
    for left, right in pairs:
        a, b = type_family(left, families), type_family(right, families)
        if not compatible(a, b):
            raise UndefinedFunction(
                f"operator does not exist: {_PG_NAMES.get(a, a)} {_op(node)} {_PG_NAMES.get(b, b)}",
                hint="compare values of the same type; quote literals compared with text columns",
            )
        _explicit_literal_cast(left, b)
        _explicit_literal_cast(right, a)
    if isinstance(node, exp.Coalesce | exp.Greatest | exp.Least | exp.Case):
        if isinstance(node, exp.Case):
            branches = [i.args.get("true") for i in node.args.get("ifs") or []] + [node.args.get("default")]
        else:
            branches = [node.this, *node.expressions]
        present = [b for b in branches if b is not None]
        fams = [type_family(b, families) for b in present]
        for i, a in enumerate(fams):
            for b in fams[i + 1:]:
                if not compatible(a, b):
                    raise DatatypeMismatch(
                        f"{node.key.upper()} types {_PG_NAMES.get(a, a)} and {_PG_NAMES.get(b, b)} cannot be matched",
                        hint="make all branches the same type (cast explicitly)",
                    )
        typed = {f for f in fams if f not in _LOOSE}
        target = widen(*typed) if typed and typed <= _NUMERIC else (typed.pop() if len(typed) == 1 else None)
        if target is not None:
            for branch in present:
                _explicit_literal_cast(branch, target)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod | exp.Neg):
        operands = [node.this] if isinstance(node, exp.Neg) else [node.this, node.expression]
        fams = [type_family(o, families) for o in operands]
        if any(f in ("text", "bool") for f in fams):
            raise UndefinedFunction(
                f"operator does not exist: {' '.join(_PG_NAMES.get(f, f) for f in fams)} ({node.key})",
                hint="arithmetic needs numbers, dates or intervals",
            )
        if len(operands) == 2:
            for mine, other in ((0, 1), (1, 0)):
                _explicit_literal_cast(operands[mine], _ARITH_LITERAL_TYPE.get(fams[other], fams[other]))
    elif isinstance(node, _NUMERIC_FUNCTIONS):
        for arg in (node.this, node.args.get("expression")):
            if arg is not None and type_family(arg, families) not in _NUMERIC | _LOOSE:
                fam = type_family(arg, families)
                raise UndefinedFunction(
                    f"function {node.sql_name().lower()}({_PG_NAMES.get(fam, fam)}) does not exist", hint="it takes numbers"
                )
    elif isinstance(node, _TEXT_FUNCTIONS):
        fam = type_family(node.this, families)
        if fam not in {"text", *_LOOSE}:
            raise UndefinedFunction(
                f"function {node.sql_name().lower()}({_PG_NAMES.get(fam, fam)}) does not exist",
                hint="cast the argument to text first: CAST(col AS TEXT)",
            )
    elif isinstance(node, exp.Extract | exp.TimestampTrunc | exp.DateTrunc):
        arg = node.expression if isinstance(node, exp.Extract) else node.this
        fam = type_family(arg, families)
        if fam not in {"date", "timestamp", "interval", *_LOOSE}:
            raise UndefinedFunction(f"function {node.sql_name().lower()} does not accept {_PG_NAMES.get(fam, fam)}",
                                    hint="it takes a date, timestamp or interval")
    if isinstance(node, exp.Like | exp.ILike):
        _check_like(node)


def _explicit_literal_cast(node: exp.Expression, target_family: str) -> None:
    """Replace a string literal compared with a typed value by an explicit CAST to that type."""
    if not (isinstance(node, exp.Literal) and node.is_string) or target_family not in _CAST_TARGET:
        return
    cast = exp.Cast(this=node.copy(), to=exp.DataType.build(_CAST_TARGET[target_family]))
    node.replace(cast)


def _check_like(node: exp.Like | exp.ILike) -> None:
    """The pattern must be a literal that the engine accepts for every row: a one-character escape,
    and no pattern ending in a lone escape (PostgreSQL's default escape is a backslash)."""
    pattern = node.expression
    escape: str | None = "\\"
    if isinstance(node.parent, exp.Escape):
        esc = node.parent.expression
        if not (isinstance(esc, exp.Literal) and esc.is_string and len(esc.this) <= 1):
            raise InvalidEscapeSequence("invalid escape string: ESCAPE must be one character", hint="use ESCAPE '\\'")
        escape = esc.this or None
    if not (isinstance(pattern, exp.Literal) and pattern.is_string):
        raise UnsupportedQuery("LIKE needs a literal pattern", hint="write the pattern as a string literal")
    text = pattern.this
    i = 0
    while i < len(text):
        if escape and text[i] == escape:
            if i + 1 >= len(text):
                raise InvalidEscapeSequence(
                    "LIKE pattern must not end with escape character", hint="escape the last character or remove it"
                )
            i += 2
            continue
        i += 1


def _op(node: exp.Expression) -> str:
    names = {exp.EQ: "=", exp.NEQ: "<>", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<=", exp.Nullif: "= (NULLIF)",
             exp.In: "= (IN)", exp.Between: "BETWEEN", exp.Case: "= (CASE)"}
    return names.get(type(node), type(node).__name__.upper())
