"""The protocol codec: every frontend message round-trips through the frame decoder, every backend
encoder produces a well-framed message, and malformed input is a ProtocolViolation — never another
exception, never a hang (the decoder just waits for more bytes when a message is incomplete)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsql.proxy.wire import messages as m


def _decode_all(data: bytes, *, startup: bool = False) -> list[m.FrontendMessage]:
    d = m.FrameDecoder()
    d.startup = startup
    return d.feed(data)


def test_startup_packets_round_trip() -> None:
    msg = _decode_all(m.frontend_startup({"user": "alice", "database": "hospital", "options": "-c x=1"}), startup=True)
    assert msg == [m.StartupMessage(m.PROTOCOL_3_0, {"user": "alice", "database": "hospital", "options": "-c x=1"})]
    assert _decode_all(m.frontend_ssl_request(), startup=True) == [m.SSLRequest()]
    assert _decode_all(m.frontend_gssenc_request(), startup=True) == [m.GSSENCRequest()]
    assert _decode_all(m.frontend_cancel(1234, b"\x01\x02\x03\x04"), startup=True) == [m.CancelRequest(1234, b"\x01\x02\x03\x04")]


def test_ssl_request_keeps_the_decoder_in_startup() -> None:
    d = m.FrameDecoder()
    assert d.feed(m.frontend_ssl_request()) == [m.SSLRequest()]
    assert d.startup
    out = d.feed(m.frontend_startup({"user": "u"}) + m.frontend_query("SELECT 1"))
    assert out == [m.StartupMessage(m.PROTOCOL_3_0, {"user": "u"}), m.Query("SELECT 1")]
    assert not d.startup


def test_regular_messages_round_trip() -> None:
    stream = b"".join(
        [
            m.frontend_query("SELECT 'é'"),
            m.frontend_parse("s1", "SELECT $1", [23]),
            m.frontend_bind("p1", "s1", [b"42", None], [0], [1]),
            m.frontend_describe("S", "s1"),
            m.frontend_describe("P", "p1"),
            m.frontend_execute("p1", 10),
            m.frontend_close("P", "p1"),
            m.frontend_close("S", "s1"),
            m.FRONTEND_FLUSH,
            m.FRONTEND_SYNC,
            m.frontend_message(b"p", b"SCRAM-SHA-256\0\0\0\0\x03abc"),
            m.frontend_message(b"F", b"\0\0\0\x01"),
            m.frontend_message(b"d", b"copy data"),
            m.FRONTEND_TERMINATE,
        ]
    )
    assert _decode_all(stream) == [
        m.Query("SELECT 'é'"),
        m.Parse("s1", "SELECT $1", (23,)),
        m.Bind("p1", "s1", (0,), (b"42", None), (1,)),
        m.Describe("S", "s1"),
        m.Describe("P", "p1"),
        m.Execute("p1", 10),
        m.Close("P", "p1"),
        m.Close("S", "s1"),
        m.Flush(),
        m.Sync(),
        m.PasswordData(b"SCRAM-SHA-256\0\0\0\0\x03abc"),
        m.Unsupported(b"F", b"\0\0\0\x01"),
        m.Unsupported(b"d", b"copy data"),
        m.Terminate(),
    ]


def test_byte_at_a_time_feeding_gives_the_same_messages() -> None:
    stream = m.frontend_startup({"user": "u"}) + m.frontend_query("SELECT 1") + m.frontend_parse("", "SELECT 2") + m.FRONTEND_SYNC
    d = m.FrameDecoder()
    out: list[m.FrontendMessage] = []
    for i in range(len(stream)):
        out += d.feed(stream[i : i + 1])
    assert out == [m.StartupMessage(m.PROTOCOL_3_0, {"user": "u"}), m.Query("SELECT 1"), m.Parse("", "SELECT 2", ()), m.Sync()]
    assert d.buffered == 0


@pytest.mark.parametrize(
    ("data", "startup"),
    [
        (struct.pack("!i", 3), True),  # startup length below 8
        (struct.pack("!i", 20_000) + b"\0" * 16, True),  # startup packet above 10,000 bytes
        (b"Q" + struct.pack("!i", 2), False),  # length below 4
        (b"Q" + struct.pack("!i", 0x7FFFFFFF), False),  # above 1 GiB
        (b"Z" + struct.pack("!i", 4), False),  # unknown type (a backend message)
        (b"\x00" + struct.pack("!i", 4), False),  # garbage type byte
        (b"Q" + struct.pack("!i", 8) + b"abcd", False),  # query without terminator
        (b"Q" + struct.pack("!i", 7) + b"a\0b", False),  # trailing bytes after the string
        (b"Q" + struct.pack("!i", 6) + b"\xff\0", False),  # invalid UTF-8
        (b"S" + struct.pack("!i", 5) + b"x", False),  # Sync with a body
        (b"D" + struct.pack("!i", 7) + b"X\0\0", False),  # bad Describe subtype
        (b"E" + struct.pack("!i", 6) + b"\0\0", False),  # Execute truncated
        (b"P" + struct.pack("!i", 9) + b"\0x\0\xff\xff", False),  # negative parameter count
        (b"B" + struct.pack("!i", 12) + b"\0\0\0\x01\0\x05\0\x00", False),  # bad format code
        (b"B" + struct.pack("!i", 14) + b"\0\0\0\0\0\x01\xff\xff\xff\xf0", False),  # parameter length < -1
        (b"B" + struct.pack("!i", 14) + b"\0\0\0\0\0\x01\0\0\0\x09", False),  # parameter past the end
        (m.frontend_cancel(1, b"") , True),  # cancel request without a secret
    ],
)
def test_malformed_input_is_a_protocol_violation(data: bytes, startup: bool) -> None:
    with pytest.raises(m.ProtocolViolation):
        _decode_all(data, startup=startup)


def test_truncated_messages_wait_for_more_bytes() -> None:
    full = m.frontend_parse("s", "SELECT 1", [23])
    d = m.FrameDecoder()
    d.startup = False
    for cut in range(len(full)):
        d2 = m.FrameDecoder()
        d2.startup = False
        assert d2.feed(full[:cut]) == []
    assert d.feed(full) == [m.Parse("s", "SELECT 1", (23,))]


def test_oversized_messages_are_skipped_without_buffering() -> None:
    d = m.FrameDecoder(soft_limit=100)
    d.startup = False
    big = m.frontend_query("x" * 1000)
    out = d.feed(big[:50])
    assert out == [m.Oversized(b"Q", len(big) - 1)]
    assert d.buffered == 0
    assert d.feed(big[50:600]) == []
    assert d.feed(big[600:] + m.FRONTEND_SYNC) == [m.Sync()]


def test_unsupported_protocol_version_is_decoded_for_the_connection_to_refuse() -> None:
    pkt = m.frontend_startup({"user": "u"}, version=(2 << 16))
    assert _decode_all(pkt, startup=True) == [m.StartupMessage(2 << 16, {})]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_never_raise_anything_but_protocol_violation(data: bytes, startup: bool) -> None:
    d = m.FrameDecoder(soft_limit=64)
    d.startup = startup
    with contextlib.suppress(m.ProtocolViolation):
        d.feed(data)


def test_backend_messages_are_well_framed() -> None:
    fields = [m.FieldDescription("a", 23, 4), m.FieldDescription("b", 25, -1, -1, 1)]
    stream = b"".join(
        [
            m.AUTH_OK,
            m.encode_auth_sasl(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]),
            m.encode_auth_sasl_continue(b"r=x"),
            m.encode_auth_sasl_final(b"v=y"),
            m.encode_parameter_status("TimeZone", "UTC"),
            m.encode_backend_key_data(7, b"\1\2\3\4"),
            m.encode_row_description(fields),
            m.encode_data_row([b"1", None, b""]),
            m.encode_command_complete("SELECT 1"),
            m.encode_error(m.error_fields("42601", "syntax error", hint="fix it", position=3)),
            m.encode_notice(m.error_fields("00000", "hello", severity="NOTICE")),
            m.encode_parameter_description([23, 25]),
            m.encode_negotiate_version(0, ["_pq_.x"]),
            m.PARSE_COMPLETE, m.BIND_COMPLETE, m.CLOSE_COMPLETE, m.NO_DATA, m.EMPTY_QUERY, m.PORTAL_SUSPENDED,
            m.encode_ready("T"),
        ]
    )
    msgs = m.decode_backend_stream(stream)
    assert "".join(t.decode() for t, _ in msgs) == "RRRRSKTDCENtv123nIsZ"
    err = m.parse_error_fields(msgs[9][1])
    assert err == {"S": "ERROR", "V": "ERROR", "C": "42601", "M": "syntax error", "H": "fix it", "P": "3"}
    body = msgs[7][1]
    assert body == struct.pack("!hi", 3, 1) + b"1" + struct.pack("!ii", -1, 0)
    assert msgs[-1] == (b"Z", b"T")


def test_nul_bytes_cannot_truncate_strings_in_backend_messages() -> None:
    msg = m.encode_error(m.error_fields("XX000", "a\0b"))
    assert m.parse_error_fields(m.decode_backend_stream(msg)[0][1])["M"] == "ab"
