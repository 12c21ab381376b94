"""Derived tables and CTEs over public tables only are public relations (pass 3b, rewriter/public_relations.py)."""

from __future__ import annotations

import pytest

from dpsql.errors import DPSQLError
from dpsql.rewriter import rewrite
from dpsql.schema import Catalog

ACCEPTED = [
    # the public-groups idiom: every department id is released (RIGHT JOIN … USING binds k to the public side)
    "SELECT department_id, COUNT(*) FROM visits RIGHT OUTER JOIN (SELECT DISTINCT department_id FROM departments) AS g "
    "USING (department_id) GROUP BY department_id",
    "SELECT d.name, COUNT(*) FROM visits v JOIN (SELECT department_id, name FROM departments WHERE floor > 1) d "
    "ON v.department_id = d.department_id GROUP BY d.name",
    "WITH dims AS (SELECT floor, MIN(department_id) AS department_id FROM departments GROUP BY floor) "
    "SELECT dims.floor, SUM(v.cost) FROM visits v JOIN dims ON v.department_id = dims.department_id GROUP BY dims.floor",
    "WITH a AS (SELECT DISTINCT department_id FROM departments), b AS (SELECT department_id FROM a WHERE department_id > 1) "
    "SELECT b.department_id, COUNT(*) FROM visits v RIGHT JOIN b USING (department_id) GROUP BY b.department_id",
    "SELECT COUNT(*) FROM visits v JOIN (SELECT department_id, ROW_NUMBER() OVER (ORDER BY floor) AS r FROM departments "
    "ORDER BY floor LIMIT 3) d ON v.department_id = d.department_id",
    "SELECT g.k, COUNT(*) FROM visits v RIGHT JOIN (SELECT 1 AS k UNION ALL SELECT 2) AS g ON v.department_id = g.k GROUP BY g.k",
    "SELECT g.k, COUNT(*) FROM visits v RIGHT JOIN (VALUES (1), (2)) AS g(k) ON v.department_id = g.k GROUP BY g.k",
]


def _no_placeholder(sql: str) -> bool:
    """No reference to a placeholder table survives (its name may remain as the body's alias)."""
    return '."__dp_pub' not in sql and ".__dp_pub" not in sql


@pytest.mark.parametrize("sql", ACCEPTED)
def test_public_relation_accepted_with_public_keys(sql: str, catalog: Catalog) -> None:
    r = rewrite(sql, catalog)
    assert r.plan is not None
    assert _no_placeholder(r.sql)  # the body is back in the bounded SQL, verbatim
    assert r.plan.subquery_check_sql is not None and "__dp_p0" in r.plan.subquery_check_sql  # evaluated before the charge
    if "GROUP BY" in sql:
        assert r.plan.keys_public and r.plan.public_keys_sql is not None and _no_placeholder(r.plan.public_keys_sql)


def test_private_right_join_public_binds_key_to_public_side(catalog: Catalog) -> None:
    r = rewrite(ACCEPTED[0], catalog)
    assert r.plan is not None and r.plan.keys_public
    assert '"departments"' in (r.plan.public_keys_sql or "")  # the keys are the public relation's rows


@pytest.mark.parametrize(
    ("sql", "sqlstate", "message"),
    [
        # a derived table that reads a private table: refused as before
        (
            "SELECT COUNT(*) FROM visits v JOIN (SELECT DISTINCT department_id FROM visits) s ON v.department_id = s.department_id",
            "0A000",
            "joining an aggregated subquery over a private table",
        ),
        ("SELECT COUNT(*) FROM (SELECT DISTINCT patient_id FROM visits) s", "42501", "grouping by the privacy unit"),
        (
            "SELECT COUNT(*) FROM visits v JOIN (SELECT DISTINCT v2.department_id FROM visits v2 JOIN departments d "
            "ON v2.department_id = d.department_id) s ON v.department_id = s.department_id",
            "0A000",
            "aggregated subquery",
        ),
        # a CTE over a private table that shadows a public table's name is that CTE, never the public table
        (
            "WITH departments AS (SELECT department_id FROM visits) SELECT COUNT(*) FROM visits v JOIN "
            "(SELECT DISTINCT department_id FROM departments) g ON v.department_id = g.department_id",
            "0A000",
            "aggregated subquery",
        ),
        (
            "SELECT g.k, COUNT(*) FROM visits v RIGHT JOIN (VALUES (1), (2.5)) AS g(k) ON v.age = g.k GROUP BY g.k",
            "0A000",
            "not all of one known type",
        ),
        # a public body's own errors: raised before anything runs
        ("SELECT COUNT(*) FROM visits v JOIN (SELECT 1/0 AS k) d ON v.age = d.k", "22012", "division by zero"),
        ("SELECT COUNT(*) FROM visits v JOIN (SELECT nosuch FROM departments) d ON v.age = d.nosuch", "42703", "nosuch"),
        ("SELECT COUNT(*) FROM visits v JOIN (SELECT floor, floor FROM departments) d ON v.age = d.floor", "0A000", "distinct name"),
    ],
)
def test_refused(sql: str, sqlstate: str, message: str, catalog: Catalog) -> None:
    with pytest.raises(DPSQLError) as e:
        rewrite(sql, catalog)
    assert e.value.sqlstate == sqlstate and message in e.value.message


def test_postgres_and_spark_emit(catalog: Catalog) -> None:
    for dialect in ("postgres", "spark"):
        r = rewrite(ACCEPTED[0], catalog, dialect=dialect)
        assert r.plan is not None and r.plan.keys_public and _no_placeholder(r.sql)


def test_public_cte_in_a_where_subquery(catalog: Catalog) -> None:
    r = rewrite(
        "WITH d AS (SELECT DISTINCT department_id FROM departments WHERE floor > 1) "
        "SELECT COUNT(*) FROM visits WHERE department_id IN (SELECT department_id FROM d)",
        catalog,
    )
    assert r.plan is not None and _no_placeholder(r.sql) and "DISTINCT" in r.sql
