"""The shadow: an in-memory, locked-down DuckDB holding a synthetic PostgreSQL catalog.

Schema ``dpsql_pg`` holds one table per emulated ``pg_catalog`` relation and ``dpsql_is`` one per
``information_schema`` view, each with PostgreSQL's column names (types stored as the nearest
DuckDB type, see :func:`~dpsql.proxy.catalog.pgtypes.duckdb_type`). Rows describe the policy's
visible tables and columns and PostgreSQL's builtin types; every statistics relation is empty and
every row count is unknown (-1 or NULL), so nothing here is computed from data (R19). Helper
tables ``dpsql_pg.dpsql_*`` back the macros of :mod:`dpsql.proxy.catalog.macros`.

After it is filled the connection is locked: no external access, no extensions, settings frozen.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import duckdb

from dpsql.proxy.backends.watchdog import Watchdog
from dpsql.proxy.catalog import pg_snapshot as snap
from dpsql.proxy.catalog.macros import MACROS
from dpsql.proxy.catalog.objects import OWNER, Objects
from dpsql.proxy.catalog.oids import BOOTSTRAP_ROLE_OID
from dpsql.proxy.catalog.pgtypes import (
    BY_NAME,
    CHAR_TYPE,
    CHAR_VALUES,
    DEFAULT_COLLATION_OID,
    PG_CATALOG_OID,
    duckdb_type,
    information_schema_data_type,
    numeric_facts,
)
from dpsql.proxy.catalog.udfs import register_udfs

PG_SCHEMA = "dpsql_pg"
IS_SCHEMA = "dpsql_is"
DYNAMIC = frozenset({"pg_settings", "pg_stat_activity"})  # rebuilt per statement from SessionInfo
HEAP_AM_OID = 2
DEFAULT_TABLESPACE_OID = 1663
UTF8_ENCODING = 6


def shadow_name(qualified: str) -> str:
    """The shadow table of ``pg_catalog.X`` / ``information_schema.X``, e.g. ``dpsql_pg."pg_class"``."""
    nsp, rel = qualified.split(".", 1)
    return f'{PG_SCHEMA if nsp == "pg_catalog" else IS_SCHEMA}."{rel}"'


class Shadow:
    """The shadow database of one catalog. ``query`` is thread-safe (one DuckDB cursor per thread)."""

    def __init__(self, objects: Objects, *, timeout: float = 10.0) -> None:
        self.objects = objects
        self.timeout = timeout
        self._con = duckdb.connect(
            ":memory:",
            config={
                "threads": 1,
                "memory_limit": "256MB",
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "allow_community_extensions": False,
                "allow_unsigned_extensions": False,
            },
        )
        try:
            _create(self._con)
            _fill(self._con, objects)
            register_udfs(self._con, objects)
            for sql in MACROS:
                self._con.execute(sql)
            self._con.execute("SET enable_external_access = false")
            self._con.execute("SET lock_configuration = true")
        except BaseException:
            self._con.close()
            raise
        self._local = threading.local()
        self._lock = threading.Lock()
        # Close at exit even if nobody calls close(): DuckDB's Python UDFs otherwise report "leaks".
        self._watchdog = Watchdog("dpsql-catalog-watchdog")
        self._finalizer = weakref.finalize(self, _shutdown, self._con, self._watchdog)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self._con.cursor()
            self._local.cursor = cur
        return cur

    def describe(self, sql: str) -> list[tuple[str, str]]:
        """``[(column, duckdb type)]`` of one SELECT, bound but not run. DuckDB errors propagate."""
        rel = self._cursor().sql(sql)
        return [(c, str(t)) for c, t in zip(rel.columns, rel.types, strict=True)]

    def query(self, sql: str) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
        """Run one SELECT; return ``[(column, duckdb type)]`` and the rows. DuckDB errors propagate; a statement
        running longer than ``timeout`` seconds is interrupted (``duckdb.InterruptException``)."""
        cur = self._cursor()
        disarm = self._watchdog.schedule(self.timeout, cur.interrupt)
        try:
            cur.execute(sql)
            desc = cur.description or []
            rows = cur.fetchall()
        finally:
            disarm()
        return [(d[0], str(d[1])) for d in desc], rows

    def close(self) -> None:
        """Close the shadow database."""
        self._finalizer()


def _shutdown(con: duckdb.DuckDBPyConnection, watchdog: Watchdog) -> None:
    watchdog.close()
    con.close()


# ------------------------------------------------------------------------------------------- DDL


def _create(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE SCHEMA {PG_SCHEMA}; CREATE SCHEMA {IS_SCHEMA}")
    chars = ", ".join("'" + c.replace("'", "''") + "'" for c in CHAR_VALUES)
    con.execute(f"CREATE TYPE {CHAR_TYPE} AS ENUM ({chars})")
    ddl = []
    for qualified, cols in snap.RELATION_COLUMNS.items():
        body = ", ".join(f'"{c}" {duckdb_type(t)}' for c, t in cols)
        ddl.append(f"CREATE TABLE {shadow_name(qualified)} ({body})")
    ddl += [
        f"CREATE TABLE {PG_SCHEMA}.dpsql_regclass (oid UINTEGER, nspname VARCHAR, relname VARCHAR)",
        f"CREATE TABLE {PG_SCHEMA}.dpsql_keywords (word VARCHAR, catcode {CHAR_TYPE}, barelabel BOOLEAN, catdesc VARCHAR, "
        "baredesc VARCHAR)",
        f"CREATE TABLE {PG_SCHEMA}.dpsql_settings_meta (name VARCHAR, unit VARCHAR, category VARCHAR, short_desc VARCHAR, "
        "extra_desc VARCHAR, context VARCHAR, vartype VARCHAR, min_val VARCHAR, max_val VARCHAR, enumvals VARCHAR[], boot_val VARCHAR)",
    ]
    con.execute(";\n".join(ddl))


def _insert(con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    rows = list(rows)
    if not rows:
        return
    cols = ", ".join(f'"{c}"' for c in columns)
    # One statement with one list parameter per column: ~15x faster than VALUES or executemany.
    unnest = ", ".join(f"unnest(${i + 1}) AS c{i}" for i in range(len(columns)))
    con.execute(f"INSERT INTO {table} ({cols}) SELECT * FROM (SELECT {unnest})", [list(c) for c in zip(*rows, strict=True)])


def _insert_dicts(con: duckdb.DuckDBPyConnection, qualified: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert rows given as {column: value}; columns not named are NULL."""
    rows = list(rows)
    if rows:
        columns = [c for c, _ in snap.RELATION_COLUMNS[qualified] if any(c in r for r in rows)]
        _insert(con, shadow_name(qualified), columns, ([r.get(c) for c in columns] for r in rows))


# ------------------------------------------------------------------------------------------ rows


def _fill(con: duckdb.DuckDBPyConnection, ob: Objects) -> None:
    _fill_types(con)
    _fill_static(con, ob)
    _fill_tables(con, ob)
    _fill_information_schema(con, ob)


def _fill_types(con: duckdb.DuckDBPyConnection) -> None:
    cols = snap.PG_TYPE_COLUMNS
    full = [dict(zip(cols, r, strict=True)) | {
        "typnamespace": PG_CATALOG_OID, "typowner": BOOTSTRAP_ROLE_OID, "typisdefined": True, "typrelid": 0,
        "typnotnull": False, "typbasetype": 0, "typtypmod": -1, "typndims": 0,
    } for r in snap.PG_TYPE_ROWS]
    _insert_dicts(con, "pg_catalog.pg_type", full)
    rng_cols = ("rngtypid", "rngsubtype", "rngmultitypid", "rngcollation", "rngsubopc", "rngcanonical", "rngsubdiff")
    _insert(con, shadow_name("pg_catalog.pg_range"), rng_cols, snap.PG_RANGE_ROWS)


def _fill_static(con: duckdb.DuckDBPyConnection, ob: Objects) -> None:
    _insert(con, shadow_name("pg_catalog.pg_am"), ("oid", "amname", "amhandler", "amtype"), snap.PG_AM_ROWS)
    _insert(con, f"{PG_SCHEMA}.dpsql_keywords", ("word", "catcode", "barelabel", "catdesc", "baredesc"), snap.KEYWORDS)
    _insert(con, f"{PG_SCHEMA}.dpsql_settings_meta",
            ("name", "unit", "category", "short_desc", "extra_desc", "context", "vartype", "min_val", "max_val", "enumvals", "boot_val"),
            snap.SETTING_ROWS)
    _insert_dicts(con, "pg_catalog.pg_namespace", (
        {"oid": oid, "nspname": name, "nspowner": BOOTSTRAP_ROLE_OID} for name, oid in ob.schemas.items()))
    _insert_dicts(con, "pg_catalog.pg_collation", (
        {"oid": oid, "collname": name, "collnamespace": PG_CATALOG_OID, "collowner": BOOTSTRAP_ROLE_OID, "collprovider": prov,
         "collisdeterministic": True, "collencoding": enc, "collcollate": cc, "collctype": cc}
        for oid, name, prov, enc, cc in ((DEFAULT_COLLATION_OID, "default", "d", -1, None), (950, "C", "c", -1, "C"),
                                         (951, "POSIX", "c", -1, "POSIX"))))
    _insert_dicts(con, "pg_catalog.pg_database", [{
        "oid": ob.database_oid, "datname": ob.database, "datdba": BOOTSTRAP_ROLE_OID, "encoding": UTF8_ENCODING,
        "datlocprovider": "c", "datistemplate": False, "datallowconn": True, "datconnlimit": -1, "datfrozenxid": 0,
        "datminmxid": 1, "dattablespace": DEFAULT_TABLESPACE_OID, "datcollate": "C", "datctype": "C",
    }])
    _insert_dicts(con, "pg_catalog.pg_tablespace", (
        {"oid": DEFAULT_TABLESPACE_OID, "spcname": "pg_default", "spcowner": BOOTSTRAP_ROLE_OID},
        {"oid": 1664, "spcname": "pg_global", "spcowner": BOOTSTRAP_ROLE_OID}))
    roles = [{
        "oid": oid, "rolname": name, "rolsuper": False, "rolinherit": True, "rolcreaterole": False, "rolcreatedb": False,
        "rolcanlogin": name != OWNER, "rolreplication": False, "rolconnlimit": -1, "rolpassword": "********", "rolbypassrls": False,
    } for name, oid in ob.roles.items()]
    _insert_dicts(con, "pg_catalog.pg_roles", roles)
    _insert_dicts(con, "pg_catalog.pg_user", ({
        "usename": r["rolname"], "usesysid": r["oid"], "usecreatedb": False, "usesuper": False, "userepl": False,
        "usebypassrls": False, "passwd": "********"} for r in roles if r["rolcanlogin"]))
    _insert_dicts(con, "information_schema.character_sets", [{
        "character_set_name": "UTF8", "character_repertoire": "UCS", "form_of_use": "UTF8", "default_collate_catalog": ob.database,
        "default_collate_schema": "pg_catalog", "default_collate_name": "C"}])
    _insert_dicts(con, "information_schema.information_schema_catalog_name", [{"catalog_name": ob.database}])
    regclass = [(oid, q.split(".", 1)[0], q.split(".", 1)[1]) for q, oid in ob.system_relations.items()]
    regclass += [(t.oid, t.schema, t.name) for t in ob.tables.values()]
    _insert(con, f"{PG_SCHEMA}.dpsql_regclass", ("oid", "nspname", "relname"), regclass)


def _fill_tables(con: duckdb.DuckDBPyConnection, ob: Objects) -> None:
    classes, attributes, tables, stats = [], [], [], []
    for t in ob.tables.values():
        nsp = ob.schemas[t.schema]
        classes.append({
            "oid": t.oid, "relname": t.name, "relnamespace": nsp, "reltype": 0, "reloftype": 0, "relowner": BOOTSTRAP_ROLE_OID,
            "relam": HEAP_AM_OID, "relfilenode": 0, "reltablespace": 0, "relpages": 0, "reltuples": -1.0, "relallvisible": 0,
            "reltoastrelid": 0, "relhasindex": False, "relisshared": False, "relpersistence": "p", "relkind": "r",
            "relnatts": len(t.columns), "relchecks": 0, "relhasrules": False, "relhastriggers": False, "relhassubclass": False,
            "relrowsecurity": False, "relforcerowsecurity": False, "relispopulated": True, "relreplident": "d",
            "relispartition": False, "relrewrite": 0, "relfrozenxid": 0, "relminmxid": 0,
        })
        for c in t.columns:
            ty = BY_NAME.get(c.pg_type)
            attributes.append({
                "attrelid": t.oid, "attname": c.name, "atttypid": c.type_oid, "attstattarget": -1,
                "attlen": ty.length if ty else -1, "attnum": c.attnum, "attndims": 0, "attcacheoff": -1, "atttypmod": -1,
                "attbyval": ty.byval if ty else False, "attalign": ty.align if ty else "i", "attstorage": ty.storage if ty else "x",
                "attcompression": "", "attnotnull": False, "atthasdef": False, "atthasmissing": False, "attidentity": "",
                "attgenerated": "", "attisdropped": False, "attislocal": True, "attinhcount": 0,
                "attcollation": ty.collation if ty else 0,
            })
        tables.append({"schemaname": t.schema, "tablename": t.name, "tableowner": OWNER, "hasindexes": False, "hasrules": False,
                       "hastriggers": False, "rowsecurity": False})
        stats.append({"relid": t.oid, "schemaname": t.schema, "relname": t.name})  # every counter NULL: never data-derived
    _insert_dicts(con, "pg_catalog.pg_class", classes)
    _insert_dicts(con, "pg_catalog.pg_attribute", attributes)
    _insert_dicts(con, "pg_catalog.pg_tables", tables)
    _insert_dicts(con, "pg_catalog.pg_stat_user_tables", stats)
    _insert_dicts(con, "pg_catalog.pg_stat_all_tables", stats)


def _fill_information_schema(con: duckdb.DuckDBPyConnection, ob: Objects) -> None:
    db = ob.database
    _insert_dicts(con, "information_schema.schemata", ({"catalog_name": db, "schema_name": name, "schema_owner": OWNER}
                                                        for name in ob.schemas if name != "pg_toast"))
    tables, columns = [], []
    for t in ob.tables.values():
        tables.append({"table_catalog": db, "table_schema": t.schema, "table_name": t.name, "table_type": "BASE TABLE",
                       "is_insertable_into": "NO", "is_typed": "NO"})
        for c in t.columns:
            prec, radix, scale, dt_prec = numeric_facts(c.pg_type)
            text = c.pg_type in ("text", "varchar", "bpchar")
            columns.append({
                "table_catalog": db, "table_schema": t.schema, "table_name": t.name, "column_name": c.name,
                "ordinal_position": c.attnum, "is_nullable": "YES", "data_type": information_schema_data_type(c.pg_type),
                "character_octet_length": 1073741824 if text else None, "numeric_precision": prec,
                "numeric_precision_radix": radix, "numeric_scale": scale, "datetime_precision": dt_prec,
                "udt_catalog": db, "udt_schema": "pg_catalog", "udt_name": c.pg_type, "dtd_identifier": str(c.attnum),
                "is_self_referencing": "NO", "is_identity": "NO", "identity_cycle": "NO", "is_generated": "NEVER",
                "is_updatable": "NO",
            })
    _insert_dicts(con, "information_schema.tables", tables)
    _insert_dicts(con, "information_schema.columns", columns)
