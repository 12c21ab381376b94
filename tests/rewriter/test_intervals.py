"""DP_INTERVAL_LOW/HIGH in the rewriter: post-processing only — the bounded SQL, statistics and
sensitivities are those of the bare aggregates; the interval bounds are interval arithmetic over
noisy-table columns filled after noise."""

from __future__ import annotations

import re

import pytest

from dpsql.errors import DPSQLError
from dpsql.rewriter import rewrite
from dpsql.rewriter.intervals import interval_bounds
from dpsql.schema import Catalog


def test_intervals_change_no_statistic(catalog: Catalog) -> None:
    bare = rewrite("SELECT department, COUNT(*), AVG(cost) FROM visits GROUP BY department", catalog)
    with_iv = rewrite(
        "SELECT department, COUNT(*), AVG(cost), DP_INTERVAL_LOW(AVG(cost)) AS lo, DP_INTERVAL_HIGH(COUNT(*) * 2) AS hi "
        "FROM visits GROUP BY department", catalog)
    assert bare.plan is not None and with_iv.plan is not None
    salt = re.compile(r"'[0-9a-f]{16}'")  # the per-query salt of the group ranking hashes the query text
    assert salt.sub("<salt>", with_iv.sql) == salt.sub("<salt>", bare.sql) and with_iv.plan.stats == bare.plan.stats
    assert with_iv.plan.max_groups == bare.plan.max_groups
    names = [n for n, _ in with_iv.plan.post_types]
    assert "__dp_a1_lo_i0" in names and "__dp_a0_hi_i1" in names
    assert [o.name for o in with_iv.plan.outputs] == ["department", "count", "avg", "lo", "hi"]
    assert [o.pg_type for o in with_iv.plan.outputs][-2:] == ["float8", "int8"]


def test_interval_arithmetic_is_inclusion_monotone() -> None:
    """Check the generated bounds numerically: for random points of the component boxes, the
    expression's value lies within [low, high] evaluated by DuckDB."""
    import random

    import duckdb
    import sqlglot

    expr = sqlglot.parse_one("(__dp_a0 - 3 * __dp_a1) / (__dp_a2 + 1) + ABS(__dp_a1 - __dp_a0)", read="duckdb")
    lo, hi = interval_bounds(expr, "i0")
    con = duckdb.connect()
    rng = random.Random(7)
    for _ in range(200):
        box = {j: sorted(rng.uniform(-50, 50) for _ in range(2)) for j in range(3)}
        box[2] = [abs(box[2][0]) + 0.5, abs(box[2][0]) + 0.5 + abs(box[2][1])]
        cols = {f"__dp_a{j}_lo_i0": b[0] for j, b in box.items()} | {f"__dp_a{j}_hi_i0": b[1] for j, b in box.items()}
        point = {f"__dp_a{j}": rng.uniform(*b) for j, b in box.items()}
        values = ", ".join(f"{v!r} AS {k}" for k, v in (cols | point).items())
        low, high, value = con.execute(
            f"SELECT {lo.sql('duckdb')}, {hi.sql('duckdb')}, {expr.sql('duckdb')} FROM (SELECT {values})").fetchone()
        assert low - 1e-9 <= value <= high + 1e-9


@pytest.mark.parametrize(
    ("sql", "state"),
    [
        ("SELECT DP_INTERVAL_LOW(COUNT(*)) FROM visits GROUP BY DP_INTERVAL_LOW(age)", "0A000"),
        ("SELECT SUM(CASE WHEN DP_INTERVAL_LOW(age) > 1 THEN 1 END) FROM visits", "0A000"),
        ("SELECT DP_INTERVAL_HIGH(SQRT(COUNT(*))) FROM visits", "0A000"),
        ("SELECT DP_INTERVAL_HIGH(age) FROM visits", "42501"),
    ],
)
def test_interval_refusals(catalog: Catalog, sql: str, state: str) -> None:
    with pytest.raises(DPSQLError) as e:
        rewrite(sql, catalog)
    assert e.value.sqlstate == state
