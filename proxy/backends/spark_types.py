"""Spark SQL and Arrow types → PostgreSQL type names (``pg_type.typname``), and Arrow columns → Python values.

Spark's TIMESTAMP is an instant (shown in the session zone, which dpsql pins to UTC): timestamptz;
TIMESTAMP_NTZ is timestamp. Integers keep their width, DECIMAL is numeric (exact
:class:`decimal.Decimal` values), anything nested is shown as text.

>>> import pyarrow as pa                                              # doctest: +SKIP
>>> arrow_pg_type(pa.decimal128(38, 0))                                # doctest: +SKIP
'numeric'
"""

from __future__ import annotations

import datetime as dt
from typing import Any

_SIMPLE = {
    "ByteType": "int2",
    "ShortType": "int2",
    "IntegerType": "int4",
    "LongType": "int8",
    "FloatType": "float4",
    "DoubleType": "float8",
    "DecimalType": "numeric",
    "StringType": "text",
    "VarcharType": "text",
    "CharType": "text",
    "BooleanType": "bool",
    "DateType": "date",
    "TimestampType": "timestamptz",
    "TimestampNTZType": "timestamp",
    "BinaryType": "bytea",
    "DayTimeIntervalType": "interval",
    "YearMonthIntervalType": "interval",
}


def pg_type_of(data_type: Any) -> str:
    """The PostgreSQL type name for a ``pyspark.sql.types.DataType`` (``text`` when there is no closer one)."""
    return _SIMPLE.get(type(data_type).__name__, "text")


def arrow_pg_type(t: Any) -> str:
    """The PostgreSQL type name for a ``pyarrow.DataType`` of a Spark Connect result."""
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_int8(t) or pa.types.is_int16(t):
        return "int2"
    if pa.types.is_int32(t):
        return "int4"
    if pa.types.is_int64(t):
        return "int8"
    if pa.types.is_float32(t):
        return "float4"
    if pa.types.is_floating(t):
        return "float8"
    if pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz is not None else "timestamp"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytea"
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return "interval"
    return "text"


def column_values(column: Any, pg_type: str) -> list[Any]:
    """The Python values of one Arrow column: timestamptz as aware UTC datetimes, text for nested types.

    Total: a column holding a value Python cannot represent (a date beyond year 9999, which Spark
    can compute) comes back as Spark's text of its values instead of failing, so whether the
    result converts cannot depend on the data."""
    try:
        values = column.to_pylist()
    except (ValueError, OverflowError, ArithmeticError):
        import pyarrow as pa

        return [None if v is None else str(v) for v in column.cast(pa.string(), safe=False).to_pylist()]
    if pg_type == "timestamptz":
        return [v if v is None or v.tzinfo is not None else v.replace(tzinfo=dt.UTC) for v in values]
    if pg_type == "text":
        return [v if v is None or isinstance(v, str) else str(v) for v in values]
    return values
