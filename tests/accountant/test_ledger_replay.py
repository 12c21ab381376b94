"""Replay slots in the SQLite ledger (accountant/replays.py): reserved by the charge in its own
transaction, never written by a refused or pre-empted charge, stored, pruned; owners that died are
recognised; a version-1 ledger is migrated once by processes opening it together."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import pytest

from dpsql.accountant.costs import Cost
from dpsql.accountant.filters import FilterLimit, ScopeLimits
from dpsql.accountant.replays import ReplayReservation, ReplaySlotTaken, owner_alive, owner_token, slot_state
from dpsql.accountant.sqlite_ledger import SCHEMA_VERSION, SqliteLedger
from dpsql.errors import BudgetExhausted

TENTH = Cost("zcdp", Fraction(1, 10))


def _limits(user: int) -> ScopeLimits:
    def f(scope: str, main: int | None) -> FilterLimit:
        return FilterLimit(scope, "zcdp", main, None, None, None, None, Fraction(1, 10**7))  # type: ignore[arg-type]

    return ScopeLimits("zcdp", f("session", None), f("user", user), None)


def _res(key: str, now: float, scope: str = "alice", pending: float = 30.0, life: float = 3600.0) -> ReplayReservation:
    return ReplayReservation(key, scope, now + pending, now + life, owner_token())


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def ledger(tmp_path: Path) -> SqliteLedger:
    return SqliteLedger(tmp_path / "ledger.sqlite")


def test_the_charge_reserves_and_a_second_charge_is_pre_empted(ledger: SqliteLedger, tmp_path: Path) -> None:
    now = time.time()
    r = ledger.charge("alice", "s", TENTH, _limits(10**12), now, "q", replay=_res("k", now))
    row = ledger.replay_lookup("k")
    assert row is not None and row.state == "pending" and row.charge_id == r.charge_id and slot_state(row, now) == "pending"
    with pytest.raises(ReplaySlotTaken):
        ledger.charge("alice", "s", TENTH, _limits(10**12), now, "q", replay=_res("k", now))
    assert _count(tmp_path / "ledger.sqlite", "charges") == 1  # pre-empted: nothing written
    assert ledger.replay_store("k", r.charge_id, b"answer", now, 10**6)
    row = ledger.replay_lookup("k")
    assert row is not None and slot_state(row, now) == "released" and row.payload == b"answer"
    assert slot_state(row, row.expires_at) == "free"  # the window ends
    with pytest.raises(ReplaySlotTaken):  # a released slot pre-empts too
        ledger.charge("alice", "s", TENTH, _limits(10**12), now, "q", replay=_res("k", now))


def test_a_refused_charge_reserves_nothing(ledger: SqliteLedger) -> None:
    now = time.time()
    with pytest.raises(BudgetExhausted):
        ledger.charge("alice", "s", TENTH, _limits(1), now, "q", replay=_res("k", now))
    assert ledger.replay_lookup("k") is None


def test_only_the_owning_charge_stores_or_drops(ledger: SqliteLedger) -> None:
    now = time.time()
    r = ledger.charge("alice", "s", TENTH, _limits(10**12), now, "q", replay=_res("k", now, pending=0.0))
    # the reservation lapsed (pending 0 s): another charge takes the slot over
    r2 = ledger.charge("alice", "s", TENTH, _limits(10**12), now + 1, "q", replay=_res("k", now + 1))
    assert not ledger.replay_store("k", r.charge_id, b"late", now + 2, 10**6)
    ledger.replay_abandon("k", r.charge_id)
    row = ledger.replay_lookup("k")
    assert row is not None and row.charge_id == r2.charge_id and row.state == "pending"
    ledger.replay_abandon("k", r2.charge_id)
    assert ledger.replay_lookup("k") is None


def test_the_store_is_bounded_per_scope(ledger: SqliteLedger) -> None:
    """Answers above the bound are not kept; the oldest of a scope go first; other scopes stay."""
    now = time.time()
    ids = {}
    for i, (key, scope) in enumerate([("a1", "alice"), ("a2", "alice"), ("b1", "bob"), ("a3", "alice")]):
        ids[key] = ledger.charge(scope, "s", TENTH, _limits(10**12), now + i, key, replay=_res(key, now + i, scope)).charge_id
    assert ledger.replay_store("a1", ids["a1"], b"x" * 400, now + 10, 1000)
    assert ledger.replay_store("a2", ids["a2"], b"y" * 400, now + 11, 1000)
    assert ledger.replay_store("b1", ids["b1"], b"z" * 900, now + 12, 1000)
    assert ledger.replay_store("a3", ids["a3"], b"w" * 400, now + 13, 1000)  # alice: 1200 > 1000, a1 goes
    assert ledger.replay_lookup("a1") is None
    assert all(ledger.replay_lookup(k) is not None for k in ("a2", "a3", "b1"))
    r = ledger.charge("alice", "s", TENTH, _limits(10**12), now, "big", replay=_res("big", now))
    assert not ledger.replay_store("big", r.charge_id, b"v" * 1001, now, 1000)  # larger than the bound alone
    assert ledger.replay_lookup("big") is None


def test_owner_tokens() -> None:
    me = owner_token()
    assert owner_alive(me) is True
    host = me.split("/")[0]
    dead = subprocess.run([sys.executable, "-c", "from dpsql.accountant.replays import owner_token; print(owner_token())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert dead.startswith(host + "/") and owner_alive(dead) is False  # that process has exited
    assert owner_alive(f"{host}/{os.getpid()}/0") is True  # our own pid
    assert owner_alive(f"{host}/1/0") is False  # pid 1 runs, but it started at another time
    assert owner_alive("another-host/1/1") is None  # cannot be known


_OPEN = textwrap.dedent(
    """
    import sys, time
    from dpsql.accountant.sqlite_ledger import SqliteLedger
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.0005)
    SqliteLedger(sys.argv[1]).close()
    print("ok")
    """
)


def test_a_version_1_file_is_migrated_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    led = SqliteLedger(path)
    led.charge("alice", "s", TENTH, _limits(10**12), 0.0, "q")
    led.close()
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE replay; UPDATE meta SET value = '1' WHERE key = 'schema_version'; PRAGMA user_version = 1;")
    conn.close()
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN, str(path), str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == "ok", err
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "2"
        assert conn.execute("SELECT count(*) FROM charges").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM replay").fetchone()[0] == 0
    finally:
        conn.close()
