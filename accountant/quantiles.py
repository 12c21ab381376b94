"""The DP quantile mechanism: quantile scores over a public candidate grid + report-noisy-max.

Model: OpenDP's ``make_private_quantile`` = ``make_quantile_score_candidates`` >> ``make_noisy_max``
(Smith 2011; McKenna–Sheldon 2020). Nothing here reads data except :meth:`QuantileMechanism.release`,
which sees a per-candidate histogram and returns one candidate index per group.

**Grid.** :class:`QuantileGrid` is public: ``k`` candidates ``lower + i·step`` (i = 0…k−1) with
``lower`` and ``lower + (k−1)·step ≤ upper`` from the column's declared bounds. The bounded SQL
clamps each value to the bounds and snaps it to the nearest candidate (a deterministic per-row
map, so it cannot raise the sensitivity); the engine returns, per group, the histogram
``h[i]`` = number of kept values snapped to candidate ``i``.

**Score** (OpenDP's, computed from the histogram). With α = num/den exact (from the SQL literal),
n = Σh, lt_i = Σ_{j<i} h_j and eq_i = h_i: ``score_i = |den·lt_i − num·(n − eq_i)|``, smaller is
better; it is 0 when candidate i splits the data at rank α. Scores are capped at ``SCORE_CAP``
(min(·, C) is 1-Lipschitz, so the cap cannot raise the sensitivity and no private count can make
the sampler's u64 input overflow or raise).

**Sensitivity (derivation).** Removing one value x from a group's multiset changes, for each
candidate c, the signed quantity den·lt − num·(n − eq) by −(den − num) if x < c, by 0 if x = c and
by +num if x > c; |·| is 1-Lipschitz, so every score moves by at most max(num, den − num). A privacy
unit keeps at most ``max_rows`` values in each group (chosen from its own rows) and touches at most
``max_groups`` groups, so in each of ≤ L0 = max_groups groups the score vector moves by at most
Δ∞ = max_rows·max(num, den − num) in L∞. This equals OpenDP's stability map of
``make_quantile_score_candidates`` at d_in = max_rows (checked in the tests).

**Sampler (the choice).** OpenDP ``make_noisy_max`` over ``vector(u64)`` with ``negate=True`` (report
noisy *min*): under ``zcdp`` it adds Gumbel noise (= the exponential mechanism, P(i) ∝ e^{−score_i/s}),
under ``basic`` exponential noise (report-noisy-max with exponential noise = permute-and-flip,
never worse than the exponential mechanism at the same ε). OpenDP samples both exactly: the noise is
drawn lazily from OpenSSL's CSPRNG and refined in arbitrary precision until the arg-min is
determined, so no float rounding shapes the output law (security.md R1, R2). We do not sample
Gumbel noise in floats ourselves (that would not be exact) nor write our own sampler.

**Privacy map** (non-monotone scores, OpenDP's map for ``LInfDistance(monotonic=False)``): per group
ε_g = 2Δ∞/s under ``basic``; under ``zcdp`` the exponential mechanism is ε_g-bounded-range, hence
ρ_g = ε_g²/8-zCDP (Cesar–Rogers 2021), i.e. ρ_g = Δ∞²/(2s²). The groups a unit touches hold disjoint
data, each with its own draw, so the query's loss is L0·ε_g (basic) or L0·ρ_g (zcdp). Losses are
exact Fractions rounded up to the 1e-15 grid and never below OpenDP's own map (we charge the max).

**Extremes (MIN/MAX).** OpenDP's score at α = 0 is 0 on *every* candidate below the minimum, so
the 0-quantile is uniform over [lower, min]: useless. MIN instead targets the r-th smallest value
with :func:`order_scores` (score max(lt − r + 1, r − le, 0), Δ∞ = max_rows per group, the same
mechanism and map), where r is public: the mechanism's own 95 % rank error (:func:`extreme_rank`),
so candidates below the minimum score ≥ r and are rarely chosen. The semantics, stated wherever
MIN/MAX is answered: *a DP estimate near the minimum (maximum); it may lie inside the data.*

**Error.** For report-noisy-min with Gumbel or exponential noise of scale s over k candidates,
P[score(out) > best + t] ≤ k·e^{−t/s}; so with probability ≥ confidence the released candidate's rank
is within r = s·ln(k/(1−confidence))/den rows of the best candidate's, and its value is within the grid
step of that candidate (:meth:`QuantileMechanism.rank_error`). A rank error does not bound the value
error: that depends on how dense the data are near the quantile, which is private.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import opendp.prelude as dp

from dpsql.accountant.calibration import (
    MAX_SCALE,
    ScaleOutOfRange,
    ceil_to_grid,
    gaussian_rho,
    gaussian_sigma,
    laplace_epsilon,
    laplace_scale,
)
from dpsql.rewriter.quantile_grid import (  # noqa: F401  (re-exported: the grid is public plan data)
    DEFAULT_CANDIDATES,
    MAX_ALPHA_DENOMINATOR,
    MAX_CANDIDATES,
    QuantileGrid,
    alpha_fraction,
)

dp.enable_features("contrib")

Accounting = Literal["zcdp", "basic"]

SCORE_CAP = 2**62  # scores are min(score, SCORE_CAP): u64-safe, 1-Lipschitz


class QuantileFailure(RuntimeError):
    """The sampler returned something unusable. Carries no values."""


# ---------------------------------------------------------------------------------------------
# scores and sensitivity


def quantile_scores(histogram: Sequence[int], alpha: Fraction) -> list[int]:
    """OpenDP's quantile scores |den·lt_i − num·(n − eq_i)| from a per-candidate histogram, capped
    at ``SCORE_CAP``. Smaller is better; exact integer arithmetic."""
    num, den = alpha.numerator, alpha.denominator
    n = sum(histogram)
    out: list[int] = []
    lt = 0
    for h in histogram:
        out.append(min(abs(den * lt - num * (n - h)), SCORE_CAP))
        lt += h
    return out


def order_scores(histogram: Sequence[int], rank: int, *, from_top: bool) -> list[int]:
    """Scores for the ``rank``-th smallest (or, ``from_top``, largest) value: with lt_i/le_i the
    numbers of values < / ≤ candidate i, ``max(lt_i − (r − 1), r − le_i, 0)`` (0 exactly on the
    candidate holding the r-th order statistic, lt < r ≤ le); from the top, the same over the reversed order. Capped at
    ``SCORE_CAP``. MIN/MAX use this with a public r ≥ 1 (module docstring: Extremes)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError("rank must be a positive integer")
    n = sum(histogram)
    out: list[int] = []
    lt = 0
    for h in histogram:
        le = lt + h
        a, b = (lt, le) if not from_top else (n - le, n - lt)  # (# strictly beyond, # at or beyond)
        out.append(min(max(a - (rank - 1), rank - b, 0), SCORE_CAP))
        lt = le
    return out


def order_sensitivity(max_rows: int) -> int:
    """Δ∞ of :func:`order_scores` when one unit's ≤ ``max_rows`` values leave a group: lt and le
    each drop by at most 1 per value, so each score moves by at most ``max_rows``."""
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError("max_rows must be a positive integer")
    return max_rows


def extreme_rank(mechanism: QuantileMechanism, candidates: int, confidence: float = 0.95) -> int:
    """The public order-statistic rank r that MIN/MAX target: the mechanism's rank error at
    ``confidence`` (at least 1), so the estimate falls below the true minimum (above the maximum)
    with probability about 1 − confidence at most, and lies at most about 2r values inside the data."""
    return max(1, math.ceil(mechanism.rank_error(candidates, confidence)))


def score_sensitivity(alpha: Fraction, max_rows: int) -> int:
    """Δ∞ of the score vector of one group when one unit's ≤ ``max_rows`` values leave it:
    max_rows·max(num, den − num) (module docstring: derivation)."""
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError("max_rows must be a positive integer")
    return max_rows * max(alpha.numerator, alpha.denominator - alpha.numerator)


# ---------------------------------------------------------------------------------------------
# the mechanism


def _check_scale(scale: float) -> float:
    s = float(scale)
    if not (s > 0 and math.isfinite(s)):
        raise ValueError("noise scale must be positive")
    if not s <= MAX_SCALE:
        raise ScaleOutOfRange("noise scale must be at most 2^52")
    return s


@dataclass(frozen=True)
class QuantileMechanism:
    """Report-noisy-min over quantile scores of ``k`` candidates (OpenDP ``make_noisy_max``).

    ``sensitivity`` is Δ∞ per group (integer score units); ``scale`` the noise scale in score units;
    ``den`` is α's denominator (one rank = ``den`` score units).
    """

    accounting: Accounting
    scale: float
    sensitivity: int
    den: int
    _meas: Any = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        """``exponential_mechanism`` (Gumbel noise, zcdp) or ``permute_and_flip`` (exponential noise, basic)."""
        return "exponential_mechanism" if self.accounting == "zcdp" else "permute_and_flip"

    def map(self, l0: int) -> Fraction:
        """ρ (zcdp) or ε (basic) when one unit changes ≤ ``l0`` groups by ≤ Δ∞ each: l0·Δ∞²/(2s²) or
        l0·2Δ∞/s, exact, rounded up to the 1e-15 grid, and never below l0 × OpenDP's own map."""
        if self.accounting == "zcdp":
            ours = gaussian_rho(l0, self.sensitivity, self.scale)
        else:
            ours = laplace_epsilon(l0, 2 * self.sensitivity, self.scale)
        theirs = ceil_to_grid(Fraction(self._meas.map(self.sensitivity)) * l0)
        return max(ours, theirs)

    def select(self, scores: Sequence[int]) -> int:
        """The index of the noisy minimum of ``scores`` (one OpenDP call, CSPRNG, exact sampling)."""
        if not scores:
            raise QuantileFailure("no candidates")
        i = self._meas([int(s) for s in scores])
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(scores):
            raise QuantileFailure("the selection returned an unusable index")
        return i

    def release(self, histogram: Sequence[int], alpha: Fraction) -> int:
        """The released candidate index for one group's histogram at level ``alpha``."""
        return self.select(quantile_scores(histogram, alpha))

    def rank_error(self, candidates: int, confidence: float = 0.95) -> Fraction:
        """r such that, with probability ≥ ``confidence``, the released candidate's score exceeds the
        best candidate's by at most r·den, i.e. its rank is within r rows of the best grid point's:
        r = s·ln(k/(1−confidence))/den (union bound over k candidates)."""
        if not 0 < confidence < 1 or candidates < 1:
            raise ValueError("confidence must be in (0, 1) and candidates ≥ 1")
        t = self.scale * math.log(candidates / (1.0 - confidence))
        return Fraction(math.ceil(t)) / self.den


def make_quantile_mechanism(accounting: Accounting, scale: float, sensitivity: int, den: int) -> QuantileMechanism:
    """A quantile selection with noise scale ``scale`` for scores of per-group L∞ sensitivity
    ``sensitivity``: Gumbel noise (zCDP measure) under ``zcdp``, exponential noise (pure DP) under
    ``basic``; OpenDP ``make_noisy_max(negate=True)`` over ``vector(u64)``."""
    s = _check_scale(scale)
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, int) or sensitivity < 1:
        raise ValueError("sensitivity must be a positive integer")
    if accounting not in ("zcdp", "basic"):
        raise ValueError("accounting must be 'zcdp' or 'basic'")
    measure = dp.zero_concentrated_divergence() if accounting == "zcdp" else dp.max_divergence()
    space = dp.vector_domain(dp.atom_domain(T="u64")), dp.linf_distance(T="u64")
    meas = dp.m.make_noisy_max(*space, measure, scale=s, negate=True)
    return QuantileMechanism(accounting, s, sensitivity, den, meas)


def calibrate_quantile(accounting: Accounting, loss: Fraction, l0: int, sensitivity: int, den: int) -> QuantileMechanism:
    """The least-noise quantile mechanism whose :meth:`QuantileMechanism.map` at ``l0`` is ≤ ``loss``
    (ρ under zcdp, ε under basic). Raises ScaleOutOfRange when ``loss`` is too small."""
    s = gaussian_sigma(l0, sensitivity, loss) if accounting == "zcdp" else laplace_scale(l0, 2 * sensitivity, loss)
    m = make_quantile_mechanism(accounting, s, sensitivity, den)
    while m.map(l0) > loss:  # OpenDP's float map may sit a hair above ours: step up until both fit
        s = math.nextafter(s, math.inf) * (1 + 1e-15)
        m = make_quantile_mechanism(accounting, s, sensitivity, den)
    return m


# ---------------------------------------------------------------------------------------------
# the exact output law (for the audit and for EXPLAIN's statements)


def exact_distribution(scores: Sequence[int], scale: float, accounting: Accounting) -> list[float]:
    """P[select(scores) = i] of the ideal mechanism, in floats.

    zcdp (Gumbel noise): the exponential mechanism, P(i) ∝ e^{−score_i/s}. basic (exponential noise
    on u_i = −score_i): P(i) = Σ_{S ⊆ others} (−1)^{|S|} e^{(u_i + Σ_S u_j − (1+|S|)·max u)/s}/(1+|S|),
    the closed form of ∫ f(x−u_i) Π_{j≠i} F(x−u_j) dx; exponential in k, meant for k ≤ 12.
    """
    s = float(scale)
    lo = min(scores)
    if accounting == "zcdp":
        w = [math.exp(-(x - lo) / s) for x in scores]
        tot = math.fsum(w)
        return [x / tot for x in w]
    k = len(scores)
    if k > 12:
        raise ValueError("the exact permute-and-flip law is computed for at most 12 candidates")
    u = [-(x - lo) for x in scores]  # max u = 0
    out = []
    for i in range(k):
        others = [u[j] for j in range(k) if j != i]
        terms = []
        for mask in range(1 << len(others)):
            size = bin(mask).count("1")
            tot = u[i] + sum(others[j] for j in range(len(others)) if mask >> j & 1)
            terms.append((-1) ** size * math.exp(tot / s) / (1 + size))
        out.append(max(0.0, math.fsum(terms)))
    z = math.fsum(out)
    return [p / z for p in out]


# ---------------------------------------------------------------------------------------------
# one planned quantile release


Target = Literal["quantile", "min", "max"]


@dataclass(frozen=True)
class QuantileNoise:
    """A calibrated DP quantile (or MIN/MAX) for one output column, over ``candidates`` grid points.

    ``cost`` is the mechanism's map at ``l0`` groups (ρ or ε). For MIN/MAX, ``rank`` is the public
    order statistic targeted (see :func:`extreme_rank`)."""

    column: str
    target: Target
    alpha: Fraction | None
    candidates: int
    l0: int
    mechanism: QuantileMechanism
    cost: Fraction
    rank: int | None = None

    @property
    def rank_error95(self) -> Fraction:
        """Rows by which the released candidate's rank may miss the best candidate's (95 %)."""
        return self.mechanism.rank_error(self.candidates, 0.95)

    def scores(self, histogram: Sequence[int]) -> list[int]:
        """The scores of one group's histogram (length ``candidates``)."""
        if len(histogram) != self.candidates:
            raise QuantileFailure("histogram of the wrong size")
        if self.target == "quantile":
            assert self.alpha is not None
            return quantile_scores(histogram, self.alpha)
        assert self.rank is not None
        return order_scores(histogram, self.rank, from_top=self.target == "max")

    def release(self, histogram: Sequence[int]) -> int:
        """The released candidate index for one group (one exact selection draw)."""
        return self.mechanism.select(self.scores(histogram))


def plan_quantile(
    column: str,
    target: Target,
    alpha: Fraction | None,
    *,
    candidates: int,
    max_rows: int,
    l0: int,
    accounting: Accounting,
    loss: Fraction,
) -> QuantileNoise:
    """Calibrate one quantile release to privacy loss ``loss`` (ρ under zcdp, ε under basic) for
    units touching ≤ ``l0`` groups with ≤ ``max_rows`` values each. Pure: no data, no randomness."""
    if target == "quantile":
        if alpha is None:
            raise ValueError("a quantile needs its level")
        sens, den = score_sensitivity(alpha, max_rows), alpha.denominator
    else:
        sens, den = order_sensitivity(max_rows), 1
    mech = calibrate_quantile(accounting, loss, l0, sens, den)
    rank = extreme_rank(mech, candidates) if target != "quantile" else None
    return QuantileNoise(column, target, alpha, candidates, l0, mech, mech.map(l0), rank)


_PARALLEL_FROM = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _selection_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="dpsql-quantile")
        return _pool


def release_selections(
    quantiles: Sequence[QuantileNoise],
    histogram_of: Sequence[int],
    histograms: Sequence[Sequence[Sequence[int]]],
    groups: int,
) -> dict[str, list[int]]:
    """The released candidate index of each quantile in each of ``groups`` kept groups.

    ``histograms[h][g]`` is histogram ``h``'s dense counts (one per candidate) in kept group ``g``;
    quantile ``i`` reads histogram ``histogram_of[i]``. One exact selection draw per (quantile,
    group). Call only after the query's cost has been charged. Any failure raises
    ExecutionFailed without values (R10).
    """
    from dpsql.errors import ExecutionFailed

    try:
        jobs = []
        for q, h in zip(quantiles, histogram_of, strict=True):
            hist = histograms[h]
            if len(hist) != groups:
                raise QuantileFailure("histogram count mismatch")
            jobs += [(q, hist[g]) for g in range(groups)]
        if len(jobs) >= _PARALLEL_FROM:  # OpenDP's sampler runs outside the GIL (ctypes)
            picked = list(_selection_pool().map(lambda job: job[0].release(job[1]), jobs))
        else:
            picked = [q.release(h) for q, h in jobs]
        out: dict[str, list[int]] = {}
        for i, q in enumerate(quantiles):
            out[q.column] = picked[i * groups:(i + 1) * groups]
        return out
    except Exception:
        pass
    raise ExecutionFailed("the DP quantile selection failed", hint="retry the query; the charge for it stands") from None
