"""PostgreSQL's errors on constants, raised by the rewriter before anything runs (rewriter/literals.py):
LIMIT/OFFSET values, and division by a constant zero in post-processing (and in queries over public
tables), with PostgreSQL 15's SQLSTATEs and messages (tests/postgres/test_pg_sqlstates.py checks
them against a real server). Row-level division inside aggregates is totalize's (made total)."""

from __future__ import annotations

import pytest

from dpsql.errors import DPSQLError
from dpsql.rewriter import rewrite
from dpsql.schema import Catalog

Q = "SELECT COUNT(*) FROM visits"

REFUSED = [
    (f"{Q} LIMIT -1", "2201W", "LIMIT must not be negative"),
    (f"{Q} LIMIT -(2)", "2201W", "LIMIT must not be negative"),
    (f"{Q} LIMIT 1 - 3", "2201W", "LIMIT must not be negative"),
    (f"{Q} FETCH FIRST (-2) ROWS ONLY", "2201W", "LIMIT must not be negative"),
    (f"{Q} OFFSET -1", "2201X", "OFFSET must not be negative"),
    (f"{Q} OFFSET -1 ROWS", "2201X", "OFFSET must not be negative"),
    (f"{Q} OFFSET 99999999999999999999", "22003", "bigint out of range"),
    (f"{Q} LIMIT 9223372036854775808", "22003", "bigint out of range"),
    (f"{Q} LIMIT 1e19", "22003", "bigint out of range"),
    (f"{Q} LIMIT -1e30", "22003", "bigint out of range"),  # PostgreSQL converts before it checks the sign
    (f"{Q} LIMIT 'abc'", "22P02", 'invalid input syntax for type bigint: "abc"'),
    (f"{Q} LIMIT '1.5'", "22P02", 'invalid input syntax for type bigint: "1.5"'),
    ("SELECT COUNT(*)/0 FROM visits", "22012", "division by zero"),
    ("SELECT COUNT(*) % 0 FROM visits", "22012", "division by zero"),
    ("SELECT SUM(cost)/0.0 FROM visits", "22012", "division by zero"),
    ("SELECT department, COUNT(*) FROM visits GROUP BY department HAVING 1/0 > 0", "22012", "division by zero"),
    ("SELECT department, COUNT(*) FROM visits GROUP BY department ORDER BY COUNT(*) / (2 - 2)", "22012", "division by zero"),
    ("SELECT COUNT(*) / CAST('0' AS INT) FROM visits", "22012", "division by zero"),
    ("SELECT name, 1 / 0 FROM departments", "22012", "division by zero"),
    ("SELECT COUNT(*) FROM departments LIMIT -1", "2201W", "LIMIT must not be negative"),
    ("SELECT 1/0", "22012", "division by zero"),
]


@pytest.mark.parametrize(("sql", "sqlstate", "message"), REFUSED)
def test_refused_at_rewrite(catalog: Catalog, sql: str, sqlstate: str, message: str) -> None:
    with pytest.raises(DPSQLError) as e:
        rewrite(sql, catalog)
    assert (e.value.sqlstate, e.value.message) == (sqlstate, message)
    assert e.value.hint


@pytest.mark.parametrize(("sql", "clause"), [
    (f"{Q} LIMIT 2.5", "LIMIT 3"),  # numeric → bigint rounds half away from zero, as in PostgreSQL
    (f"{Q} LIMIT 1.4", "LIMIT 1"),
    (f"{Q} LIMIT -0.4", "LIMIT 0"),
    (f"{Q} LIMIT '7'", "LIMIT 7"),
    (f"{Q} LIMIT ' 7 '", "LIMIT 7"),
    (f"{Q} LIMIT 2 + 3 OFFSET 1 * 2", "LIMIT 5 OFFSET 2"),
    (f"{Q} LIMIT 9223372036854775807", "LIMIT 9223372036854775807"),
    (f"{Q} LIMIT CAST(2.5 AS BIGINT)", "LIMIT 3"),
    (f"{Q} OFFSET 0", "OFFSET 0"),
    (f"{Q} LIMIT NULL", "LIMIT NULL"),
    (f"{Q} LIMIT ALL", "LIMIT ALL"),
])  # fmt: skip
def test_constant_counts_are_normalised(catalog: Catalog, sql: str, clause: str) -> None:
    rw = rewrite(sql, catalog)
    assert rw.plan is not None and rw.plan.post_sql is not None
    assert rw.plan.post_sql.endswith(clause)


def test_nonzero_and_data_dependent_divisors_are_not_refused(catalog: Catalog) -> None:
    """Only a divisor that is zero whatever the data is refused here; COUNT(*) − COUNT(*) is a noisy
    difference (post-processing) and is left to the post-processor (22012 at run time)."""
    for sql in (
        "SELECT COUNT(*)/2 FROM visits",
        "SELECT SUM(cost)/COUNT(*) FROM visits",
        "SELECT COUNT(*)/(COUNT(*) - COUNT(*)) FROM visits",
        "SELECT SUM(age / 2) FROM visits",
        "SELECT COUNT(*)/0.5 FROM visits",
    ):
        rewrite(sql, catalog)


def test_limit_percent_is_not_postgres(catalog: Catalog) -> None:
    with pytest.raises(DPSQLError) as e:
        rewrite(f"{Q} LIMIT 10 %", catalog)
    assert e.value.sqlstate == "42601"


def test_checkpoint_is_named_in_the_refusal(catalog: Catalog) -> None:
    """`dpsql query "CHECKPOINT"` (no wire layer): 42501 naming the command, not "COLUMN"."""
    with pytest.raises(DPSQLError) as e:
        rewrite("CHECKPOINT", catalog)
    assert e.value.sqlstate == "42501" and e.value.message.startswith("CHECKPOINT is not allowed")
