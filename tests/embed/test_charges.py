"""The charge: durable and atomic before the caller reads any row, never refunded — it stands
when the caller never releases, when the caller's engine fails, when the release is refused —
and refusals before it are free. Also: released values are noisy, and the policy's (ε, δ) rules
and filters apply as on the server."""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from embedlib import session_runner

from dpsql.accountant.sqlite_ledger import SqliteLedger
from dpsql.embed import EmbedSession, Pipeline, dbapi_runner
from dpsql.errors import (
    BudgetExhausted,
    CardinalityViolation,
    DataException,
    ExecutionFailed,
    InvalidParameterValue,
    UnsupportedQuery,
)
from dpsql.policy import load_policy
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.timing import TimingShield

COUNT = "SELECT COUNT(*) FROM visits"


@pytest.fixture
def policy_path(write_policy: Callable[..., Path]) -> Path:
    return write_policy(epsilon=3.0)


@pytest.fixture
def setup(policy_path: Path) -> Iterator[tuple[Pipeline, Any]]:
    policy = load_policy(policy_path)
    backend = DuckDBBackend(policy)
    pipe = Pipeline(policy, schema=backend.describe(), shield=TimingShield(enabled=False))
    with backend.session() as caller:
        yield pipe, session_runner(caller)
    pipe.close()
    backend.close()


def _user(s: EmbedSession) -> Any:
    return next(b for b in s.budget() if b.scope == "user")


def _ledger_charges(policy_path: Path) -> int:
    import sqlite3

    path = load_policy(policy_path).ledger_path
    with sqlite3.connect(path) as con:
        return int(con.execute("SELECT COUNT(*) FROM charges").fetchone()[0])


def test_charge_stands_when_never_released(setup: tuple[Pipeline, Any], policy_path: Path) -> None:
    pipe, _ = setup
    s = pipe.session("alice")
    q = s.prepare(COUNT, epsilon=1)
    token = s.charge(q)
    assert token.cost == q.cost and token.charge_id > 0
    del token
    gc.collect()
    # committed before charge() returned: another connection to the ledger sees it
    assert _ledger_charges(policy_path) == 1
    led = SqliteLedger(load_policy(policy_path).ledger_path)
    try:
        other = led.status("alice", "another-session", s.limits(), __import__("time").time())
    finally:
        led.close()
    assert next(b for b in other if b.scope == "user").spent_epsilon > 0
    assert not pipe._pending, "a dropped token is forgotten (it can never be released)"


def test_budget_runs_out_without_any_release(setup: tuple[Pipeline, Any], policy_path: Path) -> None:
    """Charging without releasing spends the budget: a caller cannot 'peek' for free."""
    pipe, _ = setup
    s = pipe.session("alice")
    q = s.prepare(COUNT, epsilon=1)
    charged = 0
    with pytest.raises(BudgetExhausted) as e:
        for _ in range(500):
            s.charge(q)
            charged += 1
    assert e.value.sqlstate == "53400"
    assert charged >= 1 and _ledger_charges(policy_path) == charged
    assert _user(s).remaining_epsilon < 1  # the user's budget really is spent, by charges alone


def test_engine_failure_after_the_charge(setup: tuple[Pipeline, Any], policy_path: Path) -> None:
    pipe, run = setup
    s = pipe.session("alice")

    def failing(sql: str) -> Any:
        if "__dp_rows" in sql:
            raise RuntimeError("engine says: value 4242 is bad")
        return run(sql)

    with pytest.raises(ExecutionFailed) as e:
        s.execute(COUNT, failing)
    assert "4242" not in str(e.value) and e.value.__cause__ is None
    assert "charge for this query stands" in str(e.value)
    assert _ledger_charges(policy_path) == 1


def test_abandon_uses_the_token(setup: tuple[Pipeline, Any]) -> None:
    from dpsql.errors import ReleaseRefused

    pipe, run = setup
    s = pipe.session("alice")
    token = s.charge(s.prepare(COUNT))
    s.abandon(token)
    columns, rows = run(token.sql)
    with pytest.raises(ReleaseRefused):
        s.release(token, columns, rows)
    assert _user(s).spent_epsilon > 0


def test_refusals_before_the_charge_are_free(setup: tuple[Pipeline, Any], policy_path: Path) -> None:
    pipe, run = setup
    s = pipe.session("alice")
    for sql in ("SELECT * FROM visits", "SELECT age FROM visits", "SELECT COUNT(*) FROM nosuch", "DELETE FROM visits"):
        with pytest.raises(Exception) as e:
            s.prepare(sql)
        assert getattr(e.value, "sqlstate", None) in ("42501", "42P01", "0A000", "42601")
    with pytest.raises(InvalidParameterValue):
        s.prepare(COUNT, epsilon=5)  # above max_epsilon_per_query
    with pytest.raises(InvalidParameterValue):
        s.prepare(COUNT, epsilon="0.001")  # below min_epsilon_per_query

    def bad_constants(sql: str) -> Any:
        if "__dp_rows" not in sql:
            raise RuntimeError("invalid date")
        return run(sql)

    with pytest.raises(DataException, match="no budget was spent"):
        s.execute("SELECT COUNT(*) FROM visits WHERE visit_date > DATE '2023-01-01'", bad_constants)
    assert _ledger_charges(policy_path) == 0


def test_public_only_query_is_free(setup: tuple[Pipeline, Any], policy_path: Path) -> None:
    pipe, run = setup
    s = pipe.session("alice")
    r = s.execute("SELECT COUNT(*) FROM departments", run)
    assert r.rows == [(8,)] and r.cost is None
    with pytest.raises(UnsupportedQuery, match="nothing to charge"):
        s.charge(s.prepare("SELECT COUNT(*) FROM departments"))
    assert _ledger_charges(policy_path) == 0


def test_released_values_are_noisy(setup: tuple[Pipeline, Any]) -> None:
    """40 releases of the same exact count at ε = 0.05: at σ ≥ 10 a discrete Gaussian is 0 with
    probability ≤ 1/(σ√(2π)) < 0.04, so ≥ 13 exact answers out of 40 has probability < 1e-8."""
    pipe, run = setup
    s = pipe.session("bob")
    q = s.prepare(COUNT, epsilon="0.05")
    assert q.noise is not None and q.noise.stats[0].scale >= 10
    _, rows = run(q.sql)
    exact = rows[0][0]
    answers = []
    for _ in range(40):
        s2 = pipe.session("bob")  # a fresh session filter each time; the user budget is ample
        token = s2.charge(s2.prepare(COUNT, epsilon="0.05"))
        columns, rows = run(token.sql)
        answers.append(s2.release(token, columns, rows).rows[0][0])
    assert sum(a == exact for a in answers) < 13
    assert len(set(answers)) > 5


def test_session_filter(write_policy: Callable[..., Path]) -> None:
    policy = load_policy(write_policy(epsilon=100.0, users="[users.alice]\nsession_epsilon = 1.5\n"))
    backend = DuckDBBackend(policy)
    try:
        with Pipeline(policy, schema=backend.describe(), shield=TimingShield(enabled=False)) as pipe:
            s = pipe.session("alice")
            with pytest.raises(BudgetExhausted, match="session"):
                for _ in range(100):
                    s.charge(s.prepare(COUNT, epsilon=1))
            fresh = pipe.session("alice")
            fresh.charge(fresh.prepare(COUNT, epsilon=1))
    finally:
        backend.close()


def test_timing_shield_applies(setup: tuple[Pipeline, Any], policy_path: Path) -> None:
    """With the shield on (the default), a release is answered at the deadline the charge fixed:
    after a slow first answer of a shape, a fast one waits for that shape's grid point."""
    import time

    from dpsql.proxy.timing import grid_point, level_for

    schema = {t: [(c.name, c.pg_type) for c in i.columns] for t, i in setup[0].catalog.tables.items()}
    pipe = Pipeline(load_policy(policy_path), schema=schema)
    run = setup[1]
    try:
        s = pipe.session("alice")
        token = s.charge(s.prepare(COUNT))
        columns, rows = run(token.sql)
        time.sleep(0.2)
        s.release(token, columns, rows)
        token = s.charge(s.prepare(COUNT))
        started = time.perf_counter()
        columns, rows = run(token.sql)
        s.release(token, columns, rows)
        waited = time.perf_counter() - started
        assert waited >= grid_point(level_for(0.2)) - 0.01 and math.isfinite(waited)
    finally:
        pipe.close()


def test_dbapi_runner_over_duckdb(tmp_path: Path, hospital: Path, write_policy: Callable[..., Path]) -> None:
    """The documented path: a plain duckdb connection of the caller's, dbapi_runner, schema read
    with describe_duckdb."""
    import shutil

    import duckdb

    from dpsql.embed import describe_duckdb

    copy = tmp_path / "mine.duckdb"
    shutil.copy(hospital, copy)
    policy = load_policy(write_policy())
    con = duckdb.connect(str(copy), read_only=True)
    try:
        with Pipeline(policy, schema=describe_duckdb(con, policy), shield=TimingShield(enabled=False)) as pipe:
            r = pipe.session("alice").execute("SELECT sex, COUNT(*) FROM visits GROUP BY sex", dbapi_runner(con), epsilon=Fraction(1))
    finally:
        con.close()
    assert [row[0] for row in r.rows] == ["F", "M"] and r.cost is not None


def test_scalar_subquery_of_two_rows_is_21000_before_the_charge(setup: tuple[Pipeline, Any], policy_path: Path) -> None:
    """``execute`` runs ``subquery_check_sql`` (public tables only) before the charge, as the engine does."""
    pipe, run = setup
    s = pipe.session("alice")
    two = "SELECT COUNT(*) FROM visits WHERE department_id = (SELECT department_id FROM departments WHERE floor > 1)"
    assert s.prepare(two).subquery_check_sql is not None
    with pytest.raises(CardinalityViolation, match="more than one row returned by a subquery used as an expression"):
        s.execute(two, run)
    assert _ledger_charges(policy_path) == 0
    r = s.execute("SELECT COUNT(*) FROM visits WHERE department_id = (SELECT MAX(department_id) FROM departments)", run)
    assert r.cost is not None and _ledger_charges(policy_path) == 1
