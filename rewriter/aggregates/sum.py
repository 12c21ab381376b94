"""SUM(expr): clamped row values summed per (unit, group), the partial clamped again.

Row-level input: the argument clamped to its declared range [L, U] and put on the grid (an exact
integer per row). Partial: ``SUM`` per (unit, group) clamped to ``max_rows·[min(L,0), max(U,0)]``
grid units; that bound is the sensitivity. Post-processing: noisy integer × grid (an ``int8``
when the input is an integer expression on grid 1, else ``float8``).

**Per-unit bounds** (``unit_lower``/``unit_upper`` on the column, GoogleSQL's
``contribution_bounds_per_group``): ``SUM(col)`` of the bare column (FILTER allowed) clamps each
unit's whole total in the group to ``[unit_lower, unit_upper]`` — all its rows count, not
``max_rows`` of them — and the sensitivity is ``max(|unit_lower|, |unit_upper|)``. Rows are still
clamped first (to ``lower``/``upper`` when declared, else to ``[min(unit_lower, 0),
max(unit_upper, 0)]``) so every per-unit total is a bounded exact integer. A unit with no
non-NULL value in the group contributes 0, like an absent one.

With ``max_contributions = k`` (rows per unit across all groups) the statistic also records its
L1 bound ``k·c`` (c the largest row magnitude) whenever 0 lies in the partial's clamp range, so
that ``|partial| ≤ (rows kept in the group)·c``; the planner then uses ``sensitivity_norms``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

from sqlglot import exp

from dpsql.rewriter.aggregates.base import (
    AggregateSpec,
    Builder,
    ClassifyContext,
    Grid,
    Value,
    clamp_int,
    coalesce0,
    fmt,
    numeric_argument,
    pretty,
)
from dpsql.rewriter.plan import AggregateRelease, Statistic

NODES: tuple[type[exp.Expression], ...] = (exp.Sum,)
SPEC_KINDS = ("sum",)
RELEASE_KINDS = ("sum",)
ALIASES: dict[str, tuple[type[exp.Expression], str]] = {}


def classify(node: exp.Expression, ctx: ClassifyContext) -> AggregateSpec | None:
    """``SUM(x)`` (with FILTER) over a row-level, non-unit expression."""
    return AggregateSpec("sum", ctx.filtered(numeric_argument(node, ctx)), ctx.label, node)


def bound(spec: AggregateSpec, b: Builder) -> AggregateRelease:
    """One sum statistic with sensitivity ``max_rows · max(|L|, |U|)`` grid units, or
    ``max(|unit_lower|, |unit_upper|)`` under per-unit bounds."""
    assert spec.input is not None
    unit = b.unit_bounded_column(spec)
    if unit is not None:
        return _bound_per_unit(spec, b, *unit)
    g = b.grid_for(spec)
    col = b.input_column(spec.input, grid=g)
    lo, hi = b.max_rows * min(g.lo, 0), b.max_rows * max(g.hi, 0)
    partial = clamp_int(coalesce0(exp.Sum(this=exp.column(col))), lo, hi)
    desc = f"SUM({pretty(spec.input)}) clamped to [{fmt(g.lower)}, {fmt(g.upper)}] per row, grid {fmt(g.step)}"
    c = max(abs(g.lo), abs(g.hi))
    s = b.stat(f"sum:{col}", "sum", partial, max(abs(lo), abs(hi)), desc, grid=g.step, l1=b.rows_l1(c))
    return AggregateRelease("sum", spec.label, (s,), g.lower, g.upper, integer=g.integer_input and g.exponent == 0)


def unit_partial(col: str, lo: int, hi: int, value: exp.Expression | None = None) -> exp.Expression:
    """``CASE WHEN COUNT(col) = 0 THEN 0 ELSE LEAST(GREATEST(value, lo), hi) END`` per (unit, group):
    the unit's per-group ``value`` (default ``SUM(col)``) clamped, 0 for a unit without values there."""
    n = exp.Count(this=exp.column(col))
    v = value if value is not None else exp.Sum(this=exp.column(col))
    return exp.Case(
        ifs=[exp.If(this=exp.EQ(this=n, expression=exp.Literal.number(0)), true=exp.Literal.number(0))],
        default=clamp_int(v, lo, hi),
    )


def unit_range(g: Grid, unit_lo: Fraction, unit_hi: Fraction) -> tuple[int, int]:
    """The per-unit bounds in grid integers, rounded outward (the sensitivity uses these)."""
    return math.floor(unit_lo / g.step), math.ceil(unit_hi / g.step)


def _bound_per_unit(spec: AggregateSpec, b: Builder, column: str, unit_lo: Fraction, unit_hi: Fraction) -> AggregateRelease:
    g = b.unit_grid(spec, column, unit_lo, unit_hi)
    assert spec.input is not None
    col = b.input_column(spec.input, grid=g)
    lo, hi = unit_range(g, unit_lo, unit_hi)
    partial = unit_partial(col, lo, hi)
    c = max(abs(g.lo), abs(g.hi))
    l1 = b.rows_l1(c) if lo <= 0 <= hi else None  # |clamp(T)| ≤ |T| ≤ rows·c only when 0 is inside
    desc = (f"SUM({pretty(spec.input)}): each unit's total per group clamped to [{fmt(unit_lo)}, {fmt(unit_hi)}] "
            f"(unit bounds), rows clamped to [{fmt(g.lower)}, {fmt(g.upper)}], grid {fmt(g.step)}")
    s = b.stat(f"usum:{col}", "sum", partial, max(abs(lo), abs(hi)), desc, grid=g.step, l1=l1)
    integer = g.integer_input and g.exponent == 0
    return AggregateRelease("sum", spec.label, (s,), g.lower, g.upper, integer=integer)


def finalize(r: AggregateRelease, stats: Mapping[str, Statistic], cols: Sequence[Sequence[int]], n: int) -> list[Value]:
    """Noisy integer × grid per group."""
    if r.integer:
        return [int(v) for v in cols[0]]
    step = stats[r.stats[0]].grid
    return [float(Fraction(int(v)) * step) for v in cols[0]]


def pg_type(r: AggregateRelease) -> str:
    """``int8`` for an integer sum on grid 1, else ``float8``."""
    return "int8" if r.integer else "float8"
