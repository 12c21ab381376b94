"""The PostgreSQL-wire server: one asyncio event loop (uvloop when installed), one
:class:`asyncio.Protocol` per connection, queries in worker threads.

Guarantees:

* output is buffered and written once per batch of messages (one ``transport.write`` per
  read, per finished query, or per chunk of a large result);
* blocking work — a DP query on the connection's engine session (a DuckDB cursor), planning
  for Describe, slow catalog statements — runs in a thread pool sized to ``[limits]
  max_connections``; one connection never has two statements in flight;
* memory per connection is bounded: at most one message of ``soft_limit`` bytes is buffered,
  reading pauses while a statement runs or while the client is not reading our output (the
  transport's write buffer is past its high-water mark), and results are encoded in chunks;
* SIGINT/SIGTERM stop accepting connections, tell each client (57P01), cancel running
  statements (their charges stand) and close the engine.

:func:`serve` is what ``dpsql serve`` and ``dpsql demo`` call. :func:`start_in_thread` runs a
server on its own loop in a background thread (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import socket
import ssl
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dpsql.errors import ConfigFileError, ConnectionFailure, DPSQLError, InvalidParameterValue
from dpsql.proxy.wire import messages as m
from dpsql.proxy.wire.auth import ChannelBinding, LoginThrottle
from dpsql.proxy.wire.connection import Connection, Drain, Handler, Offload, ServerContext, StartTLS
from dpsql.proxy.wire.startup import Phase

log = logging.getLogger("dpsql.server")

STARTUP_TIMEOUT = 60.0  # seconds to finish startup and authentication (PostgreSQL's authentication_timeout)
WRITE_HIGH_WATER = 512 * 1024
WRITE_LOW_WATER = 128 * 1024
MAX_PENDING_MESSAGES = 512
FLUSH_AT = 64 * 1024  # pending output that is written before the next message is processed
SHUTDOWN_GRACE = 5.0


def _is_loopback(host: str) -> bool:
    if not host:
        return True  # unix-domain socket
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host == "localhost"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


class PgProtocol(asyncio.Protocol):
    """Drives one :class:`Connection` from socket events."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self.decoder = m.FrameDecoder(soft_limit=server.soft_limit)
        self.pending: deque[m.FrontendMessage] = deque()
        self.busy = False  # a handler is suspended on an Offload/StartTLS/Drain
        self.write_paused = False
        self.read_paused = False
        self.lost = False
        self.offloading = False
        self._drain_gen: Handler | None = None
        self._startup_timer: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------------------- socket events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports don't subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else ""
        self.conn = Connection(self.server.ctx, address=address or "local", loopback=_is_loopback(address))
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self.server.protocols.add(self)
        self._startup_timer = self.loop.call_later(STARTUP_TIMEOUT, self._startup_timeout)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or conn.closing:
            return
        try:
            msgs = self.decoder.feed(data)
        except m.ProtocolViolation as e:
            if self.busy:
                self.pending.clear()
            conn.protocol_violation(e)
            self._flush()
            self._close_transport()
            return
        if msgs:
            self.pending.extend(msgs)
        if not self.busy:
            self._pump()
        self._regulate_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._startup_timer is not None:
            self._startup_timer.cancel()
        self.server.protocols.discard(self)
        conn = self.conn
        if conn is None:
            return
        gen, self._drain_gen = self._drain_gen, None
        if gen is not None:
            gen.close()
        if self.offloading:
            conn.cancel()  # the running statement is interrupted (its charge stands); closed when it returns
        else:
            conn.close()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._regulate_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        gen, self._drain_gen = self._drain_gen, None
        if gen is not None:
            self.busy = False
            self._advance(gen, None, None)
        if not self.busy:
            self._pump()
        self._regulate_reading()

    # ------------------------------------------------------------------------------ processing

    def _pump(self) -> None:
        conn = self.conn
        assert conn is not None
        pending = self.pending
        while pending and not self.busy and not conn.closing and not self.write_paused:
            msg = pending.popleft()
            self._advance(conn.handle(msg), None, None)
            if len(conn.out) > FLUSH_AT:
                self._flush()  # may pause writing, which stops this loop
            if conn.phase == Phase.READY and self._startup_timer is not None:
                self._startup_timer.cancel()
                self._startup_timer = None
        self._flush()
        if conn.closing and not self.busy:
            self._close_transport()

    def _advance(self, gen: Handler, value: Any, exc: BaseException | None) -> None:
        conn = self.conn
        assert conn is not None
        while True:
            try:
                req = gen.throw(exc) if exc is not None else gen.send(value)
            except StopIteration:
                return
            except Exception as e:
                log.error("internal error (%s) handling a message", type(e).__name__, exc_info=log.isEnabledFor(logging.DEBUG))
                conn.fatal("XX000", "internal error")
                return
            value, exc = None, None
            kind = type(req)
            if kind is Offload:
                self._offload(gen, req)  # type: ignore[arg-type]
                return
            if kind is Drain:
                self._flush()
                if self.write_paused and not self.lost:
                    self.busy = True
                    self._drain_gen = gen
                    return
                continue
            if kind is StartTLS:
                self._start_tls(gen)
                return
            raise TypeError(f"unknown request {req!r}")

    def _offload(self, gen: Handler, req: Offload) -> None:
        self.busy = True
        self.offloading = True
        self._flush()  # ParseComplete etc. go out before a long query
        timer: asyncio.TimerHandle | None = None
        if req.timeout is not None and req.cancel is not None:
            cancel = req.cancel

            def on_timeout() -> None:
                req.timed_out = True
                cancel()

            timer = self.loop.call_later(req.timeout, on_timeout)
        fut = self.loop.run_in_executor(self.server.executor, req.fn)

        def done(f: asyncio.Future[Any]) -> None:
            if timer is not None:
                timer.cancel()
            self.busy = False
            self.offloading = False
            try:
                value, exc = f.result(), None
            except BaseException as e:
                value, exc = None, e
            if self.lost:
                gen.close()
                assert self.conn is not None
                self.conn.close()
                return
            self._advance(gen, value, exc)
            if not self.busy:
                self._pump()
                self._regulate_reading()
            else:
                self._flush()

        fut.add_done_callback(done)

    def _start_tls(self, gen: Handler) -> None:
        self.busy = True
        self._flush()
        if self.decoder.buffered or self.pending:
            # Bytes sent after SSLRequest but before the handshake would be read as if encrypted
            # (CVE-2021-23214): refuse.
            assert self.conn is not None
            self.conn.fatal("08P01", "received unencrypted data after SSL request")
            self.pending.clear()
            self.busy = False
            self._flush()
            self._close_transport()
            return
        self.loop.create_task(self._do_start_tls(gen))

    async def _do_start_tls(self, gen: Handler) -> None:
        assert self.transport is not None and self.server.ssl_context is not None
        try:
            new = await self.loop.start_tls(self.transport, self, self.server.ssl_context, server_side=True,
                                            ssl_handshake_timeout=STARTUP_TIMEOUT)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as e:
            log.info("TLS handshake failed: %s", type(e).__name__)
            self.busy = False
            if self.transport is not None:
                self.transport.abort()
            return
        if new is None:
            self.busy = False
            return
        self.transport = new
        self.busy = False
        self._advance(gen, None, None)
        if not self.busy:
            self._pump()

    def _flush(self) -> None:
        conn = self.conn
        if conn is None or not conn.out or self.transport is None or self.lost:
            if conn is not None and self.lost:
                conn.out = bytearray()
            return
        data, conn.out = conn.out, bytearray()
        self.transport.write(data)

    def _regulate_reading(self) -> None:
        t = self.transport
        if t is None or self.lost:
            return
        should_pause = self.write_paused or len(self.pending) > MAX_PENDING_MESSAGES or (self.busy and len(self.pending) > 64)
        if should_pause and not self.read_paused:
            self.read_paused = True
            with contextlib.suppress(RuntimeError):
                t.pause_reading()
        elif not should_pause and self.read_paused:
            self.read_paused = False
            with contextlib.suppress(RuntimeError):
                t.resume_reading()

    def _close_transport(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()

    def _startup_timeout(self) -> None:
        self._startup_timer = None
        conn = self.conn
        if conn is not None and conn.phase != Phase.READY and not self.lost:
            conn.fatal("08006", "canceling authentication due to timeout")
            self._flush()
            self._close_transport()

    def shutdown(self) -> None:
        """Tell the client the server is going away, cancel its statement and close."""
        conn = self.conn
        if conn is None or self.lost:
            return
        conn.cancel()
        conn.shutdown_notice()
        self._flush()
        self._close_transport()


class Server:
    """A listening server bound to one event loop."""

    def __init__(
        self,
        engine: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 6432,
        catalog: Any = None,
        database: str = "dpsql",
        ssl_context: ssl.SSLContext | None = None,
        channel_binding: ChannelBinding | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self.loop = loop or asyncio.get_event_loop()
        self.ssl_context = ssl_context
        policy = engine.policy
        self.ctx = ServerContext(engine, catalog=catalog, database=database, tls=ssl_context is not None,
                                 channel_binding=channel_binding, throttle=LoginThrottle())
        self.soft_limit = max(1 << 20, 4 * policy.limits.max_statement_bytes + 65536)
        self.executor = ThreadPoolExecutor(max_workers=policy.limits.max_connections + 2, thread_name_prefix="dpsql-query")
        self.protocols: set[PgProtocol] = set()
        self._server: asyncio.base_events.Server | None = None
        self.metrics_address: tuple[str, int] | None = None  # the Prometheus endpoint, once started

    async def start(self) -> tuple[str, int]:
        """Bind and listen (and start the metrics endpoint of ``[server] metrics_listen``); return
        the bound (host, port)."""
        self._server = await self.loop.create_server(lambda: PgProtocol(self), self.host, self.port, reuse_address=True,
                                                     backlog=1024)
        sock = self._server.sockets[0]
        name = sock.getsockname()
        self.port = name[1]
        self._start_metrics()
        return str(name[0]), int(name[1])

    def _start_metrics(self) -> None:
        srv = self.engine.policy.server
        trail = getattr(self.engine, "trail", None)
        if srv.metrics_host is None or srv.metrics_port is None or trail is None:
            return
        tls = not _is_loopback(srv.metrics_host)
        try:
            self.metrics_address = trail.metrics.serve(srv.metrics_host, srv.metrics_port, tls_cert=srv.tls_cert if tls else None,
                                                       tls_key=srv.tls_key if tls else None)
        except OSError as e:
            if self._server is not None:
                self._server.close()
            raise ConnectionFailure(f"cannot serve metrics on {srv.metrics_host}:{srv.metrics_port}: {e.strerror or e}",
                             hint="choose another [server] metrics_listen") from None

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, notify and close every connection, wait for running statements."""
        self.ctx.shutting_down = True
        if self._server is not None:
            self._server.close()
        for p in list(self.protocols):
            p.shutdown()
        deadline = self.loop.time() + grace
        while any(p.busy for p in self.protocols) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        self.executor.shutdown(wait=False, cancel_futures=True)
        trail = getattr(self.engine, "trail", None)
        if trail is not None:
            with contextlib.suppress(Exception):
                trail.metrics.stop()
        catalog = self.ctx.catalog
        if catalog is not None and hasattr(catalog, "close"):
            with contextlib.suppress(Exception):
                catalog.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else the standard one."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def database_name(policy: Any, duckdb: str | Path | None = None, postgres: str | None = None) -> str:
    """The database name clients connect to: the DuckDB file's stem, the upstream DSN's database, else ``dpsql``."""
    dsn = postgres or (policy.source.postgres if duckdb is None else None)
    if dsn:
        name = urlparse(dsn).path.lstrip("/")
        return name or "dpsql"
    path = duckdb or policy.source.duckdb
    if path:
        return Path(path).stem
    return "dpsql"


def _ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _make_catalog(engine: Any, database: str) -> Any:
    try:
        from dpsql.proxy.catalog import SyntheticCatalog  # type: ignore[attr-defined]
    except ImportError as e:
        log.warning("the synthetic catalog is not available (%s); catalog queries go to the engine", e)
        return None
    return SyntheticCatalog(engine.catalog, database=database, users=list(engine.policy.users))


@dataclass
class Running:
    """A server started by :func:`start_in_thread`."""

    host: str
    port: int
    server: Server
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    engine: Any
    _stopped: threading.Event

    def stop(self, *, close_engine: bool = True) -> None:
        """Shut the server down (and close its engine)."""
        if self._stopped.is_set():
            return
        fut = asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)
        with contextlib.suppress(Exception):
            fut.result(timeout=SHUTDOWN_GRACE + 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self._stopped.set()
        if close_engine:
            self.engine.close()


def build_server(
    policy: Any,
    *,
    duckdb: str | Path | None = None,
    postgres: str | None = None,
    listen: str | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    engine: Any = None,
    catalog: Any = "auto",
) -> Server:
    """A :class:`Server` for ``policy`` (a path or a loaded Policy), not yet listening."""
    from dpsql.api import open_engine
    from dpsql.policy import Policy, load_policy

    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    pol.require_passwords()
    host, port = pol.server.listen_host, pol.server.listen_port
    if listen:
        h, sep, p = listen.rpartition(":")
        if not sep or not p.isdigit():
            raise InvalidParameterValue(f"--listen must be HOST:PORT, got {listen!r}")
        host, port = (h.strip("[]") or "127.0.0.1"), int(p)
    tls = pol.server.tls_cert is not None and pol.server.tls_key is not None
    if not _is_loopback(host) and not tls:
        raise ConfigFileError(f"listening on {host} (beyond loopback) requires [server] tls_cert and tls_key",
                         hint="or listen on 127.0.0.1")
    if pol.server.auth == "trust" and not _is_loopback(host):
        raise ConfigFileError("auth = 'trust' is only allowed on a loopback address")
    ssl_ctx = _ssl_context(pol.server.tls_cert, pol.server.tls_key) if tls else None  # type: ignore[arg-type]
    binding = ChannelBinding.from_pem_file(str(pol.server.tls_cert)) if tls else None
    eng = engine if engine is not None else open_engine(pol, duckdb=duckdb, postgres=postgres)
    database = database_name(pol, duckdb, postgres)
    cat = _make_catalog(eng, database) if catalog == "auto" else catalog
    return Server(eng, host=host, port=port, catalog=cat, database=database, ssl_context=ssl_ctx, channel_binding=binding,
                  loop=loop)


def start_in_thread(policy: Any, **kwargs: Any) -> Running:
    """Start a server on a new event loop in a daemon thread; returns once it listens."""
    loop = new_event_loop()
    server = build_server(policy, loop=loop, **kwargs)
    ready = threading.Event()
    failure: list[BaseException] = []
    bound: list[tuple[str, int]] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            bound.append(loop.run_until_complete(server.start()))
        except BaseException as e:
            failure.append(e)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, name="dpsql-server", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        server.engine.close()
        raise failure[0]
    host, port = bound[0]
    return Running(host, port, server, thread, loop, server.engine, threading.Event())


def serve(
    policy_path: str | Path,
    *,
    duckdb: str | Path | None = None,
    postgres: str | None = None,
    listen: str | None = None,
    out: Callable[[str], None] | None = None,
    on_listen: Callable[[str, int, str], None] | None = None,
) -> int:
    """Serve ``policy_path`` until SIGINT/SIGTERM; print the listening address; return an exit status.

    ``on_listen(host, port, database)`` is called once the socket listens (the demo prints its
    ``psql`` command there)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dpsql %(levelname)s %(message)s", stream=sys.stderr)
    say = out or (lambda s: print(s, flush=True))
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    server = build_server(policy_path, duckdb=duckdb, postgres=postgres, listen=listen, loop=loop)
    stop = asyncio.Event()
    try:
        host, port = loop.run_until_complete(server.start())
    except DPSQLError:
        server.engine.close()
        raise
    except OSError as e:
        server.engine.close()
        raise ConnectionFailure(f"cannot listen on {server.host}:{server.port}: {e.strerror or e}",
                         hint="choose another port with --listen HOST:PORT") from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    shown = f"[{host}]" if ":" in host else host
    tls = "TLS available" if server.ssl_context is not None else "no TLS"
    say(f'dpsql: listening on {shown}:{port} (database "{server.ctx.database}", auth {server.ctx.auth_method}, {tls})')
    if server.metrics_address is not None:
        mh, mp = server.metrics_address
        say(f"dpsql: metrics on {'https' if server.ssl_context and not _is_loopback(mh) else 'http'}://{mh}:{mp}/metrics")
    if on_listen is not None:
        on_listen(host, port, server.ctx.database)
    gc.collect()
    gc.freeze()
    try:
        loop.run_until_complete(stop.wait())
        say("dpsql: shutting down")
        loop.run_until_complete(server.stop())
    finally:
        server.engine.close()
        loop.close()
    return 0
