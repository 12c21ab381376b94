"""Quantiles and MIN/MAX end to end on DuckDB: accuracy at a huge ε (exact up to the grid), both
accounting modes, public keys and partition selection, dates and timestamps, EXPLAIN's error
statement, MIN/MAX's NOTICE, the charge before any histogram is read, and refusals."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from statistics import median

import duckdb
import pandas as pd
import pytest

from dpsql.api import Connection, connect
from dpsql.errors import DPSQLError

UNITS = 2000


def _data(path: Path) -> list[tuple]:
    rng = random.Random(4)
    rows = []
    for p in range(UNITS):
        dept = "ab"[p % 2]
        city = "xyz"[p % 3]
        for i in range(1 + p % 2):  # ≤ max_rows rows per unit, one group per unit: bounding drops nothing
            day = dt.date(2021, 3, 1) + dt.timedelta(days=rng.randrange(0, 700))
            seen = dt.datetime(2022, 1, 1) + dt.timedelta(seconds=rng.randrange(0, 86400 * 30))
            cost = None if (p + i) % 50 == 0 else round(rng.uniform(100, 3000), 2)
            rows.append((p, rng.randrange(18, 90), cost, dept, city, day, seen))
    frame = pd.DataFrame(rows, columns=["patient_id", "age", "cost", "dept", "city", "visit_date", "seen_at"])
    con = duckdb.connect(str(path))
    con.register("frame", frame)
    con.execute(
        "CREATE TABLE visits AS SELECT patient_id::INT AS patient_id, age::INT AS age, cost::DOUBLE AS cost, dept, city, "
        "visit_date::DATE AS visit_date, seen_at::TIMESTAMP AS seen_at FROM frame"
    )
    con.close()
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple]]:
    d = tmp_path_factory.mktemp("quant")
    return d, _data(d / "v.duckdb")


def _connect(d: Path, accounting: str, name: str) -> Connection:
    pol = d / f"{name}.toml"
    pol.write_text(
        f"""
[source]
duckdb = "{d / 'v.duckdb'}"
[server]
auth = "trust"
[privacy]
accounting = "{accounting}"
max_epsilon_per_query = 100000.0
[privacy.ledger]
path = "{d / (name + '-ledger.sqlite')}"
[budget]
epsilon = 1000000.0
delta = 1e-3
[users.a]
[tables.visits]
privacy_unit = "patient_id"
max_rows = 2
max_groups = 1
[tables.visits.columns]
age = {{ lower = 0, upper = 120 }}
cost = {{ lower = 0.0, upper = 5000.0 }}
dept = {{ values = ["a", "b"] }}
city = {{}}
visit_date = {{ lower = 2020-01-01, upper = 2025-12-31 }}
seen_at = {{ lower = 2022-01-01T00:00:00, upper = 2022-03-01T00:00:00 }}
"""
    )
    return connect(pol, "a")


@pytest.fixture(params=["zcdp", "basic"])
def conn(request: pytest.FixtureRequest, dataset: tuple[Path, list[tuple]]) -> Iterator[Connection]:
    c = _connect(dataset[0], request.param, f"p-{request.param}")
    c.execute("SET dp.epsilon = 10000")
    c.execute("SET dp.delta = 1e-5")
    yield c
    c.close()


def _truth(rows: list[tuple], col: int, where=lambda r: True) -> list:
    return sorted(r[col] for r in rows if where(r) and r[col] is not None)


def test_huge_epsilon_is_exact_up_to_the_grid(conn: Connection, dataset: tuple[Path, list[tuple]]) -> None:
    rows = dataset[1]
    r = conn.execute(
        "SELECT MEDIAN(cost), PERCENTILE_DISC(0.9) WITHIN GROUP (ORDER BY age), QUANTILE_CONT(age, 0.25), "
        "MIN(visit_date), MAX(visit_date), MAX(seen_at), MIN(age) FROM visits"
    )
    med, p90, q25, dmin, dmax, smax, amin = r.rows[0]
    costs, ages, days, seen = _truth(rows, 2), _truth(rows, 1), _truth(rows, 5), _truth(rows, 6)
    assert abs(med - median(costs)) <= 20  # grid step 20, nearest candidate
    assert abs(p90 - ages[int(0.9 * len(ages))]) <= 1 and isinstance(p90, int)
    assert abs(q25 - ages[len(ages) // 4]) <= 1 and isinstance(q25, float)
    assert abs((dmin - days[0]).days) <= 10 and abs((dmax - days[-1]).days) <= 10  # step 10 days
    assert isinstance(dmin, dt.date) and isinstance(smax, dt.datetime)
    assert abs((smax - seen[-1]).total_seconds()) <= 50000  # step 50000 s over 59 days
    assert amin == ages[0]
    assert r.types == ("float8", "int8", "float8", "date", "date", "timestamp", "int8")
    assert any("MAX and MIN are DP estimates near the maximum and minimum; they may lie inside the data" in n for n in r.notices)


def test_public_keys_and_partition_selection(conn: Connection, dataset: tuple[Path, list[tuple]]) -> None:
    rows = dataset[1]
    r = conn.execute("SELECT dept, MEDIAN(age) AS m, COUNT(*) AS n FROM visits GROUP BY dept ORDER BY dept")
    assert [row[0] for row in r.rows] == ["a", "b"]
    for dept, m, _ in r.rows:
        assert abs(m - median(_truth(rows, 1, lambda x, d=dept: x[3] == d))) <= 1
    r = conn.execute("SELECT city, MAX(age) AS top, PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY cost DESC) AS m FROM visits GROUP BY city")
    assert sorted(row[0] for row in r.rows) == ["x", "y", "z"]
    for city, top, m in r.rows:
        assert top == _truth(rows, 1, lambda x, c=city: x[4] == c)[-1]
        assert abs(m - median(_truth(rows, 2, lambda x, c=city: x[4] == c))) <= 20


def test_several_levels_share_one_histogram(conn: Connection) -> None:
    plan = conn.session.plan(
        "SELECT PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY age), MEDIAN(age), PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY age), "
        "MEDIAN(age) FROM visits"
    )[0].plan
    assert plan is not None and len(plan.histograms) == 1 and len(plan.quantiles) == 3
    r = conn.execute(
        "SELECT PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY age) AS a, MEDIAN(age) AS b, "
        "PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY age) AS c FROM visits"
    )
    a, b, c = r.rows[0]
    assert a <= b <= c


def test_explain_states_rank_and_value_error(conn: Connection) -> None:
    r = conn.execute("EXPLAIN SELECT city, MEDIAN(cost), MIN(visit_date) FROM visits GROUP BY city")
    text = "\n".join(row[0] for row in r.rows)
    assert "DP quantile" in text and "rows of the target rank" in text and "within one step (20)" in text
    assert "a DP estimate near the minimum; it may lie inside the data" in text
    assert "histogram 0 SQL" in text and "__dp_vrank <= 2" in text


def test_low_epsilon_still_answers_within_bounds(dataset: tuple[Path, list[tuple]]) -> None:
    c = _connect(dataset[0], "zcdp", "low")
    try:
        c.execute("SET dp.epsilon = 0.1")
        for _ in range(3):
            m, lo = c.execute("SELECT MEDIAN(cost), MIN(visit_date) FROM visits").rows[0]
            assert 0 <= m <= 5000 and dt.date(2020, 1, 1) <= lo <= dt.date(2025, 12, 31)
    finally:
        c.close()


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("SELECT MIN(patient_id) FROM visits", "42501"),
        ("SELECT MEDIAN(patient_id) FROM visits", "42501"),
        ("SELECT MAX(city) FROM visits", "0A000"),
        ("SELECT PERCENTILE_CONT(ARRAY[0.1, 0.5]) WITHIN GROUP (ORDER BY age) FROM visits", "0A000"),
        ("SELECT PERCENTILE_CONT(2) WITHIN GROUP (ORDER BY age) FROM visits", "22023"),
        ("SELECT MEDIAN(DISTINCT age) FROM visits", "0A000"),
    ],
)
def test_refusals_spend_nothing(conn: Connection, sql: str, sqlstate: str) -> None:
    before = conn.execute("SELECT * FROM dpsql.budget").rows
    with pytest.raises(DPSQLError) as info:
        conn.execute(sql)
    assert info.value.sqlstate == sqlstate, info.value
    assert conn.execute("SELECT * FROM dpsql.budget").rows == before


def test_histograms_are_part_of_the_timing_shape_and_validated(conn: Connection) -> None:
    """Two quantile-only queries share the trivial bounded SQL; their timing shapes (and audit
    hashes) still differ by their histogram queries, which are validated before the charge."""
    e = conn.engine
    a, b = e.rewrite("SELECT MEDIAN(cost) FROM visits"), e.rewrite("SELECT MEDIAN(age) FROM visits")
    assert a.sql == b.sql and e.shape(a) != e.shape(b)
    conn.execute("SELECT MEDIAN(age) FROM visits")
    assert e.validated(b) and not e.validated(a)


def test_post_processing_of_quantiles(conn: Connection, dataset: tuple[Path, list[tuple]]) -> None:
    rows = dataset[1]
    r = conn.execute("SELECT city, MEDIAN(age) AS m FROM visits GROUP BY city HAVING MEDIAN(age) > 10 ORDER BY m DESC, city")
    assert len(r.rows) == 3 and [x[1] for x in r.rows] == sorted((x[1] for x in r.rows), reverse=True)
    r = conn.execute("SELECT MAX(visit_date) - MIN(visit_date) AS span, MEDIAN(cost) / 2 AS half FROM visits")
    days = _truth(rows, 5)
    assert r.types == ("int4", "float8")
    assert abs(r.rows[0][0] - (days[-1] - days[0]).days) <= 20
