"""Noise mechanisms, each made by a ``make_…`` function and carrying its privacy map next to its sampler.

All randomness comes from OpenDP's exact discrete samplers (CKS20), which draw from OpenSSL's
CSPRNG in the PyPI wheel (security.md R1, R2). There is no seed and no deterministic mode.

* :func:`make_discrete_gaussian` / :func:`make_discrete_laplace` — additive noise for one
  statistic over all released groups. ``.sample(n)`` draws ``n`` i.i.d. integers in ONE OpenDP
  vector call (``make_gaussian``/``make_laplace`` over ``vector_domain(atom_domain(T="i64"))``
  applied to a zero vector); the caller adds them to exact Python integers, which cannot overflow.
  ``.map(l0, linf)`` is the privacy loss when one privacy unit changes at most ``l0`` cells by at
  most ``linf`` each.
* :func:`make_gaussian_threshold` / :func:`make_laplace_threshold` — DP partition selection
  (OpenDP ``make_gaussian_threshold``/``make_laplace_threshold``, Rogers 2023): a map from group
  index to exact distinct-unit count goes in, the groups whose noisy count is ≥ the threshold come
  out with their noisy counts.

The d_in convention of OpenDP's threshold maps (verified against opendp 0.16 source,
``measurements/noise_threshold/distribution/{gaussian,laplace}``): the input metric is
``L0PInfDistance`` and d_in is a triple ``(l0, lp, linf)`` — at most ``l0`` keys change, the
change in ℓp norm (ℓ2 for the Gaussian's ``l02inf_distance``, ℓ1 for the Laplace's
``l01inf_distance``) is at most ``lp``, and each count changes by at most ``linf``. OpenDP
tightens ``lp`` to ``min(lp, linf·√l0)`` (ℓ2) or ``min(lp, linf·l0)`` (ℓ1) and returns
``(ρ or ε, δ)`` with δ = 1 − (1 − P[noise > threshold − linf])^l0. Distinct-unit counts change by
1 in each of at most L0 groups, so for them we pass ``(L0, L0, 1)``: L0 is an upper bound on both
norms and OpenDP applies the tight one. A COUNT(*) thresholded on its own value (the planner's
construction (b)) passes ``(L0, ‖Δ‖, L∞)`` with its own L∞ (max_rows, or the L1 cap when smaller)
and norm; OpenDP requires τ − 1 ≥ L∞.

**OpenDP 0.16 off-by-one (opendp/opendp#2922, open).** The threshold mechanisms *keep* a key when
its noisy count is ≥ the threshold τ, but their privacy map computes δ from P[Z > τ − linf]
(strictly greater), i.e. as if keys were kept only when the noisy count is > τ. The true
probability that a key held by one unit is released is P[Z ≥ τ − 1], which is larger (our T4 audit
measured 1.4–2.4× the reported δ). We therefore run OpenDP's mechanism at threshold τ and charge the
δ of OpenDP's map for the same scale at threshold τ − 1, which is exactly 1 − (1 − P[Z ≥ τ − 1])^L0
(the correct δ, still computed by OpenDP's conservative tail bounds). This needs τ ≥ 2. If a later
OpenDP fixes the map, this stays conservative by one threshold step; ``test_mechanisms`` has a test
that notices the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

import opendp.prelude as dp

from dpsql.accountant.calibration import (
    MAX_SCALE,
    ScaleOutOfRange,
    ceil_to_grid,
    gaussian_rho,
    laplace_epsilon,
)

dp.enable_features("contrib")

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


class NoiseFailure(RuntimeError):
    """The sampler returned something unusable (e.g. a saturated draw). Carries no values."""


def _check_scale(scale: float) -> float:
    s = float(scale)
    if not s > 0:
        raise ValueError("noise scale must be positive")
    if not s <= MAX_SCALE:
        raise ScaleOutOfRange("noise scale must be at most 2^52")
    return s


def _check_draws(draws: list[int], n: int) -> list[int]:
    if len(draws) != n or any(d <= _I64_MIN or d >= _I64_MAX for d in draws):
        raise NoiseFailure("the sampler returned an unusable draw")
    return draws


class _Immutable:
    """Measurements are immutable and wrap OpenDP objects (ctypes pointers, not copyable):
    a copy is the measurement itself, so a copied noise plan still samples with what it charged."""

    def __copy__(self):  # type: ignore[no-untyped-def]
        return self

    def __deepcopy__(self, memo: dict[int, Any]):  # type: ignore[no-untyped-def]
        return self


@dataclass(frozen=True)
class DiscreteGaussian(_Immutable):
    """Additive discrete Gaussian noise with parameter σ = ``scale`` (integer units); zCDP."""

    scale: float
    _meas: Any = field(repr=False, compare=False)
    name: ClassVar[str] = "discrete_gaussian"

    def map(self, l0: int, linf: int, l1: int | None = None) -> Fraction:
        """ρ = Δ₂²/(2σ²): Δ₂² = l0·linf², or less under an L1 bound ``l1`` (``sensitivity_norms``),
        exact and rounded up to the 1e-15 grid."""
        return gaussian_rho(l0, linf, self.scale, l1)

    def sample(self, n: int) -> list[int]:
        """``n`` independent draws from one OpenDP vector call (CSPRNG); never seeded."""
        if n <= 0:
            return []
        return _check_draws(self._meas([0] * n), n)


@dataclass(frozen=True)
class DiscreteLaplace(_Immutable):
    """Additive discrete Laplace noise with scale t = ``scale`` (integer units); pure ε-DP."""

    scale: float
    _meas: Any = field(repr=False, compare=False)
    name: ClassVar[str] = "discrete_laplace"

    def map(self, l0: int, linf: int, l1: int | None = None) -> Fraction:
        """ε = Δ₁/t with Δ₁ = min(l0·linf, l1), exact and rounded up to the 1e-15 grid."""
        return laplace_epsilon(l0, linf, self.scale, l1)

    def sample(self, n: int) -> list[int]:
        """``n`` independent draws from one OpenDP vector call (CSPRNG); never seeded."""
        if n <= 0:
            return []
        return _check_draws(self._meas([0] * n), n)


def make_discrete_gaussian(scale: float) -> DiscreteGaussian:
    """A discrete Gaussian mechanism with parameter σ = ``scale`` (OpenDP ``make_gaussian``, i64 vectors)."""
    s = _check_scale(scale)
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64")
    return DiscreteGaussian(s, dp.m.make_gaussian(*space, scale=s))


def make_discrete_laplace(scale: float) -> DiscreteLaplace:
    """A discrete Laplace mechanism with scale ``scale`` (OpenDP ``make_laplace``, i64 vectors)."""
    s = _check_scale(scale)
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")
    return DiscreteLaplace(s, dp.m.make_laplace(*space, scale=s))


AdditiveMechanism = DiscreteGaussian | DiscreteLaplace


# ---------------------------------------------------------------------------------------------
# Partition selection


@dataclass(frozen=True)
class _Threshold(_Immutable):
    scale: float
    threshold: int
    _meas: Any = field(repr=False, compare=False)  # releases noisy counts ≥ threshold
    _shadow: Any = field(repr=False, compare=False)  # same scale, threshold − 1: its map is our δ

    def map(self, l0: int, linf: int = 1, lp: int | None = None) -> tuple[Fraction, Fraction]:
        """(ρ or ε, δ) for one unit in ≤ l0 groups changing each by ≤ ``linf`` and all of them by
        ≤ ``lp`` in the mechanism's norm (ℓ2 Gaussian, ℓ1 Laplace), from OpenDP's map at
        d_in = (l0, lp, linf); ``lp`` defaults to l0·linf (OpenDP tightens it to linf·√l0 or
        l0·linf). Distinct-unit counts use the default (l0, l0, 1); a thresholded COUNT(*) passes
        its own L∞ (max_rows, or the L1 cap when smaller) and norm.

        ρ/ε is OpenDP's, rounded up to the 1e-15 grid. δ is OpenDP's map at threshold − 1, which
        is the true δ of keeping noisy counts ≥ threshold (see the module docstring: #2922).
        Raises ValueError for a bad d_in, or a threshold below linf + 1 (OpenDP refuses a
        threshold under the L∞ sensitivity, and the shadow threshold is one lower).
        """
        for name, v in (("l0", l0), ("linf", linf), ("lp", l0 * linf if lp is None else lp)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer")
        if self.threshold - 1 < linf:
            raise ValueError("the threshold must exceed the L-infinity sensitivity")
        d_in = (l0, l0 * linf if lp is None else lp, linf)
        loss, _ = self._meas.map(d_in)
        shadow_loss, delta = self._shadow.map(d_in)
        return ceil_to_grid(Fraction(max(loss, shadow_loss))), Fraction(delta)

    def release(self, counts: Mapping[int, int]) -> dict[int, int]:
        """Noisy counts of the groups whose noisy count is ≥ ``threshold``; the others are dropped.

        ``counts`` maps a group index to its exact number of distinct privacy units. One OpenDP
        call samples every group's noise.
        """
        if not counts:
            return {}
        out = self._meas(dict(counts))
        if any(k not in counts or v < self.threshold or v >= _I64_MAX for k, v in out.items()):
            raise NoiseFailure("the threshold mechanism returned an unusable result")
        return dict(out)


@dataclass(frozen=True)
class GaussianThreshold(_Threshold):
    """Partition selection with discrete Gaussian noise σ = ``scale``; approximate zCDP (ρ, δ)."""

    name: ClassVar[str] = "gaussian_threshold"


@dataclass(frozen=True)
class LaplaceThreshold(_Threshold):
    """Partition selection with discrete Laplace noise of scale ``scale``; approximate DP (ε, δ)."""

    name: ClassVar[str] = "laplace_threshold"


ThresholdMechanism = GaussianThreshold | LaplaceThreshold


def _check_threshold(threshold: int) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 2:
        raise ValueError("threshold must be an integer ≥ 2")
    return threshold


def make_gaussian_threshold(scale: float, threshold: int) -> GaussianThreshold:
    """Gaussian partition selection (OpenDP ``make_gaussian_threshold`` over i64→i64 maps, ``l02inf``)."""
    s, t = _check_scale(scale), _check_threshold(threshold)
    domain = dp.map_domain(dp.atom_domain(T="i64"), dp.atom_domain(T="i64"))
    metric = dp.l02inf_distance(dp.absolute_distance(T="i64"))
    return GaussianThreshold(
        s,
        t,
        dp.m.make_gaussian_threshold(domain, metric, scale=s, threshold=t),
        dp.m.make_gaussian_threshold(domain, metric, scale=s, threshold=t - 1),
    )


def make_laplace_threshold(scale: float, threshold: int) -> LaplaceThreshold:
    """Laplace partition selection (OpenDP ``make_laplace_threshold`` over i64→i64 maps, ``l01inf``)."""
    s, t = _check_scale(scale), _check_threshold(threshold)
    domain = dp.map_domain(dp.atom_domain(T="i64"), dp.atom_domain(T="i64"))
    metric = dp.l01inf_distance(dp.absolute_distance(T="i64"))
    return LaplaceThreshold(
        s,
        t,
        dp.m.make_laplace_threshold(domain, metric, scale=s, threshold=t),
        dp.m.make_laplace_threshold(domain, metric, scale=s, threshold=t - 1),
    )
