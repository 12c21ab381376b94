"""Domain guards: ``CASE WHEN <check> THEN <operation> END`` so an operation never sees a value it could fail on.

The checks compare a value with literals only, so they cost O(1) a row and take no exceptional
path on any engine (NULL and NaN make the check false or unknown, and the result NULL). They are
what makes row-level expressions total without DuckDB's ``TRY`` (see :mod:`~dpsql.rewriter.functions`).

>>> from sqlglot import parse_one
>>> integer_cast(parse_one("t.x"), "int4").sql("duckdb")
'CASE WHEN t.x > -2147483648.5 AND t.x < 2147483647.5 THEN CAST(t.x AS INT) END'
>>> interval_days(parse_one("INTERVAL '2 years 3 days'"))
Fraction(735, 1)
"""

from __future__ import annotations

import re
from fractions import Fraction

from sqlglot import exp

from dpsql.rewriter.functions import INTEGER_RANGES, MAX_INTERVAL_DAYS, SAFE_DATE_RANGE, SAFE_TIMESTAMP_RANGE

_SQL_TYPES = {"int2": "SMALLINT", "int4": "INT", "int8": "BIGINT"}


def guarded(condition: exp.Expression, value: exp.Expression) -> exp.Expression:
    """``CASE WHEN condition THEN value END``: ``value`` is evaluated only on rows where ``condition`` holds."""
    return exp.Case(ifs=[exp.If(this=condition, true=value)])


def _half_open(value: exp.Expression, lo: Fraction, hi: Fraction) -> exp.Expression:
    return exp.and_(
        exp.GT(this=value.copy(), expression=_number(lo)),
        exp.LT(this=value.copy(), expression=_number(hi)),
    )


def _number(v: Fraction) -> exp.Expression:
    """An exact literal for an integer or a half-integer (negative values as unary minus)."""
    if v.denominator == 1:
        text = str(abs(v.numerator))
    elif v.denominator == 2:
        text = f"{abs(v.numerator) // 2}.5"
    else:
        raise ValueError(f"{v} is neither an integer nor a half-integer")
    lit = exp.Literal.number(text)
    return exp.Neg(this=lit) if v < 0 else lit


def integer_cast(value: exp.Expression, target: str, *, rounded: exp.Expression | None = None) -> exp.Expression:
    """``value`` (a number of any type) cast to the integer type ``target`` (int2/int4/int8), NULL
    when the rounded value would not fit — instead of the engine's overflow error. Engines round
    on the cast, so the guard is lo − ½ < value < hi + ½ (exclusive). ``rounded`` is what is cast
    instead of ``value`` on an engine whose cast truncates (Spark: ``BROUND(value)``)."""
    lo, hi = INTEGER_RANGES[target]
    cond = _half_open(value, Fraction(2 * lo - 1, 2), Fraction(2 * hi + 1, 2))
    operand = value.copy() if rounded is None else rounded
    return guarded(cond, exp.Cast(this=operand, to=exp.DataType.build(_SQL_TYPES[target])))


def decimal_cast(value: exp.Expression, to: exp.DataType, precision: int, scale: int) -> exp.Expression:
    """``value`` cast to DECIMAL(precision, scale), NULL when the rounded value has too many digits."""
    limit = Fraction(10) ** (precision - scale) - Fraction(1, 2) * Fraction(10) ** -scale
    cond = exp.and_(
        exp.GT(this=value.copy(), expression=exp.Neg(this=_decimal_literal(limit))),
        exp.LT(this=value.copy(), expression=_decimal_literal(limit)),
    )
    return guarded(cond, exp.Cast(this=value.copy(), to=to))


def _decimal_literal(v: Fraction) -> exp.Literal:
    digits = 0
    while (v * 10**digits).denominator != 1:
        digits += 1
    n = int(v * 10**digits)
    text = str(n) if digits == 0 else f"{n // 10**digits}.{n % 10**digits:0{digits}d}"
    return exp.Literal.number(text)


def in_domain(value: exp.Expression, family: str) -> exp.Expression:
    """``value BETWEEN`` the safe date or timestamp range (``family`` "date" or "timestamp")."""
    lo, hi = SAFE_DATE_RANGE if family == "date" else SAFE_TIMESTAMP_RANGE
    kind = "DATE" if family == "date" else "TIMESTAMP"
    return exp.Between(
        this=value.copy(),
        low=exp.Cast(this=exp.Literal.string(lo), to=exp.DataType.build(kind)),
        high=exp.Cast(this=exp.Literal.string(hi), to=exp.DataType.build(kind)),
    )


def interval_in_range(value: exp.Expression) -> exp.Expression:
    """``value BETWEEN`` ± the largest interval row-level date arithmetic accepts (10,000 years)."""
    years = exp.Literal.string(str(MAX_INTERVAL_DAYS // 366))
    return exp.Between(
        this=value.copy(),
        low=exp.Neg(this=exp.Interval(this=years.copy(), unit=exp.Var(this="YEARS"))),
        high=exp.Interval(this=years, unit=exp.Var(this="YEARS")),
    )


def int_in_range(value: exp.Expression, bound: int) -> exp.Expression:
    """``value BETWEEN -bound AND bound``."""
    return exp.Between(this=value.copy(), low=exp.Neg(this=exp.Literal.number(bound)), high=exp.Literal.number(bound))


def as_timestamp(value: exp.Expression) -> exp.Expression:
    """A DATE value as TIMESTAMP, NULL outside the safe range (the engines' own cast fails for dates
    beyond the TIMESTAMP range)."""
    return guarded(in_domain(value, "date"), exp.Cast(this=value.copy(), to=exp.DataType.build("TIMESTAMP")))


_UNIT_DAYS: dict[str, Fraction] = {
    "microsecond": Fraction(1, 86_400_000_000),
    "millisecond": Fraction(1, 86_400_000),
    "second": Fraction(1, 86_400),
    "minute": Fraction(1, 1_440),
    "hour": Fraction(1, 24),
    "day": Fraction(1),
    "week": Fraction(7),
    "month": Fraction(31),
    "quarter": Fraction(92),
    "year": Fraction(366),
    "decade": Fraction(3_660),
    "century": Fraction(36_600),
    "millennium": Fraction(366_000),
}
_ALIASES = {"us": "microsecond", "ms": "millisecond", "s": "second", "sec": "second", "secs": "second", "min": "minute",
            "mins": "minute", "h": "hour", "hr": "hour", "hrs": "hour", "d": "day", "w": "week", "mon": "month",
            "mons": "month", "y": "year", "yr": "year", "yrs": "year", "centuries": "century", "millennia": "millennium"}
_PART = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*([a-z]+)\s*")
_CLOCK = re.compile(r"\s*([+-]?)(\d+):(\d{1,2})(?::(\d{1,2}(?:\.\d+)?))?\s*")


def _unit(name: str) -> Fraction | None:
    n = name.lower()
    n = _ALIASES.get(n, n)
    if n not in _UNIT_DAYS and n.endswith("s"):
        n = n[:-1]
    return _UNIT_DAYS.get(n)


def interval_days(node: exp.Expression) -> Fraction | None:
    """An upper bound on |interval| in days for an interval literal (``INTERVAL '3 days'``,
    ``INTERVAL '1' YEAR``, ``'1 day 02:00'::interval``, a negated one), or None when ``node`` is not
    an interval literal dpsql can read (months count 31 days, years 366)."""
    while isinstance(node, exp.Paren | exp.Neg):
        node = node.this
    if isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.INTERVAL):
        node = exp.Interval(this=node.this)
    if not isinstance(node, exp.Interval) or not isinstance(node.this, exp.Literal):
        return None
    text = node.this.this.strip().lower()
    unit = node.args.get("unit")
    if unit is not None:
        per = _unit(unit.name)
        if per is None:
            return None
        try:
            return abs(Fraction(text)) * per
        except (ValueError, ZeroDivisionError):
            return None
    total = Fraction(0)
    pos = 0
    while pos < len(text):
        clock = _CLOCK.match(text, pos)
        if clock:
            h, m, s = Fraction(clock.group(2)), Fraction(clock.group(3)), Fraction(clock.group(4) or 0)
            total += (h * 3600 + m * 60 + s) / 86_400
            pos = clock.end()
            continue
        part = _PART.match(text, pos)
        if part is None:
            return None
        per = _unit(part.group(2))
        if per is None:
            return None
        total += abs(Fraction(part.group(1))) * per
        pos = part.end()
    return total if pos > 0 else None
