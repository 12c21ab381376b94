"""The DP quantile mechanism (accountant/quantiles.py): scores, sensitivity, privacy maps and
calibration cross-checked against OpenDP, the exact output law's privacy, and a distribution audit
(T2) of the real sampler with an under-noised negative control."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import opendp.prelude as dp
import pytest
from scipy.stats import chi2, ncx2

from dpsql.accountant import quantiles as Q

dp.enable_features("contrib")

_SPACE = dp.vector_domain(dp.atom_domain(T="i64")), dp.symmetric_distance()


def _histogram(values: list[int], k: int) -> list[int]:
    h = [0] * k
    for v in values:
        h[v] += 1
    return h


# ---------------------------------------------------------------------------------------------
# α, grid


@pytest.mark.parametrize(
    ("q", "expect"),
    [("0.5", Fraction(1, 2)), (0.95, Fraction(19, 20)), ("1", Fraction(1)), (0, Fraction(0)), ("0.123456", Fraction(123456, 10**6))],
)
def test_alpha_is_exact(q: object, expect: Fraction) -> None:
    assert Q.alpha_fraction(q) == expect


@pytest.mark.parametrize("q", ["1.5", "-0.1", "0.1234567", float("nan"), True, "abc"])
def test_alpha_out_of_range_is_refused(q: object) -> None:
    with pytest.raises(ValueError):
        Q.alpha_fraction(q)


def test_grid_from_bounds() -> None:
    g = Q.QuantileGrid.from_bounds(0, 5000.0, integral=False)
    assert (g.lower, g.step, g.size, g.upper) == (0, 20, 251, 5000)
    g = Q.QuantileGrid.from_bounds(0, 120, integral=True)
    assert (g.step, g.size) == (1, 121)
    g = Q.QuantileGrid.from_bounds(Fraction(1, 2), Fraction(3, 4), integral=False)
    assert g.step == Fraction(1, 1000) and g.upper <= Fraction(3, 4) and g.size <= Q.DEFAULT_CANDIDATES + 1
    g = Q.QuantileGrid.from_bounds(7, 7, integral=True)
    assert g.candidates() == [7]
    for lo, hi, integral in ((0, 10**9, True), (-3, 17, False), (0, 2191, True)):
        g = Q.QuantileGrid.from_bounds(lo, hi, integral=integral)
        assert g.lower == lo and g.upper <= hi and hi - g.upper < g.step and g.size <= Q.DEFAULT_CANDIDATES + 1
        assert not integral or g.step.denominator == 1
    with pytest.raises(ValueError):
        Q.QuantileGrid.from_bounds(5, 1, integral=True)


# ---------------------------------------------------------------------------------------------
# scores and sensitivity, against OpenDP


@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
def test_scores_match_opendp(q: float) -> None:
    """Our scores from the histogram are OpenDP's make_quantile_score_candidates scores on the raw
    values, up to OpenDP's own α denominator (10^4 for non-dyadic α)."""
    rng = random.Random(7)
    k = 12
    a = Q.alpha_fraction(q)
    t = dp.t.make_quantile_score_candidates(*_SPACE, candidates=list(range(k)), alpha=q)
    for n in (0, 1, 5, 50, 333):
        values = [rng.randrange(k) for _ in range(n)]
        ours = Q.quantile_scores(_histogram(values, k), a)
        theirs = t(values)
        ratio = Fraction(max(theirs), max(ours)) if max(ours) else Fraction(1)
        assert [Fraction(x) * ratio for x in ours] == theirs
        # the stability map, in the same units
        for m in (1, 3):
            assert Fraction(t.map(m)) == Q.score_sensitivity(a, m) * (ratio if max(ours) else Fraction(t.map(1), Q.score_sensitivity(a, 1)))


@pytest.mark.parametrize("q", ["0", "0.3", "0.5", "0.95", "1"])
@pytest.mark.parametrize("m", [1, 2, 4])
def test_sensitivity_holds_when_a_unit_leaves(q: str, m: int) -> None:
    """Brute force: removing any ≤ m values from a group moves every score by ≤ Δ∞."""
    a = Q.alpha_fraction(q)
    delta = Q.score_sensitivity(a, m)
    rng = random.Random(11)
    k = 9
    worst = 0
    for _ in range(400):
        values = [rng.randrange(k) for _ in range(rng.randrange(0, 40))]
        removed = [rng.randrange(k) for _ in range(rng.randrange(1, m + 1))]
        s1 = Q.quantile_scores(_histogram(values + removed, k), a)
        s0 = Q.quantile_scores(_histogram(values, k), a)
        worst = max(worst, max(abs(x - y) for x, y in zip(s1, s0, strict=True)))
    assert worst <= delta
    assert worst == delta  # and the bound is attained: it is tight


def test_scores_are_capped() -> None:
    a = Fraction(1, 10**6)
    s = Q.quantile_scores([0, 10**18, 0], a)
    assert max(s) <= Q.SCORE_CAP


# ---------------------------------------------------------------------------------------------
# privacy maps and calibration: golden values, cross-checked against OpenDP


def test_golden_maps() -> None:
    """α = 3/4, one row per unit: Δ∞ = 3 score units (den = 4). At s = 4 (one rank of noise):
    zcdp ρ = Δ²/(2s²) = 9/32 = 0.28125 (OpenDP's own test value for make_private_quantile at scale
    1 in rank units), basic ε = 2Δ/s = 1.5."""
    a = Q.alpha_fraction("0.75")
    d = Q.score_sensitivity(a, 1)
    assert d == 3
    assert Q.make_quantile_mechanism("zcdp", 4.0, d, 4).map(1) == Fraction(9, 32)
    assert Q.make_quantile_mechanism("basic", 4.0, d, 4).map(1) == Fraction(3, 2)
    assert Q.make_quantile_mechanism("zcdp", 4.0, d, 4).map(3) == Fraction(27, 32)  # L0 groups compose
    assert Q.make_quantile_mechanism("basic", 4.0, 2 * d, 4).map(2) == 6


@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
@pytest.mark.parametrize(("q", "m"), [("0.5", 1), ("0.75", 3), ("0.9", 2), ("0", 1), ("1", 5)])
def test_map_matches_opendp_private_quantile(accounting: str, q: str, m: int) -> None:
    """Our map at L0 = 1 equals OpenDP's make_private_quantile map at d_in = max_rows (OpenDP's
    ``scale`` is in rank units: our score scale divided by α's denominator)."""
    a = Q.alpha_fraction(q)
    d = Q.score_sensitivity(a, m)
    measure = dp.zero_concentrated_divergence() if accounting == "zcdp" else dp.max_divergence()
    for rank_scale in (0.5, 1.0, 7.0):
        s = rank_scale * a.denominator
        ours = Q.make_quantile_mechanism(accounting, s, d, a.denominator).map(1)  # type: ignore[arg-type]
        theirs = dp.m.make_private_quantile(
            *_SPACE, measure, candidates=[0, 1, 2], alpha=float(a), scale=rank_scale
        ).map(m)
        assert abs(float(ours) - theirs) <= 1e-12 * theirs
        assert float(ours) >= theirs * (1 - 1e-15)


@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
@pytest.mark.parametrize("loss", [Fraction(1, 100), Fraction(1, 2), Fraction(3)])
def test_calibration_is_tight(accounting: str, loss: Fraction) -> None:
    a = Q.alpha_fraction("0.5")
    d = Q.score_sensitivity(a, 2)
    m = Q.calibrate_quantile(accounting, loss, 3, d, a.denominator)  # type: ignore[arg-type]
    assert m.map(3) <= loss
    below = Q.make_quantile_mechanism(accounting, m.scale * (1 - 1e-9), d, a.denominator)  # type: ignore[arg-type]
    assert below.map(3) > loss


def test_rank_error() -> None:
    """zcdp, median, one row per unit, ρ = 1/2, one group: s = Δ/√(2ρ) = 1 score unit = 1/2 rank;
    r = s·ln(k/0.05)/den."""
    m = Q.calibrate_quantile("zcdp", Fraction(1, 2), 1, 1, 2)
    assert abs(m.scale - 1.0) < 1e-12
    assert m.rank_error(100) == Fraction(math.ceil(1.0 * math.log(100 / 0.05)), 2)


# ---------------------------------------------------------------------------------------------
# the exact output law is as private as charged (deterministic check of the derivation)


@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
def test_exact_law_meets_the_charge_on_neighbours(accounting: str) -> None:
    """For the ideal output law, max_i |ln P(i|D) − ln P(i|D')| ≤ ε_g on every tried neighbour pair
    (D' = D minus one unit's ≤ m values), where ε_g = map(1) (basic) or √(8ρ_g) (zcdp: the
    bounded-range ε whose ε²/8 is charged). Negative control: the scale of a mechanism calibrated
    for m = 1 while units keep m = 3 values violates it."""
    rng = random.Random(5)
    k, m = 8, 3
    a = Q.alpha_fraction("0.3")
    d = Q.score_sensitivity(a, m)
    mech = Q.calibrate_quantile(accounting, Fraction(1), 1, d, a.denominator)  # type: ignore[arg-type]
    bad = Q.calibrate_quantile(accounting, Fraction(1), 1, Q.score_sensitivity(a, 1), a.denominator)  # type: ignore[arg-type]
    loss = float(mech.map(1))
    eps_g = loss if accounting == "basic" else math.sqrt(8 * loss)
    worst = worst_bad = 0.0
    for _ in range(300):
        values = [rng.randrange(k) for _ in range(rng.randrange(0, 30))]
        removed = [rng.choice((0, k - 1, rng.randrange(k))) for _ in range(m)]
        h1, h0 = _histogram(values + removed, k), _histogram(values, k)
        for s, acc in ((mech.scale, "w"), (bad.scale, "b")):
            p1 = Q.exact_distribution(Q.quantile_scores(h1, a), s, accounting)  # type: ignore[arg-type]
            p0 = Q.exact_distribution(Q.quantile_scores(h0, a), s, accounting)  # type: ignore[arg-type]
            r = max(abs(math.log(x) - math.log(y)) for x, y in zip(p1, p0, strict=True) if x > 0 and y > 0)
            if acc == "w":
                worst = max(worst, r)
            else:
                worst_bad = max(worst_bad, r)
    assert worst <= eps_g * (1 + 1e-9)
    assert worst_bad > eps_g


# ---------------------------------------------------------------------------------------------
# T2: distribution audit of the real sampler against its exact output law


N_AUDIT = 30_000
ALPHA = 1e-6
_HIST = [3, 9, 14, 6, 2, 1]  # 35 values on 6 candidates


def _chi2_stat(counts: list[int], probs: list[float]) -> float:
    n = sum(counts)
    return sum((c - n * p) ** 2 / (n * p) for c, p in zip(counts, probs, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
def test_t2_sampler_follows_its_exact_law(accounting: str) -> None:
    """N = 3·10^4 releases of the median of one histogram through QuantileMechanism.release; Pearson's
    χ² against the exact law must stay below its 1 − 1e-6 quantile (false failure ≤ 1e-6; every
    expected cell count is > 100, so the χ² approximation holds).

    Negative control: the same test on a mechanism with half the scale (twice the true privacy
    loss — what a sensitivity off by ×2 would do) must reject. Its power is computed, not
    measured: the non-central χ² with λ = N·Σ(p'−p)²/p stays above the critical value with
    probability ≥ 1 − 1e-6 (asserted below), so the control fails falsely with probability ≤ 1e-6."""
    a = Q.alpha_fraction("0.5")
    d = Q.score_sensitivity(a, 1)
    loss = Fraction(1, 200) if accounting == "zcdp" else Fraction(1, 5)  # every cell's p ≥ 0.019
    mech = Q.calibrate_quantile(accounting, loss, 1, d, a.denominator)  # type: ignore[arg-type]
    scores = Q.quantile_scores(_HIST, a)
    k = len(_HIST)
    probs = Q.exact_distribution(scores, mech.scale, accounting)  # type: ignore[arg-type]
    assert min(probs) * N_AUDIT > 100
    crit = float(chi2.isf(ALPHA, k - 1))

    counts = [0] * k
    for _ in range(N_AUDIT):
        counts[mech.release(_HIST, a)] += 1
    stat = _chi2_stat(counts, probs)
    assert stat < crit, (counts, probs, stat, crit)

    under = Q.make_quantile_mechanism(accounting, mech.scale / 2, d, a.denominator)  # type: ignore[arg-type]
    p_under = Q.exact_distribution(scores, under.scale, accounting)  # type: ignore[arg-type]
    lam = N_AUDIT * sum((x - p) ** 2 / p for x, p in zip(p_under, probs, strict=True))
    assert float(ncx2.cdf(crit, k - 1, lam)) <= ALPHA, lam
    counts = [0] * k
    for _ in range(N_AUDIT):
        counts[under.release(_HIST, a)] += 1
    assert _chi2_stat(counts, probs) >= crit, counts


def test_two_mechanisms_are_not_seeded_alike() -> None:
    """Draws come from the CSPRNG: two mechanisms on flat scores do not repeat each other's
    sequence (they would agree on 40 uniform draws over 50 candidates with probability 50^-40)."""
    a = Fraction(1, 2)
    m1 = Q.make_quantile_mechanism("zcdp", 1.0, 1, 2)
    m2 = Q.make_quantile_mechanism("zcdp", 1.0, 1, 2)
    flat = [0] * 50
    assert [m1.select(flat) for _ in range(40)] != [m2.select(flat) for _ in range(40)]
    assert 0 <= m1.release([0] * 50, a) < 50


# ---------------------------------------------------------------------------------------------
# MIN/MAX: order-statistic scores


def test_order_scores_target_the_rank() -> None:
    h = [0, 0, 2, 1, 0, 3, 0]  # values 2, 2, 3, 5, 5, 5
    assert Q.order_scores(h, 1, from_top=False) == [1, 1, 0, 2, 3, 3, 6]
    assert Q.order_scores(h, 2, from_top=True) == [5, 5, 3, 2, 2, 0, 2]
    assert Q.order_scores([0, 0, 0], 3, from_top=False) == [3, 3, 3]  # an empty group: flat
    with pytest.raises(ValueError):
        Q.order_scores(h, 0, from_top=False)


@pytest.mark.parametrize("from_top", [False, True])
@pytest.mark.parametrize("m", [1, 3])
def test_order_sensitivity_holds_and_is_attained(from_top: bool, m: int) -> None:
    rng = random.Random(3)
    k, worst = 8, 0
    for _ in range(500):
        values = [rng.randrange(k) for _ in range(rng.randrange(0, 20))]
        removed = [rng.randrange(k) for _ in range(rng.randrange(1, m + 1))]
        r = rng.randrange(1, 6)
        s1 = Q.order_scores(_histogram(values + removed, k), r, from_top=from_top)
        s0 = Q.order_scores(_histogram(values, k), r, from_top=from_top)
        worst = max(worst, max(abs(x - y) for x, y in zip(s1, s0, strict=True)))
    assert worst == Q.order_sensitivity(m)


def test_extreme_rank_is_the_rank_error() -> None:
    mech = Q.calibrate_quantile("zcdp", Fraction(1, 2), 1, Q.order_sensitivity(1), 1)
    r = Q.extreme_rank(mech, 101)
    assert r == math.ceil(mech.scale * math.log(101 / 0.05)) and r >= 1
    # the estimate of the minimum rarely falls below it: P(score ≥ r) ≤ k·e^{−r/s} ≤ 0.05
    h = [0] * 50 + [5] * 51
    probs = Q.exact_distribution(Q.order_scores(h, r, from_top=False), mech.scale, "zcdp")
    assert sum(probs[:50]) <= 0.05
