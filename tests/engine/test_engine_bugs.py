"""Engine-level bugs found while writing tests/engine, one minimal case each (strict xfail: the
test starts failing when the bug is fixed — then remove the marker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from engine_lib import Harness, policy_text

from dpsql.api import open_engine
from dpsql.errors import DPSQLError

B10 = ("B10: ORDER BY an ordinal or an unaliased aggregate is post-processed as ORDER BY \"_col_N\", which the "
       "post-processing query does not define: BinderException → XX000 after the charge")


@pytest.mark.parametrize("sql", [
    "SELECT region, COUNT(*) FROM patients GROUP BY region ORDER BY 2 DESC",
    "SELECT region, COUNT(*) FROM patients GROUP BY region ORDER BY COUNT(*) DESC LIMIT 3",
    "SELECT department, AVG(cost) FROM visits GROUP BY department ORDER BY AVG(cost) DESC LIMIT 2",
])
def test_b10_order_by_unaliased_aggregate(make_harness: Callable[..., Harness], sql: str) -> None:
    """rewriter/post_query.py emits e.g. `SELECT __dp_k0 AS "region", __dp_a0 AS "count" FROM __dp_noisy
    ORDER BY "_col_1" DESC NULLS FIRST` (the name sqlglot's qualify gave the projection); the
    analyst pays ε and gets "post-processing the noisy result failed (BinderException)"."""
    h = make_harness()
    session = h.engine.session("alice")
    result = session.execute(sql)
    values = [r[1] for r in result.rows]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("setting", ["dp.epsilon", "dp.delta"])
def test_b11_huge_setting_value(make_harness: Callable[..., Harness], setting: str) -> None:
    """proxy/settings.py parses the value exactly as a Fraction, then formats float(v) for the
    message; for 1e999 that raises OverflowError, which is no DPSQLError (a crash for the client)."""
    h = make_harness(session_epsilon=5.0)
    session = h.engine.session("alice")
    with pytest.raises(DPSQLError) as refused:
        session.execute(f"SET {setting} = 1e999")
    assert refused.value.sqlstate == "22023"


def test_b12_explain_with_post_processing_shows_noise(make_harness: Callable[..., Harness]) -> None:
    """DESIGN §3: EXPLAIN shows each output column's noise scale and 95% error bound. With a
    post-processing query, proxy/explain.py prints "n: computed from noisy aggregates (int8)" for
    what is the noisy COUNT(*) itself, and "region: computed from noisy aggregates" for a key."""
    h = make_harness()
    session = h.engine.session("alice")
    sql = "SELECT region, COUNT(*) AS n FROM patients GROUP BY region HAVING COUNT(*) > 10 ORDER BY n DESC LIMIT 3"
    text = "\n".join(r[0] for r in session.execute(f"EXPLAIN {sql}").rows)
    _, noise = session.plan(sql)
    assert noise is not None
    (stat,) = noise.stats
    assert f"scale {float(stat.released_scale):.4g}" in text and "95% error" in text


B13 = ("B13: GROUP BY a float column with declared values: the public key set comes back as Decimal (VALUES (0.1)) and "
       "the bounded result as float, so the engine's key lookup misses and every group's exact value is taken as 0")


def test_b13_float_declared_values_are_matched(tmp_path: Path) -> None:
    """proxy/engine.py matches bounded rows to the public key set with a dict keyed by Python
    values; rewriter/contribution.py emits float declared values as DECIMAL literals, and
    Decimal('0.1') != 0.1. The release is then noise around 0 for every group (utility, not
    privacy). 1,000 units per group, σ ≈ 20: the released counts must be within 6σ of 1,000."""
    db = tmp_path / "scores.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE m AS SELECT range AS uid, [0.1, 0.2, 0.3][range % 3 + 1]::DOUBLE AS score FROM range(3000)")
    con.close()
    tables = '[tables.m]\nprivacy_unit = "uid"\n[tables.m.columns]\nscore = { values = [0.1, 0.2, 0.3] }\n'
    path = tmp_path / "policy.toml"
    path.write_text(policy_text(db, tmp_path / "ledger.sqlite", epsilon=100.0, tables=tables))
    engine = open_engine(path)
    try:
        session = engine.session("alice")
        sql = "SELECT score, COUNT(*) FROM m GROUP BY score"
        _, noise = session.plan(sql)
        assert noise is not None
        sigma = noise.stats[0].scale
        rows = session.execute(sql).rows
    finally:
        engine.close()
    assert [float(r[0]) for r in rows] == [0.1, 0.2, 0.3]
    assert all(abs(r[1] - 1000) <= 6 * sigma for r in rows), (rows, sigma)
