"""Replay of identical private queries (DESIGN §1, issue 12): the stored noisy answer, free.

An identical query — same bounded SQL and plan, ε, δ, policy and data version, and (with
``replay = "user"``) the same user — gets the answer its first run paid for, byte for byte, at no
charge; anything else that differs is a new, charged release. Races and crashes never give a free
answer nobody paid for.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_lib import Harness

from dpsql.accountant.replays import ReplayRow
from dpsql.api import open_engine
from dpsql.errors import DPSQLError, QueryCanceled
from dpsql.proxy.engine import Engine, Result

SQL = "SELECT department, COUNT(*) AS n, AVG(cost) AS avg_cost FROM visits GROUP BY department"
SEL = "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis"  # partition selection (δ spent too)


def _charges(ledger: Path) -> int:
    conn = sqlite3.connect(ledger)
    try:
        return int(conn.execute("SELECT count(*) FROM charges").fetchone()[0])
    finally:
        conn.close()


def _ledger(policy: Path) -> Path:
    return policy.with_name(f"{policy.stem}-ledger.sqlite")


def _replayed(r: Result) -> bool:
    return r.notices[0].startswith("dpsql: replayed, no budget spent")


def test_identical_query_replays_the_same_answer_for_free(make_harness: Callable[..., Harness]) -> None:
    """Second run: the same rows (types and values exactly), a "replayed" notice, no charge and no
    statement run on the backend — not even the public key set."""
    h = make_harness()
    s = h.engine.session("alice")
    first = s.execute(SQL)
    spent = s.budget()
    executed = len(h.recorder.executed())
    again = h.engine.session("alice").execute(SQL)
    assert again.rows == first.rows and again.columns == first.columns and again.types == first.types
    assert [type(v) for r in again.rows for v in r] == [type(v) for r in first.rows for v in r]
    assert _replayed(again) and not _replayed(first)
    assert "no budget spent" in again.notices[0] and "charged ε=1, δ=1e-07" in again.notices[0]
    assert h.recorder.kinds().count("charge") == 1
    assert s.budget() == spent
    assert len(h.recorder.executed()) == executed  # a replay reads nothing


def test_replay_survives_a_restart(write_policy: Callable[..., Path]) -> None:
    """The answer is stored in the ledger file: a new engine (process restart) replays it."""
    policy = write_policy()
    engine = open_engine(policy)
    try:
        first = engine.session("alice").execute(SEL)
    finally:
        engine.close()
    assert _charges(_ledger(policy)) == 1
    engine = open_engine(policy)
    try:
        again = engine.session("alice").execute(SEL)
    finally:
        engine.close()
    assert _replayed(again) and again.rows == first.rows
    assert _charges(_ledger(policy)) == 1


@pytest.mark.parametrize(
    ("setting", "other_sql"),
    [
        (None, "SELECT department, COUNT(*) AS n, AVG(cost) AS avg_cost FROM visits WHERE age >= 0 GROUP BY department"),
        ("SET dp.epsilon = 0.5", SQL),
        ("SET dp.delta = 1e-8", SQL),
    ],
    ids=["sql", "epsilon", "delta"],
)
def test_a_different_query_or_setting_is_charged(make_harness: Callable[..., Harness], setting: str | None, other_sql: str) -> None:
    """A different SQL text, ε or δ is another release: charged, not replayed."""
    h = make_harness()
    s = h.engine.session("alice")
    s.execute(SQL)
    if setting is not None:
        s.execute(setting)
    r = s.execute(other_sql)
    assert not _replayed(r)
    assert h.recorder.kinds().count("charge") == 2


def test_user_scope_and_global_scope(make_harness: Callable[..., Harness]) -> None:
    """``replay = "user"``: bob does not get alice's answer (he is charged); ``"global"``: he does."""
    per_user = make_harness()
    per_user.engine.session("alice").execute(SQL)
    assert not _replayed(per_user.engine.session("bob").execute(SQL))
    assert per_user.recorder.kinds().count("charge") == 2
    shared = make_harness(replay="global")
    first = shared.engine.session("alice").execute(SQL)
    bob = shared.engine.session("bob").execute(SQL)
    assert _replayed(bob) and bob.rows == first.rows
    assert shared.recorder.kinds().count("charge") == 1
    assert "alice" not in bob.notices[0]  # who paid is not told


def test_replay_off_charges_every_time(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(replay="off")
    s = h.engine.session("alice")
    a, b = s.execute(SQL), s.execute(SQL)
    assert not _replayed(a) and not _replayed(b)
    assert h.recorder.kinds().count("charge") == 2


def test_a_new_data_version_is_charged(write_policy: Callable[..., Path], hospital: Path, tmp_path: Path) -> None:
    """The data version is the served file's identity: the same bytes at another mtime (the
    operator replaced the file) is a new version, so the same query is charged again; the same
    file unchanged is the same version."""
    db = tmp_path / "copy.duckdb"
    shutil.copyfile(hospital / "hospital.duckdb", db)
    policy = write_policy(database=db)
    for expect_replay in (False, True):
        engine = open_engine(policy)
        try:
            assert _replayed(engine.session("alice").execute(SQL)) is expect_replay
        finally:
            engine.close()
    st = os.stat(db)
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    engine = open_engine(policy)
    try:
        assert not _replayed(engine.session("alice").execute(SQL))
    finally:
        engine.close()
    assert _charges(_ledger(policy)) == 2


def test_fifty_concurrent_identical_queries_are_charged_once(make_harness: Callable[..., Harness]) -> None:
    """50 sessions of one user send the same query at once (4 run, the rest queue): exactly one
    charge, 50 identical answers, no refusal."""
    h = make_harness()
    results: list[Result] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(50)

    def go() -> None:
        session = h.engine.session("alice")
        barrier.wait()
        try:
            results.append(session.execute(SEL))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(results) == 50
    assert h.recorder.kinds().count("charge") == 1
    assert all(r.rows == results[0].rows for r in results)
    assert sum(not _replayed(r) for r in results) == 1


def test_a_query_that_fails_after_its_charge_frees_the_slot(make_harness: Callable[..., Harness]) -> None:
    """The first run fails after its charge (the bounded SQL errors): nothing is stored, the next
    identical query is charged and answered — never a free replay of an answer that does not exist."""
    failing = {"on": True}
    h = make_harness(fail_on=lambda sql: failing["on"] and "__dp_rows" in sql)
    s = h.engine.session("alice")
    with pytest.raises(DPSQLError):
        s.execute(SQL)
    failing["on"] = False
    r = s.execute(SQL)
    assert not _replayed(r)
    assert h.recorder.kinds().count("charge") == 2
    assert _replayed(s.execute(SQL))


def _pending(engine: Engine, key: str, owner: str, pending_for: float) -> None:
    """Write a pending slot for ``key`` as another process would have (charge 1 of the log)."""
    now = time.time()
    with engine.ledger._write() as tx:  # a test-only look inside the ledger
        tx.replay_put(ReplayRow(key, "alice", 10**9, "pending", now, now + pending_for, now + 3600, owner))


def _key(engine: Engine, sql: str) -> str:
    s = engine.session("alice")
    rw, noise = s.plan(sql)
    assert noise is not None
    ticket = engine.replays.ticket("alice", rw, noise)
    assert ticket is not None
    return ticket.key


def test_a_pending_slot_of_a_dead_process_is_taken_over(make_harness: Callable[..., Harness]) -> None:
    """A slot reserved by a process of this host that no longer runs (killed between its charge and
    its store) holds no answer: the next query is charged at once and answered."""
    h = make_harness()
    dead = f"{socket.gethostname()}/999999999/1"
    _pending(h.engine, _key(h.engine, SQL), dead, 60.0)
    t0 = time.monotonic()
    r = h.engine.session("alice").execute(SQL)
    assert time.monotonic() - t0 < 5.0
    assert not _replayed(r) and h.recorder.kinds().count("charge") == 1


def test_a_pending_slot_of_another_host_is_waited_for_then_taken_over(make_harness: Callable[..., Harness]) -> None:
    """A slot whose owner cannot be checked (another host) is waited for until its deadline, then
    the waiting query is charged itself; when the slot outlives the waiter's statement timeout the
    waiter gets 57014 and is charged nothing."""
    h = make_harness(extra="[limits]\nstatement_timeout = \"2s\"\n")
    engine = h.engine
    _pending(engine, _key(engine, SQL), "otherhost/1/1", 1.0)
    t0 = time.monotonic()
    r = engine.session("alice").execute(SQL)
    assert 0.9 <= time.monotonic() - t0 < 10 and not _replayed(r)
    assert h.recorder.kinds().count("charge") == 1
    other = "SELECT department, COUNT(*) FROM visits GROUP BY department"
    _pending(engine, _key(engine, other), "otherhost/1/1", 60.0)
    with pytest.raises(QueryCanceled) as e:
        engine.session("alice").execute(other)
    assert e.value.sqlstate == "57014" and "no charge" in (e.value.hint or "")
    assert h.recorder.kinds().count("charge") == 1


def test_an_answer_larger_than_the_store_is_not_kept(make_harness: Callable[..., Harness]) -> None:
    """``replay_size`` bounds the stored answers: an answer above it is not stored, so the same
    query is charged again (and smaller answers still replay)."""
    h = make_harness(privacy_extra='replay_size = "1KiB"')
    s = h.engine.session("alice")
    s.execute("SET dp.rounding = 'off'")  # full-precision floats: the answer is well above 1 KiB
    big = "SELECT department_id, department, sex, AVG(cost), AVG(age) FROM visits GROUP BY department_id, department, sex"
    s.execute(big)
    assert not _replayed(s.execute(big))
    s.execute("SELECT COUNT(*) FROM visits")
    assert _replayed(s.execute("SELECT COUNT(*) FROM visits"))
    assert h.recorder.kinds().count("charge") == 3


def test_the_replay_window_ends(make_harness: Callable[..., Harness]) -> None:
    """After ``replay_window`` the stored answer is no longer replayed: the query is charged again."""
    h = make_harness(privacy_extra='replay_window = "1s"')
    s = h.engine.session("alice")
    s.execute(SQL)
    assert _replayed(s.execute(SQL))
    time.sleep(1.1)
    assert not _replayed(s.execute(SQL))
    assert h.recorder.kinds().count("charge") == 2


def test_a_query_that_costs_nothing_says_so(make_harness: Callable[..., Harness]) -> None:
    """A query whose answer follows from the policy (declared key values, no aggregate) spends
    nothing, and its notice says exactly that (not the session's ε)."""
    h = make_harness()
    r = h.engine.session("alice").execute("SELECT department FROM visits GROUP BY department")
    assert r.notices[0].startswith("dpsql: this query spent nothing")
    assert "ε=1," not in r.notices[0]
