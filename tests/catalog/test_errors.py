"""Errors are DPSQLErrors with PostgreSQL's SQLSTATEs, never tracebacks; the shadow stays locked."""

from __future__ import annotations

import time

import pytest
from conftest import DATABASE, USERS

from dpsql.errors import DPSQLError
from dpsql.proxy.catalog import SyntheticCatalog
from dpsql.proxy.session_info import SessionInfo
from dpsql.schema import Catalog

CASES = [
    ("SELECT * FROM pg_catalog.pg_nope", "42P01", 'relation "pg_catalog.pg_nope" does not exist'),
    ("SELECT * FROM pg_nope", "42P01", 'relation "pg_nope" does not exist'),
    ("SELECT * FROM information_schema.nope", "42P01", None),
    ("SELECT * FROM pg_class, visits", "42P01", 'relation "visits" does not exist'),  # the catalog never reads data
    ("SELECT * FROM pg_class c JOIN sales.orders o ON true", "42P01", None),
    ("SELECT pg_no_such_function(1) FROM pg_class", "42883", None),
    ("SELECT * FROM read_csv('/etc/passwd')", "42883", None),
    ("SELECT read_text('/etc/passwd') FROM pg_class", "42883", None),
    ("SELECT * FROM duckdb_settings()", "42883", None),
    ("SELECT getenv('HOME') FROM pg_class", "42883", None),
    ("SELECT relname FROM pg_class WHERE", "42601", None),
    ("SELECT 1; SELECT 2", "42601", None),
    ("SELECT nope FROM pg_class", "42703", 'column "nope" does not exist'),
    ("SELECT * FROM pg_authid", "42501", "permission denied for table pg_authid"),
    ("SELECT passwd FROM pg_shadow", "42501", None),
    ("DELETE FROM pg_class", "0A000", None),
    ("CREATE TABLE pg_x (a int)", "0A000", None),
    ("SELECT 'nope'::regnamespace", "3F000", None),
    ("SELECT 'x'::no_such_type FROM pg_class", "42704", None),
]


@pytest.mark.parametrize(("sql", "sqlstate", "message"), CASES)
def test_errors(sql: str, sqlstate: str, message: str | None, catalog: SyntheticCatalog, info: SessionInfo) -> None:
    with pytest.raises(DPSQLError) as e:
        catalog.execute(sql, info)
    assert e.value.sqlstate == sqlstate, e.value.message
    if message is not None:
        assert e.value.message == message
    assert e.value.__cause__ is None


def test_shadow_settings_are_locked(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    """Nothing a client sends reaches DuckDB's own statements; and the shadow itself is locked."""
    shadow = catalog._shadow
    with pytest.raises(Exception, match=r"locked"):
        shadow.query("SET enable_external_access = true")
    with pytest.raises(Exception):  # noqa: B017 - any DuckDB error: external access is off
        shadow.query("SELECT * FROM read_csv('/etc/passwd')")


def test_catalog_survives_errors(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    for sql, _, _ in CASES:
        with pytest.raises(DPSQLError):
            catalog.execute(sql, info)
    assert catalog.execute("SELECT count(*) FROM pg_class", info).rows == [(4,)]


def test_runaway_catalog_query_is_interrupted(schema: Catalog) -> None:
    cat = SyntheticCatalog(schema, database=DATABASE, users=USERS, statement_timeout=0.3)
    try:
        info = SessionInfo(user="alice", database=DATABASE, backend_pid=1)
        t0 = time.perf_counter()
        with pytest.raises(DPSQLError) as e:
            cat.execute("SELECT count(*) FROM generate_series(1, 100000000000) s, pg_namespace", info)
        assert e.value.sqlstate == "57014"
        assert time.perf_counter() - t0 < 5
        assert cat.execute("SELECT count(*) FROM pg_class", info).rows == [(4,)]
    finally:
        cat.close()
