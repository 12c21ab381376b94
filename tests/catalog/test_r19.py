"""R19: catalog answers expose nothing computed from data.

Two catalogs are built over real DuckDB backends holding the same tables, one with rows and one
empty; every catalog relation and every statistics-like function must answer identically, and the
statistics relations must be empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from conftest import DATABASE, USERS, policy_data

from dpsql.policy import policy_from_dict
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.catalog import SyntheticCatalog
from dpsql.proxy.catalog import pg_snapshot as snap
from dpsql.proxy.session_info import SessionInfo
from dpsql.schema import build_catalog


def _make_source(path: Path, rows: int) -> None:
    con = duckdb.connect(str(path))
    con.execute(f"""CREATE TABLE visits AS SELECT range AS patient_id, (range % 90)::INTEGER AS age, range * 1.5 AS cost,
                    CASE WHEN range % 2 = 0 THEN 'cardiology' ELSE 'oncology' END AS department,
                    DATE '2024-01-01' + (range % 300)::INTEGER AS visit_date, 'ssn-' || range AS secret FROM range({rows})""")
    con.execute(f"CREATE TABLE departments AS SELECT range::INTEGER AS department_id, 'd' || range AS name FROM range({min(rows, 8)})")
    con.execute(f"CREATE TABLE pg_events AS SELECT range AS id, 'k' || range AS kind FROM range({rows})")
    con.execute("CREATE SCHEMA sales")
    con.execute(f"CREATE TABLE sales.orders AS SELECT range AS customer_id, (range % 100)::DECIMAL(18, 2) AS amount, "
                f"TIMESTAMP '2024-01-01' + INTERVAL (range) MINUTE AS placed FROM range({rows})")
    con.execute("ANALYZE")
    con.close()


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SyntheticCatalog, SyntheticCatalog]]:
    """(catalog over a backend with 5,000 rows per table, catalog over the same tables with no rows)."""
    out = []
    backends = []
    for rows in (5000, 0):
        d = tmp_path_factory.mktemp(f"r19_{rows}")
        _make_source(d / "source.duckdb", rows)
        policy = policy_from_dict(policy_data() | {"source": {"duckdb": str(d / "source.duckdb")}}, d / "policy.toml")
        backend = DuckDBBackend(policy)
        backends.append(backend)
        out.append(SyntheticCatalog(build_catalog(policy, backend.describe()), database=DATABASE, users=USERS))
    yield out[0], out[1]
    for c in out:
        c.close()
    for b in backends:
        b.close()


STATISTICS = ["pg_stats", "pg_statistic", "pg_statistic_ext", "pg_statistic_ext_data", "pg_stats_ext", "pg_stats_ext_exprs",
              "pg_stat_user_indexes", "pg_statio_user_tables", "pg_stat_database"]
PROBES = [
    "SELECT relname, reltuples, relpages, relallvisible FROM pg_class ORDER BY 1",
    "SELECT relname, n_live_tup, n_dead_tup, seq_scan, n_tup_ins FROM pg_stat_user_tables ORDER BY 1",
    "SELECT relname, n_live_tup FROM pg_stat_all_tables ORDER BY 1",
    "SELECT c.relname, pg_relation_size(c.oid), pg_total_relation_size(c.oid), pg_table_size(c.oid), "
    "pg_size_pretty(pg_total_relation_size(c.oid)) FROM pg_class c ORDER BY 1",
    "SELECT pg_database_size(current_database())",
    "SELECT c.relname, pg_stat_get_numscans(c.oid), pg_stat_get_live_tuples(c.oid) FROM pg_class c ORDER BY 1",
]


def _info() -> SessionInfo:
    return SessionInfo(user="alice", database=DATABASE, backend_pid=7)


@pytest.mark.parametrize("relation", STATISTICS)
def test_statistics_relations_are_empty(relation: str, catalogs: tuple[SyntheticCatalog, SyntheticCatalog]) -> None:
    with_data, _ = catalogs
    assert with_data.execute(f"SELECT * FROM pg_catalog.{relation}", _info()).rows == []


@pytest.mark.parametrize("sql", PROBES)
def test_counts_and_sizes_are_unknown_and_equal(sql: str, catalogs: tuple[SyntheticCatalog, SyntheticCatalog]) -> None:
    with_data, empty = catalogs
    a, b = with_data.execute(sql, _info()), empty.execute(sql, _info())
    assert (a.columns, a.types, a.rows) == (b.columns, b.types, b.rows)
    for row in a.rows:
        assert all(v in (None, -1, -1.0, 0, 0.0) or isinstance(v, str) for v in row[1:]), row


def test_every_catalog_relation_is_identical_with_and_without_data(catalogs: tuple[SyntheticCatalog, SyntheticCatalog]) -> None:
    with_data, empty = catalogs
    for qualified in snap.RELATION_COLUMNS:
        if qualified == "pg_catalog.pg_stat_activity":  # the caller's own row; its timestamps are "now"
            continue
        sql = f"SELECT * FROM {qualified}"
        a, b = with_data.execute(sql, _info()), empty.execute(sql, _info())
        assert (a.columns, a.rows) == (b.columns, b.rows), qualified
        assert not any("ssn-" in str(v) for row in a.rows for v in row), qualified
