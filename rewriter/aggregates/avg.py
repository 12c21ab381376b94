"""AVG(expr): a noisy centred sum over a noisy count.

Row-level input: the argument clamped to [L, U] on the grid, as for SUM. Partials: the count
``LEAST(COUNT(x), max_rows)`` (sensitivity ``max_rows``) and the centred sum
``SUM(x − mid)`` scaled to the kept rows and clamped to ``max_rows·[lo − mid, hi − mid]``
(sensitivity ``max_rows·(U − L)/2`` about). Centring halves the sum's sensitivity. Post-processing:
``mid + centred_sum / max(count, 1)``, clamped to [L, U].

**Per-unit bounds** (``unit_lower``/``unit_upper`` on the bare column, GoogleSQL's
``contribution_bounds_per_group``): the average of the units' averages — each unit's mean in the
group (its exact sum over its count, floored to the grid) clamped to ``[unit_lower, unit_upper]``
and centred on their midpoint; the count is of units with a value in the group (sensitivity 1), the
centred sum has sensitivity ``(unit_upper − unit_lower)/2``. Rows are clamped first, as for SUM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

from sqlglot import exp

from dpsql.rewriter.aggregates.base import (
    GRID_BITS,
    AggregateSpec,
    Builder,
    ClassifyContext,
    Grid,
    Value,
    clamp_int,
    fmt,
    numeric_argument,
    pretty,
    scaled_to_kept_rows,
)
from dpsql.rewriter.plan import AggregateRelease, Statistic

NODES: tuple[type[exp.Expression], ...] = (exp.Avg,)
SPEC_KINDS = ("avg",)
RELEASE_KINDS = ("avg",)
ALIASES: dict[str, tuple[type[exp.Expression], str]] = {}

DISTINCT_HINT = (
    "AVG(DISTINCT …) is not released as one statistic; use AVG(x) over rows, "
    "SUM(DISTINCT x) / COUNT(DISTINCT x) (each bounded and noised on its own), "
    "or average per-person values in a row-level subquery"
)


def classify(node: exp.Expression, ctx: ClassifyContext) -> AggregateSpec | None:
    """``AVG(x)`` (with FILTER); AVG(DISTINCT …) is refused (0A000) with a hint."""
    return AggregateSpec("avg", ctx.filtered(numeric_argument(node, ctx, distinct_hint=DISTINCT_HINT)), ctx.label, node)


def centred_sum(spec: AggregateSpec, b: Builder) -> tuple[Grid, str, str, exp.Expression, int]:
    """The count and centred-sum statistics shared by AVG and VAR/STDDEV.

    Returns (grid, count statistic, centred-sum statistic, centred row expression, max |centred|).
    """
    assert spec.input is not None
    g = b.grid_for(spec)
    col = b.input_column(spec.input, grid=g)
    label = pretty(spec.input)
    n = b.count_stat(spec.input, label, col)
    centred = exp.Sub(this=exp.column(col), expression=exp.Literal.number(g.mid))
    c_lo, c_hi = g.lo - g.mid, g.hi - g.mid
    lo, hi = b.max_rows * c_lo, b.max_rows * c_hi
    partial = clamp_int(scaled_to_kept_rows(exp.Sum(this=centred), col, b.max_rows), lo, hi)
    desc = f"SUM({label} - {fmt(g.mid * g.step)}) clamped to [{fmt(g.lower)}, {fmt(g.upper)}] per row, grid {fmt(g.step)}"
    c_max = max(abs(c_lo), abs(c_hi))
    s = b.stat(f"csum:{col}", "sum", partial, max(abs(lo), abs(hi)), desc, grid=g.step, weight=3, l1=b.rows_l1(c_max))
    return g, n, s, centred, max(abs(c_lo), abs(c_hi))


def bound(spec: AggregateSpec, b: Builder) -> AggregateRelease:
    """A count and a centred sum (of rows; of clamped per-unit means under per-unit bounds)."""
    unit = b.unit_bounded_column(spec)
    if unit is not None:
        return _bound_per_unit(spec, b, *unit)
    g, n, s, _, _ = centred_sum(spec, b)
    return AggregateRelease("avg", spec.label, (n, s), g.lower, g.upper, center=g.mid * g.step)


def _bound_per_unit(spec: AggregateSpec, b: Builder, column: str, unit_lo: Fraction, unit_hi: Fraction) -> AggregateRelease:
    from dpsql.rewriter.aggregates.sum import unit_range

    assert spec.input is not None
    g = b.unit_grid(spec, column, unit_lo, unit_hi)
    col = b.input_column(spec.input, grid=g)
    lo, hi = unit_range(g, unit_lo, unit_hi)
    # each unit's mean on a grid 2^f times finer than the rows' (about 2^GRID_BITS steps for the
    # larger unit bound), so flooring SUM/COUNT loses at most one fine step, not one row step
    f = max(0, GRID_BITS - max(abs(lo), abs(hi), 1).bit_length())
    lo, hi = lo << f, hi << f
    step = g.step / 2**f
    mid = (lo + hi) // 2
    label = pretty(spec.input)
    has = exp.Case(
        ifs=[exp.If(this=exp.EQ(this=exp.Count(this=exp.column(col)), expression=exp.Literal.number(0)), true=exp.Literal.number(0))],
        default=exp.Literal.number(1),
    )
    n = b.stat(f"ucount:{col}", "count", has, 1, f"units with a value of {label} in the group (1 per unit)")
    total = exp.Sum(this=exp.column(col))
    mean = exp.IntDiv(
        this=exp.Mul(this=total, expression=exp.Literal.number(2**f)) if f else total,
        expression=exp.Nullif(this=exp.Count(this=exp.column(col)), expression=exp.Literal.number(0)),
    )
    centred = exp.Sub(this=clamp_int(mean, lo, hi), expression=exp.Literal.number(mid))
    partial = exp.Case(
        ifs=[exp.If(this=exp.EQ(this=exp.Count(this=exp.column(col)), expression=exp.Literal.number(0)), true=exp.Literal.number(0))],
        default=centred,
    )
    linf = max(abs(lo - mid), abs(hi - mid))
    desc = (f"SUM over units of ({label} per-unit mean clamped to [{fmt(unit_lo)}, {fmt(unit_hi)}] - "
            f"{fmt(mid * step)}) (unit bounds), rows clamped to [{fmt(g.lower)}, {fmt(g.upper)}], grid {fmt(step)}")
    s = b.stat(f"uavg:{col}", "sum", partial, linf, desc, grid=step, weight=3)
    return AggregateRelease("avg", spec.label, (n, s), lo * step, hi * step, center=mid * step)


def mean_centred(r: AggregateRelease, stats: Mapping[str, Statistic], cols: Sequence[Sequence[int]], g: int) -> tuple[int, Fraction]:
    """(noisy count floored at 1, noisy centred mean) of group ``g``."""
    count = max(int(cols[0][g]), 1)
    return count, Fraction(int(cols[1][g]), count) * stats[r.stats[1]].grid


def finalize(r: AggregateRelease, stats: Mapping[str, Statistic], cols: Sequence[Sequence[int]], n: int) -> list[Value]:
    """``centre + centred_sum / max(count, 1)`` clamped to the bounds, per group."""
    assert r.lower is not None and r.upper is not None
    out: list[Value] = []
    for g in range(n):
        _, mean_c = mean_centred(r, stats, cols, g)
        out.append(float(clamp(r.center + mean_c, r.lower, r.upper)))
    return out


def clamp(v: Fraction, lo: Fraction, hi: Fraction) -> Fraction:
    """``v`` clamped to [lo, hi]."""
    return lo if v < lo else hi if v > hi else v


def pg_type(r: AggregateRelease) -> str:
    """Means are ``float8``."""
    return "float8"
