"""Budget exhaustion through the engine (DESIGN §1 accounting, §3 class 53; security.md R21–R23):
queries are admitted exactly as many times as the accountant's own arithmetic allows, for the
user, session and global filters, under zcdp and basic accounting."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from engine_lib import Harness

from dpsql.accountant.filters import limits_for
from dpsql.errors import DPSQLError
from dpsql.proxy.engine import Session

COUNT = "SELECT COUNT(*) FROM visits"
SELECTION = "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis"


def _run_until_refused(session: Session, sql: str, limit: int = 1000) -> tuple[int, DPSQLError]:
    """Run ``sql`` until it is refused; return how many ran and the refusal."""
    for n in range(limit):
        try:
            session.execute(sql)
        except DPSQLError as e:
            return n, e
    raise AssertionError(f"not refused after {limit} queries")


def _expected(h: Harness, session: Session, sql: str, *, scope: str = "user") -> int:
    """How many copies of ``sql`` the filter admits: ⌊limit / cost⌋ in the ledger's integer units,
    from the accountant's own functions (limits_for, calibrate)."""
    _, noise = session.plan(sql)
    assert noise is not None
    limits = limits_for(h.policy, session.user, session.settings.session_epsilon)
    f = {"user": limits.user, "session": limits.session, "global": limits.global_}[scope]
    assert f is not None and f.main is not None
    n = f.main // noise.cost.amount_pico
    if noise.cost.delta_atto and f.delta is not None:
        n = min(n, f.delta // noise.cost.delta_atto)
    return n


@pytest.mark.parametrize(("accounting", "epsilon"), [("zcdp", 2.0), ("basic", 3.5)])
def test_user_budget_is_exhausted_after_exactly_the_admitted_number(make_harness: Callable[..., Harness], accounting: str,
                                                                   epsilon: float) -> None:
    """With ε_B = 2 under zcdp (ρ composes: several ε = 1 queries fit) and ε_B = 3.5 under basic
    (3 queries of ε = 1), the user is refused with class 53 after exactly ⌊limit/cost⌋ queries;
    dpsql.budget shows less than one query's cost left; a new session stays refused; another user
    is not affected."""
    h = make_harness(replay="off", accounting=accounting, epsilon=epsilon)
    session = h.engine.session("alice")
    expected = _expected(h, session, COUNT)
    assert expected >= 3 and (accounting != "basic" or expected == 3)
    ran, refusal = _run_until_refused(session, COUNT)
    assert ran == expected
    assert refusal.sqlstate.startswith("53")
    assert "budget" in refusal.message
    _, noise = session.plan(COUNT)
    assert noise is not None
    user = {s.scope: s for s in session.budget()}["user"]
    remaining = user.remaining_rho if accounting == "zcdp" else user.remaining_epsilon
    assert remaining is not None and float(remaining) < float(noise.cost.amount)
    row = session.execute("SELECT epsilon_spent, epsilon_remaining FROM dpsql.budget WHERE scope = 'user'").rows[0]
    assert row[0] > 0 and row[1] == pytest.approx(user.remaining_epsilon)
    again = h.engine.session("alice")
    with pytest.raises(DPSQLError) as still:
        again.execute(COUNT)
    assert still.value.sqlstate.startswith("53")
    h.engine.session("bob").execute(COUNT)


def test_refusal_costs_nothing(make_harness: Callable[..., Harness]) -> None:
    """A refused query writes nothing: the spent budget after the refusal equals the sum of the
    admitted charges."""
    h = make_harness(replay="off", epsilon=2.0)
    session = h.engine.session("alice")
    ran, _ = _run_until_refused(session, COUNT)
    _, noise = session.plan(COUNT)
    assert noise is not None
    user = {s.scope: s for s in session.budget()}["user"]
    assert user.spent_rho is not None and user.spent_rho * 10**12 == ran * noise.cost.amount_pico


def test_delta_budget_is_exhausted_by_partition_selection(make_harness: Callable[..., Harness]) -> None:
    """Under zcdp partition selection spends δ; with a large ε budget the δ filter (0.9·δ_B) is the
    one that refuses, after exactly ⌊δ limit / δ per query⌋ queries, with a message about δ."""
    h = make_harness(replay="off", epsilon=1000.0, delta=1e-5)
    session = h.engine.session("alice")
    session.execute("SET dp.delta = 1e-5")
    _, noise = session.plan(SELECTION)
    assert noise is not None and noise.cost.delta > 0
    expected = _expected(h, session, SELECTION)
    limits = limits_for(h.policy, "alice")
    assert limits.user.delta is not None and expected == limits.user.delta // noise.cost.delta_atto
    ran, refusal = _run_until_refused(session, SELECTION)
    assert ran == expected
    assert refusal.sqlstate.startswith("53") and "δ" in refusal.message


def test_session_cap_and_lowering_it(make_harness: Callable[..., Harness]) -> None:
    """[budget] session_epsilon caps one connection: refused (53) after ⌊session limit/cost⌋
    queries while the user still has budget; a new session may query again; SET
    dp.session_epsilon can lower the cap (fewer queries) but never raise it (22023)."""
    h = make_harness(replay="off", epsilon=100.0, session_epsilon=2.0)
    first = h.engine.session("alice")
    expected = _expected(h, first, COUNT, scope="session")
    assert expected < _expected(h, first, COUNT, scope="user")
    ran, refusal = _run_until_refused(first, COUNT)
    assert ran == expected and refusal.sqlstate.startswith("53") and "session" in refusal.message

    second = h.engine.session("alice")
    with pytest.raises(DPSQLError) as raised:
        second.execute("SET dp.session_epsilon = 4")
    assert raised.value.sqlstate == "22023"
    assert second.execute("SHOW dp.session_epsilon").rows == [("2",)]
    second.execute("SET dp.session_epsilon = 1.2")
    assert second.execute("SHOW dp.session_epsilon").rows == [("1.2",)]
    with pytest.raises(DPSQLError):
        second.execute("SET dp.session_epsilon = 1.5")  # cannot be raised back either
    lowered = _expected(h, second, COUNT, scope="session")
    assert 0 < lowered < expected
    ran, refusal = _run_until_refused(second, COUNT)
    assert ran == lowered and refusal.sqlstate.startswith("53")
    second.execute("RESET dp.session_epsilon")
    assert second.execute("SHOW dp.session_epsilon").rows == [("1.2",)]


def test_global_budget_is_shared_by_all_users(make_harness: Callable[..., Harness]) -> None:
    """[budget.global] caps all users together: alice and bob alternately are refused when the
    global filter, not their own, runs out, after exactly ⌊global limit/cost⌋ queries in all."""
    h = make_harness(replay="off", epsilon=100.0, global_epsilon=2.0)
    alice, bob = h.engine.session("alice"), h.engine.session("bob")
    expected = _expected(h, alice, COUNT, scope="global")
    assert expected < _expected(h, alice, COUNT, scope="user")
    ran = 0
    refusal: DPSQLError | None = None
    for i in range(1000):
        try:
            (alice, bob)[i % 2].execute(COUNT)
            ran += 1
        except DPSQLError as e:
            refusal = e
            break
    assert ran == expected
    assert refusal is not None and refusal.sqlstate.startswith("53") and "global" in refusal.message
    with pytest.raises(DPSQLError):
        (alice, bob)[(ran + 1) % 2].execute(COUNT)


def test_epsilon_per_query_is_the_guarantee(make_harness: Callable[..., Harness]) -> None:
    """Queries at a smaller dp.epsilon cost less, so more of them fit, as the calibration says."""
    h = make_harness(replay="off", epsilon=2.0)
    session = h.engine.session("alice")
    session.execute("SET dp.epsilon = 0.25")
    expected = _expected(h, session, COUNT)
    ran, refusal = _run_until_refused(session, COUNT)
    assert ran == expected and refusal.sqlstate.startswith("53")
    assert expected > 3 * 7  # many more than at ε = 1
