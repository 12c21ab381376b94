"""Probes cost budget (issue 9, item 5): per-query floors on ε and δ, refused with 22023 and the
limit in the hint, for free; and the smallest charge a query can then carry (docs/privacy.md)."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pytest
from engine_lib import Harness

from dpsql.accountant.calibration import rho_for_epsilon
from dpsql.errors import DPSQLError


@pytest.mark.parametrize(("setting", "value", "limit"), [
    ("dp.epsilon", "0.001", "min_epsilon_per_query (0.01)"),
    ("dp.epsilon", "1e-300", "min_epsilon_per_query (0.01)"),
    ("dp.epsilon", "0.00999999", "min_epsilon_per_query (0.01)"),
    ("dp.delta", "1e-13", "min_delta_per_query (1e-12)"),
    ("dp.delta", "1e-300", "min_delta_per_query (1e-12)"),
])  # fmt: skip
def test_below_the_floor_is_refused_with_22023(make_harness: Callable[..., Harness], setting: str, value: str, limit: str) -> None:
    h = make_harness()
    session = h.engine.session("alice")
    before = session.execute(f"SHOW {setting}").rows
    with pytest.raises(DPSQLError) as refused:
        session.execute(f"SET {setting} = {value}")
    err = refused.value
    assert err.sqlstate == "22023"
    assert f"is below the policy's {limit}" in err.message
    floor = limit.split("(")[1].rstrip(")")
    assert err.hint is not None and f"SET {setting} to at least {floor}" in err.hint
    assert session.execute(f"SHOW {setting}").rows == before
    session.execute("SELECT COUNT(*) FROM visits")  # the session still works, at its previous settings
    assert [e.kind for e in h.recorder.events].count("charge") == 1


def test_the_floor_itself_is_accepted_and_costs_the_documented_minimum(make_harness: Callable[..., Harness]) -> None:
    """At (ε, δ) = (0.01, 1e-12), the smallest a default policy allows, a COUNT is charged
    ρ ≥ rho_for_epsilon(0.01, 1e-12) ≈ 1.358e-6 minus calibration slack, never the ≈1e-14 that
    `SET dp.epsilon = 1e-300` cost before; docs/privacy.md quotes these numbers."""
    h = make_harness()
    session = h.engine.session("alice")
    session.execute("SET dp.epsilon = 0.01")
    session.execute("SET dp.delta = 1e-12")
    _, noise = session.plan("SELECT COUNT(*) FROM visits")
    assert noise is not None
    target = rho_for_epsilon(Fraction(1, 100), Fraction(1, 10**12))
    assert 1.357e-6 < float(target) < 1.359e-6
    assert target * Fraction(999, 1000) <= noise.cost.amount <= target
    # partition selection gives 10% of δ to the threshold: ρ_q = rho_for_epsilon(0.01, 0.9e-12) ≈ 1.3505e-6
    assert 1.350e-6 < float(rho_for_epsilon(Fraction(1, 100), Fraction(9, 10**13))) < 1.351e-6
    session.execute("SELECT COUNT(*) FROM visits")
    assert [e.kind for e in h.recorder.events].count("charge") == 1


def test_basic_accounting_allows_a_pure_epsilon_query(make_harness: Callable[..., Harness]) -> None:
    """Under basic accounting δ = 0 is a pure-ε query (it costs the full ε, so it is no cheap
    probe), but a positive δ below the floor is refused and the hint says both ways out."""
    h = make_harness(accounting="basic")
    session = h.engine.session("alice")
    session.execute("SET dp.delta = 0")
    with pytest.raises(DPSQLError) as refused:
        session.execute("SET dp.delta = 1e-20")
    assert refused.value.sqlstate == "22023"
    assert refused.value.hint is not None and "at least 1e-12, or to 0 for a pure-ε query" in refused.value.hint


def test_a_policy_can_raise_the_floor(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(privacy_extra="min_epsilon_per_query = 0.5")
    session = h.engine.session("alice")
    with pytest.raises(DPSQLError) as refused:
        session.execute("SET dp.epsilon = 0.25")
    assert refused.value.sqlstate == "22023" and "at least 0.5" in (refused.value.hint or "")
    session.execute("SET dp.epsilon = 0.5")
