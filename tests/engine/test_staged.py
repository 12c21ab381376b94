"""Staged releases (Superset's series limit, ``WHERE k IN (top-k subquery)``): stage 1 released as if
sent alone, its keys restricting stage 2, both charged at once before any private row is read, the
charge exactly the two stages' costs at ε/2 each; refusals before the charge cost nothing."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pytest
from engine_lib import Harness

from dpsql.accountant.planner import calibrate
from dpsql.errors import DPSQLError
from dpsql.rewriter import rewrite, stages

SERIES = ("SELECT diagnosis AS diagnosis, COUNT(*) AS count FROM visits JOIN (SELECT diagnosis AS diagnosis__, COUNT(*) "
          "AS mme_inner__ FROM visits GROUP BY diagnosis ORDER BY COUNT(*) DESC LIMIT 3) AS series_limit "
          "ON diagnosis = diagnosis__ GROUP BY diagnosis")
TOP_IN = ("SELECT department, AVG(cost) AS a FROM visits WHERE age > 10 AND department IN (SELECT department FROM visits "
          "GROUP BY department ORDER BY COUNT(*) DESC LIMIT 2) GROUP BY department")


def _rho(session) -> Fraction:  # type: ignore[no-untyped-def]
    return next(s.spent_rho for s in session.budget() if s.scope == "user")


@pytest.mark.parametrize("sql", [SERIES, TOP_IN])
def test_staged_release_is_its_two_stages_charged_once(make_harness: Callable[..., Harness], sql: str) -> None:
    h = make_harness()
    session = h.engine.session("alice")
    result = session.execute(sql)
    limit = 3 if sql is SERIES else 2
    assert 1 <= len(result.rows) <= limit
    assert h.recorder.kinds().count("charge") == 1
    charge_at = h.recorder.kinds().index("charge")
    private = [i for i, e in enumerate(h.recorder.events) if e.kind == "execute" and "__dp_uid" in e.detail]
    assert len(private) >= 2 and min(private) > charge_at  # both stages read private rows only after the charge
    assert "in a staged release (2 releases, ε=0.5 each)" in result.notices[0]

    # the charge: stage 1 at (ε/2, δ/2) plus stage 2 on a stand-in key set of stage 1's LIMIT size
    st = h.engine.staged(sql)
    assert st is not None
    eps, delta, acc = Fraction(1, 2), Fraction(1, 2 * 10**7), h.policy.privacy.accounting
    rw1 = rewrite(st.stage1, h.engine.catalog)
    keys = [(f"__dp_stand_in_{i}",) for i in range(limit)]
    rw2 = rewrite(stages.stage2_sql(st, keys), stages.declared(h.engine.catalog, st, keys))
    assert rw1.plan is not None and rw2.plan is not None
    expected = calibrate(rw1.plan, eps, delta, acc).cost.amount + calibrate(rw2.plan, eps, delta, acc).cost.amount
    assert 0 <= _rho(session) - expected <= Fraction(1, 10**12)  # the ledger rounds up to 1e-12 units


def test_stage_two_keeps_only_stage_one_keys(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(max_epsilon=1e6, epsilon=1e6)
    session = h.engine.session("alice")
    session.execute("SET dp.epsilon = 100000")
    top = session.execute("SELECT department, COUNT(*) AS n FROM visits GROUP BY department ORDER BY n DESC LIMIT 2").rows
    rows = session.execute(TOP_IN.replace("age > 10 AND ", "")).rows
    assert sorted(r[0] for r in rows) == sorted(r[0] for r in top)  # at huge ε both stages are exact


@pytest.mark.parametrize(
    ("sql", "sqlstate", "words"),
    [
        (SERIES.replace("GROUP BY diagnosis\"", "").rsplit(" GROUP BY diagnosis", 1)[0], "0A000", "grouped by"),
        (SERIES.replace("FROM visits JOIN", "FROM visits LEFT JOIN"), "0A000", "inner JOIN"),
        (SERIES.replace("COUNT(*) AS count FROM visits JOIN", "MAX(mme_inner__) AS m FROM visits JOIN"), "0A000", "mme_inner__"),
        (SERIES.replace("ON diagnosis = diagnosis__", "ON diagnosis <> diagnosis__"), "0A000", "equalities"),
        ("SELECT visit_date, COUNT(*) FROM visits WHERE visit_date IN (SELECT visit_date FROM visits GROUP BY visit_date "
         "ORDER BY COUNT(*) DESC LIMIT 3) GROUP BY visit_date", "0A000", "type date"),
    ],
)
def test_refused_before_the_charge(make_harness: Callable[..., Harness], sql: str, sqlstate: str, words: str) -> None:
    h = make_harness()
    session = h.engine.session("alice")
    with pytest.raises(DPSQLError) as err:
        session.execute(sql)
    assert err.value.sqlstate == sqlstate and words in str(err.value), err.value
    assert "charge" not in h.recorder.kinds() and _rho(session) == 0


def test_explain_shows_both_stages_and_reads_nothing(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    lines = h.engine.session("alice").explain(SERIES)
    assert lines[0].startswith("dpsql staged release: 2 DP releases, each at ε = 0.5")
    assert any(line.startswith("stage 1") for line in lines) and any(line.startswith("stage 2") for line in lines)
    assert "charge" not in h.recorder.kinds()
    assert all("__dp_uid" not in e.detail for e in h.recorder.events if e.kind == "execute")


def test_a_repeated_staged_release_or_union_is_replayed_free(make_harness: Callable[..., Harness]) -> None:
    """A dashboard reload: the identical statement answers with the stored rows and charges nothing."""
    h = make_harness(replay="user")
    session = h.engine.session("alice")
    union = "SELECT 'all' AS d, COUNT(*) AS n FROM visits UNION ALL SELECT department, COUNT(*) FROM visits GROUP BY 1"
    for sql in (SERIES, union):
        first = session.execute(sql)
        spent = _rho(session)
        again = session.execute(sql)
        assert again.rows == first.rows and _rho(session) == spent
        assert again.notices[0].startswith("dpsql: replayed, no budget spent")
    assert h.recorder.kinds().count("charge") == 2
