"""Release plans: sensitivities, grids, key handling and output typing follow from the policy alone."""

from __future__ import annotations

from fractions import Fraction

import pytest
import sqlglot

from dpsql.policy import policy_from_dict
from dpsql.rewriter import rewrite
from dpsql.schema import Catalog, build_catalog


def _stat(rw, column):
    return next(s for s in rw.plan.stats if s.column == column)


def test_count_sensitivity_is_max_rows(catalog: Catalog) -> None:
    rw = rewrite("SELECT COUNT(*) FROM visits", catalog)
    (s,) = rw.plan.stats
    assert s.kind == "count" and s.max_contribution == 3 and s.grid == 1
    assert rw.plan.max_groups == 1 and not rw.plan.keys


def test_sum_sensitivity_uses_max_abs_bound_not_width() -> None:
    """R7: with bounds [2, 5] (0 outside), removing a unit changes SUM by up to max_rows·5, not max_rows·3."""
    pol = policy_from_dict(
        {"server": {"auth": "trust"}, "budget": {"epsilon": 1, "delta": 1e-6}, "users": {"a": {}},
         "tables": {"t": {"privacy_unit": "u", "max_rows": 2, "columns": {"x": {"lower": 2, "upper": 5}}}}}
    )
    cat = build_catalog(pol, {"public.t": [("u", "int8"), ("x", "int4")]})
    rw = rewrite("SELECT SUM(x) FROM t", cat)
    (s,) = rw.plan.stats
    assert s.grid == 1 and s.max_contribution == 2 * 5
    # the partial's clamp LEAST(GREATEST(SUM, 0), 10) is in fixtures/contribution.sql ("R7: …")


def test_float_sum_on_power_of_two_grid(catalog: Catalog) -> None:
    rw = rewrite("SELECT SUM(cost) FROM visits", catalog)
    (s,) = rw.plan.stats
    assert s.grid == Fraction(1, 2048)  # 5000 < 2^13, 24 bits of steps
    assert s.max_contribution == 3 * 5000 * 2048
    # the per-row grid mapping CAST(ROUND(clamped * 2048) AS BIGINT) is in fixtures/contribution.sql


def test_sum_of_expression_uses_interval_bounds(catalog: Catalog) -> None:
    rw = rewrite("SELECT SUM(CASE WHEN age > 50 THEN cost * 2 ELSE 0 END) FROM visits", catalog)
    agg = rw.plan.aggregates[0]
    assert (agg.lower, agg.upper) == (0, 10000)


def test_analyst_clamp_makes_unbounded_column_summable(catalog: Catalog) -> None:
    rw = rewrite("SELECT SUM(LEAST(GREATEST(department_id, 0), 40)) FROM visits", catalog)
    agg = rw.plan.aggregates[0]
    assert (agg.lower, agg.upper) == (0, 40)


def test_avg_is_centred_and_shares_count(catalog: Catalog) -> None:
    rw = rewrite("SELECT COUNT(cost), AVG(cost), VAR_POP(cost) FROM visits", catalog)
    kinds = [s.kind for s in rw.plan.stats]
    assert kinds.count("count") == 1  # COUNT(cost) is shared by COUNT, AVG and VAR_POP
    avg = rw.plan.aggregates[1]
    assert avg.kind == "avg" and avg.center == 2500
    centred = _stat(rw, avg.stats[1])
    assert centred.max_contribution == 3 * 2500 * 2048  # half the range, not the whole bound


def test_declared_values_are_public_keys(catalog: Catalog) -> None:
    rw = rewrite("SELECT department, COUNT(*) FROM visits GROUP BY department", catalog)
    plan = rw.plan
    assert plan.keys_public and not plan.partition_selection and plan.units_column is None
    assert plan.max_groups == 2  # min(max_groups=2, 3 declared values)
    assert "IN ('cardiology', 'oncology', 'orthopedics')" in rw.sql
    assert "VALUES" in plan.public_keys_sql
    assert "ROW_NUMBER()" in rw.sql  # 3 keys > max_groups 2: each unit keeps ≤ 2 groups


def test_undeclared_keys_need_partition_selection(catalog: Catalog) -> None:
    rw = rewrite("SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis", catalog)
    plan = rw.plan
    assert plan.partition_selection and plan.units_column == "__dp_units"
    units = _stat(rw, "__dp_units")
    assert units.kind == "units" and units.max_contribution == 1


def test_public_table_key(catalog: Catalog) -> None:
    rw = rewrite(
        "SELECT d.name, COUNT(*) FROM visits v JOIN departments d ON d.department_id = v.department_id GROUP BY d.name", catalog
    )
    assert rw.plan.keys_public and "FROM \"main\".\"departments\"" in rw.plan.public_keys_sql


def test_post_processing_query_and_types(catalog: Catalog) -> None:
    rw = rewrite("SELECT diagnosis AS d, SUM(cost) / COUNT(*) AS r FROM visits GROUP BY 1 HAVING COUNT(*) > 10 ORDER BY r DESC LIMIT 3",
                 catalog)
    plan = rw.plan
    assert plan.post_sql and "LIMIT 3" in plan.post_sql and "WHERE" in plan.post_sql
    assert [(o.name, o.pg_type) for o in rw.outputs] == [("d", "text"), ("r", "float8")]


def test_plain_projection_has_no_post_query(catalog: Catalog) -> None:
    rw = rewrite("SELECT department, COUNT(*) AS n FROM visits GROUP BY department", catalog)
    assert rw.plan.post_sql is None and rw.plan.output_map == (("key", 0), ("agg", 0))
    assert [(o.name, o.pg_type) for o in rw.outputs] == [("department", "text"), ("n", "int8")]


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM visits WHERE age / 0 > 1 AND CAST(note AS INT) = 3",
        "SELECT department, AVG(age % 7), STDDEV(cost) FROM visits GROUP BY department",
        "SELECT date_trunc('month', visit_date) m, COUNT(*) FROM visits WHERE visit_date >= DATE '2024-01-01' GROUP BY 1",
        "WITH v AS (SELECT patient_id, cost * 1.5 AS c FROM visits) SELECT SUM(c) FROM v",
    ],
)
def test_emitted_sql_is_a_fixed_point(catalog: Catalog, sql: str, dialect: str) -> None:
    try:
        rw = rewrite(sql, catalog, dialect=dialect)
    except Exception as e:  # PostgreSQL refuses casts that can fail; that is the point
        assert dialect == "postgres" and getattr(e, "sqlstate", "") == "0A000"
        return
    again = sqlglot.parse_one(rw.sql, read=dialect).sql(dialect=dialect)
    assert again == rw.sql
    assert "/*" not in rw.sql and "--" not in rw.sql


# DuckDB row expressions are total (NULLIF for x/0, TRY_CAST, integer arithmetic in DOUBLE, date
# arithmetic range-guarded, no TRY): the bounded SQL is golden in fixtures/emit.sql.


def test_plan_is_deterministic(catalog: Catalog) -> None:
    sql = "SELECT diagnosis, AVG(cost) FROM visits WHERE age > 3 GROUP BY diagnosis"
    assert rewrite(sql, catalog) == rewrite(sql, catalog)


def test_comments_never_reach_the_engine(catalog: Catalog) -> None:
    rw = rewrite("SELECT /* x */ COUNT(*) -- y\n FROM visits", catalog)
    assert "x" not in rw.sql.replace("__dp_", "").replace("max", "") or "/*" not in rw.sql
    assert "/*" not in rw.sql


def test_count_star_with_one_row_per_unit_is_the_units_count(catalog: Catalog) -> None:
    # patients: max_rows = 1, so the clamped COUNT(*) equals the distinct-unit count: the plan has
    # one statistic, and under partition selection the threshold's noisy count answers COUNT(*)
    # (no second share of ε spent on a separate count).
    from dpsql.accountant.planner import calibrate

    rw = rewrite("SELECT birth_year, COUNT(*) AS n FROM patients GROUP BY birth_year", catalog)
    plan = rw.plan
    assert plan.partition_selection and [s.column for s in plan.stats] == ["__dp_units"]
    assert plan.aggregates[0].kind == "count" and plan.aggregates[0].stats == ("__dp_units",)
    noise = calibrate(plan, Fraction(1), Fraction(1, 10**5), "basic")
    assert noise.cost.amount <= 1 and len(noise.stats) == 1 and noise.stats[0].from_selection
    # visits has max_rows = 3: COUNT(*) keeps its own statistic beside the units count
    rw3 = rewrite("SELECT diagnosis, COUNT(*) AS n FROM visits GROUP BY diagnosis", catalog)
    assert sorted(s.kind for s in rw3.plan.stats) == ["count", "units"]


def test_float_keys_print_the_same_whichever_unit_came_first(catalog: Catalog) -> None:
    """-0.0 and 0.0 are one group; its key must not be the text of whichever unit's row the engine
    met first (that would reveal another unit's value). The bounded SQL normalises float keys."""
    import duckdb

    rw = rewrite("SELECT cost, COUNT(*) FROM visits GROUP BY cost", catalog, dialect="duckdb")
    keys = set()
    for order in ([(1, -0.0), (2, 0.0)], [(2, 0.0), (1, -0.0)], [(1, -0.0)]):
        con = duckdb.connect()
        try:
            con.execute("CREATE TABLE visits (visit_id BIGINT, patient_id BIGINT, age INTEGER, cost DOUBLE, department VARCHAR, "
                        "diagnosis VARCHAR, visit_date DATE, department_id INTEGER, note VARCHAR, secret VARCHAR)")
            con.executemany("INSERT INTO visits (patient_id, cost) VALUES (?, ?)", order)
            keys |= {str(r[0]) for r in con.execute(rw.sql).fetchall()}
        finally:
            con.close()
    assert keys == {"0.0"}
