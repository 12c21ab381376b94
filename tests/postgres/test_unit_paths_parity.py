"""Keyed tables (issue 11 item 1) on both backends: a prescriptions table whose rows belong to the
patient of their visit gives the same plans, costs and exact bounded statistics on DuckDB and on
PostgreSQL, alone and joined with its referenced table; and the start-up check of the referenced
key runs on PostgreSQL too (a key that is not unique in the data: no start)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from pgenv import PgEnv
from test_engine_parity import _bounded

from dpsql.errors import PolicyError
from dpsql.policy import load_policy
from dpsql.proxy.backends.base import Backend
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.backends.postgres import PostgresBackend
from dpsql.proxy.engine import Engine

pytestmark = pytest.mark.postgres

DDL = (
    "CREATE TABLE visits (visit_id BIGINT, patient_id BIGINT, department VARCHAR, cost DOUBLE PRECISION)",
    "CREATE TABLE prescriptions (rx_id BIGINT, visit_id BIGINT, drug VARCHAR, dose DOUBLE PRECISION)",
)
TABLES = """
[tables.visits]
privacy_unit = "patient_id"
max_groups = 2
max_rows = 3
[tables.visits.columns]
visit_id = { unique = true }
department = { values = ["card", "onc", "surg"] }
cost = { lower = 0, upper = 100 }
[tables.prescriptions]
privacy_unit = { via = "visit_id", references = "visits.visit_id" }
max_groups = 2
max_rows = 2
[tables.prescriptions.columns]
drug = { values = ["a", "b", "c"] }
dose = { lower = 0, upper = 10 }
"""
# a key path through a column that is not unique in the data (declared so: the start-up check finds it)
NOT_UNIQUE = TABLES.replace("visit_id = { unique = true }", "visit_id = { unique = true }\npatient_id = { unique = true }").replace(
    'privacy_unit = { via = "visit_id", references = "visits.visit_id" }',
    'privacy_unit = { via = "visit_id", references = "visits.patient_id" }',
)

QUERIES = {
    "alone_by_drug": "SELECT drug, COUNT(*), SUM(dose), AVG(dose) FROM prescriptions GROUP BY drug",
    "joined_by_department": "SELECT v.department, COUNT(*), SUM(p.dose) FROM prescriptions p JOIN visits v "
    "ON p.visit_id = v.visit_id GROUP BY v.department",
}


def _rows() -> dict[str, list[str]]:
    rng = random.Random(5)
    visits, rx = [], []
    vid = rid = 0
    for pid in [*range(1, 120), None]:
        for _ in range(rng.randint(0, 4) if pid != 7 else 40):  # patient 7: 40 visits × 30 prescriptions
            vid += 1
            visits.append(
                f"({vid}, {'NULL' if pid is None else pid}, '{rng.choice(['card', 'onc', 'surg', 'x'])}', {rng.randint(-5, 120)})"
            )
            for _ in range(rng.randint(0, 3) if pid != 7 else 30):
                rid += 1
                rx.append(f"({rid}, {vid if rng.random() > 0.03 else 10**9}, '{rng.choice('abcz')}', {rng.randint(-2, 13)}.5)")
    return {"visits": visits, "prescriptions": rx}


def _text(source: str, ledger: Path, tables: str) -> str:
    return (
        "\n".join(
            [
                "[source]",
                source,
                "[server]",
                'auth = "trust"',
                "[privacy]",
                'accounting = "zcdp"',
                "max_epsilon_per_query = 2.0",
                "[privacy.ledger]",
                f'path = "{ledger}"',
                "[budget]",
                "epsilon = 1000000.0",
                "delta = 1e-3",
                "[users.alice]",
            ]
        )
        + "\n"
        + tables
    )


@pytest.fixture(scope="module")
def sources(pg: PgEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The same rows in a DuckDB file and in a PostgreSQL database ``keyed`` the reader may SELECT."""
    tmp = tmp_path_factory.mktemp("keyed-parity")
    rows = _rows()
    inserts = [f"INSERT INTO {t} VALUES {', '.join(vals)}" for t, vals in rows.items()]
    path = tmp / "keyed.duckdb"
    con = duckdb.connect(str(path))
    for s in (*DDL, *inserts):
        con.execute(s)
    con.close()
    pg.sql("CREATE DATABASE keyed", database="postgres")
    pg.sql(
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        *DDL,
        *inserts,
        "GRANT USAGE ON SCHEMA public TO reader",
        "GRANT SELECT ON public.visits, public.prescriptions TO reader",
        database="keyed",
    )
    pg.sql("GRANT CONNECT ON DATABASE keyed TO reader", database="postgres")
    dsn = pg.cluster.dsn("reader", "keyed")
    return {"duckdb": f'duckdb = "{path}"', "postgres": f'postgres = "{dsn}"', "dir": str(tmp)}


@pytest.fixture(scope="module")
def engines(sources: dict[str, str]) -> Iterator[dict[str, Engine]]:
    tmp = Path(sources["dir"])
    out: dict[str, Engine] = {}
    for kind in ("duckdb", "postgres"):
        path = tmp / f"keyed-{kind}.toml"
        path.write_text(_text(sources[kind], tmp / f"keyed-{kind}.sqlite", TABLES))
        policy = load_policy(path)
        backend: Backend = DuckDBBackend(policy) if kind == "duckdb" else PostgresBackend(policy)
        out[kind] = Engine(policy, backend)
    yield out
    for e in out.values():
        e.close()


@pytest.mark.parametrize("name", QUERIES)
def test_plans_costs_and_exact_statistics_are_identical(engines: dict[str, Engine], name: str) -> None:
    sql = QUERIES[name]
    (rw_d, noise_d), (rw_p, noise_p) = (engines[k].session("alice").plan(sql) for k in ("duckdb", "postgres"))
    assert rw_d.plan is not None and rw_p.plan is not None
    assert rw_d.plan.stats == rw_p.plan.stats and noise_d == noise_p
    duck, _ = _bounded(engines["duckdb"], sql)
    post, _ = _bounded(engines["postgres"], sql)
    assert duck == post and len(duck) == 3 and all(c[0] > 0 for c in duck.values())


def test_a_key_that_is_not_unique_stops_the_start_on_postgres(sources: dict[str, str]) -> None:
    tmp = Path(sources["dir"])
    path = tmp / "not-unique.toml"
    path.write_text(_text(sources["postgres"], tmp / "not-unique.sqlite", NOT_UNIQUE))
    policy = load_policy(path)
    backend = PostgresBackend(policy)
    try:
        with pytest.raises(PolicyError) as e:
            Engine(policy, backend)
    finally:
        backend.close()
    assert e.value.key == "tables.visits.columns.patient_id.unique"
