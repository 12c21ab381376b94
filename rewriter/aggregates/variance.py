"""VAR_POP, VAR_SAMP, STDDEV_POP, STDDEV_SAMP (and VARIANCE, STDDEV, STDEV, VAR, VARP, STD, STDEVP): count, centred sum, sum of squares.

Row-level input: the argument clamped to [L, U] on the grid, as for AVG. Partials: AVG's count
and centred sum, plus the sum of squared centred values (exact, on the input's grid), scaled to
the kept rows and clamped to ``max_rows·c_max²``; each group's total is rounded once to a coarser
square grid (at most 2^SQUARE_BITS steps each side of the centre, squared) so the noise stays far
inside the samplers' integer range. Post-processing:
``E[(x − mid)²] − E[x − mid]²`` clamped to [0, ((U − L)/2)²], times n/(n − 1) for the sample
forms, square-rooted for STDDEV.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

from sqlglot import exp

from dpsql.rewriter.aggregates.avg import centred_sum, clamp, mean_centred
from dpsql.rewriter.aggregates.base import (
    AggregateSpec,
    Builder,
    ClassifyContext,
    Value,
    fmt,
    least,
    numeric_argument,
    pretty,
    scaled_to_kept_rows,
)
from dpsql.rewriter.plan import AggregateRelease, Statistic

SQUARE_BITS = 12  # squared deviations use at most 2^12 steps each side, so ≤ 2^24 squared

_KINDS: dict[type[exp.Expression], str] = {
    exp.Variance: "var_samp",
    exp.VariancePop: "var_pop",
    exp.Stddev: "stddev_samp",
    exp.StddevSamp: "stddev_samp",
    exp.StddevPop: "stddev_pop",
}
NODES: tuple[type[exp.Expression], ...] = tuple(_KINDS)
SPEC_KINDS = ("var_pop", "var_samp", "stddev_pop", "stddev_samp")
RELEASE_KINDS = SPEC_KINDS
# Names PostgreSQL and DuckDB lack, in the meaning of the dialect that defines them. VARIANCE,
# STDDEV and STDEV parse to the sample forms already (PostgreSQL, DuckDB and SQL Server agree).
ALIASES: dict[str, tuple[type[exp.Expression], str]] = {
    "VAR": (exp.Variance, "VAR(…) is read as VAR_SAMP (SQL Server)"),
    "VARP": (exp.VariancePop, "VARP(…) is read as VAR_POP (SQL Server)"),
    "STDEVP": (exp.StddevPop, "STDEVP(…) is read as STDDEV_POP (SQL Server)"),
    "STD": (exp.StddevPop, "STD(…) is read as STDDEV_POP (MySQL; Spark reads it as STDDEV_SAMP)"),
}


def classify(node: exp.Expression, ctx: ClassifyContext) -> AggregateSpec | None:
    """One of the four kinds (with FILTER) over a row-level, non-unit expression."""
    arg = numeric_argument(node, ctx)
    return AggregateSpec(_KINDS[type(node)], ctx.filtered(arg), ctx.label, node)


def bound(spec: AggregateSpec, b: Builder) -> AggregateRelease:
    """AVG's count and centred sum, and a sum of squared centred values.

    The squares are summed exactly on the input's own grid (≤ 2^48 per row, exact in HUGEINT /
    numeric) and each group's total is rounded once to the coarser square grid that keeps the
    noise in the samplers' range. Rounding each row to the coarse grid instead (truncating
    ``c // 2^shift``) biased every square low by about |c|·2^shift, which the subtraction
    E[c²] − E[c]² amplifies: −0.5 % to −0.8 % of a skewed income variance at any ε. Now the
    bias is at most half a coarse unit over the group's count (see tests/rewriter/test_variance_bias.py).
    """
    assert spec.input is not None
    g, n, s, centred, c_abs = centred_sum(spec, b)
    col = b.input_column(spec.input, grid=g)
    shift = max(0, c_abs.bit_length() - SQUARE_BITS)
    fine: exp.Expression = exp.Cast(this=centred.copy(), to=exp.DataType.build("BIGINT"))  # |c|² ≤ 2^48
    sq = exp.Mul(this=fine, expression=fine.copy())
    part_hi = b.max_rows * c_abs * c_abs  # a unit's clamped partial, in fine squared units
    linf = part_hi // 4**shift + 1  # after the group total's rounding to 4^shift fine units
    sq_grid = (g.step * 2**shift) ** 2
    partial = least(scaled_to_kept_rows(exp.Sum(this=sq), col, b.max_rows), exp.Literal.number(part_hi))
    desc = f"SUM(({pretty(spec.input)} - centre)^2) per row, group total rounded to grid {fmt(sq_grid)}"
    # Under max_contributions = k: Σ_g partial_g ≤ k·c², and each touched group's rounded total
    # moves by ≤ ⌊Δ_g/4^shift⌋ + 1, over ≤ min(max_groups, k) groups.
    k = b.max_contributions
    l1 = None if k is None else (k * c_abs * c_abs) // 4**shift + min(b.max_groups, k)
    q = b.stat(f"csumsq:{col}", "sum", partial, linf, desc, grid=sq_grid, weight=3, total_shift=2 * shift, l1=l1)
    return AggregateRelease(spec.kind, spec.label, (n, s, q), g.lower, g.upper, center=g.mid * g.step)


def finalize(r: AggregateRelease, stats: Mapping[str, Statistic], cols: Sequence[Sequence[int]], n: int) -> list[Value]:
    """The variance (or its square root) per group from the noisy moments, clamped."""
    assert r.lower is not None and r.upper is not None
    out: list[Value] = []
    half = (r.upper - r.lower) / 2
    for g in range(n):
        count, mean_c = mean_centred(r, stats, cols, g)
        sq = Fraction(int(cols[2][g]), count) * stats[r.stats[2]].grid
        var = clamp(sq - mean_c * mean_c, Fraction(0), half * half)
        if r.kind in ("var_samp", "stddev_samp"):
            var = var * count / (count - 1) if count > 1 else var
        out.append(math.sqrt(var) if r.kind.startswith("stddev") else float(var))
    return out


def pg_type(r: AggregateRelease) -> str:
    """Variances and standard deviations are ``float8``."""
    return "float8"
