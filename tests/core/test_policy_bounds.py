"""Policy keys of issue 10 §3: per-unit bounds (``unit_lower``/``unit_upper``) and the L1 row cap
``max_contributions`` — accepted forms and the errors (PolicyError, F0000, naming file and key)."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from typing import Any

import pytest

from dpsql.errors import PolicyError
from dpsql.policy import policy_from_dict


def _with(col: dict[str, Any], **table: Any) -> dict[str, Any]:
    return {
        "server": {"auth": "trust"},
        "budget": {"epsilon": 10, "delta": 1e-6},
        "users": {"a": {}},
        "tables": {"t": {"privacy_unit": "uid", **table, "columns": {"c": col}}, "p": {"public": True}},
    }


def test_unit_bounds_with_and_without_row_bounds() -> None:
    p = policy_from_dict(_with({"unit_lower": 0, "unit_upper": 2.5}, max_contributions=7))
    t = p.table("t")
    assert t is not None and t.max_contributions == 7
    c = t.columns["c"]
    assert (c.unit_lower, c.unit_upper, c.unit_bounded, c.bounded) == (0, Fraction(5, 2), True, False)
    c2 = policy_from_dict(_with({"lower": -1, "upper": 1, "unit_lower": -3, "unit_upper": 3})).table("t").columns["c"]  # type: ignore[union-attr]
    assert c2.bounded and c2.unit_bounded
    assert policy_from_dict(_with({"lower": 0, "upper": 1})).table("t").max_contributions is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("col", "table", "key", "text"),
    [
        ({"unit_lower": 0}, {}, "columns.c.unit_upper", "declared together"),
        ({"unit_upper": 3}, {}, "columns.c.unit_lower", "declared together"),
        ({"unit_lower": 5, "unit_upper": 3}, {}, "columns.c.unit_lower", "above unit_upper"),
        ({"unit_lower": "a", "unit_upper": 3}, {}, "columns.c.unit_lower", "finite number"),
        ({"unit_lower": 0, "unit_upper": 2**63}, {}, "columns.c.unit_upper", "below 2^62"),
        ({"lower": dt.date(2020, 1, 1), "upper": dt.date(2021, 1, 1), "unit_lower": 0, "unit_upper": 1}, {},
         "columns.c.unit_lower", "date/timestamp"),
        ({"lower": 0, "upper": 1}, {"max_contributions": 0}, "max_contributions", ""),
        ({"lower": 0, "upper": 1}, {"max_contributions": 2.5}, "max_contributions", ""),
    ],
)
def test_bad_bounds(col: dict[str, Any], table: dict[str, Any], key: str, text: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy_from_dict(_with(col, **table))
    assert f"tables.t.{key}" in str(info.value) and text in str(info.value)
    assert info.value.sqlstate == "F0000"


def test_public_tables_and_the_unit_cannot_carry_them() -> None:
    d = _with({"lower": 0, "upper": 1})
    d["tables"]["p"]["max_contributions"] = 3
    with pytest.raises(PolicyError, match=r"tables\.p\.max_contributions: applies only to private tables"):
        policy_from_dict(d)
    d = _with({"lower": 0, "upper": 1})
    d["tables"]["t"]["columns"]["uid"] = {"unit_lower": 0, "unit_upper": 1}
    with pytest.raises(PolicyError, match="privacy unit cannot carry bounds"):
        policy_from_dict(d)
