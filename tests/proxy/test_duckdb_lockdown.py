"""R29: the served DuckDB connection cannot reach files, extensions or settings.

Two layers are checked: the engine itself refuses (statements run on the raw locked connection,
bypassing the session's one-SELECT filter), and a session refuses everything that is not one
SELECT before the engine sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from dpsql.errors import DPSQLError, ExecutionFailed, UnsupportedQuery
from dpsql.policy import Policy
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.backends.duckdb_setup import LockedDatabase, open_locked


@pytest.fixture
def locked(policy: Policy) -> Iterator[LockedDatabase]:
    db = open_locked(policy)
    yield db
    db.close()


ENGINE_REFUSES = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_json('/etc/hostname')",
    "COPY (SELECT 1) TO '{tmp}/out.csv'",
    "COPY visits TO '{tmp}/out.parquet' (FORMAT parquet)",
    "EXPORT DATABASE '{tmp}/export'",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET threads = 8",
    "SET memory_limit = '100GB'",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET lock_configuration",
    "SET allowed_paths = ['/etc/passwd']",
    "PRAGMA threads = 8",
    "PRAGMA memory_limit = '100GB'",
    "CREATE TABLE dpsql_source.main.z (a INTEGER)",
    "INSERT INTO dpsql_source.main.visits (patient_id) VALUES (1)",
    "SELECT * FROM read_parquet('{tmp}/not_allowed.parquet')",
]


@pytest.mark.parametrize("sql", ENGINE_REFUSES)
def test_engine_refuses(locked: LockedDatabase, tmp_path: Path, sql: str) -> None:
    other = tmp_path / "not_allowed.parquet"
    if not other.exists():
        duckdb.connect().execute(f"COPY (SELECT 1 AS a) TO '{other}' (FORMAT parquet)")
    cur = locked.connection.cursor()
    with pytest.raises(duckdb.Error):
        cur.execute(sql.format(tmp=tmp_path)).fetchall()
    assert not (tmp_path / "out.csv").exists()
    assert not (tmp_path / "out.parquet").exists()
    assert not (tmp_path / "export").exists()
    assert not (tmp_path / "other.duckdb").exists()


def test_settings_are_locked_down(locked: LockedDatabase, policy: Policy) -> None:
    cur = locked.connection.cursor()
    settings = dict(
        cur.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
            "'autoinstall_known_extensions', 'autoload_known_extensions', 'allow_community_extensions', "
            "'allow_unsigned_extensions', 'lock_configuration', 'threads')"
        ).fetchall()
    )
    assert settings == {
        "enable_external_access": "false",
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
        "allow_community_extensions": "false",
        "allow_unsigned_extensions": "false",
        "lock_configuration": "true",
        "threads": str(policy.limits.threads),
    }
    readonly = cur.execute("SELECT readonly FROM duckdb_databases() WHERE database_name = 'dpsql_source'")
    assert readonly.fetchone() == (True,)


SESSION_REFUSES = [
    "SELECT 1; SELECT 2",
    "SELECT 1; COPY visits TO '/tmp/x.csv'",
    "COPY visits TO '/tmp/x.csv'",
    "CREATE MACRO m(x) AS x + 1",  # the engine would allow this one (R29), the session does not
    "CREATE TABLE t AS SELECT * FROM visits",
    "CREATE VIEW main.visits2 AS SELECT 1",
    "DROP VIEW visits",
    "PRAGMA database_list",
    "CALL pragma_version()",
    "EXPLAIN SELECT * FROM visits",
    "SET threads = 8",
    "USE dpsql_source",
    "INSTALL httpfs",
    "LOAD httpfs",
    "ATTACH ':memory:' AS x",  # allowed by the engine: harmless, but not a SELECT
    "DETACH dpsql_source",  # allowed by the engine (would hide the tables), not a SELECT
    "BEGIN",
    "",
    "-- nothing",
]


@pytest.mark.parametrize("sql", SESSION_REFUSES)
def test_session_runs_only_one_select(backend: DuckDBBackend, sql: str) -> None:
    with backend.session() as s:
        with pytest.raises(UnsupportedQuery) as info:
            s.execute(sql)
        assert info.value.sqlstate == "0A000"
        assert info.value.__context__ is None
        # the session still works, and nothing was created
        assert s.execute("SELECT count(*) FROM visits").rows == [(100,)]
        assert s.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'visits2'").rows == [(0,)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM read_text('/etc/passwd')",
    ],
)
def test_file_reads_fail_through_a_session(backend: DuckDBBackend, sql: str) -> None:
    with backend.session() as s, pytest.raises(ExecutionFailed) as info:
        s.execute(sql)
    assert "passwd" not in str(info.value) and "Permission" not in str(info.value)


def test_one_statement_with_trailing_semicolon_and_comment(backend: DuckDBBackend) -> None:
    with backend.session() as s:
        assert s.execute("SELECT 1 AS a;").rows == [(1,)]
        assert s.execute("SELECT 2 AS a -- ; SELECT 3").rows == [(2,)]


def test_source_file_is_not_modified(policy: Policy, source_db: Path) -> None:
    before = source_db.read_bytes()
    mtime = source_db.stat().st_mtime_ns
    b = DuckDBBackend(policy)
    with b.session() as s:
        s.execute("SELECT count(*) FROM visits")
    b.close()
    assert source_db.read_bytes() == before
    assert source_db.stat().st_mtime_ns == mtime
    assert not Path(str(source_db) + ".wal").exists()


def test_spill_directory_is_private_and_removed(policy: Policy) -> None:
    b = DuckDBBackend(policy)
    spill = b._db.spill_dir
    assert spill.is_dir() and (spill.stat().st_mode & 0o077) == 0
    b.close()
    assert not spill.exists()


def test_errors_are_dpsql_errors(backend: DuckDBBackend) -> None:
    with backend.session() as s, pytest.raises(DPSQLError):
        s.execute("SELECT * FROM dpsql_source.main.nosuch")
