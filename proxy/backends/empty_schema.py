"""An empty copy of the data source's schema, used to bind SQL before a query is charged.

The shadow is an in-memory DuckDB with the policy tables' columns and types and **no rows**, so
planning a query on it can fail only because of the query text (an ill-typed expression, an
unknown function), never because of data: its error messages are safe to show, and a query that
would fail to bind is refused before any budget is spent.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import duckdb

from dpsql.errors import DatatypeMismatch

_DUCK_TYPES = {
    "int2": "SMALLINT",
    "int4": "INTEGER",
    "int8": "BIGINT",
    "float4": "FLOAT",
    "float8": "DOUBLE",
    "numeric": "DECIMAL(38, 10)",
    "text": "VARCHAR",
    "varchar": "VARCHAR",
    "bpchar": "VARCHAR",
    "name": "VARCHAR",
    "bool": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    "time": "TIME",
    "interval": "INTERVAL",
    "bytea": "BLOB",
    "uuid": "UUID",
}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class EmptyShadow:
    """The policy tables with their columns and no rows; :meth:`check` binds a query against them."""

    def __init__(self, described: Mapping[str, Sequence[tuple[str, str]]]) -> None:
        self._con = duckdb.connect(":memory:", config={"threads": 1, "enable_external_access": False,
                                                       "autoload_known_extensions": False, "autoinstall_known_extensions": False})
        for qualified, columns in described.items():
            schema, table = qualified.split(".", 1)
            schema = "main" if schema == "public" else schema
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(schema)}")
            cols = ", ".join(f"{_ident(c)} {_DUCK_TYPES.get(t, 'VARCHAR')}" for c, t in columns) or '"__empty" INTEGER'
            self._con.execute(f"CREATE TABLE {_ident(schema)}.{_ident(table)} ({cols})")
        self._con.execute("SET lock_configuration = true")
        self._lock = threading.Lock()

    def check(self, sql: str) -> None:
        """Plan ``sql`` without data; raise DatatypeMismatch (42804) with the binder's message if it fails."""
        with self._lock:
            try:
                self._con.execute("EXPLAIN " + sql).fetchall()
            except duckdb.Error as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise DatatypeMismatch(
                    f"the query does not type-check: {first}",
                    hint="check the types of the values compared or combined (no budget was spent)",
                ) from None

    def close(self) -> None:
        """Release the shadow database."""
        self._con.close()
