"""PostgreSQL types on the wire: OIDs, type lengths, and the text and binary encodings of values.

Values come from the engine and the synthetic catalog as Python objects (``int``, ``float``,
``Decimal``, ``str``, ``bool``, ``date``/``time``/``datetime``/``timedelta``, ``bytes``, ``UUID``,
lists). :func:`text_encoder`/:func:`binary_encoder` build a per-column encoder that writes
PostgreSQL's own output format (``float8out``'s shortest round-trip text, ISO dates, ``postgres``
interval style, hex bytea, array literals). :func:`decode_param` reads a Bind parameter in text
or binary format according to its type OID, raising a :class:`~dpsql.errors.DPSQLError` with
PostgreSQL's SQLSTATE (22P02, 22003, 22P03) for bad input.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from dpsql.errors import CharacterNotInRepertoire, DPSQLError, InvalidBinaryRepresentation, NumericValueOutOfRange, UnsupportedQuery

Encoder = Callable[[Any], bytes]


@dataclass(frozen=True, slots=True)
class PgType:
    """A built-in type: name (pg_type.typname), OID, typlen, and element OID for arrays."""

    name: str
    oid: int
    typlen: int
    elem: int = 0
    array: int = 0


_BASE: tuple[tuple[str, int, int, int], ...] = (
    # name, oid, typlen, array oid
    ("bool", 16, 1, 1000),
    ("bytea", 17, -1, 1001),
    ("char", 18, 1, 1002),
    ("name", 19, 64, 1003),
    ("int8", 20, 8, 1016),
    ("int2", 21, 2, 1005),
    ("int2vector", 22, -1, 1006),
    ("int4", 23, 4, 1007),
    ("regproc", 24, 4, 1008),
    ("text", 25, -1, 1009),
    ("oid", 26, 4, 1028),
    ("tid", 27, 6, 1010),
    ("xid", 28, 4, 1011),
    ("cid", 29, 4, 1012),
    ("oidvector", 30, -1, 1013),
    ("pg_node_tree", 194, -1, 0),
    ("json", 114, -1, 199),
    ("xml", 142, -1, 143),
    ("float4", 700, 4, 1021),
    ("float8", 701, 8, 1022),
    ("unknown", 705, -2, 0),
    ("money", 790, 8, 791),
    ("inet", 869, -1, 1041),
    ("aclitem", 1033, 12, 1034),
    ("bpchar", 1042, -1, 1014),
    ("varchar", 1043, -1, 1015),
    ("date", 1082, 4, 1182),
    ("time", 1083, 8, 1183),
    ("timestamp", 1114, 8, 1115),
    ("timestamptz", 1184, 8, 1185),
    ("interval", 1186, 16, 1187),
    ("timetz", 1266, 12, 1270),
    ("numeric", 1700, -1, 1231),
    ("regprocedure", 2202, 4, 2207),
    ("regoper", 2203, 4, 2208),
    ("regclass", 2205, 4, 2210),
    ("regtype", 2206, 4, 2211),
    ("record", 2249, -1, 2287),
    ("cstring", 2275, -2, 1263),
    ("any", 2276, 4, 0),
    ("anyarray", 2277, -1, 0),
    ("void", 2278, 4, 0),
    ("uuid", 2950, 16, 2951),
    ("pg_lsn", 3220, 8, 3221),
    ("jsonb", 3802, -1, 3807),
    ("regnamespace", 4089, 4, 4090),
    ("regrole", 4096, 4, 4097),
)

TYPES_BY_NAME: dict[str, PgType] = {}
TYPES_BY_OID: dict[int, PgType] = {}
for _name, _oid, _len, _arr in _BASE:
    _t = PgType(_name, _oid, _len, 0, _arr)
    TYPES_BY_NAME[_name] = _t
    TYPES_BY_OID[_oid] = _t
    if _arr:
        _a = PgType("_" + _name, _arr, -1, _oid, 0)
        TYPES_BY_NAME[_a.name] = _a
        TYPES_BY_OID[_arr] = _a

TEXT = TYPES_BY_NAME["text"]
UNKNOWN_OID = 705

_ALIASES = {
    "boolean": "bool",
    "smallint": "int2",
    "integer": "int4",
    "int": "int4",
    "bigint": "int8",
    "real": "float4",
    "float": "float8",
    "double precision": "float8",
    "double": "float8",
    "decimal": "numeric",
    "character varying": "varchar",
    "character": "bpchar",
    "string": "text",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "time with time zone": "timetz",
    '"char"': "char",
    "blob": "bytea",
    "hugeint": "numeric",
}
_TYPMOD = re.compile(r"\s*\([^)]*\)")


def type_by_name(name: str) -> PgType:
    """The type called ``name`` (``int4``, ``integer``, ``text[]``, ``numeric(10,2)``, ``pg_catalog.int8`` …);
    unknown names map to ``text`` (their values are sent as text)."""
    hit = TYPES_BY_NAME.get(name)
    if hit is not None:
        return hit
    n = name.strip().lower()
    if n.startswith("pg_catalog."):
        n = n[11:]
    n = _TYPMOD.sub("", n).strip()
    array = n.endswith("[]")
    if array:
        n = n[:-2].strip()
    n = _ALIASES.get(n, n).strip('"')
    base = TYPES_BY_NAME.get(n)
    if base is None:
        return TEXT if not array else TYPES_BY_NAME["_text"]
    if array:
        return TYPES_BY_OID.get(base.array, TYPES_BY_NAME["_text"]) if not base.elem else base
    return base


def type_by_oid(oid: int) -> PgType | None:
    """The built-in type with ``oid``, or None."""
    return TYPES_BY_OID.get(oid)


# ---------------------------------------------------------------------------------------------
# Text output


@dataclass(frozen=True, slots=True)
class OutputContext:
    """Session settings that change the text output: the TimeZone and extra_float_digits."""

    timezone: dt.tzinfo = dt.UTC
    extra_float_digits: int = 1


def _shortest(text: str, max_exp: int) -> str:
    """PostgreSQL's shortest float text from Python's shortest round-trip digits."""
    d = Decimal(text)
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits)).rstrip("0")
    exp += len(digits) - len(ds)
    if not ds:
        return "-0" if sign else "0"
    n = len(ds)
    e10 = exp + n - 1
    neg = "-" if sign else ""
    if e10 < -4 or e10 >= max_exp:
        mant = ds[0] + ("." + ds[1:] if n > 1 else "")
        return f"{neg}{mant}e{'+' if e10 >= 0 else '-'}{abs(e10):02d}"
    if exp >= 0:
        return neg + ds + "0" * exp
    if e10 >= 0:
        return neg + ds[: e10 + 1] + "." + ds[e10 + 1 :]
    return neg + "0." + "0" * (-e10 - 1) + ds


def format_float8(v: float, extra_float_digits: int = 1) -> str:
    """``float8out``: shortest exact text (extra_float_digits > 0) or ``%.{15+efd}g``."""
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "Infinity" if v > 0 else "-Infinity"
    if extra_float_digits > 0:
        if 1e-4 <= abs(v) < 1e15:
            r = repr(v)
            return r[:-2] if r.endswith(".0") else r
        return _shortest(repr(v), 15)
    return _pg_g(v, max(1, 15 + extra_float_digits))


def format_float4(v: float, extra_float_digits: int = 1) -> str:
    """``float4out``: shortest text of the value as a 32-bit float."""
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "Infinity" if v > 0 else "-Infinity"
    if extra_float_digits > 0:
        return _shortest(str(np.float32(v)), 6)
    return _pg_g(v, max(1, 6 + extra_float_digits))


def _pg_g(v: float, precision: int) -> str:
    return f"{v:.{precision}g}"


def format_numeric(v: Any) -> str:
    """``numeric_out``: plain decimal notation; NaN and ±Infinity spelled as PostgreSQL does."""
    if isinstance(v, Decimal):
        if v.is_nan():
            return "NaN"
        if v.is_infinite():
            return "Infinity" if v > 0 else "-Infinity"
        return format(v, "f")
    if isinstance(v, float):
        if v != v or v in (math.inf, -math.inf):
            return format_float8(v)
        return format(Decimal(repr(v)), "f")
    if isinstance(v, Fraction):
        return format_float8(float(v))
    return str(v)


def _time_text(h: int, m: int, s: int, us: int) -> str:
    base = f"{h:02d}:{m:02d}:{s:02d}"
    return base + ("." + f"{us:06d}".rstrip("0") if us else "")


def format_date(v: Any) -> str:
    """ISO date text."""
    if isinstance(v, dt.datetime):
        v = v.date()
    if isinstance(v, dt.date):
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d}"
    return str(v)


def format_timestamp(v: Any) -> str:
    """``timestamp`` text: ``YYYY-MM-DD HH:MM:SS[.ffffff]`` (fraction without trailing zeros)."""
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.UTC).replace(tzinfo=None)
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d} " + _time_text(v.hour, v.minute, v.second, v.microsecond)
    if isinstance(v, dt.date):
        return format_date(v) + " 00:00:00"
    return str(v)


def _offset_text(off: dt.timedelta | None) -> str:
    secs = int(off.total_seconds()) if off is not None else 0
    sign = "+" if secs >= 0 else "-"
    secs = abs(secs)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    out = f"{sign}{h:02d}"
    if m or s:
        out += f":{m:02d}"
    if s:
        out += f":{s:02d}"
    return out


def format_timestamptz(v: Any, tz: dt.tzinfo = dt.UTC) -> str:
    """``timestamptz`` text in the session TimeZone, with PostgreSQL's ``+HH[:MM]`` offset."""
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        local = v.astimezone(tz)
        return (
            f"{local.year:04d}-{local.month:02d}-{local.day:02d} "
            + _time_text(local.hour, local.minute, local.second, local.microsecond)
            + _offset_text(local.utcoffset())
        )
    if isinstance(v, dt.date):
        return format_timestamptz(dt.datetime(v.year, v.month, v.day, tzinfo=tz), tz)
    return str(v)


def format_time(v: Any) -> str:
    """``time`` text."""
    if isinstance(v, dt.time):
        return _time_text(v.hour, v.minute, v.second, v.microsecond)
    return str(v)


def format_interval(v: Any) -> str:
    """``interval`` text in the ``postgres`` IntervalStyle (``1 day 02:00:00``, ``-00:00:01``)."""
    if not isinstance(v, dt.timedelta):
        return str(v)
    total = v // dt.timedelta(microseconds=1)
    if total == 0:
        return "00:00:00"
    neg = total < 0
    days, rem = divmod(abs(total), 86_400_000_000)
    secs, us = divmod(rem, 1_000_000)
    h, rem2 = divmod(secs, 3600)
    m, s = divmod(rem2, 60)
    parts = []
    if days:
        parts.append(f"{'-' if neg else ''}{days} day{'s' if days != 1 or neg else ''}")
    if rem or not days:
        parts.append(("-" if neg else "") + _time_text(h, m, s, us))
    return " ".join(parts)


def format_bool(v: Any) -> str:
    """``t`` or ``f``."""
    return "t" if v else "f"


def format_bytea(v: Any) -> str:
    """Hex bytea text ``\\x…``."""
    if isinstance(v, str):
        v = v.encode("utf-8")
    return "\\x" + bytes(v).hex()


def format_json(v: Any) -> str:
    """JSON text (strings are assumed to be JSON already)."""
    if isinstance(v, str):
        return v
    return json.dumps(v, default=str)


_ARRAY_SPECIAL = re.compile(r'[{}",\\\s]')


def _array_item(text: str) -> str:
    if text == "" or _ARRAY_SPECIAL.search(text) or text.lower() == "null":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def format_array(v: Any, elem: Callable[[Any], str]) -> str:
    """An array literal ``{a,"b c",NULL}`` (nested lists become nested braces)."""
    if isinstance(v, str):
        return v
    items = []
    for x in v:
        if x is None:
            items.append("NULL")
        elif isinstance(x, list | tuple):
            items.append(format_array(x, elem))
        else:
            items.append(_array_item(elem(x)))
    return "{" + ",".join(items) + "}"


def format_vector(v: Any) -> str:
    """``int2vector``/``oidvector`` text: space-separated."""
    if isinstance(v, str):
        return v
    return " ".join(str(x) for x in v)


def format_any(v: Any, ctx: OutputContext | None = None) -> str:
    """Text of a value whose column type gives no better rule, by its Python type."""
    if isinstance(v, bool):
        return format_bool(v)
    if isinstance(v, float):
        return format_float8(v, ctx.extra_float_digits if ctx else 1)
    if isinstance(v, Decimal | Fraction):
        return format_numeric(v)
    if isinstance(v, dt.datetime):
        return format_timestamptz(v, ctx.timezone if ctx else dt.UTC) if v.tzinfo is not None else format_timestamp(v)
    if isinstance(v, dt.date):
        return format_date(v)
    if isinstance(v, dt.time):
        return format_time(v)
    if isinstance(v, dt.timedelta):
        return format_interval(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return format_bytea(v)
    if isinstance(v, list | tuple):
        return format_array(v, lambda x: format_any(x, ctx))
    if isinstance(v, dict):
        return format_json(v)
    return str(v)


def text_formatter(t: PgType, ctx: OutputContext) -> Callable[[Any], str]:
    """A function giving the text of a value of type ``t`` (PostgreSQL's output function)."""
    name = t.name
    if t.elem:
        elem_t = TYPES_BY_OID[t.elem]
        ef = text_formatter(elem_t, ctx)
        return lambda v: format_array(v, ef)
    efd = ctx.extra_float_digits
    if name == "float8":
        return lambda v: format_float8(float(v), efd) if isinstance(v, float | int | Decimal | Fraction) else format_any(v, ctx)
    if name == "float4":
        return lambda v: format_float4(float(v), efd) if isinstance(v, float | int | Decimal | Fraction) else format_any(v, ctx)
    if name == "numeric":
        return format_numeric
    if name == "bool":
        return lambda v: format_bool(v) if isinstance(v, bool | int) else str(v)
    if name == "timestamptz":
        tz = ctx.timezone
        return lambda v: format_timestamptz(v, tz)
    if name == "timestamp":
        return format_timestamp
    if name == "date":
        return format_date
    if name == "time":
        return format_time
    if name == "interval":
        return format_interval
    if name == "bytea":
        return format_bytea
    if name in ("json", "jsonb"):
        return format_json
    if name in ("int2vector", "oidvector"):
        return format_vector
    if name in ("int2", "int4", "int8", "oid", "xid", "cid", "regproc", "regclass", "regtype", "regnamespace", "regrole"):
        return lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else format_any(v, ctx)
    return lambda v: v if isinstance(v, str) else format_any(v, ctx)


def text_encoder(t: PgType, ctx: OutputContext) -> Encoder:
    """A per-column encoder to UTF-8 text bytes."""
    f = text_formatter(t, ctx)
    return lambda v: f(v).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Binary output

_PG_EPOCH_DATE = dt.date(2000, 1, 1)
_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_TZ = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_F32 = struct.Struct("!f")
_F64 = struct.Struct("!d")
_INTERVAL = struct.Struct("!qii")

NUMERIC_POS, NUMERIC_NEG, NUMERIC_NAN, NUMERIC_PINF, NUMERIC_NINF = 0x0000, 0x4000, 0xC000, 0xD000, 0xF000


def encode_numeric_binary(v: Any) -> bytes:
    """``numeric_send``: base-10000 digits with weight, sign and display scale."""
    if not isinstance(v, Decimal):
        if isinstance(v, float):
            v = Decimal("NaN") if v != v else Decimal(repr(v)) if math.isfinite(v) else Decimal(v)
        elif isinstance(v, Fraction):
            v = Decimal(v.numerator) / Decimal(v.denominator)
        else:
            v = Decimal(v)
    if v.is_nan():
        return struct.pack("!hhHH", 0, 0, NUMERIC_NAN, 0)
    if v.is_infinite():
        return struct.pack("!hhHH", 0, 0, NUMERIC_PINF if v > 0 else NUMERIC_NINF, 0)
    sign, digits, exp = v.as_tuple()
    assert isinstance(exp, int)
    dscale = max(0, -exp)
    ds = "".join(map(str, digits)) or "0"
    # Integer part digits and fractional part digits, aligned to groups of 4 around the point.
    if exp >= 0:
        int_part, frac_part = ds + "0" * exp, ""
    else:
        cut = len(ds) + exp
        int_part = ds[:cut] if cut > 0 else ""
        frac_part = ("0" * -cut + ds) if cut < 0 else ds[cut:]
    int_part = int_part.lstrip("0")
    pad_int = (-len(int_part)) % 4
    int_part = "0" * pad_int + int_part
    frac_part = frac_part + "0" * ((-len(frac_part)) % 4)
    groups = [int(int_part[i : i + 4]) for i in range(0, len(int_part), 4)]
    weight = len(groups) - 1
    groups += [int(frac_part[i : i + 4]) for i in range(0, len(frac_part), 4)]
    # Strip leading zero groups (adjusting the weight) and trailing zero groups.
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    return struct.pack(f"!hhHH{len(groups)}h", len(groups), weight, NUMERIC_NEG if sign else NUMERIC_POS, dscale, *groups)


def decode_numeric_binary(data: bytes) -> Decimal:
    """``numeric_recv``."""
    if len(data) < 8:
        raise _binary_error()
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHH", data)
    if sign == NUMERIC_NAN:
        return Decimal("NaN")
    if sign == NUMERIC_PINF:
        return Decimal("Infinity")
    if sign == NUMERIC_NINF:
        return Decimal("-Infinity")
    if sign not in (NUMERIC_POS, NUMERIC_NEG) or ndigits < 0 or len(data) != 8 + 2 * ndigits:
        raise _binary_error()
    groups = struct.unpack_from(f"!{ndigits}h", data, 8)
    if any(g < 0 or g > 9999 for g in groups):
        raise _binary_error()
    digits = "".join(f"{g:04d}" for g in groups).lstrip("0") or "0"
    exp10 = 4 * (weight - ndigits + 1)
    # Express the value with exactly ``dscale`` fractional digits (the display scale).
    if -exp10 < dscale:
        digits += "0" * (dscale + exp10)
        exp10 = -dscale
    elif -exp10 > dscale:
        drop = -exp10 - dscale
        if digits != "0" and any(c != "0" for c in digits[-drop:]):
            raise _binary_error()
        digits = digits[:-drop] or "0"
        exp10 = -dscale
    return Decimal((1 if sign == NUMERIC_NEG else 0, tuple(int(c) for c in digits), exp10))


def _micros(td: dt.timedelta) -> int:
    return td // dt.timedelta(microseconds=1)


def _enc_timestamp(v: Any) -> bytes:
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.UTC).replace(tzinfo=None)
        return _I64.pack(_micros(v - _PG_EPOCH))
    if isinstance(v, dt.date):
        return _I64.pack((v - _PG_EPOCH_DATE).days * 86_400_000_000)
    raise TypeError("not a timestamp")


def _enc_timestamptz(v: Any) -> bytes:
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        return _I64.pack(_micros(v - _PG_EPOCH_TZ))
    return _enc_timestamp(v)


def _enc_date(v: Any) -> bytes:
    if isinstance(v, dt.datetime):
        v = v.date()
    return _I32.pack((v - _PG_EPOCH_DATE).days)


def _enc_time(v: Any) -> bytes:
    return _I64.pack(((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond)


def _enc_interval(v: Any) -> bytes:
    total = _micros(v)
    days, us = divmod(abs(total), 86_400_000_000)
    if total < 0:
        days, us = -days, -us
    return _INTERVAL.pack(us, days, 0)


def _enc_uuid(v: Any) -> bytes:
    return v.bytes if isinstance(v, uuid.UUID) else uuid.UUID(str(v)).bytes


def _enc_text(v: Any) -> bytes:
    return (v if isinstance(v, str) else format_any(v)).encode("utf-8")


def _enc_bytea(v: Any) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)


def _enc_json(v: Any) -> bytes:
    return format_json(v).encode("utf-8")


def _enc_char(v: Any) -> bytes:
    return str(v).encode("utf-8")[:1]


_BINARY: dict[str, Encoder] = {
    "bool": lambda v: b"\x01" if v else b"\x00",
    "int2": lambda v: _I16.pack(int(v)),
    "int4": lambda v: _I32.pack(int(v)),
    "int8": lambda v: _I64.pack(int(v)),
    "oid": lambda v: _U32.pack(int(v)),
    "xid": lambda v: _U32.pack(int(v)),
    "cid": lambda v: _U32.pack(int(v)),
    "regproc": lambda v: _U32.pack(int(v)),
    "regclass": lambda v: _U32.pack(int(v)),
    "regtype": lambda v: _U32.pack(int(v)),
    "regnamespace": lambda v: _U32.pack(int(v)),
    "regrole": lambda v: _U32.pack(int(v)),
    "float4": lambda v: _F32.pack(float(v)),
    "float8": lambda v: _F64.pack(float(v)),
    "numeric": encode_numeric_binary,
    "text": _enc_text,
    "varchar": _enc_text,
    "bpchar": _enc_text,
    "name": _enc_text,
    "unknown": _enc_text,
    "xml": _enc_text,
    "json": _enc_json,
    "jsonb": lambda v: b"\x01" + _enc_json(v),
    "bytea": _enc_bytea,
    "char": _enc_char,
    "date": _enc_date,
    "time": _enc_time,
    "timestamp": _enc_timestamp,
    "timestamptz": _enc_timestamptz,
    "interval": _enc_interval,
    "uuid": _enc_uuid,
}


def _array_binary(t: PgType, elem_enc: Encoder) -> Encoder:
    def enc(v: Any) -> bytes:
        items = list(v)
        has_null = any(x is None for x in items)
        parts = [struct.pack("!iiI", 1 if items else 0, 1 if has_null else 0, t.elem)]
        if items:
            parts.append(struct.pack("!ii", len(items), 1))
        for x in items:
            if x is None:
                parts.append(_I32.pack(-1))
            else:
                b = elem_enc(x)
                parts.append(_I32.pack(len(b)) + b)
        return b"".join(parts)

    return enc


def _vector_binary(elem_oid: int) -> Encoder:
    pack = _I16.pack if elem_oid == 21 else _U32.pack

    def enc(v: Any) -> bytes:
        items = [int(x) for x in (v.split() if isinstance(v, str) else v)]
        parts = [struct.pack("!iiI", 1 if items else 0, 0, elem_oid)]
        if items:
            parts.append(struct.pack("!ii", len(items), 0))
        size = 2 if elem_oid == 21 else 4
        for x in items:
            parts.append(_I32.pack(size) + pack(x))
        return b"".join(parts)

    return enc


def binary_encoder(t: PgType) -> Encoder:
    """A per-column encoder to PostgreSQL's binary (``*_send``) format; text bytes for types
    without a binary form here (their binary form is the text for text-like types)."""
    if t.elem:
        return _array_binary(t, binary_encoder(TYPES_BY_OID[t.elem]))
    if t.name == "int2vector":
        return _vector_binary(21)
    if t.name == "oidvector":
        return _vector_binary(26)
    return _BINARY.get(t.name, _enc_text)


def has_binary(t: PgType) -> bool:
    """True when :func:`binary_encoder` writes the type's real binary format."""
    if t.elem:
        return has_binary(TYPES_BY_OID[t.elem])
    return t.name in _BINARY or t.name in ("int2vector", "oidvector")


# ---------------------------------------------------------------------------------------------
# Parameter input


def _invalid(type_label: str, text: str, sqlstate: str = "22P02") -> DPSQLError:
    shown = text if len(text) <= 100 else text[:100] + "…"
    return DPSQLError(f'invalid input syntax for type {type_label}: "{shown}"', sqlstate=sqlstate)


def _binary_error() -> DPSQLError:
    return InvalidBinaryRepresentation("incorrect binary data format in bind parameter")


_INT_RANGES = {"int2": (16, "smallint"), "int4": (32, "integer"), "int8": (64, "bigint"), "oid": (33, "oid")}
_BOOL_TRUE = frozenset(("t", "true", "y", "yes", "on", "1", "tr", "tru", "ye"))
_BOOL_FALSE = frozenset(("f", "false", "n", "no", "off", "0", "fa", "fal", "fals", "of"))
_TZ_SUFFIX = re.compile(r"\s*(?:([+-])(\d{1,2})(?::?(\d{2}))?(?::?(\d{2}))?|\s*(Z|UTC|GMT))\s*$", re.I)


def _parse_int(name: str, text: str) -> int:
    bits, label = _INT_RANGES[name]
    try:
        v = int(text.strip())
    except ValueError:
        raise _invalid(label, text) from None
    if name == "oid":
        if not 0 <= v < 2**32:
            raise NumericValueOutOfRange(f'value "{text}" is out of range for type oid')
        return v
    if not -(2 ** (bits - 1)) <= v < 2 ** (bits - 1):
        raise NumericValueOutOfRange(f'value "{text}" is out of range for type {label}')
    return v


def _parse_float(label: str, text: str) -> float:
    t = text.strip().lower()
    special = {"nan": math.nan, "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf, "inf": math.inf,
               "+inf": math.inf, "-inf": -math.inf}
    if t in special:
        return special[t]
    try:
        v = float(t)
    except ValueError:
        raise _invalid(label, text) from None
    if math.isinf(v):
        raise NumericValueOutOfRange(f'"{text}" is out of range for type {label}')
    return v


def _parse_numeric(text: str) -> Decimal:
    t = text.strip()
    low = t.lower()
    if low in ("infinity", "+infinity", "inf", "+inf"):
        return Decimal("Infinity")
    if low in ("-infinity", "-inf"):
        return Decimal("-Infinity")
    try:
        d = Decimal(t)
    except InvalidOperation:
        raise _invalid("numeric", text) from None
    if d.is_snan():
        raise _invalid("numeric", text)
    return d


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in _BOOL_TRUE:
        return True
    if t in _BOOL_FALSE:
        return False
    raise _invalid("boolean", text)


def _split_tz(text: str) -> tuple[str, dt.tzinfo | None]:
    m = _TZ_SUFFIX.search(text)
    if m is None or m.start() < 8:
        return text.strip(), None
    if m.group(5):
        return text[: m.start()].strip(), dt.UTC
    sign = -1 if m.group(1) == "-" else 1
    off = dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0), seconds=int(m.group(4) or 0))
    return text[: m.start()].strip(), dt.timezone(sign * off)


def parse_date(text: str) -> dt.date:
    """A ``date`` parameter (ISO ``YYYY-MM-DD``, optionally followed by a time or zone, as pgjdbc sends)."""
    t = text.strip()
    try:
        return dt.date.fromisoformat(t[:10])
    except ValueError:
        raise _invalid("date", text) from None


def parse_timestamp(text: str, tz: dt.tzinfo | None = None) -> dt.datetime:
    """A ``timestamp``/``timestamptz`` parameter. With ``tz`` (the session zone) the result is aware:
    an explicit offset in the text wins, else the value is read in ``tz``."""
    body, offset = _split_tz(text)
    if body.upper().endswith(" BC"):
        raise _invalid("timestamp", text, "22008")
    try:
        v = dt.datetime.fromisoformat(body.replace("T", " ", 1)) if len(body) > 10 else dt.datetime.fromisoformat(body[:10])
    except ValueError:
        raise _invalid("timestamp with time zone" if tz else "timestamp without time zone", text) from None
    if tz is None:
        return v
    if offset is not None:
        return v.replace(tzinfo=offset)
    if v.tzinfo is None:
        return v.replace(tzinfo=tz)
    return v


def parse_time(text: str) -> dt.time:
    """A ``time`` parameter."""
    body, _ = _split_tz(text) if len(text.strip()) > 8 else (text.strip(), None)
    try:
        return dt.time.fromisoformat(body)
    except ValueError:
        raise _invalid("time without time zone", text) from None


_INTERVAL_PART = re.compile(
    r"([+-]?\d+(?:\.\d+)?)\s*(years?|y|mons?|months?|mon|weeks?|w|days?|d|hours?|h|minutes?|mins?|m|seconds?|secs?|s)\b", re.I
)
_INTERVAL_TIME = re.compile(r"([+-])?(\d+):(\d{1,2})(?::(\d{1,2}(?:\.\d+)?))?")
_UNIT_SECONDS = {"y": 365.25 * 86400, "mo": 30 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "mi": 60, "s": 1}


def parse_interval(text: str) -> dt.timedelta:
    """An ``interval`` parameter in PostgreSQL's verbose or ``HH:MM:SS`` form (months count 30 days)."""
    t = text.strip()
    if t.upper().startswith("P"):
        raise _invalid("interval", text)
    total = 0.0
    rest = t
    for m in _INTERVAL_PART.finditer(t):
        unit = m.group(2).lower()
        key = "mo" if unit.startswith("mon") else "mi" if unit.startswith("min") or unit == "m" else unit[0]
        total += float(m.group(1)) * _UNIT_SECONDS[key]
        rest = rest.replace(m.group(0), " ", 1)
    tm = _INTERVAL_TIME.search(rest)
    if tm:
        secs = int(tm.group(2)) * 3600 + int(tm.group(3)) * 60 + float(tm.group(4) or 0)
        total += -secs if tm.group(1) == "-" else secs
        rest = rest.replace(tm.group(0), " ", 1)
    rest = rest.replace("ago", "").strip()
    if rest:
        try:
            total += float(rest)  # a bare number is seconds
        except ValueError:
            raise _invalid("interval", text) from None
    if t.endswith("ago"):
        total = -total
    return dt.timedelta(seconds=total)


def parse_bytea(text: str) -> bytes:
    """A ``bytea`` parameter in hex (``\\x…``) or escape format."""
    if text.startswith("\\x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise _invalid("bytea", text) from None
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if text[i + 1 : i + 2] == "\\":
                out.append(92)
                i += 2
                continue
            octal = text[i + 1 : i + 4]
            if len(octal) == 3 and all(ch in "01234567" for ch in octal):
                out.append(int(octal, 8))
                i += 4
                continue
            raise _invalid("bytea", text)
        out += c.encode("utf-8")
        i += 1
    return bytes(out)


def parse_array(text: str, elem: Callable[[str], Any]) -> list[Any]:
    """A one-dimensional array literal ``{a,"b c",NULL}``."""
    t = text.strip()
    if t.startswith("[") and "=" in t:
        t = t[t.index("=") + 1 :].strip()
    if not (t.startswith("{") and t.endswith("}")):
        raise _invalid("array", text)
    body = t[1:-1]
    out: list[Any] = []
    i = 0
    n = len(body)
    if not body.strip():
        return out
    while i <= n:
        while i < n and body[i].isspace():
            i += 1
        if i < n and body[i] == '"':
            i += 1
            buf = []
            while i < n and body[i] != '"':
                if body[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(body[i])
                i += 1
            i += 1
            out.append(elem("".join(buf)))
            while i < n and body[i] != ",":
                i += 1
        elif i < n and body[i] == "{":
            raise UnsupportedQuery("multidimensional array parameters are not supported")
        else:
            j = body.find(",", i)
            j = n if j < 0 else j
            item = body[i:j].strip()
            out.append(None if item.upper() == "NULL" else elem(item))
            i = j
        i += 1
    return out


def text_parser(oid: int, tz: dt.tzinfo = dt.UTC) -> Callable[[str], Any]:
    """A function reading the text form of a parameter of type ``oid`` (unknown OIDs read as text)."""
    t = TYPES_BY_OID.get(oid)
    if t is None:
        return str
    if t.elem:
        ep = text_parser(t.elem, tz)
        return lambda s: parse_array(s, ep)
    n = t.name
    if n in _INT_RANGES:
        return lambda s: _parse_int(n, s)
    if n in ("regclass", "regtype", "regproc", "regnamespace", "regrole", "xid", "cid"):
        return lambda s: int(s) if s.strip().isdigit() else s
    if n == "float8":
        return lambda s: _parse_float("double precision", s)
    if n == "float4":
        return lambda s: _parse_float("real", s)
    if n == "numeric":
        return _parse_numeric
    if n == "bool":
        return _parse_bool
    if n == "date":
        return parse_date
    if n == "timestamp":
        return lambda s: parse_timestamp(s).replace(tzinfo=None)
    if n == "timestamptz":
        return lambda s: parse_timestamp(s, tz)
    if n == "time":
        return parse_time
    if n == "interval":
        return parse_interval
    if n == "bytea":
        return parse_bytea
    if n == "uuid":
        def _uuid(s: str) -> uuid.UUID:
            try:
                return uuid.UUID(s.strip())
            except ValueError:
                raise _invalid("uuid", s) from None
        return _uuid
    return str


def _fixed(fmt: struct.Struct, data: bytes) -> Any:
    if len(data) != fmt.size:
        raise _binary_error()
    return fmt.unpack(data)[0]


def _dec_interval(data: bytes) -> dt.timedelta:
    if len(data) != 16:
        raise _binary_error()
    us, days, months = _INTERVAL.unpack(data)
    return dt.timedelta(days=days + 30 * months, microseconds=us)


def _dec_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CharacterNotInRepertoire('invalid byte sequence for encoding "UTF8"') from None


def _dec_array(elem_dec: Callable[[bytes], Any]) -> Callable[[bytes], list[Any]]:
    def dec(data: bytes) -> list[Any]:
        if len(data) < 12:
            raise _binary_error()
        ndim, _flags, _elem = struct.unpack_from("!iiI", data)
        if ndim == 0:
            return []
        if ndim != 1 or len(data) < 20:
            raise UnsupportedQuery("multidimensional array parameters are not supported")
        count, _lb = struct.unpack_from("!ii", data, 12)
        pos = 20
        out: list[Any] = []
        for _ in range(count):
            if pos + 4 > len(data):
                raise _binary_error()
            (n,) = _I32.unpack_from(data, pos)
            pos += 4
            if n == -1:
                out.append(None)
                continue
            if n < 0 or pos + n > len(data):
                raise _binary_error()
            out.append(elem_dec(data[pos : pos + n]))
            pos += n
        if pos != len(data):
            raise _binary_error()
        return out

    return dec


def binary_parser(oid: int) -> Callable[[bytes], Any]:
    """A function reading the binary form of a parameter of type ``oid``; unknown OIDs are refused."""
    t = TYPES_BY_OID.get(oid)
    if t is None or oid == UNKNOWN_OID:
        return _dec_text
    if t.elem:
        return _dec_array(binary_parser(t.elem))
    n = t.name
    simple: dict[str, Callable[[bytes], Any]] = {
        "bool": lambda d: _fixed(struct.Struct("!?"), d),
        "int2": lambda d: _fixed(_I16, d),
        "int4": lambda d: _fixed(_I32, d),
        "int8": lambda d: _fixed(_I64, d),
        "oid": lambda d: _fixed(_U32, d),
        "regclass": lambda d: _fixed(_U32, d),
        "regtype": lambda d: _fixed(_U32, d),
        "regproc": lambda d: _fixed(_U32, d),
        "regnamespace": lambda d: _fixed(_U32, d),
        "float4": lambda d: _fixed(_F32, d),
        "float8": lambda d: _fixed(_F64, d),
        "numeric": decode_numeric_binary,
        "date": lambda d: _PG_EPOCH_DATE + dt.timedelta(days=_fixed(_I32, d)),
        "time": lambda d: (dt.datetime.min + dt.timedelta(microseconds=_fixed(_I64, d))).time(),
        "timestamp": lambda d: _PG_EPOCH + dt.timedelta(microseconds=_fixed(_I64, d)),
        "timestamptz": lambda d: _PG_EPOCH_TZ + dt.timedelta(microseconds=_fixed(_I64, d)),
        "interval": _dec_interval,
        "uuid": lambda d: uuid.UUID(bytes=d) if len(d) == 16 else _raise(_binary_error()),
        "bytea": bytes,
        "jsonb": lambda d: _dec_text(d[1:]) if d[:1] == b"\x01" else _raise(_binary_error()),
        "char": _dec_text,
    }
    dec = simple.get(n)
    if dec is not None:
        return dec
    return _dec_text


def _raise(e: Exception) -> Any:
    raise e


def decode_param(data: bytes | None, oid: int, fmt: int, tz: dt.tzinfo = dt.UTC) -> Any:
    """One Bind parameter as a Python value (None for SQL NULL)."""
    if data is None:
        return None
    if fmt == 1:
        try:
            return binary_parser(oid)(data)
        except (struct.error, OverflowError, ValueError):
            raise _binary_error() from None
    text = _dec_text(data)
    if "\0" in text:
        raise CharacterNotInRepertoire('invalid byte sequence for encoding "UTF8": 0x00')
    return text_parser(oid, tz)(text)


def zone(name: str) -> dt.tzinfo | None:
    """The tzinfo for a TimeZone setting (IANA name, ``UTC``, or a POSIX-style offset), or None."""
    n = name.strip().strip("'")
    if n.upper() in ("UTC", "GMT", "Z", "ETC/UTC", "UCT", "ZULU", "UNIVERSAL"):
        return dt.UTC
    m = re.fullmatch(r"(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?", n, re.I)
    if m:
        # POSIX offsets (``SET TIME ZONE '-02'`` style, sign as in ISO 8601) and numeric hours.
        off = dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
        return dt.timezone(-off if m.group(1) == "-" else off)
    try:
        return ZoneInfo(n)
    except (ValueError, KeyError, OSError):
        pass
    try:
        hours = float(n)
    except ValueError:
        return None
    return dt.timezone(dt.timedelta(hours=hours))
