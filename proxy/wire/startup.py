"""Startup and authentication: SSL/GSS negotiation, the startup packet, SCRAM-SHA-256 (-PLUS)
or trust, the connection limits, and the session's start (ParameterStatus, BackendKeyData).

Every refusal here is FATAL and ends the connection; a wrong password and an unknown user look
alike (28P01), and failures feed the login throttle.
"""

from __future__ import annotations

import logging
import secrets
from enum import StrEnum
from typing import TYPE_CHECKING

from dpsql.errors import DPSQLError
from dpsql.proxy.session_info import SessionInfo
from dpsql.proxy.trail import ClientInfo
from dpsql.proxy.wire import messages as m
from dpsql.proxy.wire.auth import AuthError, ScramExchange, parse_sasl_initial
from dpsql.proxy.wire.driver import Handler, StartTLS
from dpsql.proxy.wire.gucs import Gucs
from dpsql.proxy.wire.transaction import TransactionStatus

if TYPE_CHECKING:
    from dpsql.proxy.engine import Session
    from dpsql.proxy.wire.connection import ServerContext

log = logging.getLogger("dpsql.wire")


class Phase(StrEnum):
    """Where a connection is in its life: startup → sasl_first → sasl_final → ready → closed
    (trust authentication goes from startup straight to ready)."""

    STARTUP = "startup"  # awaiting SSLRequest, GSSENCRequest, CancelRequest or the startup packet
    SASL_FIRST = "sasl_first"  # awaiting the SASLInitialResponse
    SASL_FINAL = "sasl_final"  # awaiting the SASLResponse with the client's proof
    READY = "ready"  # authenticated: queries are answered
    CLOSED = "closed"  # the session and the backend id are released


class Fatal(Exception):
    """An error that ends the connection (sent with severity FATAL)."""

    def __init__(self, sqlstate: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.hint = hint


class StartupMixin:
    """The startup and authentication phases of the connection."""

    ctx: ServerContext
    out: bytearray
    phase: Phase
    tls: bool
    loopback: bool
    address: str
    closing: bool
    counted: bool
    user_counted: bool
    pid: int
    secret: bytes
    user: str
    info: SessionInfo | None
    gucs: Gucs | None
    session: Session | None
    _exchange: ScramExchange | None
    _startup_params: dict[str, str]

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
        self.phase = Phase.SASL_FIRST

    def _auth(self, msg: m.FrontendMessage) -> None:
        if not isinstance(msg, m.PasswordData):
            if isinstance(msg, m.Terminate):
                self.closing = True
                return
            raise Fatal("08P01", f"expected SASL response, got message type {type(msg).__name__}")
        exchange = self._exchange
        assert exchange is not None
        try:
            if self.phase == Phase.SASL_FIRST:
                mechanism, data = parse_sasl_initial(msg.data)
                self.out += m.encode_auth_sasl_continue(exchange.first(mechanism, data))
                self.phase = Phase.SASL_FINAL
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
        self.phase = Phase.READY
        self.out += m.AUTH_OK
        for name, value in gucs.reports():
            self.out += m.encode_parameter_status(name, value)
        self.out += m.encode_backend_key_data(self.pid, self.secret)
        self.out += m.READY[TransactionStatus.IDLE]

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
