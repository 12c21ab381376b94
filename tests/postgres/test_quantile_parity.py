"""Quantiles and MIN/MAX on PostgreSQL: the bounded histogram queries give exactly DuckDB's counts
(a policy where no unit loses a value or a group, so the engines' different hash orders cannot
matter), and the whole query path answers on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from pgenv import PgEnv, policy_text, source_line

from dpsql.policy import load_policy
from dpsql.proxy.backends.base import Backend
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.backends.postgres import PostgresBackend
from dpsql.proxy.engine import Engine

pytestmark = pytest.mark.postgres

QUERIES = [
    "SELECT MEDIAN(cost), MIN(age), MAX(length_of_stay) FROM visits",
    "SELECT department, PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY cost) FROM visits GROUP BY department",
    "SELECT diagnosis, PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY age DESC) FROM visits GROUP BY diagnosis",
    "SELECT sex, MIN(visit_date), MAX(visit_date), QUANTILE_CONT(cost * 2 + age, 0.5) FROM visits WHERE age > 20 GROUP BY sex",
    "SELECT department_id, MEDIAN(length_of_stay) FILTER (WHERE cost > 1000) FROM visits GROUP BY department_id",
]


@pytest.fixture(scope="module")
def engines(pg: PgEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Engine]]:
    tmp = tmp_path_factory.mktemp("quantile-parity")
    out: dict[str, Engine] = {}
    for kind in ("duckdb", "postgres"):
        text = policy_text(source_line(pg, kind), ledger=f'path = "{tmp / f"{kind}.sqlite"}"', max_groups=40, epsilon=1e6, delta=1e-3)
        text = text.replace("max_rows = 5", "max_rows = 100000", 1)
        text = text.replace("visit_date = {}", "visit_date = { lower = 2015-01-01, upper = 2030-12-31 }", 1)
        path = tmp / f"{kind}.toml"
        path.write_text(text.replace("max_epsilon_per_query = 2.0", "max_epsilon_per_query = 10000.0"))
        policy = load_policy(path)
        backend: Backend = DuckDBBackend(policy) if kind == "duckdb" else PostgresBackend(policy)
        out[kind] = Engine(policy, backend)
    yield out
    for e in out.values():
        e.close()


def _norm(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str | dt.date):
        return v
    if isinstance(v, int | Decimal | float):
        return Fraction(v)
    return v


def _histograms(engine: Engine, sql: str) -> list[Counter]:
    rw = engine.rewrite(sql)
    assert rw.plan is not None and rw.plan.histograms
    nk = len(rw.plan.keys)
    out = []
    with engine.backend.session() as b:
        for h in rw.plan.histograms:
            c: Counter = Counter()
            for r in b.execute(h.sql).rows:
                c[(tuple(_norm(v) for v in r[:nk]), int(r[nk]))] += int(r[nk + 1])
            out.append(c)
    return out


@pytest.mark.parametrize("sql", QUERIES)
def test_histograms_are_identical(engines: dict[str, Engine], sql: str) -> None:
    duck, pg = _histograms(engines["duckdb"], sql), _histograms(engines["postgres"], sql)
    assert len(duck) == len(pg)
    for a, b in zip(duck, pg, strict=True):
        assert sum(a.values()) > 0
        assert a == b


def test_query_path_on_postgres(engines: dict[str, Engine]) -> None:
    s = engines["postgres"].session("alice")
    s.execute("SET dp.epsilon = 5000")
    r = s.execute("SELECT sex, MIN(visit_date), MEDIAN(cost), MAX(age) FROM visits GROUP BY sex")
    assert sorted(row[0] for row in r.rows) == ["F", "M"]
    for _, d, m, a in r.rows:
        assert isinstance(d, dt.date) and 0 <= m <= 5000 and 0 <= a <= 100
    assert any("may lie inside the data" in n for n in r.notices)
