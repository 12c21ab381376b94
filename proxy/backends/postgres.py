"""The upstream PostgreSQL execution backend (asyncpg).

:class:`PostgresBackend` keeps an asyncpg connection pool on a private event loop that runs on
a background thread (:class:`~dpsql.pgaio.LoopThread`); the synchronous Backend interface submits
coroutines to it from worker threads. Each :meth:`PostgresSession.execute` takes a pooled
connection and runs exactly one statement as::

    BEGIN READ ONLY; SET LOCAL statement_timeout = <ms>; SET LOCAL search_path = pg_catalog, public
    <the statement, through the extended protocol: one statement only>
    COMMIT; RESET ALL

on a connection opened with ``default_transaction_read_only = on`` (security.md R28). The role
is checked at start-up (:mod:`~dpsql.proxy.backends.postgres_setup`): not a superuser, SELECT
only on the policy tables, no CREATE on the search path's schemas. TLS settings (``sslmode``,
``sslrootcert`` …) are taken from the DSN as asyncpg reads them; use ``sslmode=verify-full``
off-loopback (R27).

Engine errors never escape: every asyncpg/PostgreSQL exception becomes one of the fixed errors
of :mod:`dpsql.proxy.backends.base` (57014 on timeout or cancel, 53200 when out of memory,
XX000 otherwise), raised outside the ``except`` block so no engine exception is chained.
PostgreSQL quotes values in its messages ("invalid input syntax for type integer: "…"").
Only the SQLSTATE goes to the ``dpsql.backend`` logger at DEBUG level.

Numeric results (``SUM`` of integers is ``numeric`` on PostgreSQL) arrive as
:class:`decimal.Decimal`, exact; the engine converts statistic columns with ``int()``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import threading
import weakref
from typing import Any

import asyncpg
from sqlglot import tokenize
from sqlglot.tokens import TokenType

from dpsql.errors import DatatypeMismatch, DPSQLError, PolicyError, QuerySyntaxError
from dpsql.pgaio import LoopThread, dsn_summary
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
from dpsql.proxy.backends.data_version import DataVersion, unpinned
from dpsql.proxy.backends.postgres_setup import SEARCH_PATH, inspect_upstream

_log = logging.getLogger("dpsql.backend")

Described = dict[str, list[tuple[str, str]]]

#: extra seconds the client waits past the server-side statement_timeout before it cancels (used
#: by validation, which has no promise to keep)
CLIENT_GRACE = 5.0


def client_wait(limit: float) -> float:
    """Seconds the client waits for a statement with server-side timeout ``limit`` before it
    cancels it itself: 60% of the promised slack max(limit/2, 1 s), so that with :func:`stop_wait` the
    answer comes within max(1.5·limit, limit + 1 s) even when the server does not stop it."""
    return limit + 0.6 * max(limit / 2, 1.0)


def stop_wait(limit: float) -> float:
    """How long a canceled statement may take to stop before execute() returns anyway (30% of
    the slack; the cancel goes on in the background)."""
    return 0.3 * max(limit / 2, 1.0)

_FIRST_TOKENS = {TokenType.SELECT, TokenType.WITH, TokenType.VALUES, TokenType.L_PAREN}
_WRITE_TOKENS = {TokenType.INSERT, TokenType.DELETE, TokenType.MERGE, TokenType.UPDATE}


class PostgresBackend(Backend):
    """The policy's tables on an upstream PostgreSQL, read through a SELECT-only role.

    ``dsn`` is a ``postgresql://`` URL (libpq-style parameters such as ``sslmode`` are honoured);
    None means the policy's ``[source] postgres``.
    Raises PolicyError (naming the policy key) when the server cannot be reached, the role is
    not locked down or a policy table is missing; see :mod:`~dpsql.proxy.backends.postgres_setup`.
    ``pool_size`` defaults to the policy's ``[limits] max_connections``.
    """

    dialect = "postgres"

    def __init__(self, policy: Policy, dsn: str | None = None, *, pool_size: int | None = None, connect_timeout: float = 10.0) -> None:
        self._fname = str(policy.file)
        dsn = dsn or policy.source.postgres
        if not dsn:
            raise PolicyError(self._fname, "source.postgres", "no PostgreSQL URL is configured (set it, or pass --postgres)")
        self._timeout = policy.limits.statement_timeout
        self._where = dsn_summary(dsn)
        self._sessions: weakref.WeakSet[PostgresSession] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        self._loop = LoopThread("dpsql-postgres")
        self._pool: asyncpg.Pool | None = None
        size = max(1, pool_size if pool_size is not None else policy.limits.max_connections)
        try:
            self._pool, self._described = self._open(policy, dsn, size, connect_timeout)
        except BaseException:
            self._loop.close()
            raise
        self._finalizer = weakref.finalize(self, _shutdown, self._sessions, self._loop, self._pool)

    def data_version(self) -> DataVersion:
        """The upstream server and database (not pinned: its owner may write while dpsql serves)."""
        return unpinned(f"postgres|{self._where}")

    # -- start-up ---------------------------------------------------------------------------------

    def _open(self, policy: Policy, dsn: str, size: int, connect_timeout: float) -> tuple[asyncpg.Pool, Described]:
        problem: str | None = None
        try:
            return self._loop.run(self._connect(policy, dsn, size, connect_timeout), timeout=connect_timeout * 3 + 30)
        except PolicyError:
            raise
        except TimeoutError:
            problem = f"timed out after {connect_timeout:g} s"
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ValueError) as e:
            # connection-level messages (refused, bad password, unknown database) hold no data
            problem = f"{type(e).__name__}: {e}"
        raise PolicyError(self._fname, "source.postgres", f"cannot use the PostgreSQL server {self._where} ({problem})")

    async def _connect(self, policy: Policy, dsn: str, size: int, connect_timeout: float) -> tuple[asyncpg.Pool, Described]:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            timeout=connect_timeout,
            command_timeout=None,
            statement_cache_size=0,  # each statement is prepared inside its own transaction
            max_inactive_connection_lifetime=300.0,
            reset=_reset,
            server_settings={
                "application_name": "dpsql",
                "default_transaction_read_only": "on",
                "search_path": ", ".join(SEARCH_PATH),
                "TimeZone": "UTC",  # date_trunc/extract on timestamptz must not depend on the server's zone
                "idle_in_transaction_session_timeout": "60000",
            },
        )
        try:
            async with pool.acquire() as conn:
                described = await inspect_upstream(conn, policy)
        except BaseException:
            pool.terminate()
            raise
        return pool, described

    # -- Backend ----------------------------------------------------------------------------------

    def describe(self) -> dict[str, list[tuple[str, str]]]:
        """Columns and PostgreSQL types of every policy table, read from the catalog at start-up."""
        return {k: list(v) for k, v in self._described.items()}

    def unique_columns(self) -> dict[str, frozenset[str]]:
        """None, deliberately: the table owner can drop a unique index (and insert duplicates)
        while dpsql serves, so a key read at start-up cannot vouch for one row per unit later;
        PostgreSQL tables always take the general bounded SQL. (DuckDB files are held under a
        read lock that keeps any writer, and so any schema change, out.)"""
        return {}

    def validate(self, sql: str) -> None:
        """Bind ``sql`` on PostgreSQL without reading any row (Parse/Describe of a prepared
        statement in a read-only transaction); raise DatatypeMismatch (42804) if it does not bind.

        Parse analysis reads only the catalog, so a failure depends on the query text alone and
        the binder's message (types, names, the query's own literals) is safe to show. Any other
        failure (connection, timeout) is the fixed XX000 error."""
        _check_one_select(sql)
        if self._loop.closed:
            raise session_closed()
        ms = max(1, math.ceil(self._timeout * 1000)) if math.isfinite(self._timeout) else 0
        message: str | None = None
        failed = False
        try:
            self._loop.run(self._bind(sql, ms), timeout=self._timeout + CLIENT_GRACE if math.isfinite(self._timeout) else None)
        except asyncpg.PostgresError as e:
            state = str(getattr(e, "sqlstate", "") or "")
            if state[:2] in ("42", "22", "0A"):
                message = (str(e).strip().splitlines() or [type(e).__name__])[0]
            else:
                failed = True
        except Exception:
            failed = True
        if message is not None:
            raise DatatypeMismatch(f"the query does not type-check: {message}",
                                   hint="check the types of the values compared or combined (no budget was spent)")
        if failed:
            raise execution_failed()

    async def _bind(self, sql: str, timeout_ms: int) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            await conn.execute(
                f"BEGIN READ ONLY; SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL search_path = {', '.join(SEARCH_PATH)}"
            )
            try:
                await conn.prepare(sql)
            finally:
                if not conn.is_closed() and conn.is_in_transaction():
                    await conn.execute("ROLLBACK; RESET ALL")

    def session(self) -> PostgresSession:
        """A new session; it takes a pooled connection only while a statement runs."""
        with self._lock:
            if self._closed:
                raise session_closed()
            s = PostgresSession(self, self._timeout)
            self._sessions.add(s)
        return s

    def close(self) -> None:
        """Cancel and close every session, close the pool and stop the loop thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()

    # -- execution (on the loop) --------------------------------------------------------------------

    async def _run(self, sql: str, timeout_ms: int, done: threading.Event) -> ResultSet:
        try:
            assert self._pool is not None
            async with self._pool.acquire() as conn:
                await conn.execute(
                    f"BEGIN READ ONLY; SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL search_path = {', '.join(SEARCH_PATH)}"
                )
                try:
                    stmt = await conn.prepare(sql)
                    records = await stmt.fetch()
                    attrs = stmt.get_attributes()
                    await conn.execute("COMMIT; RESET ALL")  # RESET ALL: nothing a statement set outlives it
                except BaseException:
                    if not conn.is_closed() and conn.is_in_transaction():
                        with contextlib.suppress(Exception):
                            await conn.execute("ROLLBACK; RESET ALL")
                    raise
                return ResultSet(
                    columns=tuple(a.name for a in attrs),
                    types=tuple(a.type.name for a in attrs),
                    rows=[tuple(r) for r in records],
                )
        finally:
            done.set()


async def _reset(conn: asyncpg.Connection) -> None:
    """Pool reset on release: roll back an unfinished transaction (session settings are fixed)."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _shutdown(sessions: weakref.WeakSet[PostgresSession], loop: LoopThread, pool: asyncpg.Pool | None) -> None:
    """Close every session, the pool and the loop thread (runs once, from close() or finalize)."""
    for s in list(sessions):
        s.close()
    if pool is not None and not loop.closed:
        try:
            loop.run(pool.close(), timeout=10.0)
        except Exception:
            with contextlib.suppress(Exception):
                loop.run(_terminate(pool), timeout=5.0)
    loop.close()


async def _terminate(pool: asyncpg.Pool) -> None:
    pool.terminate()


class PostgresSession(BackendSession):
    """One statement at a time on a pooled connection, with a timeout and a thread-safe cancel."""

    def __init__(self, backend: PostgresBackend, default_timeout: float) -> None:
        self._backend = backend  # keeps the backend (pool and loop) alive while the session is
        self._default_timeout = default_timeout
        self._exec_lock = threading.Lock()  # one statement at a time; close() waits for it
        self._state = threading.Lock()  # guards _fut and _reason
        self._fut: concurrent.futures.Future[ResultSet] | None = None
        self._reason: CancelReason | None = None
        self._closed = False

    def execute(self, sql: str, *, timeout: float | None = None) -> ResultSet:
        """Run exactly one SELECT; see :meth:`BackendSession.execute` for the errors.

        ``timeout`` must be positive; ``math.inf`` disables it, None means the policy's
        ``statement_timeout``. The statement runs in a read-only transaction with the search
        path pinned to ``pg_catalog, public``.
        """
        limit = self._default_timeout if timeout is None else timeout
        if not limit > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        _check_one_select(sql)
        timeout_ms = 0 if not math.isfinite(limit) else max(1, math.ceil(limit * 1000))
        wait = client_wait(limit) if math.isfinite(limit) else None
        with self._exec_lock:
            done = threading.Event()
            with self._state:
                if self._closed or self._backend._loop.closed:
                    raise session_closed()
                self._reason = None
                fut = self._backend._loop.submit(self._backend._run(sql, timeout_ms, done))
                self._fut = fut
            failure: str | None = None
            result: ResultSet | None = None
            try:
                result = fut.result(wait)
            except concurrent.futures.TimeoutError:  # the server did not enforce the timeout: cancel
                with self._state:
                    self._reason = self._reason or "timeout"
                fut.cancel()
                failure = "57014"
            except concurrent.futures.CancelledError:
                failure = "57014"
            except asyncpg.PostgresError as e:  # the server's error: only its SQLSTATE is read
                failure = str(getattr(e, "sqlstate", None) or "XX000")
            except Exception as e:  # connection loss, protocol or decoding errors
                failure = type(e).__name__
            finally:
                with self._state:
                    reason, self._fut = self._reason, None
            if failure is not None and fut.cancelled():
                # the cancel request reaches the server and the statement stops (or we answer anyway)
                done.wait(stop_wait(limit) if math.isfinite(limit) else 10.0)
        # Raised here, outside the except block, so the engine exception is not our __context__.
        if failure is not None:
            raise _error_for(failure, reason)
        assert result is not None
        return result

    def cancel(self) -> None:
        """Cancel the running statement (reported as canceled by user request); thread-safe."""
        with self._state:
            fut = self._fut
            if fut is not None and not fut.done():
                self._reason = self._reason or "cancel"
                fut.cancel()  # cancels the task on the loop; asyncpg sends a CancelRequest

    def close(self) -> None:
        """Cancel any running statement, wait for it to stop and release the session; idempotent.

        Once close() has been called, execute() refuses new statements, from any thread."""
        with self._state:
            self._closed = True
            fut = self._fut
            if fut is not None and not fut.done():
                self._reason = self._reason or "cancel"
                fut.cancel()
        with self._exec_lock:
            pass


def _check_one_select(sql: str) -> None:
    """Refuse anything but exactly one SELECT (or WITH … SELECT / VALUES) statement.

    PostgreSQL's extended protocol already refuses several statements, and the read-only
    transaction refuses writes; this check keeps other statement kinds off the connection."""
    tokens = None
    with contextlib.suppress(Exception):  # the tokenizer's message is not shown
        tokens = tokenize(sql, read="postgres")
    if tokens is None:
        raise QuerySyntaxError(
            "the execution backend could not parse the SQL it was given",
            hint="this is a bug in dpsql's rewriter; report the query to the operator",
        )
    statements: list[list[Any]] = [[]]
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(tok)
    statements = [s for s in statements if s]
    if len(statements) != 1:
        raise not_one_select(len(statements))
    stmt = statements[0]
    if stmt[0].token_type not in _FIRST_TOKENS:
        raise not_one_select(1)
    for prev, tok in zip([None, *stmt], stmt, strict=False):
        if tok.token_type in _WRITE_TOKENS and not (tok.token_type == TokenType.UPDATE and prev is not None
                                                    and prev.token_type == TokenType.FOR):
            raise not_one_select(1)


def _error_for(failure: str, reason: CancelReason | None) -> DPSQLError:
    """The fixed error standing for an engine failure (its SQLSTATE or exception class name)."""
    _log.debug("postgres statement failed: %s", failure)
    if failure == "57014":
        return query_canceled(reason or "timeout")
    if failure == "53200":
        return out_of_memory()
    return execution_failed()
