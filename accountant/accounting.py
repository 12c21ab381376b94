"""The two accounting modes as strategy objects: zero-concentrated DP (``"zcdp"``) and basic (ε, δ).

Each :class:`AccountingMode` says what a query's budget is in its currency (ρ or ε), which
additive and threshold measurements it uses, how their errors are reported, and how a charge
converts back to an ε. The planner, the noise step and the capacity checks ask the mode instead
of branching on its name; :func:`accounting_mode` is the one place the name is looked up.

>>> accounting_mode("zcdp").additive(1, 1, Fraction(1, 2)).name
'discrete_gaussian'
>>> accounting_mode("basic").symbol, accounting_mode("basic").needs_delta
('ε', False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from dpsql.accountant.calibration import (
    cks20_epsilon,
    discrete_gaussian_error,
    discrete_laplace_error,
    gaussian_sigma,
    laplace_scale,
    rho_for_epsilon,
    sensitivity_norms,
)
from dpsql.accountant.mechanisms import (
    AdditiveMechanism,
    ThresholdMechanism,
    make_discrete_gaussian,
    make_discrete_laplace,
    make_gaussian_threshold,
    make_laplace_threshold,
)

SELECTION_DELTA_SHARE = Fraction(1, 10)  # zcdp: the part of the query's δ given to partition selection
CONVERSION_DELTA_SHARE = Fraction(1, 10)  # zcdp: part of a budget's δ_B reserved for the ρ → (ε, δ) conversion


@dataclass(frozen=True)
class QueryBudget:
    """A query's (ε, δ) in the mode's currency: ``amount`` (ρ or ε) shared by its mechanisms,
    ``selection_delta`` for partition selection, ``conversion_delta`` for zCDP → (ε, δ) (None in basic)."""

    amount: Fraction
    selection_delta: Fraction
    conversion_delta: Fraction | None


class AccountingMode:
    """One accounting mode: its currency, measurements and conversions (see ZCDP and BASIC)."""

    name: str  # "zcdp" or "basic"
    symbol: str  # "ρ" or "ε"
    needs_delta: bool  # every query needs δ > 0

    def query_budget(self, epsilon: Fraction, delta: Fraction, selection: bool) -> QueryBudget:
        """Split a query's (ε, δ) into the mechanisms' shared amount and the selection/conversion δ."""
        raise NotImplementedError

    def additive(self, l0: int, linf: int, share: Fraction, l1: int | None = None) -> AdditiveMechanism:
        """The additive measurement whose map at (l0, linf, l1) is ≤ ``share``."""
        raise NotImplementedError

    def selection_scale(self, l0: int, share: Fraction) -> float:
        """The threshold mechanism's noise scale for distinct-unit counts (linf 1) at ``share``."""
        raise NotImplementedError

    def threshold(self, scale: float, threshold: int) -> ThresholdMechanism:
        """The mode's partition-selection measurement."""
        raise NotImplementedError

    def threshold_norm(self, l0: int, linf: int, l1: int | None) -> int:
        """The integer d_in norm of a thresholded statistic (one unit: ≤ l0 cells, ≤ linf each,
        ≤ l1 in total): ⌈Δ₂⌉ for the Gaussian, Δ₁ for the Laplace (``sensitivity_norms``)."""
        raise NotImplementedError

    def norm_scale(self, l0: int, linf: int, norm: int, share: Fraction) -> float:
        """The threshold noise scale whose map at d_in (l0, norm, linf) is ≤ ``share`` (before the
        OpenDP rounding nudge the planner applies); OpenDP uses min(norm, linf·√l0) (ℓ2) or
        min(norm, l0·linf) (ℓ1)."""
        raise NotImplementedError

    def error95(self, scale: float) -> int:
        """A b with P(|noise| ≤ b) ≥ 0.95 for the mode's noise at ``scale`` (integer units)."""
        raise NotImplementedError

    def tail_width(self, scale: float, tail: float) -> float:
        """A rough noise magnitude exceeded with probability about e^-tail (threshold search guesses)."""
        raise NotImplementedError

    def epsilon_bound(self, spent: Fraction, conversion_delta: Fraction | None) -> float:
        """The ε a charge of ``spent`` guarantees."""
        raise NotImplementedError

    def largest_charge(self, epsilon: Fraction, delta: Fraction) -> Fraction:
        """The largest amount a query with (ε, δ) can be charged."""
        raise NotImplementedError

    def filter_deltas(self, budget_delta: Fraction) -> tuple[Fraction | None, Fraction]:
        """A budget's (conversion δ, δ left for charges): zcdp keeps δ_B/10 for the conversion."""
        raise NotImplementedError

    def budget_amount(self, epsilon: Fraction, conversion_delta: Fraction | None) -> Fraction:
        """A budget ε in the mode's currency (ρ at the conversion δ, or ε)."""
        raise NotImplementedError

    def epsilon_of(self, amount: Fraction, conversion_delta: Fraction | None) -> Fraction:
        """The ε an ``amount`` stands for, exactly (basic) or via CKS20 (zcdp)."""
        return Fraction(self.epsilon_bound(amount, conversion_delta))

    def rho(self, amount: Fraction) -> Fraction | None:
        """``amount`` as ρ when the mode counts in ρ, else None (for budget reports)."""
        return None


class _ZCDP(AccountingMode):
    """ρ-zCDP: discrete Gaussian noise, Gaussian thresholds, CKS20 conversion to (ε, δ)."""

    name, symbol, needs_delta = "zcdp", "ρ", True

    def query_budget(self, epsilon: Fraction, delta: Fraction, selection: bool) -> QueryBudget:
        """δ/10 to selection (when needed); ρ_q = rho_for_epsilon(ε, δ − δ_sel)."""
        sel = delta * SELECTION_DELTA_SHARE if selection else Fraction(0)
        return QueryBudget(rho_for_epsilon(epsilon, delta - sel), sel, delta - sel)

    def additive(self, l0: int, linf: int, share: Fraction, l1: int | None = None) -> AdditiveMechanism:
        """The discrete Gaussian with σ = gaussian_sigma(l0, linf, ρ share, l1): the L2 norm."""
        return make_discrete_gaussian(gaussian_sigma(l0, linf, share, l1))

    def selection_scale(self, l0: int, share: Fraction) -> float:
        """σ = gaussian_sigma(l0, 1, ρ share)."""
        return gaussian_sigma(l0, 1, share)

    def threshold(self, scale: float, threshold: int) -> ThresholdMechanism:
        """OpenDP's Gaussian threshold mechanism."""
        return make_gaussian_threshold(scale, threshold)

    def threshold_norm(self, l0: int, linf: int, l1: int | None) -> int:
        """⌈√Δ₂²⌉ (OpenDP's ℓ2 d_in is an integer)."""
        _, l2sq = sensitivity_norms(l0, linf, l1)
        root = math.isqrt(l2sq)
        return root if root * root == l2sq else root + 1

    def norm_scale(self, l0: int, linf: int, norm: int, share: Fraction) -> float:
        """σ with min(norm², l0·linf²)/(2σ²) ≤ ρ share."""
        return gaussian_sigma(l0, linf, share) if norm * norm >= l0 * linf * linf else gaussian_sigma(1, norm, share)

    def error95(self, scale: float) -> int:
        """The discrete Gaussian's 95% half-width."""
        return discrete_gaussian_error(scale)

    def tail_width(self, scale: float, tail: float) -> float:
        """σ·√(2·tail)."""
        return scale * math.sqrt(2 * tail)

    def epsilon_bound(self, spent: Fraction, conversion_delta: Fraction | None) -> float:
        """CKS20: the ε of ρ = ``spent`` at δ = ``conversion_delta``."""
        assert conversion_delta is not None
        return cks20_epsilon(spent, conversion_delta)

    def largest_charge(self, epsilon: Fraction, delta: Fraction) -> Fraction:
        """ρ_q at δ_conv ≤ δ is at most rho_for_epsilon(ε, δ)."""
        return rho_for_epsilon(epsilon, delta)

    def filter_deltas(self, budget_delta: Fraction) -> tuple[Fraction | None, Fraction]:
        """δ_conv = δ_B·CONVERSION_DELTA_SHARE; the rest may be charged."""
        conv = budget_delta * CONVERSION_DELTA_SHARE
        return conv, budget_delta - conv

    def budget_amount(self, epsilon: Fraction, conversion_delta: Fraction | None) -> Fraction:
        """ρ_B = rho_for_epsilon(ε_B, δ_conv)."""
        assert conversion_delta is not None
        return rho_for_epsilon(epsilon, conversion_delta)

    def rho(self, amount: Fraction) -> Fraction | None:
        """The amount is ρ."""
        return amount


class _Basic(AccountingMode):
    """Pure ε with basic composition: discrete Laplace noise, Laplace thresholds (δ only for selection)."""

    name, symbol, needs_delta = "basic", "ε", False

    def query_budget(self, epsilon: Fraction, delta: Fraction, selection: bool) -> QueryBudget:
        """ε for the mechanisms; all of δ to selection (when needed)."""
        return QueryBudget(epsilon, delta if selection else Fraction(0), None)

    def additive(self, l0: int, linf: int, share: Fraction, l1: int | None = None) -> AdditiveMechanism:
        """The discrete Laplace with scale laplace_scale(l0, linf, ε share, l1): the L1 norm."""
        return make_discrete_laplace(laplace_scale(l0, linf, share, l1))

    def selection_scale(self, l0: int, share: Fraction) -> float:
        """t = laplace_scale(l0, 1, ε share)."""
        return laplace_scale(l0, 1, share)

    def threshold(self, scale: float, threshold: int) -> ThresholdMechanism:
        """OpenDP's Laplace threshold mechanism."""
        return make_laplace_threshold(scale, threshold)

    def threshold_norm(self, l0: int, linf: int, l1: int | None) -> int:
        """Δ₁ = min(l0·linf, l1)."""
        return sensitivity_norms(l0, linf, l1)[0]

    def norm_scale(self, l0: int, linf: int, norm: int, share: Fraction) -> float:
        """t with min(norm, l0·linf)/t ≤ ε share."""
        return laplace_scale(1, min(norm, l0 * linf), share)

    def error95(self, scale: float) -> int:
        """The discrete Laplace's 95% half-width."""
        return discrete_laplace_error(scale)

    def tail_width(self, scale: float, tail: float) -> float:
        """t·tail."""
        return scale * tail

    def epsilon_bound(self, spent: Fraction, conversion_delta: Fraction | None) -> float:
        """The charge is ε itself."""
        return float(spent)

    def largest_charge(self, epsilon: Fraction, delta: Fraction) -> Fraction:
        """ε."""
        return epsilon

    def filter_deltas(self, budget_delta: Fraction) -> tuple[Fraction | None, Fraction]:
        """No conversion: all of δ_B may be charged (by partition selection)."""
        return None, budget_delta

    def budget_amount(self, epsilon: Fraction, conversion_delta: Fraction | None) -> Fraction:
        """ε_B itself."""
        return epsilon

    def epsilon_of(self, amount: Fraction, conversion_delta: Fraction | None) -> Fraction:
        """The amount is ε (exact)."""
        return amount


ZCDP: AccountingMode = _ZCDP()
BASIC: AccountingMode = _Basic()
MODES: dict[str, AccountingMode] = {m.name: m for m in (ZCDP, BASIC)}


def accounting_mode(name: str) -> AccountingMode:
    """The strategy for ``name`` ("zcdp" or "basic"); ValueError for any other name."""
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown accounting mode {name!r}") from None
