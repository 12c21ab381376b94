"""Subqueries in WHERE (rewriter/subqueries.py, pass 6b): over public tables they are row filters,
over a private table semi-/anti-joins on the privacy unit; anything else reading a private table in
a subquery is refused with 0A000 naming the construct. Answers on data: tests/engine/test_subqueries.py."""

from __future__ import annotations

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from dpsql.errors import DPSQLError
from dpsql.rewriter import rewrite, spark
from dpsql.schema import Catalog

PUBLIC = [
    "SELECT COUNT(*) FROM visits WHERE department IN (SELECT name FROM departments WHERE floor > 2)",
    "SELECT COUNT(*) FROM visits WHERE department NOT IN (SELECT name FROM departments WHERE floor > 2)",
    "SELECT COUNT(*) FROM visits v WHERE EXISTS (SELECT 1 FROM departments d WHERE d.department_id = v.department_id)",
    "SELECT COUNT(*) FROM visits v WHERE NOT EXISTS (SELECT FROM departments d WHERE d.department_id = v.department_id "
    "AND d.floor > v.age)",
    "SELECT SUM(cost) FROM visits WHERE age > (SELECT MAX(floor) FROM departments)",
    "SELECT COUNT(*) FROM visits v WHERE v.age > (SELECT AVG(d.floor) FROM departments d WHERE d.department_id = v.department_id)",
    "SELECT COUNT(*) FROM visits WHERE department_id = (SELECT department_id FROM departments ORDER BY floor DESC LIMIT 1)",
    "SELECT department, COUNT(*) FROM visits WHERE department_id IN (SELECT DISTINCT department_id FROM departments) "
    "OR age > 60 GROUP BY department",
    "SELECT COUNT(*) FROM visits WHERE age > (SELECT 1)",
    "SELECT COUNT(*) FROM visits WHERE department IN (SELECT lower(name) FROM departments GROUP BY name)",
]

PRIVATE = [
    "SELECT COUNT(*) FROM visits WHERE patient_id IN (SELECT patient_id FROM patients WHERE birth_year > 1960)",
    "SELECT COUNT(*) FROM visits WHERE patient_id NOT IN (SELECT patient_id FROM patients WHERE region = 'north')",
    "SELECT department, AVG(cost) FROM visits v WHERE EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = v.patient_id "
    "AND p.birth_year < 1950) GROUP BY department",
    "SELECT COUNT(*) FROM visits v WHERE NOT EXISTS (SELECT FROM patients p WHERE v.patient_id = p.patient_id)",
    "SELECT COUNT(*) FROM patients p WHERE EXISTS (SELECT 1 FROM visits v WHERE v.patient_id = p.patient_id AND v.cost > 1000)",
    # a self semi-join, and one beside a private join
    "SELECT COUNT(*) FROM visits v WHERE patient_id IN (SELECT patient_id FROM visits WHERE department = 'oncology')",
    "SELECT COUNT(*) FROM visits v JOIN patients p USING (patient_id) WHERE EXISTS (SELECT 1 FROM visits w "
    "WHERE w.patient_id = p.patient_id AND w.age > 80)",
]

REFUSED = [
    # private rows aggregated, or linked on anything but the unit
    ("SELECT COUNT(*) FROM visits WHERE age > (SELECT AVG(age) FROM visits)", "scalar subquery over the private table visits"),
    (
        "SELECT COUNT(*) FROM visits v WHERE EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = v.patient_id AND p.birth_year < v.age)",
        "correlated by p.birth_year < v.age",
    ),
    (
        "SELECT COUNT(*) FROM visits v WHERE EXISTS (SELECT 1 FROM patients p WHERE p.birth_year = v.age)",
        "correlated by p.birth_year = v.age",
    ),
    (
        "SELECT COUNT(*) FROM visits v WHERE EXISTS (SELECT 1 FROM patients p WHERE p.birth_year > 1950)",
        "must be correlated on the privacy unit",
    ),
    (
        "SELECT COUNT(*) FROM visits v WHERE EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = v.patient_id OR p.birth_year > 1)",
        "correlated by",
    ),
    ("SELECT COUNT(*) FROM visits WHERE age IN (SELECT birth_year FROM patients)", "must select its privacy unit patient_id"),
    (
        "SELECT COUNT(*) FROM visits WHERE department_id IN (SELECT patient_id FROM patients)",
        "compared with the outer private table's privacy unit, not visits.department_id",
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE patient_id IN (SELECT patient_id FROM patients GROUP BY patient_id HAVING COUNT(*) > 1)",
        "GROUP BY inside IN (subquery) over the private table patients",
    ),
    ("SELECT COUNT(*) FROM visits WHERE patient_id IN (SELECT DISTINCT patient_id FROM patients)", "DISTINCT inside IN (subquery)"),
    (
        "SELECT COUNT(*) FROM visits WHERE patient_id IN (SELECT p.patient_id FROM patients p JOIN visits w USING (patient_id))",
        "may read that one table only",
    ),
    (
        "SELECT COUNT(*) FROM visits v WHERE v.patient_id IN (SELECT p.patient_id FROM patients p WHERE p.birth_year = v.age)",
        "reads the outer query's columns",
    ),
    (
        "SELECT COUNT(*) FROM departments WHERE department_id IN (SELECT department_id FROM visits)",
        "a subquery reads the private table visits to filter rows of public tables only",
    ),
    # positions and shapes
    ("SELECT (SELECT COUNT(*) FROM departments) FROM visits", "0A000"),
    ("SELECT department, COUNT(*) FROM visits GROUP BY department HAVING COUNT(*) > (SELECT MAX(floor) FROM departments)", "in HAVING"),
    ("SELECT COUNT(*) FROM visits WHERE age IN (SELECT floor FROM departments WHERE department_id IN (SELECT 1))", "nested subqueries"),
    (
        "SELECT COUNT(*) FROM visits v WHERE v.age > (SELECT d.floor FROM departments d WHERE d.department_id = v.department_id)",
        "a correlated scalar subquery must be one COUNT/SUM/AVG/MIN/MAX",
    ),
    ("SELECT COUNT(*) FROM visits WHERE age > (SELECT MAX(floor) + 1 FROM departments)", "only a column, a row expression or one"),
    ("SELECT COUNT(*) FROM visits v WHERE age IN (SELECT v.age FROM departments d)", "selects the outer query's column v.age"),
    ("SELECT COUNT(*) FROM visits WHERE department_id IN (SELECT department_id, floor FROM departments)", "exactly one column"),
    # a private subquery under OR / CASE would run row by row (its cost growing with the private table)
    ("SELECT COUNT(*) FROM visits WHERE patient_id IN (SELECT patient_id FROM patients) OR age > 3",
     "must be a condition of its own in WHERE, joined to the others by AND"),
    ("SELECT COUNT(*) FROM visits v WHERE CASE WHEN EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = v.patient_id) "
     "THEN 1 ELSE 0 END = 1", "must be a condition of its own in WHERE"),
]

TYPE_ERRORS = [
    ("SELECT COUNT(*) FROM visits WHERE department IN (SELECT floor FROM departments)", "42883"),
    ("SELECT COUNT(*) FROM visits WHERE age > (SELECT MAX(name) FROM departments)", "42883"),
    ("SELECT COUNT(*) FROM visits WHERE age IN (SELECT floor FROM departments WHERE name > 3)", "42883"),
]


def _validate(sql: str) -> None:
    """The emitted SQL binds on an empty DuckDB with the schema (no data)."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE visits (visit_id BIGINT, patient_id BIGINT, age INTEGER, cost DOUBLE, department TEXT, "
        "diagnosis TEXT, visit_date DATE, department_id INTEGER, note TEXT, secret TEXT)"
    )
    con.execute("CREATE TABLE patients (patient_id BIGINT, region TEXT, birth_year INTEGER)")
    con.execute("CREATE TABLE departments (department_id INTEGER, name TEXT, floor INTEGER)")
    con.execute(sql).fetchall()
    con.close()


@pytest.mark.parametrize("sql", PUBLIC + PRIVATE)
@pytest.mark.parametrize("dialect", ["duckdb", "postgres", "spark"])
def test_accepted(catalog: Catalog, sql: str, dialect: str) -> None:
    rw = rewrite(sql, catalog, dialect=dialect)
    assert rw.plan is not None
    tree = sqlglot.parse_one(rw.sql, read=dialect)
    assert tree.find(exp.Exists, exp.In, exp.Subquery) is not None
    assert "__dp_subquery" not in rw.sql.lower()
    if dialect == "spark":  # the check the Spark backend runs before sending
        ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
        spark.verify(rw.sql, {t.name for t in tree.find_all(exp.Table)} - ctes)
    if dialect == "duckdb":
        _validate(rw.sql)
        if rw.plan.subquery_check_sql is not None:
            _validate(rw.plan.subquery_check_sql)


@pytest.mark.parametrize("sql", PRIVATE)
def test_private_subqueries_read_rows_with_a_unit_and_are_listed(catalog: Catalog, sql: str) -> None:
    rw = rewrite(sql, catalog)
    assert rw.plan is not None
    tree = sqlglot.parse_one(rw.sql, read="duckdb")
    inner = [e.this for e in tree.find_all(exp.Exists)] + [i.args["query"].this for i in tree.find_all(exp.In) if i.args.get("query")]
    inner = [s for s in inner if s.find(exp.Table).name != "__dp_unitrows"]
    assert inner and all("IS NULL" in s.args["where"].sql() for s in inner)
    assert set(rw.plan.tables) >= {"public.visits"}


def test_plan_tables_name_the_subquery_table(catalog: Catalog) -> None:
    rw = rewrite(PRIVATE[0], catalog)
    assert rw.plan is not None and rw.plan.tables == ("public.visits", "public.patients")


@pytest.mark.parametrize(("sql", "words"), REFUSED)
@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_refused_with_0a000_naming_the_construct(catalog: Catalog, sql: str, words: str, dialect: str) -> None:
    with pytest.raises(DPSQLError) as e:
        rewrite(sql, catalog, dialect=dialect)
    assert e.value.sqlstate == "0A000", e.value.message
    assert words == "0A000" or words in e.value.message, e.value.message
    assert "__dp" not in e.value.message


@pytest.mark.parametrize(("sql", "sqlstate"), TYPE_ERRORS)
def test_subquery_operands_are_type_checked(catalog: Catalog, sql: str, sqlstate: str) -> None:
    with pytest.raises(DPSQLError) as e:
        rewrite(sql, catalog)
    assert e.value.sqlstate == sqlstate


def test_uncorrelated_scalar_is_counted_before_the_charge(catalog: Catalog) -> None:
    rw = rewrite("SELECT COUNT(*) FROM visits WHERE age > (SELECT MAX(floor) FROM departments)", catalog)
    assert rw.plan is not None and rw.plan.subquery_check_sql is not None
    assert "COUNT(*)" in rw.plan.subquery_check_sql and "visits" not in rw.plan.subquery_check_sql
    correlated = rewrite(
        "SELECT COUNT(*) FROM visits v WHERE v.age > (SELECT MAX(d.floor) FROM departments d WHERE d.department_id = v.department_id)",
        catalog,
    )
    assert correlated.plan is not None and correlated.plan.subquery_check_sql is None  # an ungrouped aggregate: one row


def test_subquery_bodies_are_made_total(catalog: Catalog) -> None:
    """A public body's row expressions get the outer query's totalize (no error can depend on which
    rows the engine evaluates): the division by floor is guarded like one over a private column."""
    rw = rewrite(
        "SELECT COUNT(*) FROM visits v WHERE EXISTS (SELECT 1 FROM departments d WHERE d.department_id = v.department_id "
        "AND 10 / d.floor > 2)",
        catalog,
    )
    body = next(e for e in sqlglot.parse_one(rw.sql, read="duckdb").find_all(exp.Exists))
    assert "NULLIF" in body.sql().upper() or "CASE" in body.sql().upper()


def test_constants_in_a_body_are_checked_before_the_charge(catalog: Catalog) -> None:
    rw = rewrite(
        "SELECT COUNT(*) FROM visits WHERE department_id IN (SELECT department_id FROM departments WHERE floor > CAST('3' AS INT))", catalog
    )
    assert rw.plan is not None and rw.plan.constants_sql is not None and "'3'" in rw.plan.constants_sql


def test_clashing_aliases_are_renamed(catalog: Catalog) -> None:
    rw = rewrite("SELECT COUNT(*) FROM visits v WHERE v.patient_id IN (SELECT v.patient_id FROM patients v)", catalog)
    assert '"v_sq0"' in rw.sql or "v_sq0" in rw.sql


@pytest.mark.parametrize("dialect", ["duckdb", "spark"])
def test_public_exists_with_an_empty_select_list_is_emitted_with_a_column(catalog: Catalog, dialect: str) -> None:
    """PostgreSQL's ``EXISTS (SELECT FROM …)`` (clients probe tables this way) over public tables:
    DuckDB and Spark do not parse an empty select list, so it selects 1 (the same truth value)."""
    rw = rewrite("SELECT EXISTS (SELECT FROM departments WHERE floor > 2)", catalog, dialect=dialect)
    assert rw.public_only and "SELECT 1" in rw.sql
    if dialect == "duckdb":
        _validate(rw.sql)


def _bounded_total(sql: str, departments: list[tuple[int, str | None, int]]) -> int:
    """The exact bounded COUNT of ``sql`` (DuckDB) over 4 patients × 2 visits and ``departments``."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE visits AS SELECT i AS visit_id, i % 4 AS patient_id, 30 AS age, 1.0 AS cost, "
        "CASE WHEN i % 2 = 0 THEN 'oncology' ELSE 'cardiology' END AS department, 'x' AS diagnosis, DATE '2024-01-01' AS visit_date, "
        "1 AS department_id, '' AS note, '' AS secret FROM range(8) t(i)"
    )
    con.execute("CREATE TABLE patients (patient_id BIGINT, region TEXT, birth_year INTEGER)")
    con.execute("CREATE TABLE departments (department_id INTEGER, name TEXT, floor INTEGER)")
    con.executemany("INSERT INTO departments VALUES (?, ?, ?)", departments)
    (total,) = con.execute(sql).fetchone()
    con.close()
    return int(total)


def test_not_in_keeps_postgresql_null_semantics(catalog: Catalog) -> None:
    """``x NOT IN (SELECT …)`` is never true when the list holds a NULL (PostgreSQL, and DuckDB's
    engine, which runs it as written); ``NOT EXISTS`` is."""
    rw = rewrite("SELECT COUNT(*) FROM visits WHERE department NOT IN (SELECT name FROM departments)", catalog)
    assert _bounded_total(rw.sql, [(1, "oncology", 1)]) == 4  # the 4 cardiology visits
    assert _bounded_total(rw.sql, [(1, "oncology", 1), (2, None, 1)]) == 0
    anti = rewrite("SELECT COUNT(*) FROM visits v WHERE NOT EXISTS (SELECT 1 FROM departments d WHERE d.name = v.department)", catalog)
    assert _bounded_total(anti.sql, [(1, "oncology", 1), (2, None, 1)]) == 4


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_quantile_histograms_carry_the_filters(catalog: Catalog, dialect: str) -> None:
    """MIN/MAX/quantiles run their own bounded histogram queries: the subquery filters are in them too."""
    rw = rewrite("SELECT MAX(cost) FROM visits v WHERE department IN (SELECT name FROM departments) "
                 "AND EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = v.patient_id)", catalog, dialect=dialect)
    assert rw.plan is not None and rw.plan.histograms
    for h in rw.plan.histograms:
        assert "__dp_subquery" not in h.sql.lower() and "EXISTS" in h.sql and "departments" in h.sql
        if dialect == "duckdb":
            _validate(h.sql)
