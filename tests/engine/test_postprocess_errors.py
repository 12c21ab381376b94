"""Post-processing over noisy values follows PostgreSQL's arithmetic (issue 9, item 6): integers
divide as integers, every output value fits the column type the client is told, and a failure is
PostgreSQL's SQLSTATE (22012, 22003, 2201E, 2201F) instead of Infinity in an int8 column or XX000.

Division by a constant zero is refused before the charge (tests/rewriter/test_constants.py); a
failure that depends on the noisy values happens after the charge, which stands (post-processing
of DP output: the error is a function of released values only)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from engine_lib import Harness

from dpsql.errors import DPSQLError

INT_TYPES = {"int2", "int4", "int8"}


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*)/2 AS half FROM visits",
    "SELECT sex, SUM(age)/COUNT(*) AS mean_age FROM visits GROUP BY sex",
    "SELECT department_id, COUNT(*) % 7, -COUNT(*)/3 FROM visits GROUP BY department_id",
    "SELECT CAST(AVG(age) AS BIGINT) FROM visits",
    "SELECT COUNT(*)::int4 / 3 FROM visits",
])  # fmt: skip
def test_every_value_fits_its_declared_type(make_harness: Callable[..., Harness], sql: str) -> None:
    h = make_harness()
    result = h.engine.session("alice").execute(sql)
    assert result.rows
    for i, t in enumerate(result.types):
        for row in result.rows:
            if t in INT_TYPES:
                assert type(row[i]) is int, (sql, t, row)
            elif t == "float8":
                assert isinstance(row[i], float)


def test_integer_division_truncates_like_postgres(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    session = h.engine.session("alice")
    session.execute("SET dp.rounding = 'off'")  # COUNT(*)/3.0 exactly, not to the precision of its noise
    (count, half, third, neg), = session.execute("SELECT COUNT(*), COUNT(*)/2, COUNT(*)/3.0, (0 - COUNT(*))/2 FROM visits").rows
    assert half == count // 2 and neg == -(count // 2)  # truncation toward zero, as int8 / int4 in PostgreSQL
    assert third == pytest.approx(count / 3)


@pytest.mark.parametrize(("sql", "sqlstate", "message"), [
    ("SELECT sex, COUNT(*) FROM visits GROUP BY sex HAVING COUNT(*)/(COUNT(*) - COUNT(*)) > 0", "22012", "division by zero"),
    ("SELECT COUNT(*) % (COUNT(*) - COUNT(*)) FROM visits", "22012", "division by zero"),
    ("SELECT SUM(cost) / (COUNT(*) - COUNT(*)) FROM visits", "22012", "division by zero"),
    ("SELECT COUNT(*) * 9223372036854775807 FROM visits", "22003", "bigint out of range"),
    ("SELECT COUNT(*)::int4 * 2000000000 FROM visits", "22003", "integer out of range"),
    ("SELECT CAST(COUNT(*) * 1e308 * 10 AS BIGINT) FROM visits", "22003", "bigint out of range"),
    ("SELECT sqrt(COUNT(*) - 1e12) FROM visits", "2201F", "cannot take square root of a negative number"),
    ("SELECT ln(COUNT(*) - COUNT(*)) FROM visits", "2201E", "cannot take logarithm of zero"),
    ("SELECT ln(COUNT(*) - 1e12) FROM visits", "2201E", "cannot take logarithm of a negative number"),
])  # fmt: skip
def test_postprocessing_failures_have_postgres_sqlstates(
    make_harness: Callable[..., Harness], sql: str, sqlstate: str, message: str
) -> None:
    h = make_harness()
    with pytest.raises(DPSQLError) as e:
        h.engine.session("alice").execute(sql)
    assert (e.value.sqlstate, e.value.message) == (sqlstate, message)
    assert e.value.hint is not None and "charge stands" in e.value.hint
    assert h.recorder.kinds().count("charge") == 1  # it failed on noisy values, after the charge


def test_constant_division_by_zero_is_free(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with pytest.raises(DPSQLError) as e:
        h.engine.session("alice").execute("SELECT COUNT(*)/0 FROM visits")
    assert e.value.sqlstate == "22012" and "no budget was spent" in (e.value.hint or "")
    assert h.recorder.events == []
