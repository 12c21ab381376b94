"""EXPLAIN (BIAS) and ``dpsql tune``.

Known drop rates: 20,000 units with exactly 10 rows each, 2 rows in each of 5 groups, 20% of
rows with a value above the declared upper bound. With max_rows = 5 an ungrouped COUNT(*) drops
50% of the rows; grouped by g with max_groups = 2, max_rows drops nothing and max_groups drops 60%.

False-failure rate: each estimate is a ratio of independent discrete-Gaussian sums; the report's
± is 1.96 standard deviations (delta method). The test allows 2.7 × the stated ± (5.3 sd):
P ≈ 1.2e-7 per estimate, 5 estimates ≈ 6e-7. The delta-method linearisation error is far
smaller here (relative noise of the denominator < 1%). The negative control: the same check
against a wrong truth (the drop rate of max_rows = 4, or 20% more groups) fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import duckdb
import pytest
from engine_lib import Harness

from dpsql.errors import DPSQLError

UNITS = 20_000
TABLES = """
[tables.t]
privacy_unit = "uid"
max_groups = 2
max_rows = 5
[tables.t.columns]
g = { values = ["a", "b", "c", "d", "e"] }
x = { lower = 0, upper = 10 }
"""
_LINE = re.compile(r"≈ (-?\d+\.\d)% \(± (\d+\.\d)%\)")


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bias") / "known.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        f"""CREATE TABLE t AS SELECT u AS uid, ['a','b','c','d','e'][(r % 5) + 1] AS g,
                   CASE WHEN r < 2 THEN 20.0 ELSE 5.0 END AS x
            FROM range({UNITS}) AS a(u), range(10) AS b(r)"""
    )
    con.close()
    return path


def _estimates(lines: list[str]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for line in lines:
        m = _LINE.search(line)
        if m is None:
            continue
        key = ("max_rows" if "max_rows=" in line else "max_groups" if "max_groups=" in line
               else "max_contributions" if "max_contributions=" in line else "clamped")
        out[key] = (float(m.group(1)) / 100, float(m.group(2)) / 100)
    return out


def _within(est: tuple[float, float], truth: float) -> bool:
    value, err = est
    return abs(value - truth) <= 2.7 * err + 0.0005  # + the report's rounding to 0.1%


def test_bias_estimate_on_a_known_drop_rate(make_harness: Callable[..., Harness], known: Path) -> None:
    h = make_harness(tables=TABLES, database=known)
    s = h.engine.session("alice")
    s.execute("SET dp.bias_epsilon = 1")
    r = s.execute("EXPLAIN (BIAS) SELECT COUNT(*), AVG(x) FROM t")
    lines = [row[0] for row in r.rows]
    est = _estimates(lines)
    assert set(est) == {"max_rows", "clamped"}, lines
    assert est["max_rows"][1] < 0.05 and _within(est["max_rows"], 0.5), lines
    assert not _within(est["max_rows"], 0.6), lines  # negative control: max_rows = 4 would drop 60%
    assert _within(est["clamped"], 0.2), lines
    assert "ε = 1" in lines[0] and r.notices and "spent ε=1" in r.notices[0]

    g = s.execute("EXPLAIN (BIAS) SELECT g, COUNT(*) FROM t GROUP BY g")
    est = _estimates([row[0] for row in g.rows])
    assert _within(est["max_rows"], 0.0) and _within(est["max_groups"], 0.6), g.rows
    assert not _within(est["max_groups"], 0.4), g.rows  # negative control: max_groups = 3


def test_bias_reports_rows_dropped_by_the_row_cap(make_harness: Callable[..., Harness], known: Path) -> None:
    """max_contributions = 3: after max_rows (nothing) and max_groups = 2 (4 of 10 rows kept), the
    cap keeps 3 rows of each unit: 10% more dropped. Same false-failure rate as above: 1.2e-7 per
    estimate, 5 more estimates (≈ 6e-7 for this test); negative control: k = 2 (20%)."""
    tables = TABLES.replace("max_rows = 5\n", "max_rows = 5\nmax_contributions = 3\n", 1)
    h = make_harness(tables=tables, database=known)
    s = h.engine.session("alice")
    s.execute("SET dp.bias_epsilon = 1")
    g = s.execute("EXPLAIN (BIAS) SELECT g, COUNT(*) FROM t GROUP BY g")
    lines = [row[0] for row in g.rows]
    est = _estimates(lines)
    assert set(est) == {"max_rows", "max_groups", "max_contributions"}, lines
    assert _within(est["max_rows"], 0.0) and _within(est["max_groups"], 0.6), lines
    assert _within(est["max_contributions"], 0.1), lines
    assert not _within(est["max_contributions"], 0.2), lines  # negative control: k = 2
    # without GROUP BY: max_rows keeps 5 of 10 rows, the cap 3 of those (20% of the rows)
    lines = [row[0] for row in s.execute("EXPLAIN (BIAS) SELECT COUNT(*) FROM t").rows]
    est = _estimates(lines)
    assert _within(est["max_rows"], 0.5) and _within(est["max_contributions"], 0.2), lines


def test_bias_is_charged_before_any_row_is_read(make_harness: Callable[..., Harness], known: Path) -> None:
    h = make_harness(tables=TABLES, database=known)
    s = h.engine.session("alice")
    before = s.budget()
    s.execute("EXPLAIN (BIAS) SELECT COUNT(*) FROM t")
    kinds = h.recorder.kinds()
    assert "charge" in kinds
    charge_at = kinds.index("charge")
    reads = [i for i, e in enumerate(h.recorder.events) if e.kind == "execute" and "__dp_rows" in e.detail]
    assert reads and min(reads) > charge_at
    after = {b.scope: b for b in s.budget()}
    assert after["user"].spent_epsilon > {b.scope: b for b in before}["user"].spent_epsilon


@pytest.mark.parametrize(
    ("sql", "state"),
    [
        ("EXPLAIN (BIAS) SELECT COUNT(*) FROM departments", "0A000"),
        ("EXPLAIN (BIAS) SELECT nope FROM visits", "42703"),
    ],
)
def test_bias_refusals_are_free(make_harness: Callable[..., Harness], sql: str, state: str) -> None:
    h = make_harness()
    s = h.engine.session("alice")
    with pytest.raises(DPSQLError) as e:
        s.execute(sql)
    assert e.value.sqlstate == state
    assert h.recorder.kinds().count("charge") == 0


def test_bias_epsilon_setting(make_harness: Callable[..., Harness]) -> None:
    s = make_harness().engine.session("alice")
    assert s.execute("SHOW dp.bias_epsilon").rows == [("0.25",)]
    for bad in ("0", "5", "abc"):
        with pytest.raises(DPSQLError) as e:
            s.execute(f"SET dp.bias_epsilon = {bad}")
        assert e.value.sqlstate == "22023"


def test_plain_explain_is_not_bias() -> None:
    from dpsql.proxy.commands import classify

    assert classify("EXPLAIN (BIAS) SELECT 1").bias
    assert classify("explain (costs off, bias) SELECT 1").bias
    assert not classify("EXPLAIN (BIAS false) SELECT 1").bias
    assert not classify("EXPLAIN SELECT 1").bias


def _bounded_count(policy_path: Path) -> float:
    """The exact (noise-free) bounded COUNT(*) of the demo under ``policy_path``."""
    from dpsql.policy import load_policy
    from dpsql.proxy.backends.duckdb import DuckDBBackend
    from dpsql.rewriter import rewrite
    from dpsql.schema import build_catalog

    policy = load_policy(policy_path)
    backend = DuckDBBackend(policy)
    try:
        catalog = build_catalog(policy, backend.describe(), backend.unique_columns())
        rw = rewrite("SELECT COUNT(*) FROM visits", catalog, dialect="duckdb")
        session = backend.session()
        try:
            return float(session.execute(rw.sql, timeout=60).rows[0][0])
        finally:
            session.close()
    finally:
        backend.close()


def test_tune_on_the_demo_data_gives_bounds_with_small_count_bias(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`dpsql tune` on the demo data (the old, badly bounded policy: max_rows = 5 drops 49% of
    COUNT(*)) suggests bounds whose COUNT(*) bias, measured exactly on the bounded SQL, is < 5%;
    the measurement is charged to operator:NAME in the ledger."""
    from dpsql.accountant.ledger import open_ledger
    from dpsql.examples.hospital import generate
    from dpsql.policy import load_policy
    from dpsql.proxy.cli import main
    from dpsql.proxy.tune import _operator_limits

    policy_path = generate(tmp_path)
    text = policy_path.read_text()
    old = re.sub(r"max_rows = \d+", "max_rows = 5", re.sub(r"max_groups = \d+", "max_groups = 3", text, count=1), count=1)
    policy_path.write_text(old)
    assert _bounded_count(policy_path) < 0.6 * 250_000  # the old bounds: about half the rows

    assert main(["tune", "--policy", str(policy_path), "--epsilon", "1", "--operator", "ops"]) == 0
    out = capsys.readouterr().out
    section = out.split("[tables.visits]", 1)[1]
    max_rows = int(re.search(r"max_rows = (\d+)", section).group(1))  # type: ignore[union-attr]
    max_groups = int(re.search(r"max_groups = (\d+)", section).group(1))  # type: ignore[union-attr]
    assert "bias ≈" in out and "noise ±" in out
    assert int(re.search(r"max_contributions = (\d+)", section).group(1)) == max_rows  # type: ignore[union-attr]
    tuned = re.sub(r"max_rows = 5", f"max_rows = {max_rows}", re.sub(r"max_groups = 3", f"max_groups = {max_groups}", old, count=1),
                   count=1)
    policy_path.write_text(tuned)
    count = _bounded_count(policy_path)
    assert count >= 0.95 * 250_000, (max_rows, count)

    policy = load_policy(policy_path)
    ledger = open_ledger(policy)
    try:
        import time

        status = {b.scope: b for b in ledger.status("operator:ops", "-", _operator_limits(policy), time.time())}
        assert Fraction(1) >= Fraction(status["user"].spent_epsilon).limit_denominator(1000) > 0
    finally:
        ledger.close()


def test_tune_refuses_a_bad_epsilon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dpsql.proxy.cli import main

    assert main(["tune", "--policy", str(tmp_path / "missing.toml"), "--epsilon", "0"]) in (1, 2)
    assert "ERROR" in capsys.readouterr().err

