"""Read the schema of the policy's tables from the caller's engine (metadata only, no rows).

The pipeline needs each policy table's columns with PostgreSQL type names (``pg_type.typname``:
``int8``, ``float8``, ``numeric``, ``text``, ``date`` …), the form :func:`dpsql.schema.build_catalog`
takes. These helpers read it over a DB-API connection the caller owns.
"""

from __future__ import annotations

from typing import Any

from dpsql.policy import Policy
from dpsql.proxy.backends.duckdb_types import pg_type_name


def describe_duckdb(connection: Any, policy: Policy) -> dict[str, list[tuple[str, str]]]:
    """Columns of every policy table in a DuckDB connection (``public`` is DuckDB's ``main``),
    DuckDB types mapped to PostgreSQL's as dpsql's DuckDB backend maps them."""
    out: dict[str, list[tuple[str, str]]] = {}
    for qualified, table in policy.tables.items():
        schema = "main" if table.schema == "public" else table.schema
        rows = connection.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? ORDER BY column_index",
            [schema, table.table],
        ).fetchall()
        out[qualified] = [(name, pg_type_name(dtype)) for name, dtype in rows]
    return out


_PG_COLUMNS = (
    "SELECT a.attname, CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END "
    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
    "LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype "
    "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)


def describe_postgres(connection: Any, policy: Policy) -> dict[str, list[tuple[str, str]]]:
    """Columns of every policy table over a PostgreSQL DB-API connection using ``%s`` parameters
    (psycopg 3, psycopg2), with ``pg_type.typname`` (a domain as its base type)."""
    out: dict[str, list[tuple[str, str]]] = {}
    cur = connection.cursor()
    try:
        for qualified, table in policy.tables.items():
            cur.execute(_PG_COLUMNS, (table.schema, table.table))
            out[qualified] = [(str(name), str(typ)) for name, typ in cur.fetchall()]
    finally:
        cur.close()
    return out
