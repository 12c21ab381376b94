"""Post-processing of noisy statistics into aggregate values and result rows (pure, after noise).

Everything here is a deterministic function of noisy values and public parameters, so it costs no
privacy: counts are floored at 0, means and variances are clamped to what their bounds allow, and a
mean divides by ``max(noisy count, 1)``. Nothing here ever sees an exact value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

from dpsql.rewriter.plan import AggregateRelease, ReleasePlan, Statistic

Value = int | float | None


def aggregate_values(plan: ReleasePlan, noisy: Mapping[str, Sequence[int]], groups: int) -> list[list[Value]]:
    """Per aggregate of ``plan``, its value in each of ``groups`` released groups, from noisy integers."""
    stats = {s.column: s for s in plan.stats}
    return [_release(r, stats, noisy, groups) for r in plan.aggregates]


def _release(r: AggregateRelease, stats: Mapping[str, Statistic], noisy: Mapping[str, Sequence[int]], n: int) -> list[Value]:
    cols = [noisy[c] for c in r.stats]
    if r.kind in ("count", "count_units"):
        return [max(0, int(v)) for v in cols[0]]
    step = stats[r.stats[0]].grid
    if r.kind == "sum":
        if r.integer:
            return [int(v) for v in cols[0]]
        return [float(Fraction(int(v)) * step) for v in cols[0]]
    assert r.lower is not None and r.upper is not None
    csum_step = stats[r.stats[1]].grid
    out: list[Value] = []
    for g in range(n):
        count = max(int(cols[0][g]), 1)
        mean_c = Fraction(int(cols[1][g]), count) * csum_step
        if r.kind == "avg":
            out.append(float(_clamp(r.center + mean_c, r.lower, r.upper)))
            continue
        sq = Fraction(int(cols[2][g]), count) * stats[r.stats[2]].grid
        half = (r.upper - r.lower) / 2
        var = _clamp(sq - mean_c * mean_c, Fraction(0), half * half)
        if r.kind in ("var_samp", "stddev_samp"):
            var = var * count / (count - 1) if count > 1 else var
        out.append(math.sqrt(var) if r.kind.startswith("stddev") else float(var))
    return out


def _clamp(v: Fraction, lo: Fraction, hi: Fraction) -> Fraction:
    return lo if v < lo else hi if v > hi else v


def output_rows(plan: ReleasePlan, keys: Sequence[tuple[object, ...]], values: Sequence[Sequence[Value]]) -> list[tuple[object, ...]]:
    """Result rows for a plan without a post-processing query, ordered by group keys (NULLs last)."""
    order = sorted(range(len(keys)), key=lambda g: tuple((k is None, k) for k in keys[g]))
    rows = []
    for g in order:
        rows.append(tuple(keys[g][i] if kind == "key" else values[i][g] for kind, i in plan.output_map))
    return rows
