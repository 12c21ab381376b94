"""Free answers (DESIGN §1): a query whose answer the policy fixes — group keys with declared values
or from a public table, no aggregate — reads no private row, is not charged and says so; SQL over
such a result is free too. Everything else keeps its charge."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlglot
from engine_lib import Harness
from sqlglot import exp

PRIVATE = {"visits", "patients"}

FREE = [
    "SELECT department FROM public.visits GROUP BY department ORDER BY department LIMIT 1000",
    "SELECT DISTINCT department FROM visits WHERE cost > 100",
    "SELECT department, sex FROM visits GROUP BY department, sex HAVING sex = 'F'",
    "SELECT d.building FROM visits v JOIN departments d ON v.department_id = d.department_id GROUP BY d.building",
    "SELECT COUNT(*) AS n FROM (SELECT DISTINCT region FROM patients) AS t",
]


def _tables(sql: str) -> set[str]:
    return {t.name.lower() for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table)}


@pytest.mark.parametrize("sql", FREE)
def test_free_answer_reads_no_private_row_and_is_not_charged(make_harness: Callable[..., Harness], sql: str) -> None:
    h = make_harness()
    session = h.engine.session("alice")
    before = [(s.scope, s.spent_rho, s.spent_delta) for s in session.budget()]
    result = session.execute(sql)
    assert result.rows
    assert "charge" not in h.recorder.kinds()
    for sql_run in h.recorder.executed():
        assert not _tables(sql_run) & PRIVATE, f"read a private table: {sql_run}"
    assert [(s.scope, s.spent_rho, s.spent_delta) for s in session.budget()] == before
    assert result.notices and result.notices[0].startswith("dpsql: this query spent nothing and read no private row")
    assert result.cost is None


def test_free_answer_keys_are_the_declared_values(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    rows = h.engine.session("alice").execute("SELECT region FROM patients GROUP BY region ORDER BY region").rows
    assert rows == [(r,) for r in sorted(["central", "north", "south", "east", "west", "riverside", "harbor", "lakeside",
                                          "hills", "uplands"])]


def test_aggregates_are_still_charged(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    result = h.engine.session("alice").execute("SELECT department, COUNT(*) FROM visits GROUP BY department")
    assert h.recorder.kinds().count("charge") == 1
    assert result.notices[0].startswith("dpsql: this query spent ε=1, δ=1e-07 (ledger: ρ=")
