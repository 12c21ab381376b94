"""COUNT/SUM(DISTINCT …), APPROX_COUNT_DISTINCT and COUNT(DISTINCT unit) FILTER through the engine.

At ε = 10⁵ per query the noise scale is σ ≈ 0.007·L∞ integer units. Every released value is
compared with the exact bounded value (the bounded SQL run directly on the database) within
10σ (two-sided discrete Gaussian tail < 10⁻²² per check, ≤ 100 checks: false-failure rate
< 10⁻²⁰); for the counts (L∞ ≤ 5, 10σ < ½) that means equal. A global query is also checked
against an independent Python computation of the bounding: each patient's ≤ max_rows distinct
(clamped) values with the smallest MD5 of (unit id, value, salt), united over patients.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from engine_lib import HOSPITAL_TABLES

from dpsql.api import open_engine
from dpsql.proxy.engine import Engine

MAX_ROWS = 5
SIGMAS = 10


@pytest.fixture
def engine(write_policy: Callable[..., Path]) -> Iterator[Engine]:
    e = open_engine(write_policy(epsilon=1e6, delta=1e-3, max_epsilon=1e5, default_epsilon=1e5))
    yield e
    e.close()


def _session(engine: Engine) -> Any:
    session = engine.session("alice")
    session.execute("SET dp.rounding = 'off'")  # full precision: the released value, not its noise-supported digits
    return session


def _exact(database: Path, sql: str, keys: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return {tuple(r[:keys]): tuple(r[keys:]) for r in con.execute(sql).fetchall()}
    finally:
        con.close()


Cells = dict[tuple[Any, ...], tuple[Any, ...]]


def _check(session: Any, sql: str, database: Path) -> tuple[Any, Cells, Cells]:
    """Run ``sql``; assert each released aggregate is within 10σ of its exact bounded value."""
    rw, noise = session.plan(sql)
    assert rw.plan is not None and noise is not None
    keys = len(rw.plan.keys)
    exact = _exact(database, rw.sql, keys)
    result = session.execute(sql)
    got = {tuple(r[:keys]): tuple(r[keys:]) for r in result.rows}
    index = {s.column: i for i, s in enumerate(rw.plan.stats)}
    zero = (0,) * (len(rw.plan.stats) + (1 if rw.plan.units_column else 0))
    for k, released in got.items():
        cells = exact.get(k, zero)
        for j, agg in enumerate(rw.plan.aggregates):
            (col,) = agg.stats
            st = rw.plan.stats[index[col]] if col in index else None
            want = cells[index[col]] if col in index else cells[-1]
            grid = st.grid if st is not None else 1
            sigma = noise.stat(col).scale
            assert abs(released[j] - want * grid) <= SIGMAS * sigma * grid, (sql, k, agg.label, released[j], want, sigma)
    return rw, exact, got


def test_policy_is_the_hospital_one() -> None:
    assert f"max_rows = {MAX_ROWS}" in HOSPITAL_TABLES


def test_global_distinct_counts_equal_the_bounded_values(engine: Engine, hospital: Path) -> None:
    sql = (
        "SELECT COUNT(DISTINCT diagnosis) AS d, APPROX_COUNT_DISTINCT(visit_date) AS v, SUM(DISTINCT length_of_stay) AS s, "
        "COUNT(DISTINCT patient_id) FILTER (WHERE age > 60) AS old, COUNT(DISTINCT patient_id) AS n FROM visits"
    )
    session = _session(engine)
    rw, exact_rows, got = _check(session, sql, hospital / "hospital.duckdb")
    (exact,) = exact_rows.values()
    result = session.execute(sql)
    assert list(result.columns) == ["d", "v", "s", "old", "n"] and set(result.types) == {"int8"}
    assert got[()][0] == exact[0] and got[()][1] == exact[1] and got[()][3] == exact[3]
    # independent check of the bounding: ≤ 5 distinct values per patient by MD5(uid, value, salt)
    (salt,) = set(re.findall(r"CAST\(__dp_v AS TEXT\), '([0-9a-f]{16})'", rw.sql))
    con = duckdb.connect(str(hospital / "hospital.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT patient_id, diagnosis, CAST(visit_date AS TEXT), age, length_of_stay FROM visits").fetchall()
        raw = con.execute("SELECT COUNT(DISTINCT diagnosis), COUNT(DISTINCT patient_id) FILTER (WHERE age > 60) FROM visits").fetchone()
    finally:
        con.close()

    def kept(col: int, clamp: Callable[[Any], Any] = lambda v: v) -> set[Any]:
        per_unit: dict[int, set[Any]] = {}
        for r in rows:
            if r[0] is not None and r[col] is not None:
                per_unit.setdefault(r[0], set()).add(clamp(r[col]))
        out: set[Any] = set()
        for uid, values in per_unit.items():
            def h(v: Any, uid: int = uid) -> str:
                return hashlib.md5(f"{uid}\x1f{v}\x1f{salt}".encode()).hexdigest()
            out |= set(sorted(values, key=h)[:MAX_ROWS])
        return out

    assert raw is not None
    assert exact[0] == len(kept(1)) <= raw[0]
    assert exact[1] == len(kept(2))
    assert exact[2] == sum(kept(4, lambda v: min(max(v, 0), 30)))  # distinct clamped values
    assert exact[3] == raw[1]  # a patient counts once, whatever its rows


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT department, COUNT(DISTINCT diagnosis), SUM(DISTINCT age), COUNT(*) FROM visits GROUP BY department",
        "SELECT diagnosis, COUNT(DISTINCT visit_date) FILTER (WHERE cost > 100), COUNT(DISTINCT patient_id) FILTER (WHERE sex = 'F'), "
        "COUNT(DISTINCT patient_id) FROM visits GROUP BY diagnosis",
        "SELECT sex, department_id, APPROX_COUNT_DISTINCT(diagnosis) FROM visits GROUP BY 1, 2",
        "SELECT SUM(DISTINCT cost) FROM visits WHERE age < 30",
    ],
)
def test_grouped_distinct_counts_equal_the_bounded_values(engine: Engine, hospital: Path, sql: str) -> None:
    rw, exact, got = _check(_session(engine), sql, hospital / "hospital.duckdb")
    assert rw.plan is not None
    if rw.plan.keys_public:
        assert set(exact) <= set(got)  # every declared key tuple is released
    else:
        assert set(got) <= set(exact) and len(got) > 10  # partition selection drops groups of few patients


def test_sum_distinct_of_a_float_is_released_as_float8(engine: Engine) -> None:
    result = _session(engine).execute("SELECT SUM(DISTINCT cost) FROM visits WHERE age < 30")
    assert result.types == ("float8",) and isinstance(result.rows[0][0], float)
