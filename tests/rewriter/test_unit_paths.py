"""Keyed tables (issue 11 item 1, rewriter/unit_paths.py): queries over a table whose rows belong
to a unit through a key path are accepted, bounded by the keyed table's own policy constants, and
joined along the key path; every other use of the key to reach rows is refused."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from dpsql.errors import DPSQLError
from dpsql.policy import KEYED_UNIT
from dpsql.rewriter import googlesql, rewrite
from dpsql.schema import Catalog


def _sql(catalog: Catalog, sql: str, dialect: str = "duckdb") -> str:
    return rewrite(sql, catalog, dialect=dialect).sql


@pytest.mark.parametrize("dialect", ["duckdb", "postgres", "spark"])
def test_a_keyed_table_alone_is_bounded_by_its_own_policy(keyed_catalog: Catalog, dialect: str) -> None:
    rw = rewrite("SELECT drug, COUNT(*), SUM(dose) FROM prescriptions GROUP BY drug", keyed_catalog, dialect=dialect)
    assert rw.plan is not None
    # prescriptions: max_rows 4, max_groups 2, dose in [0, 50] (visits has 3 and 2: not used)
    assert [s.max_contribution * s.grid for s in rw.plan.stats] == [4, 200]
    assert rw.plan.max_groups == 2 and rw.plan.keys_public and not rw.plan.private_join
    tree = sqlglot.parse_one(rw.sql, read=dialect)
    joins = [j for j in tree.find_all(exp.Join)]
    assert len(joins) == 1 and joins[0].args.get("side") is None and not joins[0].args.get("kind")  # an inner join
    assert f'"{KEYED_UNIT}"' in rw.sql or f"`{KEYED_UNIT}`" in rw.sql
    assert "prescriber" not in rw.sql  # only the visible columns are read


def test_a_two_step_path_joins_both_tables(keyed_catalog: Catalog) -> None:
    rw = rewrite("SELECT COUNT(*), SUM(amount) FROM doses WHERE amount > 2", keyed_catalog)
    assert rw.plan is not None and [s.max_contribution * s.grid for s in rw.plan.stats] == [5, 50]
    tables = sorted(t.name for t in sqlglot.parse_one(rw.sql, read="duckdb").find_all(exp.Table) if t.db)
    assert tables == ["doses", "prescriptions", "visits"]


ACCEPTED = [
    "SELECT v.department, COUNT(*), SUM(p.dose) FROM prescriptions p JOIN visits v ON p.visit_id = v.visit_id GROUP BY v.department",
    "SELECT v.department, COUNT(*) FROM visits v JOIN prescriptions p ON v.visit_id = p.visit_id GROUP BY v.department",
    "SELECT p.drug, AVG(v.cost) FROM visits v LEFT JOIN prescriptions p USING (visit_id) GROUP BY p.drug",
    "SELECT COUNT(*) FROM prescriptions p JOIN visits v ON v.visit_id = p.visit_id AND v.age > 30 AND p.dose < 5",
    "WITH w AS (SELECT visit_id, department FROM visits WHERE age > 18) SELECT w.department, COUNT(*) "
    "FROM prescriptions p JOIN w ON p.visit_id = w.visit_id GROUP BY w.department",
    "SELECT COUNT(*) FROM (SELECT visit_id, drug FROM prescriptions WHERE dose > 1) s JOIN visits v ON s.visit_id = v.visit_id",
    "SELECT pt.region, COUNT(*) FROM prescriptions p JOIN visits v ON p.visit_id = v.visit_id "
    "JOIN patients pt ON pt.patient_id = v.patient_id GROUP BY pt.region",
    "SELECT COUNT(*) FROM doses d JOIN prescriptions p ON d.rx_id = p.rx_id JOIN visits v ON p.visit_id = v.visit_id",
    "SELECT COUNT(*) FROM prescriptions a JOIN prescriptions b ON a.visit_id = b.visit_id AND a.rx_id <> b.rx_id",
    "SELECT d.name, COUNT(*) FROM prescriptions p JOIN visits v ON p.visit_id = v.visit_id "
    "JOIN departments d ON d.department_id = v.department_id GROUP BY d.name",
    "SELECT route, COUNT(*) FROM prescriptions GROUP BY route",  # private keys: partition selection
    "SELECT COUNT(DISTINCT v.patient_id) FROM visits v JOIN prescriptions p ON p.visit_id = v.visit_id",
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_key_path_joins_are_accepted(keyed_catalog: Catalog, sql: str) -> None:
    rw = rewrite(sql, keyed_catalog)
    assert rw.plan is not None
    rewrite(sql, keyed_catalog, dialect="postgres")


def test_an_explicit_key_path_join_is_a_private_join_capped_per_side(keyed_catalog: Catalog) -> None:
    rw = rewrite(
        "SELECT v.department, COUNT(*) FROM prescriptions p JOIN visits v ON p.visit_id = v.visit_id GROUP BY v.department", keyed_catalog
    )
    assert rw.plan is not None and rw.plan.private_join
    # the joined relation's constants: the larger of the two tables' (prescriptions 4 rows, visits 3)
    assert rw.plan.stats[0].max_contribution == 4 and rw.plan.max_groups == 2
    # each side is capped before the join: ≤ 4·2 = 8 prescriptions and ≤ 3·2 = 6 visits per unit
    assert '"__dp_rn" <= 8' in rw.sql and '"__dp_rn" <= 6' in rw.sql


REFUSED = [
    # the key joined to another column of the referenced table, or to another table
    ("SELECT COUNT(*) FROM prescriptions p JOIN visits v ON p.visit_id = v.patient_id", "0A000"),
    ("SELECT COUNT(*) FROM prescriptions p JOIN patients pt ON p.visit_id = pt.patient_id", "0A000"),
    ("SELECT COUNT(*) FROM prescriptions p JOIN visits v ON p.visit_id = v.department_id", "0A000"),
    ("SELECT COUNT(*) FROM prescriptions p JOIN visits v ON p.visit_id = v.visit_id + 1", "0A000"),
    ("SELECT COUNT(*) FROM prescriptions p JOIN visits v ON p.visit_id = v.visit_id OR p.dose > 1", "0A000"),
    ("SELECT COUNT(*) FROM prescriptions p, visits v WHERE p.visit_id = v.visit_id", "0A000"),
    ("SELECT COUNT(*) FROM prescriptions p JOIN visits v ON p.visit_id < v.visit_id", "0A000"),
    # a CTE or subquery that renames another column to the key's name does not make it the key
    (
        "WITH v AS (SELECT patient_id AS visit_id, department FROM visits) SELECT COUNT(*) FROM prescriptions p "
        "JOIN v ON p.visit_id = v.visit_id",
        "0A000",
    ),
    (
        "SELECT COUNT(*) FROM prescriptions p JOIN (SELECT patient_id AS visit_id FROM patients) s ON p.visit_id = s.visit_id",
        "0A000",
    ),
    (
        "WITH v AS (SELECT visit_id + 1 AS visit_id FROM visits) SELECT COUNT(*) FROM prescriptions p "
        "JOIN v ON p.visit_id = v.visit_id",
        "0A000",
    ),
    # two keyed tables on different keys
    ("SELECT COUNT(*) FROM doses d JOIN prescriptions p ON d.rx_id = p.visit_id", "0A000"),
    ("SELECT COUNT(*) FROM doses d JOIN visits v ON d.rx_id = v.visit_id", "0A000"),
    # the reserved unit column is not visible
    (f"SELECT COUNT(*) FROM prescriptions WHERE {KEYED_UNIT} = 1", "42703"),
    (f"SELECT COUNT(DISTINCT {KEYED_UNIT}) FROM prescriptions", "42703"),
    (f"SELECT COUNT(*) FROM prescriptions p JOIN visits v ON p.{KEYED_UNIT} = v.patient_id", "42703"),
    ("SELECT COUNT(*) FROM prescriptions WHERE prescriber = 'x'", "42703"),
    ("SELECT * FROM prescriptions", "42501"),
]


@pytest.mark.parametrize(("sql", "state"), REFUSED)
def test_other_uses_of_the_key_are_refused(keyed_catalog: Catalog, sql: str, state: str) -> None:
    with pytest.raises(DPSQLError) as e:
        rewrite(sql, keyed_catalog)
    assert e.value.sqlstate == state, e.value


def test_the_refusal_names_the_key_path(keyed_catalog: Catalog) -> None:
    with pytest.raises(DPSQLError) as e:
        rewrite("SELECT COUNT(*) FROM prescriptions p JOIN visits v ON p.visit_id = v.patient_id", keyed_catalog)
    assert "p.visit_id belongs to the patient_id of its row of public.visits" in e.value.message
    assert e.value.hint is not None and "key path" in e.value.hint and KEYED_UNIT not in e.value.hint


@pytest.mark.parametrize("column", ["patient_id", "visit_id", KEYED_UNIT])
def test_googlesql_privacy_unit_column_on_a_keyed_table_is_refused(keyed_catalog: Catalog, column: str) -> None:
    g = googlesql.translate(
        f"SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon = 1, privacy_unit_column = {column}) COUNT(*) FROM prescriptions"
    )
    assert g is not None and g.privacy_unit_column == column
    rw = rewrite(g.sql, keyed_catalog)
    assert rw.plan is not None
    with pytest.raises(DPSQLError) as e:
        googlesql.check(keyed_catalog, g, rw.plan.tables)
    assert e.value.sqlstate == "42501" and "through a key path" in e.value.message
    assert "patient_id (through visit_id" in e.value.message
    plain = googlesql.translate("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon = 1) COUNT(*) FROM prescriptions")
    assert plain is not None
    googlesql.check(keyed_catalog, plain, rw.plan.tables)  # without the option: accepted


def test_rewriting_a_keyed_query_is_pure(keyed_catalog: Catalog) -> None:
    sql = "SELECT v.department, SUM(p.dose) FROM prescriptions p JOIN visits v ON p.visit_id = v.visit_id GROUP BY v.department"
    assert _sql(keyed_catalog, sql) == _sql(keyed_catalog, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM prescriptions WHERE drug IN (SELECT drug FROM prescriptions WHERE dose > 3)",
        "SELECT COUNT(*) FROM visits v WHERE EXISTS (SELECT 1 FROM prescriptions p WHERE p.visit_id = v.visit_id)",
    ],
)
def test_a_subquery_over_a_keyed_table_is_refused_naming_its_key_path(keyed_catalog: Catalog, sql: str) -> None:
    with pytest.raises(DPSQLError) as err:
        rewrite(sql, keyed_catalog)
    assert err.value.sqlstate == "0A000" and "keyed table prescriptions" in err.value.message
    assert "through visit_id" in err.value.message and "__dp_unit" not in err.value.message
