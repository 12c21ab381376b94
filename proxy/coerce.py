"""Make released values match the PostgreSQL types a plan declares.

Engines differ in the types of the same expression (``date_trunc`` of a DATE is ``timestamptz`` on
PostgreSQL, ``extract`` is ``numeric`` there and ``bigint`` on DuckDB, arithmetic over integers is
``numeric`` on PostgreSQL); clients decode by the declared type (Describe happens before Execute),
so every released key is converted to the declared type here. Pure and total: a value that cannot
be converted is returned unchanged.

>>> coerce(Decimal("4"), "int8"), coerce(3, "numeric"), coerce(2.0, "int8")
(4, Decimal('3'), 2)
"""

from __future__ import annotations

import datetime as _dt
from decimal import Decimal
from typing import Any

_INT = {"int2", "int4", "int8"}
_FLOAT = {"float4", "float8"}


def coerce(value: Any, pg_type: str) -> Any:
    """``value`` converted to the Python type that represents ``pg_type`` (None stays None)."""
    if value is None:
        return None
    try:
        if pg_type in _INT:
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, float | Decimal):
                if value != value or value in (float("inf"), float("-inf")):  # NaN/inf stay as they are
                    return value
                return int(value) if value == int(value) else value
            return value
        if pg_type in _FLOAT:
            return float(value) if isinstance(value, int | Decimal) and not isinstance(value, bool) else value
        if pg_type == "numeric":
            if isinstance(value, int) and not isinstance(value, bool):
                return Decimal(value)
            if isinstance(value, float):
                return Decimal(repr(value))
            return value
        if pg_type == "timestamp" and isinstance(value, _dt.datetime) and value.tzinfo is not None:
            return value.astimezone(_dt.UTC).replace(tzinfo=None)
        if pg_type == "timestamptz" and isinstance(value, _dt.datetime) and value.tzinfo is None:
            return value.replace(tzinfo=_dt.UTC)
        if pg_type == "timestamp" and isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
            return _dt.datetime(value.year, value.month, value.day)
        if pg_type == "date" and isinstance(value, _dt.datetime):
            return value.date()
        if pg_type in ("text", "varchar") and not isinstance(value, str):
            return str(value)
    except (ValueError, OverflowError, ArithmeticError):
        return value
    return value
