"""Type codecs: text output matches PostgreSQL's output functions (golden values taken from a
PostgreSQL 15 server), binary encodings round-trip (numeric's bytes equal ``numeric_send``), and
parameter input errors carry PostgreSQL's SQLSTATEs."""

from __future__ import annotations

import datetime as dt
import math
import struct
import uuid
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsql.errors import DPSQLError
from dpsql.proxy.wire import types as t

CTX = t.OutputContext()


def text(type_name: str, value: object, ctx: t.OutputContext = CTX) -> str:
    return t.text_encoder(t.type_by_name(type_name), ctx)(value).decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e15, "1e+15"), (123456789012345.0, "123456789012345"), (1e-5, "1e-05"), (0.0001, "0.0001"), (1e16, "1e+16"),
        (1.5e300, "1.5e+300"), (-0.0, "-0"), (math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity"),
        (0.1, "0.1"), (1.0, "1"), (2.5, "2.5"), (-1234.5678, "-1234.5678"), (1 / 3, "0.3333333333333333"),
    ],
)
def test_float8_text_matches_postgresql(value: float, expected: str) -> None:
    assert text("float8", value) == expected


@pytest.mark.parametrize(("value", "expected"), [(1234567.0, "1.234567e+06"), (123456.0, "123456"), (0.1, "0.1"), (1e-5, "1e-05")])
def test_float4_text_matches_postgresql(value: float, expected: str) -> None:
    assert text("float4", value) == expected


def test_extra_float_digits_zero_uses_15_significant_digits() -> None:
    assert text("float8", 0.1 + 0.2, t.OutputContext(extra_float_digits=0)) == "0.3"
    assert text("float8", 0.1 + 0.2) == "0.30000000000000004"


@pytest.mark.parametrize(
    ("type_name", "value", "expected"),
    [
        ("interval", dt.timedelta(days=-1, seconds=-1), "-1 days -00:00:01"),
        ("interval", dt.timedelta(days=32, hours=3), "32 days 03:00:00"),
        ("interval", dt.timedelta(seconds=-1), "-00:00:01"),
        ("interval", dt.timedelta(days=1), "1 day"),
        ("interval", dt.timedelta(0), "00:00:00"),
        ("timestamptz", dt.datetime(2024, 1, 1, 8, 0, 0, 500000, tzinfo=dt.UTC), "2024-01-01 08:00:00.5+00"),
        ("timestamp", dt.datetime(2024, 1, 1, 8, 0, 0), "2024-01-01 08:00:00"),
        ("date", dt.date(2024, 2, 29), "2024-02-29"),
        ("time", dt.time(12, 0, 1, 500000), "12:00:01.5"),
        ("_text", ["a", "b c", "", None, "NULL", 'x"y'], '{a,"b c","",NULL,"NULL","x\\"y"}'),
        ("_int4", [1, 2, None], "{1,2,NULL}"),
        ("jsonb", {"a": 1}, '{"a": 1}'),
        ("numeric", Decimal("12.50"), "12.50"),
        ("numeric", Decimal("1E+3"), "1000"),
        ("numeric", Decimal("NaN"), "NaN"),
        ("bytea", b"x", "\\x78"),
        ("bool", True, "t"),
        ("bool", False, "f"),
        ("uuid", uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ("int2vector", [1, 2, 3], "1 2 3"),
        ("name", "pg_class", "pg_class"),
        ("oid", 2200, "2200"),
    ],
)
def test_text_output_matches_postgresql(type_name: str, value: object, expected: str) -> None:
    assert text(type_name, value) == expected


def test_timestamptz_text_uses_the_session_time_zone() -> None:
    ctx = t.OutputContext(timezone=t.zone("Asia/Kolkata") or dt.UTC)
    assert text("timestamptz", dt.datetime(2024, 1, 1, 0, 0, tzinfo=dt.UTC), ctx) == "2024-01-01 05:30:00+05:30"
    ctx = t.OutputContext(timezone=t.zone("America/New_York") or dt.UTC)
    assert text("timestamptz", dt.datetime(2024, 7, 1, 12, 0, tzinfo=dt.UTC), ctx) == "2024-07-01 08:00:00-04"


# golden numeric_send output of PostgreSQL 15 (SELECT numeric_send(x::numeric))
NUMERIC_SEND = {
    "12.50": "0002000000000002000c1388",
    "0": "0000000000000000",
    "-0.001": "0001ffff40000003000a",
    "123456789.123456789": "0006000200000009000109291a8504d2162e2328",
    "1e10": "00010002000000000064",
    "NaN": "00000000c0000000",
    "10000": "00010001000000000001",
    "0.0001": "0001ffff000000040001",
    "-12345678901234567890.5": "000600044000000104d2162e23340d801ed21388",
    "0.00": "0000000000000002",
    "1.000001": "0003000000000006000100000064",
    "99999999": "0002000100000000270f270f",
}


@pytest.mark.parametrize(("text_value", "hex_bytes"), NUMERIC_SEND.items())
def test_numeric_binary_equals_numeric_send(text_value: str, hex_bytes: str) -> None:
    encoded = t.encode_numeric_binary(Decimal(text_value))
    assert encoded.hex() == hex_bytes
    back = t.decode_numeric_binary(encoded)
    assert (back.is_nan() and Decimal(text_value).is_nan()) or back == Decimal(text_value)


@settings(max_examples=300, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_numeric_binary_round_trips(value: Decimal) -> None:
    assert t.decode_numeric_binary(t.encode_numeric_binary(value)) == value


def test_bigdecimal_as_pgjdbc_sends_it() -> None:
    # pgjdbc's BigDecimal("1234.5670") binary parameter: ndigits 3, weight 0, scale 4.
    data = struct.pack("!hhHH2h", 2, 0, 0, 4, 1234, 5670)
    assert t.decode_param(data, 1700, 1) == Decimal("1234.5670")


@pytest.mark.parametrize(
    ("type_name", "value"),
    [
        ("bool", True), ("int2", -5), ("int4", 2**31 - 1), ("int8", -(2**63)), ("float4", 1.5), ("float8", -2.25),
        ("float8", math.inf), ("numeric", Decimal("-1.25")), ("text", "héllo"), ("varchar", "x"), ("bytea", b"\x00\xff"),
        ("date", dt.date(1999, 12, 31)), ("time", dt.time(23, 59, 59, 999999)),
        ("timestamp", dt.datetime(2024, 3, 1, 12, 30, 15, 123456)),
        ("timestamptz", dt.datetime(2024, 3, 1, 12, 30, tzinfo=dt.UTC)),
        ("interval", dt.timedelta(days=3, seconds=7, microseconds=5)), ("uuid", uuid.UUID(int=12345)),
        ("_int4", [1, None, 3]), ("_text", ["a", "b"]), ("oid", 4294967295), ("jsonb", '{"a": 1}'),
    ],
)
def test_binary_round_trips(type_name: str, value: object) -> None:
    typ = t.type_by_name(type_name)
    encoded = t.binary_encoder(typ)(value)
    assert t.decode_param(encoded, typ.oid, 1) == value


def test_binary_float_nan() -> None:
    typ = t.type_by_name("float8")
    assert math.isnan(t.decode_param(t.binary_encoder(typ)(math.nan), typ.oid, 1))


@pytest.mark.parametrize(
    ("oid", "text_value", "expected"),
    [
        (23, " 42 ", 42), (20, "-9223372036854775808", -(2**63)), (701, "Infinity", math.inf), (701, "-inf", -math.inf),
        (1700, "12.50", Decimal("12.50")), (16, "yes", True), (16, "OFF", False), (1082, "2024-01-05", dt.date(2024, 1, 5)),
        (1082, "2024-01-05 +01", dt.date(2024, 1, 5)),
        (1114, "2024-01-05 10:00:00.5", dt.datetime(2024, 1, 5, 10, 0, 0, 500000)),
        (1184, "2024-01-05 10:00:00+02", dt.datetime(2024, 1, 5, 8, 0, tzinfo=dt.UTC)),
        (1186, "1 day 02:00:00", dt.timedelta(days=1, hours=2)), (1186, "-00:00:01", dt.timedelta(seconds=-1)),
        (1009, '{a,"b c",NULL}', ["a", "b c", None]), (1007, "{1,2}", [1, 2]), (17, "\\x0aff", b"\n\xff"),
        (25, "plain", "plain"), (0, "untyped", "untyped"), (705, "unknown", "unknown"),
    ],
)
def test_text_parameters(oid: int, text_value: str, expected: object) -> None:
    value = t.decode_param(text_value.encode(), oid, 0)
    if isinstance(expected, float) and math.isinf(expected):
        assert value == expected
    else:
        assert value == expected


@pytest.mark.parametrize(
    ("oid", "text_value", "sqlstate"),
    [(23, "abc", "22P02"), (23, "2147483648", "22003"), (21, "40000", "22003"), (16, "maybe", "22P02"), (701, "x", "22P02"),
     (1700, "1.2.3", "22P02"), (1082, "yesterday", "22P02"), (2950, "not-a-uuid", "22P02")],
)
def test_bad_text_parameters(oid: int, text_value: str, sqlstate: str) -> None:
    with pytest.raises(DPSQLError) as e:
        t.decode_param(text_value.encode(), oid, 0)
    assert e.value.sqlstate == sqlstate


@pytest.mark.parametrize(("oid", "data"), [(23, b"\x00\x01"), (20, b"\x00"), (1700, b"\x00\x01"), (2950, b"short"), (1186, b"1")])
def test_bad_binary_parameters(oid: int, data: bytes) -> None:
    with pytest.raises(DPSQLError) as e:
        t.decode_param(data, oid, 1)
    assert e.value.sqlstate == "22P03"


def test_invalid_utf8_parameter() -> None:
    with pytest.raises(DPSQLError) as e:
        t.decode_param(b"\xff", 25, 0)
    assert e.value.sqlstate == "22021"


@pytest.mark.parametrize(
    ("name", "oid"),
    [("int4", 23), ("integer", 23), ("bigint", 20), ("double precision", 701), ("character varying", 1043),
     ("text[]", 1009), ("_text", 1009), ("numeric(10,2)", 1700), ("timestamp with time zone", 1184), ("pg_catalog.int8", 20),
     ("oid[]", 1028), ("no_such_type", 25)],
)
def test_type_names(name: str, oid: int) -> None:
    assert t.type_by_name(name).oid == oid


def test_time_zones() -> None:
    assert t.zone("UTC") is dt.UTC
    assert t.zone("Europe/Berlin") is not None
    assert t.zone("+02:00") == dt.timezone(dt.timedelta(hours=2))
    assert t.zone("Not/AZone") is None
