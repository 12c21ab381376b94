"""The catalog shows the policy's tables and visible columns, and nothing else."""

from __future__ import annotations

from catalog_lib import load_corpus
from conftest import DATABASE, VISIBLE

from dpsql.proxy.catalog import SyntheticCatalog
from dpsql.proxy.session_info import SessionInfo

POLICY_TABLES = {("public", "visits"), ("public", "departments"), ("sales", "orders"), ("public", "pg_events")}


def _q(catalog: SyntheticCatalog, info: SessionInfo, sql: str) -> list[tuple]:
    return catalog.execute(sql, info).rows


def test_pg_class_lists_exactly_the_policy_tables(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    rows = _q(catalog, info, "SELECT n.nspname, c.relname, c.relkind, c.reltuples, c.relpages, c.relhasindex "
                             "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace")
    assert {(s, t) for s, t, *_ in rows} == POLICY_TABLES
    assert all(kind == "r" and tuples == -1 and pages == 0 and not idx for _, _, kind, tuples, pages, idx in rows)


def test_only_visible_columns_in_order(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    for qualified, cols in VISIBLE.items():
        oid = catalog.table_oid(qualified)
        rows = _q(catalog, info, f"SELECT a.attname, t.typname, a.attnum FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                                 f"WHERE a.attrelid = {oid} AND a.attnum > 0 ORDER BY a.attnum")
        assert [(n, t) for n, t, _ in rows] == cols
        assert [a for _, _, a in rows] == list(range(1, len(cols) + 1))
        schema, table = qualified.split(".")
        isc = _q(catalog, info, f"SELECT column_name, udt_name, ordinal_position FROM information_schema.columns "
                                f"WHERE table_schema = '{schema}' AND table_name = '{table}' ORDER BY ordinal_position")
        assert [(n, t) for n, t, _ in isc] == cols


def test_hidden_column_and_table_never_appear(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    """``visits.secret`` is in the data source but not in the policy; no catalog relation may name it."""
    for qualified in ("pg_catalog.pg_attribute", "information_schema.columns"):
        rows = _q(catalog, info, f"SELECT * FROM {qualified}")
        assert not any("secret" in map(str, row) for row in rows)
    sql, params = next(s for s in load_corpus() if s.client == "psql15" and "attname" in s.sql and "visits" in s.name).bind(
        catalog.table_oid)
    names = [r[0] for r in catalog.execute(sql, SessionInfo(user="alice", database=DATABASE, backend_pid=1), params).rows]
    assert names == ["patient_id", "age", "cost", "department", "visit_date"]


def test_information_schema_tables_and_schemata(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    tables = _q(catalog, info, "SELECT table_catalog, table_schema, table_name, table_type FROM information_schema.tables")
    assert {(s, t) for _, s, t, _ in tables} == POLICY_TABLES
    assert {(c, k) for c, _, _, k in tables} == {(DATABASE, "BASE TABLE")}
    schemas = {r[0] for r in _q(catalog, info, "SELECT schema_name FROM information_schema.schemata")}
    assert schemas == {"pg_catalog", "information_schema", "public", "sales"}


def test_psql_d_visits(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    """The column query psql 15 sends for ``\\d visits``: names, SQL types, no defaults, nullable."""
    oid = catalog.table_oid("public.visits")
    st = next(s for s in load_corpus() if s.client == "psql15" and s.name == "d visits #7")
    sql, params = st.bind(catalog.table_oid)
    assert f"'{oid}'" in sql
    r = catalog.execute(sql, info, params)
    assert r.columns[:4] == ("attname", "format_type", "pg_get_expr", "attnotnull")
    assert [row[:4] for row in r.rows] == [
        ("patient_id", "bigint", None, False), ("age", "integer", None, False), ("cost", "double precision", None, False),
        ("department", "text", None, False), ("visit_date", "date", None, False),
    ]


def test_psql_dt_and_dn_and_l(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    corpus = {s.name: s for s in load_corpus() if s.client == "psql15"}
    dt = catalog.execute(corpus["dt #3"].sql, info)
    assert dt.columns == ("Schema", "Name", "Type", "Owner")
    assert [(s, n) for s, n, *_ in dt.rows] == [("public", "departments"), ("public", "pg_events"), ("public", "visits")]
    dn = catalog.execute(corpus["dn #2"].sql, info)
    assert [r[0] for r in dn.rows] == ["public", "sales"]
    lst = catalog.execute(corpus["l #1"].sql, info)
    assert [(r[0], r[2]) for r in lst.rows] == [(DATABASE, "UTF8")]
    sales = catalog.execute(corpus["dt sales #26"].sql, info)
    assert [(s, n) for s, n, *_ in sales.rows] == [("sales", "orders")]


def test_search_path_decides_visibility(catalog: SyntheticCatalog) -> None:
    info = SessionInfo(user="alice", database=DATABASE, backend_pid=1)
    sql = "SELECT c.relname FROM pg_class c WHERE pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1"
    assert [r[0] for r in catalog.execute(sql, info).rows] == ["departments", "pg_events", "visits"]
    info.settings["search_path"] = "sales"
    assert [r[0] for r in catalog.execute(sql, info).rows] == ["orders"]
    assert catalog.execute("SELECT current_schema()", info).rows == [("sales",)]
    assert catalog.execute("SELECT 'orders'::regclass::oid", info).rows == [(catalog.table_oid("sales.orders"),)]
    r = catalog.execute("SELECT c.oid::regclass FROM pg_class c WHERE c.relname = 'visits'", info)
    assert r.rows == [("public.visits",)]


def test_roles_database_and_no_passwords(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    roles = dict(_q(catalog, info, "SELECT rolname, rolpassword FROM pg_roles"))
    assert set(roles) == {"dpsql", "alice", "bob"}
    assert set(roles.values()) == {"********"}
    assert _q(catalog, info, "SELECT datname, encoding, datistemplate, datallowconn FROM pg_database") == [(DATABASE, 6, False, True)]
    assert _q(catalog, info, "SELECT usename, pid FROM pg_stat_activity") == [("alice", 4242)]


def test_psql_tab_completion(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    """psql's completion queries (captured through a pty) complete the policy's names; LIKE escapes with backslash."""
    corpus = {s.name: s for s in load_corpus() if s.client == "psql15_tab_complete"}
    assert [r[0] for r in catalog.execute(corpus["psql_tab #1"].sql, info).rows] == ["visits"]
    assert catalog.execute(corpus["psql_tab #2"].sql, info).rows == [("orders", "sales")]
    assert [r[0] for r in catalog.execute(corpus["psql_tab #3"].sql, info).rows] == [c for c, _ in VISIBLE["public.visits"]]
    assert catalog.execute(corpus["psql_tab #6"].sql, info).rows == [("search_path",)]
