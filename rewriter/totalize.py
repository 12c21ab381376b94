"""Pass 10, part of ``contribution``: make row-level expressions total, so that neither an error nor an engine slow path can
depend on private data (R14, DESIGN §1 "side channels").

Every operation that could fail on some value is rewritten so that it cannot, on every engine, by
construction — never with DuckDB's ``TRY(...)`` (whose row-by-row re-run after an error made one
person's rows visible in the query's timing):

- numeric arithmetic runs in DOUBLE on DuckDB (inf/NaN, never an overflow error; the clamp at the
  aggregate's input handles them) and in ``numeric`` on PostgreSQL; division and modulo get
  ``NULLIF(divisor, 0)``;
- casts: numeric → integer/decimal and date → timestamp get range guards (NULL when the value
  would not fit); casts from text are ``TRY_CAST`` on DuckDB (a failing value costs ~0.1 µs more,
  no re-run) and refused on PostgreSQL, which has no TRY_CAST; other casts only where total;
- date/time arithmetic: operands are guarded to the safe domain (years 1–9999; ±infinity and
  anything beyond give NULL), day offsets to ±10,000 years, intervals are literals of at most
  10,000 years or guarded values; date_trunc gets the same domain guard;
- functions with a domain (sqrt, ln, log, exp) get a CASE guard (NULL outside it) on both engines,
  so they agree.

On Spark (``dialect="spark"``) every rule must hold with ``spark.sql.ansi.enabled`` on (errors on
overflow, division by zero and bad casts) and off (silent wrap or NULL): arithmetic runs in DOUBLE
as on DuckDB, integer division truncates as ``q - q % 1`` (Spark has no numeric TRUNC), casts to
integers round like DuckDB and PostgreSQL (``BROUND`` from DOUBLE, ``ROUND`` from DECIMAL) inside
range guards, casts from text are ``TRY_CAST`` (a cast mode, not DuckDB's ``TRY`` re-run), a bare
DECIMAL is DECIMAL(38, 18), ``date - date`` is ``DATEDIFF``, ``log(x)`` is ``LOG(10, x)`` and LIKE
patterns are re-escaped for Spark's backslash escape.

The rules per function are in :mod:`~dpsql.rewriter.functions`; the guards in
:mod:`~dpsql.rewriter.guards`. Type mixing that would make the engine convert a text value at run
time is refused earlier, by :mod:`~dpsql.rewriter.typecheck`, which also types every literal.

>>> from sqlglot import parse_one
>>> totalize(parse_one("CAST(t.s AS INT) + t.a / t.b"), "duckdb", {"t.a": "int", "t.b": "int", "t.s": "text"}).sql("duckdb")
'CAST(TRY_CAST(t.s AS INT) AS DOUBLE) + TRUNC(CAST(t.a AS DOUBLE) / NULLIF(CAST(t.b AS DOUBLE), 0))'
>>> totalize(parse_one("t.a * 2"), "postgres", {"t.a": "int"}).sql("postgres")
'CAST(t.a AS DECIMAL) * 2'
>>> print(totalize(parse_one("t.d + 7"), "duckdb", {"t.d": "date"}).sql("duckdb", pretty=True))
CASE
  WHEN t.d BETWEEN CAST('0001-01-01' AS DATE) AND CAST('9999-12-31' AS DATE)
  AND 7 BETWEEN -3660000 AND 3660000
  THEN t.d + CAST(7 AS INT)
END
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlglot import exp

from dpsql.errors import UndefinedFunction, UnsupportedQuery
from dpsql.rewriter import guards
from dpsql.rewriter.families import NUMERIC_FAMILIES, TEMPORAL_FAMILIES, Families, type_family
from dpsql.rewriter.functions import (
    MAX_DAY_OFFSET,
    MAX_INTERVAL_DAYS,
    PG_TOTAL_CASTS,
    SPARK_EXTRACT_FIELDS,
    function_rule,
)
from dpsql.rewriter.normalize import to_char_pattern

__all__ = ["Families", "totalize", "type_family"]

_ARITH = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg)
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
_EXACT = {"int", "numeric"}
_PG_NAMES = {"int": "integer", "float": "double precision", "numeric": "numeric", "text": "text", "date": "date",
             "timestamp": "timestamp", "interval": "interval", "bool": "boolean"}


def _pretty(node: exp.Expression) -> str:
    """``node`` as PostgreSQL SQL without identifier quotes (for messages)."""
    return node.sql("postgres", identify=False, normalize=False).replace('"', "")


def totalize(node: exp.Expression, dialect: str, columns: Families) -> exp.Expression:
    """A copy of the row-level expression ``node`` that raises no error, and takes no engine slow
    path, on any row in ``dialect``. Assumes :func:`dpsql.rewriter.typecheck.check_types` accepted
    the query (literals typed, no run-time text casts). Raises UnsupportedQuery (0A000) for an
    operation that cannot be made total on that engine."""
    if dialect not in ("duckdb", "postgres", "spark"):
        raise ValueError(f"unknown dialect {dialect!r}")
    return _walk(node.copy(), columns, dialect)


def _walk(node: exp.Expression, cols: Families, dialect: str) -> exp.Expression:
    """Post-order: children first; the node's rule sees the families of its original operands."""
    fam = type_family(node, cols)
    opfam = {k: type_family(v, cols) for k, v in node.args.items() if isinstance(v, exp.Expression)}
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            node.set(key, _walk(value, cols, dialect))
        elif isinstance(value, list):
            node.set(key, [_walk(v, cols, dialect) if isinstance(v, exp.Expression) else v for v in value])
    return _rule(node, fam, opfam, cols, dialect)


def _rule(n: exp.Expression, fam: str, opfam: Mapping[str, str], cols: Families, dialect: str) -> exp.Expression:
    if isinstance(n, exp.NumberToStr):
        # a formatting call per private row serves no DP statistic (its text would become a group
        # key); over a released value it is post-processing (rewriter/number_format.py)
        raise UnsupportedQuery(
            f"to_char() of a number is supported only over aggregates, not on the rows of a private table "
            f"(to_char({_pretty(n.this)}, '{n.args['format'].this}'))",
            hint="apply it to the aggregate, e.g. to_char(SUM(x), 'FM999,999'), or group by ROUND(x) or width_bucket",
        )
    if isinstance(n, exp.Cast | exp.TryCast):
        return _cast(n, opfam.get("this", "unknown"), dialect)
    if isinstance(n, _ARITH):
        operands = [opfam.get("this", "unknown")] + ([] if isinstance(n, exp.Neg) else [opfam.get("expression", "unknown")])
        if any(f in TEMPORAL_FAMILIES or f == "interval" for f in operands):
            return _temporal_arith(n, operands, dialect)
        if "unknown" in operands and _reads_column(n):
            raise UnsupportedQuery(f"cannot type the operands of {n.sql(dialect)}", hint="cast the operands explicitly")
        return _numeric_arith(n, operands, dialect)
    if isinstance(n, (*_COMPARISONS, exp.Nullif)):
        if {opfam.get("this"), opfam.get("expression")} == {"date", "timestamp"}:
            n.set("this", _timestamp_side(n.this, opfam.get("this")))
            n.set("expression", _timestamp_side(n.expression, opfam.get("expression")))
        return n
    if isinstance(n, exp.Coalesce | exp.Greatest | exp.Least | exp.In):
        args = [n.this, *n.expressions]
        fams = [type_family(a, cols) for a in args]
        if {"date", "timestamp"} <= set(fams):
            n.set("this", _timestamp_side(n.this, fams[0]))
            n.set("expressions", [_timestamp_side(a, f) for a, f in zip(n.expressions, fams[1:], strict=True)])
        return n
    if isinstance(n, exp.Between):
        keys = ("this", "low", "high")
        fams = [opfam.get(k) for k in keys]
        if {"date", "timestamp"} <= set(fams):
            for k, f in zip(keys, fams, strict=True):
                n.set(k, _timestamp_side(n.args[k], f))
        return n
    if isinstance(n, exp.Case):
        branches = [i.args.get("true") for i in n.args.get("ifs") or []] + [n.args.get("default")]
        if {type_family(b, cols) for b in branches if b is not None} >= {"date", "timestamp"}:
            for i in n.args.get("ifs") or []:
                i.set("true", _timestamp_side(i.args["true"], type_family(i.args["true"], cols)))
            if n.args.get("default") is not None:
                n.set("default", _timestamp_side(n.args["default"], type_family(n.args["default"], cols)))
        return n
    if dialect == "spark" and isinstance(n, exp.Like | exp.ILike | exp.Escape):
        return _spark_like(n)
    if isinstance(n, exp.Like | exp.ILike) and dialect == "duckdb" and not isinstance(n.parent, exp.Escape):
        pattern = n.expression
        if isinstance(pattern, exp.Literal) and "\\" in pattern.this:
            # PostgreSQL's LIKE escapes with a backslash by default; DuckDB's has no default escape.
            n.set("expression", exp.Escape(this=pattern, expression=exp.Literal.string("\\")))
        return n
    rule = function_rule(n)
    if rule is None:
        return n
    mode = rule.mode(dialect)
    if mode == "refuse":
        raise UnsupportedQuery(f"{rule.name}() can fail on some values on {_engine(dialect)}",
                               hint="rewrite the expression without it, or use the DuckDB backend")
    if isinstance(n, exp.Abs | exp.Round | exp.Floor | exp.Ceil | exp.Trunc) and opfam.get("this") in _EXACT:
        # abs(-2^63) overflows BIGINT on DuckDB: compute in DOUBLE; PostgreSQL computes in numeric.
        if dialect == "postgres":
            n.set("this", _numeric(n.this))
        elif isinstance(n, exp.Abs):
            n.set("this", _double(n.this))
    if dialect == "spark":
        n = _spark_function(n)
    if mode == "guard":
        if isinstance(n, exp.Anonymous):
            return _guard_dates(n, dict(enumerate(type_family(a, cols) for a in n.expressions)), dialect)  # type: ignore[arg-type]
        return _GUARDS[type(n)](n, opfam, dialect)
    return n


def _engine(dialect: str) -> str:
    return {"postgres": "PostgreSQL", "spark": "Spark"}.get(dialect, "DuckDB")


def _literal_int(node: exp.Expression | None) -> int | None:
    """The value of an integer literal (or a negated one), else None."""
    neg = False
    while isinstance(node, exp.Paren | exp.Neg):
        neg ^= isinstance(node, exp.Neg)
        node = node.this
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            v = int(node.this)
        except ValueError:
            return None
        return -v if neg else v
    return None


def _spark_function(n: exp.Expression) -> exp.Expression:
    """Spark's spelling of a function whose PostgreSQL meaning differs, or a refusal (0A000)."""
    if isinstance(n, exp.Log) and n.expression is None:  # PostgreSQL's log(x) is base 10; Spark's is natural
        return exp.Log(this=exp.Literal.number(10), expression=n.this)
    checks: list[tuple[str, exp.Expression | None, int]] = []
    if isinstance(n, exp.Substring):
        checks = [("start", n.args.get("start"), 1), ("length", n.args.get("length"), 0)]
    elif isinstance(n, exp.Left | exp.Right):
        checks = [("length", n.expression, 0)]
    for what, node, least in checks:
        if node is None:
            continue
        v = _literal_int(node)
        if v is None or v < least:
            raise UnsupportedQuery(f"{n.sql('postgres')}: on Spark the {what} must be a literal of at least {least} "
                                   "(smaller values mean something else there)", hint="use a start of 1 or more and a non-negative length")
    if isinstance(n, exp.Extract):
        field = n.this.name.lower() if isinstance(n.this, exp.Var | exp.Identifier | exp.Literal) else ""
        if field not in SPARK_EXTRACT_FIELDS:
            raise UnsupportedQuery(f"extract({field or n.this.sql()} …) is not supported on Spark (its value differs from PostgreSQL's)",
                                   hint=f"use one of {', '.join(sorted(SPARK_EXTRACT_FIELDS))}")
    return n


def _spark_like(n: exp.Expression) -> exp.Expression:
    """A LIKE/ILIKE (or ``… ESCAPE e``) with a literal pattern, the pattern re-escaped so Spark (whose
    escape is a backslash that may only precede ``%``, ``_`` or another backslash) matches exactly
    what PostgreSQL matches; other patterns are refused."""
    if isinstance(n, exp.Escape):
        like, esc_node = n.this, n.expression
        if not isinstance(like, exp.Like | exp.ILike) or not isinstance(esc_node, exp.Literal) or not esc_node.is_string \
                or len(esc_node.this) > 1:
            raise UnsupportedQuery("LIKE … ESCAPE needs a one-character literal escape on Spark")
        return _spark_pattern(like, esc_node.this)
    if isinstance(n.parent, exp.Escape):
        return n  # handled with its ESCAPE clause
    return _spark_pattern(n, "\\")


def _spark_pattern(like: exp.Expression, escape: str) -> exp.Expression:
    pattern = like.expression
    if not isinstance(pattern, exp.Literal) or not pattern.is_string:
        raise UnsupportedQuery("LIKE patterns must be string literals on Spark", hint="write the pattern as a literal")
    out: list[str] = []
    text, i = pattern.this, 0
    while i < len(text):
        ch = text[i]
        if escape and ch == escape:
            if i + 1 == len(text):
                raise UnsupportedQuery("a LIKE pattern must not end with its escape character")
            ch = text[i + 1]
            out.append("\\" + ch if ch in "%_\\" else ch)
            i += 2
            continue
        out.append(ch if ch in "%_" else "\\" + ch if ch == "\\" else ch)
        i += 1
    like.set("expression", exp.Literal.string("".join(out)))
    return like


def _reads_column(n: exp.Expression) -> bool:
    return n.find(exp.Column) is not None


# --------------------------------------------------------------------------------------------- casts


def _target(to: exp.DataType) -> str:
    """PostgreSQL's name of a cast target (int2/int4/int8/float8/numeric/text/date/timestamp/…)."""
    if to.is_type(exp.DataType.Type.SMALLINT, exp.DataType.Type.TINYINT):
        return "int2"
    if to.is_type(exp.DataType.Type.INT):
        return "int4"
    if to.is_type(exp.DataType.Type.BIGINT):
        return "int8"
    if to.is_type(*exp.DataType.INTEGER_TYPES):
        return "wideint"  # HUGEINT, INT128, unsigned …
    if to.is_type(exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT):
        return "float8"
    if to.is_type(exp.DataType.Type.DECIMAL, exp.DataType.Type.BIGDECIMAL):
        return "numeric"
    if to.is_type(*exp.DataType.TEXT_TYPES):
        return "text"
    if to.is_type(exp.DataType.Type.DATE):
        return "date"
    if to.is_type(exp.DataType.Type.TIMESTAMP, exp.DataType.Type.DATETIME):
        return "timestamp"
    if to.is_type(exp.DataType.Type.TIMESTAMPTZ):
        return "timestamptz"
    if to.is_type(exp.DataType.Type.BOOLEAN):
        return "bool"
    return to.sql("postgres").lower()


def _decimal_params(to: exp.DataType, dialect: str) -> tuple[int, int] | None:
    params = to.expressions
    if not params:
        # DuckDB's bare DECIMAL; PostgreSQL's is unbounded; on Spark it would be DECIMAL(10, 0), so
        # the Spark dialect writes DECIMAL(38, 18) instead (see _cast)
        return {"duckdb": (18, 3), "spark": (38, 18)}.get(dialect)
    try:
        p = int(params[0].this.this)
        s = int(params[1].this.this) if len(params) > 1 else 0
    except (AttributeError, ValueError):
        return None
    return p, s


def _cast(n: exp.Cast | exp.TryCast, src: str, dialect: str) -> exp.Expression:
    value, to = n.this, n.to
    if _is_literal_cast(n):
        # A constant: the engine evaluates it before the charge (typecheck.constant_subexpressions),
        # so it cannot fail here; on DuckDB TRY_CAST (folded once, no per-row cost) in depth.
        return exp.TryCast(this=value, to=to) if dialect == "duckdb" else exp.Cast(this=value, to=to)
    target = _target(to)
    if src in NUMERIC_FAMILIES and target in ("int2", "int4", "int8"):
        if src == "int" and target == "int8":
            return exp.Cast(this=value, to=to)
        if dialect == "spark" and src != "int":
            # Spark's cast truncates (2.7 → 2); DuckDB and PostgreSQL round, half-even from DOUBLE
            # and half away from zero from DECIMAL: BROUND / ROUND first (inside the range guard).
            rounded = exp.Anonymous(this="BROUND", expressions=[value.copy()]) if src == "float" else exp.Round(this=value.copy())
            return guards.integer_cast(value, target, rounded=rounded)
        return guards.integer_cast(value, target)
    if src in NUMERIC_FAMILIES and target == "numeric":
        params = _decimal_params(to, dialect)
        if dialect == "spark" and params is not None and not to.expressions:
            to = exp.DataType.build(f"DECIMAL({params[0]}, {params[1]})")
        return exp.Cast(this=value, to=to) if params is None else guards.decimal_cast(value, to, *params)
    if src == "date" and target in ("timestamp", "timestamptz"):
        return guards.guarded(guards.in_domain(value, "date"), exp.Cast(this=value, to=to))
    if dialect == "duckdb":
        if src == "text" or src == "unknown" or target in ("wideint",) or (src, target) not in PG_TOTAL_CASTS | _DUCK_TOTAL_CASTS:
            return exp.TryCast(this=value, to=to)
        return exp.Cast(this=value, to=to)
    if dialect == "spark":
        if src == "text" and target not in ("text", "wideint"):
            # safe: else sqlglot writes CAST for Spark; try_cast is NULL on a bad value, under ANSI too
            return exp.TryCast(this=value, to=to, safe=True)
        if (src, target) not in PG_TOTAL_CASTS | _DUCK_TOTAL_CASTS:
            raise UnsupportedQuery(f"CAST from {_PG_NAMES.get(src, src)} to {target} can fail on some values on Spark",
                                   hint="compare or group by the column without the cast")
        return exp.Cast(this=value, to=to)
    if (src, target) not in PG_TOTAL_CASTS:
        raise UnsupportedQuery(
            f"CAST from {_PG_NAMES.get(src, src)} to {target} can fail on some values, and PostgreSQL has no TRY_CAST",
            hint="compare or group by the column without the cast, or use the DuckDB backend",
        )
    return exp.Cast(this=value, to=to)


_DUCK_TOTAL_CASTS: frozenset[tuple[str, str]] = frozenset({("bool", t) for t in ("int2", "int4", "int8", "float8", "text")})


def _is_literal_cast(node: exp.Expression) -> bool:
    inner = node.this
    while isinstance(inner, exp.Paren | exp.Neg):
        inner = inner.this
    return isinstance(inner, exp.Literal | exp.Null | exp.Boolean)


# -------------------------------------------------------------------------------------- arithmetic


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


def _numeric(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Literal) or (isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.DECIMAL)):
        return node
    return exp.Cast(this=node, to=exp.DataType.build("DECIMAL"))


def _numeric_arith(n: exp.Expression, fams: list[str], dialect: str) -> exp.Expression:
    """DuckDB: exact operands in DOUBLE (which cannot overflow or raise); PostgreSQL: in numeric."""
    if dialect == "postgres":
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
    exact = any(f in _EXACT for f in fams)
    if isinstance(n, exp.Neg):
        return exp.Neg(this=exp.Cast(this=n.this, to=exp.DataType.build("DOUBLE"))) if exact else n
    a, b = (_double(n.this), _double(n.expression)) if exact else (n.this, n.expression)
    if exact and isinstance(a, exp.Literal) and isinstance(b, exp.Literal):
        a = exp.Cast(this=a, to=exp.DataType.build("DOUBLE"))  # constant folding must not overflow either
    if isinstance(n, exp.Div):
        quotient = exp.Div(this=a, expression=exp.Nullif(this=b, expression=exp.Literal.number(0)), typed=False, safe=False)
        if fams[0] == fams[1] == "int":
            # PostgreSQL's integer division truncates toward zero; Spark has no numeric TRUNC, and
            # q - fmod(q, 1) is exact in DOUBLE (NaN/inf stay NaN, clamped later)
            if dialect == "spark":
                q = exp.paren(quotient, copy=False)
                return exp.paren(exp.Sub(this=q, expression=exp.paren(exp.Mod(this=q.copy(), expression=exp.Literal.number(1)))))
            return exp.Trunc(this=quotient)
        return quotient
    if isinstance(n, exp.Mod):
        return exp.Mod(this=a, expression=exp.Nullif(this=b, expression=exp.Literal.number(0)))
    return type(n)(this=a, expression=b)


def _temporal_arith(n: exp.Expression, fams: list[str], dialect: str) -> exp.Expression:
    """Date/time arithmetic with every operand guarded, so the result fits the engine's range."""
    if isinstance(n, exp.Neg):
        if fams[0] != "interval":
            raise UndefinedFunction(f"operator does not exist: - {_PG_NAMES.get(fams[0], fams[0])}")
        return _guard_operands(n, [(n.this, fams[0])], n)
    a, b = fams
    left, right = n.this, n.expression
    op = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Mod: "%"}[type(n)]  # type: ignore[index]
    kinds = (a, b)
    ok_add = {("date", "int"), ("int", "date"), ("date", "interval"), ("interval", "date"), ("timestamp", "interval"),
              ("interval", "timestamp"), ("interval", "interval")}
    ok_sub = {("date", "int"), ("date", "interval"), ("timestamp", "interval"), ("date", "date"), ("timestamp", "timestamp"),
              ("date", "timestamp"), ("timestamp", "date"), ("interval", "interval")}
    allowed = ok_add if isinstance(n, exp.Add) else ok_sub if isinstance(n, exp.Sub) else set()
    if kinds not in allowed:
        if isinstance(n, exp.Mul | exp.Div) and "interval" in kinds and not _reads_column(n):
            return n  # a constant interval product: evaluated before the charge
        if "interval" in kinds and isinstance(n, exp.Mul | exp.Div):
            raise UnsupportedQuery(
                f"interval arithmetic over column values ({n.sql(dialect)}) is not supported: it can overflow",
                hint="add or subtract interval literals, e.g. col + INTERVAL '7 days'",
            )
        raise UndefinedFunction(f"operator does not exist: {_PG_NAMES.get(a, a)} {op} {_PG_NAMES.get(b, b)}",
                                hint="dates take + or - with integers (days) and intervals")
    if dialect == "spark" and kinds == ("date", "date") and isinstance(n, exp.Sub):
        # Spark's date - date is an INTERVAL (ANSI) where PostgreSQL's is an integer of days
        diff = exp.Anonymous(this="DATEDIFF", expressions=[left, right])
        return _guard_operands(diff, [(n.this, a), (n.expression, b)], diff)
    if dialect in ("duckdb", "spark") and kinds in {("date", "timestamp"), ("timestamp", "date")}:
        # DuckDB has no DATE - TIMESTAMP: both sides as TIMESTAMP (the date side guarded)
        left = guards.as_timestamp(left) if a == "date" else left
        right = guards.as_timestamp(right) if b == "date" else right
        a = b = "timestamp"
    if "int" in (a, b):
        # date + integer takes an int4 (DuckDB: INTEGER, not BIGINT or DOUBLE; PostgreSQL: not numeric)
        if a == "int":
            left = exp.Cast(this=left, to=exp.DataType.build("INT"))
        else:
            right = exp.Cast(this=right, to=exp.DataType.build("INT"))
    result = type(n)(this=left, expression=right)
    return _guard_operands(result, [(n.this, fams[0]), (n.expression, fams[1])], result)


def _guard_operands(node: exp.Expression, operands: list[tuple[exp.Expression, str]], result: exp.Expression) -> exp.Expression:
    conds: list[exp.Expression] = []
    for operand, fam in operands:
        if fam in TEMPORAL_FAMILIES:
            conds.append(guards.in_domain(operand, fam))
        elif fam == "int":
            conds.append(guards.int_in_range(operand, MAX_DAY_OFFSET))
        elif fam == "interval":
            days = guards.interval_days(operand)
            if days is None:
                conds.append(guards.interval_in_range(operand))  # a computed interval: bounded before use
            elif days > MAX_INTERVAL_DAYS:
                raise UnsupportedQuery("intervals in row-level date arithmetic must be at most 10,000 years",
                                       hint="use a smaller interval literal")
        else:
            raise UndefinedFunction(f"operator does not exist on {_PG_NAMES.get(fam, fam)} in date arithmetic")
    return guards.guarded(exp.and_(*conds), result) if conds else result


def _timestamp_side(node: exp.Expression, fam: str | None) -> exp.Expression:
    """A DATE operand next to a TIMESTAMP one, as a TIMESTAMP that cannot fail to convert."""
    return guards.as_timestamp(node) if fam == "date" else node


# ----------------------------------------------------------------------------------------- guards


def _guard_sqrt(n: exp.Expression, opfam: Mapping[str, str], dialect: str) -> exp.Expression:
    x = _operand(n, "this", dialect)
    return guards.guarded(exp.GTE(this=x.copy(), expression=exp.Literal.number(0)), n)


def _guard_ln(n: exp.Expression, opfam: Mapping[str, str], dialect: str) -> exp.Expression:
    if isinstance(n, exp.Log) and n.expression is not None:  # log(base, value)
        base, value = _operand(n, "this", dialect), _operand(n, "expression", dialect)
        cond: exp.Expression = exp.and_(
            exp.GT(this=value.copy(), expression=exp.Literal.number(0)),
            exp.GT(this=base.copy(), expression=exp.Literal.number(0)),
            exp.NEQ(this=base.copy(), expression=exp.Literal.number(1)),
        )
        return guards.guarded(cond, n)
    x = _operand(n, "this", dialect)
    return guards.guarded(exp.GT(this=x.copy(), expression=exp.Literal.number(0)), n)


def _guard_exp(n: exp.Expression, opfam: Mapping[str, str], dialect: str) -> exp.Expression:
    x = _operand(n, "this", dialect)  # exp(709.78) is the largest finite double; numeric exp grows digits
    return guards.guarded(exp.LTE(this=x.copy(), expression=exp.Literal.number(709)), n)


def _guard_trunc(n: exp.Expression, opfam: Mapping[str, str], dialect: str) -> exp.Expression:
    fam = opfam.get("this", "unknown")
    if fam not in TEMPORAL_FAMILIES:
        return n
    return guards.guarded(guards.in_domain(n.this, fam), n)


def _guard_dates(n: exp.Expression, opfam: Mapping[str, str], dialect: str) -> exp.Expression:
    """to_char/age: every date/timestamp operand in the safe domain (±infinity and beyond → NULL);
    an operand of another type is refused (no run-time conversion of private values)."""
    rule = function_rule(n)
    name = rule.name if rule is not None else "?"
    operands = list(enumerate(n.expressions)) if isinstance(n, exp.Anonymous) else [("this", n.this)]
    conds: list[exp.Expression] = []
    for key, value in operands:
        fam = opfam.get(key, "unknown")  # type: ignore[call-overload]
        if fam not in TEMPORAL_FAMILIES:
            raise UndefinedFunction(
                f"function {name}({_PG_NAMES.get(fam, fam)}) does not exist",
                hint="it takes a date or timestamp (to_char of numbers is not supported)",
            )
        conds.append(guards.in_domain(value, fam))
    out: exp.Expression = n
    if isinstance(n, exp.TimeToStr) and dialect == "postgres":
        fmt = n.args["format"]
        out = exp.Anonymous(this="TO_CHAR", expressions=[n.this, exp.Literal.string(to_char_pattern(str(fmt.this)))])
    return guards.guarded(exp.and_(*conds), out)


def _operand(n: exp.Expression, key: str, dialect: str) -> exp.Expression:
    """The operand ``key`` of ``n`` (as numeric on PostgreSQL, so that the guard and the function see one value)."""
    value = n.args[key]
    if dialect == "postgres":
        value = _numeric(value)
        n.set(key, value)
    return value


_GUARDS: dict[type[exp.Expression], Callable[[exp.Expression, Mapping[str, str], str], exp.Expression]] = {
    exp.Sqrt: _guard_sqrt,
    exp.Ln: _guard_ln,
    exp.Log: _guard_ln,
    exp.Exp: _guard_exp,
    exp.TimestampTrunc: _guard_trunc,
    exp.DateTrunc: _guard_trunc,
    exp.TimeToStr: _guard_dates,
}
