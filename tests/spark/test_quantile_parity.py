"""Quantiles, MEDIAN and MIN/MAX on Spark: the bounded histogram queries give exactly DuckDB's
counts on the same data (DuckDB's file and the Parquet files written from it), with ANSI on and
off (a policy where no unit loses a value or a group, so the engines' different tie-break hashes
cannot matter); the histogram SQL is validated on Spark before the charge; values at, beyond and
between the bounds, NULL and NaN bin alike on both engines and raise nothing under either mode;
and the whole query path answers on Spark."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import pytest
from sparkenv import SparkEnv, write_policy
from sqlglot import exp

from dpsql.policy import load_policy
from dpsql.proxy.backends.base import Backend
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.backends.spark import SparkBackend
from dpsql.proxy.engine import Engine
from dpsql.rewriter.quantile_sql import bin_expression, numeric_grid, time_grid

pytestmark = pytest.mark.spark

QUERIES = [
    "SELECT MEDIAN(cost), MIN(age), MAX(length_of_stay) FROM visits",
    "SELECT department, PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY cost) FROM visits GROUP BY department",
    "SELECT diagnosis, PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY age DESC) FROM visits GROUP BY diagnosis",
    "SELECT sex, MIN(visit_date), MAX(visit_date), QUANTILE_CONT(cost * 2 + age, 0.5) FROM visits WHERE age > 20 GROUP BY sex",
    "SELECT department_id, MEDIAN(length_of_stay) FILTER (WHERE cost > 1000) FROM visits GROUP BY department_id",
    "SELECT MAX(cost / 3), MIN(age - 200), MEDIAN(CAST(age AS DOUBLE) / 7) FROM visits",
]
KINDS = ("duckdb", "spark", "spark-noansi")


def _policy(env: SparkEnv, tmp: Path, kind: str) -> Path:
    ansi = kind != "spark-noansi"
    path = write_policy(tmp, "quantiles", env, "duckdb" if kind == "duckdb" else "spark", ansi=ansi, max_groups=40, epsilon=1e6,
                        delta=1e-3)
    text = path.read_text()
    text = text.replace("max_rows = 5", "max_rows = 100000", 1)
    text = text.replace("visit_date = {}", "visit_date = { lower = 2015-01-01, upper = 2030-12-31 }", 1)
    path.write_text(text.replace("max_epsilon_per_query = 2.0", "max_epsilon_per_query = 10000.0"))
    return path


@pytest.fixture(scope="module")
def engines(spark: SparkEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Engine]]:
    out: dict[str, Engine] = {}
    try:
        for kind in KINDS:
            policy = load_policy(_policy(spark, tmp_path_factory.mktemp(f"q-{kind}"), kind))
            backend: Backend = DuckDBBackend(policy) if kind == "duckdb" else SparkBackend(policy)
            out[kind] = Engine(policy, backend)
        yield out
    finally:
        for e in out.values():
            e.close()


def _norm(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str | dt.date):
        return v
    if isinstance(v, int | Decimal | float):
        return Fraction(v)
    return v


def _histograms(engine: Engine, sql: str) -> list[Counter[tuple[Any, ...]]]:
    rw = engine.rewrite(sql)
    assert rw.plan is not None and rw.plan.histograms
    nk = len(rw.plan.keys)
    out = []
    with engine.backend.session() as b:
        for h in rw.plan.histograms:
            c: Counter[tuple[Any, ...]] = Counter()
            for r in b.execute(h.sql).rows:
                assert isinstance(r[nk], int) and isinstance(r[nk + 1], int), r
                c[(tuple(_norm(v) for v in r[:nk]), r[nk])] += r[nk + 1]
            out.append(c)
    return out


@pytest.mark.parametrize("sql", QUERIES)
def test_histograms_are_identical(engines: dict[str, Engine], sql: str) -> None:
    """Exact histogram counts: DuckDB = Spark (ANSI on) = Spark (ANSI off), none of them empty."""
    got = {kind: _histograms(engines[kind], sql) for kind in KINDS}
    assert len(got["duckdb"]) == len(got["spark"]) == len(got["spark-noansi"])
    for a, b, c in zip(got["duckdb"], got["spark"], got["spark-noansi"], strict=True):
        assert sum(a.values()) > 0
        assert a == b == c


@pytest.mark.parametrize("sql", QUERIES[:2])
def test_plans_and_costs_are_identical(engines: dict[str, Engine], sql: str) -> None:
    """The same quantile statistics, grids and charge on both engines (only the SQL differs)."""
    plans = {}
    for kind in ("duckdb", "spark"):
        rw, noise = engines[kind].session("alice").plan(sql)
        assert rw.plan is not None and noise is not None
        plans[kind] = (rw.plan.quantiles,
                       [h.candidates for h in rw.plan.histograms], noise.cost)
    assert plans["duckdb"] == plans["spark"]


def test_histogram_sql_is_validated_before_the_charge(engines: dict[str, Engine]) -> None:
    """Every histogram query is verified and analysed on Spark while nothing is charged yet."""
    engine = engines["spark"]
    session = engine.session("bob")
    backend = engine.backend
    assert isinstance(backend, SparkBackend)
    seen: list[tuple[str, float]] = []
    original = backend.validate

    def recording(sql: str) -> None:
        seen.append((sql, sum(s.spent_rho for s in session.budget())))
        original(sql)

    backend.validate = recording  # type: ignore[method-assign]
    try:
        sql = QUERIES[3]
        session.execute("SET dp.epsilon = 100")
        session.execute(sql)
    finally:
        del backend.validate
    rw = engine.rewrite(sql)
    assert rw.plan is not None
    validated = {s: spent for s, spent in seen}
    for h in rw.plan.histograms:
        assert validated.get(h.sql) == 0, "a histogram query was not validated before the charge"
    assert sum(s.spent_rho for s in session.budget()) > 0


def test_query_path_on_spark(engines: dict[str, Engine]) -> None:
    """MIN/MEDIAN/MAX answer on Spark, within the declared bounds, with the extreme-value notice."""
    for kind in ("spark", "spark-noansi"):
        s = engines[kind].session("alice")
        s.execute("SET dp.epsilon = 5000")
        r = s.execute("SELECT sex, MIN(visit_date), MEDIAN(cost), MAX(age) FROM visits GROUP BY sex")
        assert sorted(row[0] for row in r.rows) == ["F", "M"]
        for _, d, m, a in r.rows:
            assert isinstance(d, dt.date) and 0 <= m <= 5000 and 0 <= a <= 100
        assert any("may lie inside the data" in n for n in r.notices)


# -- the bin index on edge values: the same candidate on both engines, no error under ANSI on or off

EDGE_DOUBLES = [None, float("nan"), float("inf"), float("-inf"), -1e308, 1e308, -5.0, -4.95, -4.9500000001, 0.0, -0.0,
                0.05, 0.15, 0.25, 19.95, 19.999999, 20.0, 20.05, 1e-300, 2.5e-1, 7.35, 12.45]
EDGE_INTS = [None, -9223372036854775808, 9223372036854775807, -6, -5, -4, 0, 19, 20, 21, 2**53 + 1, -(2**53) - 1]
EDGE_DATES = [None, dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(2019, 12, 31), dt.date(2020, 1, 1), dt.date(2020, 1, 2),
              dt.date(2020, 12, 31), dt.date(2021, 1, 1)]
EDGE_TIMESTAMPS = [None, dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59), dt.datetime(2020, 1, 1),
                   dt.datetime(2020, 1, 1, 0, 0, 1), dt.datetime(2020, 1, 1, 0, 0, 0, 500000), dt.datetime(2020, 1, 1, 0, 0, 0, 499999),
                   dt.datetime(2020, 1, 1, 12, 0, 0, 500001), dt.datetime(2020, 1, 2), dt.datetime(2020, 1, 2, 0, 0, 1)]


def _duck_bins(values: list[Any], sql_type: str, expr: exp.Expression) -> list[Any]:
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"CREATE TABLE t (i INTEGER, x {sql_type})")
        con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
        return [r[0] for r in con.execute(f"SELECT {expr.sql('duckdb')} FROM t ORDER BY i").fetchall()]
    finally:
        con.close()


def _spark_bins(env: SparkEnv, values: list[Any], spark_type: str, expr: exp.Expression, ansi: bool) -> list[Any]:
    from pyspark.sql.types import DecimalType, DoubleType, IntegerType, LongType, StructField, StructType

    types: dict[str, Any] = {"double": DoubleType(), "bigint": LongType(), "decimal(10,2)": DecimalType(10, 2)}
    with env.client() as s:
        s.conf.set("spark.sql.ansi.enabled", "true" if ansi else "false")
        s.conf.set("spark.sql.session.timeZone", "UTC")
        if spark_type in types:
            schema = StructType([StructField("i", IntegerType()), StructField("x", types[spark_type])])
            df = s.createDataFrame(list(enumerate(values)), schema)
        else:
            df = s.sql(f"SELECT * FROM VALUES {', '.join(f'({i}, {_literal(v, spark_type)})' for i, v in enumerate(values))} AS v(i, x)")
        df.createOrReplaceTempView("t")
        return [r[0] for r in s.sql(f"SELECT {expr.sql('spark')} FROM t ORDER BY i").collect()]


EDGE_DECIMALS = [None, Decimal("-99999999.99"), Decimal("99999999.99"), Decimal("0.00"), Decimal("0.01"), Decimal("2500.00"),
                 Decimal("1234.56"), Decimal("4999.99"), Decimal("5000.00"), Decimal("5000.01"), Decimal("-0.01")]


def _literal(v: dt.date | None, spark_type: str) -> str:
    if v is None:
        return "NULL"
    text = v.isoformat(sep=" ") if isinstance(v, dt.datetime) else v.isoformat()
    return f"{spark_type.upper()} '{text}'"


@pytest.mark.parametrize("case", ["double", "decimal", "bigint", "date", "timestamp"])
def test_edge_values_bin_alike_without_errors(spark: SparkEnv, case: str) -> None:
    x = exp.column("x", table="t")
    if case == "double":
        vg, fam, values = numeric_grid(Fraction(-5), Fraction(20), integral=False), "float", EDGE_DOUBLES
        duck_t, spark_t = "DOUBLE", "double"
    elif case == "decimal":
        vg, fam, values = numeric_grid(Fraction(0), Fraction(5000), integral=False), "numeric", EDGE_DECIMALS
        duck_t, spark_t = "DECIMAL(10, 2)", "decimal(10,2)"
    elif case == "bigint":
        vg, fam, values, duck_t, spark_t = numeric_grid(Fraction(-5), Fraction(20), integral=True), "int", EDGE_INTS, "BIGINT", "bigint"
    elif case == "date":
        vg, fam, values, duck_t, spark_t = time_grid(dt.date(2020, 1, 1), dt.date(2020, 12, 31)), "date", EDGE_DATES, "DATE", "date"
    else:
        vg, fam = time_grid(dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 2)), "timestamp"
        values, duck_t, spark_t = EDGE_TIMESTAMPS, "TIMESTAMP", "timestamp"
    duck = _duck_bins(values, duck_t, bin_expression(x, vg))
    spark_expr = bin_expression(x, vg, "spark", fam)
    on = _spark_bins(spark, values, spark_t, spark_expr, ansi=True)
    off = _spark_bins(spark, values, spark_t, spark_expr, ansi=False)
    assert on == off == duck, list(zip(values, duck, on, off, strict=True))
    assert all(b is None or 0 <= b < vg.grid.size for b in duck)
