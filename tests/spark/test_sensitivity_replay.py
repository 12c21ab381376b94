"""T1 sensitivity replay on Spark (a slice of ``tests/replay``): the Spark dialect's bounded SQL, run
on Spark with ANSI on, on D, on D minus one unit and on that unit's rows alone, changes by no more
than the plan declares (``replay_lib.check_neighbours``), for a few aggregate shapes, on an
ordinary and a special-value database (INT64 extremes, ±inf, NaN, −0.0, values beyond the
bounds, NULL units; Spark's DATE cannot hold the palette's out-of-range dates, so ``d`` is ordinary).

Each variant is a set of session views over the Parquet files DuckDB wrote from the database; the
statistics must come back as exact integers (DECIMAL(38, 0) sums are converted when integral)."""

from __future__ import annotations

import random
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sparkenv import SparkEnv

_REPLAY = str(Path(__file__).parent.parent / "replay")
if _REPLAY not in sys.path:
    sys.path.insert(0, _REPLAY)

import replay_lib as R  # noqa: E402

from dpsql.rewriter.plan import Rewrite  # noqa: E402
from dpsql.rewriter.spark import verify, view_name  # noqa: E402

pytestmark = pytest.mark.spark

SHAPES = ("count_star", "sum_int", "sum_float", "avg", "var_pop", "group_declared_values", "group_private",
          "group_private_units", "join_public_group", "filter", "second_table_avg", "count_distinct_ranked")
REMOVALS = 3  # units removed per database: the heaviest and two others


def _databases() -> list[R.DB]:
    ordinary = R.materialize(R.DBSpec(tuple([3, 5, 1, 8, 2] * 4), seed=7, p_special=0.0, h_pool=6, wide_uids=False,
                                      null_uid_rows=1), "ordinary")
    special = R.materialize(R.DBSpec(tuple([3, 5, 1, 8, 2, 12, 4] * 3), seed=11, p_special=0.3, h_pool=6, wide_uids=True,
                                     null_uid_rows=2), "special")
    rows = tuple((*r[:6], "2023-05-17" if r[6] in R.D_SPECIAL and r[6] is not None else r[6], *r[7:]) for r in special.t)
    return [ordinary, R.DB("special", rows, special.e)]


def _exact(v: Any) -> Any:
    if isinstance(v, Decimal) and v == v.to_integral_value():
        return int(v)
    return v


def _cells(spark_session: Any, rw: Rewrite, problems: list[str], where: str) -> R.Cells:
    assert rw.plan is not None
    df = spark_session.sql(rw.sql)
    cols = df.columns
    rows = [tuple(_exact(v) for v in r) for r in df.collect()]
    return R.cells_of(cols, rows, rw.plan, problems, where)


def _show(s: Any, files: dict[str, str], kind: str, unit: int | None) -> None:
    """Point the policy's views at one variant of the database: all rows, without ``unit``, or only its rows."""
    for table in ("t", "e"):
        df = s.read.parquet(files[table])
        if kind == "minus":
            df = df.where(~df.uid.eqNullSafe(unit))
        elif kind == "only":
            df = df.where(df.uid == unit)
        df.createOrReplaceTempView(view_name("public", table))
    s.read.parquet(files["p"]).createOrReplaceTempView(view_name("public", "p"))


def test_sensitivity_replay_on_spark(spark: SparkEnv, tmp_path: Path) -> None:
    shapes = {name: R.rewritten(R.SHAPES[name], "spark") for name in SHAPES}
    views = {view_name("public", t) for t in ("t", "e", "p")}
    for rw in shapes.values():
        assert rw.plan is not None
        verify(rw.sql, views)
    problems: list[str] = []
    checks = 0
    with spark.client() as s:
        s.conf.set("spark.sql.ansi.enabled", "true")
        s.conf.set("spark.sql.session.timeZone", "UTC")
        for db in _databases():
            con = R.connect_db(db)
            files = {}
            try:
                for table in ("t", "e", "p"):
                    files[table] = str(tmp_path / f"{db.name}-{table}.parquet")
                    con.execute(f"COPY main.{table} TO '{files[table]}' (FORMAT parquet)")
            finally:
                con.close()
            units = db.units()
            chosen = units[:1] + random.Random(5).sample(units[1:], REMOVALS - 1)
            _show(s, files, "full", None)
            full = {name: _cells(s, rw, problems, f"{name}/{db.name}/full") for name, rw in shapes.items()}
            for u in chosen:
                _show(s, files, "minus", u)
                minus = {name: _cells(s, rw, problems, f"{name}/{db.name}/minus {u}") for name, rw in shapes.items()}
                _show(s, files, "only", u)
                only = {name: _cells(s, rw, problems, f"{name}/{db.name}/only {u}") for name, rw in shapes.items()}
                for name, rw in shapes.items():
                    assert rw.plan is not None
                    problems += R.check_neighbours(rw.plan, full[name], minus[name], only[name], f"{name}/{db.name}/without unit {u}")
                    checks += 1
            assert any(v for cells in full.values() for v in cells.values()), f"{db.name}: every statistic is empty"
    assert not problems, "\n".join(problems[:20])
    assert checks == len(SHAPES) * 2 * REMOVALS
