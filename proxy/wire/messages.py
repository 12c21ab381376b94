"""The protocol 3.0 codec: frame decoding of frontend messages and encoders of backend messages.

Follows PostgreSQL's "Frontend/Backend Protocol — Message Formats" chapter. This module knows
nothing of sessions: :class:`FrameDecoder` turns bytes into message objects (or raises
:class:`ProtocolViolation`), and the ``encode_*``/constant helpers turn backend messages into
bytes. Every decoder checks lengths and terminators, so a truncated, oversized or garbled
message becomes a ``ProtocolViolation`` (SQLSTATE 08P01), never an IndexError or a hang.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

MAX_STARTUP_LENGTH = 10_000  # PostgreSQL's MAX_STARTUP_PACKET_LENGTH
HARD_MAX_MESSAGE = 1 << 30  # 1 GiB: anything longer is a protocol violation and closes the connection

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_U32 = struct.Struct("!I")
_HDR = struct.Struct("!ci")


class ProtocolViolation(Exception):
    """The peer broke the protocol (SQLSTATE 08P01); the connection is closed after reporting it."""

    sqlstate = "08P01"


# ---------------------------------------------------------------------------------------------
# Frontend messages


@dataclass(frozen=True, slots=True)
class StartupMessage:
    """StartupMessage: protocol version and the parameters (user, database, options …)."""

    version: int
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """SSLRequest: the client asks to switch to TLS."""


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    """GSSENCRequest: the client asks for GSSAPI encryption (always refused)."""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """CancelRequest: sent on a new connection to cancel the statement of backend ``pid``."""

    pid: int
    secret: bytes


@dataclass(frozen=True, slots=True)
class Query:
    """Query ('Q'): simple query protocol, possibly several statements."""

    sql: str


@dataclass(frozen=True, slots=True)
class Parse:
    """Parse ('P'): prepare ``sql`` as statement ``name`` with the given parameter type OIDs."""

    name: str
    sql: str
    param_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Bind:
    """Bind ('B'): make portal ``portal`` from ``statement`` with parameter values and formats."""

    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Describe:
    """Describe ('D'): ``kind`` is 'S' (statement) or 'P' (portal)."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class Execute:
    """Execute ('E'): run portal ``portal``, returning at most ``max_rows`` rows (0 = all)."""

    portal: str
    max_rows: int


@dataclass(frozen=True, slots=True)
class Close:
    """Close ('C'): ``kind`` is 'S' (statement) or 'P' (portal)."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class Sync:
    """Sync ('S'): end of an extended-query cycle."""


@dataclass(frozen=True, slots=True)
class Flush:
    """Flush ('H'): send whatever output is pending."""


@dataclass(frozen=True, slots=True)
class Terminate:
    """Terminate ('X')."""


@dataclass(frozen=True, slots=True)
class PasswordData:
    """'p': PasswordMessage, SASLInitialResponse or SASLResponse; decoded by the auth state."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A well-framed message this server does not serve (FunctionCall, COPY data …)."""

    type: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class Oversized:
    """A well-framed message longer than the soft limit; its body was skipped, not buffered."""

    type: bytes
    length: int


FrontendMessage = (
    StartupMessage
    | SSLRequest
    | GSSENCRequest
    | CancelRequest
    | Query
    | Parse
    | Bind
    | Describe
    | Execute
    | Close
    | Sync
    | Flush
    | Terminate
    | PasswordData
    | Unsupported
    | Oversized
)

_SYNC, _FLUSH, _TERMINATE = Sync(), Flush(), Terminate()


class _Body:
    """A cursor over one message body with checked reads."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation("invalid string in message")
        raw = self.data[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("invalid byte sequence for encoding \"UTF8\"") from None

    def int16(self) -> int:
        if self.pos + 2 > len(self.data):
            raise ProtocolViolation("insufficient data left in message")
        (v,) = _I16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(v)

    def int32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise ProtocolViolation("insufficient data left in message")
        (v,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def uint32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise ProtocolViolation("insufficient data left in message")
        (v,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolViolation("insufficient data left in message")
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return v

    def rest(self) -> bytes:
        v = self.data[self.pos :]
        self.pos = len(self.data)
        return v

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolViolation("invalid message format")


def decode_startup(body: bytes) -> StartupMessage | SSLRequest | GSSENCRequest | CancelRequest:
    """Decode a startup-phase packet (without its length word)."""
    b = _Body(body)
    code = b.int32()
    if code == SSL_REQUEST_CODE:
        b.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        b.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid = b.int32()
        secret = b.rest()
        if len(secret) < 4 or len(secret) > 256:
            raise ProtocolViolation("invalid length of cancel request")
        return CancelRequest(pid, secret)
    params: dict[str, str] = {}
    if code >> 16 == 3:
        while True:
            name = b.cstring()
            if name == "":
                break
            params[name] = b.cstring()
        b.end()
    return StartupMessage(code, params)


def _decode_parse(body: bytes) -> Parse:
    b = _Body(body)
    name = b.cstring()
    sql = b.cstring()
    n = b.int16()
    if n < 0:
        raise ProtocolViolation("invalid number of parameter types")
    oids = tuple(b.uint32() for _ in range(n))
    b.end()
    return Parse(name, sql, oids)


def _decode_bind(body: bytes) -> Bind:
    b = _Body(body)
    portal = b.cstring()
    statement = b.cstring()
    nf = b.int16()
    if nf < 0:
        raise ProtocolViolation("invalid number of parameter formats")
    formats = tuple(b.int16() for _ in range(nf))
    np_ = b.int16()
    if np_ < 0:
        raise ProtocolViolation("invalid number of parameters")
    params: list[bytes | None] = []
    for _ in range(np_):
        n = b.int32()
        if n == -1:
            params.append(None)
        elif n < -1:
            raise ProtocolViolation("invalid parameter length")
        else:
            params.append(b.raw(n))
    nr = b.int16()
    if nr < 0:
        raise ProtocolViolation("invalid number of result formats")
    rformats = tuple(b.int16() for _ in range(nr))
    b.end()
    for f in (*formats, *rformats):
        if f not in (0, 1):
            raise ProtocolViolation(f"unsupported format code: {f}")
    return Bind(portal, statement, formats, tuple(params), rformats)


def _decode_describe_close(body: bytes, close: bool) -> Describe | Close:
    b = _Body(body)
    kind = b.raw(1)
    name = b.cstring()
    b.end()
    if kind not in (b"S", b"P"):
        what = "close" if close else "describe"
        raise ProtocolViolation(f"invalid {what.upper()} message subtype {kind[0]}")
    return Close(kind.decode(), name) if close else Describe(kind.decode(), name)


def _decode_execute(body: bytes) -> Execute:
    b = _Body(body)
    portal = b.cstring()
    max_rows = b.int32()
    b.end()
    return Execute(portal, max(max_rows, 0))


def _decode_query(body: bytes) -> Query:
    b = _Body(body)
    sql = b.cstring()
    b.end()
    return Query(sql)


def _empty(msg: FrontendMessage) -> object:
    def decode(body: bytes) -> FrontendMessage:
        if body:
            raise ProtocolViolation("invalid message format")
        return msg

    return decode


_DECODERS = {
    b"Q": _decode_query,
    b"P": _decode_parse,
    b"B": _decode_bind,
    b"D": lambda body: _decode_describe_close(body, False),
    b"C": lambda body: _decode_describe_close(body, True),
    b"E": _decode_execute,
    b"S": _empty(_SYNC),
    b"H": _empty(_FLUSH),
    b"X": _empty(_TERMINATE),
    b"p": PasswordData,
}
_UNSUPPORTED_TYPES = frozenset((b"F", b"d", b"c", b"f"))


_DECODED: dict[bytes, FrontendMessage] = {}
_DECODED_MAX = 512
_CACHEABLE = frozenset((b"P", b"B", b"D", b"E", b"C", b"Q"))


def decode_message(type_: bytes, body: bytes) -> FrontendMessage:
    """Decode one regular (post-startup) message; ProtocolViolation for unknown types or bad bodies.

    Small Parse/Bind/Describe/Execute/Close/Query messages are memoised by their bytes (clients
    repeat them verbatim in loops); the message objects are immutable, so sharing them is safe.
    """
    if type_ in _CACHEABLE and len(body) <= 256:
        key = type_ + body
        hit = _DECODED.get(key)
        if hit is not None:
            return hit
        msg = _decode_uncached(type_, body)
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[key] = msg
        return msg
    return _decode_uncached(type_, body)


def _decode_uncached(type_: bytes, body: bytes) -> FrontendMessage:
    dec = _DECODERS.get(type_)
    if dec is not None:
        return dec(body)  # type: ignore[operator,no-any-return]
    if type_ in _UNSUPPORTED_TYPES:
        return Unsupported(type_, body)
    shown = type_.decode("latin-1") if 32 <= type_[0] < 127 else f"\\x{type_[0]:02x}"
    raise ProtocolViolation(f'invalid frontend message type "{shown}"')


class FrameDecoder:
    """Incremental decoder of the frontend byte stream.

    Guarantees: never buffers more than one message body of at most ``soft_limit`` bytes (longer
    messages are skipped as they arrive and reported as :class:`Oversized`); raises
    :class:`ProtocolViolation` for a length word below 4 or above 1 GiB, a startup packet above
    10,000 bytes, or a malformed body. ``startup`` is True until the startup packet has been read;
    after an SSLRequest the decoder stays in the startup phase.
    """

    __slots__ = ("_buf", "_pos", "_skip", "soft_limit", "startup")

    def __init__(self, soft_limit: int = 16 << 20) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._skip = 0
        self.soft_limit = soft_limit
        self.startup = True

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[FrontendMessage]:
        """Add received bytes; return every complete message, in order."""
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
            if not data:
                return []
        buf = self._buf
        if self._pos and self._pos == len(buf):
            buf.clear()
            self._pos = 0
        buf += data
        out: list[FrontendMessage] = []
        while True:
            pos = self._pos
            avail = len(buf) - pos
            if self.startup:
                if avail < 4:
                    break
                (length,) = _I32.unpack_from(buf, pos)
                if length < 8 or length > MAX_STARTUP_LENGTH:
                    raise ProtocolViolation("invalid length of startup packet")
                if avail < length:
                    break
                msg = decode_startup(bytes(buf[pos + 4 : pos + length]))
                self._pos = pos + length
                if isinstance(msg, StartupMessage):
                    self.startup = False
                out.append(msg)
                continue
            if avail < 5:
                break
            type_, length = _HDR.unpack_from(buf, pos)
            if length < 4 or length > HARD_MAX_MESSAGE:
                raise ProtocolViolation("invalid message length")
            if length - 4 > self.soft_limit:
                out.append(Oversized(type_, length))
                have = avail - 5
                take = min(have, length - 4)
                self._pos = pos + 5 + take
                self._skip = length - 4 - take
                if self._skip:
                    break
                continue
            if avail < length + 1:
                break
            body = bytes(buf[pos + 5 : pos + 1 + length])
            self._pos = pos + 1 + length
            out.append(decode_message(type_, body))
        if self._pos > 65536 and self._pos * 2 > len(buf):
            del buf[: self._pos]
            self._pos = 0
        return out


# ---------------------------------------------------------------------------------------------
# Backend messages


def _msg(type_: bytes, body: bytes) -> bytes:
    return type_ + _I32.pack(len(body) + 4) + body


def _cstr(s: str) -> bytes:
    return s.encode("utf-8").replace(b"\0", b"") + b"\0"


AUTH_OK = _msg(b"R", _I32.pack(0))
PARSE_COMPLETE = _msg(b"1", b"")
BIND_COMPLETE = _msg(b"2", b"")
CLOSE_COMPLETE = _msg(b"3", b"")
NO_DATA = _msg(b"n", b"")
EMPTY_QUERY = _msg(b"I", b"")
PORTAL_SUSPENDED = _msg(b"s", b"")
READY = {"I": _msg(b"Z", b"I"), "T": _msg(b"Z", b"T"), "E": _msg(b"Z", b"E")}
SSL_YES = b"S"
SSL_NO = b"N"


def encode_auth_sasl(mechanisms: Sequence[str]) -> bytes:
    """AuthenticationSASL listing ``mechanisms``."""
    return _msg(b"R", _I32.pack(10) + b"".join(_cstr(m) for m in mechanisms) + b"\0")


def encode_auth_sasl_continue(data: bytes) -> bytes:
    """AuthenticationSASLContinue carrying the server-first message."""
    return _msg(b"R", _I32.pack(11) + data)


def encode_auth_sasl_final(data: bytes) -> bytes:
    """AuthenticationSASLFinal carrying the server-final message."""
    return _msg(b"R", _I32.pack(12) + data)


def encode_parameter_status(name: str, value: str) -> bytes:
    """ParameterStatus."""
    return _msg(b"S", _cstr(name) + _cstr(value))


def encode_backend_key_data(pid: int, secret: bytes) -> bytes:
    """BackendKeyData (a 4-byte secret in protocol 3.0)."""
    return _msg(b"K", _I32.pack(pid) + secret)


def encode_ready(status: str) -> bytes:
    """ReadyForQuery with transaction status 'I', 'T' or 'E'."""
    return READY[status]


def encode_negotiate_version(minor: int, unsupported: Iterable[str]) -> bytes:
    """NegotiateProtocolVersion: the newest minor version served and the options not recognised."""
    opts = list(unsupported)
    return _msg(b"v", _I32.pack(minor) + _I32.pack(len(opts)) + b"".join(_cstr(o) for o in opts))


_FIELD = struct.Struct("!IhIhih")


@dataclass(frozen=True, slots=True)
class FieldDescription:
    """One RowDescription field. Table OID and attnum are 0 (see docs/wire: non-zero values make
    pgjdbc run extra catalog lookups)."""

    name: str
    type_oid: int
    typlen: int
    typmod: int = -1
    format: int = 0


def encode_row_description(fields: Sequence[FieldDescription]) -> bytes:
    """RowDescription."""
    parts = [struct.pack("!h", len(fields))]
    for f in fields:
        parts.append(_cstr(f.name))
        parts.append(_FIELD.pack(0, 0, f.type_oid, f.typlen, f.typmod, f.format))
    return _msg(b"T", b"".join(parts))


def encode_parameter_description(oids: Sequence[int]) -> bytes:
    """ParameterDescription."""
    return _msg(b"t", struct.pack(f"!h{len(oids)}I", len(oids), *oids))


_NULL_FIELD = _I32.pack(-1)


def encode_data_row(values: Sequence[bytes | None]) -> bytes:
    """DataRow with already-encoded column values (None is SQL NULL)."""
    parts = [b"", struct.pack("!h", len(values))]
    size = 6
    for v in values:
        if v is None:
            parts.append(_NULL_FIELD)
            size += 4
        else:
            parts.append(_I32.pack(len(v)))
            parts.append(v)
            size += 4 + len(v)
    parts[0] = b"D" + _I32.pack(size)
    return b"".join(parts)


def encode_command_complete(tag: str) -> bytes:
    """CommandComplete with a command tag such as ``SELECT 3``."""
    return _msg(b"C", _cstr(tag))


def _fields(fields: Mapping[str, str]) -> bytes:
    return b"".join(k.encode("ascii") + _cstr(v) for k, v in fields.items() if v is not None) + b"\0"


def encode_error(fields: Mapping[str, str]) -> bytes:
    """ErrorResponse from one-letter field codes (S, V, C, M, H, P …)."""
    return _msg(b"E", _fields(fields))


def encode_notice(fields: Mapping[str, str]) -> bytes:
    """NoticeResponse from one-letter field codes."""
    return _msg(b"N", _fields(fields))


def error_fields(
    sqlstate: str, message: str, *, hint: str | None = None, severity: str = "ERROR", position: int | None = None,
    detail: str | None = None,
) -> dict[str, str]:
    """The fields of an ErrorResponse/NoticeResponse: S and V (severity), C, M, and D, H, P when given."""
    f = {"S": severity, "V": severity, "C": sqlstate, "M": message}
    if detail:
        f["D"] = detail
    if hint:
        f["H"] = hint
    if position is not None:
        f["P"] = str(position)
    return f


# ---------------------------------------------------------------------------------------------
# Decoding backend messages (used by tests and by the frontend helpers in tests)


def decode_backend_stream(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a backend byte stream into (type, body) pairs; a trailing partial message raises."""
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    while pos < len(data):
        if pos + 5 > len(data):
            raise ProtocolViolation("truncated backend message")
        type_, length = _HDR.unpack_from(data, pos)
        if pos + 1 + length > len(data):
            raise ProtocolViolation("truncated backend message")
        out.append((type_, bytes(data[pos + 5 : pos + 1 + length])))
        pos += 1 + length
    return out


def parse_error_fields(body: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse/NoticeResponse body."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        end = body.index(b"\0", pos + 1)
        out[code] = body[pos + 1 : end].decode("utf-8")
        pos = end + 1
    return out


# Frontend encoders (for tests and tools that speak to the server directly).


def frontend_startup(params: Mapping[str, str], version: int = PROTOCOL_3_0) -> bytes:
    """A StartupMessage packet."""
    body = _I32.pack(version) + b"".join(_cstr(k) + _cstr(v) for k, v in params.items()) + b"\0"
    return _I32.pack(len(body) + 4) + body


def frontend_message(type_: bytes, body: bytes = b"") -> bytes:
    """A regular frontend message."""
    return _msg(type_, body)


def frontend_query(sql: str) -> bytes:
    """A Query message."""
    return _msg(b"Q", _cstr(sql))


def frontend_parse(name: str, sql: str, oids: Sequence[int] = ()) -> bytes:
    """A Parse message."""
    return _msg(b"P", _cstr(name) + _cstr(sql) + struct.pack(f"!h{len(oids)}I", len(oids), *oids))


def frontend_bind(
    portal: str, statement: str, params: Sequence[bytes | None] = (), param_formats: Sequence[int] = (),
    result_formats: Sequence[int] = (),
) -> bytes:
    """A Bind message."""
    parts = [_cstr(portal), _cstr(statement), struct.pack(f"!h{len(param_formats)}h", len(param_formats), *param_formats)]
    parts.append(struct.pack("!h", len(params)))
    for p in params:
        parts.append(_NULL_FIELD if p is None else _I32.pack(len(p)) + p)
    parts.append(struct.pack(f"!h{len(result_formats)}h", len(result_formats), *result_formats))
    return _msg(b"B", b"".join(parts))


def frontend_describe(kind: str, name: str) -> bytes:
    """A Describe message."""
    return _msg(b"D", kind.encode() + _cstr(name))


def frontend_execute(portal: str, max_rows: int = 0) -> bytes:
    """An Execute message."""
    return _msg(b"E", _cstr(portal) + _I32.pack(max_rows))


def frontend_close(kind: str, name: str) -> bytes:
    """A Close message."""
    return _msg(b"C", kind.encode() + _cstr(name))


FRONTEND_SYNC = _msg(b"S", b"")
FRONTEND_FLUSH = _msg(b"H", b"")
FRONTEND_TERMINATE = _msg(b"X", b"")


def frontend_cancel(pid: int, secret: bytes) -> bytes:
    """A CancelRequest packet."""
    body = _I32.pack(CANCEL_REQUEST_CODE) + _I32.pack(pid) + secret
    return _I32.pack(len(body) + 4) + body


def frontend_ssl_request() -> bytes:
    """An SSLRequest packet."""
    return _I32.pack(8) + _I32.pack(SSL_REQUEST_CODE)


def frontend_gssenc_request() -> bytes:
    """A GSSENCRequest packet."""
    return _I32.pack(8) + _I32.pack(GSSENC_REQUEST_CODE)
