"""Noise-only confidence intervals of released aggregates, and rounding to the precision noise supports.

Everything here is post-processing: a function of noisy values and of the public noise scales of
the query's :class:`~dpsql.accountant.planner.NoisePlan`, so ``DP_INTERVAL_LOW/HIGH`` and rounding
cost nothing. The intervals cover the *bounded* statistic (after contribution bounding: rows
dropped by ``max_rows``/``max_groups``, values clamped), not the unbounded truth — bounding bias
is not included (see ``EXPLAIN (BIAS)``).

**One noisy statistic** (COUNT, COUNT(DISTINCT unit), SUM): ``noisy ± b`` where b is the smallest
integer with P(|Z| ≤ b) ≥ confidence for the statistic's own mechanism — the discrete Gaussian
(exact mass sum for σ ≤ 100, the CKS20 normal tail bound above) or the discrete Laplace (closed
form) — times the statistic's grid (:func:`dpsql.accountant.calibration.discrete_gaussian_error`,
``discrete_laplace_error``). Counts are intersected with [0, ∞).

**Several statistics** (AVG, VAR, STDDEV and any arithmetic of aggregates inside
``DP_INTERVAL_LOW/HIGH``): interval arithmetic over the components. With k distinct noisy
statistics involved, each component interval is taken at level confidence^(1/k) (Šidák: the
statistics' noises are independent, so all k cover at once with probability ≥ confidence); the
exact value of the expression lies in its interval-arithmetic image whenever all components
cover, so coverage is ≥ confidence (conservative: typically above it). AVG = center + S/N uses
N ∈ [max(1, N_lo), N_hi] (a defined mean has an integer count ≥ 1) and is intersected with the
column's declared bounds.

Under partition selection the released groups are those whose noisy unit count passed the
threshold; the intervals ignore that conditioning (they are the unconditional noise intervals).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

from dpsql.accountant.calibration import discrete_gaussian_error, discrete_laplace_error
from dpsql.accountant.planner import NoisePlan, StatisticNoise
from dpsql.rewriter.intervals import HALF_WIDTH_PREFIX, INTERVAL_COLUMN
from dpsql.rewriter.plan import AggregateRelease, OutputColumn, ReleasePlan

ROUNDING_CONFIDENCE = 0.95
_FLOATS = ("float4", "float8", "numeric")
Bound = int | float | None
_COLUMN = re.compile(INTERVAL_COLUMN)


def half_width(s: StatisticNoise, confidence: float) -> Fraction:
    """b·grid with P(|Z| ≤ b) ≥ ``confidence`` for this statistic's noise Z (released units):
    exact for the discrete Laplace and for the discrete Gaussian with σ ≤ 100, a CKS20 tail bound
    (≤ one unit wider) above."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    if s.mechanism in ("discrete_gaussian", "gaussian_threshold"):
        b = discrete_gaussian_error(s.scale, confidence)
    elif s.mechanism in ("discrete_laplace", "laplace_threshold"):
        b = discrete_laplace_error(s.scale, confidence)
    else:
        raise ValueError(f"unknown mechanism {s.mechanism!r}")
    return b * s.grid


def _stat_intervals(noise: NoisePlan, noisy: Mapping[str, Sequence[int]], column: str, groups: int,
                    confidence: float) -> tuple[list[float], list[float]]:
    """``noisy ± b`` of one statistic in released units for every group (floats, nudged outward)."""
    s = noise.stat(column)
    b = float(half_width(s, confidence))
    grid = float(s.grid)
    col = noisy[column]
    vals = [int(col[g]) * grid for g in range(groups)]
    return [_down(v - b) for v in vals], [_up(v + b) for v in vals]


def _down(v: float) -> float:
    return math.nextafter(v, -math.inf)


def _up(v: float) -> float:
    return math.nextafter(v, math.inf)


def aggregate_intervals(release: AggregateRelease, noise: NoisePlan, noisy: Mapping[str, Sequence[int]], groups: int,
                        component_confidence: float) -> tuple[list[Bound], list[Bound]]:
    """The interval of one aggregate in each of ``groups`` groups, each of its statistics at
    ``component_confidence`` (see the module docstring for the method). Float arithmetic, each
    step rounded outward, so the float interval contains the exact one."""
    noised = {s.column for s in noise.stats}
    if not release.stats or any(c not in noised for c in release.stats):
        # a DP selection (quantile, MIN/MAX) has no additive noise scale: its interval is unknown
        # here (NULL) and its value is not rounded; EXPLAIN states its rank and value error
        return [None] * groups, [None] * groups
    ivs = [_stat_intervals(noise, noisy, c, groups, component_confidence) for c in release.stats]
    if release.kind in ("count", "count_units"):
        lo, hi = ivs[0]
        return [max(0, math.ceil(v - 0.5)) for v in lo], [max(0, math.floor(v + 0.5)) for v in hi]
    if release.kind == "sum":
        lo, hi = ivs[0]
        if release.integer:
            return [math.ceil(v - 0.5) for v in lo], [math.floor(v + 0.5) for v in hi]
        return list(lo), list(hi)
    assert release.lower is not None and release.upper is not None
    bound_lo, bound_hi = _bounds_interval(release)
    lower, upper, center = float(release.lower), float(release.upper), float(release.center)
    half = (upper - lower) / 2
    out_lo: list[Bound] = []
    out_hi: list[Bound] = []
    for g in range(groups):
        n_lo, n_hi = max(ivs[0][0][g], 1.0), ivs[0][1][g]
        if n_hi < n_lo:  # the count interval holds no possible count: only the declared bounds remain
            out_lo.append(bound_lo)
            out_hi.append(bound_hi)
            continue
        m_lo, m_hi = _ratio((ivs[1][0][g], ivs[1][1][g]), (n_lo, n_hi))
        if release.kind == "avg":
            out_lo.append(min(max(_down(center + m_lo), lower), upper))
            out_hi.append(min(max(_up(center + m_hi), lower), upper))
            continue
        q_lo, q_hi = _ratio((ivs[2][0][g], ivs[2][1][g]), (n_lo, n_hi))
        sq_min = 0.0 if m_lo <= 0 <= m_hi else _down(min(m_lo * m_lo, m_hi * m_hi))
        sq_max = _up(max(m_lo * m_lo, m_hi * m_hi))
        v_lo = min(max(_down(q_lo - sq_max), 0.0), half * half)
        v_hi = min(max(_up(q_hi - sq_min), 0.0), half * half)
        if release.kind in ("var_samp", "stddev_samp"):
            v_lo = max(_down(v_lo * n_hi / (n_hi - 1)), 0.0) if n_hi > 1 else v_lo
            v_hi = _up(v_hi * n_lo / (n_lo - 1)) if n_lo > 1 else v_hi * 2 if n_hi >= 2 else v_hi
        if release.kind.startswith("stddev"):
            out_lo.append(max(_down(math.sqrt(v_lo)), 0.0))
            out_hi.append(_up(math.sqrt(v_hi)))
        else:
            out_lo.append(v_lo)
            out_hi.append(v_hi)
    return out_lo, out_hi


def aggregate_interval(release: AggregateRelease, noise: NoisePlan, noisy: Mapping[str, Sequence[int]], g: int,
                       component_confidence: float) -> tuple[Bound, Bound]:
    """The interval of one aggregate in group ``g`` (see :func:`aggregate_intervals`)."""
    one = {c: [noisy[c][g]] for c in release.stats}
    lo, hi = aggregate_intervals(release, noise, one, 1, component_confidence)
    return lo[0], hi[0]


def _bounds_interval(release: AggregateRelease) -> tuple[float, float]:
    assert release.lower is not None and release.upper is not None
    if release.kind == "avg":
        return float(release.lower), float(release.upper)
    half = float(release.upper - release.lower) / 2
    top = half * half * (2 if release.kind.endswith("_samp") else 1)
    return (0.0, _up(math.sqrt(top))) if release.kind.startswith("stddev") else (0.0, _up(top))


def _ratio(num: tuple[float, float], den: tuple[float, float]) -> tuple[float, float]:
    """Interval of a/b for a ∈ num, b ∈ den with den > 0 (rounded outward)."""
    corners = [a / b for a in num for b in den]
    return _down(min(corners)), _up(max(corners))


def _stats_of(plan: ReleasePlan, aggregates: set[int]) -> set[str]:
    return {c for j in aggregates for c in plan.aggregates[j].stats}


def interval_columns(plan: ReleasePlan, noise: NoisePlan, noisy: Mapping[str, Sequence[int]], groups: int,
                     names: Sequence[str], confidence: float) -> list[list[Bound]]:
    """The values of the noisy table's interval columns ``names`` (see
    :data:`dpsql.rewriter.intervals.INTERVAL_COLUMN`), one list per column over ``groups`` groups.

    Columns of one ``DP_INTERVAL_*`` argument share a tag ``i<n>``: the k distinct statistics its
    aggregates use are each taken at ``confidence``^(1/k). Tag ``r`` (rounding) takes each
    statistic at 95%."""
    parsed = []
    for name in names:
        m = _COLUMN.fullmatch(name)
        if m is None:
            raise ValueError(f"unknown noisy-table column {name!r}")
        parsed.append((int(m.group(1)), m.group(2), m.group(3)))
    members: dict[str, set[int]] = {}
    for j, _, tag in parsed:
        members.setdefault(tag, set()).add(j)
    level: dict[str, float] = {}
    for tag, aggs in members.items():
        if tag == "r":
            level[tag] = ROUNDING_CONFIDENCE
        else:
            k = max(1, len(_stats_of(plan, aggs)))
            level[tag] = confidence ** (1.0 / k)
    cache: dict[tuple[int, str], tuple[list[Bound], list[Bound]]] = {}
    out: list[list[Bound]] = []
    for j, side, tag in parsed:
        key = (j, tag)
        if key not in cache:
            cache[key] = aggregate_intervals(plan.aggregates[j], noise, noisy, groups, level[tag])
        out.append(cache[key][0] if side == "lo" else cache[key][1])
    return out


def rounding_widths(plan: ReleasePlan, noise: NoisePlan, noisy: Mapping[str, Sequence[int]], groups: int) -> list[list[float | None]]:
    """For a plan without a post-processing query: per group, per output column, the 95% half-width
    of a floating aggregate output (None for keys and integer outputs)."""
    per_output: list[list[float | None]] = []
    for (kind, i), out in zip(plan.output_map, plan.outputs, strict=True):
        if kind != "agg" or out.pg_type not in _FLOATS:
            per_output.append([None] * groups)
            continue
        los, his = aggregate_intervals(plan.aggregates[i], noise, noisy, groups, ROUNDING_CONFIDENCE)
        per_output.append([None if lo is None or hi is None else (float(hi) - float(lo)) / 2 for lo, hi in zip(los, his, strict=True)])
    return [[c[g] for c in per_output] for g in range(groups)]


def round_value(value: Any, width: float | None, direction: str = "") -> Any:
    """``value`` rounded to the power of ten at or below a tenth of ``width`` (a 95% half-width):
    e.g. 2454.4869993632146 with width 300 → 2450.0. ``direction`` "lo" rounds down and "hi" up
    (interval bounds only ever widen), "" to nearest. Integers, None, non-finite values and
    values without a positive finite width are returned unchanged; the type is kept."""
    if width is None or not isinstance(width, int | float | Decimal) or isinstance(value, bool) or value is None:
        return value
    w = float(width)
    if not (math.isfinite(w) and w > 0):
        return value
    exponent = math.floor(math.log10(w / 10))
    if isinstance(value, float):
        if not math.isfinite(value):
            return value
        step = 10.0 ** exponent
        q = value / step
        n = math.floor(q) if direction == "lo" else math.ceil(q) if direction == "hi" else round(q)
        out = float(f"{n}e{exponent}")  # the nearest float to the decimal: prints as the short decimal
        if direction == "lo" and out > value:  # float rounding must never narrow an interval
            out = _down(value) if out - step > value else out - step
        if direction == "hi" and out < value:
            out = _up(value) if out + step < value else out + step
        return out + 0.0
    if isinstance(value, Decimal):
        if not value.is_finite():
            return value
        mode = {"lo": ROUND_FLOOR, "hi": ROUND_CEILING}.get(direction, ROUND_HALF_EVEN)
        step_d = Decimal(1).scaleb(exponent)
        rounded = value.quantize(step_d, rounding=mode) if exponent < 0 else (value / step_d).quantize(Decimal(1), rounding=mode) * step_d
        return rounded if exponent < 0 else Decimal(int(rounded))
    return value


def round_row(outputs: Sequence[OutputColumn], row: Sequence[Any], widths: Sequence[Any],
              directions: Sequence[str] | None = None) -> tuple[Any, ...]:
    """One result row with each floating output rounded by :func:`round_value` (widths and
    directions per output)."""
    dirs = directions if directions is not None else [""] * len(outputs)
    return tuple(
        round_value(v, w, d) if o.pg_type in _FLOATS else v for v, w, d, o in zip(row, widths, dirs, outputs, strict=True)
    )


def directions(names: Sequence[str]) -> list[str]:
    """The rounding direction of each hidden half-width column (``__dp_hwlo3`` → "lo")."""
    out = []
    for name in names:
        rest = name[len(HALF_WIDTH_PREFIX):]
        out.append(rest[:2] if rest[:2] in ("lo", "hi") else "")
    return out


__all__ = ["HALF_WIDTH_PREFIX", "aggregate_interval", "aggregate_intervals", "directions", "half_width", "interval_columns", "round_row",
           "round_value", "rounding_widths"]
