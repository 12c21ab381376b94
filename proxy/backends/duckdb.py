"""The embedded DuckDB execution backend.

:class:`DuckDBBackend` opens the locked-down in-memory database of
:mod:`dpsql.proxy.backends.duckdb_setup`; each :class:`DuckDBSession` runs statements on its own
cursor, so sessions can execute concurrently in different worker threads.

**Limits that hold.** DuckDB checks for an interrupt only between vectors, so one vector whose
row expressions are expensive can run long past its timeout (measured: a 2 s timeout stopped a
nested ``replace`` after 37 s, 11 GB RSS with a 1 GB ``memory_limit``: string heaps are allocated
outside the buffer manager). Each statement therefore runs on a worker thread while the caller
waits for it: once the statement is interrupted (its timeout, a cancel request — which is also
how a client's ``statement_timeout`` arrives — or the memory guard), it has ``INTERRUPT_GRACE``
seconds to stop; if it has not, the caller gets the fixed error anyway, the statement is
abandoned to finish on its own cursor (closed once it stops) and the session continues on a
fresh cursor. So a timeout ``t`` is answered by ``t + INTERRUPT_GRACE`` (+ one poll), inside the
promise max(1.5·t, t + 1 s). A :class:`~dpsql.proxy.backends.memory.MemoryGuard`
interrupts running statements the same way (53200) when the process's resident memory passes
the policy's ``memory_limit`` above what it was when the backend opened. The rewriter's per-row
cost bounds are what keep a vector short; these are the backstop.

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
import queue
import threading
import time
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
from dpsql.proxy.backends.empty_schema import EmptyShadow
from dpsql.proxy.backends.memory import MemoryGuard, parse_size
from dpsql.proxy.backends.watchdog import Watchdog

_log = logging.getLogger("dpsql.backend")

#: seconds an interrupted statement may take to stop before it is abandoned and answered
INTERRUPT_GRACE = 0.5
_POLL = 0.05


class _Abandoned(Exception):
    """A statement that did not stop by its hard deadline (internal)."""


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
        self._memory = MemoryGuard(parse_size(policy.limits.memory_limit))
        self._sessions: weakref.WeakSet[DuckDBSession] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        self._shadow = EmptyShadow(self._db.described)
        self._finalizer = weakref.finalize(self, _shutdown, self._sessions, self._watchdog, self._db, self._shadow,
                                           self._memory)

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
            s = DuckDBSession(self._db.connection.cursor(), self._watchdog, self._timeout, owner=self,
                              new_cursor=self._db.connection.cursor, memory=self._memory)
            self._sessions.add(s)
        return s

    def close(self) -> None:
        """Cancel and close every session, then the database; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()


def _shutdown(sessions: weakref.WeakSet[DuckDBSession], watchdog: Watchdog, db: LockedDatabase, shadow: EmptyShadow,
              memory: MemoryGuard) -> None:
    """Close every session, the watchdog and the database (runs once, from close() or finalize)."""
    for s in list(sessions):
        s.close()
    watchdog.close()
    memory.close()
    db.close()
    shadow.close()


class DuckDBSession(BackendSession):
    """One DuckDB cursor with a statement timeout and a thread-safe cancel."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, watchdog: Watchdog, default_timeout: float, *, owner: object = None,
                 new_cursor: Callable[[], duckdb.DuckDBPyConnection] | None = None, memory: MemoryGuard | None = None) -> None:
        self._owner = owner  # keeps the backend (and so the database) alive while the session is
        self._cur = cursor
        self._new_cursor = new_cursor
        self._memory = memory
        self._watchdog = watchdog
        self._default_timeout = default_timeout
        self._exec_lock = threading.Lock()  # one statement at a time; close() waits for it
        self._state = threading.Lock()  # guards _running and _reason
        self._tokens = itertools.count(1)
        self._running: int | None = None
        self._reason: CancelReason | None = None
        self._oom = False  # the memory guard interrupted the running statement
        self._interrupted_at: float | None = None  # monotonic time of the running statement's interrupt
        self._closed = False  # set first by close(); checked by execute()
        self._cur_open = True
        self._runner: _Runner | None = None

    def _worker(self) -> _Runner:
        if self._runner is None:
            self._runner = _Runner()
            weakref.finalize(self, self._runner.retire)  # a session dropped unclosed ends its thread
        return self._runner

    def execute(self, sql: str, *, timeout: float | None = None) -> ResultSet:
        """Run exactly one SELECT; see :meth:`BackendSession.execute` for the errors.

        ``timeout`` must be positive; ``math.inf`` disables it, None means the policy's
        ``statement_timeout``. Answers within INTERRUPT_GRACE of an interrupt (timeout, cancel,
        memory guard) whether or not DuckDB honours it (57014, or 53200 for the memory guard).
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
                self._running, self._reason, self._oom, self._interrupted_at = token, None, False, None
            disarm: Callable[[], None] | None = None
            if math.isfinite(limit):
                disarm = self._watchdog.schedule(limit, lambda: self._interrupt(token, "timeout"))
            unwatch = self._memory.watch(lambda: self._out_of_memory(token)) if self._memory is not None else None
            failure: type[BaseException] | None = None
            result: ResultSet | None = None
            job = _Job(self._cur, statement)
            try:
                self._worker().submit(job)
                while not job.done.wait(_POLL):
                    since = self._interrupted_at
                    if since is not None and time.monotonic() - since > INTERRUPT_GRACE:
                        raise _Abandoned
                if job.failure is not None:
                    failure = job.failure
                else:
                    result = job.result
            except _Abandoned:
                failure = duckdb.InterruptException
                self._abandon(job)
            finally:
                if disarm is not None:
                    disarm()
                if unwatch is not None:
                    unwatch()
                with self._state:
                    reason, oom, self._running = self._reason, self._oom, None
        # Raised here, outside the except block, so the engine exception is not our __context__.
        if failure is not None:
            raise _error_for(failure, reason, oom)
        assert result is not None
        return result

    def _abandon(self, job: _Job) -> None:
        """Leave a statement that ignores its interrupt to finish on its own cursor (closed when
        it stops); the session goes on with a fresh cursor."""
        old = self._cur
        job.close_when_done = True
        if self._runner is not None:
            self._runner.retire()  # it ends after the abandoned statement; the next one gets a new runner
            self._runner = None
        if self._new_cursor is not None:
            with contextlib.suppress(duckdb.Error):
                self._cur = self._new_cursor()
        if job.done.is_set():  # it stopped meanwhile
            with contextlib.suppress(duckdb.Error):
                old.close()
        _log.warning("a statement ignored its interrupt past the grace period and was abandoned")

    def _out_of_memory(self, token: int) -> None:
        with self._state:
            if self._running == token and not self._oom:
                self._oom = True
                self._interrupt_locked("timeout")

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
            if self._runner is not None:
                self._runner.retire()
                self._runner = None
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
        if self._interrupted_at is None:
            self._interrupted_at = time.monotonic()
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


class _Runner:
    """A session's statement thread: runs submitted jobs one at a time (a thread started per
    statement cost 350 µs; a hand-off to a waiting thread ~70 µs)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="dpsql-duckdb-statement", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> None:
        self._queue.put(job)

    def retire(self) -> None:
        """End the thread once its current job (if any) is done."""
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            job.run()


class _Job:
    """One statement on its worker thread: runs it, keeps the rows or the exception class."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, statement: duckdb.Statement) -> None:
        self.cursor = cursor
        self.statement = statement
        self.done = threading.Event()
        self.result: ResultSet | None = None
        self.failure: type[BaseException] | None = None
        self.close_when_done = False

    def run(self) -> None:
        try:
            self.cursor.execute(self.statement)
            description = self.cursor.description or []
            rows = self.cursor.fetchall()
            self.result = ResultSet(
                columns=tuple(d[0] for d in description),
                types=tuple(pg_type_name(str(d[1])) for d in description),
                rows=rows,
            )
        except BaseException as e:  # every engine failure, including result conversion
            self.failure = type(e)
        finally:
            self.statement = None  # type: ignore[assignment]
            self.done.set()
            if self.close_when_done:
                with contextlib.suppress(Exception):
                    self.cursor.close()


def _error_for(failure: type[BaseException], reason: CancelReason | None, oom: bool = False) -> DPSQLError:
    """The fixed error standing for an engine exception class (its text is never read)."""
    _log.debug("duckdb statement failed: %s", failure.__name__)
    if oom:
        return out_of_memory()
    if issubclass(failure, duckdb.InterruptException):
        return query_canceled(reason or "cancel")
    if issubclass(failure, duckdb.OutOfMemoryException):
        return out_of_memory()
    return execution_failed()
