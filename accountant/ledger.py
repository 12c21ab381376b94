"""The durable budget ledger: atomic check-and-charge against the session, user and global filters.

:class:`Ledger` holds the storage-agnostic logic; a backend
(:class:`~dpsql.accountant.sqlite_ledger.SqliteLedger`, or
:class:`~dpsql.accountant.postgres_ledger.PostgresLedger` shared by several instances) only provides a
serialisable write transaction and a read snapshot with a handful of primitive operations
(:class:`LedgerTx`).

Guarantees of :meth:`Ledger.charge`:

* **Atomic.** The spent sums of all three filters are read, checked and updated in ONE write
  transaction that excludes every other writer (SQLite ``BEGIN IMMEDIATE``, PostgreSQL
  ``SELECT … FOR UPDATE`` on a lock row), so concurrent
  queries from any number of threads and processes can never overspend a filter together.
* **Durable before data is read.** It returns only after the commit is on disk; the engine
  runs the query only after it returns. A crash after the commit leaves the charge in place.
* **Exact.** All sums are integers (ρ/ε in 1e-12, δ in 1e-18 units); costs round up, limits down.
* **Never overflows.** Sums are 64-bit integers in both backends; policy load keeps every limit
  (plus one maximal charge) within range (:mod:`~dpsql.accountant.capacity`) and sums without a
  limit saturate at ``LEDGER_MAX``.
* **Never refunds.** The ``charges`` table is append-only; a refused query writes nothing.
* **Fails closed.** Any storage problem raises :class:`~dpsql.errors.LedgerUnavailable`, and so
  does a ledger used with a different accounting mode than the policy's.

Replay slots (:mod:`dpsql.accountant.replays`) live in the same store: ``charge(replay=…)``
reserves the slot in the charge's own transaction, or — when the slot already holds an answer or
another live query reserved it — raises :class:`~dpsql.accountant.replays.ReplaySlotTaken`
without charging. So a stored answer is always one that was paid for, and identical queries
racing each other are charged once.
"""

from __future__ import annotations

import datetime as _dt
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dpsql.accountant.calibration import cks20_epsilon
from dpsql.accountant.capacity import LEDGER_MAX
from dpsql.accountant.costs import Accounting, Cost
from dpsql.accountant.filters import BudgetStatus, FilterLimit, Scope, ScopeLimits, report
from dpsql.accountant.replays import ReplayReservation, ReplayRow, ReplaySlotTaken, slot_state
from dpsql.accountant.units import from_atto, from_pico
from dpsql.errors import BudgetExhausted, LedgerUnavailable

if TYPE_CHECKING:
    from dpsql.policy import Policy

GLOBAL_KEY = "*"


class LedgerTx(Protocol):
    """The primitive operations a backend offers inside one transaction."""

    def get_meta(self, key: str) -> str | None:
        """The metadata value stored under ``key``, or None."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Store a metadata value (write transactions only)."""
        ...

    def spent(self, scope: Scope, key: str, window_start: int, window_len: int) -> tuple[int, int]:
        """(main, delta) spent so far by one filter in one window, in integer units; (0, 0) if none."""
        ...

    def set_spent(self, scope: Scope, key: str, window_start: int, window_len: int, main: int, delta: int) -> None:
        """Overwrite the running sums of one filter window (write transactions only)."""
        ...

    def insert_charge(self, at: float, user: str, session_id: str, query_hash: str, cost: Cost, main: int, delta: int) -> int:
        """Append one row to the charge log and return its id (write transactions only)."""
        ...

    def replay_get(self, key: str) -> ReplayRow | None:
        """The replay slot stored under ``key``, or None."""
        ...

    def replay_put(self, row: ReplayRow) -> None:
        """Insert or replace the replay slot ``row.key`` (write transactions only)."""
        ...

    def replay_release(self, key: str, charge_id: int, payload: bytes, released_at: float) -> bool:
        """Store ``payload`` in the pending slot ``key`` if ``charge_id`` still owns it; True if stored."""
        ...

    def replay_drop(self, key: str, charge_id: int) -> None:
        """Delete the slot ``key`` if ``charge_id`` owns it (write transactions only)."""
        ...

    def replay_prune(self, scope: str, now: float, max_bytes: int) -> None:
        """Delete expired slots, pending slots long abandoned, and the oldest released answers of
        ``scope`` beyond ``max_bytes`` in total (write transactions only)."""
        ...


@dataclass(frozen=True)
class QueryGuarantee:
    """The (ε, δ) a query states (``dp.epsilon``/``dp.delta``), for messages only; under zcdp
    ``conversion_delta`` is the δ of its ρ → ε conversion (δ less the partition-selection share)."""

    epsilon: Fraction
    delta: Fraction
    conversion_delta: Fraction | None = None


@dataclass(frozen=True)
class Receipt:
    """Proof that a query's cost was durably charged: returned only after the commit."""

    charge_id: int
    user: str
    session_id: str
    query_hash: str
    cost: Cost
    at: float


def _fmt(x: Fraction | float) -> str:
    return f"{float(x):.6g}"


def _when(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Ledger(ABC):
    """Storage-agnostic ledger logic. Subclasses implement :meth:`_write` and :meth:`_read`."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[LedgerTx]:
        """A write transaction that excludes all other writers; commits durably on normal exit."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[LedgerTx]:
        """A consistent read-only snapshot."""

    def _write_relaxed(self) -> AbstractContextManager[LedgerTx]:
        """A write transaction that may skip the flush at commit (storing or dropping a replay
        answer: losing one to a power failure only means the next identical query is charged).
        Atomic like :meth:`_write`; the default is :meth:`_write` itself."""
        return self._write()

    @abstractmethod
    def close(self) -> None:
        """Release the backend's connections."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the ledger lives (for messages and logs)."""

    # -----------------------------------------------------------------------------------------

    def charge(
        self,
        user: str,
        session_id: str,
        cost: Cost,
        limits: ScopeLimits,
        now: float,
        query_hash: str,
        *,
        guarantee: QueryGuarantee | None = None,
        replay: ReplayReservation | None = None,
    ) -> Receipt:
        """Check all filters and record ``cost`` atomically and durably, or refuse.

        In one transaction: read the session, user (current window) and global (current window
        or lifetime) sums; if any filter would exceed its limit raise BudgetExhausted (nothing
        is written); else append the charge and update the sums, commit, and only then return
        the receipt. Raises LedgerUnavailable on any storage failure. ``guarantee`` only words
        a refusal in (ε, δ).

        With ``replay``, the same transaction first reads that replay slot: if it holds an answer
        or a live reservation, ReplaySlotTaken is raised and nothing is written; otherwise the
        charge also reserves the slot (pending, owned by this charge).
        """
        if cost.accounting != limits.accounting:
            raise ValueError("the cost and the limits use different accounting modes")
        main, delta = cost.amount_pico, cost.delta_atto
        keys = {"session": session_id, "user": user, "global": GLOBAL_KEY}
        filters = limits.filters()
        with self._write() as tx:
            self._check_accounting(tx, limits.accounting)
            if replay is not None:
                row = tx.replay_get(replay.key)
                if row is not None and slot_state(row, now) != "free":
                    raise ReplaySlotTaken(row)
            windows = {f.scope: f.window(now) for f in filters}
            windows.setdefault("global", (0, 0))  # recorded even without a global budget
            spent = {scope: tx.spent(scope, keys[scope], *w) for scope, w in windows.items()}
            for f in filters:
                self._admit(f, cost, main, delta, spent[f.scope], now, user, guarantee)
            charge_id = tx.insert_charge(now, user, session_id, query_hash, cost, main, delta)
            if replay is not None:
                tx.replay_put(ReplayRow(replay.key, replay.scope, charge_id, "pending", now, replay.pending_until,
                                        replay.expires_at, replay.owner))
            limited = {f.scope: f for f in filters}
            for scope, (ws, wl) in windows.items():
                m, d = spent[scope]
                f = limited.get(scope)
                # A limited sum stays ≤ its limit (checked above; policy load keeps limits in range);
                # a sum without a limit saturates rather than overflow the 64-bit column.
                m = m + main if f is not None and f.main is not None else min(m + main, LEDGER_MAX)
                d = d + delta if f is not None and f.delta is not None else min(d + delta, LEDGER_MAX)
                tx.set_spent(scope, keys[scope], ws, wl, m, d)
        return Receipt(charge_id, user, session_id, query_hash, cost, now)

    def replay_lookup(self, key: str) -> ReplayRow | None:
        """The replay slot ``key`` as last committed (a read snapshot; None if there is none)."""
        with self._read() as tx:
            return tx.replay_get(key)

    def replay_store(self, key: str, charge_id: int, payload: bytes, now: float, max_bytes: int) -> bool:
        """Store the released answer of charge ``charge_id`` in its pending slot, durably, then prune
        the slot's scope to ``max_bytes``; False (nothing stored) if the charge no longer owns the
        slot or the answer alone exceeds ``max_bytes`` (then the slot is dropped). The commit need
        not be flushed: an answer lost to a power failure is charged again, never given for free."""
        with self._write_relaxed() as tx:
            row = tx.replay_get(key)
            if row is None or row.charge_id != charge_id or row.state != "pending":
                return False
            if len(payload) > max_bytes:
                tx.replay_drop(key, charge_id)
                return False
            stored = tx.replay_release(key, charge_id, payload, now)
            tx.replay_prune(row.scope, now, max_bytes)
            return stored

    def replay_abandon(self, key: str, charge_id: int) -> None:
        """Drop the pending slot of charge ``charge_id`` (its query failed after the charge), so
        identical queries waiting for it go on to be charged themselves."""
        with self._write_relaxed() as tx:
            tx.replay_drop(key, charge_id)

    def status(self, user: str, session_id: str, limits: ScopeLimits, now: float) -> list[BudgetStatus]:
        """Spent and remaining budget of each filter (session, user, global if configured) at ``now``."""
        keys = {"session": session_id, "user": user, "global": GLOBAL_KEY}
        rows: list[BudgetStatus] = []
        with self._read() as tx:
            self._check_accounting(tx, limits.accounting, write=False)
            for f in limits.filters():
                m, d = tx.spent(f.scope, keys[f.scope], *f.window(now))
                rows.append(report(f, m, d, now))
        return rows

    # -----------------------------------------------------------------------------------------

    def _check_accounting(self, tx: LedgerTx, accounting: Accounting, *, write: bool = True) -> None:
        stored = tx.get_meta("accounting")
        if stored is None:
            if write:
                tx.set_meta("accounting", accounting)
            return
        if stored != accounting:
            raise LedgerUnavailable(
                f"the budget ledger at {self.location} records {stored} accounting but the policy "
                f"now uses {accounting}; spent budgets cannot be converted between modes",
                hint="restore the policy's accounting mode, or point [privacy.ledger] at a new ledger file",
            )

    @staticmethod
    def _admit(
        f: FilterLimit,
        cost: Cost,
        main: int,
        delta: int,
        spent: tuple[int, int],
        now: float,
        user: str,
        guarantee: QueryGuarantee | None = None,
    ) -> None:
        spent_main, spent_delta = spent
        what = {"session": "session", "user": f"user {user!r}", "global": "global (all users)"}[f.scope]
        wait = ""
        if (t := f.next_replenish(now)) is not None:
            wait = f", or wait until {_when(t)} when the {f.scope} budget replenishes"
        elif f.scope == "session":
            wait = ", or start a new session"
        if f.main is not None and spent_main + main > f.main:
            left = from_pico(max(0, f.main - spent_main))
            raise BudgetExhausted(
                f"privacy budget exhausted: {_cost_words(f, main, left, guarantee, what)}",
                hint=f"lower dp.epsilon{wait}",
            )
        if f.delta is not None and spent_delta + delta > f.delta:
            left_d = from_atto(max(0, f.delta - spent_delta))
            raise BudgetExhausted(
                f"privacy budget exhausted: this query spends δ={_fmt(from_atto(delta))} on releasing "
                f"group keys but the {what} budget has δ={_fmt(left_d)} left",
                hint=f"lower dp.delta, or group by columns with declared values{wait}",
            )


def _cost_words(f: FilterLimit, main: int, left: Fraction, g: QueryGuarantee | None, what: str) -> str:
    """"this query costs ε=… (δ=…) but the <what> budget has ε=… left at δ=…", always in (ε, δ).

    Under zcdp the remaining ρ is stated as the largest ε one more query at the same δ could use
    (CKS20 at the query's conversion δ); without a stated guarantee, at the filter's conversion δ."""
    if f.accounting == "basic":
        spent_eps = g.epsilon if g is not None else from_pico(main)
        d = f" (δ={_fmt(g.delta)})" if g is not None else ""
        return f"this query costs ε={_fmt(spent_eps)}{d} but the {what} budget has ε={_fmt(left)} left"
    if g is not None:
        conv = g.conversion_delta if g.conversion_delta is not None else g.delta
        room = cks20_epsilon(left, conv) if left > 0 else 0.0
        return (f"this query costs ε={_fmt(g.epsilon)} (δ={_fmt(g.delta)}) but the {what} budget has "
                f"ε={_fmt(room)} left at δ={_fmt(g.delta)}")
    conv_d = f.conversion_delta if f.conversion_delta is not None else Fraction(1, 10**7)
    cost_eps = cks20_epsilon(from_pico(main), conv_d)
    room = cks20_epsilon(left, conv_d) if left > 0 else 0.0
    return (f"this query costs ε={_fmt(cost_eps)} at δ={_fmt(conv_d)} but the {what} budget has "
            f"ε={_fmt(room)} left at δ={_fmt(conv_d)}")


def open_ledger(policy: Policy) -> Ledger:
    """The ledger the policy configures: PostgreSQL at ``[privacy.ledger] url`` (shared by several
    dpsql instances), else SQLite at ``policy.ledger_path``. Raises LedgerUnavailable if it
    cannot be opened."""
    if policy.ledger.url is not None:
        from dpsql.accountant.postgres_ledger import PostgresLedger

        return PostgresLedger(policy.ledger.url)
    from dpsql.accountant.sqlite_ledger import SqliteLedger

    return SqliteLedger(Path(policy.ledger_path))
