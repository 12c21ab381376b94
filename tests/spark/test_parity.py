"""The engine on DuckDB and on Spark, same data, same assertions — the query shapes of the
PostgreSQL parity suite (``tests/postgres/test_engine_parity.py``): the same plans and costs, the
same refusals and EXPLAIN, and identical exact bounded statistics on DuckDB, Spark with ANSI mode
on and Spark with ANSI mode off (the key correctness check of the Spark dialect).

Spark serves the hospital tables as catalog tables over Parquet files written from the DuckDB file
DuckDB serves. Statistical checks use 6σ of the noise plan's own scale (a discrete Gaussian exceeds
it with probability < 2·10⁻⁹ per check; this file makes < 100 such checks, < 10⁻⁶ in all).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import test_engine_parity as pg_parity  # tests/postgres (on sys.path through sparkenv)
from sparkenv import SparkEnv, write_policy

from dpsql.errors import DPSQLError
from dpsql.policy import load_policy
from dpsql.proxy.backends.base import Backend, ResultSet
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.backends.spark import SparkBackend
from dpsql.proxy.engine import Engine

pytestmark = pytest.mark.spark

QUERIES: dict[str, str] = pg_parity.QUERIES
# quantiles, MEDIAN and MIN/MAX run on Spark too (tests/spark/test_quantile_parity.py); MAX of the unit stays refused on both
REFUSED: list[str] = [*pg_parity.REFUSED, "SELECT reflect('java.lang.System', 'getProperty', 'user.name')",
                      "SELECT COUNT(*) FROM text.`/etc/hostname`", "SELECT java_method('java.lang.Runtime', 'getRuntime') FROM visits"]
SIGMAS = 6
_STRATEGY_NOTES = pg_parity._STRATEGY_NOTES

# kinds: DuckDB, Spark with ANSI on, Spark with ANSI off
KINDS = ("duckdb", "spark", "spark-noansi")


def _engine(env: SparkEnv, tmp: Path, name: str, kind: str, **options: Any) -> Engine:
    ansi = kind != "spark-noansi"
    policy = load_policy(write_policy(tmp, name, env, "duckdb" if kind == "duckdb" else "spark", ansi=ansi, **options))
    backend: Backend = DuckDBBackend(policy) if kind == "duckdb" else SparkBackend(policy)
    return Engine(policy, backend)


@pytest.fixture(scope="module")
def engines(spark: SparkEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Engine]]]:
    """``engines[policy][kind]``: "hospital" (max_groups = 3) and "wide" (max_groups = 40: no unit
    loses a group, so the bounded results must agree exactly; the two engines break ties with
    different hashes)."""
    tmp = tmp_path_factory.mktemp("spark-parity")
    out: dict[str, dict[str, Engine]] = {"hospital": {}, "wide": {}}
    try:
        for kind in ("duckdb", "spark"):
            out["hospital"][kind] = _engine(spark, tmp, "hospital", kind, max_groups=3, epsilon=1e6, delta=1e-3)
        for kind in KINDS:
            out["wide"][kind] = _engine(spark, tmp, "wide", kind, max_groups=40, epsilon=1e6, delta=1e-3)
        yield out
    finally:
        for by_kind in out.values():
            for e in by_kind.values():
                e.close()


def _bounded(engine: Engine, sql: str) -> tuple[dict[tuple[Any, ...], tuple[int, ...]], ResultSet]:
    """The bounded SQL's exact statistics on ``engine``'s backend: normalised key → integers."""
    rw = engine.rewrite(sql)
    assert rw.plan is not None
    with engine.backend.session() as b:
        rs = b.execute(rw.sql)
    idx = {c: i for i, c in enumerate(rs.columns)}
    cells: dict[tuple[Any, ...], tuple[int, ...]] = {}
    for r in rs.rows:
        key = tuple(pg_parity._norm_key(r[idx[k.column]]) for k in rw.plan.keys)
        assert key not in cells, f"group {key} appears twice"
        cells[key] = tuple(pg_parity._exact_int(r[idx[s.column]], f"{sql} / {s.column}") for s in rw.plan.stats)
    if not rw.plan.keys and not cells:
        cells[()] = (0,) * len(rw.plan.stats)
    return cells, rs


@pytest.mark.parametrize("name", QUERIES)
def test_plans_and_costs_are_identical(engines: dict[str, dict[str, Engine]], name: str) -> None:
    """The release plan and the noise plan (hence the charge) do not depend on the backend."""
    plans = {}
    for kind, engine in engines["hospital"].items():
        rw, noise = engine.session("alice").plan(QUERIES[name])
        assert rw.plan is not None and noise is not None and rw.dialect == kind
        engine_sql = {f.name: None for f in dataclasses.fields(rw.plan) if f.name.endswith("_sql") and f.name != "post_sql"}
        description = tuple(d for d in rw.plan.description if not d.startswith(_STRATEGY_NOTES))
        plans[kind] = (dataclasses.replace(rw.plan, description=description, **engine_sql), noise)
    assert plans["duckdb"] == plans["spark"]


@pytest.mark.parametrize("name", QUERIES)
def test_exact_bounded_statistics_are_identical(engines: dict[str, dict[str, Engine]], name: str) -> None:
    """DuckDB, Spark (ANSI on) and Spark (ANSI off) compute exactly the same integer statistics
    for exactly the same groups, every one an exact integer (DECIMAL(38, 0) sums on Spark)."""
    results = {kind: _bounded(engines["wide"][kind], QUERIES[name]) for kind in KINDS}
    assert results["duckdb"][0] == results["spark"][0] == results["spark-noansi"][0]
    stats = {s.column for s in engines["wide"]["spark"].rewrite(QUERIES[name]).plan.stats}  # type: ignore[union-attr]
    rs = results["spark"][1]
    for col, typ in zip(rs.columns, rs.types, strict=True):
        if col in stats:
            assert typ in ("numeric", "int8"), (col, typ)


@pytest.mark.parametrize("name", ["declared_keys_avg", "public_join_sum"])
def test_noisy_counts_and_sums_are_within_their_error_bounds(engines: dict[str, dict[str, Engine]], name: str) -> None:
    """Each released COUNT/SUM on Spark is within 6σ of the exact bounded statistic."""
    engine = engines["wide"]["spark"]
    session = engine.session("alice")
    rw, noise = session.plan(QUERIES[name])
    assert rw.plan is not None and noise is not None
    exact, _ = _bounded(engine, QUERIES[name])
    result = session.execute(QUERIES[name])
    nkeys = len(rw.plan.keys)
    index = {s.column: j for j, s in enumerate(rw.plan.stats)}
    checked = 0
    for row in result.rows:
        cells = exact.get(tuple(pg_parity._norm_key(v) for v in row[:nkeys]), (0,) * len(rw.plan.stats))
        for value, agg in zip(row[nkeys:], rw.plan.aggregates, strict=False):
            if agg.kind not in ("count", "sum") or (agg.kind == "sum" and agg.center):
                continue
            (col,) = agg.stats
            truth = Fraction(cells[index[col]]) * rw.plan.stats[index[col]].grid
            assert abs(Fraction(value) - truth) <= SIGMAS * noise.stat(col).released_scale, (row, agg.label)
            checked += 1
    assert checked > 0


# the shapes whose key types differ by engine (pg_parity.KEY_TYPE_DIFFERS) and two plain ones
KEY_TYPE_SHAPES = [*pg_parity.KEY_TYPE_DIFFERS, "declared_keys_avg", "partition_selection"]


@pytest.mark.parametrize("name", KEY_TYPE_SHAPES)
def test_released_key_types_are_identical(engines: dict[str, dict[str, Engine]], name: str) -> None:
    """Released keys have the same Python types on both backends (converted to the plan's types).
    Under partition selection a side may release no group at all (the threshold is noisy, and
    monthly groups of this small data set are near it): then there is nothing to compare."""
    kinds = {}
    for kind in ("duckdb", "spark"):
        session = engines["hospital"][kind].session("alice")
        rw, _ = session.plan(QUERIES[name])
        assert rw.plan is not None
        nkeys = len(rw.plan.keys)
        rows = session.execute(QUERIES[name]).rows
        kinds[kind] = sorted({tuple(type(v).__name__ for v in r[:nkeys] if v is not None) for r in rows})
    if kinds["duckdb"] and kinds["spark"]:
        assert kinds["duckdb"] == kinds["spark"]


@pytest.mark.parametrize("sql", REFUSED)
def test_refusals_are_identical(engines: dict[str, dict[str, Engine]], sql: str) -> None:
    """The same SQLSTATE and message on both backends, and nothing charged."""
    outcomes = {}
    for kind, engine in engines["hospital"].items():
        session = engine.session("alice")
        before = [s.spent_rho for s in session.budget()]
        with pytest.raises(DPSQLError) as refused:
            session.execute(sql)
        outcomes[kind] = (refused.value.sqlstate, refused.value.message)
        assert [s.spent_rho for s in session.budget()] == before
    assert outcomes["duckdb"] == outcomes["spark"]


def test_public_queries_are_identical(engines: dict[str, dict[str, Engine]]) -> None:
    """A query over public tables only runs as is, free, with the same rows and columns."""
    sql = "SELECT name, floor, building FROM departments WHERE floor > 0 ORDER BY department_id"
    results = {kind: e.session("alice").execute(sql) for kind, e in engines["hospital"].items()}
    assert results["duckdb"].rows == results["spark"].rows and len(results["duckdb"].rows) > 3
    assert results["duckdb"].columns == results["spark"].columns == ("name", "floor", "building")


def test_explain_is_identical_but_for_the_engine_sql(engines: dict[str, dict[str, Engine]]) -> None:
    for sql in QUERIES.values():
        texts = {}
        for kind, engine in engines["hospital"].items():
            session = engine.session("alice")
            rw, _ = session.plan(sql)
            lines = [r[0] for r in session.execute(f"EXPLAIN {sql}").rows]
            texts[kind] = [line.replace(rw.sql, "<bounded SQL>").replace(f"{kind} SQL:", "<engine> SQL:") for line in lines
                           if not line.strip().removeprefix("note: ").startswith(_STRATEGY_NOTES)]
        assert texts["duckdb"] == texts["spark"], sql


def test_budget_runs_out_after_the_same_number_of_queries(spark: SparkEnv, tmp_path: Path) -> None:
    """A budget admits the same number of queries on both backends, then refuses with 53400."""
    counts = {}
    for kind in ("duckdb", "spark"):
        engine = _engine(spark, tmp_path, "budget", kind, epsilon=3.0, replay="off")
        try:
            session = engine.session("alice")
            session.execute("SET dp.epsilon = 1.0")
            n = 0
            while True:
                try:
                    session.execute("SELECT department, COUNT(*) FROM visits GROUP BY department")
                except DPSQLError as e:
                    assert e.sqlstate == "53400"
                    break
                n += 1
                assert n < 100
            counts[kind] = n
        finally:
            engine.close()
    assert counts["duckdb"] == counts["spark"] > 0


def test_l1_row_cap_keeps_the_same_rows_in_total(spark: SparkEnv, tmp_path: Path) -> None:
    """``max_contributions = 3`` (the L1 row cap: only units with more than 3 rows are ranked) runs
    on Spark and keeps Σ_units min(rows, 3) rows over all groups, as on DuckDB: with max_groups = 40
    and max_rows = 5 nothing else binds, so the total is engine-independent even though which
    rows a heavy unit keeps follows each engine's text rendering of its values."""
    totals, paths = {}, {}
    for kind in ("duckdb", "spark"):
        path = paths[kind] = write_policy(tmp_path, f"l1-{kind}", spark, "duckdb" if kind == "duckdb" else "spark", max_groups=40,
                            epsilon=1e6, delta=1e-3)
        anchor = "max_rows = 5\n[tables.visits.columns]"
        path.write_text(path.read_text().replace(anchor, anchor.replace("\n", "\nmax_contributions = 3\n", 1)))
        policy = load_policy(path)
        engine = Engine(policy, DuckDBBackend(policy) if kind == "duckdb" else SparkBackend(policy))
        try:
            cells, _ = _bounded(engine, "SELECT department, COUNT(*) FROM visits GROUP BY department")
            assert "__dp_unitrows" in engine.rewrite("SELECT department, COUNT(*) FROM visits GROUP BY department").sql
            totals[kind] = sum(v[0] for v in cells.values())
        finally:
            engine.close()
    with DuckDBBackend(load_policy(paths["duckdb"])).session() as b:
        (expected,) = b.execute(
            "SELECT SUM(LEAST(n, 3)) FROM (SELECT patient_id, COUNT(*) AS n FROM visits WHERE patient_id IS NOT NULL "
            "AND department IS NOT NULL GROUP BY patient_id)"
        ).rows[0]
    assert totals["duckdb"] == totals["spark"] == int(expected)
