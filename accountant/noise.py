"""The noise step: exact integers in, noisy integers out. The only place that sees both.

Rules this module keeps (security.md R9, R10):

* Pre-noise values and noise draws never leave :func:`release`: nothing is logged, cached or
  returned besides the noisy values, and any failure is re-raised as a generic
  :class:`~dpsql.errors.ExecutionFailed` whose message and traceback carry no values
  (``from None``; the original exception is dropped).
* Noise is drawn in vector calls — one per statistic, or, for large releases, one per chunk of
  ``CHUNK`` cells spread over a small thread pool (OpenDP's samplers release the GIL, so chunks
  run on several cores). The threshold selection is split the same way; its per-key noise and
  test are independent, so splitting the key set releases exactly the same distribution.
* The whole noise phase is padded to a deadline that is a multiple of ``PAD_QUANTUM`` (5 ms):
  the smallest multiple ≥ the elapsed time (at least one quantum), so its duration only reveals
  which 5 ms slot the sampling fell into, not the noise values.
* When the number of released cells is known before the data is read (no partition selection:
  one row, or the public key set), :func:`draw_ahead` starts the draws — with the same padding —
  on a worker thread while the bounded SQL runs, and :func:`release` adds them to the exact
  values. The draws live only inside the opaque :class:`NoiseDraws` until then, so the rules
  above hold; the query just no longer waits for the pad after its SQL.
* The noise comes from the measurement objects in the :class:`NoisePlan` — the same objects
  whose privacy maps the planner summed into the charged cost — never from a mechanism rebuilt
  by name.
* There is no seeded or deterministic mode.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from dpsql.accountant.mechanisms import ThresholdMechanism
from dpsql.accountant.planner import NoisePlan, SelectionNoise, StatisticNoise
from dpsql.errors import ExecutionFailed

PAD_QUANTUM = 0.005  # seconds
CHUNK = 4096  # cells per vector call when a release is split across threads
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_ahead_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="dpsql-noise")
        return _pool


def _ahead_executor() -> ThreadPoolExecutor:
    # separate from _executor(): an ahead draw may itself fan out chunks onto that pool
    global _ahead_pool
    with _pool_lock:
        if _ahead_pool is None:
            _ahead_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dpsql-noise-ahead")
        return _ahead_pool


def _chunks(n: int) -> list[int]:
    """Sizes of the vector calls for ``n`` draws: one call, or about one per worker (≥ CHUNK each)."""
    if n <= CHUNK or _WORKERS == 1:
        return [n]
    parts = min(_WORKERS, math.ceil(n / CHUNK))
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _draws(sample: Callable[[int], list[int]], n: int) -> list[int]:
    sizes = _chunks(n)
    if len(sizes) == 1:
        return sample(n)
    out: list[int] = []
    for part in _executor().map(sample, sizes):
        out.extend(part)
    return out
_SPIN = 0.0005  # the last half millisecond is busy-waited for a precise deadline


@dataclass(frozen=True)
class Released:
    """The noisy result: which groups are released and each statistic's noisy integers for them.

    ``kept`` lists the released group indexes (positions in the exact input) in ascending
    order; ``values[column][j]`` is the noisy integer of group ``kept[j]``. Multiply by the
    statistic's grid to get released units.
    """

    kept: tuple[int, ...]
    values: Mapping[str, list[int]]


def _pad_until(start: float, quantum: float) -> None:
    elapsed = time.perf_counter() - start
    deadline = start + max(1, math.ceil(elapsed / quantum)) * quantum
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return
        if left > _SPIN:
            time.sleep(left - _SPIN)


def _noisy(
    noise_plan: NoisePlan, exact: Mapping[str, Sequence[int]], units: Sequence[int] | None, groups: int | None = None
) -> Released:
    columns = [s.column for s in noise_plan.stats]
    lengths = {len(exact[c]) for c in columns if c in exact}
    if units is not None:
        lengths.add(len(units))
    if len(lengths) > 1 or any(c not in exact for c in columns if not _from_selection(noise_plan, c)):
        raise ValueError("inconsistent exact input")
    n = lengths.pop() if lengths else (groups or 0)

    selected: dict[int, int] | None = None
    if noise_plan.selection is not None:
        sel = noise_plan.selection
        if sel.column is not None:  # construction (b): the COUNT(*) statistic's own exact values
            counts_src = exact.get(sel.column)
        else:
            counts_src = units if units is not None else exact.get(noise_plan.units_column or "")
        if counts_src is None:
            raise ValueError("partition selection needs the distinct-unit counts")
        counts = {i: int(c) for i, c in enumerate(counts_src)}
        mechanism = _threshold(sel)
        sizes = _chunks(len(counts))
        if len(sizes) == 1:
            selected = mechanism.release(counts)
        else:
            items = list(counts.items())
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            parts = [dict(items[a:a + k]) for a, k in zip(starts, sizes, strict=True)]
            selected = {}
            for part in _executor().map(mechanism.release, parts):
                selected.update(part)
        kept = tuple(sorted(selected))
    else:
        kept = tuple(range(n))

    values: dict[str, list[int]] = {}
    for s in noise_plan.stats:
        if s.from_selection:
            assert selected is not None
            values[s.column] = [selected[i] for i in kept]
            continue
        draws = _draws(_sampler(s), len(kept))
        col = exact[s.column]
        values[s.column] = [int(col[i]) + z for i, z in zip(kept, draws, strict=True)]
    return Released(kept, values)


@dataclass(frozen=True)
class NoiseDraws:
    """Noise drawn ahead of the data (see :func:`draw_ahead`). Opaque: only :func:`release`
    reads the draws; the repr shows nothing of them."""

    cells: int
    _plan: NoisePlan = field(repr=False)
    _future: Future[dict[str, list[int]] | None] = field(repr=False)


def draw_ahead(noise_plan: NoisePlan, cells: int, *, pad_quantum: float = PAD_QUANTUM) -> NoiseDraws:
    """Start drawing the noise of a plan without partition selection for ``cells`` released
    cells, on a worker thread, padded like :func:`release`. Returns at once; call it only after
    the query's cost has been charged, and pass the result to :func:`release`. ValueError for a
    plan with partition selection (its kept cells depend on the data) or a negative count."""
    if noise_plan.selection is not None or any(s.from_selection for s in noise_plan.stats):
        raise ValueError("a plan with partition selection cannot draw its noise ahead")
    if isinstance(cells, bool) or not isinstance(cells, int) or cells < 0:
        raise ValueError("cells must be a non-negative integer")

    def work() -> dict[str, list[int]] | None:
        start = time.perf_counter()
        draws: dict[str, list[int]] | None = None
        try:
            draws = {s.column: _draws(_sampler(s), cells) for s in noise_plan.stats}
        except Exception:
            draws = None
        _pad_until(start, pad_quantum)
        return draws

    return NoiseDraws(cells, noise_plan, _ahead_executor().submit(work))


def _add_ahead(noise_plan: NoisePlan, exact: Mapping[str, Sequence[int]], ahead: NoiseDraws) -> Released:
    draws = ahead._future.result()
    if draws is None or ahead._plan is not noise_plan:
        raise ValueError("noise drawn ahead is unusable")
    values: dict[str, list[int]] = {}
    for s in noise_plan.stats:
        col = exact[s.column]
        z = draws[s.column]
        if len(col) != ahead.cells or len(z) != ahead.cells:
            raise ValueError("inconsistent exact input")
        values[s.column] = [int(x) + d for x, d in zip(col, z, strict=True)]
    return Released(tuple(range(ahead.cells)), values)


def _threshold(sel: SelectionNoise) -> ThresholdMechanism:
    """The partition-selection measurement the planner charged (tests may replace this seam)."""
    return sel.measurement


def _sampler(s: StatisticNoise) -> Callable[[int], list[int]]:
    """The vector sampler of the measurement the planner charged for this statistic."""
    sample = getattr(s.measurement, "sample", None)
    if s.from_selection or sample is None:
        raise ValueError("this statistic is released by partition selection, not sampled")
    return sample


def _from_selection(noise_plan: NoisePlan, column: str) -> bool:
    return any(s.column == column and s.from_selection for s in noise_plan.stats)


def release(
    noise_plan: NoisePlan,
    exact: Mapping[str, Sequence[int]],
    units: Sequence[int] | None = None,
    *,
    pad_quantum: float = PAD_QUANTUM,
    ahead: NoiseDraws | None = None,
    groups: int | None = None,
) -> Released:
    """Draw all noise for one query and return only the noisy values (R10), padded in time (R9).

    ``exact[column]`` holds the exact integer of each statistic for every group, in the bounded
    SQL's row order; ``units`` the exact distinct-unit count per group when the plan uses
    partition selection (if omitted, ``exact[noise_plan.units_column]`` is used; when the plan
    thresholds a COUNT(*) statistic's own value, ``exact[selection.column]`` is). Without
    selection every group is kept. Call this only after the query's cost has been charged.
    With ``ahead`` (from :func:`draw_ahead` on the same plan) the draws made and padded while
    the SQL ran are added instead; ``exact`` must then hold exactly ``ahead.cells`` groups.
    ``groups`` is the number of groups when the plan has no statistic to count them by (a query of
    quantiles only, without partition selection). Any failure raises ExecutionFailed without values.
    """
    if ahead is not None:
        try:
            return _add_ahead(noise_plan, exact, ahead)
        except Exception:
            pass
        raise ExecutionFailed("adding noise to the result failed", hint="retry the query; the charge for it stands") from None
    start = time.perf_counter()
    failed = False
    result: Released | None = None
    try:
        result = _noisy(noise_plan, exact, units, groups)
    except Exception:
        failed = True
    _pad_until(start, pad_quantum)
    if failed or result is None:
        raise ExecutionFailed("adding noise to the result failed", hint="retry the query; the charge for it stands") from None
    return result
