"""Subqueries in WHERE on the engine (rewriter/subqueries.py): at zero noise the answer equals plain
DuckDB's over the bounded data (≤ max_rows rows per unit after the filter); a scalar subquery that
returns two rows is PostgreSQL's 21000 before the charge; private scalar subqueries are refused free."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from engine_lib import Harness

from dpsql.errors import DPSQLError

sys.path.insert(0, str(Path(__file__).parents[1] / "embed"))
from embedlib import zero_noise

MAX_ROWS = 5  # HOSPITAL_TABLES: visits max_rows

# (query, the same filter in plain SQL over visits v)
CASES = [
    (
        "SELECT COUNT(*) FROM visits WHERE department IN (SELECT name FROM departments WHERE floor > 2)",
        "v.department IN (SELECT name FROM departments WHERE floor > 2)",
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE department NOT IN (SELECT name FROM departments WHERE floor > 2)",
        "v.department NOT IN (SELECT name FROM departments WHERE floor > 2)",
    ),
    (
        "SELECT COUNT(*) FROM visits v WHERE EXISTS (SELECT 1 FROM departments d WHERE d.department_id = v.department_id "
        "AND d.building = 'B')",
        "EXISTS (SELECT 1 FROM departments d WHERE d.department_id = v.department_id AND d.building = 'B')",
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE patient_id NOT IN (SELECT patient_id FROM patients WHERE region = 'north')",
        "v.patient_id NOT IN (SELECT patient_id FROM patients WHERE region = 'north')",
    ),
    (
        "SELECT COUNT(*) FROM visits v WHERE NOT EXISTS (SELECT FROM departments d WHERE d.department_id = v.department_id "
        "AND d.floor > 3)",
        "NOT EXISTS (SELECT 1 FROM departments d WHERE d.department_id = v.department_id AND d.floor > 3)",
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE department_id > (SELECT MIN(department_id) FROM departments WHERE floor > 1)",
        "v.department_id > (SELECT MIN(department_id) FROM departments WHERE floor > 1)",
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE patient_id IN (SELECT patient_id FROM patients WHERE birth_year < 1960)",
        "v.patient_id IN (SELECT patient_id FROM patients WHERE birth_year < 1960)",
    ),
    (
        "SELECT COUNT(*) FROM visits v WHERE NOT EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = v.patient_id "
        "AND p.region = 'north')",
        "NOT EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = v.patient_id AND p.region = 'north')",
    ),
]


@pytest.fixture
def harness(make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> Harness:
    zero_noise(monkeypatch)
    return make_harness(max_epsilon=1e6, epsilon=1e6)


def _database(h: Harness) -> str:
    return str(h.policy.source.duckdb)


@pytest.mark.parametrize(("sql", "condition"), CASES)
def test_answer_equals_duckdb_on_the_bounded_data(harness: Harness, sql: str, condition: str) -> None:
    session = harness.engine.session("alice")
    session.execute("SET dp.epsilon = 10000")
    ((dp,),) = session.execute(sql).rows
    con = duckdb.connect(_database(harness), read_only=True)
    ((plain,),) = con.execute(
        f"SELECT SUM(LEAST(n, {MAX_ROWS})) FROM (SELECT v.patient_id, COUNT(*) AS n FROM visits v "
        f"WHERE {condition} AND v.patient_id IS NOT NULL GROUP BY v.patient_id) s"
    ).fetchall()
    ((unbounded,),) = con.execute(f"SELECT COUNT(*) FROM visits v WHERE {condition}").fetchall()
    con.close()
    assert 0 < plain <= unbounded
    assert round(dp) == plain


def test_scalar_subquery_of_two_rows_is_21000_before_the_charge(harness: Harness) -> None:
    session = harness.engine.session("alice")
    with pytest.raises(DPSQLError) as e:
        session.execute("SELECT COUNT(*) FROM visits WHERE department_id = (SELECT department_id FROM departments WHERE floor > 1)")
    assert e.value.sqlstate == "21000"
    assert e.value.message == "more than one row returned by a subquery used as an expression"
    assert "charge" not in harness.recorder.kinds()
    # one row: answered (and charged)
    session.execute("SELECT COUNT(*) FROM visits WHERE department_id = (SELECT MAX(department_id) FROM departments)")
    assert "charge" in harness.recorder.kinds()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM visits WHERE age > (SELECT AVG(age) FROM visits)",
        "SELECT COUNT(*) FROM visits v WHERE EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = v.patient_id AND p.birth_year < v.age)",
        "SELECT COUNT(*) FROM visits WHERE age IN (SELECT birth_year FROM patients)",
    ],
)
def test_private_subqueries_off_the_unit_are_refused_free(harness: Harness, sql: str) -> None:
    with pytest.raises(DPSQLError) as e:
        harness.engine.session("alice").execute(sql)
    assert e.value.sqlstate == "0A000"
    assert "charge" not in harness.recorder.kinds()
