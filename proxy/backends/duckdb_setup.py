"""Opening the locked-down DuckDB database that a :class:`DuckDBBackend` serves (R29).

The served database is an in-memory DuckDB whose ``main`` schema (and any other policy schema)
holds exactly one object per policy table:

* a view over the source file's table, which is ATTACHed ``READ_ONLY`` as ``dpsql_source``;
* a view over ``read_parquet(...)`` for a Parquet-mapped table;
* a table loaded once from ``read_csv(...)`` for a CSV-mapped table (measured at 1M rows, 46 MB:
  each query over a ``read_csv`` view re-parses the file, 85 ms, against 9.5 ms over the
  loaded table, which took 125 ms to load once; the load also fixes the sniffed types).

Because every session's cursor shares the in-memory catalog, ``visits`` and ``main.visits``
resolve for every session without a per-cursor ``USE``. The policy's logical schema ``public``
is DuckDB's ``main``; a ``public`` schema of views onto ``main`` makes ``public.visits`` (as
SQL generated with PostgreSQL's schema names says) resolve too. After the objects exist the connection is locked: no extension can be
installed, loaded or auto-loaded, no file other than the mapped Parquet files can be read,
nothing can be written, and no setting can change. Spilled intermediate results go to a
private temporary directory (mode 0700) that :meth:`LockedDatabase.close` removes.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from dpsql.errors import PolicyError
from dpsql.policy import Policy, TablePolicy
from dpsql.proxy.backends.duckdb_types import pg_type_name

SOURCE_CATALOG = "dpsql_source"


@dataclass
class LockedDatabase:
    """An open, locked in-memory DuckDB with one object per policy table, and what it holds."""

    connection: duckdb.DuckDBPyConnection
    described: dict[str, list[tuple[str, str]]]
    spill_dir: Path
    unique: dict[str, frozenset[str]] = field(default_factory=dict)  # one-column PK/UNIQUE per policy table

    def close(self) -> None:
        """Close the connection and delete the spill directory; idempotent. A statement that was
        abandoned past its interrupt (see :mod:`~dpsql.proxy.backends.duckdb`) may still hold the
        database busy: then DuckDB frees it when that statement's cursor closes."""
        try:
            with contextlib.suppress(duckdb.Error):
                self.connection.close()
        finally:
            shutil.rmtree(self.spill_dir, ignore_errors=True)


def duckdb_schema(logical_schema: str) -> str:
    """The DuckDB schema holding a policy schema's tables (``public`` → ``main``)."""
    return "main" if logical_schema == "public" else logical_schema


def open_locked(policy: Policy, database: Path | None = None) -> LockedDatabase:
    """Open and lock the database serving ``policy``.

    ``database`` overrides ``[source] duckdb``. Raises PolicyError (naming the policy key) when
    the database file or a mapped file is missing or unreadable, or when a policy table is
    not in the source. Never creates or modifies a database file.
    """
    fname = str(policy.file)
    path = database if database is not None else policy.source.duckdb
    if path is not None and not Path(path).is_file():
        raise PolicyError(fname, "source.duckdb", f"the database file {path} does not exist")
    if path is None and policy.source.postgres is not None:
        raise PolicyError(fname, "source.postgres", "names a PostgreSQL source, which the DuckDB backend cannot serve")
    for tp in policy.tables.values():
        if tp.file is not None and not tp.file.is_file():
            raise PolicyError(fname, f"tables.{tp.name}.file", f"the file {tp.file} does not exist")

    spill_dir = Path(tempfile.mkdtemp(prefix="dpsql-spill-"))
    con = duckdb.connect(
        ":memory:",
        config={
            "threads": policy.limits.threads,
            "memory_limit": policy.limits.memory_limit,
            "temp_directory": str(spill_dir),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "allow_unsigned_extensions": False,
        },
    )
    db = LockedDatabase(connection=con, described={}, spill_dir=spill_dir)
    try:
        if path is not None:
            _attach(con, Path(path), fname)
        source = _source_tables(con) if path is not None else {}
        allowed = _create_objects(con, policy, path, source)
        if allowed:
            con.execute(f"SET allowed_paths = [{', '.join(_literal(p) for p in allowed)}]")
        con.execute("SET enable_external_access = false")
        # DuckDB rewrites the bounded SQL's "ROW_NUMBER() … <= max_groups" into a top-N hash
        # aggregate that is 1.3–2.6x slower than the window at 1M units (docs/benchmarks.md).
        con.execute("SET disabled_optimizers = 'top_n_window_elimination'")
        con.execute("SET lock_configuration = true")
        db.described = _describe(con, policy)
        if path is not None:
            db.unique = _unique_columns(con, policy, source)
    except BaseException:
        db.close()
        raise
    return db


def _attach(con: duckdb.DuckDBPyConnection, path: Path, fname: str) -> None:
    failed = False
    try:
        con.execute(f"ATTACH {_literal(str(path.resolve()))} AS {SOURCE_CATALOG} (READ_ONLY)")
    except duckdb.Error:
        failed = True
    if failed:
        raise PolicyError(fname, "source.duckdb", f"{path} cannot be opened read-only as a DuckDB database")


def _create_objects(
    con: duckdb.DuckDBPyConnection, policy: Policy, path: Path | None, source: dict[tuple[str, str], tuple[str, str]]
) -> list[str]:
    """Create one view or table per policy table; return the files queries must still read."""
    fname = str(policy.file)
    allowed: list[str] = []
    made: dict[tuple[str, str], str] = {}
    for tp in policy.tables.values():
        schema = duckdb_schema(tp.schema)
        key = f"tables.{tp.name}"
        for alias in {schema, tp.schema}:  # a public table is also reachable as public.t
            if (alias, tp.table) in made:
                raise PolicyError(fname, key, f"is the same DuckDB table as tables.{made[alias, tp.table]}")
            made[alias, tp.table] = tp.name
        if schema != "main":
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(schema)}")
        target = f"{_ident(schema)}.{_ident(tp.table)}"
        if tp.file is not None:
            allowed.extend(_map_file(con, tp, target, fname))
            continue
        found = _find_source(source, tp)
        if found is None:
            where = f"the database {path}" if path is not None else "the data source (no [source] duckdb)"
            raise PolicyError(fname, key, f"table {tp.qualified} is not in {where}")
        origin = f"{SOURCE_CATALOG}.{_ident(found[0])}.{_ident(found[1])}"
        con.execute(f"CREATE VIEW {target} AS SELECT * FROM {origin}")
    _alias_public(con, [tp for tp in policy.tables.values() if tp.schema == "public"])
    return allowed


def _alias_public(con: duckdb.DuckDBPyConnection, tables: list[TablePolicy]) -> None:
    """Make ``public.t`` name the same object as ``main.t``, so SQL written for PostgreSQL's
    schema names (``"public"."visits"``) runs unchanged."""
    if tables:
        con.execute("CREATE SCHEMA IF NOT EXISTS public")
    for tp in tables:
        con.execute(f"CREATE VIEW public.{_ident(tp.table)} AS SELECT * FROM main.{_ident(tp.table)}")


def _map_file(con: duckdb.DuckDBPyConnection, tp: TablePolicy, target: str, fname: str) -> list[str]:
    """Create the object for a file-mapped table; return the path if queries read it later."""
    assert tp.file is not None
    file = str(tp.file.resolve())
    parquet = tp.file.suffix.lower() == ".parquet"
    sql = (
        f"CREATE VIEW {target} AS SELECT * FROM read_parquet({_literal(file)})"
        if parquet
        else f"CREATE TABLE {target} AS SELECT * FROM read_csv({_literal(file)})"
    )
    failed = False
    try:
        con.execute(sql)
    except duckdb.Error:
        failed = True
    if failed:
        kind = "Parquet" if parquet else "CSV"
        raise PolicyError(fname, f"tables.{tp.name}.file", f"{tp.file} cannot be read as a {kind} file")
    return [file] if parquet else []


def _source_tables(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], tuple[str, str]]:
    """Tables and views of the attached source, keyed by lower-case (schema, name)."""
    rows = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? "
        "UNION ALL SELECT schema_name, view_name FROM duckdb_views() "
        "WHERE database_name = ? AND NOT internal",
        [SOURCE_CATALOG, SOURCE_CATALOG],
    ).fetchall()
    return {(s.lower(), t.lower()): (s, t) for s, t in rows}


def _find_source(source: dict[tuple[str, str], tuple[str, str]], tp: TablePolicy) -> tuple[str, str] | None:
    schemas = ("main", "public") if tp.schema == "public" else (tp.schema,)
    for s in schemas:
        if (s, tp.table) in source:
            return source[s, tp.table]
    return None


def _describe(con: duckdb.DuckDBPyConnection, policy: Policy) -> dict[str, list[tuple[str, str]]]:
    """Columns of the served objects with PostgreSQL types, keyed like ``policy.tables``."""
    rows = con.execute(
        "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = current_database() ORDER BY schema_name, table_name, column_index"
    ).fetchall()
    by_object: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for schema, table, column, dtype in rows:
        cols = by_object.setdefault((schema.lower(), table.lower()), [])
        cols.append((column.lower(), pg_type_name(dtype)))
    return {q: by_object.get((duckdb_schema(tp.schema), tp.table), []) for q, tp in policy.tables.items()}


def _unique_columns(
    con: duckdb.DuckDBPyConnection, policy: Policy, source: dict[tuple[str, str], tuple[str, str]]
) -> dict[str, frozenset[str]]:
    """One-column PRIMARY KEY and UNIQUE constraints that DuckDB enforces on the attached source's
    tables (metadata only), keyed like ``policy.tables``. Views and file-mapped tables have none."""
    rows = con.execute(
        "SELECT schema_name, table_name, constraint_column_names FROM duckdb_constraints() "
        "WHERE database_name = ? AND constraint_type IN ('PRIMARY KEY', 'UNIQUE') AND len(constraint_column_names) = 1",
        [SOURCE_CATALOG],
    ).fetchall()
    by_table: dict[tuple[str, str], set[str]] = {}
    for schema, table, cols in rows:
        by_table.setdefault((schema.lower(), table.lower()), set()).add(cols[0].lower())
    out: dict[str, frozenset[str]] = {}
    for q, tp in policy.tables.items():
        found = None if tp.file is not None else _find_source(source, tp)
        if found is not None and (found[0].lower(), found[1].lower()) in by_table:
            out[q] = frozenset(by_table[found[0].lower(), found[1].lower()])
    return out


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
