"""Star-schema shapes: a private fact table joined to public dimensions, grouped by several columns of
one dimension (TPC-H's revenue-per-supplier). The released key set is the dimension's own rows —
not the cross product of each column's values, which made n suppliers n⁴ groups and timed out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from engine_lib import Harness

SUPPLIERS, ITEMS = 300, 20_000

TABLES = """
[tables.lineitem]
privacy_unit = "l_custkey"
max_groups = 2
max_rows = 10
[tables.lineitem.columns]
l_suppkey = {}
l_price = { lower = 0.0, upper = 1000.0 }
[tables.supplier]
public = true
"""


@pytest.fixture(scope="module")
def star_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("star") / "star.duckdb"
    con = duckdb.connect(str(path))
    con.execute(f"""CREATE TABLE supplier AS SELECT i AS s_suppkey, 'Supplier#' || i AS s_name, 'addr ' || (i * 7 % 101) AS s_address,
                    '555-' || lpad(CAST(i AS TEXT), 4, '0') AS s_phone FROM range(1, {SUPPLIERS + 1}) t(i)""")
    con.execute(f"""CREATE TABLE lineitem AS SELECT i % 2000 AS l_custkey, 1 + (i * 37 % {SUPPLIERS}) AS l_suppkey,
                    (i * 13 % 1000)::DOUBLE AS l_price FROM range({ITEMS}) t(i)""")
    con.close()
    return path


SUPPLIER_REVENUE = (
    "SELECT s.s_suppkey, s.s_name, s.s_address, s.s_phone, SUM(l.l_price) AS total_revenue "
    "FROM lineitem l JOIN supplier s ON l.l_suppkey = s.s_suppkey "
    "GROUP BY s.s_suppkey, s.s_name, s.s_address, s.s_phone ORDER BY total_revenue DESC LIMIT 1"
)


def test_supplier_revenue_releases_one_group_per_supplier(make_harness: Callable[..., Harness], star_db: Path) -> None:
    h = make_harness(database=star_db, tables=TABLES, max_epsilon=1e6)
    session = h.engine.session("alice")
    rw, _ = session.plan(SUPPLIER_REVENUE)
    assert rw.plan is not None and rw.plan.keys_public and rw.plan.public_keys_sql is not None
    assert rw.plan.public_keys_sql.count("SELECT DISTINCT") == 1  # one source: the supplier rows
    keys = duckdb.connect(str(star_db), read_only=True).execute(rw.plan.public_keys_sql).fetchall()
    assert len(keys) == SUPPLIERS  # the suppliers' own tuples, not SUPPLIERS ** 4
    rows = session.execute(SUPPLIER_REVENUE).rows
    assert len(rows) == 1 and len(rows[0]) == 5 and 1 <= rows[0][0] <= SUPPLIERS


def test_keys_of_two_dimensions_are_crossed(make_harness: Callable[..., Harness], star_db: Path) -> None:
    """Two aliases of the dimension are two rows: their key tuples are crossed, as the join allows."""
    h = make_harness(database=star_db, tables=TABLES)
    rw, _ = h.engine.session("alice").plan(
        "SELECT a.s_name, b.s_phone, COUNT(*) FROM lineitem l JOIN supplier a ON l.l_suppkey = a.s_suppkey "
        "JOIN supplier b ON l.l_suppkey = b.s_suppkey WHERE a.s_suppkey < 4 AND b.s_suppkey < 4 GROUP BY a.s_name, b.s_phone")
    assert rw.plan is not None and rw.plan.public_keys_sql is not None
    assert rw.plan.public_keys_sql.count("SELECT DISTINCT") == 2
