"""Joins between private tables on the privacy unit (rewriter/joins.py, DESIGN §1 "Joins"): which
joins are accepted, which are refused (0A000 naming the construct), and the shape of the bounded
SQL — each private side capped per unit before the join, the joined rows bounded per unit after it."""

from __future__ import annotations

import re

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from dpsql.errors import DPSQLError
from dpsql.rewriter import rewrite
from dpsql.schema import Catalog

ACCEPTED = [
    # the query with a column each table has (patients has no age: see test_unknown_column_is_named)
    "SELECT v.department, AVG(v.age) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1",
    "SELECT v.department, AVG(p.birth_year) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1",
    "SELECT v.department, AVG(p.birth_year) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY 1",
    "SELECT v.department, AVG(p.birth_year) FROM visits v INNER JOIN patients p ON p.patient_id = v.patient_id GROUP BY 1",
    "SELECT p.region, COUNT(*), SUM(v.cost) FROM patients p LEFT JOIN visits v USING (patient_id) GROUP BY p.region",
    "SELECT p.region, COUNT(*) FROM visits v RIGHT JOIN patients p USING (patient_id) GROUP BY p.region",
    "SELECT COUNT(*), SUM(v.cost), AVG(p.birth_year) FROM visits v FULL OUTER JOIN patients p USING (patient_id)",
    # extra conditions in a conjunction
    "SELECT COUNT(*) FROM visits v JOIN patients p ON v.patient_id = p.patient_id AND p.birth_year > 1950 AND v.age < 40",
    # self-join, a CTE used twice, a public dimension in between
    "SELECT a.department, COUNT(*) FROM visits a JOIN visits b ON a.patient_id = b.patient_id AND a.visit_date < b.visit_date "
    "GROUP BY a.department",
    "WITH x AS (SELECT patient_id, cost, department FROM visits WHERE cost > 1) "
    "SELECT a.department, SUM(b.cost) FROM x a JOIN x b ON a.patient_id = b.patient_id GROUP BY a.department",
    "SELECT d.name, COUNT(*) FROM visits v JOIN departments d ON d.department_id = v.department_id "
    "JOIN patients p ON p.patient_id = v.patient_id GROUP BY d.name",
    "SELECT COUNT(DISTINCT v.patient_id) FROM visits v JOIN patients p USING (patient_id)",
]


@pytest.mark.parametrize("sql", ACCEPTED)
@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_unit_joins_are_accepted(catalog: Catalog, sql: str, dialect: str) -> None:
    rw = rewrite(sql, catalog, dialect=dialect)
    assert rw.plan is not None
    assert set(rw.plan.tables) <= {"public.visits", "public.patients"} and len(rw.plan.tables) >= 1
    assert any("joined on the privacy unit" in d for d in rw.plan.description)


REFUSED = [
    ("SELECT COUNT(*) FROM visits a JOIN visits b ON a.age = b.age", "the join condition a.age = b.age"),
    ("SELECT COUNT(*) FROM visits v JOIN patients p ON v.patient_id = p.patient_id OR v.age = p.birth_year", " OR "),
    ("SELECT COUNT(*) FROM visits v JOIN patients p ON v.patient_id = p.birth_year", "v.patient_id = p.birth_year"),
    ("SELECT COUNT(*) FROM visits v JOIN patients p ON v.patient_id > p.patient_id", "v.patient_id > p.patient_id"),
    ("SELECT COUNT(*) FROM visits v JOIN patients p ON v.patient_id + 0 = p.patient_id", "v.patient_id + 0"),
    ("SELECT COUNT(*) FROM visits v CROSS JOIN patients p", "CROSS JOIN"),
    ("SELECT COUNT(*) FROM visits v, patients p WHERE v.patient_id = p.patient_id", "without ON or USING"),
    ("SELECT COUNT(*) FROM visits v JOIN patients p ON TRUE", "the join condition TRUE"),
    # the third table must join on the unit too
    ("SELECT COUNT(*) FROM visits v JOIN patients p USING (patient_id) JOIN visits w ON w.age = v.age", "w.age = v.age"),
]


@pytest.mark.parametrize(("sql", "words"), REFUSED)
def test_other_private_joins_are_refused(catalog: Catalog, sql: str, words: str) -> None:
    with pytest.raises(DPSQLError) as e:
        rewrite(sql, catalog)
    assert e.value.sqlstate == "0A000", e.value
    assert words in str(e.value)
    assert "privacy unit" in str(e.value) and e.value.hint


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("SELECT p.patient_id, COUNT(*) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1", "42501"),
        ("SELECT p.birth_year, COUNT(*) FROM visits v JOIN patients p USING (patient_id) GROUP BY v.department", "42501"),
        ("SELECT SUM(p.patient_id) FROM visits v JOIN patients p USING (patient_id)", "42501"),
        # the inner side of an outer join with its own WHERE cannot be merged: refused, never read unbounded
        ("WITH x AS (SELECT patient_id, cost FROM visits WHERE cost > 1) "
         "SELECT SUM(a.cost) FROM x a LEFT JOIN x b ON a.patient_id = b.patient_id", "0A000"),
    ],
)
def test_joined_columns_follow_the_single_table_rules(catalog: Catalog, sql: str, sqlstate: str) -> None:
    with pytest.raises(DPSQLError) as e:
        rewrite(sql, catalog)
    assert e.value.sqlstate == sqlstate, e.value


def test_unknown_column_is_named(catalog: Catalog) -> None:
    """The issue's exact SQL: patients has no age column. The error names p.age (was ``"?"``)."""
    with pytest.raises(DPSQLError) as e:
        rewrite("SELECT v.department, AVG(p.age) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1", catalog)
    assert e.value.sqlstate == "42703"
    assert 'column "p.age" does not exist' in str(e.value)


def test_constants_of_the_joined_relation(catalog: Catalog) -> None:
    """After the join: the largest max_rows/max_groups of the joined tables (visits 3/2, patients 1/1),
    the unit is COALESCE of the sides' units, and the sensitivities follow from those constants."""
    rw = rewrite("SELECT v.department, COUNT(*) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1", catalog)
    assert rw.plan is not None
    assert rw.plan.max_groups == 2
    assert [s.max_contribution for s in rw.plan.stats] == [3]
    assert 'COALESCE("v"."patient_id", "p"."patient_id") AS __dp_uid' in rw.sql
    assert rw.plan.tables == ("public.visits", "public.patients")


def _private_reads(sql: str) -> list[exp.Table]:
    tree = sqlglot.parse_one(sql, read="duckdb")
    return [t for t in tree.find_all(exp.Table) if t.name in ("visits", "patients") and t.args.get("db") is not None]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_each_side_is_capped_per_unit_before_the_join(catalog: Catalog, sql: str) -> None:
    """Structural fan-out bound: every read of a private table sits in
    ``SELECT … FROM (SELECT …, ROW_NUMBER() OVER (PARTITION BY unit ORDER BY MD5(…)) …) WHERE rn <= cap``,
    with cap = that table's max_rows·max_groups (visits 6, patients 1): a unit's joined rows are at most
    the product of the caps, a policy constant, however many rows it has."""
    rw = rewrite(sql, catalog)
    caps = {"visits": 3 * 2, "patients": 1 * 1}
    reads = _private_reads(rw.sql)
    assert len(reads) >= 2
    for table in reads:
        inner = table.find_ancestor(exp.Select)
        assert inner is not None
        window = inner.find(exp.Window)
        assert window is not None and isinstance(window.this, exp.RowNumber)
        parts = window.args["partition_by"]
        assert [p.name for p in parts] == ["patient_id"] and parts[0].table == table.alias_or_name
        assert window.args["order"].sql("duckdb").startswith("ORDER BY MD5(CONCAT_WS(")
        assert inner.args["where"].this.sql() == f'NOT "{table.alias_or_name}"."patient_id" IS NULL'
        outer = inner.parent.find_ancestor(exp.Select)
        assert outer is not None
        cond = outer.args["where"].this
        assert isinstance(cond, exp.LTE) and cond.this.name == "__dp_rn"
        assert int(cond.expression.name) == caps[table.name]


def _load(con: duckdb.DuckDBPyConnection, heavy_visits: int, heavy_patients: int) -> None:
    con.execute("CREATE TABLE visits (visit_id BIGINT, patient_id BIGINT, age INTEGER, cost DOUBLE, department VARCHAR, "
                "diagnosis VARCHAR, visit_date DATE, department_id INTEGER, note VARCHAR, secret VARCHAR)")
    con.execute("CREATE TABLE patients (patient_id BIGINT, region VARCHAR, birth_year INTEGER)")
    con.execute("CREATE TABLE departments (department_id INTEGER, name VARCHAR, floor INTEGER)")
    con.execute("INSERT INTO visits SELECT i, i % 50, 30 + i % 40, 100.0 + i % 300, "
                "['cardiology', 'oncology', 'orthopedics'][1 + i % 3], 'd', DATE '2024-01-01' + CAST(i % 300 AS INTEGER), "
                "1 + i % 3, '', '' FROM range(500) t(i)")
    con.execute(f"INSERT INTO visits SELECT 10000 + i, 7, 50, 200.0, 'oncology', 'd', DATE '2024-01-01' + CAST(i % 300 AS "
                f"INTEGER), 2, '', '' FROM range({heavy_visits}) t(i)")
    con.execute("INSERT INTO patients SELECT i, ['north', 'south'][1 + i % 2], 1940 + i % 60 FROM range(50) t(i)")
    con.execute(f"INSERT INTO patients SELECT 7, 'north', 1950 FROM range({heavy_patients}) t(i)")


def test_heavy_unit_joined_rows_are_bounded_by_policy_constants(catalog: Catalog) -> None:
    """A unit with 20 000 visits and 300 patient rows (6·10⁶ joined rows unbounded) contributes at
    most 6·1 rows to the joined relation of ``visits JOIN patients`` and 6·6 to the self-join —
    counted on the bounded SQL's own ``__dp_rows`` on DuckDB. Work per unit after the per-side
    ROW_NUMBER (linear in the unit's own rows, like any per-unit GROUP BY) is thus a policy
    constant; no timing is claimed (shared machine)."""
    con = duckdb.connect(":memory:")
    _load(con, heavy_visits=20_000, heavy_patients=300)
    cases = {
        "SELECT v.department, COUNT(*) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1": 6 * 1,
        "SELECT a.department, SUM(b.cost) FROM visits a JOIN visits b ON a.patient_id = b.patient_id GROUP BY 1": 6 * 6,
    }
    for sql, bound in cases.items():
        rw = rewrite(sql, catalog)
        tree = sqlglot.parse_one(rw.sql, read="duckdb")
        rows = next(c.this for c in tree.find_all(exp.CTE) if c.alias == "__dp_rows")
        per_unit = dict(con.execute(
            f"SELECT __dp_uid, COUNT(*) FROM ({rows.sql('duckdb')}) GROUP BY 1".replace('"main".', "")
        ).fetchall())
        assert per_unit[7] == bound and max(per_unit.values()) == bound, (sql, per_unit[7])
        assert con.execute(rw.sql.replace('"main".', "")).fetchall()  # the whole bounded query runs


def test_the_cap_keeps_rows_chosen_from_the_units_own_rows(catalog: Catalog) -> None:
    """The rows a unit keeps depend only on its own rows: adding other units' rows (or another
    heavy unit) leaves unit 7's kept rows unchanged."""
    sql = "SELECT v.department, SUM(v.cost) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1"
    rw = rewrite(sql, catalog)
    tree = sqlglot.parse_one(rw.sql, read="duckdb")
    rows = next(c.this for c in tree.find_all(exp.CTE) if c.alias == "__dp_rows").sql("duckdb").replace('"main".', "")
    kept = []
    for extra in (0, 5000):
        con = duckdb.connect(":memory:")
        _load(con, heavy_visits=2000, heavy_patients=3)
        con.execute(f"INSERT INTO visits SELECT 90000 + i, 8, 20, 999.0, 'cardiology', 'x', DATE '2024-02-01', 1, '', '' "
                    f"FROM range({extra}) t(i)")
        kept.append(sorted(con.execute(f"SELECT * FROM ({rows}) WHERE __dp_uid = 7").fetchall()))
    assert kept[0] == kept[1] and len(kept[0]) == 6


def test_salt_and_fixture_text_are_stable(catalog: Catalog) -> None:
    """The cap's order is salted by the query text (like the group ranking): two texts, two salts."""
    a = rewrite("SELECT COUNT(*) FROM visits v JOIN patients p USING (patient_id)", catalog).sql
    b = rewrite("SELECT COUNT(*) FROM visits v JOIN patients p USING (patient_id) ", catalog).sql
    salts = [set(re.findall(r"'([0-9a-f]{16})'", s)) for s in (a, b)]
    assert salts[0] and salts[1] and salts[0] != salts[1]


def test_key_types_come_from_the_joined_table(catalog: Catalog) -> None:
    """A key from the second private table is typed by its own column (patients.birth_year is int4)."""
    rw = rewrite("SELECT p.birth_year, COUNT(*) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1", catalog)
    assert rw.plan is not None and [k.pg_type for k in rw.plan.keys] == ["int4"]
