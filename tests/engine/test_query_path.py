"""The engine's query path (DESIGN §1, §3; security.md R10, R14, R18, R22): charge before the data
is read, nothing but fixed messages on failure, free refusals and EXPLAIN, settings, the budget view."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlglot
from engine_lib import Harness
from sqlglot import exp

from dpsql.accountant.calibration import cks20_epsilon
from dpsql.accountant.filters import limits_for
from dpsql.accountant.units import from_pico
from dpsql.errors import DPSQLError
from dpsql.examples.hospital import generate
from dpsql.policy import load_policy
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.engine import Engine

PRIVATE_TABLES = {"visits", "patients"}

QUERIES = [
    "SELECT COUNT(*) FROM visits",
    "SELECT department, COUNT(*), AVG(cost) FROM visits GROUP BY department",
    "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis",
    "SELECT d.building, SUM(v.length_of_stay) FROM visits v JOIN departments d ON v.department_id = d.department_id GROUP BY d.building",
    "SELECT region, COUNT(*) AS n FROM patients GROUP BY region HAVING COUNT(*) > 10 ORDER BY n DESC LIMIT 3",
]


def _tables(sql: str) -> set[str]:
    return {t.name.lower() for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table)}


@pytest.mark.parametrize("sql", QUERIES)
def test_charge_commits_before_the_bounded_sql_runs(make_harness: Callable[..., Harness], sql: str) -> None:
    """R22: the ledger charge is durable before any SQL that reads a private table runs; only the
    public key set may be read before it, and that SQL reads public tables only."""
    h = make_harness()
    session = h.engine.session("alice")
    result = session.execute(sql)
    assert result.rows is not None
    events = h.recorder.events
    charge_at = h.recorder.kinds().index("charge")
    assert h.recorder.kinds().count("charge") == 1
    for e in events[:charge_at]:
        assert e.kind == "execute"
        assert not _tables(e.detail) & PRIVATE_TABLES, f"read a private table before the charge: {e.detail}"
    private_reads = [i for i, e in enumerate(events) if e.kind == "execute" and _tables(e.detail) & PRIVATE_TABLES]
    assert private_reads and min(private_reads) > charge_at
    rw, _ = session.plan(sql)
    assert rw.plan is not None
    assert h.recorder.executed().count(rw.sql) == 1
    if rw.plan.public_keys_sql is not None:
        assert not _tables(rw.plan.public_keys_sql) & PRIVATE_TABLES


def test_engine_error_text_never_reaches_the_client(make_harness: Callable[..., Harness]) -> None:
    """R14, R10: an engine failure of the bounded SQL (here DuckDB's "Could not convert string
    'secret-value-abc'") becomes a fixed XX000 message with no chained exception, and the charge
    stands (no refund after data was read)."""
    h = make_harness(fail_on=lambda sql: "__dp_rows" in sql)
    session = h.engine.session("alice")
    with pytest.raises(DPSQLError) as failed:
        session.execute("SELECT COUNT(*) FROM visits")
    err = failed.value
    assert err.sqlstate == "XX000"
    text = "".join(traceback.format_exception(err))
    assert "secret" not in text and "Conversion" not in text
    assert err.__cause__ is None and err.__context__ is None
    assert h.recorder.kinds().count("charge") == 1
    assert {s.scope: s.spent_rho for s in session.budget()}["user"] > 0


def test_real_data_dependent_failure_is_masked(make_harness: Callable[..., Harness]) -> None:
    """A bounded query that DuckDB fails on a private value (bug B1: text as a boolean quotes the
    diagnosis code) still reaches the client only as the fixed XX000 message."""
    h = make_harness()
    session = h.engine.session("alice")
    try:
        session.execute("SELECT COUNT(*) FROM visits WHERE diagnosis")
    except DPSQLError as e:
        text = "".join(traceback.format_exception(e))
        assert e.sqlstate in ("XX000", "42804")
        for code in ("J06", "I10", "R07", "M54", "BOOL", "convert"):
            assert code not in text


REFUSED = [
    ("SELECT * FROM visits", "42501"),
    ("SELECT age FROM visits", "42501"),
    ("SELECT MAX(patient_id) FROM visits", "42501"),
    ("SELECT SUM(visit_id) FROM visits", "42703"),
    ("SELECT COUNT(*) FROM nosuchtable", "42P01"),
    ("SELECT COUNT(*) FROM visits WHERE", "42601"),
    ("SELECT COUNT(*) FROM visits WHERE age > (SELECT AVG(age) FROM visits)", "0A000"),
    ("SELECT SUM(cost) OVER () FROM visits", "0A000"),
    ("SELECT patient_id, COUNT(*) FROM visits GROUP BY patient_id", "42501"),
]


@pytest.mark.parametrize(("sql", "sqlstate"), REFUSED)
def test_refused_queries_cost_nothing_and_read_nothing(make_harness: Callable[..., Harness], sql: str, sqlstate: str) -> None:
    """R22: a query refused at rewrite costs nothing and never reaches the backend."""
    h = make_harness()
    session = h.engine.session("alice")
    with pytest.raises(DPSQLError) as refused:
        session.execute(sql)
    assert refused.value.sqlstate == sqlstate
    assert h.recorder.events == []
    assert all(s.spent_rho == 0 for s in session.budget())


def test_too_many_public_groups_is_refused_before_the_charge(make_harness: Callable[..., Harness]) -> None:
    """A public key set over [limits] max_released_groups is refused (54000) after reading the
    public key set only, before the charge: it costs nothing."""
    h = make_harness(extra="[limits]\nmax_released_groups = 5\n")
    session = h.engine.session("alice")
    with pytest.raises(DPSQLError) as refused:
        session.execute("SELECT d.name, COUNT(*) FROM visits v JOIN departments d ON v.department_id = d.department_id GROUP BY d.name")
    assert refused.value.sqlstate == "54000"
    assert "charge" not in h.recorder.kinds()
    assert all(not _tables(sql) & PRIVATE_TABLES for sql in h.recorder.executed())
    assert all(s.spent_rho == 0 for s in session.budget())


def test_explain_spends_nothing_and_reads_no_rows(make_harness: Callable[..., Harness]) -> None:
    """DESIGN §3: EXPLAIN shows the rewritten SQL, the cost, and each output column's noise scale
    and 95% error bound; it executes nothing on the backend and charges nothing."""
    h = make_harness()
    session = h.engine.session("alice")
    for sql in QUERIES:
        result = session.execute(f"EXPLAIN {sql}")
        text = "\n".join(r[0] for r in result.rows)
        rw, noise = session.plan(sql)
        assert noise is not None and rw.plan is not None and rw.sql in text
        assert f"ε = {float(noise.epsilon):g}" in text
        if rw.plan.post_sql is not None:
            continue  # B12: no per-column noise shown with HAVING/ORDER BY (test_engine_bugs.py)
        assert "95% error" in text
        for count in (a for a in rw.plan.aggregates if a.kind in ("count", "sum")):
            stat = noise.stat(count.stats[0])
            assert f"scale {float(stat.released_scale):.4g}" in text and f"±{float(stat.released_error95):.4g}" in text
    assert h.recorder.events == []
    assert all(s.spent_rho == 0 for s in session.budget())
    with pytest.raises(DPSQLError) as analyze:
        session.execute("EXPLAIN ANALYZE SELECT COUNT(*) FROM visits")
    assert analyze.value.sqlstate == "0A000"
    assert h.recorder.events == []


@pytest.mark.parametrize(("setting", "value"), [
    ("dp.epsilon", "2.5"), ("dp.epsilon", "0"), ("dp.epsilon", "-1"), ("dp.epsilon", "abc"), ("dp.epsilon", "nan"),
    ("dp.delta", "0.5"), ("dp.delta", "0"), ("dp.session_epsilon", "0"),
])  # fmt: skip
def test_bad_settings_are_refused_with_22023(make_harness: Callable[..., Harness], setting: str, value: str) -> None:
    """DESIGN §3: SET dp.epsilon above max_epsilon_per_query (2) or otherwise invalid → 22023; the
    setting keeps its value."""
    h = make_harness()
    session = h.engine.session("alice")
    before = session.execute(f"SHOW {setting}").rows
    with pytest.raises(DPSQLError) as refused:
        session.execute(f"SET {setting} = {value}")
    assert refused.value.sqlstate == "22023"
    assert session.execute(f"SHOW {setting}").rows == before


def test_set_epsilon_changes_the_cost(make_harness: Callable[..., Harness]) -> None:
    """SET dp.epsilon = 0.5 halves the query's ε: the charged ρ is the calibration's at ε = 0.5."""
    h = make_harness()
    session = h.engine.session("alice")
    session.execute("SET dp.epsilon = 0.5")
    assert session.execute("SHOW dp.epsilon").rows == [("0.5",)]
    _, noise = session.plan("SELECT COUNT(*) FROM visits")
    assert noise is not None and noise.epsilon == 0.5
    session.execute("SELECT COUNT(*) FROM visits")
    user = {s.scope: s for s in session.budget()}["user"]
    assert user.spent_rho == from_pico(noise.cost.amount_pico)


BUDGET_COLUMNS = [
    "scope", "accounting", "epsilon_spent", "delta_spent", "epsilon_remaining", "delta_remaining",
    "epsilon_budget", "delta_budget", "rho_spent", "rho_remaining", "window_start", "next_replenish",
]  # fmt: skip


def test_budget_view_after_queries(make_harness: Callable[..., Harness]) -> None:
    """DESIGN §3: SELECT * FROM dpsql.budget lists session, user and global rows; spent ρ is the sum
    of the charges, spent ε its CKS20 conversion at δ_B/10, remaining = limit − spent."""
    h = make_harness(global_epsilon=40.0, session_epsilon=5.0)
    session = h.engine.session("alice")
    costs = []
    for sql in QUERIES[:3]:
        _, noise = session.plan(sql)
        assert noise is not None
        costs.append(noise.cost)
        session.execute(sql)
    result = session.execute("SELECT * FROM dpsql.budget")
    assert list(result.columns) == BUDGET_COLUMNS
    rows = {r[0]: dict(zip(result.columns, r, strict=True)) for r in result.rows}
    assert set(rows) == {"session", "user", "global"}
    spent = sum(from_pico(c.amount_pico) for c in costs)
    limits = limits_for(h.policy, "alice")
    for scope in ("session", "user", "global"):
        row = rows[scope]
        assert row["accounting"] == "zcdp"
        assert row["rho_spent"] == pytest.approx(float(spent), rel=1e-12)
        limit = getattr(limits, "global_" if scope == "global" else scope).main
        assert row["rho_remaining"] == pytest.approx(float(from_pico(limit) - spent), rel=1e-9)
    delta_b = h.policy.budget.delta
    assert rows["user"]["epsilon_spent"] == pytest.approx(cks20_epsilon(spent, delta_b / 10), rel=1e-9)
    assert rows["user"]["epsilon_budget"] == 10.0 and rows["session"]["epsilon_budget"] == 5.0
    assert rows["global"]["epsilon_budget"] == 40.0
    assert rows["user"]["delta_spent"] == pytest.approx(float(sum(c.delta for c in costs)), rel=1e-6)
    filtered = session.execute("SELECT epsilon_remaining FROM dpsql.budget WHERE scope = 'user'")
    assert filtered.rows == [(rows["user"]["epsilon_remaining"],)]
    assert all(s.spent_rho == spent for s in session.budget())  # reading the view costs nothing


def test_cost_does_not_depend_on_the_data(tmp_path: Path, write_policy: Callable[..., Path]) -> None:
    """R8, R22: the rewrite and the noise plan (hence the charge) are identical over two different
    databases of the same schema."""
    other = tmp_path / "other"
    generate(other, patients=500, visits=900, seed=99)
    plans = []
    for name, database in (("a.toml", None), ("b.toml", other / "hospital.duckdb")):
        policy = load_policy(write_policy(name, database=database))
        engine = Engine(policy, DuckDBBackend(policy))
        try:
            session = engine.session("alice")
            plans.append([session.plan(sql) for sql in QUERIES])
        finally:
            engine.close()
    assert plans[0] == plans[1]


def test_unknown_user_cannot_open_a_session(make_harness: Callable[..., Harness]) -> None:
    """Only users listed in the policy may connect (28000)."""
    h = make_harness()
    with pytest.raises(DPSQLError) as refused:
        h.engine.session("mallory")
    assert refused.value.sqlstate == "28000"


def test_validation_runs_once_per_bounded_sql(make_harness: Callable[..., Harness]) -> None:
    """The pre-charge validation (bind on the empty shadow, constants, post-processing) is cached
    by the engine after a pass; a failed validation is not cached and stays free."""
    h = make_harness(replay="off")  # each identical query is charged (and validated) anew
    calls: list[str] = []
    backend = h.engine.backend
    inner = backend.validate

    def counting(sql: str) -> None:
        calls.append(sql)
        inner(sql)

    backend.validate = counting  # type: ignore[method-assign]
    session = h.engine.session("alice")
    sql = "SELECT department, COUNT(*), AVG(cost) FROM visits GROUP BY department"
    session.execute(sql)
    session.execute(sql)
    h.engine.session("alice").execute(sql)
    assert len(calls) == 1
    bad = "SELECT COUNT(*) FROM visits WHERE visit_date > DATE '2024-02-30'"
    for _ in range(2):
        with pytest.raises(DPSQLError) as e:
            session.execute(bad)
        assert "no budget was spent" in (e.value.hint or "")
    assert len(calls) == 3  # checked again each time: a failure is never cached
    assert h.recorder.kinds().count("charge") == 3


def test_noise_is_drawn_ahead_only_when_the_cells_are_known(make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """No keys or public keys: the noise is drawn (and padded) while the bounded SQL runs, after
    the charge. Partition selection: drawn after, as the kept groups depend on the data."""
    import dpsql.proxy.release as release_module

    calls: list[int] = []
    real = release_module.draw_ahead

    def counting(plan, cells, **kw):  # type: ignore[no-untyped-def]
        calls.append(cells)
        return real(plan, cells, **kw)

    monkeypatch.setattr(release_module, "draw_ahead", counting)
    h = make_harness()
    session = h.engine.session("alice")
    session.execute("SELECT COUNT(*) FROM visits")
    r = session.execute("SELECT department, COUNT(*) FROM visits GROUP BY department")
    assert calls == [1, len(r.rows)]
    session.execute("SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis")
    assert calls == [1, len(r.rows)]  # selection: not drawn ahead
