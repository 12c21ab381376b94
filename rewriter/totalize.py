"""Pass 6: make row-level expressions total, so that no error can depend on private data (R14).

DuckDB has ``TRY(expr)`` (NULL instead of an error) and ``TRY_CAST``: every expression that can fail
(integer/decimal arithmetic that can overflow, casts, functions that can raise) is wrapped, and
division and modulo get ``NULLIF(divisor, 0)``. PostgreSQL has neither: arithmetic is done in
``numeric`` (which cannot overflow at the sizes a bounded AST can build), division is guarded with
NULLIF, functions with a domain (sqrt, ln, log, exp) get a CASE guard, and casts that could fail on
some value are refused. Type mixing that would make the engine convert a text value at run time is refused earlier, by
:mod:`~dpsql.rewriter.typecheck`.

>>> from sqlglot import parse_one
>>> totalize(parse_one("CAST(t.s AS INT) + t.a / t.b"), "duckdb", {"t.a": "int", "t.b": "int", "t.s": "text"}).sql("duckdb")
'CAST(TRY_CAST(t.s AS INT) AS DOUBLE) + TRUNC(CAST(t.a AS DOUBLE) / NULLIF(CAST(t.b AS DOUBLE), 0))'
>>> totalize(parse_one("t.a * 2"), "postgres", {"t.a": "int"}).sql("postgres")
'CAST(t.a AS DECIMAL) * 2'
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp

from dpsql.errors import UnsupportedQuery
from dpsql.rewriter.functions import PG_TOTAL_CASTS, SCALAR_FUNCTIONS

Families = Mapping[str, str]  # "alias.column" -> family (int, float, numeric, text, bool, date, timestamp …)

_ARITH = (exp.Add, exp.Sub, exp.Mul, exp.Neg)
_ARITH_ALL = (*_ARITH, exp.Div, exp.Mod)
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
_NUMERIC_FAMILIES = {"int", "float", "numeric"}


def type_family(node: exp.Expression, columns: Families) -> str:
    """A coarse type family of an expression: int, float, numeric, text, bool, date, timestamp, interval or unknown."""
    if isinstance(node, exp.Paren):
        return type_family(node.this, columns)
    if isinstance(node, exp.Column):
        return columns.get(f"{node.table}.{node.name}", "unknown")
    if isinstance(node, exp.Literal):
        if node.is_string:
            return "literal"
        return "int" if node.is_int else "numeric"
    if isinstance(node, exp.Null):
        return "unknown"
    if isinstance(node, exp.Interval):
        return "interval"
    if isinstance(node, exp.Boolean):
        return "bool"
    if isinstance(node, exp.Cast | exp.TryCast):
        return _datatype_family(node.to)
    if isinstance(node, exp.Neg):
        return type_family(node.this, columns)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Mod):
        a, b = type_family(node.this, columns), type_family(node.expression, columns)
        if a in {"date", "timestamp"} or b in {"date", "timestamp"}:
            if isinstance(node, exp.Sub) and a == b == "date":
                return "int"
            if isinstance(node, exp.Sub) and a == b == "timestamp":
                return "interval"
            return "timestamp" if "timestamp" in (a, b) or "interval" in (a, b) else "date"
        return _widen(a, b)
    if isinstance(node, exp.Div):
        a, b = type_family(node.this, columns), type_family(node.expression, columns)
        return "int" if a == b == "int" else _widen(a, b) if {a, b} <= _NUMERIC_FAMILIES else "float"
    if isinstance(node, exp.IntDiv):
        return "int"
    if isinstance(node, exp.Lower | exp.Upper | exp.Trim | exp.Concat | exp.DPipe | exp.Replace | exp.Left | exp.Right):
        return "text"
    if isinstance(node, exp.Substring | exp.SplitPart | exp.Reverse | exp.MD5):
        return "text"
    if isinstance(node, exp.Length | exp.StrPosition | exp.Sign):
        return "int"
    if isinstance(node, exp.Extract):
        return "numeric"
    if isinstance(node, exp.TimestampTrunc | exp.DateTrunc):
        return "timestamp"
    if isinstance(node, exp.CurrentDate):
        return "date"
    if isinstance(node, exp.CurrentTimestamp):
        return "timestamp"
    if isinstance(node, exp.Round | exp.Floor | exp.Ceil | exp.Trunc | exp.Abs):
        return type_family(node.this, columns)
    if isinstance(node, exp.Sqrt | exp.Ln | exp.Log | exp.Exp | exp.Pow):
        return "float"
    if isinstance(node, exp.Coalesce | exp.Greatest | exp.Least):
        fams = {type_family(a, columns) for a in [node.this, *node.expressions]} - {"unknown", "literal"}
        return _widen(*fams) if fams and fams <= _NUMERIC_FAMILIES else (fams.pop() if len(fams) == 1 else "unknown")
    if isinstance(node, exp.Nullif):
        return type_family(node.this, columns)
    if isinstance(node, exp.Case):
        fams = {type_family(i.args["true"], columns) for i in node.args.get("ifs") or []}
        if node.args.get("default") is not None:
            fams.add(type_family(node.args["default"], columns))
        fams -= {"unknown"}
        if fams == {"literal"}:
            return "text"
        fams -= {"literal"}
        return _widen(*fams) if fams and fams <= _NUMERIC_FAMILIES else (fams.pop() if len(fams) == 1 else "unknown")
    if isinstance(node, exp.Predicate | exp.Connector | exp.Not | exp.Is | exp.In | exp.Between | exp.StartsWith):
        return "bool"
    if isinstance(node, exp.Try):
        return type_family(node.this, columns)
    return "unknown"


def _widen(*fams: str) -> str:
    s = set(fams)
    if s <= {"int"}:
        return "int"
    if "float" in s:
        return "float"
    if s <= _NUMERIC_FAMILIES | {"literal"}:
        return "numeric"
    return "unknown"


def _datatype_family(dt: exp.DataType) -> str:
    if dt.is_type(*exp.DataType.INTEGER_TYPES):
        return "int"
    if dt.is_type(exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT):
        return "float"
    if dt.is_type(exp.DataType.Type.DECIMAL, exp.DataType.Type.BIGDECIMAL):
        return "numeric"
    if dt.is_type(*exp.DataType.TEXT_TYPES):
        return "text"
    if dt.is_type(exp.DataType.Type.BOOLEAN):
        return "bool"
    if dt.is_type(exp.DataType.Type.DATE):
        return "date"
    if dt.is_type(exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.DATETIME):
        return "timestamp"
    if dt.is_type(exp.DataType.Type.INTERVAL):
        return "interval"
    return "unknown"


_PG_NAMES = {"int": "integer", "float": "double precision", "numeric": "numeric", "text": "text"}


def totalize(node: exp.Expression, dialect: str, columns: Families) -> exp.Expression:
    """A copy of the row-level expression ``node`` that cannot raise an error on any row in ``dialect``.

    Assumes :func:`dpsql.rewriter.typecheck.check_types` accepted the query (no run-time text casts).
    """
    if dialect == "duckdb":
        return _duck(node.copy(), columns, inside_try=False)
    if dialect == "postgres":
        return _pg_total(node.copy(), columns)
    raise ValueError(f"unknown dialect {dialect!r}")


# --------------------------------------------------------------------------------------------- DuckDB


def _duck(node: exp.Expression, cols: Families, *, inside_try: bool) -> exp.Expression:
    """Post-order. Integer and decimal arithmetic is done in DOUBLE, which cannot overflow, so it
    raises nothing (and takes no slow path: DuckDB re-evaluates row by row after an error inside
    TRY, which would make one row's presence visible in the query's timing). What can still raise
    is wrapped in its own TRY (an outer TRY alone misses repeated subexpressions)."""
    fam = type_family(node, cols)
    opfam = {k: type_family(v, cols) for k, v in node.args.items() if isinstance(v, exp.Expression)}
    risky = _duck_risky(node, fam, opfam)
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            node.set(key, _duck(value, cols, inside_try=inside_try or risky))
        elif isinstance(value, list):
            node.set(key, [_duck(v, cols, inside_try=inside_try or risky) if isinstance(v, exp.Expression) else v for v in value])
    node = _duck_semantics(node, cols, opfam)
    if risky:
        return exp.Try(this=node)
    return node


_EXACT = {"int", "numeric"}
_TEMPORAL_FAMILIES = {"date", "timestamp", "interval"}


def _duck_risky(node: exp.Expression, fam: str, opfam: Mapping[str, str]) -> bool:
    if isinstance(node, exp.Cast | exp.TryCast):
        return False  # becomes TRY_CAST, which cannot fail
    if isinstance(node, _ARITH_ALL):
        return any(f in _TEMPORAL_FAMILIES or f == "unknown" for f in opfam.values()) or fam == "unknown"
    if isinstance(node, exp.Abs) and opfam.get("this") in _EXACT | {"float"}:
        return False  # computed in DOUBLE
    rule = SCALAR_FUNCTIONS.get(type(node))
    return bool(rule and rule.duckdb_may_fail)


def _double(node: exp.Expression) -> exp.Expression:
    """``node`` as DOUBLE; literals and already-DOUBLE arithmetic are left as they are."""
    inner = node
    while isinstance(inner, exp.Paren):
        inner = inner.this
    if isinstance(inner, exp.Literal | exp.Trunc | exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod | exp.Neg):
        return node
    if isinstance(inner, exp.Cast | exp.TryCast) and inner.to.is_type(exp.DataType.Type.DOUBLE):
        return node
    return exp.Cast(this=node, to=exp.DataType.build("DOUBLE"))


def _as_timestamp(node: exp.Expression, cols: Families) -> exp.Expression:
    """A DATE operand next to a TIMESTAMP one, cast without failing (DuckDB would cast it anyway, and
    fail for dates beyond the TIMESTAMP range)."""
    if type_family(node, cols) == "date":
        return exp.TryCast(this=node, to=exp.DataType.build("TIMESTAMP"))
    return node


def _duck_semantics(node: exp.Expression, cols: Families, opfam: Mapping[str, str] | None = None) -> exp.Expression:
    opfam = opfam or {}
    if isinstance(node, exp.Cast) and not isinstance(node, exp.TryCast):
        return exp.TryCast(this=node.this, to=node.to)
    if isinstance(node, _ARITH_ALL) and not any(f in _TEMPORAL_FAMILIES or f == "unknown" for f in opfam.values()):
        exact = [f in _EXACT for f in opfam.values()]
        if isinstance(node, exp.Neg):
            return exp.Neg(this=exp.Cast(this=node.this, to=exp.DataType.build("DOUBLE"))) if any(exact) else node
        a, b = (_double(node.this), _double(node.expression)) if any(exact) else (node.this, node.expression)
        if any(exact) and isinstance(a, exp.Literal) and isinstance(b, exp.Literal):
            a = exp.Cast(this=a, to=exp.DataType.build("DOUBLE"))  # constant folding must not overflow either
        if isinstance(node, exp.Div):
            quotient = exp.Div(this=a, expression=exp.Nullif(this=b, expression=exp.Literal.number(0)), typed=False, safe=False)
            if opfam.get("this") == opfam.get("expression") == "int":
                return exp.Trunc(this=quotient)  # PostgreSQL's integer division truncates toward zero
            return quotient
        if isinstance(node, exp.Mod):
            return exp.Mod(this=a, expression=exp.Nullif(this=b, expression=exp.Literal.number(0)))
        return type(node)(this=a, expression=b)
    if isinstance(node, exp.Div):
        divisor = exp.Nullif(this=node.expression, expression=exp.Literal.number(0))
        return exp.Div(this=node.this, expression=divisor, typed=False, safe=False)
    if isinstance(node, exp.Mod):
        return exp.Mod(this=node.this, expression=exp.Nullif(this=node.expression, expression=exp.Literal.number(0)))
    if isinstance(node, exp.Abs) and opfam.get("this") in _EXACT:
        node.set("this", _double(node.this))
    if isinstance(node, (*_COMPARISONS, exp.Nullif)):
        fams = {type_family(node.this, cols), type_family(node.expression, cols)}
        if fams == {"date", "timestamp"}:
            node.set("this", _as_timestamp(node.this, cols))
            node.set("expression", _as_timestamp(node.expression, cols))
    if isinstance(node, exp.Coalesce | exp.Greatest | exp.Least | exp.In):
        args = [node.this, *node.expressions]
        if {type_family(a, cols) for a in args} >= {"date", "timestamp"}:
            node.set("this", _as_timestamp(node.this, cols))
            node.set("expressions", [_as_timestamp(a, cols) for a in node.expressions])
    if isinstance(node, exp.Between):
        fams = {type_family(node.this, cols), type_family(node.args["low"], cols), type_family(node.args["high"], cols)}
        if fams >= {"date", "timestamp"}:
            for k in ("this", "low", "high"):
                node.set(k, _as_timestamp(node.args[k], cols))
    if isinstance(node, exp.Case):
        branches = [i.args.get("true") for i in node.args.get("ifs") or []] + [node.args.get("default")]
        if {type_family(b, cols) for b in branches if b is not None} >= {"date", "timestamp"}:
            for i in node.args.get("ifs") or []:
                i.set("true", _as_timestamp(i.args["true"], cols))
            if node.args.get("default") is not None:
                node.set("default", _as_timestamp(node.args["default"], cols))
    if isinstance(node, exp.Like | exp.ILike) and not isinstance(node.parent, exp.Escape):
        pattern = node.expression
        if isinstance(pattern, exp.Literal) and "\\" in pattern.this:
            # PostgreSQL's LIKE escapes with a backslash by default; DuckDB's has no default escape.
            node.set("expression", exp.Escape(this=pattern, expression=exp.Literal.string("\\")))
    return node


def _is_literal_cast(node: exp.Expression) -> bool:
    inner = node.this
    while isinstance(inner, exp.Paren | exp.Neg):
        inner = inner.this
    return isinstance(inner, exp.Literal | exp.Null | exp.Boolean)


# --------------------------------------------------------------------------------------------- PostgreSQL


def _numeric(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Literal) or (isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.DECIMAL)):
        return node
    return exp.Cast(this=node, to=exp.DataType.build("DECIMAL"))


def _pg_total(node: exp.Expression, cols: Families) -> exp.Expression:
    """Post-order rewrite: children first, with type families read from the original operands."""
    operand_fams = {k: type_family(v, cols) for k, v in node.args.items() if isinstance(v, exp.Expression)}
    fam = type_family(node, cols)
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            node.set(key, _pg_total(value, cols))
        elif isinstance(value, list):
            node.set(key, [_pg_total(v, cols) if isinstance(v, exp.Expression) else v for v in value])
    return _pg_node(node, fam, operand_fams)


def _pg_node(n: exp.Expression, fam: str, opfam: Mapping[str, str]) -> exp.Expression:
    if isinstance(n, exp.Cast | exp.TryCast):
        if _is_literal_cast(n):
            return exp.Cast(this=n.this, to=n.to)
        src = opfam.get("this", "unknown")
        target = n.to.sql("postgres").lower().split("(")[0]
        target = _PG_TYPE_ALIASES.get(target, target)
        if (src, target) not in PG_TOTAL_CASTS:
            raise UnsupportedQuery(
                f"CAST from {_PG_NAMES.get(src, src)} to {target} can fail on some values, and PostgreSQL has no TRY_CAST",
                hint="compare or group by the column without the cast, or use the DuckDB backend",
            )
        return exp.Cast(this=n.this, to=n.to)
    if isinstance(n, _ARITH_ALL):
        fams = [opfam.get("this", "unknown")]
        if not isinstance(n, exp.Neg):
            fams.append(opfam.get("expression", "unknown"))
        if any(f in {"date", "timestamp", "interval"} for f in fams):
            if isinstance(n, exp.Sub) and fams[0] == fams[1] and fams[0] in {"date", "timestamp"}:
                return n
            raise UnsupportedQuery(
                "date/time arithmetic can overflow on some values on PostgreSQL",
                hint="subtract two dates, or compare with date literals instead",
            )
        if isinstance(n, exp.Neg):
            return exp.Neg(this=_numeric(n.this))
        a, b = _numeric(n.this), _numeric(n.expression)
        if isinstance(n, exp.Div):
            guarded = exp.Nullif(this=b, expression=exp.Literal.number(0))
            if fams[0] == fams[1] == "int":
                return exp.IntDiv(this=a, expression=guarded)
            return exp.Div(this=a, expression=guarded, typed=False, safe=False)
        if isinstance(n, exp.Mod):
            return exp.Mod(this=a, expression=exp.Nullif(this=b, expression=exp.Literal.number(0)))
        return type(n)(this=a, expression=b)
    rule = SCALAR_FUNCTIONS.get(type(n))
    if rule is not None:
        if rule.postgres == "refuse":
            raise UnsupportedQuery(f"{rule.name}() can fail on some values on PostgreSQL", hint="use the DuckDB backend or rewrite it")
        if isinstance(n, exp.Abs | exp.Round | exp.Floor | exp.Ceil | exp.Trunc) and opfam.get("this") in _NUMERIC_FAMILIES:
            n.set("this", _numeric(n.this))
        if rule.postgres == "guard":
            return _pg_guard(n)
    del fam
    return n


_PG_TYPE_ALIASES = {
    "int": "int4",
    "integer": "int4",
    "smallint": "int2",
    "bigint": "int8",
    "double precision": "float8",
    "decimal": "numeric",
    "varchar": "text",
    "char": "text",
    "real": "float4",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
}


def _pg_guard(n: exp.Expression) -> exp.Expression:
    zero = exp.Literal.number(0)
    if isinstance(n, exp.Log) and n.expression is not None:  # log(base, value)
        base, value = _numeric(n.this), _numeric(n.expression)
        cond: exp.Expression = exp.and_(
            exp.GT(this=value.copy(), expression=zero),
            exp.GT(this=base.copy(), expression=zero),
            exp.NEQ(this=base.copy(), expression=exp.Literal.number(1)),
        )
        n.set("this", base)
        n.set("expression", value)
        return exp.Case(ifs=[exp.If(this=cond, true=n)])
    x = _numeric(n.this)
    if isinstance(n, exp.Sqrt):
        cond = exp.GTE(this=x.copy(), expression=zero)
    elif isinstance(n, exp.Exp):
        cond = exp.LTE(this=x.copy(), expression=exp.Literal.number(100000))
    else:
        cond = exp.GT(this=x.copy(), expression=zero)
    n.set("this", x)
    return exp.Case(ifs=[exp.If(this=cond, true=n)])
