"""``to_char(number, pattern)`` (issue 11, item 5): over an aggregate it formats the released value as
PostgreSQL would (post-processing, no extra charge); on a private row's number, and over constants
on a DuckDB backend, it is refused with 0A000 before any charge; an unsupported number pattern
names itself."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from engine_lib import Harness

from dpsql.errors import DPSQLError


def test_to_char_of_an_aggregate_formats_the_released_value(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    session = h.engine.session("alice")
    session.execute("SET dp.rounding = 'off'")
    ((raw, text, padded),) = session.execute(
        "SELECT COUNT(*), to_char(COUNT(*), 'FM999,999,999'), to_char(COUNT(*), '0000000000') FROM visits"
    ).rows
    assert h.recorder.kinds().count("charge") == 1
    assert text == f"{raw:,}" and padded == " " + str(raw).zfill(10)  # the same noisy value, formatted
    result = session.execute("SELECT sex, to_char(AVG(cost), '99990.00') AS avg_cost FROM visits GROUP BY sex")
    assert result.types[1] == "text"
    for _, value in result.rows:
        assert re.fullmatch(r" *-?\d+\.\d\d", value), value


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT to_char(age, '000') AS a, COUNT(*) FROM visits GROUP BY 1",
     "to_char() of a number is supported only over aggregates, not on the rows of a private table (to_char(visits.age, '000'))"),
    ("SELECT COUNT(*) FROM visits WHERE to_char(cost, '9999') = ' 100'", "to_char() of a number is supported only over aggregates"),
    ("SELECT to_char(1234.5, 'FM9,999.0')", "to_char() of a number over public tables or constants runs only on a PostgreSQL backend"),
    ("SELECT to_char(AVG(cost), 'FMS999') FROM visits", "to_char() number pattern 'FMS999' is not supported"),
    ("SELECT to_char(AVG(cost), '9.99EEEE') FROM visits", "to_char() number pattern '9.99EEEE' is not supported"),
])  # fmt: skip
def test_refused_before_the_charge(make_harness: Callable[..., Harness], sql: str, message: str) -> None:
    h = make_harness()
    with pytest.raises(DPSQLError) as info:
        h.engine.session("alice").execute(sql)
    assert info.value.sqlstate == "0A000"
    assert message in str(info.value)
    assert "charge" not in h.recorder.kinds()
