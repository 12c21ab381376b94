"""Interval arithmetic: the range an aggregate's input expression can take, from the policy's bounds.

The range is used only as the clamp at the aggregate's input (security.md R6: clamp after every
row-level expression), so it must be data-independent, not exact: any sound over-approximation is
private, a tight one is more accurate. ``SUM(price * qty)`` with both bounded works; so does an
analyst's own clamp ``SUM(LEAST(GREATEST(x, 0), 100))`` on a column without declared bounds.

>>> from sqlglot import parse_one
>>> b = {("t", "x"): (Fraction(0), Fraction(10)), ("t", "y"): (Fraction(-2), Fraction(3))}
>>> interval(parse_one("t.x * t.y + 1"), b)
Interval(lo=Fraction(-19, 1), hi=Fraction(31, 1))
>>> interval(parse_one("CASE WHEN t.y > 0 THEN 1 ELSE 0 END"), b)
Interval(lo=Fraction(0, 1), hi=Fraction(1, 1))
>>> interval(parse_one("LEAST(GREATEST(t.z, 0), 100)"), b)
Interval(lo=Fraction(0, 1), hi=Fraction(100, 1))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, InvalidOperation
from fractions import Fraction

from sqlglot import exp

Bounds = Mapping[tuple[str, str], tuple[Fraction, Fraction] | None]


@dataclass(frozen=True)
class Interval:
    """A closed range; a None end is unbounded on that side."""

    lo: Fraction | None
    hi: Fraction | None

    @property
    def bounded(self) -> bool:
        """True when both ends are finite."""
        return self.lo is not None and self.hi is not None


UNBOUNDED = Interval(None, None)
_EMPTY = None  # the NULL literal: contributes no value to a union

_EXTRACT_RANGES = {
    "MONTH": (1, 12),
    "DAY": (1, 31),
    "HOUR": (0, 23),
    "MINUTE": (0, 59),
    "SECOND": (0, 61),
    "DOW": (0, 6),
    "DAYOFWEEK": (0, 6),
    "ISODOW": (1, 7),
    "DOY": (1, 366),
    "DAYOFYEAR": (1, 366),
    "QUARTER": (1, 4),
    "WEEK": (1, 53),
}


def interval(node: exp.Expression, bounds: Bounds) -> Interval:
    """A sound range for ``node``'s numeric values given column bounds keyed by (table alias, column).

    Columns missing from ``bounds`` (or mapped to None) are unbounded. NULLs are ignored: they are
    never summed.
    """
    r = _iv(node, bounds)
    return UNBOUNDED if r is None else r


def _iv(node: exp.Expression, b: Bounds) -> Interval | None:
    if isinstance(node, exp.Paren | exp.Alias):
        return _iv(node.this, b)
    if isinstance(node, exp.Null):
        return _EMPTY
    if isinstance(node, exp.Literal):
        v = literal_fraction(node)
        return Interval(v, v) if v is not None else UNBOUNDED
    if isinstance(node, exp.Pi):  # an enclosure of the engines' double π (3.141592653589793)
        return Interval(Fraction(314159265358979, 10**14), Fraction(314159265358980, 10**14))
    if isinstance(node, exp.Boolean):
        v = Fraction(1 if node.this else 0)
        return Interval(v, v)
    if isinstance(node, exp.Column):
        rng = b.get((node.table.lower(), node.name.lower()))
        return Interval(*rng) if rng else UNBOUNDED
    if isinstance(node, exp.Neg):
        a = _iv(node.this, b)
        return None if a is None else Interval(_neg(a.hi), _neg(a.lo))
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod):
        x, y = _iv(node.this, b), _iv(node.expression, b)
        if x is None or y is None:
            return _EMPTY
        if isinstance(node, exp.Add):
            return Interval(_add(x.lo, y.lo), _add(x.hi, y.hi))
        if isinstance(node, exp.Sub):
            return Interval(_add(x.lo, _neg(y.hi)), _add(x.hi, _neg(y.lo)))
        if isinstance(node, exp.Mul):
            return _mul(x, y)
        if isinstance(node, exp.Div):
            return _div(x, y)
        return _mod(x, y)
    if isinstance(node, exp.Abs):
        a = _iv(node.this, b)
        if a is None:
            return _EMPTY
        if not a.bounded:
            return Interval(Fraction(0), None)
        assert a.lo is not None and a.hi is not None
        lo = Fraction(0) if a.lo <= 0 <= a.hi else min(abs(a.lo), abs(a.hi))
        return Interval(lo, max(abs(a.lo), abs(a.hi)))
    if isinstance(node, exp.Greatest | exp.Least):
        return _minmax(node, b, greatest=isinstance(node, exp.Greatest))
    if isinstance(node, exp.Case | exp.If):
        branches = [i.args.get("true") for i in node.args.get("ifs") or []]
        if isinstance(node, exp.If):
            branches = [node.args.get("true")]
        branches.append(node.args.get("default") if isinstance(node, exp.Case) else node.args.get("false"))
        return _union([_iv(x, b) for x in branches if x is not None])
    if isinstance(node, exp.Coalesce):
        return _union([_iv(x, b) for x in [node.this, *node.expressions]])
    if isinstance(node, exp.Nullif):
        return _iv(node.this, b)
    if isinstance(node, exp.Cast | exp.TryCast):
        a = _iv(node.this, b)
        if a is None:
            return _EMPTY
        if node.to.is_type(*exp.DataType.INTEGER_TYPES):
            return _outward_integer(a)
        if node.to.is_type(*exp.DataType.REAL_TYPES):
            return a
        return UNBOUNDED
    if isinstance(node, exp.Round | exp.Floor | exp.Ceil | exp.Trunc):
        a = _iv(node.this, b)
        return None if a is None else _outward_integer(a)
    if isinstance(node, exp.Sign):
        return Interval(Fraction(-1), Fraction(1))
    if isinstance(node, exp.Sqrt):
        a = _iv(node.this, b)
        if a is None:
            return _EMPTY
        if a.hi is None:
            return Interval(Fraction(0), None)
        return Interval(Fraction(0), _up(math.sqrt(max(float(a.hi), 0.0))))
    if isinstance(node, exp.Exp):
        a = _iv(node.this, b)
        if a is None:
            return _EMPTY
        if a.hi is None or a.hi > 700:
            return Interval(Fraction(0), None)
        return Interval(Fraction(0), _up(math.exp(float(a.hi))))
    if isinstance(node, exp.Pow):
        return _pow(node, b)
    if isinstance(node, exp.Extract):
        unit = node.this.name.upper() if node.this is not None else ""
        if unit in _EXTRACT_RANGES:
            lo, hi = _EXTRACT_RANGES[unit]
            return Interval(Fraction(lo), Fraction(hi))
        return UNBOUNDED
    if isinstance(node, exp.Try):
        return _iv(node.this, b)
    return UNBOUNDED


def literal_fraction(node: exp.Expression) -> Fraction | None:
    """The exact value of a numeric literal (possibly negated or parenthesised), else None."""
    sign = 1
    while isinstance(node, exp.Paren | exp.Neg):
        if isinstance(node, exp.Neg):
            sign = -sign
        node = node.this
    if not isinstance(node, exp.Literal) or node.is_string:
        return None
    try:
        d = Decimal(node.this)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    return sign * Fraction(d)


def _neg(v: Fraction | None) -> Fraction | None:
    return None if v is None else -v


def _add(a: Fraction | None, c: Fraction | None) -> Fraction | None:
    return None if a is None or c is None else a + c


def _mul(x: Interval, y: Interval) -> Interval:
    if x.bounded and y.bounded:
        assert x.lo is not None and x.hi is not None and y.lo is not None and y.hi is not None
        p = [x.lo * y.lo, x.lo * y.hi, x.hi * y.lo, x.hi * y.hi]
        return Interval(min(p), max(p))
    for a, c in ((x, y), (y, x)):  # multiplication by the exact constant 0
        if a.lo == 0 and a.hi == 0:
            return Interval(Fraction(0), Fraction(0))
        del c
    return UNBOUNDED


def _div(x: Interval, y: Interval) -> Interval:
    if not (x.bounded and y.bounded):
        return UNBOUNDED
    assert x.lo is not None and x.hi is not None and y.lo is not None and y.hi is not None
    if y.lo <= 0 <= y.hi:
        return UNBOUNDED  # division by a value near zero; NULLIF(…, 0) makes zero itself NULL
    q = [x.lo / y.lo, x.lo / y.hi, x.hi / y.lo, x.hi / y.hi]
    return Interval(_down(min(q)), _up(max(q)))


def _mod(x: Interval, y: Interval) -> Interval:
    if not y.bounded:
        return UNBOUNDED
    assert y.lo is not None and y.hi is not None
    m = max(abs(y.lo), abs(y.hi))
    lo = Fraction(0) if x.lo is not None and x.lo >= 0 else -m
    hi = Fraction(0) if x.hi is not None and x.hi <= 0 else m
    return Interval(lo, hi)


def _minmax(node: exp.Expression, b: Bounds, *, greatest: bool) -> Interval | None:
    args = [node.this, *node.expressions]
    parts = [(_iv(a, b), isinstance(a, exp.Literal) or (isinstance(a, exp.Neg) and isinstance(a.this, exp.Literal))) for a in args]
    ivs = [(p, lit) for p, lit in parts if p is not None]
    if not ivs:
        return _EMPTY
    # GREATEST/LEAST skip NULL arguments, so only literal (never-NULL) arguments pin the near end.
    if greatest:
        his = [p.hi for p, _ in ivs]
        hi = None if any(h is None for h in his) else max(h for h in his if h is not None)
        los = [p.lo for p, _ in ivs]
        lo = None if any(v is None for v in los) else min(v for v in los if v is not None)
        pinned = [p.lo for p, lit in ivs if lit and p.lo is not None]
        if pinned:
            lo = max([*pinned, *([lo] if lo is not None else [])])
        return Interval(lo, hi)
    los = [p.lo for p, _ in ivs]
    lo = None if any(v is None for v in los) else min(v for v in los if v is not None)
    his = [p.hi for p, _ in ivs]
    hi = None if any(h is None for h in his) else max(h for h in his if h is not None)
    pinned = [p.hi for p, lit in ivs if lit and p.hi is not None]
    if pinned:
        hi = min([*pinned, *([hi] if hi is not None else [])])
    return Interval(lo, hi)


def _union(parts: list[Interval | None]) -> Interval | None:
    real = [p for p in parts if p is not None]
    if not real:
        return _EMPTY
    lo = None if any(p.lo is None for p in real) else min(p.lo for p in real if p.lo is not None)
    hi = None if any(p.hi is None for p in real) else max(p.hi for p in real if p.hi is not None)
    return Interval(lo, hi)


def _outward_integer(a: Interval) -> Interval:
    return Interval(
        None if a.lo is None else Fraction(math.floor(a.lo)),
        None if a.hi is None else Fraction(math.ceil(a.hi)),
    )


def _pow(node: exp.Expression, b: Bounds) -> Interval | None:
    base = _iv(node.this, b)
    n = literal_fraction(node.expression)
    if base is None:
        return _EMPTY
    if n is None or n.denominator != 1 or not 0 <= n <= 8 or not base.bounded:
        return UNBOUNDED
    assert base.lo is not None and base.hi is not None
    k = int(n)
    vals = [base.lo**k, base.hi**k]
    if k % 2 == 0 and base.lo <= 0 <= base.hi:
        vals.append(Fraction(0))
    return Interval(min(vals), max(vals))


def _decimal(v: float | Fraction, rounding: str) -> Fraction:
    ctx = Context(prec=13, rounding=rounding)
    if isinstance(v, float):
        exact = Fraction(v)
        margin = abs(exact) * Fraction(1, 10**12)  # a float from sqrt/exp may be 1 ulp off
        exact = exact + margin if rounding == ROUND_CEILING else exact - margin
    else:
        exact = v
    d = ctx.divide(Decimal(exact.numerator), Decimal(exact.denominator))
    return Fraction(d)


def _up(v: float | Fraction) -> Fraction:
    """A terminating decimal (13 significant digits) that is >= v."""
    return _decimal(v, ROUND_CEILING)


def _down(v: float | Fraction) -> Fraction:
    """A terminating decimal (13 significant digits) that is <= v."""
    return _decimal(v, ROUND_FLOOR)
