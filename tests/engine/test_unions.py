"""Set operations of DP queries (UNION [ALL], INTERSECT, EXCEPT): each private branch released as if
sent alone at ε/k, δ/k, the whole statement charged once before any private row is read, the set
operation run over released rows only; refusals before the charge cost nothing."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pytest
from engine_lib import Harness

from dpsql.errors import DPSQLError

TOTAL_AND_BY_DEPT = ("SELECT 'all' AS department, COUNT(*) AS n FROM visits UNION ALL "
                     "SELECT department, COUNT(*) FROM visits GROUP BY department")


def _rho(session) -> dict[str, Fraction]:  # type: ignore[no-untyped-def]
    return {s.scope: s.spent_rho for s in session.budget()}


def test_union_all_is_its_branches_charged_once_at_a_split_epsilon(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    alice = h.engine.session("alice")
    result = alice.execute(TOTAL_AND_BY_DEPT)
    assert result.columns == ("department", "n")
    assert len(result.rows) == 1 + 8 and result.rows[0][0] == "all"
    assert h.recorder.kinds().count("charge") == 1
    first_charge = h.recorder.kinds().index("charge")
    private_reads = [i for i, e in enumerate(h.recorder.events) if e.kind == "execute" and "__dp_uid" in e.detail]
    assert private_reads and min(private_reads) > first_charge  # charged before any private row is read
    assert "in 2 releases (ε=0.5 each)" in result.notices[0]

    bob = h.engine.session("bob")
    bob.execute("SET dp.epsilon = 0.5")
    bob.execute("SET dp.delta = 5e-8")
    bob.execute("SELECT 'all' AS department, COUNT(*) AS n FROM visits")
    bob.execute("SELECT department, COUNT(*) FROM visits GROUP BY department")
    assert _rho(alice)["user"] == _rho(bob)["user"] > 0


def test_intersect_except_and_order_by_run_over_released_rows(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    s = h.engine.session("alice")
    rows = s.execute("SELECT sex FROM visits GROUP BY sex UNION SELECT 'X' ORDER BY sex DESC").rows
    assert rows == [("X",), ("M",), ("F",)]  # declared keys and a constant: free, nothing charged
    assert "charge" not in h.recorder.kinds()
    rows = s.execute("SELECT department FROM visits GROUP BY department EXCEPT SELECT 'cardiology' ORDER BY 1").rows
    assert rows == sorted((d,) for d in ["emergency", "general medicine", "orthopedics", "pediatrics", "oncology",
                                         "neurology", "obstetrics"])
    assert s.execute("SELECT sex FROM visits GROUP BY sex INTERSECT SELECT 'F'").rows == [("F",)]
    assert "charge" not in h.recorder.kinds()


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("SELECT COUNT(*) FROM visits UNION ALL SELECT department FROM visits GROUP BY 1", "42804"),
        ("SELECT COUNT(*) AS n FROM visits UNION ALL SELECT COUNT(*), 1 FROM visits", "0A000"),
        ("SELECT COUNT(*) AS n FROM visits UNION ALL SELECT COUNT(*) FROM visits ORDER BY nope", "42703"),
        ("SELECT COUNT(*) FROM visits UNION ALL SELECT age FROM visits", "42501"),
        (" UNION ALL ".join(["SELECT COUNT(*) FROM visits"] * 9), "0A000"),
    ],
)
def test_refused_before_the_charge(make_harness: Callable[..., Harness], sql: str, sqlstate: str) -> None:
    h = make_harness()
    s = h.engine.session("alice")
    before = _rho(s)
    with pytest.raises(DPSQLError) as err:
        s.execute(sql)
    assert err.value.sqlstate == sqlstate, err.value
    assert "charge" not in h.recorder.kinds() and _rho(s) == before


def test_budget_refusal_charges_no_branch(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(epsilon=0.2)
    s = h.engine.session("alice")
    s.execute("SET dp.epsilon = 2")
    with pytest.raises(DPSQLError) as err:
        s.execute(TOTAL_AND_BY_DEPT)
    assert err.value.sqlstate == "53400"
    assert all(e.kind != "execute" or "__dp_uid" not in e.detail for e in h.recorder.events)
    assert _rho(s)["user"] == 0


def test_explain_shows_every_release(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    lines = h.engine.session("alice").explain(TOTAL_AND_BY_DEPT)
    assert lines[0].startswith("dpsql set operation of 2 queries: 2 DP release(s), each at ε = 0.5")
    assert sum(line.startswith("branch ") for line in lines) == 2
    assert "charge" not in h.recorder.kinds()
