"""PostgreSQL type names for the columns of a shadow result.

DuckDB reports storage types (``BIGINT``, ``VARCHAR``); PostgreSQL reports ``oid``, ``name``,
``"char"``… for catalog columns. A result column whose name is a catalog column name with one
PostgreSQL type everywhere (``oid``, ``relname``, ``relkind``…) and whose DuckDB type matches that
type's storage gets the PostgreSQL type; any other column gets the plain mapping of its DuckDB type.

>>> result_types(("oid", "relname", "relkind", "n", "x"), ("UINTEGER", "VARCHAR", "ENUM('r', 'v')", "BIGINT", "UINTEGER"))
('oid', 'name', 'char', 'int8', 'oid')
"""

from __future__ import annotations

from collections.abc import Sequence

from dpsql.proxy.backends.duckdb_types import pg_type_name
from dpsql.proxy.catalog import pg_snapshot as snap
from dpsql.proxy.catalog.pgtypes import CHAR_TYPE, duckdb_type

# Names PostgreSQL gives function results used as probes, with their types.
_FUNCTION_COLUMNS = {
    "current_schema": "name", "current_user": "name", "session_user": "name", "user": "name", "current_role": "name",
    "current_database": "name", "current_catalog": "name", "pg_client_encoding": "name", "pg_encoding_to_char": "name",
    "pg_get_userbyid": "name", "current_schemas": "_name", "pg_backend_pid": "int4", "current_setting": "text",
    "set_config": "text", "version": "text", "format_type": "text", "quote_ident": "text",
}


def _build() -> dict[str, str]:
    seen: dict[str, set[str]] = {}
    for cols in snap.RELATION_COLUMNS.values():
        for name, pg in cols:
            seen.setdefault(name, set()).add(pg)
    out = {name: next(iter(types)) for name, types in seen.items() if len(types) == 1}
    return out | _FUNCTION_COLUMNS


_BY_COLUMN = _build()


def plain_type(duck: str) -> str:
    """The PostgreSQL type of a DuckDB result type; the shadow's UINTEGER is ``oid`` and its ENUM ``"char"``."""
    if duck.startswith(("ENUM(", CHAR_TYPE)):
        return "_char" if duck.endswith("[]") else "char"
    if duck.startswith("UINTEGER"):
        return "_oid" if duck.endswith("[]") else "oid"
    return pg_type_name(duck)


def result_types(columns: Sequence[str], duck_types: Sequence[str], sources: Sequence[str] | None = None) -> tuple[str, ...]:
    """PostgreSQL type names for result columns given their names (or ``sources``: the column or function each
    output shows, from the rewrite) and DuckDB types."""
    names = sources if sources is not None and len(sources) == len(columns) else columns
    out = []
    for name, duck in zip(names, duck_types, strict=True):
        plain = plain_type(duck)
        pg = _BY_COLUMN.get(name)
        out.append(pg if pg is not None and plain_type(duckdb_type(pg)) == plain else plain)
    return tuple(out)
