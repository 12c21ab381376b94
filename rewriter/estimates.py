"""Post-processing of noisy statistics into aggregate values and result rows (pure, after noise).

Everything here is a deterministic function of noisy values and public parameters, so it costs no
privacy: counts are floored at 0, means and variances are clamped to what their bounds allow, and a
mean divides by ``max(noisy count, 1)``. Nothing here ever sees an exact value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dpsql.rewriter import aggregates
from dpsql.rewriter.aggregates.base import Value
from dpsql.rewriter.plan import AggregateRelease, ReleasePlan, Statistic

__all__ = ["Value", "aggregate_values", "output_rows"]


def aggregate_values(plan: ReleasePlan, noisy: Mapping[str, Sequence[int]], groups: int) -> list[list[Value]]:
    """Per aggregate of ``plan``, its value in each of ``groups`` released groups, from noisy integers."""
    stats: dict[str, object] = {s.column: s for s in plan.stats}
    stats.update({q.column: q for q in plan.quantiles})  # a quantile's "noisy" value is its released candidate
    return [_release(r, stats, noisy, groups) for r in plan.aggregates]


def _release(r: AggregateRelease, stats: Mapping[str, Statistic], noisy: Mapping[str, Sequence[int]], n: int) -> list[Value]:
    cols = [noisy[c] for c in r.stats]
    return aggregates.module_for_release(r.kind).finalize(r, stats, cols, n)


def output_rows(plan: ReleasePlan, keys: Sequence[tuple[object, ...]], values: Sequence[Sequence[Value]]) -> list[tuple[object, ...]]:
    """Result rows for a plan without a post-processing query, ordered by group keys (NULLs last)."""
    order = sorted(range(len(keys)), key=lambda g: tuple((k is None, k) for k in keys[g]))
    rows = []
    for g in order:
        rows.append(tuple(keys[g][i] if kind == "key" else values[i][g] for kind, i in plan.output_map))
    return rows
