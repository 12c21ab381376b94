"""SUM(expr): clamped row values summed per (unit, group), the partial clamped again.

Row-level input: the argument clamped to its declared range [L, U] and put on the grid (an exact
integer per row). Partial: ``SUM`` per (unit, group) clamped to ``max_rows·[min(L,0), max(U,0)]``
grid units; that bound is the sensitivity. Post-processing: noisy integer × grid (an ``int8``
when the input is an integer expression on grid 1, else ``float8``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

from sqlglot import exp

from dpsql.rewriter.aggregates.base import (
    AggregateSpec,
    Builder,
    ClassifyContext,
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
    """One sum statistic with sensitivity ``max_rows · max(|L|, |U|)`` grid units."""
    assert spec.input is not None
    g = b.grid_for(spec)
    col = b.input_column(spec.input, grid=g)
    lo, hi = b.max_rows * min(g.lo, 0), b.max_rows * max(g.hi, 0)
    partial = clamp_int(coalesce0(exp.Sum(this=exp.column(col))), lo, hi)
    desc = f"SUM({pretty(spec.input)}) clamped to [{fmt(g.lower)}, {fmt(g.upper)}] per row, grid {fmt(g.step)}"
    s = b.stat(f"sum:{col}", "sum", partial, max(abs(lo), abs(hi)), desc, grid=g.step)
    return AggregateRelease("sum", spec.label, (s,), g.lower, g.upper, integer=g.integer_input and g.exponent == 0)


def finalize(r: AggregateRelease, stats: Mapping[str, Statistic], cols: Sequence[Sequence[int]], n: int) -> list[Value]:
    """Noisy integer × grid per group."""
    if r.integer:
        return [int(v) for v in cols[0]]
    step = stats[r.stats[0]].grid
    return [float(Fraction(int(v)) * step) for v in cols[0]]


def pg_type(r: AggregateRelease) -> str:
    """``int8`` for an integer sum on grid 1, else ``float8``."""
    return "int8" if r.integer else "float8"
