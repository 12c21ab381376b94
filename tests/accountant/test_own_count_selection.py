"""Partition selection on COUNT(*)'s own noisy value (construction (b)) versus a separate
distinct-unit threshold (construction (a)): the planner's choice, its cost, OpenDP's maps, and a
T4-style audit of the own-value threshold.

The audit's false-failure probability is ≤ 1e-6 per test (stated there); the planner tests are
deterministic.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import numpy as np
import opendp.prelude as dp
import pytest
from accountant_plans import SUM5, UNITS, build_plan
from scipy.stats import binom

from dpsql.accountant import mechanisms as mech
from dpsql.accountant import noise
from dpsql.accountant.accounting import accounting_mode
from dpsql.accountant.calibration import ceil_to_grid, rho_for_epsilon, sensitivity_norms
from dpsql.accountant.planner import NoisePlan, _count_selection, calibrate
from dpsql.rewriter.plan import Statistic

EPS = Fraction(1)
DELTA = Fraction(1, 10**7)
ALPHA = 1e-6


def star(max_rows: int, k: int | None) -> Statistic:
    """COUNT(*) as the rewriter builds it: L∞ = max_rows, L1 = k under the row cap."""
    return Statistic("a0", "count", "COUNT(*)", max_rows, l1=k, counts_rows=True)


def selection_plan(stats: tuple[Statistic, ...], *, max_groups: int, k: int | None, release_units: bool = False):
    """A partition-selection plan with the distinct-unit column (always in the bounded SQL)."""
    plan = build_plan((*stats, UNITS), max_groups=max_groups, selection=True, units_column="u", release_units=release_units)
    return replace(plan, max_contributions=k)


def recomputed_cost(np_: NoisePlan) -> tuple[Fraction, Fraction]:
    """Each mechanism's own map at the plan's sensitivities, rebuilt independently of the planner."""
    total, delta = Fraction(0), Fraction(0)
    for s in np_.stats:
        if s.from_selection:
            continue
        make = mech.make_discrete_gaussian if s.mechanism == "discrete_gaussian" else mech.make_discrete_laplace
        total += make(s.scale).map(s.l0, s.linf, s.l1)
    sel = np_.selection
    if sel is not None:
        make_t = mech.make_gaussian_threshold if sel.mechanism == "gaussian_threshold" else mech.make_laplace_threshold
        c, d = make_t(sel.scale, sel.threshold).map(sel.l0, sel.linf, sel.lp)
        total += c
        delta += d
    return total, delta


# ---------------------------------------------------------------------------------------------
# the choice


def test_demo_policy_zcdp_keeps_the_unit_threshold() -> None:
    """max_rows 40, max_groups 48, k 60 under zcdp: (b) would need ≈ 1900 rows against ≈ 400 units
    (groups of ~1.5 rows per unit, as on the demo data, would be lost): (a) is chosen."""
    plan = selection_plan((star(40, 60),), max_groups=48, k=60)
    np_ = calibrate(plan, EPS, DELTA, "zcdp")
    sel, alt = np_.selection, np_.selection_alternative
    assert sel is not None and alt is not None
    assert sel.construction == "units" and alt.construction == "count"
    assert alt.release_point > sel.release_point  # the reason
    assert not np_.stat("a0").from_selection and np_.stat("u").from_selection
    assert (np_.cost.amount, np_.cost.delta) == recomputed_cost(np_)


def test_demo_policy_basic_thresholds_the_count_itself() -> None:
    """Under basic the unit threshold pays Δ₁ = 48 for the selection alone while COUNT(*) has
    Δ₁ = k = 60: (b) has a lower threshold (rows ≤ units) and half the COUNT's noise scale."""
    plan = selection_plan((star(40, 60),), max_groups=48, k=60)
    np_ = calibrate(plan, EPS, DELTA, "basic")
    sel, alt = np_.selection, np_.selection_alternative
    assert sel is not None and alt is not None
    assert sel.construction == "count" and sel.column == "a0" and alt.construction == "units"
    assert sel.release_point <= alt.release_point
    assert (sel.linf, sel.lp, sel.l0) == (40, 60, 48)
    count = np_.stat("a0")
    assert count.from_selection and count.cost == 0 and count.scale == sel.scale
    assert count.mechanism == "laplace_threshold"
    # all of ε on the count: scale Δ₁/ε = 60 (a: 60/(ε/2) = 120 for the count, plus the selection)
    assert sel.scale == pytest.approx(60.0, rel=1e-12)
    assert "u" not in {s.column for s in np_.stats}  # the unit count is neither noised nor released
    assert np_.cost.amount <= EPS and np_.cost.delta <= DELTA
    assert (np_.cost.amount, np_.cost.delta) == recomputed_cost(np_)


@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
def test_row_cap_of_one_thresholds_the_count_in_both_modes(accounting: str) -> None:
    """k = 1: COUNT(*) has L∞ = 1 and L0 = 1 like the unit count, so (b) has the same kind of
    threshold with the whole budget: variance ratio 1/2 (zcdp: ρ doubles) or 1/4 (basic: ε doubles)."""
    plan = selection_plan((star(5, 1),), max_groups=3, k=1)
    np_ = calibrate(plan, EPS, DELTA, accounting)  # type: ignore[arg-type]
    sel, alt = np_.selection, np_.selection_alternative
    assert sel is not None and alt is not None and sel.construction == "count"
    assert (sel.linf, sel.lp, sel.l0) == (1, 1, 1)
    assert sel.threshold <= alt.threshold
    a_count = accounting_mode(accounting).additive(1, 5, budget_share(accounting, Fraction(1, 2)), 1)
    ratio = (sel.scale / a_count.scale) ** 2
    assert ratio == pytest.approx(0.5 if accounting == "zcdp" else 0.25, rel=1e-6)
    assert (np_.cost.amount, np_.cost.delta) == recomputed_cost(np_)
    assert calibrate(plan, EPS, DELTA, accounting) == np_  # deterministic  # type: ignore[arg-type]


def budget_share(accounting: str, part: Fraction) -> Fraction:
    """``part`` of the query's mechanism budget at (EPS, DELTA) with selection."""
    qb = accounting_mode(accounting).query_budget(EPS, DELTA, True)
    return qb.amount * part


@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
def test_large_max_rows_without_a_cap_keeps_the_unit_threshold(accounting: str) -> None:
    """max_rows 5, no cap: τ in rows is ≈ 5× τ in units (the measured pitfall) — (a) in both modes."""
    np_ = calibrate(selection_plan((star(5, None),), max_groups=3, k=None), EPS, DELTA, accounting)  # type: ignore[arg-type]
    assert np_.selection is not None and np_.selection.construction == "units"
    assert np_.selection_alternative is not None and np_.selection_alternative.release_point > np_.selection.release_point


@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
def test_released_unit_count_or_no_row_count_keeps_the_unit_threshold(accounting: str) -> None:
    # COUNT(DISTINCT unit) released: (a)'s threshold releases it; (b) would need to noise it again
    np_ = calibrate(selection_plan((star(1, 1),), max_groups=1, k=1, release_units=True), EPS, DELTA, accounting)  # type: ignore[arg-type]
    assert np_.selection is not None and np_.selection.construction == "units" and np_.selection_alternative is None
    # COUNT(x) (may count fewer rows than units: NULLs, FILTER) and SUM are never thresholded
    count_x = Statistic("a0", "count", "COUNT(x)", 1, l1=1)
    np_ = calibrate(selection_plan((count_x, SUM5), max_groups=1, k=1), EPS, DELTA, accounting)  # type: ignore[arg-type]
    assert np_.selection is not None and np_.selection.construction == "units" and np_.selection_alternative is None


@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
def test_other_statistics_keep_their_share(accounting: str) -> None:
    """Under (b) SUM keeps exactly the noise it has under (a); COUNT(*) takes its share plus the
    selection's, and the charge is the sum of the maps, within the query's budget."""
    plan = selection_plan((star(5, 1), replace(SUM5, l1=5)), max_groups=2, k=1)
    np_ = calibrate(plan, EPS, DELTA, accounting)  # type: ignore[arg-type]
    assert np_.selection is not None and np_.selection.construction == "count"
    qb = accounting_mode(accounting).query_budget(EPS, DELTA, True)
    s = np_.stat("a1")
    assert s.scale == accounting_mode(accounting).additive(1, 5, qb.amount / 3, 5).scale
    assert np_.selection.cost <= qb.amount * 2 / 3
    assert np_.cost.amount == s.cost + np_.selection.cost <= qb.amount
    assert np_.cost.delta == np_.selection.delta <= qb.selection_delta
    assert (np_.cost.amount, np_.cost.delta) == recomputed_cost(np_)
    if accounting == "zcdp":
        assert np_.epsilon_bound <= float(EPS)


@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
@pytest.mark.parametrize(("max_rows", "k", "l0"), [(40, 60, 48), (5, None, 3), (3, 2, 4), (1, 1, 1)])
def test_own_count_map_is_opendps(accounting: str, max_rows: int, k: int | None, l0: int) -> None:
    """The (b) measurement's (cost, δ) is OpenDP's threshold map at d_in (L0, ‖Δ‖, L∞) evaluated
    directly (δ at τ − 1, opendp#2922), its threshold the smallest meeting δ_sel, and its norm the
    tight one: ⌈√Δ₂²⌉ (Gaussian) or Δ₁ (Laplace) from sensitivity_norms."""
    mode = accounting_mode(accounting)
    qb = mode.query_budget(EPS, DELTA, True)
    l0s = min(l0, k) if k is not None else l0
    sel = _count_selection(accounting, mode, star(max_rows, k), l0s, k, qb.amount, qb.selection_delta)  # type: ignore[arg-type]
    linf = min(max_rows, k) if k is not None else max_rows
    l1, l2sq = sensitivity_norms(l0s, linf, k)
    lp = l1 if accounting == "basic" else math.isqrt(l2sq - 1) + 1
    assert (sel.l0, sel.linf, sel.lp) == (l0s, linf, lp)
    domain = dp.map_domain(dp.atom_domain(T="i64"), dp.atom_domain(T="i64"))
    if accounting == "zcdp":
        metric = dp.l02inf_distance(dp.absolute_distance(T="i64"))
        make = dp.m.make_gaussian_threshold
    else:
        metric = dp.l01inf_distance(dp.absolute_distance(T="i64"))
        make = dp.m.make_laplace_threshold
    at = make(domain, metric, scale=sel.scale, threshold=sel.threshold)
    shadow = make(domain, metric, scale=sel.scale, threshold=sel.threshold - 1)
    loss, _ = at.map((l0s, lp, linf))
    _, delta = shadow.map((l0s, lp, linf))
    assert sel.cost == ceil_to_grid(Fraction(loss)) and sel.delta == Fraction(delta)
    assert sel.cost <= qb.amount and sel.delta <= qb.selection_delta
    lower = make(domain, metric, scale=sel.scale, threshold=sel.threshold - 2)
    if sel.threshold - 2 >= linf:
        assert lower.map((l0s, lp, linf))[1] > qb.selection_delta  # smallest passing threshold
    if accounting == "zcdp":  # OpenDP tightens the ℓ2 norm to linf·√l0 when that is smaller
        assert float(loss) == pytest.approx(min(lp * lp, l0s * linf * linf) / (2 * sel.scale**2), rel=1e-12)
        assert sel.cost <= rho_for_epsilon(EPS, DELTA)


def test_threshold_below_linf_is_refused() -> None:
    with pytest.raises(ValueError):
        mech.make_laplace_threshold(10.0, 40).map(2, 40, 80)  # shadow threshold 39 < L∞ 40


# ---------------------------------------------------------------------------------------------
# T4 for the own-value threshold: a group held by one unit at its heaviest is rarely released

N = 100_000


def _exact_release(accounting: str, scale: float, tau: int, count: int) -> float:
    """P[count + Z ≥ τ] for the discrete Gaussian (σ) or discrete Laplace (t) noise Z (pmf sum)."""
    ks = np.arange(-int(60 * scale) - 10, int(60 * scale) + 11)
    w = np.exp(-(ks.astype(float) ** 2) / (2 * scale * scale)) if accounting == "zcdp" else np.exp(-np.abs(ks) / scale)
    return float(w[ks >= tau - count].sum() / w.sum())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("accounting", "max_rows", "k", "l0", "eps", "delta"),
    [
        ("basic", 40, 60, 48, 4, Fraction(5, 100)),  # the demo's bounds; δ₁ ≈ 1e-3
        ("zcdp", 40, 60, 48, 4, Fraction(1, 2)),  # δ_sel = 0.05 over 48 groups: δ₁ ≈ 1e-3
        ("zcdp", 5, None, 3, 4, Fraction(1, 100)),
        ("zcdp", 5, 1, 3, 1, Fraction(1, 100)),  # L∞ = 1: no control (it is the unit threshold's map)
    ],
)
def test_t4_own_count_threshold(accounting: str, max_rows: int, k: int | None, l0: int, eps: int, delta: Fraction) -> None:
    """N = 10^5 groups, each held by ONE unit contributing its maximum (COUNT(*) = L∞), in one
    threshold call: the number released must stay within the binomial 1−1e-6 quantile of N·δ₁,
    δ₁ = the map's δ for one group (≥ the true per-group release probability; the charged δ is
    1 − (1 − δ₁)^L0). False failure ≤ 1e-6. Negative control: the same scale with the threshold
    calibrated as if L∞ were 1 (a map ignoring max_rows) releases ≥ 3× as often (checked exactly)
    and is caught (the test checks that its count falls below the bound with probability ≤ 1e-6)."""
    mode = accounting_mode(accounting)
    qb = mode.query_budget(Fraction(eps), delta, True)
    l0s = min(l0, k) if k is not None else l0
    sel = _count_selection(accounting, mode, star(max_rows, k), l0s, k, qb.amount, qb.selection_delta)  # type: ignore[arg-type]
    linf = sel.linf
    d1 = float(sel.measurement.map(1, linf, sel.lp)[1])
    assert d1 >= _exact_release(accounting, sel.scale, sel.threshold, linf)
    assert float(sel.delta) == pytest.approx(1 - (1 - d1) ** l0s, rel=1e-9)
    plan_noise = NoisePlan(accounting, (), sel, None, Fraction(eps), delta, None, None, 0.0)  # type: ignore[arg-type]
    out = noise.release(plan_noise, {"a0": [linf] * N})
    bound = int(binom.isf(ALPHA, N, d1))
    assert len(out.kept) <= bound, (len(out.kept), bound)
    # big groups are released
    big = sel.threshold + 20 * (sel.error95 + 1)
    assert len(noise.release(plan_noise, {"a0": [big] * 100}).kept) == 100
    # negative control: thresholds computed for L∞ = 1 at the same scale
    make = mech.make_gaussian_threshold if accounting == "zcdp" else mech.make_laplace_threshold
    tau = sel.threshold
    while tau > 2 and make(sel.scale, tau - 1).map(1, 1, 1)[1] <= d1:
        tau -= 1
    if linf > 1:
        p_broken = _exact_release(accounting, sel.scale, tau, linf)
        assert p_broken >= 3 * d1 and binom.cdf(bound, N, p_broken) <= ALPHA  # the control's own power
        broken = make(sel.scale, tau).release(dict.fromkeys(range(N), linf))
        assert len(broken) > bound, (len(broken), bound)


def test_release_uses_the_count_column() -> None:
    """Under (b) the noise step thresholds exact COUNT(*) values, releases them as the count, and
    never reads the distinct-unit column."""
    plan = selection_plan((star(5, 1),), max_groups=3, k=1)
    np_ = calibrate(plan, Fraction(200), DELTA, "basic")
    assert np_.selection is not None and np_.selection.construction == "count"
    out = noise.release(np_, {"a0": [0, 1000, 5000]}, units=[10**6, 10**6, 10**6])
    assert out.kept == (1, 2)
    assert abs(out.values["a0"][0] - 1000) < 200 and abs(out.values["a0"][1] - 5000) < 200




@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
def test_the_preference_forces_either_construction_with_the_same_guarantee(accounting: str) -> None:
    """dp.partition_selection: 'units' never thresholds the COUNT, 'count' does whenever the plan has a
    candidate (here against the rule, which keeps (a) for the demo bounds under zcdp); each charges
    exactly its own maps, within the query's budget; an unknown preference is a programming error."""
    plan = selection_plan((star(40, 60),), max_groups=48, k=60)
    auto = calibrate(plan, EPS, DELTA, accounting)  # type: ignore[arg-type]
    units = calibrate(plan, EPS, DELTA, accounting, "units")  # type: ignore[arg-type]
    count = calibrate(plan, EPS, DELTA, accounting, "count")  # type: ignore[arg-type]
    assert units.selection is not None and units.selection.construction == "units" and units.selection_alternative is None
    assert count.selection is not None and count.selection.construction == "count"
    assert count.stat("a0").from_selection and count.stat("a0").scale < units.stat("a0").scale
    for n in (auto, units, count):
        assert (n.cost.amount, n.cost.delta) == recomputed_cost(n)
        assert n.cost.amount <= auto.cost.amount * (1 + Fraction(1, 100)) + Fraction(1, 10**12)
    if accounting == "zcdp":
        assert auto.selection is not None and auto.selection.construction == "units"
    with pytest.raises(ValueError):
        calibrate(plan, EPS, DELTA, accounting, "sometimes")  # type: ignore[arg-type]
