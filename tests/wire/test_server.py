"""The server over real sockets: framing errors, limits, TLS, cancel, lockout, slow readers,
many concurrent clients, crash safety of charges and graceful shutdown."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pgclient import RawClient, ServerClosed, data_rows, errors, notices, tag, types_of
from wirelib import DATABASE, PASSWORDS, SLOW_QUERY, make_self_signed_cert, slow_engine, write_policy

from dpsql.proxy.server import Running, _is_loopback, start_in_thread
from dpsql.proxy.wire import messages as m

HERE = Path(__file__).parent


def login(server: Running, user: str = "alice", password: str | None = None, **params: str) -> RawClient:
    c = RawClient(server.host, server.port)
    out = c.startup(user, DATABASE, PASSWORDS[user] if password is None else password, params=params or None)
    assert out[-1] == (b"Z", b"I"), errors(out)
    return c


def test_scram_login_and_queries(server: Running) -> None:
    c = login(server)
    assert c.params["server_version"].startswith("16.4") and c.pid > 0 and len(c.secret) == 4
    out = c.query("SELECT COUNT(*) AS n FROM visits")
    assert types_of(out) == "NTDCZ" and "ε=" in notices(out)[0]["M"]
    c.close()


def test_ssl_request_is_refused_without_tls(server: Running) -> None:
    c = RawClient(server.host, server.port)
    assert c.ssl_request() == b"N"
    assert c.startup("alice", DATABASE, PASSWORDS["alice"])[-1] == (b"Z", b"I")
    c.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not a startup packet at all
        struct.pack("!i", 3),  # startup length too small
        struct.pack("!ii", 8, 1234),  # unknown protocol code
    ],
)
def test_garbage_before_startup_closes_cleanly(server: Running, garbage: bytes) -> None:
    c = RawClient(server.host, server.port, timeout=5)
    c.send(garbage)
    assert c.closed()


def test_garbage_after_startup_gets_an_error_and_close(server: Running) -> None:
    c = login(server)
    c.send(b"Z\0\0\0\x04")
    t, body = c.read_message()
    assert t == b"E"
    err = m.parse_error_fields(body)
    assert err["S"] == "FATAL" and err["C"] == "08P01"
    assert c.closed()


def test_giant_length_word_is_refused(server: Running) -> None:
    c = login(server)
    c.send(b"Q" + struct.pack("!i", 0x60000000))
    t, body = c.read_message()
    assert t == b"E" and m.parse_error_fields(body)["C"] == "08P01"
    assert c.closed()


def test_oversized_query_is_an_error_not_a_disconnect(server: Running) -> None:
    c = login(server)
    c.send(m.frontend_query("SELECT " + "x" * (3 << 20)))
    out = c.read_until()
    assert errors(out)[0]["C"] == "54000" and out[-1] == (b"Z", b"I")
    assert tag(c.query("SELECT 1")) == "SELECT 1"
    c.close()


def test_truncated_message_then_disconnect_releases_the_connection(server: Running) -> None:
    c = login(server)
    ctx = server.server.ctx
    assert c.pid in ctx.backends
    c.send(m.frontend_query("SELECT 1")[:6])
    c.sock.close()
    deadline = time.time() + 5
    while c.pid in ctx.backends and time.time() < deadline:
        time.sleep(0.02)
    assert c.pid not in ctx.backends
    assert all(p.conn is None or p.conn.pid != c.pid for p in server.server.protocols)


def test_cancel_during_a_running_query_keeps_the_charge(wire_policy: Path, tmp_path: Path) -> None:
    started = tmp_path / "started"
    engine = slow_engine(wire_policy, started_file=started)
    running = start_in_thread(wire_policy, listen="127.0.0.1:0", engine=engine, catalog=None)
    try:
        c = login(running)
        before = float(data_rows(c.query("SELECT rho_spent FROM dpsql.budget WHERE scope = 'session'"))[0][0] or 0)
        c.send(m.frontend_query(SLOW_QUERY))
        deadline = time.time() + 10
        while not started.exists() and time.time() < deadline:
            time.sleep(0.01)
        assert started.exists()
        other = RawClient(running.host, running.port)
        other.send(m.frontend_cancel(c.pid, b"\0\0\0\0" if c.secret != b"\0\0\0\0" else b"\1\1\1\1"))  # wrong secret: ignored
        assert other.closed()
        time.sleep(0.2)
        assert not _readable(c.sock)  # the wrong secret canceled nothing
        t0 = time.time()
        canceller = RawClient(running.host, running.port)
        canceller.send(m.frontend_cancel(c.pid, c.secret))
        assert canceller.closed()
        out = c.read_until()
        assert time.time() - t0 < 5
        err = errors(out)[0]
        assert err["C"] == "57014" and "user request" in err["M"]
        after = float(data_rows(c.query("SELECT rho_spent FROM dpsql.budget WHERE scope = 'session'"))[0][0] or 0)
        assert after > before  # the canceled query's charge stands
        assert tag(c.query("SELECT 1")) == "SELECT 1"
        c.close()
    finally:
        running.stop()


def _readable(sock: socket.socket) -> bool:
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.settimeout(timeout)


def test_client_statement_timeout(wire_policy: Path) -> None:
    engine = slow_engine(wire_policy)
    running = start_in_thread(wire_policy, listen="127.0.0.1:0", engine=engine, catalog=None)
    try:
        c = login(running)
        c.query("SET statement_timeout = '200ms'")
        t0 = time.time()
        out = c.query(SLOW_QUERY)
        assert errors(out)[0]["C"] == "57014" and "statement timeout" in errors(out)[0]["M"]
        assert time.time() - t0 < 5
        c.close()
    finally:
        running.stop()


def test_login_lockout(wire_policy: Path) -> None:
    running = start_in_thread(wire_policy, listen="127.0.0.1:0", catalog=None)
    try:
        for _ in range(5):
            c = RawClient(running.host, running.port)
            out = c.startup("bob", DATABASE, "wrong")
            assert errors(out)[0]["C"] == "28P01"
            assert c.closed()
        c = RawClient(running.host, running.port)
        out = c.startup("bob", DATABASE, PASSWORDS["bob"])
        err = errors(out)[0]
        assert err["C"] == "28000" and "too many failed login attempts" in err["M"]
        login(running, "alice").close()  # other users are unaffected
    finally:
        running.stop()


def test_max_connections_refused_with_53300(tmp_path: Path, hospital_db: Path) -> None:
    policy = write_policy(tmp_path, hospital_db, limits={"max_connections": 2, "max_connections_per_user": 2})
    running = start_in_thread(policy, listen="127.0.0.1:0", catalog=None)
    try:
        a, b = login(running), login(running)
        c = RawClient(running.host, running.port)
        out = c.startup("alice", DATABASE, PASSWORDS["alice"])
        assert errors(out)[0]["C"] == "53300"
        # a cancel request still gets through when the server is full
        d = RawClient(running.host, running.port)
        d.send(m.frontend_cancel(a.pid, a.secret))
        assert d.closed()
        a.close()
        time.sleep(0.2)
        login(running).close()
        b.close()
    finally:
        running.stop()


def test_tls_with_scram_plus(tmp_path: Path, hospital_db: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path / "tls")
    policy = write_policy(tmp_path, hospital_db, server_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"')
    running = start_in_thread(policy, listen="127.0.0.1:0", catalog=None)
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        # SCRAM-SHA-256-PLUS with tls-server-end-point channel binding
        c = RawClient(running.host, running.port)
        assert c.ssl_request() == b"S"
        c.wrap_tls(ctx, server_hostname="localhost")
        assert isinstance(c.sock, ssl.SSLSocket) and c.sock.version() in ("TLSv1.2", "TLSv1.3")
        out = c.startup("alice", DATABASE, PASSWORDS["alice"], mechanism="SCRAM-SHA-256-PLUS",
                        channel_binding=("tls-server-end-point", c.sock))
        assert out[-1] == (b"Z", b"I"), errors(out)
        assert tag(c.query("SELECT 1")) == "SELECT 1"
        c.close()
        # plain SCRAM-SHA-256 over TLS also works (flag 'n')
        c = RawClient(running.host, running.port)
        assert c.ssl_request() == b"S"
        c.wrap_tls(ctx, server_hostname="localhost")
        assert c.startup("alice", DATABASE, PASSWORDS["alice"])[-1] == (b"Z", b"I")
        c.close()
        # a wrong password is refused over TLS too
        c = RawClient(running.host, running.port)
        c.ssl_request()
        c.wrap_tls(ctx, server_hostname="localhost")
        assert errors(c.startup("alice", DATABASE, "nope", mechanism="SCRAM-SHA-256-PLUS",
                                channel_binding=("tls-server-end-point", c.sock)))[0]["C"] == "28P01"
        # bytes smuggled after the SSLRequest (CVE-2021-23214) are refused
        c = RawClient(running.host, running.port)
        c.send(m.frontend_ssl_request() + m.frontend_startup({"user": "alice"}))
        data = c.sock.recv(1)
        assert data in (b"S", b"E", b"")
        assert c.closed()
        # psycopg with sslmode=require
        import psycopg

        with psycopg.connect(host=running.host, port=running.port, user="alice", dbname=DATABASE, password=PASSWORDS["alice"],
                             sslmode="require") as conn:
            assert conn.info.pgconn.ssl_in_use
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        running.stop()


def test_loopback_detection() -> None:
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("127.8.9.10") and _is_loopback("")
    assert _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("10.0.0.1") and not _is_loopback("::ffff:10.0.0.1") and not _is_loopback("192.168.1.2")


def test_client_that_stops_reading_is_bounded_and_others_unaffected(server: Running) -> None:
    slow = login(server)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    msg = m.frontend_query("SHOW ALL;" * 200)  # each answer is ~200 KB
    slow.sock.settimeout(0.5)
    sent = 0
    try:
        for sent in range(4000):  # noqa: B007
            slow.sock.sendall(msg)
    except TimeoutError:
        pass
    assert sent < 3999  # the server stopped reading: the client's sends block
    time.sleep(0.5)
    proto = next(p for p in server.server.protocols if p.conn is not None and p.conn.pid == slow.pid)
    buffered = proto.transport.get_write_buffer_size() if proto.transport is not None else 0
    assert buffered < 8 << 20
    assert len(proto.pending) <= 600
    assert proto.read_paused or proto.write_paused
    # another client is served promptly meanwhile
    t0 = time.time()
    other = login(server)
    assert tag(other.query("SELECT 1")) == "SELECT 1"
    assert time.time() - t0 < 5
    other.close()
    slow.sock.close()


def test_max_connections_per_user_refused_with_53300(tmp_path: Path, hospital_db: Path) -> None:
    """One user cannot hold every slot: with max_connections = 8 the default per-user cap is 8 // 4 = 2.
    A third connection of alice gets PostgreSQL's FATAL 53300 'too many connections for role "alice"',
    counted only after authentication (a wrong password or a half-open login takes no slot), and bob
    and a freed slot still work."""
    policy = write_policy(tmp_path, hospital_db, limits={"max_connections": 8})
    running = start_in_thread(policy, listen="127.0.0.1:0", catalog=None)
    try:
        half_open = RawClient(running.host, running.port)  # startup sent, SASL never finished
        half_open.send(m.frontend_startup({"user": "alice", "database": DATABASE}))
        assert half_open.read_message()[0] == b"R"
        bad = RawClient(running.host, running.port)
        assert errors(bad.startup("alice", DATABASE, "wrong password"))[0]["C"] == "28P01"
        a1, a2 = login(running), login(running)
        c = RawClient(running.host, running.port)
        out = c.startup("alice", DATABASE, PASSWORDS["alice"])
        err = errors(out)[0]
        assert (err["S"], err["C"], err["M"]) == ("FATAL", "53300", 'too many connections for role "alice"')
        assert "max_connections_per_user" in err["H"] and c.closed()
        b = login(running, "bob")
        assert tag(b.query("SELECT 1")) == "SELECT 1"
        assert tag(a2.query("SELECT 1")) == "SELECT 1"  # the refusal did not disturb alice's open sessions
        a1.close()
        deadline = time.time() + 5
        while True:  # the server frees the slot when it sees the socket close
            again = RawClient(running.host, running.port)
            out = again.startup("alice", DATABASE, PASSWORDS["alice"])
            if out[-1] == (b"Z", b"I") or time.time() > deadline:
                break
            time.sleep(0.05)
        assert out[-1] == (b"Z", b"I"), errors(out)
        for conn in (again, a2, b, half_open, bad):
            conn.close()
    finally:
        running.stop()


def test_200_concurrent_connections(server: Running) -> None:
    barrier = threading.Barrier(200, timeout=60)

    def one(i: int) -> str:
        c = login(server, "alice" if i % 2 else "bob")
        try:
            barrier.wait()
            out = c.query("SELECT 1 AS x" if i % 50 else "SELECT COUNT(*) FROM visits")  # ≤ 4 private queries per user at once (R30)
            return tag(out)
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        tags_ = list(pool.map(one, range(200)))
    assert tags_ == ["SELECT 1"] * 200


def test_kill_9_mid_query_keeps_the_charge(tmp_path: Path, hospital_db: Path) -> None:
    policy = write_policy(tmp_path, hospital_db)
    started = tmp_path / "started"

    def start() -> tuple[subprocess.Popen[str], int]:
        proc = subprocess.Popen([sys.executable, str(HERE / "slow_server.py"), str(policy), str(started)],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        return proc, int(line.split()[1])

    proc, port = start()
    try:
        c = RawClient("127.0.0.1", port)
        assert c.startup("alice", DATABASE, PASSWORDS["alice"])[-1] == (b"Z", b"I")
        c.send(m.frontend_query(SLOW_QUERY))
        deadline = time.time() + 15
        while not started.exists() and time.time() < deadline:
            time.sleep(0.01)
        assert started.exists()  # the charge is durable before the backend runs the statement
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with pytest.raises((ServerClosed, ConnectionError, OSError)):
            c.read_until()
    finally:
        if proc.poll() is None:
            proc.kill()
    proc, port = start()
    try:
        c = RawClient("127.0.0.1", port)
        assert c.startup("alice", DATABASE, PASSWORDS["alice"])[-1] == (b"Z", b"I")
        rows = data_rows(c.query("SELECT rho_spent FROM dpsql.budget WHERE scope = 'user'"))
        assert float(rows[0][0] or 0) > 0  # the killed query's charge survived the crash
        c.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_dpsql_serve_prints_the_address_and_stops_on_sigterm(tmp_path: Path, hospital_db: Path) -> None:
    policy = write_policy(tmp_path, hospital_db)
    dpsql = Path(sys.executable).with_name("dpsql")
    proc = subprocess.Popen([str(dpsql), "serve", "--policy", str(policy), "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("dpsql: listening on 127.0.0.1:"), line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        c = RawClient("127.0.0.1", port)
        assert c.startup("alice", DATABASE, PASSWORDS["alice"])[-1] == (b"Z", b"I")
        proc.send_signal(signal.SIGTERM)
        t, body = c.read_message()
        assert t == b"E" and m.parse_error_fields(body)["C"] == "57P01"
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_tls_is_required_beyond_loopback(tmp_path: Path, hospital_db: Path) -> None:
    """In a private network namespace (no packet leaves it), a client at a non-loopback address is
    refused in plaintext and served over TLS."""
    import json
    import shutil

    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None or subprocess.run([unshare, "--net", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a private network namespace here (needs unshare --net and iproute2)")
    setup = (f"{ip} link set lo up && {ip} addr add 192.0.2.1/32 dev lo && "
             f"exec {sys.executable} {HERE / 'netns_tls.py'} {tmp_path} {hospital_db}")
    r = subprocess.run([unshare, "--net", "sh", "-c", setup], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["host"] == "192.0.2.1"
    assert out["plaintext"]["S"] == "FATAL" and out["plaintext"]["C"] == "28000" and "TLS" in out["plaintext"]["M"]
    assert out["tls"] == 1 and out["tls_in_use"] is True
