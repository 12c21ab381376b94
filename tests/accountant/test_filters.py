"""Filters: a policy's (ε, δ) budgets as exact limits, windows, and budget reporting."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from dpsql.accountant.calibration import cks20_epsilon, rho_for_epsilon
from dpsql.accountant.filters import budget_filter, limits_for, report
from dpsql.accountant.units import to_atto_down, to_pico_down
from dpsql.policy import Budget, policy_from_dict


def make_policy(accounting: str = "zcdp", **budget: Any) -> Any:
    data: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:6432", "auth": "trust"},
        "privacy": {"accounting": accounting},
        "budget": {"epsilon": 10.0, "delta": 1e-6, "window": "7d", "session_epsilon": 3.0, **budget},
        "users": {"alice": {}, "bob": {"epsilon": 20.0}},
        "tables": {"visits": {"privacy_unit": "pid"}},
    }
    return policy_from_dict(data, "/tmp/policy.toml")


def test_zcdp_limits() -> None:
    pol = make_policy(**{"global": {"epsilon": 40.0, "delta": 1e-5}})
    lim = limits_for(pol, "alice")
    assert lim.accounting == "zcdp"
    d = Fraction(1, 10**6)
    assert lim.user.main == to_pico_down(rho_for_epsilon(10, d / 10))
    assert lim.user.delta == to_atto_down(d * 9 / 10) == 9 * 10**11
    assert lim.user.window_seconds == 7 * 86400
    assert lim.session.main == to_pico_down(rho_for_epsilon(3, d / 10))
    assert lim.session.delta is None and lim.session.window_seconds is None
    assert lim.global_ is not None
    assert lim.global_.main == to_pico_down(rho_for_epsilon(40, Fraction(1, 10**6)))
    assert lim.global_.window_seconds is None
    # bob's override
    assert limits_for(pol, "bob").user.main == to_pico_down(rho_for_epsilon(20, d / 10))
    with pytest.raises(KeyError):
        limits_for(pol, "mallory")


def test_the_filter_limits_guarantee_the_budget() -> None:
    """Anything the zcdp filter admits is (ε_B, δ_B)-DP: CKS20(ρ_limit, δ_B/10) ≤ ε_B, δ cap + δ_B/10 = δ_B."""
    b = Budget(Fraction(10), Fraction(1, 10**6))
    f = budget_filter("user", "zcdp", b)
    assert f.main is not None and f.delta is not None
    assert cks20_epsilon(Fraction(f.main, 10**12), b.delta / 10) <= 10
    assert Fraction(f.delta, 10**18) + b.delta / 10 <= b.delta


def test_session_cap_can_only_be_lowered() -> None:
    pol = make_policy()
    assert limits_for(pol, "alice", Fraction(1)).session.epsilon == 1
    assert limits_for(pol, "alice", Fraction(5)).session.epsilon == 3
    no_cap = make_policy(session_epsilon=None)
    assert limits_for(no_cap, "alice").session.main is None
    assert limits_for(no_cap, "alice", Fraction(2)).session.epsilon == 2


def test_basic_limits() -> None:
    pol = make_policy("basic")
    lim = limits_for(pol, "alice")
    assert lim.user.main == 10 * 10**12
    assert lim.user.delta == 10**12
    assert lim.session.main == 3 * 10**12
    assert lim.global_ is None
    assert lim.filters() == (lim.session, lim.user)


def test_windows_are_aligned_to_the_epoch() -> None:
    f = budget_filter("user", "zcdp", Budget(Fraction(1), Fraction(1, 10**6), 3600.0))
    assert f.window(7200.0) == (7_200_000, 3_600_000)
    assert f.window(10799.999) == (7_200_000, 3_600_000)
    assert f.window(10800.0) == (10_800_000, 3_600_000)
    assert f.next_replenish(7300.5) == 10800.0
    lifetime = budget_filter("user", "zcdp", Budget(Fraction(1), Fraction(1, 10**6)))
    assert lifetime.window(123456.0) == (0, 0)
    assert lifetime.next_replenish(123456.0) is None


def test_report_zcdp() -> None:
    b = Budget(Fraction(10), Fraction(1, 10**6), 86400.0)
    f = budget_filter("user", "zcdp", b)
    assert f.main is not None
    spent = f.main // 4
    row = report(f, spent, 3 * 10**10, 100_000.0)
    conv = Fraction(1, 10**7)
    assert row.spent_rho == Fraction(spent, 10**12)
    assert row.spent_epsilon == cks20_epsilon(Fraction(spent, 10**12), conv)
    assert row.remaining_rho == Fraction(f.main - spent, 10**12)
    assert row.remaining_epsilon == cks20_epsilon(Fraction(f.main - spent, 10**12), conv)
    assert row.spent_delta == Fraction(3, 10**8)
    assert row.remaining_delta == Fraction(9, 10**7) - Fraction(3, 10**8)
    assert row.window_start == 86400.0 and row.next_replenish == 172800.0
    assert row.budget_epsilon == 10 and row.budget_delta == Fraction(1, 10**6)


def test_report_basic_and_overspent_is_floored_at_zero() -> None:
    f = budget_filter("user", "basic", Budget(Fraction(1), Fraction(1, 10**6)))
    row = report(f, 10**12, 0, 0.0)
    assert row.spent_epsilon == 1.0 and row.remaining_epsilon == 0.0
    assert row.spent_rho is None
    row = report(f, 2 * 10**12, 2 * 10**12, 0.0)  # more than the limit (e.g. the limit was lowered)
    assert row.remaining_epsilon == 0.0 and row.remaining_delta == 0
