"""Every refusal of the rewriter comes with the SQLSTATE of DESIGN §3 and a message saying what to do."""

from __future__ import annotations

import pytest

from dpsql.errors import DPSQLError
from dpsql.rewriter import rewrite
from dpsql.schema import Catalog

REFUSALS = [
    # raw access to private rows → 42501
    ("SELECT * FROM visits", "42501"),
    ("SELECT v.* FROM visits v", "42501"),
    ("SELECT age FROM visits", "42501"),
    ("SELECT department, age FROM visits GROUP BY department", "42501"),
    ("SELECT COUNT(*), cost FROM visits", "42501"),
    ("SELECT MIN(patient_id) FROM visits", "42501"),  # MIN/MAX of the privacy unit stays refused
    ("SELECT MAX(department_id) FROM visits GROUP BY department", "42501"),  # no declared bounds
    ("SELECT SUM(patient_id) FROM visits", "42501"),
    ("SELECT AVG(patient_id + 1) FROM visits", "42501"),
    ("SELECT patient_id, COUNT(*) FROM visits GROUP BY patient_id", "42501"),
    ("SELECT SUM(visit_id) FROM visits", "42501"),  # hidden column → 42703, see below; visit_id is not exposed
    ("SELECT SUM(LENGTH(diagnosis)) FROM visits", "42501"),  # no bounds
    ("SELECT COUNT(*) FROM (SELECT * FROM visits LIMIT 10) s", "42501"),
    ("SELECT COUNT(*) FROM (SELECT * FROM visits ORDER BY age) s", "42501"),
    # SQL over a DP result is post-processing (rewriter/layers.py): COUNT(*) over SELECT DISTINCT of a
    # declared column is free; a DISTINCT that keeps the privacy unit is grouping by it
    ("SELECT COUNT(*) FROM (SELECT DISTINCT patient_id, department FROM visits) s", "42501"),
    ("SELECT COUNT(*) FROM visits TABLESAMPLE BERNOULLI (10)", "42501"),
    ("COPY visits TO '/tmp/x.csv'", "42501"),
    ("PRAGMA database_list", "42501"),
    ("INSTALL httpfs", "42501"),
    ("LOAD httpfs", "42501"),
    ("CREATE MACRO m(a) AS a + 1", "42501"),
    ("CREATE TABLE x AS SELECT 1", "42501"),
    ("INSERT INTO visits VALUES (1)", "42501"),
    ("UPDATE visits SET age = 1", "42501"),
    ("DELETE FROM visits", "42501"),
    ("DROP TABLE visits", "42501"),
    ("SELECT * FROM read_csv('/etc/passwd')", "42501"),
    ("SELECT COUNT(*) FROM read_parquet('x.parquet')", "42501"),
    ("SELECT COUNT(*) FROM generate_series(1, 10)", "42501"),
    ("SELECT COUNT(*) INTO t2 FROM visits", "42501"),
    ("SELECT DISTINCT ON (department) department, age FROM visits", "42501"),
    # outside the supported subset → 0A000
    ("SELECT SUM(cost) OVER () FROM visits", "0A000"),
    ("SELECT COUNT(*) FROM visits WHERE age > (SELECT AVG(age) FROM visits)", "0A000"),
    ("SELECT (SELECT COUNT(*) FROM departments) FROM visits", "0A000"),
    # (subqueries in WHERE over public tables, and semi-joins on the unit: tests/rewriter/test_subqueries.py)
    ("WITH RECURSIVE r AS (SELECT 1 AS n) SELECT COUNT(*) FROM visits", "0A000"),
    ("SELECT COUNT(*) FROM visits; SELECT COUNT(*) FROM visits", "0A000"),
    # private–private joins on anything but the privacy unit (rewriter/joins.py; joins on it: test_private_joins.py)
    ("SELECT COUNT(*) FROM visits a JOIN visits b ON a.age = b.age", "0A000"),
    ("SELECT COUNT(*) FROM visits v JOIN patients p ON v.patient_id = p.patient_id OR v.age = p.birth_year", "0A000"),
    ("SELECT COUNT(*) FROM visits UNION SELECT COUNT(*) FROM visits", "0A000"),
    ("SELECT COUNT(DISTINCT diagnosis, department) FROM visits", "0A000"),  # one expression only
    ("SELECT AVG(n) FROM (SELECT patient_id, COUNT(*) n FROM visits GROUP BY patient_id) s", "42501"),  # the release groups by the unit
    ("SELECT department, COUNT(*) FROM visits GROUP BY ROLLUP (department)", "0A000"),
    ("SELECT COUNT(*) FROM visits WHERE diagnosis ~ 'a.*'", "0A000"),
    ("SELECT COUNT(*) FROM visits WHERE diagnosis LIKE note", "0A000"),
    ("SELECT AVG(DISTINCT age) FROM visits", "0A000"),
    ("SELECT SUM(DISTINCT cost) FROM visits GROUP BY patient_id", "42501"),
    ("SELECT SUM(DISTINCT patient_id) FROM visits", "42501"),
    ("SELECT SUM(DISTINCT department_id) FROM visits", "42501"),  # no declared bounds
    ("SELECT COUNT(*) FROM visits WHERE random() < 0.5", "0A000"),
    # syntax → 42601
    ("SELEC COUNT(*) FROM visits", "42601"),
    ("SELECT COUNT(* FROM visits", "42601"),
    # unknown objects → 42P01 / 42703
    ("SELECT COUNT(*) FROM secrets", "42P01"),
    ("SELECT COUNT(*) FROM pg_shadow", "42P01"),
    ("SELECT COUNT(*) FROM main.nope", "42P01"),
    ("SELECT SUM(nope) FROM visits", "42703"),
    ("SELECT COUNT(secret) FROM visits", "42703"),
    # unknown or disallowed functions → 42883; text compared with a number → 42883
    ("SELECT COUNT(*) FROM visits WHERE read_text('/etc/passwd') = 'x'", "42883"),
    ("SELECT COUNT(*) FROM visits WHERE diagnosis = 5", "42883"),
    ("SELECT COUNT(*) FROM visits WHERE diagnosis IN (1, 2)", "42883"),
]


@pytest.mark.parametrize(("sql", "sqlstate"), REFUSALS)
@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_refused_with_sqlstate(catalog: Catalog, sql: str, sqlstate: str, dialect: str) -> None:
    with pytest.raises(DPSQLError) as info:
        rewrite(sql, catalog, dialect=dialect)
    err = info.value
    expected = "42703" if "visit_id" in sql else sqlstate
    assert err.sqlstate == expected, f"{sql!r}: {err.sqlstate} {err}"
    assert "Traceback" not in str(err)


def test_refusals_have_hints(catalog: Catalog) -> None:
    for sql in ["SELECT * FROM visits", "SELECT MIN(patient_id) FROM visits", "SELECT SUM(cost) OVER () FROM visits"]:
        with pytest.raises(DPSQLError) as info:
            rewrite(sql, catalog)
        assert info.value.hint, sql


def test_sum_without_bounds_names_the_column(catalog: Catalog) -> None:
    with pytest.raises(DPSQLError) as info:
        rewrite("SELECT SUM(department_id) FROM visits", catalog)
    assert "department_id" in info.value.message
    assert "LEAST(GREATEST" in (info.value.hint or "")


def test_public_table_queries_run_as_is(catalog: Catalog) -> None:
    r = rewrite("SELECT name, MIN(floor), COUNT(*) FROM departments GROUP BY name", catalog)
    assert r.public_only and r.plan is None
    assert "MIN(" in r.sql


def test_public_queries_still_block_table_functions(catalog: Catalog) -> None:
    with pytest.raises(DPSQLError) as info:
        rewrite("SELECT * FROM departments, read_csv('/etc/passwd')", catalog)
    assert info.value.sqlstate == "42501"
