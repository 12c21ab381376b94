"""A budget the policy accepts is one the ledger can hold (issue 9, item 6): spending the largest
accepted budget with maximal charges, window after window, never overflows the 64-bit sums.

Before the capacity check, ``[budget] epsilon = 1e9`` loaded and, once about 9.2e6 was spent, every
query failed with LedgerUnavailable ("a budget total is out of range") until an administrator
restored the ledger file.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from dpsql.accountant.calibration import rho_for_epsilon
from dpsql.accountant.capacity import LEDGER_MAX, largest_budget_epsilon, max_query_charge
from dpsql.accountant.costs import Cost
from dpsql.accountant.filters import limits_for
from dpsql.accountant.ledger import Ledger
from dpsql.accountant.sqlite_ledger import SqliteLedger
from dpsql.errors import BudgetExhausted
from dpsql.policy import Policy, PrivacySettings, policy_from_dict

DAY = 86400.0


def largest_policy(accounting: str) -> Policy:
    """A policy whose user budget is the largest the ledger accepts, with a huge per-query ε."""
    privacy = {"accounting": accounting, "max_epsilon_per_query": 1e6, "default_epsilon": 1.0}
    probe = PrivacySettings(accounting=accounting, max_epsilon_per_query=Fraction(10**6))  # type: ignore[arg-type]
    top = largest_budget_epsilon(probe, Fraction(1, 10**6))
    data: dict[str, Any] = {
        "server": {"auth": "trust"},
        "privacy": privacy,
        "budget": {"epsilon": float(top), "delta": 1e-6, "window": "1d"},
        "users": {"alice": {}},
        "tables": {"t": {"privacy_unit": "uid"}},
    }
    policy = policy_from_dict(data)
    assert policy.budget.epsilon == top
    return policy


def spend_the_largest_budget(ledger: Ledger, policy: Policy, windows: int = 3) -> None:
    """Fill ``windows`` daily windows with maximal charges; each window ends in a clean 53400,
    the user's sum stays within its limit, and the unlimited session and global sums saturate."""
    limits = limits_for(policy, "alice")
    assert limits.user.main is not None
    p = policy.privacy
    biggest = rho_for_epsilon(p.max_epsilon_per_query, p.max_delta_per_query) if p.accounting == "zcdp" else p.max_epsilon_per_query
    cost = Cost(p.accounting, biggest)
    assert cost.amount_pico == max_query_charge(p).main
    total = 0
    for w in range(windows):
        now = 1000 * DAY + w * DAY + 1.0
        n = 0
        while True:
            try:
                ledger.charge("alice", "s1", cost, limits, now, f"q{w}-{n}")
            except BudgetExhausted as e:
                assert e.sqlstate == "53400"
                break
            n += 1
            assert n < 100
        total += n * cost.amount_pico
        assert n == limits.user.main // cost.amount_pico
        status = {s.scope: s for s in ledger.status("alice", "s1", limits, now)}
        spent = status["user"].spent_rho if p.accounting == "zcdp" else Fraction(status["user"].spent_epsilon)
        assert spent == Fraction(n * cost.amount_pico, 10**12)
        # what is left still buys a smaller query
        rest = limits.user.main - n * cost.amount_pico
        if rest > 0:
            ledger.charge("alice", "s1", Cost(p.accounting, Fraction(rest, 10**12)), limits, now, f"rest{w}")
            total += rest
    assert total > LEDGER_MAX  # the session's own (unlimited) sum had to saturate
    status = {s.scope: s for s in ledger.status("alice", "s1", limits, now)}
    assert status["session"].remaining_epsilon is None


@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
def test_largest_budget_spent_three_windows_sqlite(tmp_path: Path, accounting: str) -> None:
    policy = largest_policy(accounting)
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    try:
        spend_the_largest_budget(ledger, policy)
        # the session and global rows were capped at the 64-bit maximum, not overflowed
        rows = ledger._conn().execute("SELECT scope, max(main) FROM totals GROUP BY scope").fetchall()
        assert dict(rows)["session"] == LEDGER_MAX and dict(rows)["global"] == LEDGER_MAX
        assert dict(rows)["user"] <= limits_for(policy, "alice").user.main  # type: ignore[operator]
    finally:
        ledger.close()


def test_without_saturation_the_ledger_would_overflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: with the saturation removed, the same spending bricks the ledger exactly
    as the issue describes — so the test above would catch a regression."""
    from dpsql.accountant import ledger as ledger_mod
    from dpsql.errors import LedgerUnavailable

    monkeypatch.setattr(ledger_mod, "LEDGER_MAX", 2**200)
    policy = largest_policy("zcdp")
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    try:
        with pytest.raises(LedgerUnavailable, match="out of range"):
            spend_the_largest_budget(ledger, policy)
    finally:
        ledger.close()
