"""Derived tables and CTEs over public tables only are public relations (rewriter/public_relations.py):
at a huge ε the answer is plain DuckDB's answer of the exact bounded values, every key of the public
relation is released (a key without private rows as a noisy ~0), and a public body's error is raised
before the charge."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from engine_lib import Harness

from dpsql.errors import DPSQLError

TABLES = """
[tables.sales]
privacy_unit = "customer"
max_groups = 3
max_rows = 1
[tables.sales.columns]
store_id = {}
amount = { lower = 0.0, upper = 100.0 }
[tables.stores]
public = true
"""

# (dpsql's SQL, plain DuckDB's SQL of the exact bounded values): COUNT(*) counts the private rows of a
# group (a public row without private rows has no unit and counts nothing), plain COUNT(s.customer)
EXPECTED_REGIONS = ["east", "north", "south", "west"]  # west has no sales at all
QUERIES = [
    # the public-groups idiom (GoogleSQL's RIGHT JOIN on a SELECT DISTINCT of a public table)
    (
        "SELECT region, COUNT(*) AS n FROM sales s RIGHT JOIN (SELECT DISTINCT store_id, region FROM stores) AS g "
        "USING (store_id) GROUP BY region ORDER BY region",
        "SELECT region, COUNT(s.customer) AS n FROM sales s RIGHT JOIN (SELECT DISTINCT store_id, region FROM stores) AS g "
        "USING (store_id) GROUP BY region ORDER BY region",
        EXPECTED_REGIONS,
    ),
    # a public CTE with its own GROUP BY, joined on its key: its keys are public, released in full
    (
        "WITH dims AS (SELECT region, MIN(store_id) AS store_id FROM stores GROUP BY region) "
        "SELECT dims.region, SUM(s.amount) AS total FROM sales s JOIN dims ON s.store_id = dims.store_id "
        "GROUP BY dims.region ORDER BY dims.region",
        None,
        EXPECTED_REGIONS,
    ),
    # a VALUES list of public keys: store 9 does not exist (a noisy zero)
    (
        "SELECT g.k, COUNT(*) AS n FROM sales s RIGHT JOIN (VALUES (1), (4), (9)) AS g(k) ON s.store_id = g.k GROUP BY g.k ORDER BY g.k",
        "SELECT g.k, COUNT(s.customer) AS n FROM sales s RIGHT JOIN (VALUES (1), (4), (9)) AS g(k) ON s.store_id = g.k "
        "GROUP BY g.k ORDER BY g.k",
        [1, 4, 9],
    ),
]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pubrel") / "pubrel.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE stores AS SELECT * FROM (VALUES (1, 'north'), (2, 'north'), (3, 'south'), (4, 'east'), "
        "(5, 'west')) t(store_id, region)"
    )
    # one row per customer (max_rows = 1): the bounded values are the plain ones
    con.execute("CREATE TABLE sales AS SELECT i AS customer, 1 + i % 4 AS store_id, CAST(i % 7 AS DOUBLE) AS amount FROM range(400) t(i)")
    con.close()
    return path


@pytest.mark.parametrize(("sql", "plain_sql", "keys"), QUERIES)
def test_answer_is_duckdbs_at_huge_epsilon(
    make_harness: Callable[..., Harness], db: Path, sql: str, plain_sql: str | None, keys: list[object]
) -> None:
    h = make_harness(database=db, tables=TABLES, max_epsilon=1e6, epsilon=5e6)
    session = h.engine.session("alice")
    session.execute("SET dp.epsilon = 1e5")
    rw, noise = session.plan(sql)
    assert rw.plan is not None and rw.plan.keys_public  # every key of the public relation, no partition selection
    got = session.execute(sql).rows
    plain = duckdb.connect(str(db), read_only=True).execute(plain_sql or sql).fetchall()
    assert [r[0] for r in got] == keys  # every key of the public relation, those without sales too
    want = {p[0]: p[1] for p in plain}
    # 6 σ of the largest released noise (false failure < 1e-8 per value) plus the rounding of the released value
    tolerance = 6 * max(float(s.released_scale) for s in noise.stats) + 0.05
    for region, value in got:
        expected = want.get(region) or 0.0  # a key without private rows: a noisy zero
        assert abs(float(value or 0.0) - float(expected)) < tolerance, (region, value, expected)


def test_public_body_error_before_the_charge(make_harness: Callable[..., Harness], db: Path) -> None:
    h = make_harness(database=db, tables=TABLES, max_epsilon=1e6, epsilon=5e6)
    session = h.engine.session("alice")
    sql = (
        "SELECT g.r, COUNT(*) FROM sales s JOIN (SELECT store_id, CAST(region AS INTEGER) AS r FROM stores) g "
        "ON s.store_id = g.store_id GROUP BY g.r"
    )
    with pytest.raises(DPSQLError):
        session.execute(sql)
    assert not [e for e in h.recorder.events if e.kind == "charge"]  # nothing was spent
