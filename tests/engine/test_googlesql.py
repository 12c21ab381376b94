"""GoogleSQL DP statements through the engine: charged exactly as the same query under ``SET``,
within the policy's limits, refusals free, the session's own settings untouched afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction

import pytest
from engine_lib import Harness

from dpsql.errors import DPSQLError


def _spent(session) -> list[tuple[str, Fraction, Fraction]]:  # type: ignore[no-untyped-def]
    return [(s.scope, s.spent_rho, s.spent_delta) for s in session.budget()]


def test_options_charge_what_set_would(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    google = h.engine.session("alice")
    google.execute("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon = 0.5, delta = 1e-8) COUNT(*) FROM visits")
    plain = h.engine.session("bob")
    plain.execute("SET dp.epsilon = 0.5")
    plain.execute("SET dp.delta = 1e-8")
    plain.execute("SELECT COUNT(*) FROM visits")
    assert [s[1:] for s in _spent(google) if s[0] != "global"] == [s[1:] for s in _spent(plain) if s[0] != "global"]
    # the statement's options did not become the session's settings
    assert google.settings.epsilon == Fraction(1) and google.settings.delta == Fraction(1, 10**7)


def test_tighter_bounds_lower_the_sensitivity(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    session = h.engine.session("alice")
    sql = "SELECT department, COUNT(*) FROM visits GROUP BY department"
    _, loose = session.plan(sql)
    _, tight = session.plan("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (max_groups_contributed = 1) "
                            "department, COUNT(*) FROM visits GROUP BY department")
    assert loose is not None and tight is not None
    assert tight.stats[0].error95 < loose.stats[0].error95
    rw, _ = session.plan("SELECT COUNT(*, contribution_bounds_per_group => (0, 1)) FROM visits")
    assert "COUNT(*) AS __dp_units" in rw.sql  # one row per unit: the count is the number of units


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon = 100) COUNT(*) FROM visits", "22023"),  # above max_epsilon_per_query
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (max_groups_contributed = 4) COUNT(*) FROM visits", "22023"),  # policy: 3
        ("SELECT COUNT(*, contribution_bounds_per_group => (0, 6)) FROM visits", "22023"),  # policy max_rows: 5
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (privacy_unit_column = visit_id) COUNT(*) FROM visits", "42501"),
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (group_selection_strategy = PUBLIC_GROUPS) diagnosis, COUNT(*) "
         "FROM visits GROUP BY diagnosis", "0A000"),
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (min_privacy_units_per_group = 3) COUNT(*) FROM visits", "0A000"),
    ],
)
def test_options_beyond_the_policy_are_refused_for_free(make_harness: Callable[..., Harness], sql: str, sqlstate: str) -> None:
    h = make_harness()
    session = h.engine.session("alice")
    before = _spent(session)
    with pytest.raises(DPSQLError) as err:
        session.execute(sql)
    assert err.value.sqlstate == sqlstate
    assert "charge" not in h.recorder.kinds() and _spent(session) == before


def test_public_groups_and_the_unit_column_are_accepted_when_true(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    rows = h.engine.session("alice").execute(
        "SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon = 1, privacy_unit_column = patient_id, "
        "group_selection_strategy = PUBLIC_GROUPS) sex, COUNT(*) FROM visits GROUP BY sex ORDER BY sex").rows
    assert [r[0] for r in rows] == ["F", "M"]


def test_json_report_holds_the_value_and_an_interval_around_it(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    session = h.engine.session("alice")
    session.execute("SET dp.confidence = 0.5")
    result = session.execute("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon = 1) COUNT(*, report_format => 'JSON') AS r, "
                             "COUNT(*) AS n FROM visits")
    report = json.loads(result.rows[0][0])["result"]
    ci = report["noise_confidence_interval"]
    assert ci["confidence_level"] == 0.95
    assert ci["lower_bound"] <= report["value"] <= ci["upper_bound"] and ci["lower_bound"] < ci["upper_bound"]
    assert session.settings.confidence == Fraction(1, 2)  # the report's 0.95 was the statement's only


def test_per_group_sum_bounds_tighten_the_policy_and_never_loosen_it(make_harness: Callable[..., Harness]) -> None:
    """cost has row bounds [0, 5000] and max_rows 5: a unit adds at most 25000 to a group. Per-group
    bounds inside that are this statement's per-unit bounds (less noise); looser ones are refused."""
    h = make_harness()
    session = h.engine.session("alice")
    _, loose = session.plan("SELECT SUM(cost) FROM visits")
    _, tight = session.plan("SELECT SUM(cost, contribution_bounds_per_group => (0, 1000)) FROM visits")
    assert loose is not None and tight is not None and tight.stats[0].error95 < loose.stats[0].error95
    before = _spent(session)
    for bad in ("SELECT SUM(cost, contribution_bounds_per_group => (0, 30000)) FROM visits",
                "SELECT SUM(diagnosis, contribution_bounds_per_group => (0, 1)) FROM visits"):
        with pytest.raises(DPSQLError) as err:
            session.execute(bad)
        assert err.value.sqlstate in ("22023", "42501"), err.value
    assert _spent(session) == before


def test_min_privacy_units_per_group_raises_the_unit_threshold(make_harness: Callable[..., Harness]) -> None:
    """min_privacy_units_per_group = m: construction (a) (units thresholded) at max(τ, m), same noise scale;
    δ of the raised threshold's own map is no larger; a group released has a noisy unit count ≥ m."""
    h = make_harness()
    session = h.engine.session("alice")
    sql = "diagnosis, COUNT(*) AS n, COUNT(DISTINCT patient_id) AS u FROM visits GROUP BY diagnosis"
    _, base = session.plan("SELECT " + sql)
    assert base is not None and base.selection is not None
    m = base.selection.threshold + 40
    _, raised = session.plan(f"SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (min_privacy_units_per_group = {m}) " + sql)
    assert raised is not None and raised.selection is not None
    assert raised.selection.construction == "units" and raised.selection.threshold == m
    assert raised.selection.scale == base.selection.scale and raised.cost.delta <= base.cost.delta
    _, low = session.plan("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (min_privacy_units_per_group = 1) " + sql)
    assert low is not None and low.selection is not None and low.selection.threshold == base.selection.threshold
    result = session.execute(f"SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (min_privacy_units_per_group = {m}) " + sql)
    assert all(row[2] >= m for row in result.rows)  # u is the selection's own noisy unit count


def test_partition_selection_setting_picks_the_construction(make_harness: Callable[..., Harness]) -> None:
    """SET dp.partition_selection: 'count' thresholds COUNT(*)'s own value, 'units' a separate unit count;
    SHOW/RESET work, a bad value is 22023 and changes nothing, and EXPLAIN names the construction."""
    h = make_harness()
    session = h.engine.session("alice")
    sql = "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis"
    session.execute("SET dp.partition_selection = 'count'")
    assert session.execute("SHOW dp.partition_selection").rows == [("count",)]
    _, count = session.plan(sql)
    assert count is not None and count.selection is not None and count.selection.construction == "count"
    assert any("own noisy value is thresholded" in line for line in session.explain(sql))
    session.execute("SET dp.partition_selection = units")
    _, units = session.plan(sql)
    assert units is not None and units.selection is not None and units.selection.construction == "units"
    with pytest.raises(DPSQLError) as err:
        session.execute("SET dp.partition_selection = 'sometimes'")
    assert err.value.sqlstate == "22023" and session.settings.partition_selection == "units"
    session.execute("RESET dp.partition_selection")
    assert session.execute("SHOW dp.partition_selection").rows == [("auto",)]
