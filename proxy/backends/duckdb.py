"""The embedded DuckDB execution backend.

:class:`DuckDBBackend` opens the locked-down in-memory database of
:mod:`dpsql.proxy.backends.duckdb_setup`; each :class:`DuckDBSession` runs statements on its own
cursor, so sessions can execute concurrently in different worker threads.

Engine errors never escape: every DuckDB exception becomes one of the fixed errors of
:mod:`dpsql.proxy.backends.base`, raised outside the ``except`` block so that neither
``__cause__`` nor ``__context__`` holds the engine's exception (DuckDB quotes values in its
messages: "Could not convert string 'abc' to INT32"). The engine's text is not logged either;
only the exception class name (e.g. ``ConversionException``) goes to the ``dpsql.backend``
logger at DEBUG level, which is off by default.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import duckdb

from dpsql.errors import DPSQLError, PolicyError, QuerySyntaxError
from dpsql.policy import Policy
from dpsql.proxy.backends.base import (
    Backend,
    BackendSession,
    CancelReason,
    ResultSet,
    execution_failed,
    not_one_select,
    out_of_memory,
    query_canceled,
    session_closed,
)
from dpsql.proxy.backends.data_version import DataVersion, FileVersions
from dpsql.proxy.backends.duckdb_setup import LockedDatabase, open_locked
from dpsql.proxy.backends.duckdb_types import pg_type_name
from dpsql.proxy.backends.shadow import EmptyShadow
from dpsql.proxy.backends.watchdog import Watchdog

_log = logging.getLogger("dpsql.backend")


class DuckDBBackend(Backend):
    """A locked-down embedded DuckDB serving the tables of ``policy``.

    ``database`` overrides ``[source] duckdb``; when both are None the database is in memory
    and holds only the policy's file-mapped (Parquet/CSV) tables. The source file is opened
    read-only and never created. Raises PolicyError when the policy does not fit the source.
    A backend that is never closed is closed when it is garbage-collected (its sessions keep it
    alive) or at interpreter exit, so its spill directory does not outlive the process.
    """

    dialect = "duckdb"

    def __init__(self, policy: Policy, database: Path | None = None) -> None:
        self._db = open_locked(policy, database)
        path = database if database is not None else policy.source.duckdb
        mapped = [tp.file for tp in policy.tables.values() if tp.file is not None]
        parquet = [f for f in mapped if f.suffix.lower() == ".parquet"]
        try:
            self._versions = FileVersions([Path(path)] if path is not None else [], [f for f in mapped if f not in parquet], parquet)
        except OSError:
            self._db.close()
            raise PolicyError(str(policy.file), "source", "a mapped data file cannot be read") from None
        self._timeout = policy.limits.statement_timeout
        self._watchdog = Watchdog()
        self._sessions: weakref.WeakSet[DuckDBSession] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        self._shadow = EmptyShadow(self._db.described)
        self._finalizer = weakref.finalize(self, _shutdown, self._sessions, self._watchdog, self._db, self._shadow)

    def validate(self, sql: str) -> None:
        """Bind ``sql`` on an empty copy of the schema (no rows: failures depend only on the query)."""
        self._shadow.check(sql)

    def data_version(self) -> DataVersion:
        """The identity of the served files (the database is locked; see FileVersions)."""
        return self._versions.version()

    def describe(self) -> dict[str, list[tuple[str, str]]]:
        """Columns and PostgreSQL types of every policy table, from metadata read at startup."""
        return {k: list(v) for k, v in self._db.described.items()}

    def unique_columns(self) -> dict[str, frozenset[str]]:
        """One-column PRIMARY KEY / UNIQUE constraints of the source tables, read at startup."""
        return dict(self._db.unique)

    def session(self) -> DuckDBSession:
        """A new session on its own DuckDB cursor."""
        with self._lock:
            if self._closed:
                raise session_closed()
            s = DuckDBSession(self._db.connection.cursor(), self._watchdog, self._timeout, owner=self)
            self._sessions.add(s)
        return s

    def close(self) -> None:
        """Cancel and close every session, then the database; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()


def _shutdown(sessions: weakref.WeakSet[DuckDBSession], watchdog: Watchdog, db: LockedDatabase, shadow: EmptyShadow) -> None:
    """Close every session, the watchdog and the database (runs once, from close() or finalize)."""
    for s in list(sessions):
        s.close()
    watchdog.close()
    db.close()
    shadow.close()


class DuckDBSession(BackendSession):
    """One DuckDB cursor with a statement timeout and a thread-safe cancel."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, watchdog: Watchdog, default_timeout: float, *, owner: object = None) -> None:
        self._owner = owner  # keeps the backend (and so the database) alive while the session is
        self._cur = cursor
        self._watchdog = watchdog
        self._default_timeout = default_timeout
        self._exec_lock = threading.Lock()  # one statement at a time; close() waits for it
        self._state = threading.Lock()  # guards _running and _reason
        self._tokens = itertools.count(1)
        self._running: int | None = None
        self._reason: CancelReason | None = None
        self._closed = False  # set first by close(); checked by execute()
        self._cur_open = True

    def execute(self, sql: str, *, timeout: float | None = None) -> ResultSet:
        """Run exactly one SELECT; see :meth:`BackendSession.execute` for the errors.

        ``timeout`` must be positive; ``math.inf`` disables it, None means the policy's
        ``statement_timeout``.
        """
        limit = self._default_timeout if timeout is None else timeout
        if not limit > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        with self._exec_lock:
            statement = self._one_select(sql) if not self._closed else None
            token = next(self._tokens)
            with self._state:
                if self._closed or statement is None:
                    raise session_closed()
                self._running, self._reason = token, None
            disarm: Callable[[], None] | None = None
            if math.isfinite(limit):
                disarm = self._watchdog.schedule(limit, lambda: self._interrupt(token, "timeout"))
            failure: type[BaseException] | None = None
            result: ResultSet | None = None
            try:
                self._cur.execute(statement)
                description = self._cur.description or []
                rows = self._cur.fetchall()
                result = ResultSet(
                    columns=tuple(d[0] for d in description),
                    types=tuple(pg_type_name(str(d[1])) for d in description),
                    rows=rows,
                )
            except Exception as e:  # every engine failure, including result conversion
                failure = type(e)
            finally:
                if disarm is not None:
                    disarm()
                with self._state:
                    reason, self._running = self._reason, None
        # Raised here, outside the except block, so the engine exception is not our __context__.
        if failure is not None:
            raise _error_for(failure, reason)
        assert result is not None
        return result

    def cancel(self) -> None:
        """Interrupt the running statement (reported as canceled by user request); thread-safe."""
        with self._state:
            if self._running is not None:
                self._interrupt_locked("cancel")

    def close(self) -> None:
        """Cancel any running statement, wait for it to stop and close the cursor; idempotent.

        Once close() has been called, execute() refuses new statements, from any thread."""
        with self._state:
            self._closed = True
            if self._running is not None:
                self._interrupt_locked("cancel")
        with self._exec_lock:
            if self._cur_open:
                self._cur_open = False
                with contextlib.suppress(duckdb.Error):
                    self._cur.close()

    def _interrupt(self, token: int, reason: CancelReason) -> None:
        with self._state:
            if self._running == token:  # not a later statement of this session
                self._interrupt_locked(reason)

    def _interrupt_locked(self, reason: CancelReason) -> None:
        if self._reason is None:
            self._reason = reason
        self._cur.interrupt()

    def _one_select(self, sql: str) -> duckdb.Statement:
        """The single SELECT statement DuckDB parses ``sql`` into, or an error."""
        statements: list[duckdb.Statement] | None = None
        with contextlib.suppress(Exception):  # the parser's message is not shown
            statements = self._cur.extract_statements(sql)
        if statements is None:
            raise QuerySyntaxError(
                "the execution backend could not parse the SQL it was given",
                hint="this is a bug in dpsql's rewriter; report the query to the operator",
            )
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise not_one_select(len(statements))
        return statements[0]


def _error_for(failure: type[BaseException], reason: CancelReason | None) -> DPSQLError:
    """The fixed error standing for an engine exception class (its text is never read)."""
    _log.debug("duckdb statement failed: %s", failure.__name__)
    if issubclass(failure, duckdb.InterruptException):
        return query_canceled(reason or "cancel")
    if issubclass(failure, duckdb.OutOfMemoryException):
        return out_of_memory()
    return execution_failed()
