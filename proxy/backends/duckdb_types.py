"""DuckDB type names → PostgreSQL type names (``pg_type.typname``).

Unsigned and extra-wide integers widen to the next PostgreSQL type that holds every value
(UTINYINT/USMALLINT → int4, UINTEGER → int8, UBIGINT/HUGEINT → numeric), so a client never
sees a value overflow its declared type. Nested types (STRUCT, MAP, UNION) are shown as text.
"""

from __future__ import annotations

import re

_SCALAR: dict[str, str] = {
    "BOOLEAN": "bool",
    "TINYINT": "int2",
    "SMALLINT": "int2",
    "INTEGER": "int4",
    "BIGINT": "int8",
    "HUGEINT": "numeric",
    "UTINYINT": "int4",
    "USMALLINT": "int4",
    "UINTEGER": "int8",
    "UBIGINT": "numeric",
    "UHUGEINT": "numeric",
    "BIGNUM": "numeric",
    "VARINT": "numeric",
    "DECIMAL": "numeric",
    "FLOAT": "float4",
    "DOUBLE": "float8",
    "VARCHAR": "text",
    "ENUM": "text",
    "JSON": "json",
    "BLOB": "bytea",
    "BIT": "varbit",
    "UUID": "uuid",
    "DATE": "date",
    "TIME": "time",
    "TIME WITH TIME ZONE": "timetz",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP_S": "timestamp",
    "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_NS": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "INTERVAL": "interval",
    '"NULL"': "text",
    "NULL": "text",
}

_ARRAY = re.compile(r"^(.*)\[\d*\]$", re.DOTALL)
_PARAMS = re.compile(r"^([A-Z_ ]+?)\s*\(.*\)$", re.DOTALL)


def pg_type_name(duckdb_type: str) -> str:
    """The PostgreSQL type name for a DuckDB type as printed by DuckDB (``str(DuckDBPyType)``
    or ``duckdb_columns().data_type``); ``text`` for anything without a closer match.

    Arrays map to PostgreSQL array types (``INTEGER[]`` → ``_int4``) when their element is a
    scalar, else to ``text``.
    """
    t = duckdb_type.strip().upper()
    if (m := _ARRAY.match(t)) is not None:
        inner = m.group(1).strip()
        if _ARRAY.match(inner) is None and _base(inner) in _SCALAR:
            return "_" + _SCALAR[_base(inner)]
        return "text"
    return _SCALAR.get(_base(t), "text")


def _base(t: str) -> str:
    """``DECIMAL(18,3)`` → ``DECIMAL``; ``ENUM('a', 'b')`` → ``ENUM``; others unchanged."""
    m = _PARAMS.match(t)
    return m.group(1).strip() if m is not None else t
