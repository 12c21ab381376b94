"""Other dialects' aggregate names (issue 10 §2): VAR, VARIANCE, STD, STDEV, STDDEV, COUNT_IF,
and AVG(DISTINCT …) refused clearly."""

from __future__ import annotations

import duckdb
import pytest

from dpsql.errors import UnsupportedQuery
from dpsql.rewriter import rewrite
from dpsql.schema import Catalog

# (written, release kind, output name, meaning). PostgreSQL and DuckDB: VARIANCE = VAR_SAMP and
# STDDEV = STDDEV_SAMP; SQL Server: VAR/STDEV sample, VARP/STDEVP population; MySQL: STD = STDDEV_POP.
CASES = [
    ("VARIANCE(cost)", "var_samp", "variance"),
    ("VAR(cost)", "var_samp", "var"),
    ("VARP(cost)", "var_pop", "varp"),
    ("STDDEV(cost)", "stddev_samp", "stddev"),
    ("STDEV(cost)", "stddev_samp", "stddev"),  # sqlglot reads STDEV as STDDEV
    ("STDEVP(cost)", "stddev_pop", "stdevp"),
    ("STD(cost)", "stddev_pop", "std"),
    ("var(cost)", "var_samp", "var"),
]


@pytest.mark.parametrize(("written", "kind", "name"), CASES)
@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_variance_aliases_take_their_dialects_meaning(catalog: Catalog, written: str, kind: str, name: str, dialect: str) -> None:
    rw = rewrite(f"SELECT {written} FROM visits", catalog, dialect=dialect)
    assert rw.plan is not None
    assert [a.kind for a in rw.plan.aggregates] == [kind]
    assert [(o.name, o.pg_type) for o in rw.outputs] == [(name, "float8")]


def test_alias_meaning_is_noted_for_explain(catalog: Catalog) -> None:
    rw = rewrite("SELECT STD(cost) FROM visits", catalog)
    assert rw.plan is not None and any("STD(…) is read as STDDEV_POP" in d for d in rw.plan.description)


def test_aliases_work_over_public_tables(catalog: Catalog) -> None:
    rw = rewrite("SELECT VAR(floor), STD(floor) FROM departments", catalog, dialect="duckdb")
    assert rw.public_only and "VARIANCE(" in rw.sql and "STDDEV_POP(" in rw.sql  # DuckDB spells VAR_SAMP so


def test_alias_with_wrong_arity_is_refused(catalog: Catalog) -> None:
    with pytest.raises(UnsupportedQuery) as e:
        rewrite("SELECT VAR(cost, age) FROM visits", catalog)
    assert e.value.sqlstate == "0A000"


def test_count_if_counts_rows_where_the_condition_holds(catalog: Catalog) -> None:
    rw = rewrite("SELECT COUNT_IF(age > 50) AS old, COUNT(*) FILTER (WHERE age > 50) AS f FROM visits", catalog)
    assert rw.plan is not None
    assert [a.kind for a in rw.plan.aggregates] == ["count"]  # the same aggregate, computed once
    assert [(o.name, o.pg_type) for o in rw.outputs] == [("old", "int8"), ("f", "int8")]
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE visits (visit_id BIGINT, patient_id BIGINT, age INTEGER, cost DOUBLE, department VARCHAR, "
                    "diagnosis VARCHAR, visit_date DATE, department_id INTEGER, note VARCHAR, secret VARCHAR)")
        con.execute("INSERT INTO visits (patient_id, age) VALUES (1, 20), (2, 60), (3, 70), (4, NULL), (5, 51)")
        cur = con.execute(rw.sql)
        row = dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))  # type: ignore[arg-type]
    finally:
        con.close()
    assert [int(v) for v in row.values()] == [3]  # ages 60, 70, 51


def test_count_if_output_name(catalog: Catalog) -> None:
    rw = rewrite("SELECT COUNT_IF(age > 50) FROM visits", catalog)
    assert [o.name for o in rw.outputs] == ["count_if"]


@pytest.mark.parametrize("agg", ["AVG(DISTINCT cost)", "avg(distinct age)"])
def test_avg_distinct_is_refused_with_a_hint(catalog: Catalog, agg: str) -> None:
    with pytest.raises(UnsupportedQuery) as e:
        rewrite(f"SELECT {agg} FROM visits", catalog)
    assert e.value.sqlstate == "0A000"
    assert "AVG(DISTINCT" in str(e.value) and e.value.hint and "AVG(x)" in e.value.hint
