"""The release step of the embedding API: checked exact cells in, noisy post-processed rows out.

It is the server's release step itself (:func:`dpsql.proxy.release.finish`: noise from OpenDP's
CSPRNG samplers padded to a 5 ms grid, partition selection, key coercion and order, truncation,
post-processing, intervals and rounding with the session's ``dp.confidence``/``dp.rounding``), so
both paths run literally the same code.

Call :func:`release_cells` only after the query's cost is charged; exact values never leave it.
"""

from __future__ import annotations

from typing import Any

from dpsql.accountant.planner import NoisePlan
from dpsql.embed.shape import ExactCells
from dpsql.proxy import release as release_step
from dpsql.proxy.post_duckdb import PostProcessor
from dpsql.proxy.settings import DPSettings
from dpsql.rewriter.plan import ReleasePlan
from dpsql.rewriter.post_query import NOISY_TABLE


def release_cells(plan: ReleasePlan, noise: NoisePlan, cells: ExactCells, post: PostProcessor,
                  settings: DPSettings) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The released rows of the analyst's query and any notices (truncation), from exact cells.

    Guarantees: every released number is a deterministic function of noisy values and public
    parameters; a group is released only if it is public or passed partition selection; the row
    order does not depend on unreleased groups. Failures of the noise step raise ExecutionFailed
    without values; post-processing errors are PostgreSQL-style errors computed from noisy values.
    """
    stat_cols = [s.column for s in plan.stats]
    columns = [k.column for k in plan.keys] + stat_cols
    rows = [tuple(cells.keys[g]) + tuple(cells.exact[c][g] for c in stat_cols) for g in range(cells.groups)]
    out = release_step.finish(plan, noise, columns, rows, None, post, options=settings.release_options())
    return list(out.rows), list(out.notices)


def validate_post(plan: ReleasePlan, post: PostProcessor) -> None:
    """Bind the plan's post-processing query over an empty noisy table (reads no data), so a query
    whose post-processing cannot run is refused before the charge, as on the server."""
    if plan.post_sql is not None:
        post.run(NOISY_TABLE, plan.post_types, [[] for _ in plan.post_types], plan.post_sql)
