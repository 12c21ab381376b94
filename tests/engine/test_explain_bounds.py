"""EXPLAIN shows the contribution bounds in force (issue 10 §3): the L1 row cap, per-unit bounds,
and each statistic's sensitivity with the norm its mechanism was calibrated to."""

from __future__ import annotations

from fractions import Fraction

import pytest

from dpsql.accountant.planner import calibrate
from dpsql.policy import policy_from_dict
from dpsql.proxy.explain import explain_rows
from dpsql.rewriter import rewrite
from dpsql.schema import build_catalog

POLICY = {
    "server": {"auth": "trust"}, "budget": {"epsilon": 10, "delta": 1e-6}, "users": {"a": {}},
    "tables": {"t": {"privacy_unit": "u", "max_rows": 3, "max_groups": 2, "max_contributions": 4,
                     "columns": {"x": {"lower": 0, "upper": 10, "unit_lower": 0, "unit_upper": 25},
                                 "g": {"values": ["a", "b", "c"]}}}},
}


@pytest.mark.parametrize(("accounting", "norm"), [("zcdp", "L2 = √10"), ("basic", "L1 = 4")])
def test_explain_lists_the_bounds_and_the_norm(accounting: str, norm: str) -> None:
    policy = policy_from_dict(POLICY, "/tmp/p.toml")
    catalog = build_catalog(policy, {"public.t": [("u", "int8"), ("x", "int4"), ("g", "text")]})
    rw = rewrite("SELECT g, COUNT(*), SUM(x) FROM t GROUP BY g", catalog)
    assert rw.plan is not None
    noise = calibrate(rw.plan, Fraction(1), Fraction(1, 10**7), accounting)  # type: ignore[arg-type]
    text = "\n".join(explain_rows(rw, noise, policy))
    assert "at most 4 row(s) in all across the groups (max_contributions)" in text
    assert "per-unit bounds: SUM/AVG(x) clamp each u's total (AVG: mean) in a group to [0, 25]" in text
    assert f"sensitivity 3 × 2 group(s), at most 4 over all groups (max_contributions): {norm}" in text
    assert "each unit's total per group clamped to [0, 25] (unit bounds)" in text
