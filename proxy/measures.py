"""Small DP measurements for the bias tools (``EXPLAIN (BIAS)``, ``dpsql tune``): noisy sums and
histograms of per-unit quantities, through the same calibration and noise step as queries.

A :class:`Measure` is a vector of ``cells`` exact integers to which one privacy unit contributes
a vector of L2 norm (zcdp) and L1 norm (basic) at most ``bound`` — e.g. a per-unit value clipped
to [0, C] summed over units (1 cell, bound C), or a histogram where each unit falls in one bin
(bound 1). :func:`calibrate_measures` expresses the measures as a
:class:`~dpsql.rewriter.plan.ReleasePlan` with one statistic per measure (L0 = 1, L∞ = bound:
the Gaussian map's L2 = √L0·L∞ and the Laplace map's L1 = L0·L∞ then are exactly the bounds) and
calibrates it with :func:`dpsql.accountant.planner.calibrate`, so the cost is the sum of the
mechanisms' own privacy maps and the query is (ε, δ)-DP like any other. :func:`measure` adds the
noise with :func:`dpsql.accountant.noise.release` (CSPRNG, exact discrete samplers, padded in
time, errors without values). Nothing else here reads exact values.

(When ``accountant/quantiles.py`` lands, value-bound suggestions may move to its DP quantile
mechanism; the histograms here use a public grid and the query mechanisms only.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from dpsql.accountant.costs import Accounting
from dpsql.accountant.noise import release
from dpsql.accountant.planner import NoisePlan, calibrate
from dpsql.proxy.intervals import half_width
from dpsql.rewriter.plan import ReleasePlan, Statistic


@dataclass(frozen=True)
class Measure:
    """``cells`` exact integers; one unit changes them by a vector of L2 norm at most ``bound``
    and L1 norm at most ``l1`` (default: ``bound``, right for one cell)."""

    name: str
    cells: int
    bound: int
    description: str = ""
    l1: int | None = None

    def sensitivity(self, accounting: Accounting) -> int:
        """The norm the accounting's mechanism needs: L2 under zcdp, L1 under basic."""
        return max(1, int(self.bound if accounting == "zcdp" or self.l1 is None else self.l1))


def survival(name: str, thresholds: Sequence[int | float], description: str = "") -> Measure:
    """A measure of #{units with x ≥ t} for each threshold t: one unit adds a 0/1 vector with at
    most k = len(thresholds) ones, so L2 ≤ ⌈√k⌉ and L1 ≤ k."""
    k = len(thresholds)
    return Measure(name, k, math.isqrt(k - 1) + 1 if k > 1 else 1, description, l1=k)


def monotone(noisy: Sequence[int], floor: float) -> list[float]:
    """Post-processing of noisy survival counts: the least-squares non-increasing fit (pool
    adjacent violators — it averages the noise of flat stretches instead of following its
    minimum), clipped at 0, and 0 from the first value below ``floor`` on (a thin tail is read as
    empty)."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in noisy:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, n = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += n
    out: list[float] = []
    for total, n in blocks:
        out += [total / n] * int(n)
    dead = False
    for i, v in enumerate(out):
        dead = dead or v < floor
        out[i] = 0.0 if dead else max(0.0, v)
    return out


def area_above(thresholds: Sequence[int], counts: Sequence[float], r: int) -> float:
    """Σ_u max(0, x_u − r) for integers x_u from survival counts S(t) at increasing integer
    ``thresholds`` (t₀ = 1): the sum over integers t > r of S(t), with S interpolated linearly
    between thresholds (trapezoid) and 0 beyond the last one."""
    total = 0.0
    for i in range(len(thresholds)):
        t, c = thresholds[i], counts[i]
        nxt_t = thresholds[i + 1] if i + 1 < len(thresholds) else t + 1
        nxt_c = counts[i + 1] if i + 1 < len(thresholds) else 0.0
        lo = max(t, r + 1)
        if nxt_t <= lo:
            continue
        # integers t' in [lo, nxt_t): S(t') ≈ c + (nxt_c − c)·(t' − t)/(nxt_t − t)
        n = nxt_t - lo
        mid = (lo + nxt_t - 1) / 2
        total += n * (c + (nxt_c - c) * (mid - t) / (nxt_t - t))
    return total


def calibrate_measures(measures: Sequence[Measure], epsilon: Fraction, delta: Fraction,
                       accounting: Accounting) -> tuple[ReleasePlan, NoisePlan]:
    """The release plan and noise plan that make all ``measures`` together (ε, δ)-DP (budget split
    equally). Pure; raises like :func:`~dpsql.accountant.planner.calibrate` for a bad (ε, δ)."""
    if not measures:
        raise ValueError("no measures")
    stats = tuple(
        Statistic(column=m.name, kind="count", description=m.description or m.name, max_contribution=m.sensitivity(accounting))
        for m in measures
    )
    plan = ReleasePlan(
        max_groups=1, keys=(), stats=stats, aggregates=(), outputs=(), keys_public=True, public_keys_sql=None,
        units_column=None, post_sql=None,
    )
    return plan, calibrate(plan, Fraction(epsilon), Fraction(delta), accounting)


def measure(noise: NoisePlan, measures: Sequence[Measure], exact: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """The noisy cells of each measure (call only after the charge). Every measure is padded to
    the widest one's cell count for the one vector release; the padding draws are dropped."""
    width = max(m.cells for m in measures)
    padded = {}
    for m in measures:
        col = [int(v) for v in exact[m.name]]
        if len(col) != m.cells:
            raise ValueError(f"measure {m.name}: expected {m.cells} cells")
        padded[m.name] = col + [0] * (width - m.cells)
    released = release(noise, padded)
    return {m.name: list(released.values[m.name][: m.cells]) for m in measures}


def sigma(noise: NoisePlan, name: str) -> float:
    """The noise standard deviation of measure ``name`` (σ for the discrete Gaussian, √2·t for
    the discrete Laplace; both are upper bounds on the discrete distributions' deviations)."""
    s = noise.stat(name)
    return float(s.scale) if s.mechanism == "discrete_gaussian" else math.sqrt(2) * float(s.scale)


def error95(noise: NoisePlan, name: str) -> float:
    """b with P(|noise| ≤ b) ≥ 0.95 for measure ``name`` (exact quantile of its mechanism)."""
    return float(half_width(noise.stat(name), 0.95))


# ---- a public grid for per-unit counts (rows per unit, groups per unit) -----------------------

def count_edges(top: int = 1 << 20) -> tuple[int, ...]:
    """Lower edges of the count bins: 1, 2, …, 64 one by one, then ×1.25 steps up to ``top``;
    bin i holds the counts in [edges[i], edges[i+1]) and the last bin everything above."""
    edges = list(range(1, 65))
    e = 64.0
    while True:
        e *= 1.25
        nxt = math.ceil(e)
        if nxt > top:
            break
        if nxt > edges[-1]:
            edges.append(nxt)
    return tuple(edges)


def bin_sql(expr: str, edges: Sequence[int]) -> str:
    """A SQL expression (DuckDB and PostgreSQL) for the bin index of the integer ``expr`` ≥ 1:
    exact integer comparisons, no floating point."""
    parts = [f"WHEN {expr} < {edges[i + 1]} THEN {i}" for i in range(len(edges) - 1)]
    return f"(CASE {' '.join(parts)} ELSE {len(edges) - 1} END)"


def representative(edges: Sequence[int], i: int) -> float:
    """The middle of bin ``i`` (the bin's value for exact bins)."""
    lo = edges[i]
    hi = edges[i + 1] - 1 if i + 1 < len(edges) else lo
    return (lo + hi) / 2


def cdf_quantile(counts: Sequence[int], q: float) -> int:
    """The smallest bin index whose cumulative clipped-at-0 count reaches ``q`` of the total
    (post-processing of a noisy histogram)."""
    clipped = [max(0, c) for c in counts]
    total = sum(clipped)
    if total <= 0:
        return 0
    run = 0
    for i, c in enumerate(clipped):
        run += c
        if run >= q * total:
            return i
    return len(clipped) - 1
