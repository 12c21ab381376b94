"""DP_INTERVAL_LOW/HIGH, dp.confidence and dp.rounding.

Coverage is measured through the release step itself (:func:`dpsql.proxy.release.finish`, the code
path every private query takes after its bounded SQL) on one release of 10^4 public groups whose
exact statistics are chosen directly — data where contribution bounding drops nothing, so the
intervals are noise-only and the truth is the noise-free release. Each group's noise is an
independent draw, so one call gives 10^4 draws per statistic.

False-failure rate: coverage of n = 10^4 groups is Binomial(n, p). With p ≥ 0.95 the lower
check 0.95 − 0.011 is 5.05 binomial standard deviations (0.00218) below: P ≈ 2e-7. For COUNT and
SUM p ≤ 0.95 + P(|Z| = b) (the half-width b is the smallest integer reaching 0.95; at the
scales here that atom is < 0.006, or b = ⌈1.96σ⌉ ≤ 1.96σ + 1 above σ = 100, adding < 0.003),
so the upper check 0.95 + 0.006 + 0.011 is again ≥ 5 standard deviations away. The negative
control (confidence 0.5) uses the same margins (sd 0.005, margin 0.026). Total ≤ 1e-6.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
from engine_lib import Harness

from dpsql.errors import DPSQLError
from dpsql.proxy import release as release_step
from dpsql.proxy.intervals import half_width, round_value
from dpsql.rewriter.estimates import aggregate_values

GROUPS = 10_000
MARGIN = 0.011
ATOM = 0.006
SQL = (
    "SELECT department, COUNT(*) AS n, DP_INTERVAL_LOW(COUNT(*)) AS n_lo, DP_INTERVAL_HIGH(COUNT(*)) AS n_hi, "
    "SUM(cost) AS s, DP_INTERVAL_LOW(SUM(cost)) AS s_lo, DP_INTERVAL_HIGH(SUM(cost)) AS s_hi, "
    "AVG(cost) AS a, DP_INTERVAL_LOW(AVG(cost)) AS a_lo, DP_INTERVAL_HIGH(AVG(cost)) AS a_hi, "
    "DP_INTERVAL_LOW(SUM(cost) / COUNT(*)) AS r_lo, DP_INTERVAL_HIGH(SUM(cost) / COUNT(*)) AS r_hi "
    "FROM visits GROUP BY department"
)


def _coverage(h: Harness, confidence: float, rounding: str) -> dict[str, float]:
    engine = h.engine
    rw = engine.rewrite(SQL)
    plan = rw.plan
    assert plan is not None
    noise = engine.calibrate(SQL, plan, Fraction(1), Fraction(1, 10**7))
    count = 1000
    exact: dict[str, int] = {}
    for s in plan.stats:
        exact[s.column] = count if s.kind in ("count", "units") else int(count * 300 / s.grid)
    keys = [(f"d{i}",) for i in range(GROUPS)]
    columns = [k.column for k in plan.keys] + [s.column for s in plan.stats]
    rows = [(k[0], *(exact[s.column] for s in plan.stats)) for k in keys]
    truth = aggregate_values(plan, {c: [v] for c, v in exact.items()}, 1)
    options = release_step.ReleaseOptions(confidence=confidence, rounding=rounding)
    out = release_step.finish(plan, noise, columns, rows, keys, engine.post, options=options)
    assert len(out.rows) == GROUPS
    names = [o.name for o in plan.outputs]
    col = {n: i for i, n in enumerate(names)}
    agg_of = {"n": 0, "s": 1, "a": 2}  # aggregates in order of appearance: COUNT(*), SUM(cost), AVG(cost)
    cover: dict[str, float] = {}
    for name, j in agg_of.items():
        t = truth[j][0]
        assert t is not None
        hits = sum(1 for r in out.rows if r[col[f"{name}_lo"]] <= t <= r[col[f"{name}_hi"]])
        cover[name] = hits / GROUPS
    ratio = float(Fraction(truth[1][0]) / truth[0][0])  # type: ignore[arg-type]
    cover["r"] = sum(1 for r in out.rows if r[col["r_lo"]] <= ratio <= r[col["r_hi"]]) / GROUPS
    return cover


@pytest.mark.parametrize("rounding", ["off", "auto"])
def test_interval_coverage_at_95_percent(make_harness: Callable[..., Harness], rounding: str) -> None:
    """COUNT and SUM cover at 95% (exact quantiles: within the stated tolerance on both sides);
    AVG and SUM/COUNT (interval arithmetic with Šidák levels) cover at least 95% (measured: about
    99%). Rounding only widens the intervals (by up to a tenth of the half-width on each side),
    so under 'auto' only the lower check applies."""
    cover = _coverage(make_harness(), 0.95, rounding)
    for name in ("n", "s"):
        assert cover[name] >= 0.95 - MARGIN, (name, cover)
        if rounding == "off":
            assert cover[name] <= 0.95 + ATOM + MARGIN, (name, cover)
    for name in ("a", "r"):
        assert cover[name] >= 0.95 - MARGIN, (name, cover)


def test_interval_coverage_follows_dp_confidence(make_harness: Callable[..., Harness]) -> None:
    """Negative control: at dp.confidence = 0.5 the same intervals cover about half the time, so
    the test above would notice intervals that are too wide or too narrow."""
    cover = _coverage(make_harness(), 0.5, "off")
    for name in ("n", "s"):
        assert 0.5 - 0.026 <= cover[name] <= 0.5 + 0.02 + 0.026, (name, cover)
    assert cover["a"] >= 0.5 - 0.026


def test_intervals_are_free_and_enclose_the_value(make_harness: Callable[..., Harness]) -> None:
    """DP_INTERVAL_* costs nothing: the same noise plan and charge as the bare aggregate; the
    released value lies inside its own interval."""
    h = make_harness()
    s = h.engine.session("alice")
    bare = "SELECT department, COUNT(*) AS n, SUM(cost) AS s, AVG(cost) AS a FROM visits GROUP BY department"
    _, noise_b = s.plan(bare)
    _, noise_i = s.plan(SQL)
    assert noise_b is not None and noise_i is not None
    assert noise_i.cost == noise_b.cost
    assert [n.scale for n in noise_i.stats] == [n.scale for n in noise_b.stats]
    r = s.execute(SQL)
    for row in r.rows:
        values = dict(zip(r.columns, row, strict=True))
        assert values["n_lo"] <= values["n"] <= values["n_hi"]
        assert values["a_lo"] <= values["a"] <= values["a_hi"]
        assert isinstance(values["n_lo"], int) and isinstance(values["a_lo"], float)
    assert r.types[r.columns.index("n_lo")] == "int8"
    assert h.recorder.kinds().count("charge") == 1


def test_interval_half_width_matches_the_mechanism(make_harness: Callable[..., Harness]) -> None:
    """COUNT's interval is noisy ± b with b from the calibrated mechanism (released units)."""
    h = make_harness()
    s = h.engine.session("alice")
    s.execute("SET dp.rounding = 'off'")
    sql = "SELECT COUNT(*) AS n, DP_INTERVAL_LOW(COUNT(*)) AS lo, DP_INTERVAL_HIGH(COUNT(*)) AS hi FROM visits"
    _, noise = s.plan(sql)
    assert noise is not None
    b = half_width(noise.stats[0], 0.95)
    n, lo, hi = s.execute(sql).rows[0]
    assert hi - n == b and (n - lo == b or lo == 0)
    s.execute("SET dp.confidence = 0.99")
    n, lo, hi = s.execute(sql).rows[0]
    assert hi - n == half_width(noise.stats[0], 0.99) > b


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM visits WHERE DP_INTERVAL_LOW(cost) > 1",
        "SELECT DP_INTERVAL_LOW(1), COUNT(*) FROM visits",
        "SELECT DP_INTERVAL_LOW(LN(COUNT(*))) FROM visits",
        "SELECT DP_INTERVAL_LOW(DP_INTERVAL_HIGH(COUNT(*))) FROM visits",
        "SELECT DP_INTERVAL_LOW(COUNT(*), 2) FROM visits",
        "SELECT DP_INTERVAL_LOW(floor) FROM departments",
    ],
)
def test_interval_misuse_is_refused_for_free(make_harness: Callable[..., Harness], sql: str) -> None:
    h = make_harness()
    s = h.engine.session("alice")
    with pytest.raises(DPSQLError) as e:
        s.execute(sql)
    assert e.value.sqlstate == "0A000"
    assert h.recorder.kinds().count("charge") == 0


def test_interval_private_column_outside_an_aggregate_is_refused(make_harness: Callable[..., Harness]) -> None:
    s = make_harness().engine.session("alice")
    with pytest.raises(DPSQLError) as e:
        s.execute("SELECT DP_INTERVAL_LOW(cost) FROM visits")
    assert e.value.sqlstate == "42501"


@pytest.mark.parametrize("value", ["0", "1", "-0.5", "1.5", "abc"])
def test_dp_confidence_outside_the_unit_interval_is_22023(make_harness: Callable[..., Harness], value: str) -> None:
    s = make_harness().engine.session("alice")
    with pytest.raises(DPSQLError) as e:
        s.execute(f"SET dp.confidence = {value}")
    assert e.value.sqlstate == "22023"


def test_dp_settings_show_and_reset(make_harness: Callable[..., Harness]) -> None:
    s = make_harness().engine.session("alice")
    assert s.execute("SHOW dp.confidence").rows == [("0.95",)]
    assert s.execute("SHOW dp.rounding").rows == [("auto",)]
    s.execute("SET dp.confidence = 0.9")
    s.execute("SET dp.rounding = 'off'")
    assert s.execute("SHOW dp.confidence").rows == [("0.9",)]
    assert s.execute("SHOW dp.rounding").rows == [("off",)]
    with pytest.raises(DPSQLError) as e:
        s.execute("SET dp.rounding = 'sometimes'")
    assert e.value.sqlstate == "22023"
    s.execute("RESET dp.confidence")
    s.execute("RESET dp.rounding")
    assert s.execute("SHOW dp.confidence").rows == [("0.95",)]
    assert s.execute("SHOW dp.rounding").rows == [("auto",)]


def _digits(v: float) -> int:
    text = repr(v)
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def test_rounding_auto_prints_what_the_noise_supports(make_harness: Callable[..., Harness]) -> None:
    """dp.rounding = 'auto' rounds a floating aggregate to a power of ten at or below a tenth of
    its 95% half-width; counts (integers) are never rounded; 'off' keeps full precision."""
    h = make_harness()
    s = h.engine.session("alice")
    sql = "SELECT COUNT(*) AS n, AVG(cost) AS a, DP_INTERVAL_LOW(AVG(cost)) AS lo, DP_INTERVAL_HIGH(AVG(cost)) AS hi FROM visits"
    n, a, lo, hi = s.execute(sql).rows[0]
    assert isinstance(n, int)
    width = (hi - lo) / 2
    step = 10 ** __import__("math").floor(__import__("math").log10(width / 10))
    assert abs(a / step - round(a / step)) < 1e-6
    bare = s.execute("SELECT AVG(cost) AS a FROM visits").rows[0][0]
    assert _digits(bare) <= 3
    s.execute("SET dp.rounding = 'off'")
    raw = s.execute("SELECT AVG(cost) AS a FROM visits").rows[0][0]
    assert _digits(raw) > 3


@pytest.mark.parametrize(
    ("value", "width", "direction", "expected"),
    [
        (2454.4869993632146, 300.0, "", 2450.0),
        (2454.4869993632146, 300.0, "lo", 2450.0),
        (2454.4869993632146, 300.0, "hi", 2460.0),
        (0.123456, 0.05, "", 0.123),
        (7, 300.0, "", 7),
        (None, 300.0, "", None),
        (1.5, None, "", 1.5),
        (float("inf"), 3.0, "", float("inf")),
    ],
)
def test_round_value(value: Any, width: Any, direction: str, expected: Any) -> None:
    assert round_value(value, width, direction) == expected
