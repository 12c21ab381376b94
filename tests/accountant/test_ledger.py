"""The SQLite ledger: atomic, durable, exact, append-only, fail-closed (security.md R22–R25, T5)."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from fractions import Fraction
from pathlib import Path

import pytest

from dpsql.accountant.costs import Cost
from dpsql.accountant.filters import FilterLimit, ScopeLimits, budget_filter
from dpsql.accountant.ledger import open_ledger
from dpsql.accountant.sqlite_ledger import SqliteLedger
from dpsql.errors import BudgetExhausted, LedgerUnavailable
from dpsql.policy import Budget

CONV = Fraction(1, 10**7)
RHO = Fraction(1, 10)


def limit(
    scope: str,
    main: int | None,
    delta: int | None = None,
    window: float | None = None,
    accounting: str = "zcdp",
) -> FilterLimit:
    return FilterLimit(scope, accounting, main, delta, window, None, None, CONV if accounting == "zcdp" else None)  # type: ignore[arg-type]


def limits(
    user: int | None = 10**12,
    session: int | None = None,
    glob: int | None = None,
    *,
    user_delta: int | None = None,
    window: float | None = None,
    accounting: str = "zcdp",
) -> ScopeLimits:
    return ScopeLimits(
        accounting,  # type: ignore[arg-type]
        limit("session", session, accounting=accounting),
        limit("user", user, user_delta, window, accounting),
        limit("global", glob, accounting=accounting) if glob is not None else None,
    )


@pytest.fixture
def ledger(tmp_path: Path):
    led = SqliteLedger(tmp_path / "ledger.sqlite")
    yield led
    led.close()


def rho(x: Fraction = RHO, delta: Fraction = Fraction(0)) -> Cost:
    return Cost("zcdp", x, delta)


# ---------------------------------------------------------------------------------------------
# Charging


def test_charge_until_exhausted(ledger: SqliteLedger) -> None:
    lim = limits(user=10**12)
    receipts = [ledger.charge("alice", "s1", rho(), lim, 1000.0, f"q{i}") for i in range(10)]
    assert [r.charge_id for r in receipts] == list(range(1, 11))
    with pytest.raises(BudgetExhausted) as info:
        ledger.charge("alice", "s1", rho(), lim, 1000.0, "q10")
    e = info.value
    assert e.sqlstate.startswith("53")
    # stated in (ε, δ), never in ρ alone: ρ = 0.1 is ε ≈ 2.348 at the filter's conversion δ = 1e-7 (CKS20)
    assert "user 'alice'" in e.message and "costs ε=2.34835 at δ=1e-07" in e.message and "ε=0 left at δ=1e-07" in e.message
    assert "ρ" not in e.message
    assert e.hint is not None and "lower dp.epsilon" in e.hint
    # a refused query writes nothing; a smaller one that fits is still refused only if it does not fit
    assert _count(ledger) == 10
    ledger.charge("bob", "s2", rho(), lim, 1000.0, "q")  # another user has their own budget


def test_exact_arithmetic_at_the_limit(ledger: SqliteLedger) -> None:
    third = Fraction(1, 3)  # 333333333334 pico each (rounded up): 3 of them exceed 1.0
    lim = limits(user=10**12)
    ledger.charge("u", "s", rho(third), lim, 0.0, "a")
    ledger.charge("u", "s", rho(third), lim, 0.0, "b")
    with pytest.raises(BudgetExhausted):
        ledger.charge("u", "s", rho(third), lim, 0.0, "c")
    ledger.charge("u", "s", rho(Fraction(333333333332, 10**12)), lim, 0.0, "d")  # exactly fills it
    with pytest.raises(BudgetExhausted):
        ledger.charge("u", "s", rho(Fraction(1, 10**13)), lim, 0.0, "e")  # rounds up to 1 pico


def test_session_and_global_filters(ledger: SqliteLedger) -> None:
    lim = limits(user=10**12, session=3 * 10**11, glob=5 * 10**11)
    for _ in range(3):
        ledger.charge("alice", "s1", rho(), lim, 0.0, "q")
    with pytest.raises(BudgetExhausted) as info:
        ledger.charge("alice", "s1", rho(), lim, 0.0, "q")
    assert "session budget" in info.value.message and "new session" in (info.value.hint or "")
    ledger.charge("alice", "s2", rho(), lim, 0.0, "q")
    ledger.charge("bob", "s3", rho(), lim, 0.0, "q")
    with pytest.raises(BudgetExhausted) as info:  # 5 × 0.1 spent across users: the global cap
        ledger.charge("carol", "s4", rho(), lim, 0.0, "q")
    assert "global" in info.value.message


def test_delta_filter(ledger: SqliteLedger) -> None:
    lim = limits(user=10**12, user_delta=10**12)  # δ cap 1e-6
    ledger.charge("u", "s", rho(Fraction(1, 100), Fraction(6, 10**7)), lim, 0.0, "q")
    with pytest.raises(BudgetExhausted) as info:
        ledger.charge("u", "s", rho(Fraction(1, 100), Fraction(6, 10**7)), lim, 0.0, "q")
    assert "δ=" in info.value.message and "dp.delta" in (info.value.hint or "")


def test_window_replenishes(ledger: SqliteLedger) -> None:
    lim = limits(user=2 * 10**11, window=3600.0)
    t0 = 3600.0 * 1000 + 10
    ledger.charge("u", "s", rho(), lim, t0, "q")
    ledger.charge("u", "s", rho(), lim, t0 + 100, "q")
    with pytest.raises(BudgetExhausted) as info:
        ledger.charge("u", "s", rho(), lim, t0 + 3589, "q")
    assert "wait until" in (info.value.hint or "") and "UTC" in (info.value.hint or "")
    ledger.charge("u", "s", rho(), lim, 3600.0 * 1001, "q")  # the next window starts fresh
    rows = ledger.status("u", "s", lim, 3600.0 * 1001 + 5)
    user = next(r for r in rows if r.scope == "user")
    assert user.spent_rho == RHO and user.next_replenish == 3600.0 * 1002
    session = next(r for r in rows if r.scope == "session")
    assert session.spent_rho == 3 * RHO  # the session is not windowed


def test_status_reports_every_scope(ledger: SqliteLedger) -> None:
    b = Budget(Fraction(10), Fraction(1, 10**6))
    lim = ScopeLimits(
        "zcdp",
        budget_filter("session", "zcdp", b, session_epsilon=Fraction(3)),
        budget_filter("user", "zcdp", b),
        budget_filter("global", "zcdp", Budget(Fraction(40), Fraction(1, 10**5))),
    )
    ledger.charge("u", "s", rho(RHO, Fraction(1, 10**8)), lim, 0.0, "q")
    rows = ledger.status("u", "s", lim, 0.0)
    assert [r.scope for r in rows] == ["session", "user", "global"]
    assert all(r.spent_rho == RHO and r.spent_delta == Fraction(1, 10**8) for r in rows)
    assert rows[0].remaining_delta is None  # the session has no δ limit of its own
    assert rows[1].remaining_delta == Fraction(9, 10**7) - Fraction(1, 10**8)


def test_receipt_means_committed(ledger: SqliteLedger) -> None:
    r = ledger.charge("u", "s", rho(), limits(), 5.0, "hash")
    other = sqlite3.connect(ledger.path)  # an independent connection sees the row at once
    row = other.execute("SELECT user, session, query_hash, main, amount FROM charges WHERE id = ?", (r.charge_id,))
    assert row.fetchone() == ("u", "s", "hash", 10**11, "1/10")
    other.close()


def test_durability_settings(ledger: SqliteLedger) -> None:
    conn = ledger._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_charge_log_is_append_only(ledger: SqliteLedger) -> None:
    ledger.charge("u", "s", rho(), limits(), 0.0, "q")
    conn = sqlite3.connect(ledger.path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE charges SET main = 0")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM charges")
    conn.close()


def test_accounting_mode_cannot_change(ledger: SqliteLedger) -> None:
    ledger.charge("u", "s", rho(), limits(), 0.0, "q")
    basic = limits(accounting="basic")
    with pytest.raises(LedgerUnavailable, match="zcdp accounting"):
        ledger.charge("u", "s", Cost("basic", Fraction(1, 10)), basic, 0.0, "q")
    with pytest.raises(LedgerUnavailable):
        ledger.status("u", "s", basic, 0.0)
    with pytest.raises(ValueError):
        ledger.charge("u", "s", Cost("basic", Fraction(1, 10)), limits(), 0.0, "q")


def test_many_ledger_objects_and_threads_share_one_file(tmp_path: Path) -> None:
    a, b = SqliteLedger(tmp_path / "l.sqlite"), SqliteLedger(tmp_path / "l.sqlite")
    a.charge("u", "s", rho(), limits(), 0.0, "q")
    t = threading.Thread(target=lambda: b.charge("u", "s", rho(), limits(), 0.0, "q"))
    t.start()
    t.join()
    assert a.status("u", "s", limits(), 0.0)[1].spent_rho == 2 * RHO
    a.close()
    b.close()


def _count(ledger: SqliteLedger) -> int:
    conn = sqlite3.connect(ledger.path)
    n = conn.execute("SELECT count(*) FROM charges").fetchone()[0]
    conn.close()
    return n


# ---------------------------------------------------------------------------------------------
# Creation and fail-closed opening


def test_creation_is_logged_and_reopen_is_silent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "new.sqlite"
    with caplog.at_level(logging.WARNING, logger="dpsql.accountant.ledger"):
        SqliteLedger(path).close()
    assert "created a new, empty privacy budget ledger" in caplog.text
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dpsql.accountant.ledger"):
        SqliteLedger(path).close()
    assert caplog.text == ""


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(LedgerUnavailable, match="does not exist"):
        SqliteLedger(tmp_path / "nope" / "ledger.sqlite")
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("content", [b"", b"this is not a database at all" * 100, os.urandom(8192)])
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(content)
    with pytest.raises(LedgerUnavailable):
        SqliteLedger(path)
    assert path.read_bytes() == content  # untouched


def test_another_applications_database(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE charges (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerUnavailable, match="not a dpsql ledger"):
        SqliteLedger(path)


def test_wrong_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    SqliteLedger(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerUnavailable, match="schema version 99"):
        SqliteLedger(path)


def test_corrupt_pages(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    led = SqliteLedger(path)
    for i in range(300):  # enough rows for several b-tree pages
        led.charge(f"user{i}", f"s{i}", rho(Fraction(1, 1000)), limits(), 0.0, "x" * 100)
    led.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[3 * 4096 : 5 * 4096] = os.urandom(2 * 4096)
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerUnavailable):
        SqliteLedger(path)


def test_deleted_while_open(ledger: SqliteLedger) -> None:
    ledger.charge("u", "s", rho(), limits(), 0.0, "q")
    os.unlink(ledger.path)
    with pytest.raises(LedgerUnavailable, match="missing"):
        ledger.charge("u", "s", rho(), limits(), 0.0, "q")
    with pytest.raises(LedgerUnavailable):
        ledger.status("u", "s", limits(), 0.0)
    errors: list[BaseException] = []

    def other_thread() -> None:  # a fresh connection must not silently create a new file
        try:
            ledger.charge("u", "s", rho(), limits(), 0.0, "q")
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert isinstance(errors[0], LedgerUnavailable)
    assert not ledger.path.exists()


def test_replaced_while_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    led = SqliteLedger(path)
    led.charge("u", "s", rho(), limits(), 0.0, "q")
    fresh = SqliteLedger(tmp_path / "other.sqlite")  # a valid, empty ledger swapped in
    fresh.close()
    os.replace(tmp_path / "other.sqlite", path)
    with pytest.raises(LedgerUnavailable, match="replaced"):
        led.charge("u", "s", rho(), limits(), 0.0, "q")
    led.close()


def test_open_ledger_from_policy(tmp_path: Path) -> None:
    from test_filters import make_policy

    pol = make_policy()
    object.__setattr__(pol, "file", tmp_path / "policy.toml")
    led = open_ledger(pol)
    assert Path(led.location) == tmp_path / "dpsql-ledger.sqlite"
    led.close()


def test_connections_of_finished_threads_are_closed(ledger: SqliteLedger) -> None:
    for i in range(20):
        t = threading.Thread(target=ledger.charge, args=("u", f"s{i}", rho(Fraction(1, 1000)), limits(), 0.0, "q"))
        t.start()
        t.join()
    assert len(ledger._conns) <= 2  # the main thread's and the last one's
    assert ledger.status("u", "s0", limits(), 0.0)[1].spent_rho == Fraction(20, 1000)


def test_a_locked_ledger_fails_closed_and_charges_nothing(tmp_path: Path) -> None:
    led = SqliteLedger(tmp_path / "l.sqlite", busy_timeout=0.2)
    holder = sqlite3.connect(led.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    with pytest.raises(LedgerUnavailable) as info:
        led.charge("u", "s", rho(), limits(), 0.0, "q")
    assert "retry" in (info.value.hint or "")
    holder.execute("ROLLBACK")
    holder.close()
    assert _count(led) == 0
    led.charge("u", "s", rho(), limits(), 0.0, "q")
    led.close()
