"""The release step: exact cells of the bounded SQL in, the analyst's result rows out.

It runs after the charge and after the bounded SQL, in this order, and is the only code path from
exact values to a result:

1. **noise** — :func:`dpsql.accountant.noise.release` (one vector draw per statistic, padded in
   time; or the draws started by :func:`start` while the SQL ran);
2. **group order and truncation** — released groups in key order (never the engine's row order),
   at most ``max_released_groups`` (largest noisy counts);
3. **post-processing** — aggregate values from noisy integers
   (:func:`dpsql.rewriter.estimates.aggregate_values`), their noise-only confidence intervals
   (:mod:`dpsql.proxy.intervals`, for ``DP_INTERVAL_LOW/HIGH`` and rounding), and the
   post-processing query (HAVING/ORDER BY/LIMIT/arithmetic) on the data-free DuckDB;
4. **coercion and rounding** — keys to their declared PostgreSQL types
   (:func:`dpsql.proxy.coerce.coerce`), floating results rounded to the precision their noise
   supports (``dp.rounding = 'auto'``).

Everything after step 1 is a function of noisy values and public parameters (noise scales,
policy, settings), so it costs nothing (post-processing, Dwork–Roth Prop. 2.1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dpsql.accountant.noise import NoiseDraws, Released, draw_ahead, release
from dpsql.accountant.planner import NoisePlan
from dpsql.errors import ExecutionFailed
from dpsql.proxy.coerce import coerce
from dpsql.proxy.intervals import directions, interval_columns, round_row, rounding_widths
from dpsql.proxy.post_duckdb import PostProcessor
from dpsql.proxy.quantile_release import extreme_notices, quantile_values
from dpsql.rewriter.estimates import aggregate_values, output_rows
from dpsql.rewriter.plan import ReleasePlan
from dpsql.rewriter.post_query import NOISY_TABLE


@dataclass(frozen=True)
class ReleaseOptions:
    """The session settings that shape a release (post-processing only: they cost nothing).

    ``confidence`` is the level of ``DP_INTERVAL_LOW/HIGH`` (``dp.confidence``); ``rounding``
    is ``"auto"`` (floating results rounded to a power of ten near a tenth of their 95%
    half-width) or ``"off"`` (``dp.rounding``)."""

    confidence: float = 0.95
    rounding: str = "auto"


@dataclass
class Output:
    """The released rows of one query and the notices the release adds."""

    rows: list[tuple[Any, ...]]
    notices: list[str] = field(default_factory=list)


def start(plan: ReleasePlan, noise: NoisePlan, public_keys: Sequence[tuple[Any, ...]] | None) -> NoiseDraws | None:
    """Start drawing the noise while the bounded SQL runs, when the released cells are known before
    the data is read (one row, or the public key set, and no partition selection); else None.
    Call it only after the charge."""
    cells = len(public_keys) if public_keys is not None else (None if plan.keys else 1)
    if cells is None or noise.selection is not None:
        return None
    return draw_ahead(noise, cells)


def finish(
    plan: ReleasePlan,
    noise: NoisePlan,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    public_keys: Sequence[tuple[Any, ...]] | None,
    post: PostProcessor,
    *,
    ahead: NoiseDraws | None = None,
    options: ReleaseOptions = ReleaseOptions(),
    histograms: Callable[[str], Any] | None = None,
) -> Output:
    """The result rows of ``plan`` from the bounded SQL's ``columns``/``rows`` (exact integers).

    Guarantees: exact values are read only by the noise step; groups not released are never
    converted; the rows come in an order that depends on released values only; ``public_keys``
    (the public key set, read before the charge) get a noisy zero when absent from ``rows``.
    Quantiles (``plan.quantiles``) are DP selections over the bounded histogram queries, which
    ``histograms`` runs (after the charge) for the kept groups.
    Raises ExecutionFailed (no values in it) when the bounded SQL returned an unexpected shape."""
    nkeys = len(plan.keys)
    stat_cols = [s.column for s in plan.stats]
    index = {c: i for i, c in enumerate(columns)}
    try:
        key_idx = [index[k.column] for k in plan.keys]
        col_idx = [index[c] for c in stat_cols]
    except KeyError:
        raise ExecutionFailed("the bounded query returned an unexpected shape") from None

    exact: dict[str, Sequence[int]]
    if public_keys is not None:
        by_key = {tuple(r[i] for i in key_idx): r for r in rows}
        keys = list(public_keys)
        exact = {c: [int(by_key[k][j]) if k in by_key else 0 for k in keys] for c, j in zip(stat_cols, col_idx, strict=True)}
        kept_of = keys.__getitem__
    else:
        # Candidate groups (partition selection): only the released ones are ever converted
        # (their keys coerced, their statistics read); the per-candidate work before the
        # threshold is OpenDP's vector draw on the distinct-unit counts.
        cells = rows if nkeys or rows else [tuple(0 for _ in columns)]
        exact = {c: _IntColumn(cells, j) for c, j in zip(stat_cols, col_idx, strict=True)}
        if nkeys:
            def kept_of(i: int) -> tuple[Any, ...]:
                return tuple(cells[i][k] for k in key_idx)
        else:
            def kept_of(i: int) -> tuple[Any, ...]:
                return ()
    units = exact.get(plan.units_column) if plan.units_column else None
    if units is not None and not isinstance(units, list):
        units = list(units)
    released = release(noise, exact, units, ahead=ahead, groups=len(public_keys) if public_keys is not None else 1)
    if plan.quantiles:  # DP selections over bounded histograms, for the kept groups
        if histograms is None:
            raise ExecutionFailed("this release needs its histogram queries run")
        picked = quantile_values(histograms, plan, noise, [kept_of(i) for i in released.kept])
        released = Released(released.kept, {**released.values, **picked})
    out = _post_process(plan, noise, released.kept, released.values, kept_of, post, options)
    out.notices.extend(extreme_notices(plan))
    return out


def _post_process(
    plan: ReleasePlan,
    noise: NoisePlan,
    kept: Sequence[int],
    noisy: dict[str, list[int]] | Any,
    kept_of: Any,
    post: PostProcessor,
    options: ReleaseOptions,
) -> Output:
    """Steps 2–4 over noisy integers only."""
    key_types = [k.pg_type for k in plan.keys]
    stat_cols = [s.column for s in plan.stats]
    keys_kept = [tuple(coerce(v, t) for v, t in zip(kept_of(i), key_types, strict=True)) for i in kept]
    # Release groups in key order: the engine's row order can depend on groups never released.
    order = sorted(range(len(kept)), key=lambda j: _sort_key(keys_kept[j]))
    kept_keys = [keys_kept[j] for j in order]
    released_sorted = {c: [v[j] for j in order] for c, v in noisy.items()}
    notices: list[str] = []
    if len(kept_keys) > plan.max_released_groups:
        size_col = (noise.selection.column if noise.selection is not None else None) or plan.units_column or stat_cols[0]
        by_size = sorted(range(len(kept_keys)), key=lambda j: -released_sorted[size_col][j])
        keep = sorted(by_size[: plan.max_released_groups])
        kept_keys = [kept_keys[j] for j in keep]
        released_values = {c: [v[j] for j in keep] for c, v in released_sorted.items()}
        notices.append(f"result truncated to the {plan.max_released_groups} largest groups (by noisy count)")
    else:
        released_values = released_sorted
    groups = len(kept_keys)
    values = aggregate_values(plan, released_values, groups)
    rounding = options.rounding == "auto"
    if plan.post_sql is None:
        out_rows = output_rows(plan, kept_keys, values)
        if rounding and any(o.pg_type in _FLOATS for o in plan.outputs):
            widths = rounding_widths(plan, noise, released_values, groups)
            out_rows = [round_row(plan.outputs, row, widths[g]) for g, row in zip(_key_order(kept_keys), out_rows, strict=True)]
        return Output(out_rows, notices)
    nkeys = len(plan.keys)
    data: list[Sequence[Any]] = [[k[i] for k in kept_keys] for i in range(nkeys)]
    data += values
    extra = plan.post_types[nkeys + len(values):]
    if extra:
        data += interval_columns(plan, noise, released_values, groups, [name for name, _ in extra], options.confidence)
    names, out_rows = post.run(NOISY_TABLE, plan.post_types, data, plan.post_sql)
    width = len(plan.outputs)
    if len(names) > width:  # hidden half-width columns for rounding
        dirs = directions(names[width:])
        out_rows = [round_row(plan.outputs, row[:width], row[width:], dirs) if rounding else row[:width] for row in out_rows]
    return Output(out_rows, notices)


def _key_order(keys: Sequence[tuple[Any, ...]]) -> list[int]:
    """The group index of each row :func:`output_rows` returns (it orders rows by key)."""
    return sorted(range(len(keys)), key=lambda g: tuple((k is None, k) for k in keys[g]))


_FLOATS = ("float4", "float8", "numeric")


class _IntColumn(Sequence[int]):
    """One statistic column of the bounded SQL's rows, read as exact integers on access (so
    groups never released are never converted)."""

    def __init__(self, rows: list[tuple[Any, ...]], index: int) -> None:
        self._rows = rows
        self._index = index

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> int:  # type: ignore[override]
        return int(self._rows[i][self._index] or 0)

    def __iter__(self) -> Iterator[int]:
        j = self._index
        return (int(r[j] or 0) for r in self._rows)


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Order for group keys: NULLs last, then by type name and value (mixed types never compare)."""
    return tuple((v is None, type(v).__name__, v if v is not None else 0) for v in key)
