"""T1 for COUNT(DISTINCT x), SUM(DISTINCT x), APPROX_COUNT_DISTINCT and COUNT(DISTINCT unit) FILTER.

The shapes themselves are in ``replay_lib.SHAPES``/``EXTRA_SHAPES`` (replayed on the fixed and
generated databases by ``test_sensitivity_replay``) and in ``test_bounds_replay.SHAPES`` (under
the row cap). Here: the declared L∞ is reached by a unit with many distinct values of its own,
units that share all their values change nothing, and two negative controls show the replay
catches a missing per-unit value limit and a missing max_groups restriction.
"""

from __future__ import annotations

import copy
import dataclasses

import replay_lib as R
import sqlglot
from sqlglot import exp
from test_sensitivity_replay import _max_changes, _row

from dpsql.policy import policy_from_dict
from dpsql.rewriter import rewrite
from dpsql.schema import build_catalog

# Units 0–2: 6 distinct h values of their own in each of g = a, b, c (one row each), a spread over
# 5–10 and x (unit's own) near the upper bound 20 on distinct grid steps; units 3–5 share h values with each other.
OWN = tuple(
    _row(u, a=10 - i, x=20.0 - (18 * u + 6 * j + i) / 1024, h=f"u{u}-{g}-{i}", g=g)
    for u in range(3) for j, g in enumerate("abc") for i in range(6)
)
SHARED = tuple(_row(u, a=i, x=float(i), h=f"s{i}", g=g) for u in range(3, 6) for g in "ab" for i in range(2))
DB = R.DB("distinct_values", OWN + SHARED)


def test_count_distinct_sensitivity_is_reached() -> None:
    """A unit with 6 distinct values of its own in a group removes exactly max_rows = 3 of them."""
    rw = R.rewritten("SELECT g, COUNT(DISTINCT h), COUNT(DISTINCT uid) FILTER (WHERE a > 4) FROM t GROUP BY g")
    assert rw.plan is not None
    cd, cu = rw.plan.stats
    assert (cd.max_contribution, cu.max_contribution) == (R.T_MAX_ROWS, 1)
    worst = _max_changes(DB, rw)
    assert worst[cd.column] == cd.max_contribution
    assert worst[cu.column] == 1


def test_sum_distinct_sensitivity_is_nearly_reached() -> None:
    """SUM(DISTINCT x), x ≤ 20: three distinct kept values just below 20 come within 0.5% of
    max_rows · 20 (the bound itself needs three equal values, which are one distinct value)."""
    rw = R.rewritten("SELECT SUM(DISTINCT x), SUM(DISTINCT a) FROM t")
    assert rw.plan is not None
    sx, sa = rw.plan.stats
    assert sx.max_contribution * sx.grid == R.T_MAX_ROWS * 20 and sa.max_contribution == R.T_MAX_ROWS * 10
    worst = _max_changes(DB, rw)
    assert sx.max_contribution * 0.995 <= worst[sx.column] <= sx.max_contribution
    assert worst[sa.column] <= sa.max_contribution  # a's values 5…10 are shared by units 0–2


def test_shared_values_change_nothing_when_other_units_keep_them() -> None:
    """Units 3–5 have the same two h values in g = a: each keeps both (2 ≤ max_rows), so removing
    any one of them leaves the distinct count of g = a unchanged."""
    db = R.DB("shared", SHARED)
    rw = R.rewritten("SELECT g, COUNT(DISTINCT h) FROM t GROUP BY g")
    assert rw.plan is not None
    assert _max_changes(db, rw)[rw.plan.stats[0].column] == 0


def _max_distinct_catalog(k: int) -> object:
    p = copy.deepcopy(R.POLICY)
    p["tables"]["t"]["columns"]["h"] = {"max_distinct": k}
    return build_catalog(policy_from_dict(p, "/nonexistent/distinct-policy.toml"), R.DESCRIBED)


def test_max_distinct_replaces_max_rows_and_is_reached() -> None:
    """With ``max_distinct = 5`` on h (max_rows is 3) a unit with 6 values of its own removes 5;
    COUNT(DISTINCT h) declares L∞ = 5 and the replay over the shapes holds."""
    cat = _max_distinct_catalog(5)
    rw = rewrite("SELECT g, COUNT(DISTINCT h), COUNT(DISTINCT a) FROM t GROUP BY g", cat)
    assert rw.plan is not None
    sh, sa = rw.plan.stats
    assert (sh.max_contribution, sa.max_contribution) == (5, R.T_MAX_ROWS)
    assert _max_changes(DB, rw)[sh.column] == 5
    report = R.replay([DB, *R.poison_databases().values()], {"max_distinct": rw}, verify=(0,))
    assert not report.problems, report.problems[:5]


def _without(sql: str, what: str) -> str:
    tree = sqlglot.parse_one(sql, read="duckdb")

    def strip(node: exp.Expression) -> exp.Expression:
        if what == "value_limit" and isinstance(node, exp.LTE) and "__dp_vr" in node.sql():
            return exp.true()
        if what == "group_limit" and isinstance(node, exp.LTE) and "__dp_r.__dp_rank" in node.sql():
            return exp.true()
        return node

    return tree.transform(strip).sql("duckdb")


def test_negative_control_without_the_per_unit_value_limit() -> None:
    """Without ``__dp_vr <= max_rows`` a unit's 6 own values all count: L∞ = 3 is broken."""
    rw = R.rewritten("SELECT g, COUNT(DISTINCT h) FROM t GROUP BY g")
    bad = dataclasses.replace(rw, sql=_without(rw.sql, "value_limit"))
    assert bad.sql != rw.sql
    report = R.replay([DB], {"no_value_limit": bad})
    assert any("more than L∞" in p for p in report.problems)


def test_negative_control_without_the_max_groups_restriction() -> None:
    """Without the join's ``__dp_rank <= max_groups`` a unit's values count in all 3 groups: L0 = 2 is broken."""
    rw = R.rewritten("SELECT g, COUNT(DISTINCT h) FROM t GROUP BY g")
    bad = dataclasses.replace(rw, sql=_without(rw.sql, "group_limit"))
    assert bad.sql != rw.sql
    report = R.replay([DB], {"no_group_limit": bad})
    assert any("more than L0" in p for p in report.problems)


def test_distinct_shapes_hold_on_the_distinct_database() -> None:
    """Every DISTINCT shape of the replay on this database: no violation."""
    names = [n for n in R.SHAPES | R.EXTRA_SHAPES if "distinct" in n and n != "select_distinct"]
    assert len(names) >= 5
    shapes = {n: R.rewritten(R.SHAPES.get(n) or R.EXTRA_SHAPES[n]) for n in names}
    report = R.replay([DB], shapes, verify=(0,))
    assert not report.problems, report.problems[:5]
