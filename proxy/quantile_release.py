"""The quantile step of a charged query: run the bounded histogram queries and release one DP
selection per (quantile, kept group).

Runs after the bounded SQL and the noise step (the kept groups are known: public keys, the one
global group, or the groups partition selection released) and inside the statement's timing
deadline. Histogram rows of groups that were not released are never read into a value; a kept
group without rows has an all-zero histogram (every unit of it had NULL values or none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dpsql.accountant.planner import NoisePlan
from dpsql.accountant.quantiles import release_selections
from dpsql.errors import ExecutionFailed
from dpsql.rewriter.plan import ReleasePlan


def quantile_values(
    execute: Callable[[str], Any],
    plan: ReleasePlan,
    noise: NoisePlan,
    kept_keys: Sequence[tuple[Any, ...]],
) -> dict[str, list[int]]:
    """Per quantile column, the released candidate index of each kept group (in ``kept_keys``
    order: the raw key values as the bounded SQL returns them). ``execute`` runs one SQL text on
    the backend and returns its result set (``.rows``)."""
    if not plan.quantiles:
        return {}
    index = {k: j for j, k in enumerate(kept_keys)}
    nk = len(plan.keys)
    histograms: list[list[list[int]]] = []
    for h in plan.histograms:
        rs = execute(h.sql)
        dense = [[0] * h.candidates for _ in kept_keys]
        try:
            for row in rs.rows:
                j = index.get(tuple(row[:nk]))
                if j is None:
                    continue  # a group that was not released
                b = int(row[nk])
                if not 0 <= b < h.candidates:
                    raise IndexError
                dense[j][b] += int(row[nk + 1])
        except (IndexError, TypeError, ValueError):
            raise ExecutionFailed("the histogram query returned an unexpected shape") from None
        histograms.append(dense)
    return release_selections(noise.quantiles, [q.histogram for q in plan.quantiles], histograms, len(kept_keys))


def _rows(r: object) -> str:
    f = float(r)  # type: ignore[arg-type]
    return f"{f:.4g}"


def explain_quantile(plan: ReleasePlan, noise: NoisePlan, column: str) -> str:
    """EXPLAIN's text for one quantile output: the mechanism, its 95 % error in rank terms (rows)
    and in value terms (the grid step beyond that rank), and MIN/MAX's semantics."""
    q = next(x for x in plan.quantiles if x.column == column)
    n = next(x for x in noise.quantiles if x.column == column)
    vg = q.grid
    step = getattr(vg, "grid").step  # noqa: B009
    unit = {"date": " day(s)", "timestamp": " second(s)"}.get(getattr(vg, "value_kind", ""), "")
    mech = n.mechanism.name.replace("_", " ")
    if q.target == "quantile":
        return (
            f"DP quantile ({mech}, {q.candidates} candidates, step {_rows(step)}{unit}): 95% within ±{_rows(n.rank_error95)} "
            f"rows of the target rank, and within one step ({_rows(step)}{unit}) of a value at such a rank"
        )
    which = "minimum" if q.target == "min" else "maximum"
    return (
        f"a DP estimate near the {which}; it may lie inside the data ({mech} for the {n.rank}th "
        f"{'smallest' if q.target == 'min' else 'largest'} value, {q.candidates} candidates, step {_rows(step)}{unit}; "
        f"95% within ±{_rows(n.rank_error95)} rows of that rank)"
    )


def explain_lines(plan: ReleasePlan, noise: NoisePlan) -> list[str]:
    """EXPLAIN's lines for the DP selections and their histogram queries."""
    lines = []
    for q, n in zip(plan.quantiles, noise.quantiles, strict=True):
        lines.append(
            f"  selection {q.column}: {q.description}; score sensitivity {n.mechanism.sensitivity} × {plan.max_groups} "
            f"group(s), noise scale {_rows(n.mechanism.scale / n.mechanism.den)} rows"
        )
    for i, h in enumerate(plan.histograms):
        lines.append(f"  histogram {i} SQL (bounded, {h.candidates} candidates):")
        lines.append(f"    {h.sql}")
    return lines


def extreme_notices(plan: ReleasePlan) -> list[str]:
    """The NOTICE that states MIN/MAX's semantics, once per query that releases one."""
    kinds = sorted({q.target for q in plan.quantiles if q.target != "quantile"})
    if not kinds:
        return []
    if len(kinds) == 1:
        which = "minimum" if kinds[0] == "min" else "maximum"
        return [f"dpsql: {kinds[0].upper()} is a DP estimate near the {which}; it may lie inside the data"]
    return ["dpsql: MAX and MIN are DP estimates near the maximum and minimum; they may lie inside the data"]
