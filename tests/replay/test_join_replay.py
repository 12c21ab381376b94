"""T1 sensitivity replay for joins between private tables on the privacy unit (rewriter/joins.py):
the bounded SQL's exact results on D and on D minus one unit (all its rows in ``t`` *and* ``e``)
differ by no more than the plan declares — inner, left, right and full joins, ``USING`` and ``ON``
with extra conditions, a self-join, a CTE used twice, a public table in between — on generated
databases and on the fixed adversarial ones, including a unit with 10⁴ rows in each table (10⁸
joined rows without the per-side cap). The join's bounded SQL reads two private relations, so
``replay_lib.lift`` declines it and every variant runs the unmodified bounded SQL directly.

A negative control shows the replay catches a join on another column than the unit.
"""

from __future__ import annotations

import dataclasses

import pytest
import replay_lib as R
from test_sensitivity_replay import FIXED, _assert_clean

JOIN_SHAPES: dict[str, str] = {
    "join_inner_using": "SELECT t.g, COUNT(*), SUM(e.v), AVG(t.x) FROM t JOIN e USING (uid) GROUP BY t.g",
    "join_left_on_extra": "SELECT e.c, COUNT(*), SUM(t.a) FROM t LEFT JOIN e ON t.uid = e.uid AND e.v > 0 GROUP BY e.c",
    "join_right_private_keys": "SELECT t.h, COUNT(*), SUM(e.v) FROM t RIGHT JOIN e ON e.uid = t.uid GROUP BY t.h",
    "join_full": "SELECT COUNT(*), SUM(t.x), SUM(e.v), AVG(e.v) FROM t FULL JOIN e USING (uid)",
    "join_units": "SELECT e.w, COUNT(DISTINCT t.uid), COUNT(*) FROM t JOIN e ON t.uid = e.uid GROUP BY e.w",
    "self_join": "SELECT a.g, COUNT(*), SUM(b.x) FROM t a JOIN t b ON a.uid = b.uid AND a.d < b.d GROUP BY a.g",
    "cte_twice": "WITH s AS (SELECT uid, x, g FROM t WHERE a > 2) SELECT s1.g, COUNT(*), SUM(s2.x) FROM s s1 "
                 "JOIN s s2 ON s1.uid = s2.uid GROUP BY s1.g",
    "join_with_public": "SELECT p.name, COUNT(*), SUM(e.v) FROM t JOIN p ON t.k = p.k JOIN e ON e.uid = t.uid GROUP BY p.name",
}


def _shapes() -> dict[str, R.Rewrite]:
    return {n: R.rewritten(sql) for n, sql in JOIN_SHAPES.items()}


def test_join_shapes_are_not_lifted() -> None:
    """Every join shape reads two private relations: the replay runs it directly per variant."""
    for name, rw in _shapes().items():
        with pytest.raises(R.LiftError):
            R.lift(rw.sql)
        assert rw.plan is not None and len(rw.plan.tables) >= 1, name


def test_join_replay_on_adversarial_databases() -> None:
    """The fixed T1 databases (heavy unit with 10⁴ rows in t and in e, a unit in every group,
    values at and beyond the bounds, empty, unit-less rows); 8 removed units per database, the
    heaviest first."""
    report = R.replay(FIXED, _shapes(), max_removals=8, verify=())
    _assert_clean(report)
    assert report.neighbour_checks >= 250  # 38 (database, removed unit) pairs × 8 shapes = 304


@pytest.mark.slow
def test_join_replay_on_generated_databases() -> None:
    """12 generated databases (0–40 units, 0–30 rows in t and 0–3 in e each, special values,
    wide unit ids, unit-less rows), 6 removed units each (the heaviest first)."""
    dbs = [
        R.materialize(R.DBSpec(tuple((seed * 7 + i * 3) % 31 for i in range(seed % 41)), seed, (0.0, 0.05, 0.25, 0.6)[seed % 4],
                               1 + seed % 40, seed % 3 == 0, seed % 4), f"db{seed}")
        for seed in range(1, 13)
    ]
    assert sum(1 for db in dbs if db.units()) >= 11
    report = R.replay(dbs, _shapes(), max_removals=6, verify=())
    _assert_clean(report)
    assert report.neighbour_checks >= 400  # 57 (database, removed unit) pairs × 8 shapes = 456


def test_negative_control_join_on_another_column_is_caught() -> None:
    """The same bounded SQL with the join condition on a non-unit column (t.k = e.w) lets one
    unit's rows meet other units' rows: removing it changes groups it has no rows in, or more
    than L∞ — the replay reports it."""
    rw = R.rewritten("SELECT t.g, COUNT(*), SUM(e.v) FROM t JOIN e ON t.uid = e.uid AND t.k = e.w GROUP BY t.g")
    bad_sql = rw.sql.replace('"t"."uid" = "e"."uid" AND ', "")
    assert bad_sql != rw.sql
    bad = dataclasses.replace(rw, sql=bad_sql)
    dbs = [R.materialize(R.DBSpec((4,) * 12, seed, 0.0, 6, False, 0), f"db{seed}") for seed in range(3)]
    report = R.replay(dbs, {"bad": bad}, max_removals=6, verify=())
    assert any(("contributes none" in p or "more than L∞" in p or "more than L0" in p) for p in report.problems), report.problems[:3]
