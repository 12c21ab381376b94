"""Quantile SQL (rewriter/quantile_sql.py): the spellings, the total per-row candidate index on
both value kinds, and the bounded histogram's per-unit guarantee, checked on DuckDB by removing
every unit in turn (a direct T1 replay of the histogram query)."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from fractions import Fraction

import duckdb
import pandas as pd
import pytest
import sqlglot
from sqlglot import exp

from dpsql.errors import InvalidParameterValue, UnsupportedQuery
from dpsql.rewriter import quantile_sql as QS


def _call(sql: str) -> QS.QuantileCall | None:
    return QS.quantile_call(sqlglot.parse_one(f"SELECT {sql} FROM t", read="postgres").selects[0])


@pytest.mark.parametrize(
    ("sql", "kind", "alpha"),
    [
        ("PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY t.x)", "cont", Fraction(1, 2)),
        ("PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY t.x)", "disc", Fraction(1, 4)),
        ("PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY t.x DESC)", "cont", Fraction(3, 4)),
        ("MEDIAN(t.x)", "cont", Fraction(1, 2)),
        ("QUANTILE_CONT(t.x, 0.9)", "cont", Fraction(9, 10)),
        ("QUANTILE_DISC(t.x, 0.1)", "disc", Fraction(1, 10)),
        ("QUANTILE(t.x, 0.3)", "disc", Fraction(3, 10)),
        ("APPROX_QUANTILE(t.x, 0.75)", "cont", Fraction(3, 4)),
        ("MIN(t.x)", "min", None),
        ("MAX(t.x)", "max", None),
    ],
)
def test_spellings(sql: str, kind: str, alpha: Fraction | None) -> None:
    c = _call(sql)
    assert c is not None and c.kind == kind and c.alpha == alpha and c.input.sql() == "t.x"


def test_other_aggregates_are_not_quantiles() -> None:
    assert _call("SUM(t.x)") is None and _call("COUNT(*)") is None


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("PERCENTILE_CONT(ARRAY[0.25, 0.5]) WITHIN GROUP (ORDER BY t.x)", UnsupportedQuery),
        ("PERCENTILE_CONT(t.y) WITHIN GROUP (ORDER BY t.x)", UnsupportedQuery),
        ("PERCENTILE_CONT('0.5') WITHIN GROUP (ORDER BY t.x)", UnsupportedQuery),
        ("PERCENTILE_CONT(1.5) WITHIN GROUP (ORDER BY t.x)", InvalidParameterValue),
        ("QUANTILE_CONT(t.x, -0.5)", InvalidParameterValue),
        ("QUANTILE_CONT(t.x, 0.1234567)", InvalidParameterValue),
        ("QUANTILE_CONT(t.x)", UnsupportedQuery),
        ("PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY t.x, t.y)", UnsupportedQuery),
    ],
)
def test_refusals(sql: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        _call(sql)


# ---------------------------------------------------------------------------------------------
# the per-row candidate index


def _bins(vg: QS.ValueGrid, values: list[object], sql_type: str) -> list[int | None]:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t (i INT, x {sql_type})")
    con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
    expr = QS.bin_expression(exp.column("x", table="t"), vg).sql("duckdb")
    return [r[0] for r in con.execute(f"SELECT {expr} FROM t ORDER BY i").fetchall()]


def test_numeric_index_is_total_and_clamped() -> None:
    vg = QS.numeric_grid(Fraction(-5), Fraction(20), integral=False)
    assert vg.grid.step == Fraction(1, 10) and vg.grid.size == 251
    got = _bins(vg, [None, float("nan"), float("inf"), float("-inf"), -1e308, 1e308, -5.0, 20.0, 0.0, 0.04, 0.06, 19.99], "DOUBLE")
    assert got == [None, 250, 250, 0, 0, 250, 0, 250, 50, 50, 51, 250]
    assert vg.decode(50) == 0.0 and vg.decode(51) == 0.1


def test_integer_index_and_decode() -> None:
    vg = QS.numeric_grid(Fraction(0), Fraction(120), integral=True)
    assert _bins(vg, [None, -(2**63), 2**63 - 1, 0, 37, 120], "BIGINT") == [None, 0, 120, 0, 37, 120]
    assert vg.decode(37) == 37 and isinstance(vg.decode(37), int) and vg.pg_type == "int8"


def test_date_index() -> None:
    vg = QS.time_grid(dt.date(2020, 1, 1), dt.date(2025, 12, 31))
    assert vg.grid.step == 10 and vg.pg_type == "date"
    got = _bins(vg, [None, dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(2020, 1, 1), dt.date(2020, 1, 8), dt.date(2020, 1, 3)], "DATE")
    assert got == [None, 0, vg.grid.size - 1, 0, 1, 0]  # the nearest candidate: 7 days → 0.7 → 1, 2 days → 0.2 → 0
    assert vg.decode(1) == dt.date(2020, 1, 11)


def test_date_index_on_infinite_dates() -> None:
    vg = QS.time_grid(dt.date(2020, 1, 1), dt.date(2020, 12, 31))
    con = duckdb.connect()
    expr = QS.bin_expression(exp.column("x", table="t"), vg).sql("duckdb")
    rows = con.execute(f"SELECT {expr} FROM (VALUES ('infinity'::DATE), ('-infinity'::DATE)) AS t(x)").fetchall()
    assert sorted(r[0] for r in rows) == [0, vg.grid.size - 1]


def test_timestamp_index() -> None:
    lo, hi = dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 2)
    vg = QS.time_grid(lo, hi)
    assert vg.grid.step == 500 and vg.pg_type == "timestamp"
    got = _bins(vg, [None, dt.datetime(2019, 1, 1), dt.datetime(2021, 1, 1), dt.datetime(2020, 1, 1, 0, 10)], "TIMESTAMP")
    assert got == [None, 0, vg.grid.size - 1, 1]
    assert vg.decode(1) == dt.datetime(2020, 1, 1, 0, 8, 20)


# ---------------------------------------------------------------------------------------------
# the histogram query: T1 replay by removing each unit


MAX_ROWS, MAX_GROUPS = 3, 2


def _histogram_sql(rank_groups: bool = True, keyed: bool = True) -> str:
    vg = QS.numeric_grid(Fraction(0), Fraction(10), integral=True)
    rows = exp.select(
        exp.alias_(exp.column("uid", table="t"), "__dp_uid"),
        *([exp.alias_(exp.column("g", table="t"), "__dp_k0")] if keyed else []),
        exp.alias_(QS.bin_expression(exp.column("x", table="t"), vg), QS.BIN_COLUMN),
    ).from_("t").where("t.uid IS NOT NULL")
    q = QS.histogram_query(
        rows, ["__dp_k0"] if keyed else [], max_rows=MAX_ROWS, max_groups=MAX_GROUPS, rank_groups=rank_groups, salt="s", dialect="duckdb"
    )
    return q.sql("duckdb")


def _run(con: duckdb.DuckDBPyConnection, sql: str, keyed: bool) -> Counter:
    out: Counter = Counter()
    for r in con.execute(sql).fetchall():
        key = (r[0], r[1]) if keyed else (None, r[0])
        out[key] += r[-1]
    return out


@pytest.mark.parametrize("keyed", [True, False])
def test_histogram_t1_replay(keyed: bool) -> None:
    """On 30 random databases plus one with a unit of 10⁴ rows in every group and NULL/NaN values,
    removing any unit changes at most max_groups groups, each by at most max_rows values (L1 over
    the group's candidates)."""
    rng = random.Random(1)
    sql = _histogram_sql(keyed=keyed)
    for db in range(31):
        rows: list[tuple[object, ...]] = []
        units = rng.randrange(1, 9)
        for u in range(units):
            for _ in range(rng.randrange(0, 12)):
                rows.append((u, rng.choice("abcdef"), rng.choice([None, float("nan"), rng.uniform(-3, 13), float(rng.randrange(11))])))
        if db == 30:
            rows += [(99, "abcdef"[i % 6], float(i % 11)) for i in range(10_000)]
            rows += [(None, "a", 1.0)] * 5
        con = duckdb.connect()
        con.register("frame", pd.DataFrame(rows or [(None, None, None)], columns=["uid", "g", "x"]))
        con.execute("CREATE TABLE full_t AS SELECT uid::INT AS uid, g::TEXT AS g, x::DOUBLE AS x FROM frame")
        con.execute("CREATE VIEW t AS SELECT * FROM full_t")
        full = _run(con, sql, keyed)
        for u in sorted({r[0] for r in rows if r[0] is not None}):
            con.execute(f"CREATE OR REPLACE VIEW t AS SELECT * FROM full_t WHERE uid IS DISTINCT FROM {u}")
            less = _run(con, sql, keyed)
            per_group: Counter = Counter()
            for key in set(full) | set(less):
                per_group[key[0]] += abs(full[key] - less[key])
            changed = [g for g, d in per_group.items() if d]
            assert len(changed) <= (MAX_GROUPS if keyed else 1), (db, u, per_group)
            assert all(d <= MAX_ROWS for d in per_group.values()), (db, u, per_group)
        con.execute("CREATE OR REPLACE VIEW t AS SELECT * FROM full_t")


def test_histogram_keeps_values_of_a_heavy_unit_spread() -> None:
    """A unit's kept values are chosen by a salted hash of its own (unit, candidate): not always
    its smallest values."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT u AS uid, 'a' AS g, (i % 11)::DOUBLE AS x FROM range(50) r(u), range(11) s(i)")
    got = _run(con, _histogram_sql(), True)
    assert sum(got.values()) == 50 * MAX_ROWS
    assert len({b for (_, b) in got}) >= 8  # kept values spread over the candidates
