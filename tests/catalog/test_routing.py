"""``handles()``: catalog statements and probes in, DP queries out; the fast path is fast."""

from __future__ import annotations

import time

import pytest

from dpsql.proxy.catalog import SyntheticCatalog
from dpsql.proxy.session_info import SessionInfo

DP_QUERIES = [
    "SELECT COUNT(*) FROM visits",
    "select count(*), avg(age) from visits group by department",
    "SELECT * FROM dpsql.budget",
    "SELECT COUNT(*) FROM pg_events",  # a policy table whose name starts with pg_
    "SELECT kind, COUNT(*) FROM public.pg_events GROUP BY kind",
    "SELECT SUM(amount) FROM sales.orders WHERE placed > current_date - 30",
    "SELECT COUNT(*) FROM visits WHERE department = current_user",
    "SELECT COUNT(*) FROM visits v JOIN pg_class c ON c.relname = v.department",  # mixed: data is never the catalog's
    "SELECT EXTRACT(YEAR FROM visit_date) AS y, COUNT(*) FROM visits GROUP BY 1",
    "SELECT COUNT(*) FROM no_such_table",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SHOW search_path",
    "SET search_path = sales",
    "BEGIN",
    "EXPLAIN SELECT COUNT(*) FROM visits",
    "INSERT INTO visits VALUES (1)",
]
CATALOG = [
    "SELECT 1",
    "select 1;",
    "SELECT 1, 'a', NULL",
    "select version()",
    "SELECT pg_catalog.version()",
    "select current_schema()",
    "SELECT current_schema(),session_user",
    "select current_schemas(true)",
    "SELECT current_database()",
    "SELECT current_user",
    "SELECT session_user",
    "select current_setting('server_version_num')",
    "SELECT set_config('application_name', 'x', false)",
    "SELECT pg_backend_pid()",
    "SELECT has_table_privilege('visits', 'select')",
    "SELECT to_regtype('int4')",
    "SELECT format_type(23, -1)",
    "SELECT word FROM pg_get_keywords()",
    "SELECT 'visits'::regclass",
    "SELECT 'int4'::regtype",
    "SELECT 'public'::regnamespace",
    "SELECT * FROM pg_class",
    "SELECT * FROM pg_catalog.pg_class",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM pg_stats",
    "SELECT * FROM pg_no_such_relation",
    "WITH t AS (SELECT oid FROM pg_type) SELECT count(*) FROM t",
    "SELECT s FROM generate_series(1, 3) s, pg_namespace",
]


@pytest.mark.parametrize("sql", DP_QUERIES)
def test_dp_queries_are_not_the_catalogs(sql: str, catalog: SyntheticCatalog) -> None:
    assert not catalog.handles(sql)


@pytest.mark.parametrize("sql", CATALOG)
def test_probes_and_catalog_queries_are(sql: str, catalog: SyntheticCatalog) -> None:
    assert catalog.handles(sql)


def test_dp_query_is_rejected_without_parsing(catalog: SyntheticCatalog, monkeypatch: pytest.MonkeyPatch) -> None:
    import dpsql.proxy.catalog.routing as routing

    def boom(sql: str) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(routing, "parse", boom)
    assert not catalog.handles("SELECT COUNT(*) FROM visits WHERE age > 30 GROUP BY department")


def _per_call(fn, n: int = 20000) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def test_fast_path_timing(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    """``SELECT 1`` through handles + execute; printed (run with -s), loosely bounded so CI noise can't fail it."""
    handles = _per_call(lambda: catalog.handles("SELECT 1"))
    execute = _per_call(lambda: catalog.execute("SELECT 1", info))
    both = _per_call(lambda: catalog.handles("SELECT 1") and catalog.execute("SELECT 1", info))
    dp = _per_call(lambda: catalog.handles("SELECT COUNT(*) FROM visits WHERE age > 30 GROUP BY department"))
    version = _per_call(lambda: catalog.handles("select version()") and catalog.execute("select version()", info))
    print(f"\nSELECT 1: handles {handles:.2f} µs, execute {execute:.2f} µs, both {both:.2f} µs; "
          f"select version() {version:.2f} µs; handles(DP query) {dp:.2f} µs")
    assert both < 1000


def test_general_path_timing(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    """A psql ``\\d``-shaped query, cold (rewrite) and warm (cached template); printed."""
    from catalog_lib import load_corpus

    st = next(s for s in load_corpus() if s.client == "psql15" and s.name == "d visits #7")
    sql, params = st.bind(catalog.table_oid)
    sql = sql + " "  # a fresh cache key
    t0 = time.perf_counter()
    catalog.handles(sql)
    catalog.execute(sql, info, params)
    cold = (time.perf_counter() - t0) * 1e3
    warm = _per_call(lambda: catalog.handles(sql) and catalog.execute(sql, info, params), 200) / 1e3
    print(f"\npsql \\d visits columns query: cold {cold:.2f} ms, warm {warm:.3f} ms")
    assert warm < 100
