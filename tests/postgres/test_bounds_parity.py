"""Issue 10 §3 on both backends: the L1 row cap (``max_contributions``) and per-unit sum bounds
(``unit_lower``/``unit_upper``) give the same plans, costs and exact bounded statistics on DuckDB
and PostgreSQL — the row and group orders are the same MD5 expressions on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pgenv import PgEnv, policy_text, source_line
from test_engine_parity import _bounded

from dpsql.policy import load_policy
from dpsql.proxy.backends.base import Backend
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.backends.postgres import PostgresBackend
from dpsql.proxy.engine import Engine

pytestmark = pytest.mark.postgres

QUERIES = {
    "count_sum_by_department": "SELECT department, COUNT(*), SUM(cost), AVG(length_of_stay) FROM visits GROUP BY department",
    "unit_bounded_sum_avg": "SELECT sex, SUM(cost), AVG(cost), COUNT(*) FROM visits GROUP BY sex",
    "global": "SELECT COUNT(*), SUM(cost), AVG(cost), VAR_POP(age) FROM visits",
    "partition_selection": "SELECT diagnosis, COUNT(*), SUM(length_of_stay) FROM visits GROUP BY diagnosis",
    "distinct_values": (  # the value order is the same MD5 over text casts on both engines
        "SELECT department, COUNT(DISTINCT diagnosis), SUM(DISTINCT length_of_stay), "
        "COUNT(DISTINCT patient_id) FILTER (WHERE age > 60) FROM visits GROUP BY department"
    ),
}


def _text(pg: PgEnv, kind: str, tmp: Path) -> str:
    text = policy_text(source_line(pg, kind), ledger=f'path = "{tmp / f"bounds-{kind}.sqlite"}"', epsilon=1e6, delta=1e-3)
    text = text.replace("max_rows = 5\n[tables.visits.columns]", "max_rows = 5\nmax_contributions = 4\n[tables.visits.columns]", 1)
    return text.replace("cost = { lower = 0.0, upper = 5000.0 }", "cost = { unit_lower = 0.0, unit_upper = 8000.0 }", 1)


@pytest.fixture(scope="module")
def engines(pg: PgEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Engine]]:
    tmp = tmp_path_factory.mktemp("bounds")
    out: dict[str, Engine] = {}
    for kind in ("duckdb", "postgres"):
        path = tmp / f"bounds-{kind}.toml"
        path.write_text(_text(pg, kind, tmp))
        policy = load_policy(path)
        assert policy.table("visits").max_contributions == 4  # type: ignore[union-attr]
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
    assert rw_d.plan.stats == rw_p.plan.stats and rw_d.plan.max_contributions == 4
    assert noise_d == noise_p
    duck, _ = _bounded(engines["duckdb"], sql)
    post, _ = _bounded(engines["postgres"], sql)
    assert duck == post  # the exact cells, every group (also those partition selection may hold back)
