"""Date and timestamp bounds in the policy (DESIGN §2: ``visit_date = { lower = 2020-01-01, … }``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from dpsql.errors import PolicyError
from dpsql.policy import load_policy, policy_from_dict


def _with(col: dict) -> dict:
    return {
        "server": {"auth": "trust"},
        "budget": {"epsilon": 10, "delta": 1e-6},
        "users": {"a": {}},
        "tables": {"t": {"privacy_unit": "uid", "columns": {"d": col}}},
    }


def test_toml_dates_and_datetimes(tmp_path: Path) -> None:
    p = tmp_path / "policy.toml"
    p.write_text(
        """
[server]
auth = "trust"
[budget]
epsilon = 10.0
delta = 1e-6
[users.a]
[tables.visits]
privacy_unit = "patient_id"
[tables.visits.columns]
visit_date = { lower = 2020-01-01, upper = 2025-12-31 }
seen_at = { lower = 2020-01-01T00:00:00, upper = 2025-12-31T23:59:59 }
age = { lower = 0, upper = 120 }
"""
    )
    t = load_policy(p).table("visits")
    assert t is not None
    d, s, a = t.columns["visit_date"], t.columns["seen_at"], t.columns["age"]
    assert d.time_bounded and (d.time_lower, d.time_upper) == (dt.date(2020, 1, 1), dt.date(2025, 12, 31))
    assert not d.bounded and d.lower is None  # a date is never summed
    assert s.time_bounded and s.time_upper == dt.datetime(2025, 12, 31, 23, 59, 59)
    assert a.bounded and not a.time_bounded


@pytest.mark.parametrize(
    ("col", "key", "text"),
    [
        ({"lower": dt.date(2021, 1, 1), "upper": dt.date(2020, 1, 1)}, "lower", "after upper"),
        ({"lower": dt.date(2021, 1, 1)}, "upper", "together"),
        ({"upper": dt.date(2021, 1, 1)}, "lower", "together"),
        ({"lower": dt.date(2020, 1, 1), "upper": 5}, "upper", "date"),
        ({"lower": dt.date(2020, 1, 1), "upper": dt.datetime(2021, 1, 1)}, "upper", "both be dates"),
        ({"lower": dt.datetime(2020, 1, 1, tzinfo=dt.UTC), "upper": dt.datetime(2021, 1, 1)}, "lower", "UTC offset"),
        ({"lower": dt.time(1, 0), "upper": dt.date(2021, 1, 1)}, "lower", "date"),
    ],
)
def test_bad_time_bounds(col: dict, key: str, text: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy_from_dict(_with(col))
    assert f"tables.t.columns.d.{key}" in str(info.value) and text in str(info.value)


def test_privacy_unit_cannot_carry_time_bounds() -> None:
    d = _with({"lower": 0, "upper": 1})
    d["tables"]["t"]["columns"]["uid"] = {"lower": dt.date(2020, 1, 1), "upper": dt.date(2021, 1, 1)}
    with pytest.raises(PolicyError, match="privacy unit cannot carry bounds"):
        policy_from_dict(d)
