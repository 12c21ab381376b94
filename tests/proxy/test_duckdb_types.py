"""DuckDB → PostgreSQL type names."""

from __future__ import annotations

import pytest

from dpsql.proxy.backends.duckdb_types import pg_type_name


@pytest.mark.parametrize(
    ("duck", "pg"),
    [
        ("INTEGER", "int4"),
        ("BIGINT", "int8"),
        ("HUGEINT", "numeric"),
        ("SMALLINT", "int2"),
        ("TINYINT", "int2"),
        ("UTINYINT", "int4"),
        ("USMALLINT", "int4"),
        ("UINTEGER", "int8"),
        ("UBIGINT", "numeric"),
        ("UHUGEINT", "numeric"),
        ("BIGNUM", "numeric"),
        ("DOUBLE", "float8"),
        ("FLOAT", "float4"),
        ("DECIMAL(18,3)", "numeric"),
        ("DECIMAL(38, 10)", "numeric"),
        ("VARCHAR", "text"),
        ("VARCHAR(10)", "text"),
        ("ENUM('a', 'b')", "text"),
        ("BOOLEAN", "bool"),
        ("DATE", "date"),
        ("TIME", "time"),
        ("TIME WITH TIME ZONE", "timetz"),
        ("TIMESTAMP", "timestamp"),
        ("TIMESTAMP_NS", "timestamp"),
        ("TIMESTAMP_MS", "timestamp"),
        ("TIMESTAMP_S", "timestamp"),
        ("TIMESTAMP WITH TIME ZONE", "timestamptz"),
        ("INTERVAL", "interval"),
        ("BLOB", "bytea"),
        ("UUID", "uuid"),
        ("JSON", "json"),
        ("BIT", "varbit"),
        ('"NULL"', "text"),
        ("INTEGER[]", "_int4"),
        ("VARCHAR[3]", "_text"),
        ("DECIMAL(10,2)[]", "_numeric"),
        ("INTEGER[][]", "text"),
        ("STRUCT(a INTEGER)", "text"),
        ("STRUCT(a INTEGER[])", "text"),
        ("MAP(VARCHAR, INTEGER)", "text"),
        ("UNION(a INTEGER, b VARCHAR)", "text"),
        ("GEOMETRY", "text"),
        ("integer", "int4"),
    ],
)
def test_pg_type_name(duck: str, pg: str) -> None:
    assert pg_type_name(duck) == pg
