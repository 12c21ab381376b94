"""The release step of the embedding API: checked exact cells in, noisy post-processed rows out.

It runs the same steps, with the same functions, as the server's engine after its bounded SQL
(``dpsql.proxy.engine.Session._charged``): :func:`dpsql.accountant.noise.release` (one vector
draw per statistic from OpenDP's CSPRNG samplers, partition selection, padded to a 5 ms grid),
group keys coerced to the plan's types, groups in key order, truncation to the
``max_released_groups`` largest by noisy count, :func:`dpsql.rewriter.postprocess.aggregate_values`
and either :func:`~dpsql.rewriter.postprocess.output_rows` or the data-free post-processing DuckDB
(:class:`dpsql.proxy.postsql.PostProcessor`). This module is the one place the embedding API
calls them. When the engine's release step is a module of its own (``dpsql.proxy.release``,
with ``finish``), it is used instead, so both paths run literally the same code (intervals and
rounding included, with the session's ``dp.confidence``/``dp.rounding``).

Call :func:`release_cells` only after the query's cost is charged; exact values never leave it.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from dpsql.accountant.noise import release
from dpsql.accountant.planner import NoisePlan
from dpsql.embed.shape import ExactCells
from dpsql.proxy.coerce import coerce
from dpsql.proxy.postsql import PostProcessor
from dpsql.proxy.settings import DPSettings
from dpsql.rewriter.plan import ReleasePlan
from dpsql.rewriter.post import NOISY_TABLE
from dpsql.rewriter.postprocess import aggregate_values, output_rows


def _shared_release() -> ModuleType | None:
    """The engine's release module, if this dpsql has one with ``finish``."""
    try:
        module = importlib.import_module("dpsql.proxy.release")
    except ImportError:
        return None
    return module if hasattr(module, "finish") else None


def release_cells(plan: ReleasePlan, noise: NoisePlan, cells: ExactCells, post: PostProcessor,
                  settings: DPSettings) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The released rows of the analyst's query and any notices (truncation), from exact cells.

    Guarantees: every released number is a deterministic function of noisy values and public
    parameters; a group is released only if it is public or passed partition selection; the row
    order does not depend on unreleased groups. Failures of the noise step raise ExecutionFailed
    without values; post-processing errors are PostgreSQL-style errors computed from noisy values.
    """
    stat_cols = [s.column for s in plan.stats]
    shared = _shared_release()
    if shared is not None:
        columns = [k.column for k in plan.keys] + stat_cols
        rows = [tuple(cells.keys[g]) + tuple(cells.exact[c][g] for c in stat_cols) for g in range(cells.groups)]
        out = shared.finish(plan, noise, columns, rows, None, post, options=settings.release_options())
        return list(out.rows), list(out.notices)
    from dpsql.proxy.engine import _sort_key  # the engine's group order, shared on purpose
    units = cells.exact.get(plan.units_column) if plan.units_column else None
    released = release(noise, cells.exact, units)
    key_types = [k.pg_type for k in plan.keys]
    keys_kept = [tuple(coerce(v, t) for v, t in zip(cells.keys[i], key_types, strict=True)) for i in released.kept]
    order = sorted(range(len(released.kept)), key=lambda j: _sort_key(keys_kept[j]))
    kept_keys = [keys_kept[j] for j in order]
    released_sorted = {c: [v[j] for j in order] for c, v in released.values.items()}
    notices: list[str] = []
    if len(kept_keys) > plan.max_released_groups:
        by_size = sorted(range(len(kept_keys)), key=lambda j: -released_sorted[plan.units_column or stat_cols[0]][j])
        keep = sorted(by_size[: plan.max_released_groups])
        kept_keys = [kept_keys[j] for j in keep]
        released_values = {c: [v[j] for j in keep] for c, v in released_sorted.items()}
        notices.append(f"result truncated to the {plan.max_released_groups} largest groups (by noisy count)")
    else:
        released_values = released_sorted
    values = aggregate_values(plan, released_values, len(kept_keys))
    if plan.post_sql is None:
        return output_rows(plan, kept_keys, values), notices
    data: list[Sequence[Any]] = [[k[i] for k in kept_keys] for i in range(len(plan.keys))]
    data += values
    _, out_rows = post.run(NOISY_TABLE, plan.post_types, data, plan.post_sql)
    return out_rows, notices


def validate_post(plan: ReleasePlan, post: PostProcessor) -> None:
    """Bind the plan's post-processing query over an empty noisy table (reads no data), so a query
    whose post-processing cannot run is refused before the charge, as on the server."""
    if plan.post_sql is not None:
        post.run(NOISY_TABLE, plan.post_types, [[] for _ in plan.post_types], plan.post_sql)
