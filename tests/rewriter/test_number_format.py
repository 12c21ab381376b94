"""PostgreSQL's to_char(number, pattern), as rewriter/number_format.py prints it: each expected string
below was printed by PostgreSQL 15 (the live comparison over random patterns and values is
tests/postgres/test_number_format.py)."""

from __future__ import annotations

import pytest

from dpsql.errors import DPSQLError
from dpsql.rewriter.number_format import is_number_pattern, to_char_number

CASES = [
    ("0", "numeric", "999", "   0"),
    ("0.5", "numeric", "9.99", "  .50"),
    ("0", "numeric", "9.99", "  .00"),
    ("-0.5", "numeric", "9.99", " -.50"),
    ("12345", "numeric", "9,999", " #,###"),
    ("-12", "numeric", "9.99", "-#.##"),
    ("2.5", "float8", "9", " 2"),  # printf: the exact binary value, ties to even
    ("2.5", "numeric", "9", " 3"),  # numeric: half away from zero
    ("-0.5", "float8", "999", "  -0"),
    ("1234", "numeric", "FM9999.99", "1234."),
    ("0", "numeric", "FM9.99", "0."),
    ("0.5", "numeric", "FM9.99", ".5"),
    ("-12", "numeric", "FM0000", "-0012"),
    ("5", "numeric", "9099", "  005"),
    ("1234", "numeric", "999.", " ###."),
    ("0.5", "numeric", "999.", "   1"),
    ("1234567", "numeric", "9,999,999", " 1,234,567"),
    ("123", "numeric", "9,999", "   123"),
    ("1234.5", "numeric", "FM999G999D00", "1,234.50"),
]


@pytest.mark.parametrize(("value", "kind", "pattern", "expected"), CASES)
def test_prints_what_postgres_prints(value: str, kind: str, pattern: str, expected: str) -> None:
    assert to_char_number(value, pattern, "DOUBLE" if kind == "float8" else "DECIMAL(18,3)") == expected


def test_null_and_infinity() -> None:
    assert to_char_number(None, "999") is None
    assert to_char_number("inf", "999.9", "DOUBLE") == " ###.#"
    assert to_char_number("-inf", "FM999", "DOUBLE") == "-###"


@pytest.mark.parametrize("pattern", ["YYYY", "MM-DD", ".99", "FM", "S999", "9.99EEEE", "999MI", "L999", ""])
def test_other_patterns_are_not_number_patterns(pattern: str) -> None:
    assert not is_number_pattern(pattern)
    with pytest.raises(DPSQLError) as info:
        to_char_number("1", pattern)
    assert info.value.sqlstate == "22023"
