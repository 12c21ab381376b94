"""Exact, safe encoding of a released answer for the replay store: tagged JSON, zlib-compressed.

A replayed answer must be byte-identical on the wire to the first one, so every value round-trips
to an equal value of the same Python type (floats through ``repr``, which is exact; -0.0, NaN and
±inf included). No pickle: the ledger is data, and decoding it never runs code. A value of a type
this codec does not know makes :func:`encode` raise :class:`Unencodable` (the answer is then not
stored, and the next identical query is charged).

>>> import datetime, decimal
>>> rows = [("a", 1, 2.5, None, True), (decimal.Decimal("1.50"), datetime.date(2024, 1, 31), -0.0, b"\\x00", [1, "x"])]
>>> decode(encode({"rows": rows}))["rows"] == [list(r) for r in rows]
True
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
import zlib
from decimal import Decimal
from typing import Any


class Unencodable(ValueError):
    """A value of a type the replay codec cannot store exactly."""


def _enc(v: Any) -> Any:
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return ["f", repr(v)]
    if isinstance(v, Decimal):
        return ["d", str(v)]
    if isinstance(v, _dt.datetime):
        return ["T", v.isoformat()]
    if isinstance(v, _dt.date):
        return ["D", v.isoformat()]
    if isinstance(v, _dt.time):
        return ["t", v.isoformat()]
    if isinstance(v, _dt.timedelta):
        return ["i", v.days, v.seconds, v.microseconds]
    if isinstance(v, uuid.UUID):
        return ["u", str(v)]
    if isinstance(v, bytes | bytearray | memoryview):
        return ["x", bytes(v).hex()]
    if isinstance(v, list | tuple):
        return ["l", [_enc(x) for x in v]]
    if isinstance(v, dict):
        return ["m", [[_enc(k), _enc(x)] for k, x in v.items()]]
    raise Unencodable(type(v).__name__)


def _dec(v: Any) -> Any:
    if not isinstance(v, list):
        return v
    tag = v[0]
    if tag == "f":
        return float(v[1])
    if tag == "d":
        return Decimal(v[1])
    if tag == "T":
        return _dt.datetime.fromisoformat(v[1])
    if tag == "D":
        return _dt.date.fromisoformat(v[1])
    if tag == "t":
        return _dt.time.fromisoformat(v[1])
    if tag == "i":
        return _dt.timedelta(days=v[1], seconds=v[2], microseconds=v[3])
    if tag == "u":
        return uuid.UUID(v[1])
    if tag == "x":
        return bytes.fromhex(v[1])
    if tag == "l":
        return [_dec(x) for x in v[1]]
    if tag == "m":
        return {_dec(k): _dec(x) for k, x in v[1]}
    raise ValueError(f"unknown tag {tag!r}")


def encode(doc: dict[str, Any]) -> bytes:
    """``doc`` (str keys; values of the supported types, nested in lists/dicts) as compressed bytes."""
    text = json.dumps({k: _enc(v) for k, v in doc.items()}, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return zlib.compress(text.encode(), 6)


def decode(data: bytes) -> dict[str, Any]:
    """The document :func:`encode` made (tuples come back as lists). ValueError if ``data`` is not one."""
    try:
        raw = json.loads(zlib.decompress(data).decode())
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError("not a stored replay answer") from e
    if not isinstance(raw, dict):
        raise ValueError("not a stored replay answer")
    try:
        return {k: _dec(v) for k, v in raw.items()}
    except (TypeError, IndexError, KeyError) as e:
        raise ValueError("not a stored replay answer") from e
