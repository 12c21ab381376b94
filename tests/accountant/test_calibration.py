"""Calibration: golden CKS20 values (security.md §3), exact rounding directions, OpenDP agreement."""

from __future__ import annotations

import math
from fractions import Fraction

import opendp.prelude as dp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsql.accountant import calibration as cal
from dpsql.accountant.units import GRID, from_atto, from_pico, to_atto_down, to_atto_up, to_pico_down, to_pico_up

dp.enable_features("contrib")

# security.md §3: ρ, δ, simple, CKS20 (4 decimals as printed)
TABLE = [
    (0.01, 1e-6, 0.7534, 0.6217),
    (0.1, 1e-6, 2.4508, 2.1419),
    (0.5, 1e-6, 5.7565, 5.2215),
    (1.0, 1e-6, 8.4338, 7.7662),
    (1.0, 1e-9, 10.1046, 9.5215),
]


def _opendp_epsilon(rho: float, delta: float) -> float:
    """OpenDP's own zCDP → (ε, δ) conversion, for a Gaussian with ρ = 1/(2σ²)·1²."""
    meas = dp.m.make_gaussian(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=math.sqrt(1 / (2 * rho)))
    return dp.c.make_zCDP_to_approxDP(meas).map(1).epsilon(delta)


def test_cks20_golden_value() -> None:
    assert cal.cks20_epsilon(0.125, 1e-6) == pytest.approx(2.4190931768671953, rel=1e-9)
    assert cal.simple_epsilon(0.125, 1e-6) == pytest.approx(2.75326, abs=5e-6)


@pytest.mark.parametrize(("rho", "delta", "simple", "cks"), TABLE)
def test_cks20_table(rho: float, delta: float, simple: float, cks: float) -> None:
    assert round(cal.cks20_epsilon(rho, delta), 4) == cks
    assert round(cal.simple_epsilon(rho, delta), 4) == simple
    # the exact infimum agrees with OpenDP's conversion to 1e-9 relative
    assert cal.cks20_epsilon(rho, delta) == pytest.approx(_opendp_epsilon(rho, delta), rel=1e-9)


@pytest.mark.parametrize(("rho", "delta"), [(1e-6, 1e-6), (1e-3, 1e-7), (3.0, 1e-5), (50.0, 1e-10), (0.02, 0.05)])
def test_cks20_matches_opendp_off_table(rho: float, delta: float) -> None:
    assert cal.cks20_epsilon(rho, delta) == pytest.approx(_opendp_epsilon(rho, delta), rel=1e-9)


def test_cks20_is_an_infimum_not_a_grid_point() -> None:
    """No α on a fine grid does better than our value (to float rounding), and a coarse grid does worse."""
    rho, delta = 0.125, 1e-6
    ours = cal.cks20_epsilon(rho, delta)

    def objective(a: float) -> float:
        return a * rho + (math.log(1 / delta) + (a - 1) * math.log(1 - 1 / a) - math.log(a)) / (a - 1)

    fine = min(objective(1 + k / 10_000) for k in range(1, 200_000))
    assert ours <= fine * (1 + 1e-15)
    assert ours >= fine - 1e-6  # the grid is fine enough to be close


def test_cks20_delta_inverts_epsilon_and_matches_opendp() -> None:
    for rho, delta in [(0.125, 1e-6), (0.01, 1e-6), (1.0, 1e-9)]:
        eps = cal.cks20_epsilon(rho, delta)
        assert cal.cks20_delta(rho, eps) == pytest.approx(delta, rel=1e-6)
        meas = dp.m.make_gaussian(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=math.sqrt(1 / (2 * rho)))
        profile = dp.c.make_zCDP_to_approxDP(meas).map(1)
        for e in (0.0, 0.25, 0.5, 1.0, 2.0):
            assert cal.cks20_delta(rho, e) == pytest.approx(min(1.0, profile.delta(e)), rel=1e-9)


def test_cks20_edge_cases() -> None:
    assert cal.cks20_epsilon(0, 1e-6) == 0.0
    assert cal.cks20_delta(0, 1.0) == 0.0
    with pytest.raises(ValueError):
        cal.cks20_epsilon(0.1, 0)
    with pytest.raises(ValueError):
        cal.cks20_epsilon(-0.1, 1e-6)
    with pytest.raises(ValueError):
        cal.rho_for_epsilon(0, Fraction(1, 10**6))


@pytest.mark.parametrize(
    ("eps", "delta"),
    [(Fraction(1), Fraction(1, 10**6)), (Fraction(1, 10), Fraction(1, 10**7)), (Fraction(10), Fraction(1, 10**8))],
)
def test_rho_for_epsilon_is_conservative_and_tight(eps: Fraction, delta: Fraction) -> None:
    rho = cal.rho_for_epsilon(eps, delta)
    assert rho % GRID == 0
    assert Fraction(cal.cks20_epsilon(rho, delta)) <= eps  # conservative
    assert cal.cks20_epsilon(rho + GRID * 10**4, delta) > float(eps) * (1 - 1e-12)  # tight
    assert cal.cks20_epsilon(rho, delta) == pytest.approx(float(eps), rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    e1=st.fractions(min_value=Fraction(1, 100), max_value=20),
    e2=st.fractions(min_value=Fraction(1, 100), max_value=20),
    dexp=st.integers(min_value=3, max_value=12),
)
def test_rho_for_epsilon_monotone_and_round_trips(e1: Fraction, e2: Fraction, dexp: int) -> None:
    delta = Fraction(1, 10**dexp)
    lo, hi = sorted((e1, e2))
    r_lo, r_hi = cal.rho_for_epsilon(lo, delta), cal.rho_for_epsilon(hi, delta)
    assert r_lo <= r_hi
    assert Fraction(cal.cks20_epsilon(r_hi, delta)) <= hi
    assert cal.cks20_epsilon(r_hi, delta) == pytest.approx(float(hi), rel=1e-9)
    # a larger δ never gives less ρ
    assert cal.rho_for_epsilon(hi, delta * 10) >= r_hi


@settings(max_examples=200, deadline=None)
@given(
    l0=st.integers(1, 50),
    linf=st.integers(1, 10**6),
    sigma=st.floats(min_value=1e-3, max_value=1e9, allow_nan=False, allow_infinity=False),
)
def test_gaussian_rho_rounds_up(l0: int, linf: int, sigma: float) -> None:
    exact = Fraction(l0 * linf * linf) / (2 * Fraction(sigma) ** 2)
    rho = cal.gaussian_rho(l0, linf, sigma)
    assert exact <= rho < exact + GRID
    assert rho % GRID == 0


@settings(max_examples=200, deadline=None)
@given(
    l0=st.integers(1, 50),
    linf=st.integers(1, 10**6),
    rho=st.fractions(min_value=Fraction(1, 10**9), max_value=100),
)
def test_gaussian_sigma_is_smallest(l0: int, linf: int, rho: Fraction) -> None:
    sigma = cal.gaussian_sigma(l0, linf, rho)
    assert cal.gaussian_rho(l0, linf, sigma) <= rho
    assert cal.gaussian_rho(l0, linf, math.nextafter(sigma, 0)) > rho


@settings(max_examples=200, deadline=None)
@given(
    l0=st.integers(1, 50),
    linf=st.integers(1, 10**6),
    eps=st.fractions(min_value=Fraction(1, 10**6), max_value=100),
)
def test_laplace_scale_is_smallest_and_rounds_up(l0: int, linf: int, eps: Fraction) -> None:
    t = cal.laplace_scale(l0, linf, eps)
    e = cal.laplace_epsilon(l0, linf, t)
    assert Fraction(l0 * linf) / Fraction(t) <= e <= eps
    assert cal.laplace_epsilon(l0, linf, math.nextafter(t, 0)) > eps


@pytest.mark.parametrize(("l0", "linf", "sigma"), [(1, 1, 2.0), (4, 3, 7.5), (9, 1, 0.75), (1, 1000, 12345.678), (16, 5, 3.0)])
def test_gaussian_map_matches_opendp(l0: int, linf: int, sigma: float) -> None:
    """Where √l0·linf is an integer, OpenDP's vector map takes it as an i64 d_in: the values agree."""
    d2 = math.isqrt(l0) * linf
    assert d2 * d2 == l0 * linf * linf
    meas = dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64"), scale=sigma)
    theirs = meas.map(d2)
    ours = cal.gaussian_rho(l0, linf, sigma)
    assert float(ours) == pytest.approx(theirs, rel=1e-12)
    # never below OpenDP's beyond OpenDP's own outward float rounding (a few ulps)
    assert ours >= Fraction(theirs) * (1 - Fraction(1, 2**49))


def test_gaussian_map_matches_opendp_float_sensitivity() -> None:
    sigma = 3.3
    meas = dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="f64"), scale=sigma)
    for l0, linf in [(2, 1), (3, 7), (10, 2)]:
        assert float(cal.gaussian_rho(l0, linf, sigma)) == pytest.approx(meas.map(math.sqrt(l0) * linf), rel=1e-12)


@pytest.mark.parametrize(("l0", "linf", "scale"), [(1, 1, 1.0), (3, 2, 10.0), (2, 5000, 20000.0), (7, 3, 0.3)])
def test_laplace_map_matches_opendp(l0: int, linf: int, scale: float) -> None:
    meas = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale)
    theirs = meas.map(l0 * linf)
    ours = cal.laplace_epsilon(l0, linf, scale)
    assert float(ours) == pytest.approx(theirs, rel=1e-12)
    assert ours >= Fraction(theirs) * (1 - Fraction(1, 2**49))


def test_scale_limits() -> None:
    with pytest.raises(cal.ScaleOutOfRange):
        cal.gaussian_sigma(1, 2**60, Fraction(1, 10**6))
    with pytest.raises(cal.ScaleOutOfRange):
        cal.laplace_scale(1, 1, Fraction(1, 10**16))
    with pytest.raises(ValueError):
        cal.gaussian_rho(0, 1, 1.0)
    with pytest.raises(ValueError):
        cal.laplace_epsilon(1, 1, 0.0)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 0.5, 0.6, 1.0, 2.0, 4.53, 10.0, 37.7, 100.0, 250.0, 1000.0])
def test_discrete_gaussian_error_is_conservative(sigma: float) -> None:
    b = cal.discrete_gaussian_error(sigma)
    terms = int(60 * sigma) + 20
    w = [math.exp(-k * k / (2 * sigma * sigma)) for k in range(terms)]
    total = w[0] + 2 * math.fsum(w[1:])
    inside = (w[0] + 2 * math.fsum(w[1 : b + 1])) / total
    assert inside >= 0.95
    if sigma <= 100 and b > 0:  # exact below 100: one less would not do
        assert (w[0] + 2 * math.fsum(w[1:b])) / total < 0.95 + 1e-9


@pytest.mark.parametrize("scale", [0.1, 0.5, 1.0, 3.3, 8.0, 100.0, 20000.0])
def test_discrete_laplace_error_is_smallest(scale: float) -> None:
    b = cal.discrete_laplace_error(scale)
    q = math.exp(-1 / scale)

    def outside(b: int) -> float:
        return 2 * q ** (b + 1) / (1 + q)

    assert outside(b) <= 0.05
    assert b == 0 or outside(b - 1) > 0.05 - 1e-9


def test_unit_conversions_round_safely() -> None:
    third = Fraction(1, 3)
    assert to_pico_up(third) == 333_333_333_334
    assert to_pico_down(third) == 333_333_333_333
    assert to_atto_up(Fraction(1, 10**7)) == 10**11 == to_atto_down(Fraction(1, 10**7))
    assert to_atto_up(Fraction(1, 3 * 10**18)) == 1
    assert to_atto_down(Fraction(1, 3 * 10**18)) == 0
    assert from_pico(to_pico_up(third)) >= third >= from_pico(to_pico_down(third))
    assert from_atto(5) == Fraction(5, 10**18)
    with pytest.raises(ValueError):
        to_pico_up(Fraction(-1))
