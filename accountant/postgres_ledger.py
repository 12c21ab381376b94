"""The PostgreSQL budget ledger: one set of budgets shared by several dpsql instances.

Several ``dpsql serve`` processes, on one machine or many, point ``[privacy.ledger] url`` at
the same PostgreSQL database; :meth:`~dpsql.accountant.ledger.Ledger.charge` stays atomic
across all of them.

Storage rules:

* A schema (default ``dpsql_ledger``) holds ``meta``, ``lock`` (one row), ``charges``
  (append-only: a trigger aborts UPDATE, DELETE and TRUNCATE) and ``totals`` (running sums per
  scope, key and window; ``bigint``, non-negative by CHECK).
* A charge is one READ COMMITTED transaction that first takes ``SELECT … FROM lock FOR UPDATE``:
  the row lock serialises every writer in every process and on every machine, and because each
  later statement of a READ COMMITTED transaction reads the latest committed data, the sums it
  checks include every charge committed before it got the lock.
* ``SET LOCAL synchronous_commit = on``: COMMIT returns only once the commit record is flushed
  (and, when the server has synchronous standbys, confirmed by them), so a charge that
  ``charge()`` returned survives a crash of dpsql or of the server. The server must run with
  ``fsync = on`` (checked at open).
* Reads (``status``) use a REPEATABLE READ, READ ONLY snapshot.
* ``replay`` holds the replay slots (:mod:`dpsql.accountant.replays`), reserved in the charge's
  own transaction, so every instance sharing the ledger replays the same paid answers.
* Start-up is safe when several instances start at the same instant: creation of the schema and
  migration of an older one (version 1 had no ``replay`` table) run in one transaction under a
  transaction-level advisory lock, and the catalog is re-read with a fresh statement snapshot
  after the lock is granted (a schema another instance created while we waited is seen, so it is
  neither created twice nor migrated twice).

Fail-closed rules — each raises :class:`~dpsql.errors.LedgerUnavailable`: the server cannot be
reached or refuses the login; the schema exists but is not a dpsql ledger or has another schema
version; ``fsync`` is off; the lock is held longer than ``lock_timeout``; any statement fails.
A missing schema is created (under an advisory lock, so instances starting together create it
once) and the creation is logged; the role then needs CREATE on the database.

asyncpg runs on a private event loop thread (:class:`~dpsql.pgaio.LoopThread`); the ledger is
safe to use from any number of threads, and after ``fork()`` the child opens its own pool.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import asyncpg

from dpsql.accountant.costs import Cost
from dpsql.accountant.filters import Scope
from dpsql.accountant.ledger import Ledger, LedgerTx
from dpsql.accountant.replays import ReplayRow
from dpsql.errors import LedgerUnavailable
from dpsql.pgaio import LoopThread, dsn_summary

log = logging.getLogger("dpsql.accountant.ledger")

T = TypeVar("T")

SCHEMA_VERSION = 2
DEFAULT_SCHEMA = "dpsql_ledger"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _replay_ddl(s: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {s}.replay (
            key           text PRIMARY KEY,
            scope         text NOT NULL,
            charge_id     bigint NOT NULL,
            state         text NOT NULL CHECK (state IN ('pending', 'released')),
            charged_at    double precision NOT NULL,
            pending_until double precision NOT NULL,
            expires_at    double precision NOT NULL,
            owner         text NOT NULL,
            released_at   double precision,
            size          bigint NOT NULL DEFAULT 0,
            payload       bytea
        )""",
        f"CREATE INDEX IF NOT EXISTS replay_by_scope ON {s}.replay (scope, released_at)",
    ]


def _migrations(s: str) -> dict[str, list[str]]:
    """Statements that bring a ledger of schema version ``key`` to the next version."""
    return {"1": [*_replay_ddl(s), f"UPDATE {s}.meta SET value = '2' WHERE key = 'schema_version'"]}


_REPLAY_COLUMNS = "key, scope, charge_id, state, charged_at, pending_until, expires_at, owner, payload"


def _ddl(s: str) -> list[str]:
    return [
        f"CREATE SCHEMA {s}",
        f"CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
        f"CREATE TABLE {s}.lock (id integer PRIMARY KEY CHECK (id = 1))",
        f"INSERT INTO {s}.lock (id) VALUES (1)",
        f"""CREATE TABLE {s}.charges (
            id          bigserial PRIMARY KEY,
            at          double precision NOT NULL,
            "user"      text NOT NULL,
            session     text NOT NULL,
            query_hash  text NOT NULL,
            accounting  text NOT NULL CHECK (accounting IN ('zcdp', 'basic')),
            main        bigint NOT NULL CHECK (main >= 0),
            delta       bigint NOT NULL CHECK (delta >= 0),
            amount      text NOT NULL,
            delta_exact text NOT NULL
        )""",
        f"""CREATE TABLE {s}.totals (
            scope        text NOT NULL CHECK (scope IN ('session', 'user', 'global')),
            key          text NOT NULL,
            window_start bigint NOT NULL,
            window_len   bigint NOT NULL,
            main         bigint NOT NULL CHECK (main >= 0),
            delta        bigint NOT NULL CHECK (delta >= 0),
            PRIMARY KEY (scope, key, window_start, window_len)
        )""",
        f"CREATE FUNCTION {s}.append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the charge log is append-only'; END $$",
        f"CREATE TRIGGER charges_append_only BEFORE UPDATE OR DELETE ON {s}.charges FOR EACH ROW EXECUTE FUNCTION {s}.append_only()",
        f"CREATE TRIGGER charges_no_truncate BEFORE TRUNCATE ON {s}.charges FOR EACH STATEMENT EXECUTE FUNCTION {s}.append_only()",
        f"INSERT INTO {s}.meta (key, value) VALUES ('application', 'dpsql-ledger'), ('schema_version', '{SCHEMA_VERSION}')",
        *_replay_ddl(s),
    ]


class _PgTx:
    """:class:`~dpsql.accountant.ledger.LedgerTx` over one asyncpg connection inside a transaction."""

    def __init__(self, ledger: PostgresLedger, loop: LoopThread, conn: asyncpg.Connection) -> None:
        self._ledger = ledger
        self._loop = loop
        self.conn = conn
        self.s = ledger.schema

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro, timeout=self._ledger.statement_timeout + 5)

    def get_meta(self, key: str) -> str | None:
        v = self._run(self.conn.fetchval(f"SELECT value FROM {self.s}.meta WHERE key = $1", key))
        return None if v is None else str(v)

    def set_meta(self, key: str, value: str) -> None:
        self._run(self.conn.execute(
            f"INSERT INTO {self.s}.meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value
        ))

    def spent(self, scope: Scope, key: str, window_start: int, window_len: int) -> tuple[int, int]:
        row = self._run(self.conn.fetchrow(
            f"SELECT main, delta FROM {self.s}.totals WHERE scope = $1 AND key = $2 AND window_start = $3 AND window_len = $4",
            scope, key, window_start, window_len,
        ))  # fmt: skip
        if row is None:
            return 0, 0
        main, delta = row
        if type(main) is not int or type(delta) is not int or main < 0 or delta < 0:
            raise LedgerUnavailable("the budget ledger holds an invalid total", hint="restore it from a backup")
        return main, delta

    def set_spent(self, scope: Scope, key: str, window_start: int, window_len: int, main: int, delta: int) -> None:
        self._run(self.conn.execute(
            f"INSERT INTO {self.s}.totals (scope, key, window_start, window_len, main, delta) VALUES ($1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (scope, key, window_start, window_len) DO UPDATE SET main = excluded.main, delta = excluded.delta",
            scope, key, window_start, window_len, main, delta,
        ))  # fmt: skip

    def insert_charge(self, at: float, user: str, session_id: str, query_hash: str, cost: Cost, main: int, delta: int) -> int:
        charge_id = self._run(self.conn.fetchval(
            f'INSERT INTO {self.s}.charges (at, "user", session, query_hash, accounting, main, delta, amount, delta_exact) '
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            at, user, session_id, query_hash, cost.accounting, main, delta, str(cost.amount), str(cost.delta),
        ))  # fmt: skip
        return int(charge_id)

    def replay_get(self, key: str) -> ReplayRow | None:
        row = self._run(self.conn.fetchrow(f"SELECT {_REPLAY_COLUMNS} FROM {self.s}.replay WHERE key = $1", key))
        if row is None:
            return None
        payload = row[8]
        return ReplayRow(str(row[0]), str(row[1]), int(row[2]), row[3], float(row[4]), float(row[5]), float(row[6]), str(row[7]),
                         bytes(payload) if payload is not None else None)

    def replay_put(self, row: ReplayRow) -> None:
        self._run(self.conn.execute(
            f"INSERT INTO {self.s}.replay ({_REPLAY_COLUMNS}, size) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (key) DO UPDATE SET scope = excluded.scope, charge_id = excluded.charge_id, state = excluded.state, "
            "charged_at = excluded.charged_at, pending_until = excluded.pending_until, expires_at = excluded.expires_at, "
            "owner = excluded.owner, payload = excluded.payload, size = excluded.size, released_at = NULL",
            row.key, row.scope, row.charge_id, row.state, row.charged_at, row.pending_until, row.expires_at, row.owner,
            row.payload, len(row.payload or b""),
        ))  # fmt: skip

    def replay_release(self, key: str, charge_id: int, payload: bytes, released_at: float) -> bool:
        status = self._run(self.conn.execute(
            f"UPDATE {self.s}.replay SET state = 'released', payload = $1, size = $2, released_at = $3 "
            "WHERE key = $4 AND charge_id = $5 AND state = 'pending'",
            payload, len(payload), released_at, key, charge_id,
        ))  # fmt: skip
        return str(status).endswith(" 1")

    def replay_drop(self, key: str, charge_id: int) -> None:
        self._run(self.conn.execute(f"DELETE FROM {self.s}.replay WHERE key = $1 AND charge_id = $2", key, charge_id))

    def replay_prune(self, scope: str, now: float, max_bytes: int) -> None:
        self._run(self.conn.execute(
            f"DELETE FROM {self.s}.replay WHERE expires_at <= $1 OR (state = 'pending' AND pending_until <= $2)", now, now - 3600.0,
        ))  # fmt: skip
        self._run(self.conn.execute(
            f"DELETE FROM {self.s}.replay WHERE key IN (SELECT key FROM (SELECT key, SUM(size) OVER "
            "(ORDER BY released_at DESC, key ROWS UNBOUNDED PRECEDING) AS running "
            f"FROM {self.s}.replay WHERE scope = $1 AND state = 'released') AS r WHERE running > $2)",
            scope, max_bytes,
        ))  # fmt: skip


class PostgresLedger(Ledger):
    """A ledger in a PostgreSQL schema (see the module docstring for its rules).

    ``url`` is a ``postgresql://`` URL (``sslmode`` and the other libpq-style parameters are
    honoured). Connects at construction and raises LedgerUnavailable if the ledger cannot be
    used. ``schema`` names the ledger's schema (several independent ledgers may share one
    database under different schemas).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
        lock_timeout: float = 30.0,
        statement_timeout: float = 60.0,
    ) -> None:
        if not _IDENT.match(schema):
            raise ValueError(f"the ledger schema must be a lower-case SQL identifier, got {schema!r}")
        self.url = url
        self.schema = schema
        self.pool_size = max(1, pool_size)
        self.connect_timeout = connect_timeout
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self._where = f"{dsn_summary(url)} (schema {schema})"
        self._guard = threading.Lock()
        self._state: tuple[int, LoopThread, asyncpg.Pool] | None = None
        self._closed = False
        self._pool()  # connect, check (or create) the schema now: fail closed at start-up

    @property
    def location(self) -> str:
        """``user@host:port/database (schema …)``, without the password."""
        return self._where

    # -- connections ------------------------------------------------------------------------------

    def _unavailable(self, what: str, hint: str | None = None) -> LedgerUnavailable:
        return LedgerUnavailable(
            f"the budget ledger {self._where} is unavailable: {what}",
            hint=hint or "no query can run until the ledger database is reachable and intact (nothing was charged)",
        )

    def _failure(self, doing: str, e: BaseException) -> LedgerUnavailable:
        if isinstance(e, asyncpg.LockNotAvailableError):
            return self._unavailable(f"{doing}: it stayed locked for {self.lock_timeout:g} s",
                                     hint="another dpsql instance holds the ledger; retry the query (nothing was charged)")
        if isinstance(e, TimeoutError):
            return self._unavailable(f"{doing}: the server did not answer in time")
        return self._unavailable(f"{doing} ({type(e).__name__}: {e})")

    def _pool(self) -> tuple[LoopThread, asyncpg.Pool]:
        """The event loop and pool of this process, opened (and the schema checked) on first use."""
        with self._guard:
            if self._closed:
                raise self._unavailable("the ledger was closed")
            state = self._state
            if state is not None and state[0] == os.getpid() and not state[1].closed:
                return state[1], state[2]
            loop = LoopThread("dpsql-ledger")
            failure: BaseException | None = None
            try:
                pool = loop.run(self._open(), timeout=self.connect_timeout * 3 + 30)
            except LedgerUnavailable:
                loop.close()
                raise
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, ValueError) as e:
                failure = e
            if failure is not None:
                loop.close()
                raise self._failure("cannot open it", failure)
            self._state = (os.getpid(), loop, pool)
            return loop, pool

    async def _open(self) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            timeout=self.connect_timeout,
            statement_cache_size=0,
            server_settings={"application_name": "dpsql-ledger", "default_transaction_read_only": "off"},
        )
        try:
            async with pool.acquire() as conn:
                await self._check_schema(conn)
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def _check_schema(self, conn: asyncpg.Connection) -> None:
        s = self.schema
        if await conn.fetchval("SHOW fsync") != "on":
            raise self._unavailable("the server runs with fsync = off, so a charge would not survive a crash",
                                    hint="set fsync = on on the ledger's PostgreSQL server")
        created = migrated = False
        async with conn.transaction():
            # One instance at a time creates or migrates. After the lock is granted, read the catalog
            # with a new statement (a fresh snapshot): to_regnamespace() could answer from this
            # backend's catalog cache, which does not yet see a schema another instance committed
            # while we waited — the old code then ran CREATE SCHEMA again (DuplicateSchemaError).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('dpsql-ledger-create:' || $1))", s)
            exists = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)", s)
            if not exists:
                for stmt in _ddl(s):
                    await conn.execute(stmt)
                created = True
            else:
                have = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = $1", s)}
                if {"meta", "lock", "charges", "totals"} <= have:
                    version = await conn.fetchval(f"SELECT value FROM {s}.meta WHERE key = 'schema_version'")
                    steps = _migrations(s)
                    while version in steps:
                        for stmt in steps[version]:
                            await conn.execute(stmt)
                        version = await conn.fetchval(f"SELECT value FROM {s}.meta WHERE key = 'schema_version'")
                        migrated = True
        if created:
            log.warning("created a new, empty privacy budget ledger at %s", self._where)
        if migrated:
            log.warning("migrated the privacy budget ledger at %s to schema version %d", self._where, SCHEMA_VERSION)
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = $1", s)}
        if not {"meta", "lock", "charges", "totals", "replay"} <= tables:
            raise self._unavailable(f"schema {s} exists but is not a dpsql ledger",
                                    hint="point [privacy.ledger] url at another database, or restore the ledger")
        rows = dict(await conn.fetch(f"SELECT key, value FROM {s}.meta WHERE key IN ('application', 'schema_version')"))
        if rows.get("application") != "dpsql-ledger":
            raise self._unavailable("its metadata does not match a dpsql ledger")
        if rows.get("schema_version") != str(SCHEMA_VERSION):
            raise self._unavailable(f"schema version {rows.get('schema_version')}, this dpsql needs {SCHEMA_VERSION}")
        if await conn.fetchval(f"SELECT count(*) FROM {s}.lock WHERE id = 1") != 1:
            raise self._unavailable("its lock row is missing")

    # -- transactions -----------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, begin: str, lock: bool, durable: bool = True) -> Iterator[LedgerTx]:
        loop, pool = self._pool()
        wait = self.statement_timeout + 5
        failure: BaseException | None = None
        conn: asyncpg.Connection | None = None
        try:
            conn = loop.run(pool.acquire(timeout=self.connect_timeout), timeout=self.connect_timeout + 5)
            loop.run(conn.execute(
                f"{begin}; SET LOCAL synchronous_commit = {'on' if durable else 'off'}; "
                f"SET LOCAL lock_timeout = {int(self.lock_timeout * 1000)}; "
                f"SET LOCAL statement_timeout = {int(self.statement_timeout * 1000)}"
            ), timeout=wait)  # fmt: skip
            if lock and loop.run(conn.fetchval(f"SELECT id FROM {self.schema}.lock WHERE id = 1 FOR UPDATE"), timeout=wait) != 1:
                raise self._unavailable("its lock row is missing")
        except LedgerUnavailable:
            self._release(loop, pool, conn)
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as e:
            failure = e
        if failure is not None:
            self._release(loop, pool, conn)
            raise self._failure("cannot start a transaction", failure)
        assert conn is not None
        try:
            yield _PgTx(self, loop, conn)
            loop.run(conn.execute("COMMIT"), timeout=wait)  # returns once the commit is flushed
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as e:
            failure = e
        except OverflowError:
            failure = OverflowError("a budget total is out of range")
        finally:
            self._release(loop, pool, conn)
        if failure is not None:
            raise self._failure("a ledger operation failed", failure)

    def _release(self, loop: LoopThread, pool: asyncpg.Pool, conn: asyncpg.Connection | None) -> None:
        """Roll back anything unfinished and give the connection back (a broken one is closed)."""
        if conn is None:
            return
        with suppress(Exception):
            loop.run(_rollback_and_release(pool, conn), timeout=10)

    @contextmanager
    def _write(self) -> Iterator[LedgerTx]:
        with self._transaction("BEGIN ISOLATION LEVEL READ COMMITTED", lock=True) as tx:
            yield tx

    @contextmanager
    def _write_relaxed(self) -> Iterator[LedgerTx]:
        """Like :meth:`_write` with ``synchronous_commit = off`` (replay answers only)."""
        with self._transaction("BEGIN ISOLATION LEVEL READ COMMITTED", lock=True, durable=False) as tx:
            yield tx

    @contextmanager
    def _read(self) -> Iterator[LedgerTx]:
        with self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", lock=False) as tx:
            yield tx

    def close(self) -> None:
        """Close this process's pool and event loop thread; later use raises LedgerUnavailable."""
        with self._guard:
            self._closed = True
            state, self._state = self._state, None
        if state is None or state[0] != os.getpid():
            return
        _, loop, pool = state
        with suppress(Exception):
            loop.run(pool.close(), timeout=10)
        loop.close()


async def _rollback_and_release(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    try:
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.execute("ROLLBACK")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        conn.terminate()  # the pool replaces a closed connection on release
    await pool.release(conn)
