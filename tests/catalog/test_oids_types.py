"""OIDs: stable across processes, real PostgreSQL type OIDs, and pg_attribute joins to pg_type."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATABASE, VISIBLE

from dpsql.proxy.catalog import SyntheticCatalog
from dpsql.proxy.session_info import SessionInfo

_CHILD = """
import json, sys
sys.path.insert(0, {here!r})
from conftest import DESCRIBED, DATABASE, USERS, policy_data
from dpsql.policy import policy_from_dict
from dpsql.proxy.catalog import SyntheticCatalog
from dpsql.schema import build_catalog
c = SyntheticCatalog(build_catalog(policy_from_dict(policy_data(), "p.toml"), DESCRIBED), database=DATABASE, users=USERS)
print(json.dumps({{q: c.table_oid(q) for q in DESCRIBED}} | {{"roles": c.objects.roles, "schemas": c.objects.schemas,
                  "db": c.objects.database_oid}}))
c.close()
"""


def test_table_oids_are_stable_across_processes(catalog: SyntheticCatalog) -> None:
    here = str(Path(__file__).parent)
    outs = [json.loads(subprocess.run([sys.executable, "-c", _CHILD.format(here=here)], capture_output=True, text=True,
                                      check=True, env={"PYTHONHASHSEED": seed}).stdout) for seed in ("1", "2")]
    assert outs[0] == outs[1]
    assert {q: catalog.table_oid(q) for q in VISIBLE} == {q: outs[0][q] for q in VISIBLE}


def test_table_oids_are_user_range_and_distinct(catalog: SyntheticCatalog) -> None:
    oids = [catalog.table_oid(q) for q in VISIBLE]
    assert len(set(oids)) == len(oids)
    assert all(16384 <= o < 2**31 for o in oids)
    assert catalog.table_oid("visits") == catalog.table_oid("public.visits")
    with pytest.raises(Exception) as e:
        catalog.table_oid("public.nope")
    assert getattr(e.value, "sqlstate", None) == "42P01"


@pytest.mark.parametrize(("name", "oid"), [
    ("int4", 23), ("integer", 23), ("int8", 20), ("bigint", 20), ("int2", 21), ("text", 25), ("varchar", 1043),
    ("character varying", 1043), ("numeric", 1700), ("float8", 701), ("double precision", 701), ("float4", 700), ("bool", 16),
    ("date", 1082), ("timestamp", 1114), ("timestamptz", 1184), ("interval", 1186), ("bytea", 17), ("uuid", 2950),
    ("json", 114), ("jsonb", 3802), ("oid", 26), ("name", 19), ("char", 1042), ('"char"', 18), ("_text", 1009), ("text[]", 1009),
    ("_int4", 1007), ("regclass", 2205), ("regtype", 2206), ("pg_catalog.int4", 23), ("hstore", 0),
])
def test_type_oid(name: str, oid: int, catalog: SyntheticCatalog) -> None:
    assert catalog.type_oid(name) == oid


def test_atttypid_joins_pg_type(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    rows = catalog.execute("SELECT c.relname, a.attname, a.atttypid, t.oid, t.typname, t.typlen, a.attlen "
                           "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid LEFT JOIN pg_type t ON t.oid = a.atttypid",
                           info).rows
    assert len(rows) == sum(len(cols) for cols in VISIBLE.values())
    for relname, attname, atttypid, toid, typname, typlen, attlen in rows:
        assert toid == atttypid and typname is not None, (relname, attname)
        assert typlen == attlen
        assert atttypid == catalog.type_oid(typname)


def test_pg_type_rows_are_postgresql_builtins(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    rows = {r[0]: r[1:] for r in catalog.execute(
        "SELECT typname, oid, typarray, typlen, typtype, typcategory, typnamespace, typinput FROM pg_type", info).rows}
    assert rows["int4"] == (23, 1007, 4, "b", "N", 11, "int4in")
    assert rows["text"] == (25, 1009, -1, "b", "S", 11, "textin")
    assert rows["numeric"][:2] == (1700, 1231)
    assert rows["_int4"][4] == "A"
    assert len(rows) > 300


def test_database_and_namespace_oids(catalog: SyntheticCatalog, info: SessionInfo) -> None:
    ns = dict(catalog.execute("SELECT nspname, oid FROM pg_namespace", info).rows)
    assert ns["pg_catalog"] == 11 and ns["public"] == 2200 and ns["pg_toast"] == 99
    assert ns["sales"] >= 16384 and "information_schema" in ns
    (db_oid, name), = catalog.execute("SELECT oid, datname FROM pg_database", info).rows
    assert name == DATABASE and db_oid >= 16384
    assert catalog.execute("SELECT 'pg_class'::regclass::oid, 'pg_catalog.pg_namespace'::regclass::oid", info).rows == [(1259, 2615)]
