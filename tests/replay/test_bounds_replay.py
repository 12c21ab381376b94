"""T1 sensitivity replay for the contribution bounds of issue 10 §3: per-unit bounds on sums
(``unit_lower``/``unit_upper``) and the L1 row cap ``max_contributions``.

The replay databases and lifting of ``replay_lib`` run under a policy that adds both bounds to
the replay tables; ``check_neighbours`` then also checks, for every statistic with an L1 bound,
‖Δ‖₁ and ‖Δ‖₂² against the exact norms ``sensitivity_norms(min(L0, k), L∞, L1)`` that the
calibration charges for, and that at most min(max_groups, k) groups change — on D minus one
whole unit, the heaviest included.
"""

from __future__ import annotations

import copy
import dataclasses
from fractions import Fraction
from typing import Any

import pytest
import replay_lib as R
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sensitivity_replay import FIXED, _row, db_specs

from dpsql.accountant.calibration import sensitivity_norms
from dpsql.accountant.planner import calibrate
from dpsql.errors import PrivacyViolation
from dpsql.policy import policy_from_dict
from dpsql.rewriter import rewrite
from dpsql.rewriter.plan import Rewrite
from dpsql.schema import build_catalog

K_T, K_E = 4, 2  # max_contributions of t (max_groups 2 × max_rows 3 = 6 > 4) and of e (2 × 1 = 2: not binding)


def _policy(with_cap: bool = True) -> dict[str, Any]:
    p = copy.deepcopy(R.POLICY)
    t, e = p["tables"]["t"], p["tables"]["e"]
    if with_cap:
        t["max_contributions"] = K_T
        e["max_contributions"] = K_E
    t["columns"]["x"] = {"lower": -5.0, "upper": 20.0, "unit_lower": -10.0, "unit_upper": 30.0}  # 0 inside
    t["columns"]["y"] = {"lower": 2.0, "upper": 5.0, "unit_lower": 2.5, "unit_upper": 8.0}  # 0 outside
    t["columns"]["k"] = {"unit_lower": 0, "unit_upper": 6}  # per-unit bounds only: rows clamped to [0, 6]
    t["columns"]["h"] = {"max_distinct": 4}  # COUNT(DISTINCT h): ≤ 4 values per unit and group (max_rows is 3)
    e["columns"]["v"] = {"lower": -3, "upper": 7, "unit_lower": -4, "unit_upper": 9}
    return p


CATALOG = build_catalog(policy_from_dict(_policy(), "/nonexistent/bounds-policy.toml"), R.DESCRIBED)
NO_CAP = build_catalog(policy_from_dict(_policy(with_cap=False), "/nonexistent/bounds-policy.toml"), R.DESCRIBED)

SHAPES: dict[str, str] = {
    "global_mixed": "SELECT COUNT(*), SUM(a), SUM(x), AVG(x), SUM(y), AVG(y), SUM(k), AVG(k) FROM t",
    "declared_keys_ranked": "SELECT g, COUNT(*), SUM(a), AVG(a), VAR_POP(a), SUM(x) FROM t GROUP BY g",
    "private_keys_selection": "SELECT h, COUNT(*), SUM(k), AVG(y) FROM t GROUP BY h",
    "filter_unit_bounded": "SELECT g, SUM(y) FILTER (WHERE a > 3), AVG(k) FILTER (WHERE x > 0), COUNT(x) FROM t GROUP BY g",
    "two_keys": "SELECT g, h, COUNT(*), SUM(x) FROM t GROUP BY g, h",
    "e_few_keys": "SELECT c, COUNT(*), SUM(v), AVG(v) FROM e GROUP BY c",
    "e_ranked": "SELECT w, SUM(v), COUNT(*) FROM e GROUP BY w",
    # COUNT/SUM(DISTINCT) under the row cap: L1 = k values (k·c for the sum)
    "distinct_global": "SELECT COUNT(DISTINCT h), SUM(DISTINCT a), COUNT(DISTINCT uid) FILTER (WHERE a > 3) FROM t",
    "distinct_ranked": "SELECT g, COUNT(DISTINCT h), SUM(DISTINCT x), COUNT(*) FROM t GROUP BY g",
    "distinct_private_keys": "SELECT h, COUNT(DISTINCT a), COUNT(DISTINCT uid) FILTER (WHERE y > 3) FROM t GROUP BY h",
    "e_distinct": "SELECT w, COUNT(DISTINCT v), SUM(DISTINCT v) FROM e GROUP BY w",
}


def _shapes(catalog: Any = CATALOG) -> dict[str, Rewrite]:
    return {name: rewrite(sql, catalog) for name, sql in SHAPES.items()}


def _assert_clean(report: R.Report) -> None:
    if report.problems:
        shown = "\n".join(report.problems[:25])
        pytest.fail(f"{len(report.problems)} sensitivity violations, e.g.:\n{shown}")


def test_bounds_replay_on_adversarial_databases() -> None:
    """The fixed T1 databases (10⁴-row unit, a unit in every group, values at and far beyond the
    bounds, NaN/±inf/int64 extremes, empty): every declared L∞, L0 and L1/L2 bound holds, and the
    lifted execution equals direct execution on every database."""
    shapes = _shapes()
    for rw in shapes.values():
        assert rw.plan is not None and rw.plan.max_contributions in (K_T, K_E)
    report = R.replay(FIXED, shapes, verify=tuple(range(len(FIXED))))
    _assert_clean(report)
    assert report.neighbour_checks > 200


@pytest.mark.slow
def test_bounds_replay_on_generated_databases() -> None:
    """The same replay on 60 Hypothesis databases (up to 50 removed units each, the heaviest first)."""
    shapes = _shapes()
    seen = {"dbs": 0, "with_units": 0}

    @settings(max_examples=6, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.lists(db_specs(), min_size=10, max_size=10))
    def batch(specs: list[R.DBSpec]) -> None:
        dbs = [R.materialize(s, f"db{seen['dbs'] + i}(seed={s.seed})") for i, s in enumerate(specs)]
        report = R.replay(dbs, shapes, verify=(seen["dbs"] // 10 % 10,))
        _assert_clean(report)
        seen["dbs"] += len(dbs)
        seen["with_units"] += sum(1 for db in dbs if db.units())

    batch()
    assert seen["with_units"] >= 40


# ------------------------------------------------------------------------------ the bounds are tight

HEAVY = R.DB(
    "heavy",
    tuple(_row(u, a=10, x=20.0, y=5.0, k=6, g=g, h=f"h{u}") for u in range(3) for g in "abc" for _ in range(5)),
)


def _worst(db: R.DB, rw: Rewrite) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Per statistic: the largest per-group change, ‖Δ‖₁ and ‖Δ‖₂² over the removal of each unit."""
    stack = R.build_stack([db])
    try:
        problems: list[str] = []
        assert rw.plan is not None
        empty = R.run_direct(stack, rw, -1, problems, "empty") if not rw.plan.keys else None
        results = R.run_lifted(stack, rw, problems, "tight", empty)
        assert not problems, problems
        full = results[stack.full[0]]
        linf: dict[str, int] = {}
        l1: dict[str, int] = {}
        l2sq: dict[str, int] = {}
        zero = (0,) * len(rw.plan.stats)
        for _, minus, _ in stack.removals[0]:
            for j, s in enumerate(rw.plan.stats):
                deltas = [abs(full.get(g, zero)[j] - results[minus].get(g, zero)[j]) for g in set(full) | set(results[minus])]
                linf[s.column] = max(linf.get(s.column, 0), max(deltas, default=0))
                l1[s.column] = max(l1.get(s.column, 0), sum(deltas))
                l2sq[s.column] = max(l2sq.get(s.column, 0), sum(d * d for d in deltas))
        return linf, l1, l2sq
    finally:
        stack.close()


def test_per_unit_sum_bound_is_reached_and_replaces_max_rows() -> None:
    """A unit with 15 rows at x = 20 has a total of 300 → clamped to unit_upper 30 (not max_rows·20 = 60):
    the sensitivity is max(|unit_lower|, |unit_upper|) = 30, and the heaviest unit reaches it."""
    rw = rewrite("SELECT SUM(x), SUM(y), SUM(k) FROM t", NO_CAP)
    assert rw.plan is not None
    sx, sy, sk = rw.plan.stats
    assert sx.max_contribution * sx.grid == 30 and sy.max_contribution * sy.grid == 8 and sk.max_contribution == 6
    linf, _, _ = _worst(HEAVY, rw)
    assert linf[sx.column] == sx.max_contribution
    assert linf[sy.column] == sy.max_contribution
    assert linf[sk.column] == sk.max_contribution


def test_per_unit_lower_bound_applies_to_units_with_values_only() -> None:
    """GoogleSQL's semantics: y's total is clamped to [2.5, 8] (0 outside), so a unit whose one row is
    y = 2 contributes 2.5, and a unit with y NULL contributes nothing."""
    rw = rewrite("SELECT SUM(y), COUNT(*) FROM t", NO_CAP)
    db = R.DB("low", (_row(1, y=2.0), _row(2, y=None), _row(3, y=2.0), _row(3, y=2.0)))
    con = R.connect_db(db)
    try:
        (row,) = con.execute(rw.sql.replace('"main"."t"', "main.t")).fetchall()
    finally:
        con.close()
    assert rw.plan is not None
    assert Fraction(row[0]) * rw.plan.stats[0].grid == Fraction(5, 2) + 4


def test_max_contributions_l1_bound_is_reached() -> None:
    """COUNT(*) by g with max_rows 3, max_groups 2, k 4: the heaviest unit changes one group by 3 and
    another by 1 — ‖Δ‖₁ = 4 = k, ‖Δ‖₂² = 10 = sensitivity_norms(2, 3, 4) (not 2·3² = 18)."""
    rw = rewrite("SELECT g, COUNT(*) FROM t GROUP BY g", CATALOG)
    assert rw.plan is not None
    (s,) = rw.plan.stats
    assert (s.max_contribution, s.l1) == (3, 4)
    assert sensitivity_norms(2, 3, 4) == (4, 10)
    linf, l1, l2sq = _worst(HEAVY, rw)
    assert (linf[s.column], l1[s.column], l2sq[s.column]) == (3, 4, 10)


def test_max_contributions_lowers_the_noise_by_the_norm_ratio() -> None:
    """Gaussian σ scales with ‖Δ‖₂ (√10 vs √18 for COUNT by g), Laplace scale with ‖Δ‖₁ (4 vs 6)."""
    sql = "SELECT g, COUNT(*) FROM t GROUP BY g"
    capped, free = rewrite(sql, CATALOG).plan, rewrite(sql, NO_CAP).plan
    assert capped is not None and free is not None
    eps, dlt = Fraction(1), Fraction(1, 10**7)
    g_c, g_f = calibrate(capped, eps, dlt, "zcdp").stats[0].scale, calibrate(free, eps, dlt, "zcdp").stats[0].scale
    assert g_c / g_f == pytest.approx((10 / 18) ** 0.5, rel=1e-9)
    l_c, l_f = calibrate(capped, eps, dlt, "basic").stats[0].scale, calibrate(free, eps, dlt, "basic").stats[0].scale
    assert l_c / l_f == pytest.approx(4 / 6, rel=1e-9)


def test_negative_control_understated_l1_is_caught() -> None:
    """A plan claiming an L1 bound one below the real one fails the replay: the L1 check can fail."""
    rw = rewrite("SELECT g, COUNT(*) FROM t GROUP BY g", CATALOG)
    assert rw.plan is not None
    stats = tuple(dataclasses.replace(s, l1=s.l1 - 1) for s in rw.plan.stats if s.l1)
    bad = dataclasses.replace(rw, plan=dataclasses.replace(rw.plan, stats=stats))
    report = R.replay([HEAVY], {"understated": bad})
    assert any("declared L1 bound" in p for p in report.problems)


def test_negative_control_without_the_row_cap_is_caught() -> None:
    """The bounded SQL of the uncapped policy under the capped plan breaks the L1 bound."""
    capped = rewrite("SELECT g, COUNT(*) FROM t GROUP BY g", CATALOG)
    free = rewrite("SELECT g, COUNT(*) FROM t GROUP BY g", NO_CAP)
    bad = dataclasses.replace(capped, sql=free.sql)
    report = R.replay([HEAVY], {"uncapped": bad})
    assert any("declared L1 bound" in p or "‖Δ‖₂²" in p for p in report.problems)


def test_per_unit_only_bounds_refuse_per_row_uses() -> None:
    """k has only per-unit bounds: VAR, quantiles and expressions need per-row bounds (42501)."""
    for sql in ("SELECT VAR_POP(k) FROM t", "SELECT SUM(k * 2) FROM t", "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY k) FROM t"):
        with pytest.raises(PrivacyViolation) as e:
            rewrite(sql, CATALOG)
        assert e.value.sqlstate == "42501"


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_bounded_sql_on_postgres_and_spark(name: str) -> None:
    """R11 for the row cap and per-unit clamps: the PostgreSQL SQL is a parse/generate fixed point
    with the DuckDB plan's statistics (cost independent of the engine), and the Spark SQL passes
    the Spark allowlist check the backend runs before sending."""
    import sqlglot

    from dpsql.rewriter import spark

    pg, duck, sp = (rewrite(SHAPES[name], CATALOG, dialect=d) for d in ("postgres", "duckdb", "spark"))
    assert sqlglot.parse_one(pg.sql, read="postgres").sql("postgres", comments=False) == pg.sql
    assert pg.plan is not None and duck.plan is not None and sp.plan is not None
    assert pg.plan.stats == duck.plan.stats == sp.plan.stats
    assert pg.plan.max_contributions == duck.plan.max_contributions
    spark.verify(sp.sql, ["dpsql_6_public_t", "dpsql_6_public_e", "dpsql_6_public_p"])


# ------------------------------------------------------------------------------ subqueries in WHERE


def test_subquery_replay_on_adversarial_databases() -> None:
    """Semi-/anti-joins on the unit (IN, NOT IN, EXISTS, NOT EXISTS, a self semi-join) and filters
    over the public table: on the fixed T1 databases (the 10⁴-row unit, unit-less rows in both
    tables, values beyond the bounds, empty) and D minus one whole unit (its rows in t *and* e, the
    heaviest first), every statistic moves by at most its declared sensitivity. A unit's filter
    reads only its own rows, so bounding after the filter keeps the policy's constants."""
    shapes = {n: R.rewritten(sql) for n, sql in R.SUBQUERY_SHAPES.items()}
    for name, rw in shapes.items():
        assert rw.plan is not None, name
        if not name.startswith("public"):
            assert len(rw.plan.tables) == 2 or name == "self_semi_join", name
    report = R.replay(FIXED, shapes, max_removals=8, verify=())
    _assert_clean(report)
    assert report.neighbour_checks >= 250


@pytest.mark.slow
def test_subquery_replay_on_generated_databases() -> None:
    """The same on 12 generated databases (0–40 units, special values, wide ids, unit-less rows)."""
    dbs = [
        R.materialize(R.DBSpec(tuple((seed * 7 + i * 3) % 31 for i in range(seed % 41)), seed, (0.0, 0.05, 0.25, 0.6)[seed % 4],
                               1 + seed % 40, seed % 3 == 0, seed % 4), f"db{seed}")
        for seed in range(1, 13)
    ]
    report = R.replay(dbs, {n: R.rewritten(sql) for n, sql in R.SUBQUERY_SHAPES.items()}, max_removals=6, verify=())
    _assert_clean(report)
    assert report.neighbour_checks >= 400


def test_negative_control_semi_join_off_the_unit_is_caught() -> None:
    """The semi-join's bounded SQL with its unit link replaced by a link on another column
    (e.w = t.k: rows of one unit meet other units' rows) — removing one unit then changes other
    units' rows, and the replay reports it."""
    rw = R.rewritten("SELECT t.g, COUNT(*) FROM t WHERE EXISTS (SELECT 1 FROM e WHERE e.uid = t.uid AND e.v > 0) GROUP BY t.g")
    bad_sql = rw.sql.replace('"e"."uid" = "t"."uid"', '"e"."w" = "t"."k" % 4')
    assert bad_sql != rw.sql
    bad = dataclasses.replace(rw, sql=bad_sql)
    dbs = [R.materialize(R.DBSpec((4,) * 12, seed, 0.0, 6, False, 0), f"db{seed}") for seed in range(3)]
    report = R.replay(dbs, {"bad": bad}, max_removals=6, verify=())
    assert any(("contributes none" in p or "more than L∞" in p or "more than L0" in p) for p in report.problems), report.problems[:3]
