"""The SQLite budget ledger: one file, safe for many threads and several processes at once.

Storage rules:

* WAL journal, ``PRAGMA synchronous=FULL`` (the WAL is fsynced at every commit), so a charge
  that :meth:`~dpsql.accountant.ledger.Ledger.charge` returned survives a crash or power loss.
* A charge is one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock excludes every other
  writer in every process; inside one process a lock also serialises this object's writers.
* One connection per thread (and per process after a fork).
* ``charges`` is append-only (triggers abort any UPDATE or DELETE); ``totals`` keeps the
  running sums per (scope, key, window). Every sum is a checked SQLite integer.
* ``replay`` holds the replay slots (:mod:`dpsql.accountant.replays`); a slot is reserved in the
  charge's own ``BEGIN IMMEDIATE`` transaction.
* Schema version 2 (version 1 had no ``replay`` table): a version-1 file is migrated at open,
  under ``BEGIN IMMEDIATE``, so several processes opening it at once migrate it once.

Fail-closed rules — each raises :class:`~dpsql.errors.LedgerUnavailable`:

* the directory of the ledger file does not exist;
* the file exists but is not a dpsql ledger (wrong ``application_id``/schema version, not a
  database, or ``PRAGMA quick_check`` fails at open);
* the file was deleted or replaced while open (device/inode checked before and after each
  transaction);
* SQLite reports any error, including a write lock held longer than the busy timeout.

A missing file is created (atomically: built under a temporary name, then hard-linked into
place) and the creation is logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dpsql.accountant.costs import Cost
from dpsql.accountant.filters import Scope
from dpsql.accountant.ledger import Ledger, LedgerTx
from dpsql.accountant.replays import ReplayRow
from dpsql.errors import LedgerUnavailable

log = logging.getLogger("dpsql.accountant.ledger")

_PATH_LOCKS: dict[str, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _reset_locks_after_fork() -> None:  # a lock held by another thread at fork() would never be released
    global _PATH_LOCKS_GUARD
    _PATH_LOCKS_GUARD = threading.Lock()
    _PATH_LOCKS.clear()


os.register_at_fork(after_in_child=_reset_locks_after_fork)

APPLICATION_ID = 0x64707371  # "dpsq"
SCHEMA_VERSION = 2

_REPLAY_DDL = """
CREATE TABLE IF NOT EXISTS replay (
    key           TEXT    PRIMARY KEY,
    scope         TEXT    NOT NULL,
    charge_id     INTEGER NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('pending', 'released')),
    charged_at    REAL    NOT NULL,
    pending_until REAL    NOT NULL,
    expires_at    REAL    NOT NULL,
    owner         TEXT    NOT NULL,
    released_at   REAL,
    size          INTEGER NOT NULL DEFAULT 0,
    payload       BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replay_by_scope ON replay (scope, released_at)
"""

_SCHEMA = f"""
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE charges (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL    NOT NULL,
    user        TEXT    NOT NULL,
    session     TEXT    NOT NULL,
    query_hash  TEXT    NOT NULL,
    accounting  TEXT    NOT NULL CHECK (accounting IN ('zcdp', 'basic')),
    main        INTEGER NOT NULL CHECK (typeof(main) = 'integer' AND main >= 0),
    delta       INTEGER NOT NULL CHECK (typeof(delta) = 'integer' AND delta >= 0),
    amount      TEXT    NOT NULL,
    delta_exact TEXT    NOT NULL
);
CREATE TABLE totals (
    scope        TEXT    NOT NULL CHECK (scope IN ('session', 'user', 'global')),
    key          TEXT    NOT NULL,
    window_start INTEGER NOT NULL,
    window_len   INTEGER NOT NULL,
    main         INTEGER NOT NULL CHECK (typeof(main) = 'integer' AND main >= 0),
    delta        INTEGER NOT NULL CHECK (typeof(delta) = 'integer' AND delta >= 0),
    PRIMARY KEY (scope, key, window_start, window_len)
) WITHOUT ROWID;
CREATE TRIGGER charges_append_only_update BEFORE UPDATE ON charges
BEGIN SELECT RAISE(ABORT, 'the charge log is append-only'); END;
CREATE TRIGGER charges_append_only_delete BEFORE DELETE ON charges
BEGIN SELECT RAISE(ABORT, 'the charge log is append-only'); END;
INSERT INTO meta (key, value) VALUES ('application', 'dpsql-ledger'), ('schema_version', '{SCHEMA_VERSION}');
{_REPLAY_DDL};
"""

_REPLAY_COLUMNS = "key, scope, charge_id, state, charged_at, pending_until, expires_at, owner, payload"


class _SqliteTx:
    """:class:`~dpsql.accountant.ledger.LedgerTx` over one sqlite3 connection inside a transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def spent(self, scope: Scope, key: str, window_start: int, window_len: int) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT main, delta FROM totals WHERE scope = ? AND key = ? AND window_start = ? AND window_len = ?",
            (scope, key, window_start, window_len),
        ).fetchone()
        if row is None:
            return 0, 0
        main, delta = row
        if type(main) is not int or type(delta) is not int or main < 0 or delta < 0:
            raise LedgerUnavailable("the budget ledger holds an invalid total", hint="restore it from a backup")
        return main, delta

    def set_spent(self, scope: Scope, key: str, window_start: int, window_len: int, main: int, delta: int) -> None:
        self.conn.execute(
            "INSERT INTO totals (scope, key, window_start, window_len, main, delta)"
            " VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (scope, key, window_start, window_len) DO UPDATE SET main = excluded.main, "
            "delta = excluded.delta",
            (scope, key, window_start, window_len, main, delta),
        )

    def insert_charge(self, at: float, user: str, session_id: str, query_hash: str, cost: Cost, main: int, delta: int) -> int:
        cur = self.conn.execute(
            "INSERT INTO charges"
            " (at, user, session, query_hash, accounting, main, delta, amount, delta_exact) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                at,
                user,
                session_id,
                query_hash,
                cost.accounting,
                main,
                delta,
                str(cost.amount),
                str(cost.delta),
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def replay_get(self, key: str) -> ReplayRow | None:
        row = self.conn.execute(f"SELECT {_REPLAY_COLUMNS} FROM replay WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        payload = row[8]
        return ReplayRow(str(row[0]), str(row[1]), int(row[2]), row[3], float(row[4]), float(row[5]), float(row[6]), str(row[7]),
                         bytes(payload) if payload is not None else None)

    def replay_put(self, row: ReplayRow) -> None:
        self.conn.execute(
            f"INSERT OR REPLACE INTO replay ({_REPLAY_COLUMNS}, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.key, row.scope, row.charge_id, row.state, row.charged_at, row.pending_until, row.expires_at, row.owner,
             row.payload, len(row.payload or b"")),
        )

    def replay_release(self, key: str, charge_id: int, payload: bytes, released_at: float) -> bool:
        cur = self.conn.execute(
            "UPDATE replay SET state = 'released', payload = ?, size = ?, released_at = ? "
            "WHERE key = ? AND charge_id = ? AND state = 'pending'",
            (payload, len(payload), released_at, key, charge_id),
        )
        return cur.rowcount == 1

    def replay_drop(self, key: str, charge_id: int) -> None:
        self.conn.execute("DELETE FROM replay WHERE key = ? AND charge_id = ?", (key, charge_id))

    def replay_prune(self, scope: str, now: float, max_bytes: int) -> None:
        self.conn.execute("DELETE FROM replay WHERE expires_at <= ? OR (state = 'pending' AND pending_until <= ?)",
                          (now, now - 3600.0))
        self.conn.execute(
            "DELETE FROM replay WHERE key IN (SELECT key FROM (SELECT key, SUM(size) OVER "
            "(ORDER BY released_at DESC, key ROWS UNBOUNDED PRECEDING) AS running FROM replay "
            "WHERE scope = ? AND state = 'released') WHERE running > ?)",
            (scope, max_bytes),
        )


class SqliteLedger(Ledger):
    """A ledger in one SQLite file (see the module docstring for its durability and fail-closed rules)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.path = Path(os.path.abspath(path))
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        with _PATH_LOCKS_GUARD:  # one writer at a time per file within this process
            self._lock = _PATH_LOCKS.setdefault(str(self.path), threading.Lock())
        # every connection this object opened, with its thread (to close those of finished threads)
        self._conns: list[tuple[weakref.ref[threading.Thread], int, sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()
        if not self.path.parent.is_dir():
            raise LedgerUnavailable(
                f"the budget ledger directory {self.path.parent} does not exist",
                hint="create the directory, or set [privacy.ledger] path to an existing one",
            )
        if not self.path.exists():
            self._create()
        self._identity = self._stat()
        conn = self._conn()
        self._quick_check(conn)

    @property
    def location(self) -> str:
        """The ledger file's path."""
        return str(self.path)

    # -- opening ----------------------------------------------------------------------------------

    def _unavailable(self, what: str, hint: str | None = None) -> LedgerUnavailable:
        return LedgerUnavailable(
            f"the budget ledger {self.path} is unavailable: {what}",
            hint=hint or "no query can run until an administrator restores the ledger file",
        )

    def _failed(self, doing: str, e: sqlite3.Error) -> LedgerUnavailable:
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            return self._unavailable(
                f"{doing}: it stayed locked for {self.busy_timeout:g} s",
                hint="another process holds the ledger; retry the query (nothing was charged)",
            )
        return self._unavailable(f"{doing} ({e})")

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            raise self._unavailable("the file is missing") from None
        return st.st_dev, st.st_ino

    def _check_identity(self) -> None:
        if self._stat() != self._identity:
            raise self._unavailable("the file was replaced while dpsql had it open")

    def _create(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _SCHEMA.split(";\n"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute("COMMIT")
            finally:
                conn.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.path)
                created = True
            except FileExistsError:
                created = False  # another process created it first; use theirs
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except (OSError, sqlite3.Error) as e:
            raise self._unavailable(f"cannot create it ({e})") from None
        finally:
            for suffix in ("", "-wal", "-shm"):
                with suppress(FileNotFoundError):
                    os.unlink(f"{tmp}{suffix}")
        if created:
            log.warning("created a new, empty privacy budget ledger at %s", self.path)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                f"{self.path.as_uri()}?mode=rw",
                uri=True,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as e:
            raise self._unavailable(f"cannot open it ({e})") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            self._migrate(conn)
            self._check_schema(conn)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise self._unavailable(f"cannot use WAL journaling (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
        except LedgerUnavailable:
            conn.close()
            raise
        except sqlite3.Error as e:
            conn.close()
            raise self._unavailable(f"it is not a readable dpsql ledger ({e})") from None
        me = threading.current_thread()
        with self._conns_lock:
            live = []
            for ref, pid, c in self._conns:
                thread = ref()
                if pid == os.getpid() and (thread is None or not thread.is_alive()):
                    with suppress(sqlite3.Error):
                        c.close()  # its thread has finished: nobody else uses it
                else:
                    live.append((ref, pid, c))
            live.append((weakref.ref(me), os.getpid(), conn))
            self._conns = live
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring a version-1 ledger to version 2 (add the replay table) in one BEGIN IMMEDIATE."""
        if conn.execute("PRAGMA user_version").fetchone()[0] != 1:
            return
        if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            return  # _check_schema refuses it
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 1:  # not migrated by another process meanwhile
                for stmt in _REPLAY_DDL.split(";\n"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                log.warning("migrated the privacy budget ledger at %s to schema version %d", self.path, SCHEMA_VERSION)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app != APPLICATION_ID:
            raise self._unavailable("the file is not a dpsql ledger")
        if version != SCHEMA_VERSION:
            raise self._unavailable(f"schema version {version}, this dpsql needs {SCHEMA_VERSION}")
        rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('application', 'schema_version')"))
        if rows != {"application": "dpsql-ledger", "schema_version": str(SCHEMA_VERSION)}:
            raise self._unavailable("its metadata does not match a dpsql ledger")

    def _quick_check(self, conn: sqlite3.Connection) -> None:
        try:
            result = [r[0] for r in conn.execute("PRAGMA quick_check")]
        except sqlite3.Error as e:
            raise self._unavailable(f"integrity check failed ({e})") from None
        if result != ["ok"]:
            raise self._unavailable("integrity check failed (the file is corrupt)")

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid() or getattr(local, "conn", None) is None:
            self._check_identity()
            local.conn = self._connect()
            local.pid = os.getpid()
            self._check_identity()
        return local.conn

    # -- transactions -----------------------------------------------------------------------------

    def _commit(self, conn: sqlite3.Connection) -> None:
        """COMMIT; with synchronous=FULL the WAL is fsynced before this returns."""
        conn.execute("COMMIT")

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[LedgerTx]:
        conn = self._conn()
        self._check_identity()
        try:
            conn.execute(begin)
        except sqlite3.Error as e:
            raise self._failed("cannot start a transaction", e) from None
        try:
            self._check_identity()
            yield _SqliteTx(conn)
            self._check_identity()
            self._commit(conn)
        except BaseException as exc:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(exc, sqlite3.Error):
                raise self._failed("a ledger operation failed", exc) from None
            if isinstance(exc, OverflowError):
                raise self._unavailable("a budget total is out of range") from None
            raise
        self._check_identity()  # a replacement during the commit means the charge went elsewhere

    @contextmanager
    def _write(self) -> Iterator[LedgerTx]:
        with self._lock, self._transaction("BEGIN IMMEDIATE") as tx:
            yield tx

    @contextmanager
    def _write_relaxed(self) -> Iterator[LedgerTx]:
        """BEGIN IMMEDIATE with ``synchronous = NORMAL``: atomic, survives a crash of dpsql, but the
        WAL is not fsynced at this commit (the next FULL commit flushes it)."""
        with self._lock:
            conn = self._conn()
            try:
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as e:
                raise self._failed("cannot start a transaction", e) from None
            try:
                with self._transaction("BEGIN IMMEDIATE") as tx:
                    yield tx
            finally:
                with suppress(sqlite3.Error):
                    conn.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def _read(self) -> Iterator[LedgerTx]:
        with self._transaction("BEGIN") as tx:
            yield tx

    def close(self) -> None:
        """Close every connection this object opened (in any thread)."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for _, _, c in conns:
            with suppress(sqlite3.Error):
                c.close()
        self._local = threading.local()
