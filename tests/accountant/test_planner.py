"""calibrate(): the query alone is (ε, δ)-DP, and the cost is the mechanisms' own maps."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from accountant_plans import COUNT, SUM5, UNITS, build_plan
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsql.accountant import mechanisms as mech
from dpsql.accountant.calibration import cks20_epsilon, gaussian_rho, laplace_epsilon, rho_for_epsilon
from dpsql.accountant.planner import NoisePlan, calibrate
from dpsql.errors import InvalidParameterValue, UnsupportedQuery
from dpsql.rewriter.plan import Statistic

EPS = Fraction(1)
DELTA = Fraction(1, 10**7)


def _recomputed_cost(np_: NoisePlan) -> tuple[Fraction, Fraction]:
    """Apply each mechanism's own map to the plan's sensitivities, independently of the planner."""
    total, delta = Fraction(0), Fraction(0)
    for s in np_.stats:
        if s.from_selection:
            continue
        make = mech.make_discrete_gaussian if s.mechanism == "discrete_gaussian" else mech.make_discrete_laplace
        total += make(s.scale).map(s.l0, s.linf)
    if np_.selection is not None:
        sel = np_.selection
        make_t = mech.make_gaussian_threshold if sel.mechanism == "gaussian_threshold" else mech.make_laplace_threshold
        c, d = make_t(sel.scale, sel.threshold).map(sel.l0)
        total += c
        delta += d
    return total, delta


def test_zcdp_public_keys() -> None:
    plan = build_plan((COUNT, SUM5), max_groups=2)
    np_ = calibrate(plan, EPS, DELTA, "zcdp")
    rho_q = rho_for_epsilon(EPS, DELTA)
    assert np_.selection is None
    assert np_.cost.accounting == "zcdp" and np_.cost.delta == 0
    assert np_.cost.amount <= rho_q
    assert np_.cost.amount > rho_q * (1 - Fraction(1, 10**9))  # the budget is used, not wasted
    assert (np_.cost.amount, np_.cost.delta) == _recomputed_cost(np_)
    assert cks20_epsilon(np_.cost.amount, DELTA) <= float(EPS)
    assert np_.epsilon_bound <= float(EPS)
    count, s = np_.stat("a0"), np_.stat("a1")
    assert count.mechanism == s.mechanism == "discrete_gaussian"
    # equal weights: equal ρ shares, σ ∝ linf
    assert s.scale / count.scale == pytest.approx(5, rel=1e-9)
    assert count.cost == gaussian_rho(2, 1, count.scale)
    assert s.released_scale == Fraction(s.scale) / 4
    assert s.released_error95 == s.error95 * Fraction(1, 4)
    assert calibrate(plan, EPS, DELTA, "zcdp") == np_  # deterministic


def test_weights_split_the_budget() -> None:
    heavy = Statistic("a2", "sum", "SUM(y)", 1, weight=3)
    np_ = calibrate(build_plan((COUNT, heavy)), EPS, DELTA, "zcdp")
    assert np_.stat("a2").cost / np_.stat("a0").cost == pytest.approx(3, rel=1e-9)
    assert np_.stat("a0").scale / np_.stat("a2").scale == pytest.approx(math.sqrt(3), rel=1e-9)


def test_zcdp_partition_selection() -> None:
    plan = build_plan((COUNT, UNITS), max_groups=3, selection=True, units_column="u")
    np_ = calibrate(plan, EPS, DELTA, "zcdp")
    sel = np_.selection
    assert sel is not None and sel.mechanism == "gaussian_threshold"
    delta_sel, delta_conv = DELTA / 10, DELTA - DELTA / 10
    assert 0 < np_.cost.delta == sel.delta <= delta_sel
    assert np_.conversion_delta == delta_conv
    assert np_.cost.amount <= rho_for_epsilon(EPS, delta_conv)
    assert (np_.cost.amount, np_.cost.delta) == _recomputed_cost(np_)
    # the threshold is the smallest integer that meets δ_sel
    assert mech.make_gaussian_threshold(sel.scale, sel.threshold - 1).map(3)[1] > delta_sel
    # the units statistic reuses the selection's noisy counts and costs nothing more
    u = np_.stat("u")
    assert u.from_selection and u.cost == 0 and u.scale == sel.scale
    # selection and COUNT(*) share the budget equally (weight 1 each)
    assert sel.cost == pytest.approx(np_.stat("a0").cost, rel=1e-9)
    assert np_.units_column == "u"


def test_selection_without_released_units_still_gets_one_share() -> None:
    plan = build_plan((COUNT, UNITS), selection=True, units_column="u", release_units=False)
    np_ = calibrate(plan, EPS, DELTA, "zcdp")
    assert np_.selection is not None
    assert np_.selection.cost == pytest.approx(np_.stat("a0").cost, rel=1e-9)


def test_basic_accounting() -> None:
    plan = build_plan((COUNT, SUM5, UNITS), max_groups=2, selection=True, units_column="u")
    delta = Fraction(1, 10**6)
    np_ = calibrate(plan, EPS, delta, "basic")
    assert np_.cost.accounting == "basic"
    assert np_.cost.amount <= EPS
    assert np_.cost.delta <= delta
    assert (np_.cost.amount, np_.cost.delta) == _recomputed_cost(np_)
    count = np_.stat("a0")
    assert count.mechanism == "discrete_laplace"
    # ε/3 each for count, sum and selection; the map is on the 1e-15 grid, just below 1/3
    assert count.cost == laplace_epsilon(2, 1, count.scale)
    assert Fraction(1, 3) - Fraction(1, 10**15) <= count.cost <= Fraction(1, 3)
    assert count.scale == pytest.approx(6.0, rel=1e-12)
    assert np_.selection is not None and np_.selection.mechanism == "laplace_threshold"
    assert np_.stat("u").from_selection


def test_basic_without_selection_needs_no_delta() -> None:
    np_ = calibrate(build_plan((COUNT,)), EPS, Fraction(0), "basic")
    assert np_.cost.amount == EPS and np_.cost.delta == 0
    assert np_.stat("a0").scale == 1.0


def test_units_with_public_keys_is_noised_like_any_count() -> None:
    np_ = calibrate(build_plan((UNITS,), units_column="u", release_units=True), EPS, DELTA, "zcdp")
    assert np_.selection is None
    assert np_.stat("u").mechanism == "discrete_gaussian" and not np_.stat("u").from_selection


def test_no_statistics_costs_nothing() -> None:
    np_ = calibrate(build_plan(()), EPS, DELTA, "zcdp")
    assert np_.cost.amount == 0 and np_.cost.delta == 0 and np_.stats == ()


@pytest.mark.parametrize(
    ("eps", "delta", "acc"),
    [(Fraction(0), DELTA, "zcdp"), (Fraction(-1), DELTA, "basic"), (EPS, Fraction(0), "zcdp"), (EPS, Fraction(1), "zcdp")],
)
def test_bad_parameters(eps: Fraction, delta: Fraction, acc: str) -> None:
    with pytest.raises(InvalidParameterValue):
        calibrate(build_plan((COUNT,)), eps, delta, acc)  # type: ignore[arg-type]


def test_selection_needs_delta_in_basic_mode() -> None:
    with pytest.raises(InvalidParameterValue):
        calibrate(build_plan((COUNT, UNITS), selection=True, units_column="u"), EPS, Fraction(0), "basic")


def test_selection_needs_a_units_column() -> None:
    with pytest.raises(ValueError):
        calibrate(build_plan((COUNT,), selection=True), EPS, DELTA, "zcdp")


def test_unreachable_selection_delta_is_refused() -> None:
    with pytest.raises(UnsupportedQuery):
        calibrate(build_plan((UNITS,), selection=True, units_column="u"), EPS, Fraction(1, 10**20), "zcdp")


def test_enormous_sensitivity_is_refused() -> None:
    huge = Statistic("a9", "sum", "SUM(z)", 2**61)
    with pytest.raises(UnsupportedQuery):
        calibrate(build_plan((huge,)), Fraction(1, 1000), DELTA, "zcdp")


@settings(max_examples=40, deadline=None)
@given(
    eps=st.fractions(min_value=Fraction(1, 100), max_value=5),
    dexp=st.integers(min_value=4, max_value=10),
    l0=st.integers(1, 6),
    linfs=st.lists(st.integers(1, 10**4), min_size=1, max_size=4),
    weights=st.lists(st.integers(1, 4), min_size=4, max_size=4),
    selection=st.booleans(),
    accounting=st.sampled_from(["zcdp", "basic"]),
)
def test_cost_never_exceeds_the_query_guarantee(
    eps: Fraction, dexp: int, l0: int, linfs: list[int], weights: list[int], selection: bool, accounting: str
) -> None:
    delta = Fraction(1, 10**dexp)
    stats = tuple(Statistic(f"a{i}", "sum", f"SUM(c{i})", linf, weight=w) for i, (linf, w) in enumerate(zip(linfs, weights, strict=False)))
    if selection:
        stats = (*stats, UNITS)
    plan = build_plan(stats, max_groups=l0, selection=selection, units_column="u" if selection else None)
    np_ = calibrate(plan, eps, delta, accounting)  # type: ignore[arg-type]
    assert (np_.cost.amount, np_.cost.delta) == _recomputed_cost(np_)
    if accounting == "zcdp":
        delta_sel = delta / 10 if selection else Fraction(0)
        assert np_.cost.delta <= delta_sel
        assert Fraction(cks20_epsilon(np_.cost.amount, delta - delta_sel)) <= eps
    else:
        assert np_.cost.amount <= eps
        assert np_.cost.delta <= (delta if selection else 0)


@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
def test_threshold_search_is_the_smallest_passing_threshold_whatever_the_guess(accounting: str) -> None:
    """The galloping search returns the smallest integer threshold whose map δ ≤ the target,
    independent of its starting guess (checked against the map itself at t and t − 1)."""
    from dpsql.accountant import planner
    from dpsql.accountant.mechanisms import make_gaussian_threshold, make_laplace_threshold

    make = make_gaussian_threshold if accounting == "zcdp" else make_laplace_threshold
    for scale, l0, delta in [(1.0, 1, Fraction(1, 10**5)), (4.07, 1, Fraction(9, 10**7)), (34.25, 3, Fraction(1, 10**9)),
                             (0.53, 2, Fraction(1, 10**3)), (10.0, 1, Fraction(1, 10**5))]:
        results = set()
        for guess in (2, 3, 17, 1000, 10**6, planner._threshold_guess(accounting, scale, l0, delta)):  # type: ignore[arg-type]
            results.add(planner._threshold_for(make, scale, l0, delta, guess).threshold)
        assert len(results) == 1
        t = results.pop()
        assert make(scale, t).map(l0)[1] <= delta
        assert t == 2 or make(scale, t - 1).map(l0)[1] > delta
