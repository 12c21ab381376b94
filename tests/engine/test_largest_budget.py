"""The largest budget a policy accepts, spent through real queries, leaves a working ledger: the
next query is a clean 53400 and dpsql.budget still answers (before, the SQLite ledger bricked
after ~9.2e6 with LedgerUnavailable for every later query)."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pytest
from engine_lib import Harness

from dpsql.accountant.capacity import largest_budget_epsilon
from dpsql.errors import DPSQLError
from dpsql.policy import PrivacySettings


def test_spending_the_largest_budget_keeps_the_ledger_working(make_harness: Callable[..., Harness]) -> None:
    top = largest_budget_epsilon(PrivacySettings(max_epsilon_per_query=Fraction(10**6)), Fraction(1, 10**6))
    h = make_harness(epsilon=float(top), max_epsilon=1e6, replay="off")
    session = h.engine.session("alice")
    spent_queries = 0
    for eps in ("1000000", "100000", "10000", "1000", "100", "10", "1"):
        session.execute(f"SET dp.epsilon = {eps}")
        while True:
            try:
                session.execute("SELECT COUNT(*) FROM visits")
            except DPSQLError as e:
                assert e.sqlstate == "53400", e
                break
            spent_queries += 1
            assert spent_queries < 200
    user = {s.scope: s for s in session.budget()}["user"]
    assert user.spent_rho is not None and user.remaining_rho is not None
    assert user.spent_rho > Fraction(9, 10) * (user.spent_rho + user.remaining_rho)
    rows = session.execute("SELECT scope, rho_spent FROM dpsql.budget").rows
    assert [r[0] for r in rows] == ["session", "user"] and rows[1][1] > 7e6
    with pytest.raises(DPSQLError) as refused:
        session.execute("SELECT COUNT(*) FROM visits")
    assert refused.value.sqlstate == "53400"
    h.engine.session("bob").execute("SELECT COUNT(*) FROM visits")  # other users are unaffected
