"""Privacy calibration: pure functions between noise scales, sensitivities and privacy losses.

Nothing here samples noise or touches data. The functions that feed the ledger return exact
:class:`~fractions.Fraction` values rounded in the safe direction (see :mod:`dpsql.accountant.units`):
a privacy *loss* is rounded up to the 1e-15 grid, a *budget* derived from (ε, δ) is rounded down.

Formulas (security.md §3):

* discrete Gaussian with parameter σ, L2 sensitivity Δ₂ = √L0·L∞: ρ = Δ₂²/(2σ²) = L0·L∞²/(2σ²)
  (Bun–Steinke 2016; Canonne–Kamath–Steinke 2020 for the discrete case);
* discrete Laplace with scale t, L1 sensitivity Δ₁ = L0·L∞: ε = Δ₁/t (pure DP);
* ρ-zCDP ⇒ (ε, δ)-DP by CKS20 (Canonne–Kamath–Steinke 2020, Prop. 12 / Cor. 13):
  ε(δ) = inf_{α>1} αρ + (ln(1/δ) + (α−1)·ln(1−1/α) − ln α)/(α−1), and its inverse
  δ(ε) = inf_{α>1} exp((α−1)(αρ−ε)) · (1−1/α)^α / (α−1);
* the simpler Bun–Steinke conversion ε = ρ + 2√(ρ·ln(1/δ)) is kept for reference only.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache
from statistics import NormalDist

from dpsql.accountant.units import (
    ATTO,
    GRID,
    GRID_DENOMINATOR,
    PICO,
    ceil_to_grid,
    floor_to_grid,
    from_atto,
    from_pico,
    to_atto_down,
    to_atto_up,
    to_pico_down,
    to_pico_up,
)

__all__ = [
    "ATTO",
    "GRID",
    "PICO",
    "ScaleOutOfRange",
    "ceil_to_grid",
    "cks20_delta",
    "cks20_epsilon",
    "discrete_gaussian_error",
    "discrete_laplace_error",
    "floor_to_grid",
    "from_atto",
    "from_pico",
    "gaussian_rho",
    "gaussian_sigma",
    "laplace_epsilon",
    "laplace_scale",
    "rho_for_epsilon",
    "simple_epsilon",
    "to_atto_down",
    "to_atto_up",
    "to_pico_down",
    "to_pico_up",
]

Number = int | float | Fraction

# rho_for_epsilon keeps this relative margin below ε, so that float error in evaluating the
# CKS20 infimum (≈1e-15 relative) can never make a returned ρ exceed the stated ε.
_SAFETY = Fraction(1, 10**12)
# Largest noise scale we accept: draws must stay far from the int64 range of the sampler.
MAX_SCALE = float(2**52)


class ScaleOutOfRange(ValueError):
    """The privacy target needs a noise scale outside what the samplers support."""


# ---------------------------------------------------------------------------------------------
# ρ-zCDP → (ε, δ)


def _check_rho_delta(rho: Number, delta: Number) -> tuple[float, float]:
    r, d = float(rho), float(delta)
    if not (r >= 0 and math.isfinite(r)):
        raise ValueError(f"rho must be finite and non-negative, got {rho!r}")
    if not 0 < d < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return r, d


def _cks20_objective(x: float, rho: float, log_inv_delta: float) -> float:
    """αρ + (ln(1/δ) − ln α)/(α−1) + ln(1−1/α) at α = 1 + x (the CKS20 bound on ε)."""
    return (1.0 + x) * rho + (log_inv_delta - math.log1p(x)) / x + math.log(x) - math.log1p(x)


def cks20_epsilon(rho: Number, delta: Number) -> float:
    """The CKS20 ε such that ρ-zCDP implies (ε, δ)-DP.

    Computes inf_{α>1} αρ + (ln(1/δ) + (α−1)ln(1−1/α) − ln α)/(α−1) to float precision. With
    x = α−1 the derivative of the objective is ρ − (ln(1/δ) − ln(1+x))/x², which is increasing
    on (0, 1/δ) and changes sign there, so the objective is unimodal: we bisect (geometrically)
    for the root of the derivative and evaluate the objective at the bracketing points. Any α
    gives a valid bound, so the value returned is an upper bound on the infimum up to float
    rounding (≈1e-15 relative). ρ = 0 gives 0.
    """
    r, d = _check_rho_delta(rho, delta)
    if r == 0:
        return 0.0
    big_l = -math.log(d)
    lo, hi = 1e-300, 1.0 / d
    for _ in range(2000):
        mid = math.sqrt(lo * hi)
        if not lo < mid < hi:
            break
        if r * mid * mid < big_l - math.log1p(mid):
            lo = mid
        else:
            hi = mid
    return min(_cks20_objective(lo, r, big_l), _cks20_objective(hi, r, big_l))


def cks20_delta(rho: Number, epsilon: Number) -> float:
    """The CKS20 δ(ε) of a ρ-zCDP mechanism: inf_{α>1} exp((α−1)(αρ−ε))·(1−1/α)^α/(α−1), capped at 1.

    The log of the objective is convex in α (its derivative (2α−1)ρ − ε + ln(1−1/α) is
    increasing), so we bisect for the root of the derivative. Used to state the privacy profile
    a query is audited against; not used for charging.
    """
    r, e = float(rho), float(epsilon)
    if not (r >= 0 and math.isfinite(r)) or not (e >= 0):
        raise ValueError("rho and epsilon must be non-negative")
    if r == 0 or math.isinf(e):
        return 0.0

    def log_delta(x: float) -> float:  # α = 1 + x
        return x * ((1.0 + x) * r - e) + (1.0 + x) * (math.log(x) - math.log1p(x)) - math.log(x)

    lo, hi = 1e-300, (e + 1.0) / (2.0 * r) + 2.0
    for _ in range(2000):
        mid = math.sqrt(lo * hi)
        if not lo < mid < hi:
            break
        if (2.0 * mid + 1.0) * r - e + math.log(mid) - math.log1p(mid) < 0:
            lo = mid
        else:
            hi = mid
    best = min(log_delta(lo), log_delta(hi))
    return min(1.0, math.exp(best))


def simple_epsilon(rho: Number, delta: Number) -> float:
    """The Bun–Steinke conversion ε = ρ + 2√(ρ·ln(1/δ)) (looser than CKS20; reference only)."""
    r, d = _check_rho_delta(rho, delta)
    return r + 2.0 * math.sqrt(r * math.log(1.0 / d))


@lru_cache(maxsize=4096)
def _rho_for_epsilon(epsilon: Fraction, delta: Fraction) -> Fraction:
    limit = epsilon / (1 + _SAFETY)

    def admits(k: int) -> bool:
        return Fraction(cks20_epsilon(Fraction(k, GRID_DENOMINATOR), delta)) <= limit

    lo = 0  # admits(0) holds: ε(0) = 0
    hi = max(1, math.ceil(epsilon * GRID_DENOMINATOR))
    while admits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if admits(mid):
            lo = mid
        else:
            hi = mid
    return Fraction(lo, GRID_DENOMINATOR)


def rho_for_epsilon(epsilon: Number, delta: Number) -> Fraction:
    """The largest ρ on the 1e-15 grid such that ρ-zCDP implies (ε, δ)-DP by CKS20.

    Guarantees ``cks20_epsilon(result, delta) * (1 + 1e-12) <= epsilon`` (the tiny margin
    absorbs float error in the infimum), and that one more grid step would break it (up to
    that margin). Monotone in ε and in δ. Turns a budget or a per-query (ε, δ) into a ρ.
    """
    e, d = Fraction(epsilon), Fraction(delta)
    if e <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    if not 0 < d < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return _rho_for_epsilon(e, d)


# ---------------------------------------------------------------------------------------------
# Discrete Gaussian (zCDP) and discrete Laplace (pure ε)


def _check_sensitivity(l0: int, linf: int) -> None:
    if isinstance(l0, bool) or not isinstance(l0, int) or l0 < 1:
        raise ValueError(f"l0 (groups per unit) must be a positive integer, got {l0!r}")
    if isinstance(linf, bool) or not isinstance(linf, int) or linf < 1:
        raise ValueError(f"linf (contribution per group) must be a positive integer, got {linf!r}")


def sensitivity_norms(l0: int, linf: int, l1: int | None = None) -> tuple[int, int]:
    """(Δ₁, Δ₂²) of a vector where one unit changes ≤ ``l0`` cells by ≤ ``linf`` each and, when
    ``l1`` is given, by ≤ ``l1`` in total (an L1 bound such as ``max_contributions``).

    Δ₁ = min(l0·linf, l1). Δ₂² is the largest Σ x_g² over 0 ≤ x_g ≤ linf, Σ x_g ≤ l1, at most
    l0 cells non-zero: a convex function over a polytope peaks at a vertex, i.e. greedily filling
    q = min(l0, ⌊l1/linf⌋) cells to linf and one more (if q < l0) with the rest r = l1 − q·linf, so
    Δ₂² = q·linf² + r² (exact integers).

    >>> sensitivity_norms(3, 4)
    (12, 48)
    >>> sensitivity_norms(3, 4, 6)  # 4 in one cell, 2 in another
    (6, 20)
    """
    _check_sensitivity(l0, linf)
    if l1 is None or l1 >= l0 * linf:
        return l0 * linf, l0 * linf * linf
    if isinstance(l1, bool) or not isinstance(l1, int) or l1 < 1:
        raise ValueError(f"l1 (total contribution) must be a positive integer, got {l1!r}")
    q = min(l0, l1 // linf)
    r = l1 - q * linf if q < l0 else 0
    return l1, q * linf * linf + r * r


def _check_scale(scale: float) -> Fraction:
    s = float(scale)
    if not (s > 0 and math.isfinite(s)):
        raise ValueError(f"noise scale must be positive and finite, got {scale!r}")
    return Fraction(s)


def gaussian_rho(l0: int, linf: int, sigma: float, l1: int | None = None) -> Fraction:
    """ρ of the discrete Gaussian(σ) on a vector where one unit changes ≤ l0 cells by ≤ linf each
    (and ≤ ``l1`` in total, when given).

    ρ = Δ₂²/(2σ²) with Δ₂² from :func:`sensitivity_norms` (l0·linf² without ``l1``), computed
    exactly from the float σ and rounded up to the 1e-15 grid (never below the true privacy loss).
    """
    _, l2sq = sensitivity_norms(l0, linf, l1)
    s = _check_scale(sigma)
    return ceil_to_grid(Fraction(l2sq) / (2 * s * s))


def _smallest_float(pred_ok: Callable[[float], bool], start: float) -> float:
    """The smallest positive float σ ≥ (near) ``start`` with ``pred_ok(σ)``, for a monotone predicate."""
    s = start
    steps = 0
    while not pred_ok(s):
        s = math.nextafter(s, math.inf)
        steps += 1
        if steps > 4096:  # far off: bracket and bisect on the float bit pattern
            return _bisect_float(pred_ok, s)
    steps = 0
    while True:
        below = math.nextafter(s, 0.0)
        if below <= 0 or not pred_ok(below):
            return s
        s = below
        steps += 1
        if steps > 4096:
            return _bisect_float(pred_ok, s)


def _bisect_float(pred_ok: Callable[[float], bool], known_ok: float) -> float:
    def bits(x: float) -> int:
        return struct.unpack("<q", struct.pack("<d", x))[0]

    def flt(b: int) -> float:
        return struct.unpack("<d", struct.pack("<q", b))[0]

    hi = bits(known_ok)
    lo = 0  # +0.0, never ok
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pred_ok(flt(mid)):
            hi = mid
        else:
            lo = mid
    return flt(hi)


def gaussian_sigma(l0: int, linf: int, rho: Number, l1: int | None = None) -> float:
    """The smallest float σ with ``gaussian_rho(l0, linf, σ, l1) <= rho``.

    Raises ValueError if ρ is below the 1e-15 grid (no finite σ would do), or if σ would exceed
    2^52 (draws must stay far inside the sampler's int64 range).
    """
    _check_sensitivity(l0, linf)
    target = floor_to_grid(Fraction(rho))
    if target <= 0:
        raise ScaleOutOfRange(f"rho {float(rho)!r} is too small to calibrate a Gaussian")
    _, l2sq = sensitivity_norms(l0, linf, l1)
    start = math.sqrt(float(Fraction(l2sq) / (2 * target)))
    if not start <= MAX_SCALE:
        raise ScaleOutOfRange("the noise scale this query needs is too large; narrow its bounds")
    return _smallest_float(lambda s: gaussian_rho(l0, linf, s, l1) <= rho, max(start, 5e-324))


def laplace_epsilon(l0: int, linf: int, scale: float, l1: int | None = None) -> Fraction:
    """ε of the discrete Laplace(scale) on a vector where one unit changes ≤ l0 cells by ≤ linf each
    (and ≤ ``l1`` in total, when given).

    ε = Δ₁/scale with Δ₁ = min(l0·linf, l1), exact from the float scale and rounded up to the 1e-15 grid.
    """
    l1n, _ = sensitivity_norms(l0, linf, l1)
    t = _check_scale(scale)
    return ceil_to_grid(Fraction(l1n) / t)


def laplace_scale(l0: int, linf: int, epsilon: Number, l1: int | None = None) -> float:
    """The smallest float scale t with ``laplace_epsilon(l0, linf, t, l1) <= epsilon``."""
    l1n, _ = sensitivity_norms(l0, linf, l1)
    target = floor_to_grid(Fraction(epsilon))
    if target <= 0:
        raise ScaleOutOfRange(f"epsilon {float(epsilon)!r} is too small to calibrate a Laplace mechanism")
    start = float(Fraction(l1n) / target)
    if not start <= MAX_SCALE:
        raise ScaleOutOfRange("the noise scale this query needs is too large; narrow its bounds")
    return _smallest_float(lambda t: laplace_epsilon(l0, linf, t, l1) <= epsilon, start)


# ---------------------------------------------------------------------------------------------
# Accuracy: error half-widths of the discrete noise


@lru_cache(maxsize=1024)
def discrete_gaussian_error(sigma: float, confidence: float = 0.95) -> int:
    """An integer b with P(|Z| ≤ b) ≥ confidence for Z ~ discrete Gaussian(σ).

    For σ ≤ 100 this is the smallest such b, found by summing the probability mass (with a
    1e-12 margin against float error). Above, b = ⌈z·σ⌉ with z the normal quantile: by CKS20
    (Prop. 25) P(Z ≥ m) ≤ P(N(0,σ²) ≥ m−1) for integers m ≥ 1, so
    P(|Z| > b) = 2·P(Z ≥ b+1) ≤ 2·P(N ≥ b) ≤ 1 − confidence. The first value never exceeds the second.
    """
    s = float(_check_scale(sigma))
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    bound = math.ceil(NormalDist().inv_cdf(0.5 + confidence / 2) * s)
    if s > 100:
        return bound
    terms = int(40 * s) + 10
    w = [math.exp(-(k * k) / (2 * s * s)) for k in range(terms)]
    total = w[0] + 2 * math.fsum(w[1:])
    inside = w[0]
    for b in range(0, bound):
        if inside / total >= confidence + 1e-12:
            return b
        inside += 2 * w[b + 1]
    return bound


@lru_cache(maxsize=1024)
def discrete_laplace_error(scale: float, confidence: float = 0.95) -> int:
    """The smallest integer b with P(|Z| ≤ b) ≥ confidence for Z ~ discrete Laplace(scale).

    With q = e^{−1/t}: P(|Z| > b) = 2·q^{b+1}/(1+q) exactly; b is found in closed form and then
    checked with a 1e-12 margin against float error.
    """
    t = float(_check_scale(scale))
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    q = math.exp(-1.0 / t)
    miss = 1.0 - confidence

    def ok(b: int) -> bool:
        return 2.0 * math.exp(-(b + 1) / t) / (1.0 + q) <= miss - 1e-12

    b = max(0, math.ceil(t * math.log(2.0 / (miss * (1.0 + q)))) - 2)
    while not ok(b):
        b += 1
    while b > 0 and ok(b - 1):
        b -= 1
    return b
