"""Canned probe answers equal the general path; session values (settings, search path, user) are honoured."""

from __future__ import annotations

import pytest
from conftest import DATABASE

from dpsql.errors import DPSQLError
from dpsql.proxy.catalog import VERSION, SyntheticCatalog
from dpsql.proxy.catalog.probes import PROBES
from dpsql.proxy.session_info import SessionInfo


@pytest.mark.parametrize("sql", sorted(PROBES))
def test_fast_path_equals_general_path(sql: str, catalog: SyntheticCatalog) -> None:
    info = SessionInfo(user="bob", database=DATABASE, backend_pid=99)
    fast = catalog.execute(sql, info)
    slow = catalog.execute("/* general path */ " + sql, info)
    assert (fast.columns, fast.types, fast.rows) == (slow.columns, slow.types, slow.rows)
    assert catalog.describe(sql, info) == (fast.columns, fast.types)


def test_version_banner_satisfies_sqlalchemy(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    import re

    (v,), = catalog.execute("select pg_catalog.version()", info).rows
    assert v == VERSION
    m = re.match(r".*(?:PostgreSQL|EnterpriseDB) (\d+)\.?(\d+)?(?:\.(\d+))?(?:\.\d+)?(?:devel|beta)?", v)  # SQLAlchemy's regex
    assert m is not None and m.group(1) == "16"
    assert catalog.execute("SELECT current_setting('server_version_num')::int/100 as version", info).rows == [(1600,)]


def test_settings_come_from_the_session(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    info.settings["application_name"] = "psql"
    info.settings["search_path"] = '"$user", sales, public'
    r = catalog.execute("SELECT current_setting('application_name'), current_setting('search_path'), "
                        "current_setting('TimeZone'), current_schema(), current_schemas(false), current_schemas(true)", info)
    assert r.rows == [("psql", '"$user", sales, public', "UTC", "sales", ["sales", "public"], ["pg_catalog", "sales", "public"])]
    rows = dict(catalog.execute("SELECT name, setting FROM pg_settings WHERE name IN ('application_name', 'max_index_keys')",
                                info).rows)
    assert rows == {"application_name": "psql", "max_index_keys": "32"}
    assert catalog.execute("SELECT setting FROM pg_catalog.pg_settings WHERE name='max_index_keys'", info).rows == [("32",)]


def test_set_config_changes_the_session(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    assert catalog.execute("SELECT set_config('application_name', 'grafana', false)", info).rows == [("grafana",)]
    assert info.settings["application_name"] == "grafana"
    with pytest.raises(DPSQLError) as e:
        catalog.execute("SELECT set_config('dp.epsilon', '100', false)", info)
    assert e.value.sqlstate == "42501"
    with pytest.raises(DPSQLError) as e:
        catalog.execute("SELECT set_config('server_version', '9.6', false)", info)
    assert e.value.sqlstate == "55P02"
    # Describe never changes anything.
    catalog.describe("SELECT set_config('application_name', 'other', false)", info)
    assert info.settings["application_name"] == "grafana"


def test_unknown_setting(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    with pytest.raises(DPSQLError) as e:
        catalog.execute("SELECT current_setting('no_such_setting')", info)
    assert e.value.sqlstate == "42704"
    assert catalog.execute("SELECT current_setting('no_such_setting', true)", info).rows == [(None,)]


def test_users_and_identity(catalog: SyntheticCatalog) -> None:
    info = SessionInfo(user="bob", database=DATABASE, backend_pid=1234)
    r = catalog.execute("SELECT current_user, session_user, user, current_database(), pg_backend_pid()", info)
    assert r.rows == [("bob", "bob", "bob", DATABASE, 1234)]
    assert r.types == ("name", "name", "name", "name", "int4")
    assert catalog.execute("SELECT usename, pid, application_name FROM pg_stat_activity", info).rows == [("bob", 1234, "")]


def test_parameters(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    r = catalog.execute("SELECT typname FROM pg_type WHERE oid = $1", info, ["23"])
    assert r.rows == [("int4",)]
    r = catalog.execute("SELECT typname FROM pg_type WHERE oid = any($1::oid[]) ORDER BY 1", info, ["{23,25}"])
    assert r.rows == [("int4",), ("text",)]
    r = catalog.execute("SELECT typname FROM pg_type WHERE oid = any($1::oid[]) ORDER BY 1", info, [[16, 25]])
    assert r.rows == [("bool",), ("text",)]
    r = catalog.execute("SELECT t.oid FROM pg_type t WHERE t.oid = to_regtype($1)", info, ["hstore"])
    assert r.rows == []
    with pytest.raises(DPSQLError) as e:
        catalog.execute("SELECT typname FROM pg_type WHERE oid = $2", info, ["1"])
    assert e.value.sqlstate == "42P02"
    assert catalog.parameter_types("SELECT 1 WHERE 1 = any($1::oid[]) AND 'a' = $2") == ("_text", "text")


def test_regclass_regtype_output(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    oid = catalog.table_oid("sales.orders")
    r = catalog.execute(f"SELECT {oid}::regclass, {oid}::regclass::text, 'visits'::regclass, 23::regtype, "
                        "'varchar'::regtype::oid, 2200::regnamespace, to_regtype('integer')", info)
    assert r.rows == [("sales.orders", "sales.orders", "visits", "integer", 1043, "public", "integer")]
    with pytest.raises(DPSQLError) as e:
        catalog.execute("SELECT 'nope'::regclass", info)
    assert e.value.sqlstate == "42P01"
    with pytest.raises(DPSQLError) as e:
        catalog.execute("SELECT 'nope'::regtype", info)
    assert e.value.sqlstate == "42704"


def test_functions(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    r = catalog.execute("SELECT format_type(1043, 36), format_type(1700, 655366), format_type(1009, NULL), format_type(999999, NULL), "
                        "quote_ident('select'), quote_ident('ab'), parse_ident('sales.\"Orders\"'), "
                        "format('%I.%I', 'sales', 'My T'), format('%s-%L', NULL, 'x'), pg_encoding_to_char(6), "
                        "pg_get_userbyid(10), array_to_string(ARRAY['a', NULL, 'b'], ','), array_upper(ARRAY[1, 2], 1)", info)
    assert r.rows == [("character varying(32)", "numeric(10,2)", "text[]", "???", '"select"', "ab", ["sales", "Orders"],
                       'sales."My T"', "-'x'", "UTF8", "dpsql", "a,b", 2)]
    assert catalog.execute("SELECT count(*) > 400, count(*) FILTER (WHERE catcode = 'R') > 50 FROM pg_get_keywords()",
                           info).rows == [(True, True)]
