"""COUNT(DISTINCT x), SUM(DISTINCT x), APPROX_COUNT_DISTINCT(x) and COUNT(DISTINCT unit) FILTER
(issue 10 §2): plans, sensitivities from the policy, the three engines' SQL, and refusals."""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import sqlglot

from dpsql.errors import DPSQLError, PrivacyViolation, UnsupportedQuery
from dpsql.policy import policy_from_dict
from dpsql.rewriter import rewrite, spark
from dpsql.schema import Catalog, build_catalog

from .conftest import DESCRIBED, POLICY

R = POLICY["tables"]["visits"]["max_rows"]  # 3: distinct values a unit keeps per group


def _capped(k: int) -> Catalog:
    p = copy.deepcopy(POLICY)
    p["tables"]["visits"]["max_contributions"] = k
    return build_catalog(policy_from_dict(p, "/tmp/policy.toml"), DESCRIBED)


@pytest.mark.parametrize(
    "arg", ["diagnosis", "visit_date", "cost", "age + 1", "department", "lower(note)", "CAST(age AS TEXT)"]
)
def test_count_distinct_of_any_type_is_a_count_with_linf_max_rows(catalog: Catalog, arg: str) -> None:
    rw = rewrite(f"SELECT COUNT(DISTINCT {arg}) FROM visits", catalog)
    assert rw.plan is not None
    (s,) = rw.plan.stats
    assert (s.kind, s.max_contribution, s.grid) == ("count", R, 1)
    assert rw.plan.aggregates[0].kind == "count" and rw.plan.outputs[0].pg_type == "int8"
    assert rw.plan.outputs[0].name == "count"
    assert "__dp_vr <= 3" in rw.sql and "ROW_NUMBER() OVER (PARTITION BY __dp_uid" in rw.sql


def test_count_distinct_with_filter_group_by_and_partition_selection(catalog: Catalog) -> None:
    rw = rewrite(
        "SELECT diagnosis, COUNT(DISTINCT visit_date) FILTER (WHERE age > 40), COUNT(DISTINCT department) "
        "FROM visits GROUP BY diagnosis",
        catalog,
    )
    assert rw.plan is not None and rw.plan.partition_selection
    assert [s.max_contribution for s in rw.plan.stats if s.kind == "count"] == [R, R]
    assert rw.plan.units_column is not None
    assert "CASE WHEN" in rw.sql and "> 40" in rw.sql
    # groups ranked per unit: the value rows are restricted to the unit's kept groups
    assert "JOIN __dp_ranked AS __dp_r" in rw.sql and "__dp_r.__dp_rank <= 2" in rw.sql


def test_count_and_sum_distinct_over_declared_keys(catalog: Catalog) -> None:
    rw = rewrite("SELECT department, COUNT(DISTINCT diagnosis), SUM(DISTINCT age) FROM visits GROUP BY department", catalog)
    assert rw.plan is not None and rw.plan.keys_public
    cd, sd = rw.plan.stats
    assert (cd.max_contribution, sd.kind, sd.max_contribution) == (R, "sum", R * 100)
    assert [o.pg_type for o in rw.plan.outputs] == ["text", "int8", "int8"]


def test_sum_distinct_of_a_float_uses_the_sum_grid(catalog: Catalog) -> None:
    rw = rewrite("SELECT SUM(DISTINCT cost), SUM(cost) FROM visits", catalog)
    assert rw.plan is not None
    sd, s = rw.plan.stats
    assert sd.grid == s.grid and sd.max_contribution == s.max_contribution  # both R · 5000 / grid
    assert sd.max_contribution * sd.grid == R * 5000
    assert rw.plan.outputs[0].pg_type == "float8" and rw.plan.aggregates[0].kind == "sum"
    assert rw.sql.count("__dp_g") > 0 and "__dp_v0" not in rw.sql  # one grid column shared with SUM(cost)


def test_approx_count_distinct_is_the_exact_count_distinct(catalog: Catalog) -> None:
    exact = rewrite("SELECT COUNT(DISTINCT diagnosis) FROM visits", catalog)
    for written in ("APPROX_COUNT_DISTINCT(diagnosis)", "approx_count_distinct(diagnosis)"):
        rw = rewrite(f"SELECT {written} FROM visits", catalog)
        assert rw.plan is not None and exact.plan is not None
        assert rw.plan.stats == exact.plan.stats
        assert rw.plan.outputs[0].name == "approx_count_distinct"
        assert any("APPROX_COUNT_DISTINCT(x) is answered as COUNT(DISTINCT x)" in d for d in rw.plan.description)
        assert "approx" not in rw.sql.lower()  # exact COUNT in the bounded SQL, no sketch


def test_count_distinct_unit_with_filter_has_sensitivity_one(catalog: Catalog) -> None:
    rw = rewrite(
        "SELECT department, COUNT(DISTINCT patient_id) FILTER (WHERE age > 60), COUNT(DISTINCT patient_id) "
        "FROM visits GROUP BY department",
        catalog,
    )
    assert rw.plan is not None
    (s,) = [s for s in rw.plan.stats if s.kind == "count"]
    assert s.max_contribution == 1
    assert [a.kind for a in rw.plan.aggregates] == ["count_units", "count_units"]
    assert "LEAST(COUNT(__dp_x" in rw.sql and "), 1)" in rw.sql


def test_row_cap_gives_the_l1_bound(catalog: Catalog) -> None:
    rw = rewrite(
        "SELECT diagnosis, COUNT(DISTINCT visit_date), SUM(DISTINCT age), COUNT(DISTINCT patient_id) FILTER (WHERE age > 1) "
        "FROM visits GROUP BY diagnosis",
        _capped(4),
    )
    assert rw.plan is not None and rw.plan.max_contributions == 4
    by_kind = {s.description.split(":")[0]: s for s in rw.plan.stats}
    cd = next(s for k, s in by_kind.items() if k.startswith("COUNT(DISTINCT visits.visit_date)"))
    sd = next(s for k, s in by_kind.items() if k.startswith("SUM(DISTINCT"))
    assert (cd.max_contribution, cd.l1) == (R, 4)
    assert (sd.max_contribution, sd.l1) == (R * 100, 4 * 100)
    assert "FROM __dp_capped WHERE NOT __dp_v" in rw.sql  # the value rows are the capped rows


def test_count_distinct_in_a_unit_join(catalog: Catalog) -> None:
    """Across a join on the unit, a FULL join's first unit may be NULL: COUNT(DISTINCT v.patient_id)
    is then an ordinary distinct count (L∞ = max_rows), not the distinct-unit statistic."""
    rw = rewrite("SELECT COUNT(DISTINCT v.patient_id) FROM visits v FULL JOIN patients p USING (patient_id)", catalog)
    assert rw.plan is not None
    (s,) = rw.plan.stats
    assert s.kind == "count" and s.max_contribution == R and rw.plan.units_column is None


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT diagnosis, COUNT(DISTINCT visit_date) FILTER (WHERE cost > 10), SUM(DISTINCT cost) FROM visits GROUP BY diagnosis",
        "SELECT COUNT(DISTINCT diagnosis), APPROX_COUNT_DISTINCT(visit_date), COUNT(DISTINCT patient_id) FILTER (WHERE age > 3) "
        "FROM visits",
        "SELECT department, SUM(DISTINCT age), COUNT(*) FROM visits GROUP BY department",
    ],
)
def test_postgres_and_spark_sql(catalog: Catalog, sql: str) -> None:
    """R11: the PostgreSQL SQL is a parse/generate fixed point with the DuckDB plan's statistics;
    the Spark SQL passes the allowlist check the backend runs before sending."""
    duck, pg, sp = (rewrite(sql, catalog, dialect=d) for d in ("duckdb", "postgres", "spark"))
    assert sqlglot.parse_one(pg.sql, read="postgres").sql("postgres", comments=False) == pg.sql
    assert duck.plan is not None and pg.plan is not None and sp.plan is not None
    assert duck.plan.stats == pg.plan.stats == sp.plan.stats
    spark.verify(sp.sql, [spark.view_name("public", "visits")])
    if duck.plan.keys and "__dp_ranked" in duck.sql:  # the kept-groups join is NULL-safe on every engine
        assert all("IS NOT DISTINCT FROM" in q.sql for q in (duck, pg, sp))


@pytest.mark.parametrize(
    ("sql", "sqlstate", "words"),
    [
        ("SELECT AVG(DISTINCT age) FROM visits", "0A000", "AVG(DISTINCT"),
        ("SELECT VAR_POP(DISTINCT age) FROM visits", "0A000", "VAR_POP(DISTINCT visits.age)"),
        ("SELECT STDDEV(DISTINCT cost) FROM visits", "0A000", "STDDEV(DISTINCT visits.cost)"),
        ("SELECT MIN(DISTINCT age) FROM visits", "0A000", "MIN(DISTINCT"),
        ("SELECT COUNT(DISTINCT diagnosis, department) FROM visits", "0A000", "several expressions"),
        ("SELECT COUNT(DISTINCT (age, cost)) FROM visits", "0A000", "several expressions"),
        ("SELECT SUM(DISTINCT patient_id) FROM visits", "42501", "privacy unit"),
        ("SELECT SUM(DISTINCT department_id) FROM visits", "42501", "bounds"),
        ("SELECT SUM(DISTINCT diagnosis) FROM visits", "42501", "bounds"),
        ("SELECT COUNT(DISTINCT COUNT(*)) FROM visits", "0A000", "nested"),
        ("SELECT APPROX_COUNT_DISTINCT(diagnosis, 0.1) FROM visits", "0A000", "one argument"),
    ],
)
def test_refusals(catalog: Catalog, sql: str, sqlstate: str, words: str) -> None:
    with pytest.raises(DPSQLError) as e:
        rewrite(sql, catalog)
    assert e.value.sqlstate == sqlstate, (sql, e.value)
    assert words in str(e.value), str(e.value)


def test_per_unit_bounds_do_not_bound_sum_distinct() -> None:
    p = copy.deepcopy(POLICY)
    p["tables"]["visits"]["columns"]["department_id"] = {"unit_lower": 0, "unit_upper": 10}
    cat = build_catalog(policy_from_dict(p, "/tmp/policy.toml"), DESCRIBED)
    with pytest.raises(PrivacyViolation) as e:
        rewrite("SELECT SUM(DISTINCT department_id) FROM visits", cat)
    assert "per-row bounds" in str(e.value)
    assert rewrite("SELECT COUNT(DISTINCT department_id) FROM visits", cat).plan is not None


def test_sensitivities_do_not_depend_on_the_data_or_the_engine(catalog: Catalog) -> None:
    sql = "SELECT COUNT(DISTINCT diagnosis), SUM(DISTINCT age) FROM visits WHERE cost > 3"
    plans = [rewrite(sql, catalog, dialect=d).plan for d in ("duckdb", "postgres", "spark")]
    assert all(p is not None for p in plans)
    assert {tuple((s.max_contribution, s.grid) for s in p.stats) for p in plans if p} == {((R, Fraction(1)), (R * 100, Fraction(1)))}
    assert isinstance(UnsupportedQuery("x"), DPSQLError)


def _with_column(name: str, spec: dict[str, object], table: str = "visits") -> dict[str, object]:
    p = copy.deepcopy(POLICY)
    p["tables"][table].setdefault("columns", {})[name] = spec
    return p


def test_max_distinct_bounds_count_and_sum_distinct_of_the_column() -> None:
    """``max_distinct`` on a column replaces max_rows as the per-unit, per-group distinct-value bound
    of COUNT/SUM(DISTINCT col) (FILTER allowed); other expressions keep max_rows."""
    p = _with_column("visit_date", {"max_distinct": 12})
    p["tables"]["visits"]["columns"]["age"] = {"lower": 0, "upper": 100, "max_distinct": 2}
    cat = build_catalog(policy_from_dict(p, "/tmp/policy.toml"), DESCRIBED)
    rw = rewrite(
        "SELECT COUNT(DISTINCT visit_date), COUNT(DISTINCT visit_date) FILTER (WHERE age > 3), SUM(DISTINCT age), "
        "COUNT(DISTINCT age + 1), COUNT(DISTINCT diagnosis) FROM visits",
        cat,
    )
    assert rw.plan is not None
    assert [s.max_contribution for s in rw.plan.stats] == [12, 12, 2 * 100, R, R]
    assert "max_distinct of visit_date" in rw.plan.stats[0].description
    assert "__dp_vr <= 12" in rw.sql and "__dp_vr <= 2" in rw.sql


@pytest.mark.parametrize(
    ("table", "column", "spec", "words"),
    [
        ("visits", "visit_date", {"max_distinct": 0}, "at least 1"),
        ("visits", "visit_date", {"max_distinct": 2.5}, "must be an integer"),
        ("visits", "visit_date", {"max_distinct": "5"}, "must be an integer"),
        ("visits", "visit_date", {"max_distinct": 10**6}, "at most 10000"),
        ("visits", "patient_id", {"max_distinct": 3}, "privacy unit"),
        ("departments", "name", {"max_distinct": 3}, "only to private tables"),
    ],
)
def test_max_distinct_is_validated(table: str, column: str, spec: dict[str, object], words: str) -> None:
    from dpsql.errors import PolicyError

    with pytest.raises(PolicyError) as e:
        policy_from_dict(_with_column(column, spec, table), "/tmp/policy.toml")
    assert "max_distinct" in str(e.value) and words in str(e.value), str(e.value)
