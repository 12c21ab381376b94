"""PostgresLedger (security.md R25): atomic, durable, fail-closed, and shared by several dpsql
instances — T5b races with threads and with two processes (each its own ledger object, as two
``dpsql serve`` instances would be), T5c kills, and the engine-level race of two instances
serving the same policy against one PostgreSQL ledger."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import asyncpg
import pytest
from pgenv import PgEnv, policy_text, source_line

from dpsql.accountant.costs import Cost
from dpsql.accountant.filters import FilterLimit, ScopeLimits
from dpsql.accountant.ledger import open_ledger
from dpsql.accountant.postgres_ledger import PostgresLedger
from dpsql.errors import BudgetExhausted, LedgerUnavailable
from dpsql.policy import load_policy

pytestmark = pytest.mark.postgres

PICO = 10**12
CONV = Fraction(1, 10**7)
TENTH = Cost("zcdp", Fraction(1, 10))


def _limits(user: int | None, session: int | None = None, glob: int | None = None) -> ScopeLimits:
    def f(scope: str, main: int | None) -> FilterLimit:
        return FilterLimit(scope, "zcdp", main, None, None, None, None, CONV)  # type: ignore[arg-type]

    return ScopeLimits("zcdp", f("session", session), f("user", user), f("global", glob) if glob else None)


ONE = _limits(user=PICO)


@pytest.fixture
def ledger(pg: PgEnv, ledger_schema: str) -> Iterator[PostgresLedger]:
    led = PostgresLedger(pg.ledger_dsn, schema=ledger_schema)
    yield led
    led.close()


def _consistent(pg: PgEnv, schema: str) -> tuple[int, int]:
    """(number of charges, Σ main) — and assert the user totals equal the charge log."""
    n, total = pg.sql(f"SELECT count(*), coalesce(sum(main), 0) FROM {schema}.charges", database="ledger")[0]
    per_user = dict(pg.sql(f'SELECT "user", sum(main) FROM {schema}.charges GROUP BY "user"', database="ledger"))
    totals = dict(pg.sql(f"SELECT key, main FROM {schema}.totals WHERE scope = 'user'", database="ledger"))
    assert per_user == {k: v for k, v in totals.items() if v}
    return int(n), int(total)


# --- basics ----------------------------------------------------------------------------------------


def test_charge_and_status(ledger: PostgresLedger, pg: PgEnv) -> None:
    r = ledger.charge("alice", "s1", TENTH, ONE, 0.0, "q1")
    assert r.charge_id == 1 and r.cost == TENTH
    rows = ledger.status("alice", "s1", ONE, 0.0)
    assert [s.scope for s in rows] == ["session", "user"]
    assert rows[1].spent_rho == Fraction(1, 10) and rows[1].remaining_rho == Fraction(9, 10)
    assert _consistent(pg, ledger.schema) == (1, PICO // 10)
    assert "password" not in ledger.location and pg.cluster.passwords["ledger"] not in ledger.location


def test_budget_survives_reopening(pg: PgEnv, ledger_schema: str) -> None:
    led = PostgresLedger(pg.ledger_dsn, schema=ledger_schema)
    for i in range(10):
        led.charge("alice", f"s{i}", TENTH, ONE, 0.0, "q")
    led.close()
    with pytest.raises(LedgerUnavailable):
        led.charge("alice", "s", TENTH, ONE, 0.0, "q")  # closed
    again = PostgresLedger(pg.ledger_dsn, schema=ledger_schema)
    try:
        with pytest.raises(BudgetExhausted):
            again.charge("alice", "new", TENTH, ONE, 0.0, "q")
    finally:
        again.close()


def test_the_charge_log_is_append_only(ledger: PostgresLedger, pg: PgEnv) -> None:
    ledger.charge("alice", "s", TENTH, ONE, 0.0, "q")
    for stmt in (f"UPDATE {ledger.schema}.charges SET main = 0", f"DELETE FROM {ledger.schema}.charges",
                 f"TRUNCATE {ledger.schema}.charges"):
        with pytest.raises(asyncpg.RaiseError):
            pg.sql(stmt, database="ledger")
    assert _consistent(pg, ledger.schema) == (1, PICO // 10)


def test_each_charge_commits_synchronously_under_the_lock(ledger: PostgresLedger) -> None:
    """The write transaction holds the lock row and runs with synchronous_commit = on."""
    with ledger._write() as tx:
        conn = tx.conn  # type: ignore[attr-defined]
        run = tx._run  # type: ignore[attr-defined]
        assert run(conn.fetchval("SELECT current_setting('synchronous_commit')")) == "on"
        assert run(conn.fetchval("SELECT current_setting('transaction_isolation')")) == "read committed"
        locks = run(conn.fetchval("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'transactionid'"))
        assert locks >= 1  # SELECT … FOR UPDATE took a row lock (marks the transaction id)


def test_accounting_mode_mismatch_fails_closed(ledger: PostgresLedger) -> None:
    ledger.charge("alice", "s", TENTH, ONE, 0.0, "q")
    basic = ScopeLimits("basic", FilterLimit("session", "basic", None, None, None, None, None, None),
                        FilterLimit("user", "basic", PICO, None, None, None, None, None), None)
    with pytest.raises(LedgerUnavailable):
        ledger.charge("alice", "s", Cost("basic", Fraction(1, 10)), basic, 0.0, "q")


# --- fail closed -----------------------------------------------------------------------------------


def test_unreachable_server_fails_closed() -> None:
    with pytest.raises(LedgerUnavailable) as e:
        PostgresLedger("postgresql://ledger:pw@127.0.0.1:1/ledger?sslmode=disable", connect_timeout=2)
    assert e.value.sqlstate == "58000" and "pw@" not in str(e.value)


def test_bad_password_fails_closed(pg: PgEnv) -> None:
    with pytest.raises(LedgerUnavailable):
        PostgresLedger(pg.ledger_dsn.replace(pg.cluster.passwords["ledger"], "nope"))


def test_foreign_schema_fails_closed(pg: PgEnv, ledger_schema: str) -> None:
    pg.sql(f"CREATE SCHEMA {ledger_schema}", f"CREATE TABLE {ledger_schema}.meta (key text, value text)", database="ledger")
    with pytest.raises(LedgerUnavailable) as e:
        PostgresLedger(pg.ledger_dsn, schema=ledger_schema)
    assert "not a dpsql ledger" in str(e.value)


def test_wrong_schema_version_fails_closed(pg: PgEnv, ledger_schema: str) -> None:
    PostgresLedger(pg.ledger_dsn, schema=ledger_schema).close()
    pg.sql(f"UPDATE {ledger_schema}.meta SET value = '99' WHERE key = 'schema_version'", database="ledger")
    with pytest.raises(LedgerUnavailable) as e:
        PostgresLedger(pg.ledger_dsn, schema=ledger_schema)
    assert "schema version 99" in str(e.value)


def test_ledger_dropped_while_open_fails_closed(ledger: PostgresLedger, pg: PgEnv) -> None:
    ledger.charge("alice", "s", TENTH, ONE, 0.0, "q")
    pg.sql(f"DROP SCHEMA {ledger.schema} CASCADE", database="ledger")
    with pytest.raises(LedgerUnavailable):
        ledger.charge("alice", "s", TENTH, ONE, 0.0, "q")


def test_lock_held_too_long_fails_closed(pg: PgEnv, ledger_schema: str) -> None:
    led = PostgresLedger(pg.ledger_dsn, schema=ledger_schema, lock_timeout=0.3)
    try:
        with led._write():
            errors: list[BaseException] = []

            def other() -> None:
                try:
                    led.charge("alice", "s", TENTH, ONE, 0.0, "q")
                except BaseException as e:
                    errors.append(e)

            t = threading.Thread(target=other)
            t.start()
            t.join(10)
        assert len(errors) == 1 and isinstance(errors[0], LedgerUnavailable) and "locked" in str(errors[0])
    finally:
        led.close()


def test_fsync_off_is_refused(pg: PgEnv, ledger_schema: str) -> None:
    pg.sql("ALTER SYSTEM SET fsync = off", "SELECT pg_reload_conf()")
    try:
        time.sleep(0.3)
        with pytest.raises(LedgerUnavailable) as e:
            PostgresLedger(pg.ledger_dsn, schema=ledger_schema)
        assert "fsync" in str(e.value)
    finally:
        pg.sql("ALTER SYSTEM RESET fsync", "SELECT pg_reload_conf()")
        time.sleep(0.3)


def test_open_ledger_dispatches_on_the_url(pg: PgEnv, tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(policy_text(source_line(pg, "duckdb"), ledger=f'url = "{pg.ledger_dsn}"'))
    led = open_ledger(load_policy(path))
    try:
        assert isinstance(led, PostgresLedger) and led.schema == "dpsql_ledger"
    finally:
        led.close()


# --- T5b: races ------------------------------------------------------------------------------------


def test_t5b_fifty_threads_race_for_ten_slots(pg: PgEnv) -> None:
    """50 threads × ρ=0.1 against ρ=1.0, 5 repetitions (fresh ledger each): exactly 10 accepted."""
    for rep in range(5):
        schema = f"race_{os.getpid()}_{rep}_{random.randrange(10**6)}"
        led = PostgresLedger(pg.ledger_dsn, schema=schema)
        barrier = threading.Barrier(50)
        ok: list[bool] = []

        def worker(i: int, led: PostgresLedger = led, barrier: threading.Barrier = barrier, ok: list[bool] = ok) -> None:
            barrier.wait()
            try:
                led.charge("alice", f"s{i}", TENTH, ONE, 0.0, f"q{i}")
                ok.append(True)
            except BudgetExhausted:
                ok.append(False)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ok.count(True) == 10 and ok.count(False) == 40, rep
        assert _consistent(pg, schema) == (10, PICO)
        led.close()


_RACER = textwrap.dedent(
    """
    import sys, threading, time
    from fractions import Fraction
    from dpsql.accountant.costs import Cost
    from dpsql.accountant.filters import FilterLimit, ScopeLimits
    from dpsql.accountant.postgres_ledger import PostgresLedger
    from dpsql.errors import BudgetExhausted

    url, schema, start, name, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    f = lambda s, m: FilterLimit(s, "zcdp", m, None, None, None, None, Fraction(1, 10**7))
    limits = ScopeLimits("zcdp", f("session", None), f("user", 10**12), f("global", 3 * 10**12))
    led = PostgresLedger(url, schema=schema)
    ok = []
    def go(i):
        while time.time() < start:
            time.sleep(0.0005)
        try:
            led.charge(["alice", "bob", "carol", "dave"][i % 4], f"{name}-{i}", Cost("zcdp", Fraction(1, 10)), limits, 0.0, "q")
            ok.append(i)
        except BudgetExhausted:
            pass
    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    led.close()
    print(len(ok))
    """
)


def test_t5b_two_instances_race(pg: PgEnv, ledger_schema: str) -> None:
    """Two processes (two dpsql instances, each with its own PostgresLedger) × 40 threads charge
    ρ=0.1 for four users (ρ=1.0 each) under a global ρ=3.0: exactly 30 accepted — the global
    filter binds across instances — and the log matches the totals."""
    PostgresLedger(pg.ledger_dsn, schema=ledger_schema).close()
    start = time.time() + 2.0  # after both processes have imported and connected
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACER, pg.ledger_dsn, ledger_schema, str(start), f"p{k}", "40"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(2)
    ]  # fmt: skip
    counts = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        counts.append(int(out.strip().splitlines()[-1]))
    assert sum(counts) == 30, counts
    assert all(c > 0 for c in counts), counts  # both instances really competed
    n, total = _consistent(pg, ledger_schema)
    assert (n, total) == (30, 3 * PICO)
    glob = pg.sql(f"SELECT main FROM {ledger_schema}.totals WHERE scope = 'global'", database="ledger")
    assert [r[0] for r in glob] == [3 * PICO]


# --- T5c: a killed instance never loses a reported charge ----------------------------------------------

_CRASHER = textwrap.dedent(
    """
    import sys, time
    from fractions import Fraction
    from dpsql.accountant.costs import Cost
    from dpsql.accountant.filters import FilterLimit, ScopeLimits
    from dpsql.accountant.postgres_ledger import PostgresLedger

    url, schema = sys.argv[1], sys.argv[2]
    f = lambda s, m: FilterLimit(s, "zcdp", m, None, None, None, None, Fraction(1, 10**7))
    limits = ScopeLimits("zcdp", f("session", None), f("user", 10**18), f("global", 10**18))
    led = PostgresLedger(url, schema=schema)
    print("ready", flush=True)
    for i in range(100000):
        r = led.charge(f"user{i % 3}", "s", Cost("zcdp", Fraction(1, 1000)), limits, time.time(), f"q{i}")
        print(r.charge_id, flush=True)  # reported only after charge() returned
    """
)


def test_t5c_kill_at_random_times(pg: PgEnv) -> None:
    """SIGKILL an instance at 4 random moments of a busy charging loop: the ledger holds every
    reported charge, its totals match its log, and it accepts charges afterwards."""
    seen = 0
    for i in range(4):
        schema = f"crash_{os.getpid()}_{i}_{random.randrange(10**6)}"
        p = subprocess.Popen([sys.executable, "-c", _CRASHER, pg.ledger_dsn, schema], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        time.sleep(random.uniform(0.05, 0.4))
        os.kill(p.pid, signal.SIGKILL)
        out, _ = p.communicate(timeout=60)
        reported = {int(x) for x in out.split() if x.isdigit()}
        ids = {r[0] for r in pg.sql(f"SELECT id FROM {schema}.charges", database="ledger")}
        assert reported <= ids
        n, total = _consistent(pg, schema)
        assert n >= len(reported) and total == n * 10**9
        led = PostgresLedger(pg.ledger_dsn, schema=schema)
        led.charge("user0", "s", Cost("zcdp", Fraction(1, 1000)), _limits(user=PICO), 0.0, "after")
        led.close()
        seen += len(reported)
    assert seen > 0


# --- the engine race: two dpsql instances, one upstream PostgreSQL for data and ledger ----------------

_ENGINE_RACER = textwrap.dedent(
    """
    import sys, threading, time
    from dpsql.api import open_engine
    from dpsql.errors import BudgetExhausted

    policy, start, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    engine = open_engine(policy)
    ok, refused, other = [], [], []
    def go(i):
        session = engine.session(f"u{i}")
        session.execute("SET dp.epsilon = 1.0")
        while time.time() < start:
            time.sleep(0.0005)
        try:
            session.execute("SELECT department, COUNT(*) FROM visits GROUP BY department")
            ok.append(i)
        except BudgetExhausted:
            refused.append(i)
        except Exception as e:
            other.append(repr(e))
        finally:
            session.close()
    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    engine.close()
    print(len(ok), len(refused), len(other), other[:1])
    """
)


def test_two_engines_share_one_postgres_ledger(pg: PgEnv, tmp_path: Path) -> None:
    """Two dpsql instances (processes, each with an Engine over the upstream PostgreSQL) × 16
    threads (users u0…u15, each ample budget) run a query at ε=1 against one global budget: exactly
    the admissible number of queries is answered in total, and the spent ρ never exceeds it."""
    from dpsql.api import open_engine

    schema = f"engine_{os.getpid()}_{random.randrange(10**6)}"
    url = pg.ledger_dsn  # the policy's url; the schema is the default one, so use a fresh database
    pg.sql(f"CREATE DATABASE {schema} OWNER ledger", database="postgres")
    url = url.replace("/ledger?", f"/{schema}?")
    path = tmp_path / "policy.toml"
    users = "".join(f"[users.u{i}]\n" for i in range(16))
    path.write_text(policy_text(source_line(pg, "postgres"), ledger=f'url = "{url}"', epsilon=100.0, global_epsilon=3.0,
                                extra=users, replay="off"))  # the same user's identical query would replay
    engine = open_engine(path)
    try:
        session = engine.session("u0")
        session.execute("SET dp.epsilon = 1.0")
        _, noise = session.plan("SELECT department, COUNT(*) FROM visits GROUP BY department")
        assert noise is not None
        limit = {s.scope: s for s in session.budget()}["global"]
        assert limit.remaining_rho is not None
        admissible = int(limit.remaining_rho * PICO) // noise.cost.amount_pico
        assert 2 <= admissible <= 20
    finally:
        engine.close()
    start = time.time() + 3.0
    procs = [
        subprocess.Popen([sys.executable, "-c", _ENGINE_RACER, str(path), str(start), "16"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    accepted = refused = 0
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        a, r, o, first = out.strip().splitlines()[-1].split(" ", 3)
        assert o == "0", first
        accepted, refused = accepted + int(a), refused + int(r)
    assert accepted == admissible and accepted + refused == 32
    charges = asyncio.run(_count_charges(url))
    assert charges == (admissible, admissible * noise.cost.amount_pico)


async def _count_charges(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        n, total = await conn.fetchrow("SELECT count(*), coalesce(sum(main), 0) FROM dpsql_ledger.charges")
        return int(n), int(total)
    finally:
        await conn.close()


def test_largest_budget_spent_three_windows(ledger: PostgresLedger, pg: PgEnv) -> None:
    """The largest budget a policy accepts fits the bigint sums too: three windows of maximal charges
    end in clean 53400s, the unlimited session/global sums saturate at 2^63 − 1 instead of overflowing
    (the same scenario as tests/accountant/test_ledger_capacity.py, which has the negative control)."""
    import importlib.util

    from dpsql.accountant.capacity import LEDGER_MAX

    path = Path(__file__).parents[1] / "accountant" / "test_ledger_capacity.py"
    spec = importlib.util.spec_from_file_location("ledger_capacity_scenario", path)
    assert spec is not None and spec.loader is not None
    scenario = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scenario)
    policy = scenario.largest_policy("zcdp")
    scenario.spend_the_largest_budget(ledger, policy)
    rows = dict(pg.sql(f"SELECT scope, max(main) FROM {ledger.schema}.totals GROUP BY scope", database="ledger"))
    assert rows["session"] == LEDGER_MAX and rows["global"] == LEDGER_MAX
