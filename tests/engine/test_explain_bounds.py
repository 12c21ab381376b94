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


def test_the_row_cap_is_left_out_where_it_cannot_bind(make_harness) -> None:  # type: ignore[no-untyped-def]
    """Without GROUP BY a unit adds ≤ max_rows rows to its one group: with max_rows ≤ k the cap
    changes no sensitivity and costs two window sorts, so the bounded SQL has no __dp_capped;
    grouped, it binds and is there; the noise is the same either way for the ungrouped query."""
    from engine_lib import HOSPITAL_TABLES

    tables = HOSPITAL_TABLES.replace("max_rows = 5\n", "max_rows = 5\nmax_contributions = 8\n", 1)
    capped = make_harness(tables=tables).engine.session("alice")
    plain = make_harness().engine.session("alice")
    rw, noise = capped.plan("SELECT COUNT(*), SUM(cost) FROM visits")
    assert "__dp_capped" not in rw.sql
    _, noise_plain = plain.plan("SELECT COUNT(*), SUM(cost) FROM visits")
    assert noise is not None and noise_plain is not None
    assert [s.error95 for s in noise.stats] == [s.error95 for s in noise_plain.stats]
    rw, _ = capped.plan("SELECT department, COUNT(*) FROM visits GROUP BY department")
    assert "__dp_capped" in rw.sql
