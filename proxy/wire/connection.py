"""The per-connection protocol state machine: startup, authentication, simple and extended query,
transactions, portals and cursors, and routing of each statement.

It is sans-I/O. :meth:`Connection.handle` takes one decoded frontend message and returns a
generator; the generator appends backend messages to :attr:`Connection.out` and yields a request
when it needs the driver: :class:`Offload` (run a blocking call — a DP query on the engine
session, which holds a DuckDB cursor — in a worker thread and send back its result or exception),
:class:`StartTLS` (upgrade the socket after answering an SSLRequest with 'S') or :class:`Drain`
(flush and wait until the transport accepts more output). :func:`run_sync` drives a generator
inline, for tests. The server loop (:mod:`dpsql.proxy.server`) drives it with asyncio.

Routing of one statement: the wire layer answers transaction control, ``SET``/``SHOW``/``RESET``
of ordinary settings, ``DISCARD``, ``DEALLOCATE``, ``LISTEN`` and cursors itself; the engine
answers ``SET/SHOW/RESET dp.*``, ``EXPLAIN`` and ``dpsql.budget``; statements the synthetic
catalog ``handles`` go to it; everything else is a query for the engine session. Guarantees:
Describe never executes a DP query or charges (it plans); a query runs at most once per Execute
cycle of a portal or per DECLARE, whatever the row limits; every failure reaches the client as an
ErrorResponse (unexpected exceptions as XX000 "internal error", logged without query text).
"""

from __future__ import annotations

import datetime
import hmac
import logging
import re
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dpsql.cache import BoundedCache
from dpsql.errors import (
    ActiveTransaction,
    DPSQLError,
    DuplicateCursor,
    DuplicatePreparedStatement,
    InFailedTransaction,
    InvalidCursorName,
    InvalidSavepoint,
    InvalidStatementName,
    LimitExceeded,
    NoActiveTransaction,
    PrivacyViolation,
    ProtocolViolation,
    QueryCanceled,
    QuerySyntaxError,
    UnsupportedQuery,
)
from dpsql.proxy.commands import classify
from dpsql.proxy.engine import Result
from dpsql.proxy.session_info import SessionInfo
from dpsql.proxy.trail import ClientInfo
from dpsql.proxy.wire import messages as m
from dpsql.proxy.wire import params as params_mod
from dpsql.proxy.wire import types as pgt
from dpsql.proxy.wire.auth import AuthError, ChannelBinding, LoginThrottle, ScramExchange, Verifiers, parse_sasl_initial
from dpsql.proxy.wire.gucs import Gucs, duration_ms, parse_set
from dpsql.proxy.wire.params import bind_sql, dummy_value, infer_param_types
from dpsql.proxy.wire.portals import Cursor, Described, FetchCommand, Portal, PreparedStatement, fetch_rows, parse_declare, parse_fetch
from dpsql.proxy.wire.sqltext import check_length, command_words, identifier, lex, tokens

if TYPE_CHECKING:
    from dpsql.policy import Policy
    from dpsql.proxy.engine import Engine, Session

log = logging.getLogger("dpsql.wire")

ROW_CHUNK = 256  # rows encoded between flow-control checks
OUT_HIGH_WATER = 256 * 1024  # bytes of pending output that trigger a Drain while sending rows
MAX_STATEMENTS = 10_000  # named prepared statements (and portals) per connection
MAX_CURSORS = 100  # open cursors per connection (each holds its materialised rows)
SLOW_CATALOG_SECONDS = 0.002  # catalog statements slower than this run off the event loop next time


# ---------------------------------------------------------------------------------------------
# Requests to the driver


@dataclass(slots=True)
class Offload:
    """Run ``fn`` off the event loop; the generator receives its return value (or its exception).
    ``cancel`` interrupts it from any thread; ``timeout`` (seconds) calls ``cancel`` when it expires."""

    fn: Callable[[], Any]
    cancel: Callable[[], None] | None = None
    timeout: float | None = None
    timed_out: bool = False


@dataclass(slots=True)
class StartTLS:
    """Upgrade the connection to TLS (after 'S' was flushed)."""


@dataclass(slots=True)
class Drain:
    """Flush pending output and resume when the transport can take more."""


Request = Offload | StartTLS | Drain
Handler = Generator[Request, Any, None]


def run_sync(gen: Handler | None, *, tls: Callable[[], None] | None = None) -> None:
    """Drive a handler generator inline: offloaded calls run in this thread (for tests and tools)."""
    if gen is None:
        return
    value: Any = None
    exc: BaseException | None = None
    while True:
        try:
            req = gen.throw(exc) if exc is not None else gen.send(value)
        except StopIteration:
            return
        value, exc = None, None
        if isinstance(req, Offload):
            try:
                value = req.fn()
            except BaseException as e:
                exc = e
        elif isinstance(req, StartTLS):
            if tls is None:
                raise RuntimeError("TLS requested but the sync driver has no TLS")
            tls()


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
        self.routes: BoundedCache[str, Route] = BoundedCache(2048)
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
# Routing


@dataclass(frozen=True, slots=True)
class Route:
    """How one statement is answered. ``kind`` is one of: empty, begin, commit, rollback,
    savepoint, release, rollback_to, set, reset, show, checkpoint, discard, deallocate, listen, unlisten,
    declare, fetch, close_cursor, engine_fast, engine_cmd, catalog, query."""

    kind: str
    sql: str
    arg: str = ""


_TXN_EXIT = frozenset({"commit", "rollback", "rollback_to"})
_SET_DP_DEFAULT = re.compile(r"^\s*set\s+(?:session\s+|local\s+)?(dp\.[a-z_]+)\s*(?:=|\bto\b)\s*default\s*;?\s*$", re.I)


def route_statement(sql: str, catalog: Any) -> Route:
    """Classify one statement (no session state is read, so the answer can be cached by text)."""
    words = command_words(sql, 4)
    if not words:
        return Route("empty", sql)
    w0 = words[0]
    w1 = words[1] if len(words) > 1 else ""
    if w0 in ("begin", "start"):
        if w0 == "start" and w1 != "transaction":
            return Route("query", sql)
        return Route("begin", sql)
    if w0 in ("commit", "end"):
        return Route("query", sql) if w1 == "prepared" else Route("commit", sql)
    if w0 in ("rollback", "abort"):
        if w1 == "prepared":
            return Route("query", sql)
        rest = [w for w in words[1:] if w not in ("work", "transaction")]
        if rest and rest[0] == "to":
            toks = tokens(sql)
            name = toks[-1] if len(toks) > 2 else ""
            return Route("rollback_to", sql, identifier(name))
        return Route("rollback", sql)
    if w0 == "savepoint":
        toks = tokens(sql)
        return Route("savepoint", sql, identifier(toks[1]) if len(toks) > 1 else "")
    if w0 == "release":
        toks = tokens(sql)
        return Route("release", sql, identifier(toks[-1]) if len(toks) > 1 else "")
    if w0 in ("set", "show", "reset"):
        name_pos = 2 if w1 in ("session", "local") else 1
        name = words[name_pos] if len(words) > name_pos else ""
        if name.startswith("dp."):
            return Route("engine_fast", sql)
        return Route(w0, sql)
    if w0 == "checkpoint":
        return Route("checkpoint", sql)
    if w0 == "discard":
        return Route("discard", sql, w1)
    if w0 == "deallocate":
        toks = tokens(sql)
        return Route("deallocate", sql, identifier(toks[-1]) if len(toks) > 1 else "")
    if w0 in ("listen", "unlisten"):
        return Route(w0, sql)
    if w0 == "declare":
        return Route("declare", sql)
    if w0 in ("fetch", "move"):
        return Route("fetch", sql)
    if w0 == "close":
        toks = tokens(sql)
        return Route("close_cursor", sql, identifier(toks[-1]) if len(toks) > 1 else "")
    kind = classify(sql).kind
    if kind in ("set", "reset", "show"):
        return Route("engine_fast", sql)
    if kind in ("explain", "budget"):
        return Route("engine_cmd", sql)
    if catalog is not None and catalog.handles(sql):
        return Route("catalog", sql)
    return Route("query", sql)


# ---------------------------------------------------------------------------------------------
# The connection


class Fatal(Exception):
    """An error that ends the connection (sent with severity FATAL)."""

    def __init__(self, sqlstate: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.hint = hint


def _tag_only(tag: str) -> Result:
    return Result((), (), [], command=tag)


_EMPTY = Result((), (), [], command="")


class Connection:
    """One client connection's protocol state. Not thread-safe except :meth:`cancel`."""

    def __init__(self, ctx: ServerContext, *, address: str = "127.0.0.1", loopback: bool = True) -> None:
        self.ctx = ctx
        self.address = address
        self.loopback = loopback
        self.tls = False
        self.out = bytearray()
        self.closing = False
        self.phase = "startup"  # startup → sasl_first → sasl_final → ready → closed
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
        self.txn = "I"
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
            if self.phase == "ready":
                yield from self._dispatch(msg)
            elif self.phase == "startup":
                yield from self._startup(msg)
            elif self.phase in ("sasl_first", "sasl_final"):
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
        if self.phase == "closed":
            return
        self.phase = "closed"
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

    # ---------------------------------------------------------------------------- startup / auth

    def _startup(self, msg: m.FrontendMessage) -> Handler:
        ctx = self.ctx
        if isinstance(msg, m.SSLRequest):
            if self.tls:
                raise Fatal("08P01", "SSL negotiation requested on an encrypted connection")
            if ctx.tls:
                self.out += m.SSL_YES
                yield StartTLS()
                self.tls = True
            else:
                self.out += m.SSL_NO
            return
        if isinstance(msg, m.GSSENCRequest):
            self.out += m.SSL_NO
            return
        if isinstance(msg, m.CancelRequest):
            ctx.cancel(msg.pid, msg.secret)
            self.closing = True
            return
        if not isinstance(msg, m.StartupMessage):
            raise Fatal("08P01", "expected a startup message")
        major, minor = msg.version >> 16, msg.version & 0xFFFF
        if major != 3:
            raise Fatal("0A000", f"unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")
        unknown_opts = [k for k in msg.params if k.startswith("_pq_.")]
        if minor > 0 or unknown_opts:
            self.out += m.encode_negotiate_version(0, unknown_opts)
        if not self.tls and not self.loopback:
            raise Fatal("28000", "dpsql requires TLS for connections from beyond the loopback interface",
                        "connect with sslmode=require (or verify-full)")
        user = msg.params.get("user", "")
        if not user:
            raise Fatal("28000", "no PostgreSQL user name specified in startup packet")
        if msg.params.get("replication", "false").lower() not in ("false", "off", "no", "0"):
            raise Fatal("42501", "replication connections are not allowed by dpsql")
        if ctx.shutting_down:
            raise Fatal("57P03", "the database system is shutting down")
        with ctx.lock:
            if ctx.active >= ctx.max_connections:
                full = True
            else:
                full = False
                ctx.active += 1
                self.counted = True
        if full:
            raise Fatal("53300", "sorry, too many clients already", "raise [limits] max_connections or close idle connections")
        self.user = user
        self._startup_params = dict(msg.params)
        if ctx.throttle.locked(user, self.address):
            log.warning("login refused for user %r from %s: too many failed attempts", user, self.address)
            raise Fatal("28000", f'too many failed login attempts for user "{user}"; try again in a minute')
        if ctx.auth_method == "trust":
            self._authenticated()
            return
        known = ctx.verifiers.known(user) and ctx.policy.user(user) is not None
        binding = ctx.channel_binding if self.tls else None
        self._exchange = ScramExchange(ctx.verifiers.get(user), valid=known, binding=binding)
        self.out += m.encode_auth_sasl(ScramExchange.mechanisms(binding))
        self.phase = "sasl_first"

    def _auth(self, msg: m.FrontendMessage) -> None:
        if not isinstance(msg, m.PasswordData):
            if isinstance(msg, m.Terminate):
                self.closing = True
                return
            raise Fatal("08P01", f"expected SASL response, got message type {type(msg).__name__}")
        exchange = self._exchange
        assert exchange is not None
        try:
            if self.phase == "sasl_first":
                mechanism, data = parse_sasl_initial(msg.data)
                self.out += m.encode_auth_sasl_continue(exchange.first(mechanism, data))
                self.phase = "sasl_final"
                return
            final = exchange.final(msg.data)
        except AuthError:
            self.ctx.throttle.failure(self.user, self.address)
            log.warning("password authentication failed for user %r from %s", self.user, self.address)
            raise Fatal("28P01", f'password authentication failed for user "{self.user}"') from None
        self.out += m.encode_auth_sasl_final(final)
        self.ctx.throttle.success(self.user, self.address)
        self._authenticated()

    def _authenticated(self) -> None:
        ctx = self.ctx
        params = self._startup_params
        database = params.get("database") or self.user
        if database != ctx.database:
            raise Fatal("3D000", f'database "{database}" does not exist', f'connect to database "{ctx.database}"')
        self._count_user()
        try:
            session = ctx.engine.session(self.user, ClientInfo(peer=self.address, tls=self.tls, auth=ctx.auth_method))
        except DPSQLError as e:
            raise Fatal(e.sqlstate, e.message, e.hint) from None
        self.pid = ctx.new_backend_id()
        self.secret = secrets.token_bytes(4)
        info = SessionInfo(user=self.user, database=ctx.database, backend_pid=self.pid)
        info.settings["session_authorization"] = self.user
        gucs = Gucs(info)
        try:
            for name, value in gucs.apply_startup(params).items():  # e.g. PGOPTIONS="-c dp.epsilon=0.5"
                session.settings.set(name, value)
        except DPSQLError as e:
            session.close()
            raise Fatal(e.sqlstate, e.message, e.hint) from None
        self.info, self.gucs, self.session = info, gucs, session
        with ctx.lock:
            ctx.backends[self.pid] = self
        self.phase = "ready"
        self.out += m.AUTH_OK
        for name, value in gucs.reports():
            self.out += m.encode_parameter_status(name, value)
        self.out += m.encode_backend_key_data(self.pid, self.secret)
        self.out += m.READY["I"]

    def _count_user(self) -> None:
        """Take one of the user's connection slots, or refuse as PostgreSQL does for a role's
        connection limit (FATAL 53300). Counted only after authentication, so nobody can use up
        another user's slots without their password."""
        ctx = self.ctx
        cap = ctx.max_connections_per_user
        with ctx.lock:
            n = ctx.user_connections.get(self.user, 0)
            if n < cap:
                ctx.user_connections[self.user] = n + 1
                self.user_counted = True
        if not self.user_counted:
            log.warning("connection refused for user %r from %s: %d connections already open", self.user, self.address, cap)
            raise Fatal("53300", f'too many connections for role "{self.user}"',
                        f"close one of your other connections ({cap} at most per user: [limits] max_connections_per_user)")

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
        if self.txn == "T":
            self.txn = "E"

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

    # ------------------------------------------------------------------------------ simple query

    def _simple_query(self, sql: str) -> Handler:
        self.statements.pop("", None)
        self.portals.pop("", None)
        try:
            check_length(sql, self.ctx.max_statement_bytes)
            stmts = lex(sql).statements
        except DPSQLError as e:
            self._error(e)
            self._ready()
            return
        if not stmts:
            self.out += m.EMPTY_QUERY
            self._ready()
            return
        candidates = self._query_statements(stmts) if len(stmts) > 1 else []
        if len(candidates) > 1:  # rewriting is pure but not instant: off the event loop
            private = yield Offload(lambda: self._private_statements(candidates))
            if len(private) > 1:
                self._error(UnsupportedQuery(
                    f"this query string holds {len(private)} differentially private queries; dpsql runs at most one "
                    "per simple-query message, and ran none of the statements",
                    hint="send each private query in its own message (one psql -c or driver call per query); SET, SHOW, "
                    "EXPLAIN and catalog statements may share a string with one query",
                ))
                self._ready()
                return
        search_from = 0
        for stmt in stmts:
            offset = sql.find(stmt, search_from)
            search_from = max(offset, 0) + len(stmt)
            self._error_context = (stmt, max(offset, 0))
            try:
                route = self._route(stmt)
                result = yield from self._run(route, ())
                if result is _EMPTY:
                    self.out += m.EMPTY_QUERY
                    continue
                binary = route.kind == "fetch" and result.command.startswith("FETCH") and getattr(result, "binary", False)
                yield from self._send_result(result, (1,) if binary else (), describe=True)
                if len(self.out) > OUT_HIGH_WATER:
                    yield Drain()
            except Exception as e:
                self._error(e)
                break
        self._ready()

    def _query_statements(self, stmts: Sequence[str]) -> list[str]:
        """The statements routed to the engine as queries or cursors, and EXPLAIN (BIAS) (cheap:
        routing is cached)."""
        out = []
        for stmt in stmts:
            try:
                route = self._route(stmt)
                if route.kind in ("query", "declare") or (route.kind == "engine_cmd" and classify(route.sql).bias):
                    out.append(stmt)
            except Exception:  # it fails the same way when its turn comes
                continue
        return out

    def _private_statements(self, stmts: Sequence[str]) -> list[str]:
        """The statements of a multi-statement string that would be charged: queries (or cursors
        over queries) that read a private table, and EXPLAIN (BIAS). Reads no data (the rewrite is pure and cached); a
        statement that does not rewrite is not counted, as it will fail on its own when it runs."""
        out = []
        for stmt in stmts:
            try:
                route = self._route(stmt)
                if route.kind == "declare":
                    route = self._route(parse_declare(route.sql).query)
                if route.kind == "engine_cmd" and classify(route.sql).bias:
                    out.append(stmt)  # EXPLAIN (BIAS) is charged like a query
                    continue
                if route.kind != "query":
                    continue
                command = classify(route.sql)
                if command.kind == "query" and self.ctx.engine.rewrite(command.query).plan is not None:
                    out.append(stmt)
            except Exception:  # it fails the same way when its turn comes
                continue
        return out

    def _route(self, sql: str) -> Route:
        cache = self.ctx.routes
        hit = cache.get(sql)
        if hit is not None:
            return hit
        route = route_statement(sql, self.ctx.catalog)
        if len(sql) <= 4096:
            cache.put(sql, route)
        return route

    # ---------------------------------------------------------------------------- extended query

    def _check_aborted(self, route: Route) -> None:
        if self.txn == "E" and route.kind not in _TXN_EXIT:
            raise InFailedTransaction("current transaction is aborted, commands ignored until end of transaction block")

    def _parse(self, msg: m.Parse) -> None:
        if msg.name and msg.name in self.statements:
            raise DuplicatePreparedStatement(f'prepared statement "{msg.name}" already exists')
        if msg.name and len(self.statements) >= MAX_STATEMENTS:
            raise LimitExceeded(f"too many prepared statements (at most {MAX_STATEMENTS} per connection)",
                             hint="DEALLOCATE or Close statements you no longer use")
        check_length(msg.sql, self.ctx.max_statement_bytes)
        stmts = lex(msg.sql).statements
        if len(stmts) > 1:
            raise QuerySyntaxError("cannot insert multiple commands into a prepared statement")
        sql = stmts[0] if stmts else ""
        route = self._route(sql) if sql else Route("empty", "")
        self._check_aborted(route)
        if lex(msg.sql).placeholders or msg.param_oids:
            schema = self.ctx.engine.catalog if route.kind == "query" else None
            oids = infer_param_types(sql, msg.param_oids, schema)
            if route.kind == "catalog":
                oids = self._catalog_param_types(sql, msg.param_oids, oids)
        else:
            oids = ()
        self.statements[msg.name] = PreparedStatement(sql, route, oids)
        self.out += m.PARSE_COMPLETE

    def _catalog_param_types(self, sql: str, given: Sequence[int], inferred: tuple[int, ...]) -> tuple[int, ...]:
        """Parameter types of a catalog statement: the client's, else explicit casts, else the catalog's view."""
        try:
            names = self.ctx.catalog.parameter_types(sql)
        except Exception:
            return inferred
        casts = {i for i, oid in enumerate(inferred) if oid != params_mod.TEXT_OID}
        out = list(inferred)
        for i, name in enumerate(names[: len(out)]):
            if (i >= len(given) or not given[i]) and i not in casts:
                out[i] = pgt.type_by_name(name).oid
        return tuple(out)

    def _bind(self, msg: m.Bind) -> None:
        stmt = self.statements.get(msg.statement)
        if stmt is None:
            raise InvalidStatementName(f'prepared statement "{msg.statement}" does not exist')
        if msg.portal and msg.portal in self.portals:
            raise DuplicateCursor(f'portal "{msg.portal}" already exists')
        if msg.portal and len(self.portals) >= MAX_STATEMENTS:
            raise LimitExceeded(f"too many open portals (at most {MAX_STATEMENTS} per connection)", hint="Close portals")
        self._check_aborted(stmt.route)
        n = len(stmt.param_oids)
        if len(msg.params) != n:
            raise ProtocolViolation(
                f'bind message supplies {len(msg.params)} parameters, but prepared statement "{msg.statement}" requires {n}',
            )
        fmts = msg.param_formats
        if len(fmts) not in (0, 1, n):
            raise ProtocolViolation(f"bind message has {len(fmts)} parameter formats but {n} parameters")
        values: list[Any] = []
        tz = self._output_ctx().timezone
        for i, (raw, oid) in enumerate(zip(msg.params, stmt.param_oids, strict=True)):
            fmt = fmts[0] if len(fmts) == 1 else (fmts[i] if fmts else 0)
            try:
                values.append(pgt.decode_param(raw, oid, fmt, tz))
            except DPSQLError as e:
                if e.sqlstate == "22P03":
                    e.message = f"incorrect binary data format in bind parameter {i + 1}"
                raise
        self.portals[msg.portal] = Portal(stmt, tuple(values), msg.result_formats)
        self.out += m.BIND_COMPLETE

    def _describe(self, msg: m.Describe) -> Handler:
        if msg.kind == "S":
            stmt = self.statements.get(msg.name)
            if stmt is None:
                raise InvalidStatementName(f'prepared statement "{msg.name}" does not exist')
            self.out += m.encode_parameter_description(stmt.param_oids)
            if not stmt.describe_done:
                params = tuple(dummy_value(o) for o in stmt.param_oids)
                stmt.described = yield from self._describe_route(stmt.route, params, stmt.param_oids)
                stmt.describe_done = stmt.route.kind not in ("fetch", "engine_cmd")
            self._send_description(stmt.described, ())
            return
        portal = self.portals.get(msg.name)
        if portal is None:
            raise InvalidCursorName(f'portal "{msg.name}" does not exist')
        if portal.described is None:
            if portal.result is not None:
                r = portal.result
                portal.described = Described(r.columns, r.types) if _returns_rows(r) else None
            elif portal.statement.describe_done and not portal.params:
                portal.described = portal.statement.described
            else:
                portal.described = yield from self._describe_route(portal.statement.route, portal.params, portal.statement.param_oids)
        self._send_description(portal.described, portal.result_formats)

    def _send_description(self, described: Described | None, formats: Sequence[int]) -> None:
        if described is None:
            self.out += m.NO_DATA
        else:
            self.out += self._row_description(described.names, described.types, formats)

    def _row_description(self, names: Sequence[str], types: Sequence[str], formats: Sequence[int]) -> bytes:
        key = (tuple(names), tuple(types), tuple(formats))
        cache = self.ctx.row_descriptions
        hit = cache.get(key)
        if hit is None:
            hit = m.encode_row_description(self._fields(names, types, formats))
            if len(cache) >= 4096:
                cache.clear()
            cache[key] = hit
        return hit

    def _describe_route(self, route: Route, params: tuple[Any, ...], oids: Sequence[int]) -> Generator[Request, Any, Described | None]:
        """Names and types of ``route``'s result without running a DP query or charging."""
        kind = route.kind
        info = self.info
        assert info is not None and self.session is not None and self.gucs is not None
        if kind == "query":
            sql = bind_sql(route.sql, params, oids) if params else route.sql
            session = self.session
            rw, _noise = yield Offload(lambda: session.plan(sql))
            return Described(tuple(o.name for o in rw.outputs), tuple(o.pg_type for o in rw.outputs))
        if kind == "catalog":
            names, types = self.ctx.catalog.describe(route.sql, info)
            return Described(tuple(names), tuple(types)) if names else None
        if kind == "engine_cmd":
            command = classify(route.sql)
            if command.kind == "explain":
                return Described(("QUERY PLAN",), ("text",))
            session = self.session
            r = yield Offload(lambda: session.execute(route.sql))  # the budget view: free, reads the ledger only
            return Described(r.columns, r.types)
        if kind == "engine_fast":
            words = command_words(route.sql, 3)
            if words and words[0] == "show":
                name = words[-1]
                return Described((name,), ("text",))
            return None
        if kind == "show":
            result = self._show(route)
            return Described(result.columns, result.types)
        if kind == "fetch":
            cmd = parse_fetch(route.sql)
            if cmd.move:
                return None
            cursor = self._cursor(cmd.cursor)
            return Described(cursor.result.columns, cursor.result.types)
        return None

    def _execute(self, msg: m.Execute) -> Handler:
        portal = self.portals.get(msg.portal)
        if portal is None:
            raise InvalidCursorName(f'portal "{msg.portal}" does not exist')
        route = portal.statement.route
        self._error_context = (route.sql, 0) if not portal.params else None
        if portal.result is None:
            if portal.done:
                self.out += m.encode_command_complete("SELECT 0")
                return
            self._check_aborted(route)
            result = yield from self._run(route, portal.params, portal.statement.param_oids)
            if result is _EMPTY:
                self.out += m.EMPTY_QUERY
                portal.done = True
                return
            if not _returns_rows(result):
                self._send_notices(result)
                self.out += m.encode_command_complete(result.tag)
                portal.done = True
                return
            portal.result = result
            self._send_notices(result)
        result = portal.result
        formats = portal.result_formats
        if getattr(result, "binary", False) and not formats:
            formats = (1,)
        limit = msg.max_rows
        start = portal.position
        rows = result.rows
        end = len(rows) if limit <= 0 else min(len(rows), start + limit)
        # Encode with the types the client was told (Describe of the portal or statement) when it asked.
        described = portal.described or portal.statement.described
        types = described.types if described is not None and len(described.types) == len(result.columns) else result.types
        yield from self._send_rows(rows, start, end, types, formats, len(result.columns))
        portal.position = end
        if end < len(rows):
            self.out += m.PORTAL_SUSPENDED
            return
        tag = result.tag if start == 0 else f"{result.command} {end - start}" if result.command == "SELECT" else result.tag
        self.out += m.encode_command_complete(tag)
        portal.result = None
        portal.done = True

    def _close(self, msg: m.Close) -> None:
        if msg.kind == "S":
            self.statements.pop(msg.name, None)
        else:
            self.portals.pop(msg.name, None)
        self.out += m.CLOSE_COMPLETE

    # ---------------------------------------------------------------------------------- results

    def _output_ctx(self) -> pgt.OutputContext:
        info = self.info
        tzname = info.settings.get("timezone", "UTC") if info is not None else "UTC"
        efd = info.settings.get("extra_float_digits", "1") if info is not None else "1"
        cached = self._ctx_cache
        if cached is not None and cached[0] == tzname and cached[1] == efd:
            return cached[2]
        ctx = pgt.OutputContext(pgt.zone(tzname) or datetime.UTC, int(efd) if efd.lstrip("-").isdigit() else 1)
        self._ctx_cache = (tzname, efd, ctx)
        return ctx

    def _type(self, name: str) -> pgt.PgType:
        cache = self.ctx.types
        hit = cache.get(name)
        if hit is not None:
            return hit
        t = self._resolve_type(name)
        if len(cache) < 4096:
            cache[name] = t
        return t

    def _resolve_type(self, name: str) -> pgt.PgType:
        t = pgt.type_by_name(name)
        if t is pgt.TEXT and name not in ("text", "pg_catalog.text") and self.ctx.catalog is not None:
            try:
                oid = int(self.ctx.catalog.type_oid(name))
            except Exception:
                return t
            known = pgt.type_by_oid(oid)
            return known if known is not None else pgt.PgType(name, oid, -1)
        return t

    def _fields(self, names: Sequence[str], types: Sequence[str], formats: Sequence[int]) -> list[m.FieldDescription]:
        n = len(names)
        if len(formats) not in (0, 1, n):
            raise ProtocolViolation(f"bind message has {len(formats)} result formats but query has {n} columns")
        out = []
        for i, (name, tname) in enumerate(zip(names, types, strict=True)):
            t = self._type(tname)
            fmt = formats[0] if len(formats) == 1 else (formats[i] if formats else 0)
            out.append(m.FieldDescription(name, t.oid, t.typlen, -1, fmt))
        return out

    def _send_result(self, result: Result, formats: Sequence[int], *, describe: bool) -> Handler:
        self._send_notices(result)
        if _returns_rows(result):
            if describe:
                self.out += self._row_description(result.columns, result.types, formats)
            yield from self._send_rows(result.rows, 0, len(result.rows), result.types, formats, len(result.columns))
        self.out += m.encode_command_complete(result.tag)

    def _send_notices(self, result: Result) -> None:
        for text in result.notices:
            self._notice(text)

    def _send_rows(
        self, rows: Sequence[Sequence[Any]], start: int, end: int, types: Sequence[str], formats: Sequence[int], ncols: int
    ) -> Handler:
        if start >= end:
            return
        ctx = self._output_ctx()
        key = (ctx, tuple(types), tuple(formats), ncols)
        encs = self._encoders.get(key)
        if encs is None:
            encs = []
            for i in range(ncols):
                t = self._type(types[i]) if i < len(types) else pgt.TEXT
                fmt = formats[0] if len(formats) == 1 else (formats[i] if i < len(formats) else 0)
                encs.append(pgt.binary_encoder(t) if fmt == 1 else pgt.text_encoder(t, ctx))
            if len(self._encoders) >= 256:
                self._encoders.clear()
            self._encoders[key] = encs
        data_row = m.encode_data_row
        i = start
        while i < end:
            stop = min(end, i + ROW_CHUNK)
            out = self.out  # the driver may swap the buffer during a Drain
            for r in range(i, stop):
                row = rows[r]
                out += data_row([None if v is None else enc(v) for enc, v in zip(encs, row, strict=False)])
            i = stop
            if i < end and len(self.out) > OUT_HIGH_WATER:
                yield Drain()

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
            m_default = _SET_DP_DEFAULT.match(route.sql)
            if m_default is not None:  # SET dp.x TO DEFAULT means RESET dp.x
                session.execute(f"RESET {m_default.group(1)}")
                return _tag_only("SET")
            return session.execute(route.sql)
        if kind == "catalog":
            return (yield from self._run_catalog(route.sql, params))
        if kind == "declare":
            return (yield from self._declare(route))
        sql = bind_sql(route.sql, params, oids) if params else route.sql
        timeout = self._client_timeout()
        job = Offload(lambda: session.execute(sql), cancel=session.cancel, timeout=timeout)
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

    # transaction control

    def _begin(self, route: Route) -> Result:
        if self.txn != "I":
            self._notice("there is already a transaction in progress", severity="WARNING", sqlstate="25001")
            return _tag_only("BEGIN")
        self.txn = "T"
        self.txn_id += 1
        self.savepoints = []
        assert self.gucs is not None
        self.gucs.begin()
        return _tag_only("BEGIN")

    def _end_txn(self, commit: bool) -> None:
        assert self.gucs is not None
        if commit:
            self.gucs.commit()
        else:
            self.gucs.rollback()
        for name in list(self.cursors):
            created_here = self.cursor_txn.get(name) == self.txn_id
            if (commit and not self.cursors[name].hold) or (not commit and created_here):
                del self.cursors[name]
                self.cursor_txn.pop(name, None)
        self.txn = "I"
        self.savepoints = []

    def _commit(self, route: Route) -> Result:
        if self.txn == "I":
            self._notice("there is no transaction in progress", severity="WARNING", sqlstate="25P01")
            return _tag_only("COMMIT")
        failed = self.txn == "E"
        self._end_txn(commit=not failed)
        return _tag_only("ROLLBACK" if failed else "COMMIT")

    def _rollback(self, route: Route) -> Result:
        if self.txn == "I":
            self._notice("there is no transaction in progress", severity="WARNING", sqlstate="25P01")
            return _tag_only("ROLLBACK")
        self._end_txn(commit=False)
        return _tag_only("ROLLBACK")

    def _savepoint(self, route: Route) -> Result:
        if self.txn == "I":
            raise NoActiveTransaction("SAVEPOINT can only be used in transaction blocks")
        assert self.info is not None
        self.savepoints.append((route.arg, dict(self.info.settings)))
        return _tag_only("SAVEPOINT")

    def _find_savepoint(self, name: str, what: str) -> int:
        if self.txn == "I":
            raise NoActiveTransaction(f"{what} can only be used in transaction blocks")
        for i in range(len(self.savepoints) - 1, -1, -1):
            if self.savepoints[i][0] == name:
                return i
        raise InvalidSavepoint(f'savepoint "{name}" does not exist')

    def _release(self, route: Route) -> Result:
        i = self._find_savepoint(route.arg, "RELEASE SAVEPOINT")
        del self.savepoints[i:]
        return _tag_only("RELEASE")

    def _rollback_to(self, route: Route) -> Result:
        i = self._find_savepoint(route.arg, "ROLLBACK TO SAVEPOINT")
        assert self.info is not None
        snapshot = self.savepoints[i][1]
        self.info.settings.clear()
        self.info.settings.update(snapshot)
        del self.savepoints[i + 1 :]
        self.txn = "T"
        return _tag_only("ROLLBACK")

    def _checkpoint(self, route: Route) -> Result:
        raise PrivacyViolation(
            "must be superuser or have privileges of pg_checkpoint to do CHECKPOINT",
            hint="dpsql answers read-only queries; it has no storage of its own to checkpoint",
        )

    # settings

    def _set(self, route: Route) -> Result:
        assert self.gucs is not None
        cmd = parse_set(route.sql, self.user)
        if cmd.name is not None:
            if cmd.local and self.txn == "I":
                self._notice("SET LOCAL can only be used in transaction blocks", severity="WARNING", sqlstate="25P01")
            self.gucs.set(cmd.name, cmd.value, local=cmd.local, in_transaction=self.txn != "I")
        return _tag_only("SET")

    def _reset(self, route: Route) -> Result:
        assert self.gucs is not None and self.session is not None
        toks = [t.lower() for t in tokens(route.sql)[1:]]
        if toks == ["all"]:
            self.gucs.reset("all")
            for name in ("dp.epsilon", "dp.delta"):
                self.session.execute(f"RESET {name}")
        elif toks[:2] == ["time", "zone"]:
            self.gucs.reset("timezone")
        elif toks in (["role"], ["session", "authorization"]):
            pass
        elif len(toks) == 1:
            self.gucs.reset(identifier(tokens(route.sql)[1]))
        else:
            raise QuerySyntaxError("syntax error in RESET")
        return _tag_only("RESET")

    def _show(self, route: Route) -> Result:
        assert self.gucs is not None
        toks = tokens(route.sql)[1:]
        low = [t.lower() for t in toks]
        if low == ["all"]:
            return Result(("name", "setting", "description"), ("text", "text", "text"), list(self.gucs.show_all()), command="SHOW")
        if low[:2] == ["time", "zone"]:
            name = "timezone"
        elif low[:3] == ["transaction", "isolation", "level"]:
            name = "transaction_isolation"
        elif low[:2] == ["session", "authorization"]:
            name = "session_authorization"
        elif len(toks) == 1:
            name = identifier(toks[0])
        else:
            raise QuerySyntaxError("syntax error in SHOW")
        shown, value = self.gucs.show(name)
        return Result((shown,), ("text",), [(value,)], command="SHOW")

    def _discard(self, route: Route) -> Result:
        what = route.arg or ""
        if what == "all":
            if self.txn != "I":
                raise ActiveTransaction("DISCARD ALL cannot run inside a transaction block")
            self.statements = {k: v for k, v in self.statements.items() if k == ""}
            self.portals = {}
            self.cursors = {}
            self.cursor_txn = {}
            self._reset(Route("reset", "RESET ALL"))
            return _tag_only("DISCARD ALL")
        if what in ("plans", "sequences", "temp", "temporary"):
            return _tag_only(f"DISCARD {'TEMP' if what.startswith('temp') else what.upper()}")
        raise QuerySyntaxError("syntax error in DISCARD")

    def _deallocate(self, route: Route) -> Result:
        name = route.arg
        if name == "all":
            self.statements = {k: v for k, v in self.statements.items() if k == ""}
            return _tag_only("DEALLOCATE ALL")
        if name not in self.statements:
            raise InvalidStatementName(f'prepared statement "{name}" does not exist')
        del self.statements[name]
        return _tag_only("DEALLOCATE")

    def _listen(self, route: Route) -> Result:
        return _tag_only(route.kind.upper())

    # cursors

    def _declare(self, route: Route) -> Generator[Request, Any, Result]:
        cmd = parse_declare(route.sql)
        if self.txn == "I" and not cmd.hold:
            raise NoActiveTransaction("DECLARE CURSOR can only be used in transaction blocks")
        if cmd.name in self.cursors:
            raise DuplicateCursor(f'cursor "{cmd.name}" already exists')
        if len(self.cursors) >= MAX_CURSORS:
            raise LimitExceeded(f"too many open cursors (at most {MAX_CURSORS} per connection)", hint="CLOSE cursors you no longer use")
        inner = self._route(cmd.query)
        if inner.kind not in ("query", "catalog", "engine_cmd", "show"):
            raise QuerySyntaxError("DECLARE CURSOR must be followed by a query")
        result = yield from self._run(inner, ())
        self.cursors[cmd.name] = Cursor(cmd.name, result, cmd.binary, cmd.hold, rows=list(result.rows))
        self.cursor_txn[cmd.name] = self.txn_id
        # A cursor's notices (the DP cost) are reported when it is declared: that is when it ran.
        self._send_notices(result)
        return _tag_only("DECLARE CURSOR")

    def _cursor(self, name: str) -> Cursor:
        cursor = self.cursors.get(name)
        if cursor is None:
            raise InvalidCursorName(f'cursor "{name}" does not exist')
        return cursor

    def _fetch(self, route: Route) -> Result:
        cmd: FetchCommand = parse_fetch(route.sql)
        cursor = self._cursor(cmd.cursor)
        rows = fetch_rows(cursor, cmd)
        if cmd.move:
            return _tag_only(f"MOVE {len(rows)}")
        r = _FetchResult(cursor.result.columns, cursor.result.types, rows, command=f"FETCH {len(rows)}")
        r.binary = cursor.binary
        return r

    def _close_cursor(self, route: Route) -> Result:
        if route.arg == "all":
            self.cursors.clear()
            self.cursor_txn.clear()
        else:
            self._cursor(route.arg)
            del self.cursors[route.arg]
            self.cursor_txn.pop(route.arg, None)
        return _tag_only("CLOSE CURSOR")


@dataclass
class _FetchResult(Result):
    """FETCH output: rows of a cursor, whose tag is ``FETCH n``."""

    binary: bool = field(default=False)

    @property
    def tag(self) -> str:
        return self.command


def _returns_rows(result: Result) -> bool:
    return bool(result.columns) or result.command == "SELECT" or result.command.startswith("FETCH")


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
