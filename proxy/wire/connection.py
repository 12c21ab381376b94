"""The per-connection protocol state machine: startup, authentication, simple and extended query,
transactions, portals and cursors, and routing of each statement.

This module holds the state shared by a server's connections (:class:`ServerContext`) and the
:class:`Connection` core: message dispatch by phase, errors and notices, the route cache and
running a routed statement. Each protocol area is a mixin in its own module, shaped like the
``api/`` modules of the Rust ``pgwire`` crate: :mod:`~dpsql.proxy.wire.startup` (startup and
authentication, :class:`Phase`), :mod:`~dpsql.proxy.wire.simple_query`,
:mod:`~dpsql.proxy.wire.extended_query`, :mod:`~dpsql.proxy.wire.transaction`
(:class:`TransactionStatus`), :mod:`~dpsql.proxy.wire.cursors`,
:mod:`~dpsql.proxy.wire.session_commands` and :mod:`~dpsql.proxy.wire.results`.

It is sans-I/O. :meth:`Connection.handle` takes one decoded frontend message and returns a
generator; the generator appends backend messages to :attr:`Connection.out` and yields a request
(:mod:`~dpsql.proxy.wire.driver`) when it needs the driver: ``Offload`` (run a blocking call — a DP
query on the engine session, which holds a DuckDB cursor — in a worker thread and send back its
result or exception), ``StartTLS`` (upgrade the socket after answering an SSLRequest with 'S') or
``Drain`` (flush and wait until the transport accepts more output). ``run_sync`` drives a generator
inline, for tests. The server loop (:mod:`dpsql.proxy.server`) drives it with asyncio.

Each statement is routed once per text (:mod:`~dpsql.proxy.wire.routing`, cached). Guarantees:
Describe never executes a DP query or charges (it plans); a query runs at most once per Execute
cycle of a portal or per DECLARE, whatever the row limits; every failure reaches the client as an
ErrorResponse (unexpected exceptions as XX000 "internal error", logged without query text).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

from dpsql.errors import DPSQLError, LimitExceeded, QueryCanceled, UnsupportedQuery
from dpsql.proxy.commands import rebound
from dpsql.proxy.engine import Result
from dpsql.proxy.session_info import SessionInfo
from dpsql.proxy.wire import messages as m
from dpsql.proxy.wire import params as params_mod
from dpsql.proxy.wire import types as pgt
from dpsql.proxy.wire.auth import ChannelBinding, LoginThrottle, ScramExchange, Verifiers
from dpsql.proxy.wire.cursors import CursorMixin
from dpsql.proxy.wire.driver import Drain, Handler, Offload, Request, StartTLS, run_sync
from dpsql.proxy.wire.extended_query import ExtendedQueryMixin
from dpsql.proxy.wire.gucs import Gucs, duration_ms
from dpsql.proxy.wire.params import bind_sql
from dpsql.proxy.wire.portals import Cursor, Portal, PreparedStatement
from dpsql.proxy.wire.results import _EMPTY, ResultsMixin, _tag_only
from dpsql.proxy.wire.routing import Route, route_statement
from dpsql.proxy.wire.session_commands import SessionCommandsMixin
from dpsql.proxy.wire.simple_query import SimpleQueryMixin
from dpsql.proxy.wire.startup import Fatal, Phase, StartupMixin
from dpsql.proxy.wire.transaction import TransactionMixin, TransactionStatus

if TYPE_CHECKING:
    from dpsql.policy import Policy
    from dpsql.proxy.engine import Engine, Session

# The driver's requests and the router are re-exported: the server and tests import them from here.
__all__ = [
    "Connection", "Drain", "Fatal", "Handler", "Offload", "Request", "Route", "ServerContext", "StartTLS", "route_statement",
    "run_sync",
]

log = logging.getLogger("dpsql.wire")

SLOW_CATALOG_SECONDS = 0.002  # catalog statements slower than this run off the event loop next time


# ---------------------------------------------------------------------------------------------
# Shared server state


class ServerContext:
    """What all connections of one server share: engine, catalog, credentials, limits, backends."""

    def __init__(
        self,
        engine: Engine,
        *,
        catalog: Any = None,
        database: str = "dpsql",
        tls: bool = False,
        channel_binding: ChannelBinding | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.engine = engine
        self.policy: Policy = engine.policy
        self.catalog = catalog
        self.database = database
        self.tls = tls
        self.channel_binding = channel_binding
        self.throttle = throttle or LoginThrottle()
        self.verifiers = Verifiers({name: u.password for name, u in self.policy.users.items()})
        self.auth_method = self.policy.server.auth
        self.max_connections = self.policy.limits.max_connections
        self.max_connections_per_user = self.policy.limits.connections_per_user
        self.user_connections: dict[str, int] = {}  # authenticated connections per user
        self.max_statement_bytes = self.policy.limits.max_statement_bytes
        self.backends: dict[int, Connection] = {}
        self.active = 0  # connections past the startup packet (authenticating or ready)
        self.lock = threading.Lock()
        self.routes: OrderedDict[str, Route] = OrderedDict()
        self.slow_catalog: dict[str, int] = {}  # catalog statement → consecutive slow runs
        self.row_descriptions: dict[tuple[Any, ...], bytes] = {}
        self.types: dict[str, pgt.PgType] = {}
        self.shutting_down = False

    def new_backend_id(self) -> int:
        """A positive 31-bit process id not used by a live connection."""
        while True:
            pid = secrets.randbelow(2**31 - 2) + 1
            if pid not in self.backends:
                return pid

    def cancel(self, pid: int, secret: bytes) -> bool:
        """Cancel the running statement of backend ``pid`` if ``secret`` matches (constant time)."""
        conn = self.backends.get(pid)
        expected = conn.secret if conn is not None else secrets.token_bytes(4)
        ok = hmac.compare_digest(expected, secret[:4].ljust(4, b"\0")) and len(secret) == 4
        if conn is not None and ok:
            conn.cancel()
            return True
        return False


# ---------------------------------------------------------------------------------------------
# The connection


class Connection(
    StartupMixin, SimpleQueryMixin, ExtendedQueryMixin, TransactionMixin, CursorMixin, SessionCommandsMixin, ResultsMixin
):
    """One client connection's protocol state. Not thread-safe except :meth:`cancel`."""

    def __init__(self, ctx: ServerContext, *, address: str = "127.0.0.1", loopback: bool = True) -> None:
        self.ctx = ctx
        self.address = address
        self.loopback = loopback
        self.tls = False
        self.out = bytearray()
        self.closing = False
        self.phase: Phase = Phase.STARTUP
        self.counted = False
        self.user_counted = False  # counted in ctx.user_connections (after authentication)
        self.pid = 0
        self.secret = b""
        self.user = ""
        self.info: SessionInfo | None = None
        self.gucs: Gucs | None = None
        self.session: Session | None = None
        self.statements: dict[str, PreparedStatement] = {}
        self.portals: dict[str, Portal] = {}
        self.cursors: dict[str, Cursor] = {}
        self.cursor_txn: dict[str, int] = {}
        self.txn: TransactionStatus = TransactionStatus.IDLE
        self.txn_id = 0
        self.savepoints: list[tuple[str, dict[str, str]]] = []
        self.skip_to_sync = False
        self._exchange: ScramExchange | None = None
        self._startup_params: dict[str, str] = {}
        self._running: Offload | None = None
        self._ctx_cache: tuple[str, str, pgt.OutputContext] | None = None
        self._encoders: dict[tuple[Any, ...], list[Callable[[Any], bytes]]] = {}
        self._error_context: tuple[str, int] | None = None  # statement text and its offset, for syntax error positions

    # ------------------------------------------------------------------------------ entry points

    def handle(self, msg: m.FrontendMessage) -> Handler:
        """Process one frontend message (see the module docstring)."""
        try:
            if self.phase == Phase.READY:
                yield from self._dispatch(msg)
            elif self.phase == Phase.STARTUP:
                yield from self._startup(msg)
            elif self.phase in (Phase.SASL_FIRST, Phase.SASL_FINAL):
                self._auth(msg)
        except Fatal as f:
            self.fatal(f.sqlstate, f.message, f.hint)
        except m.ProtocolViolation as e:
            self.fatal(e.sqlstate, str(e))

    def fatal(self, sqlstate: str, message: str, hint: str | None = None) -> None:
        """Send a FATAL ErrorResponse and mark the connection for closing."""
        self.out += m.encode_error(m.error_fields(sqlstate, message, hint=hint, severity="FATAL"))
        self.closing = True

    def protocol_violation(self, err: m.ProtocolViolation) -> None:
        """Report a framing error from the decoder and close."""
        self.fatal(err.sqlstate, str(err))

    def cancel(self) -> None:
        """Cancel the statement running in a worker thread, if any (thread-safe). Its charge stands."""
        job = self._running
        if job is not None and job.cancel is not None:
            try:
                job.cancel()
            except Exception:
                log.exception("cancel failed")

    def close(self) -> None:
        """Release the session and the backend id; idempotent."""
        if self.phase == Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        ctx = self.ctx
        with ctx.lock:
            if self.pid and ctx.backends.get(self.pid) is self:
                del ctx.backends[self.pid]
            if self.counted:
                ctx.active -= 1
                self.counted = False
            if self.user_counted:
                left = ctx.user_connections[self.user] - 1
                if left:
                    ctx.user_connections[self.user] = left
                else:
                    del ctx.user_connections[self.user]
                self.user_counted = False
        session, self.session = self.session, None
        if session is not None:
            try:
                session.close()
            except Exception:
                log.exception("closing an engine session failed")

    def shutdown_notice(self) -> None:
        """Tell the client the server is shutting down (57P01) and close."""
        self.fatal("57P01", "terminating connection due to administrator command")

    # ------------------------------------------------------------------------------ ready phase

    def _dispatch(self, msg: m.FrontendMessage) -> Handler:
        t = type(msg)
        if t is m.Query:
            yield from self._simple_query(msg.sql)  # type: ignore[union-attr]
            return
        if t is m.Sync:
            self.skip_to_sync = False
            self._ready()
            return
        if t is m.Terminate:
            self.closing = True
            return
        if t is m.Flush:
            yield Drain()
            return
        if t is m.Oversized and msg.type == b"Q":  # type: ignore[union-attr]
            self._error(self._oversized(msg))  # type: ignore[arg-type]
            self._ready()
            return
        if self.skip_to_sync and t in (m.Parse, m.Bind, m.Describe, m.Execute, m.Close, m.Oversized):
            return
        try:
            if t is m.Parse:
                self._parse(msg)  # type: ignore[arg-type]
            elif t is m.Bind:
                self._bind(msg)  # type: ignore[arg-type]
            elif t is m.Describe:
                yield from self._describe(msg)  # type: ignore[arg-type]
            elif t is m.Execute:
                yield from self._execute(msg)  # type: ignore[arg-type]
            elif t is m.Close:
                self._close(msg)  # type: ignore[arg-type]
            elif t is m.Oversized:
                raise self._oversized(msg)  # type: ignore[arg-type]
            elif t is m.Unsupported:
                self._unsupported(msg)  # type: ignore[arg-type]
            elif t is m.PasswordData:
                raise m.ProtocolViolation("unexpected password message")
            else:
                raise m.ProtocolViolation(f"unexpected message {t.__name__} after startup")
        except (Fatal, m.ProtocolViolation):
            raise
        except Exception as e:
            self._error(e)
            self.skip_to_sync = True

    def _ready(self) -> None:
        gucs = self.gucs
        if gucs is not None:
            for name, value in gucs.reports():
                self.out += m.encode_parameter_status(name, value)
        self.out += m.READY[self.txn]

    def _error(self, e: BaseException) -> None:
        """Send ``e`` as an ErrorResponse and mark an open transaction failed."""
        if isinstance(e, DPSQLError):
            position = getattr(e, "position", None)
            context, self._error_context = self._error_context, None
            if position is None and e.sqlstate == "42601" and context is not None:
                at = params_mod.syntax_position(context[0])
                position = None if at is None else at + context[1]
            fields = m.error_fields(e.sqlstate, e.message, hint=e.hint, position=position)
        else:
            log.error("internal error (%s) in connection %s:\n%s", type(e).__name__, self.pid,
                      "".join(traceback.format_tb(e.__traceback__)))
            fields = m.error_fields("XX000", "internal error", hint="the server log has details; the query text is not logged")
        self.out += m.encode_error(fields)
        if self.txn == TransactionStatus.IN_BLOCK:
            self.txn = TransactionStatus.FAILED

    def _notice(self, message: str, *, severity: str = "NOTICE", sqlstate: str = "00000") -> None:
        info = self.info
        level = info.settings.get("client_min_messages", "notice").lower() if info is not None else "notice"
        if severity == "NOTICE" and level in ("warning", "error", "fatal", "panic"):
            return
        if severity == "WARNING" and level in ("error", "fatal", "panic"):
            return
        self.out += m.encode_notice(m.error_fields(sqlstate, message, severity=severity))

    def _unsupported(self, msg: m.Unsupported) -> None:
        if msg.type in (b"d", b"c", b"f"):
            return  # CopyData/CopyDone/CopyFail outside COPY are ignored, as PostgreSQL does
        self._error(UnsupportedQuery("the function-call protocol message is not supported"))
        self._ready()

    @staticmethod
    def _oversized(msg: m.Oversized) -> DPSQLError:
        return LimitExceeded(
            f"message of {msg.length} bytes exceeds the server's limit",
            hint="send a shorter statement or smaller parameter values",
        )

    def _route(self, sql: str) -> Route:
        cache = self.ctx.routes
        hit = cache.get(sql)
        if hit is not None:
            return hit
        route = route_statement(sql, self.ctx.catalog)
        if len(sql) <= 4096:
            cache[sql] = route
            if len(cache) > 2048:
                cache.popitem(last=False)
        return route

    # ------------------------------------------------------------------------------ statements

    def _run(self, route: Route, params: tuple[Any, ...], oids: Sequence[int] = ()) -> Generator[Request, Any, Result]:
        """Execute one routed statement; returns its Result (``_EMPTY`` for an empty query)."""
        kind = route.kind
        if kind == "empty":
            return _EMPTY
        self._check_aborted(route)
        handler = _COMMANDS.get(kind)
        if handler is not None:
            return handler(self, route)
        session = self.session
        assert session is not None and self.info is not None
        if kind == "engine_fast":
            result = session.execute(route.sql, route.command)
            return _tag_only("SET") if route.arg == "default" else result
        if kind == "catalog":
            return (yield from self._run_catalog(route.sql, params))
        if kind == "declare":
            return (yield from self._declare(route))
        sql = bind_sql(route.sql, params, oids) if params else route.sql
        command = rebound(route.command, sql) if params and route.command is not None else route.command
        timeout = self._client_timeout()
        job = Offload(lambda: session.execute(sql, command), cancel=session.cancel, timeout=timeout)
        self._running = job
        try:
            result = yield job
        except QueryCanceled as e:
            if job.timed_out:
                e.message = "canceling statement due to statement timeout"
            raise
        finally:
            self._running = None
        return result  # type: ignore[no-any-return]

    def _client_timeout(self) -> float | None:
        info = self.info
        value = info.settings.get("statement_timeout", "0") if info is not None else "0"
        if value in ("0", ""):
            return None
        ms = duration_ms(value)
        return ms / 1000.0 if ms else None

    def _run_catalog(self, sql: str, params: tuple[Any, ...]) -> Generator[Request, Any, Result]:
        """Answer a catalog statement: inline on the event loop while it is fast (canned probes take
        microseconds), in a worker thread once it was slow (> 2 ms) twice in a row."""
        catalog = self.ctx.catalog
        info = self.info
        slow = self.ctx.slow_catalog
        p = list(params) if params else None

        def timed() -> tuple[Result, float]:
            t0 = time.perf_counter()
            r = catalog.execute(sql, info, p)
            return r, time.perf_counter() - t0

        if slow.get(sql, 0) >= 2:
            result, took = yield Offload(timed)
        else:
            result, took = timed()
        if took > SLOW_CATALOG_SECONDS:
            if len(slow) >= 4096 and sql not in slow:
                slow.clear()
            slow[sql] = slow.get(sql, 0) + 1
        elif sql in slow:
            del slow[sql]
        return result

_COMMANDS: dict[str, Callable[[Connection, Route], Result]] = {
    "begin": Connection._begin,
    "commit": Connection._commit,
    "rollback": Connection._rollback,
    "savepoint": Connection._savepoint,
    "release": Connection._release,
    "rollback_to": Connection._rollback_to,
    "set": Connection._set,
    "reset": Connection._reset,
    "show": Connection._show,
    "checkpoint": Connection._checkpoint,
    "discard": Connection._discard,
    "deallocate": Connection._deallocate,
    "listen": Connection._listen,
    "unlisten": Connection._listen,
    "fetch": Connection._fetch,
    "close_cursor": Connection._close_cursor,
}
