"""A minimal blocking PostgreSQL protocol client for tests: raw messages in, (type, body) pairs out."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from collections.abc import Iterable, Mapping

import scramp

from dpsql.proxy.wire import messages as m


class ServerClosed(Exception):
    """The server closed the connection."""


class RawClient:
    """One TCP connection speaking the frontend side of the protocol, message by message."""

    def __init__(self, host: str, port: int, *, timeout: float = 15.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.pid = 0
        self.secret = b""
        self.params: dict[str, str] = {}

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ServerClosed()
            self.buf += chunk

    def read_byte(self) -> bytes:
        self._fill(1)
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def read_message(self) -> tuple[bytes, bytes]:
        self._fill(5)
        type_, length = struct.unpack("!ci", self.buf[:5])
        self._fill(1 + length)
        body = self.buf[5 : 1 + length]
        self.buf = self.buf[1 + length :]
        return type_, body

    def read_until(self, types: Iterable[bytes] = (b"Z",)) -> list[tuple[bytes, bytes]]:
        """Messages up to and including the first one of ``types`` (or an ErrorResponse when closing)."""
        stop = set(types)
        out = []
        while True:
            msg = self.read_message()
            out.append(msg)
            if msg[0] in stop:
                return out

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection within ``timeout`` (pending data is discarded)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def ssl_request(self) -> bytes:
        self.send(m.frontend_ssl_request())
        return self.read_byte()

    def wrap_tls(self, context: ssl.SSLContext, server_hostname: str | None = None) -> None:
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def startup(
        self, user: str, database: str, password: str | None = None, *, params: Mapping[str, str] | None = None,
        mechanism: str = "SCRAM-SHA-256", channel_binding: tuple[str, bytes] | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """Start up and authenticate; returns every message up to ReadyForQuery or the ErrorResponse."""
        p = {"user": user, "database": database, **(params or {})}
        self.send(m.frontend_startup(p))
        out: list[tuple[bytes, bytes]] = []
        client: scramp.ScramClient | None = None
        while True:
            t, body = self.read_message()
            out.append((t, body))
            if t == b"E":
                return out
            if t == b"R":
                (code,) = struct.unpack("!i", body[:4])
                if code == 10:
                    offered = [x.decode() for x in body[4:].split(b"\0") if x]
                    assert mechanism in offered, offered
                    client = scramp.ScramClient([mechanism], user, password or "", channel_binding=channel_binding)
                    first = client.get_client_first().encode()
                    self.send(m.frontend_message(b"p", mechanism.encode() + b"\0" + struct.pack("!i", len(first)) + first))
                elif code == 11:
                    assert client is not None
                    client.set_server_first(body[4:].decode())
                    self.send(m.frontend_message(b"p", client.get_client_final().encode()))
                elif code == 12:
                    assert client is not None
                    client.set_server_final(body[4:].decode())
            elif t == b"S":
                k, v, _ = body.split(b"\0")
                self.params[k.decode()] = v.decode()
            elif t == b"K":
                self.pid = struct.unpack("!i", body[:4])[0]
                self.secret = body[4:]
            elif t == b"Z":
                return out

    def query(self, sql: str) -> list[tuple[bytes, bytes]]:
        self.send(m.frontend_query(sql))
        return self.read_until()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send(m.FRONTEND_TERMINATE)
        self.sock.close()


def types_of(msgs: list[tuple[bytes, bytes]]) -> str:
    """The message type letters, e.g. ``'TDCZ'``."""
    return "".join(t.decode("latin-1") for t, _ in msgs)


def errors(msgs: list[tuple[bytes, bytes]]) -> list[dict[str, str]]:
    return [m.parse_error_fields(b) for t, b in msgs if t == b"E"]


def notices(msgs: list[tuple[bytes, bytes]]) -> list[dict[str, str]]:
    return [m.parse_error_fields(b) for t, b in msgs if t == b"N"]


def data_rows(msgs: list[tuple[bytes, bytes]]) -> list[list[bytes | None]]:
    rows = []
    for t, body in msgs:
        if t != b"D":
            continue
        (n,) = struct.unpack("!h", body[:2])
        pos = 2
        row: list[bytes | None] = []
        for _ in range(n):
            (ln,) = struct.unpack("!i", body[pos : pos + 4])
            pos += 4
            if ln == -1:
                row.append(None)
            else:
                row.append(body[pos : pos + ln])
                pos += ln
        rows.append(row)
    return rows


def row_description(msgs: list[tuple[bytes, bytes]]) -> list[tuple[str, int, int, int]]:
    """(name, type OID, typlen, format) of the first RowDescription."""
    for t, body in msgs:
        if t != b"T":
            continue
        (n,) = struct.unpack("!h", body[:2])
        pos = 2
        out = []
        for _ in range(n):
            end = body.index(b"\0", pos)
            name = body[pos:end].decode()
            pos = end + 1
            table, attnum, oid, typlen, typmod, fmt = struct.unpack("!IhIhih", body[pos : pos + 18])
            assert table == 0 and attnum == 0 and typmod == -1
            pos += 18
            out.append((name, oid, typlen, fmt))
        return out
    raise AssertionError("no RowDescription")


def tag(msgs: list[tuple[bytes, bytes]]) -> str:
    for t, body in msgs:
        if t == b"C":
            return body.rstrip(b"\0").decode()
    raise AssertionError("no CommandComplete")


def tags(msgs: list[tuple[bytes, bytes]]) -> list[str]:
    return [body.rstrip(b"\0").decode() for t, body in msgs if t == b"C"]
