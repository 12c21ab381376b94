"""release(): noisy integers only, one vector call per statistic, padded timing, no value leaks."""

from __future__ import annotations

import time
import traceback
from fractions import Fraction

import pytest
from accountant_plans import COUNT, SUM5, UNITS, build_plan

from dpsql.accountant import noise
from dpsql.accountant.planner import calibrate
from dpsql.errors import ExecutionFailed

HUGE_EPS = Fraction(10**4)  # σ ≈ 1e-4: every draw is 0 except with probability < e^-(10^7)
DELTA = Fraction(1, 10**6)


def test_public_keys_keep_every_group() -> None:
    np_ = calibrate(build_plan((COUNT, SUM5)), HUGE_EPS, DELTA, "zcdp")
    exact = {"a0": [3, 0, 10**30], "a1": [-5, 0, 7]}  # Python ints: a HUGEINT sum cannot overflow
    out = noise.release(np_, exact)
    assert out.kept == (0, 1, 2)
    assert out.values == exact


def test_noise_is_added() -> None:
    np_ = calibrate(build_plan((COUNT,)), Fraction(1, 10), DELTA, "zcdp")
    out = noise.release(np_, {"a0": [0] * 200})
    # σ ≈ 40: 200 zeros survive with probability < 0.02^200
    assert out.values["a0"] != [0] * 200
    assert len(out.values["a0"]) == 200


def test_partition_selection_drops_small_groups_and_keeps_large_ones() -> None:
    plan = build_plan((COUNT, UNITS), selection=True, units_column="u")
    np_ = calibrate(plan, HUGE_EPS, DELTA, "zcdp")
    sel = np_.selection
    assert sel is not None
    units = [1, sel.threshold - 1, sel.threshold, 10 * sel.threshold]
    out = noise.release(np_, {"a0": [5, 6, 7, 8], "u": units})
    assert out.kept == (2, 3)
    assert out.values["a0"] == [7, 8]
    assert out.values["u"] == [sel.threshold, 10 * sel.threshold]  # the selection's noisy counts (noise 0 here)
    # units may also be given separately
    assert noise.release(np_, {"a0": [5, 6, 7, 8]}, units=units).kept == (2, 3)


def test_basic_mode_release() -> None:
    plan = build_plan((COUNT, UNITS), selection=True, units_column="u")
    np_ = calibrate(plan, HUGE_EPS, DELTA, "basic")
    out = noise.release(np_, {"a0": [1, 2]}, units=[1, 10**6])
    assert out.kept == (1,)
    assert out.values["a0"] == [2]


def test_failures_carry_no_values() -> None:
    """R10: an input problem is reported without any value, cause or context."""
    np_ = calibrate(build_plan((COUNT, SUM5)), Fraction(1), DELTA, "zcdp")
    secret = "987654321987"
    for bad in (
        {"a0": [f"x{secret}"], "a1": [1]},  # int() would quote the value
        {"a0": [1, 2], "a1": [int(secret)]},  # lengths differ
        {"a1": [int(secret)]},  # a statistic is missing
    ):
        with pytest.raises(ExecutionFailed) as info:
            noise.release(np_, bad)  # type: ignore[arg-type]
        e = info.value
        assert e.__cause__ is None and e.__context__ is None and e.__suppress_context__
        text = "".join(traceback.format_exception(e))
        assert secret not in text


def test_noise_phase_is_padded_to_the_quantum() -> None:
    np_ = calibrate(build_plan((COUNT,)), Fraction(1), DELTA, "zcdp")
    for n in (1, 100):
        t = time.perf_counter()
        noise.release(np_, {"a0": [0] * n})
        elapsed = time.perf_counter() - t
        assert elapsed >= noise.PAD_QUANTUM
    # a slow phase is rounded up to the next multiple of the quantum
    t = time.perf_counter()
    noise.release(np_, {"a0": [0] * 3000}, pad_quantum=0.002)
    elapsed = time.perf_counter() - t
    assert elapsed >= 0.002


def test_no_seeded_mode() -> None:
    """There is no way to make release deterministic: no seed parameter, no module switch."""
    import inspect

    params = inspect.signature(noise.release).parameters
    assert not any("seed" in p or "determin" in p for p in params)
    assert not any("seed" in name.lower() for name in dir(noise))


# --- noise drawn ahead of the data (draw_ahead) --------------------------------------------------


def test_ahead_draws_are_added_to_the_exact_values() -> None:
    np_ = calibrate(build_plan((COUNT, SUM5)), HUGE_EPS, DELTA, "zcdp")
    exact = {"a0": [3, 0, 10**30], "a1": [-5, 0, 7]}
    ahead = noise.draw_ahead(np_, 3)
    assert "a0" not in repr(ahead) and "future" not in repr(ahead).lower()  # the draws stay opaque
    out = noise.release(np_, exact, ahead=ahead)
    assert out.kept == (0, 1, 2) and out.values == exact  # σ ≈ 1e-4: every draw is 0


def test_ahead_noise_has_the_mechanism_scale() -> None:
    """10,000 discrete Laplace draws (basic, ε = 1, sensitivity 1: scale 1, variance 2e/(e−1)² ≈ 1.84):
    the sample mean is within 5.5 standard errors of 0 and the sample variance within ±13% of
    1.84. The variance's standard error is σ²·√((κ − 1)/n) ≈ 0.041 with kurtosis κ ≈ 6, so ±13%
    is ≥ 5.8 standard errors: false-failure rate < 1e-6 for each check."""
    np_ = calibrate(build_plan((COUNT,)), Fraction(1), DELTA, "basic")
    n = 10_000
    out = noise.release(np_, {"a0": [0] * n}, ahead=noise.draw_ahead(np_, n))
    z = out.values["a0"]
    mean = sum(z) / n
    var = sum((x - mean) ** 2 for x in z) / (n - 1)
    e = 2.718281828459045
    expected = 2 * e / (e - 1) ** 2
    assert abs(mean) < 5.5 * (expected / n) ** 0.5
    assert abs(var - expected) < 0.13 * expected


def test_ahead_refuses_selection_and_bad_counts() -> None:
    plan = build_plan((COUNT, UNITS), selection=True, units_column="u")
    with pytest.raises(ValueError):
        noise.draw_ahead(calibrate(plan, HUGE_EPS, DELTA, "zcdp"), 3)
    np_ = calibrate(build_plan((COUNT,)), HUGE_EPS, DELTA, "zcdp")
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError):
            noise.draw_ahead(np_, bad)  # type: ignore[arg-type]


def test_ahead_mismatch_fails_without_values() -> None:
    np_ = calibrate(build_plan((COUNT, SUM5)), Fraction(1), DELTA, "zcdp")
    other = calibrate(build_plan((COUNT, SUM5)), Fraction(1), DELTA, "zcdp")
    secret = 987654321
    cases = [
        (np_, {"a0": [secret, 1], "a1": [secret, 2]}, noise.draw_ahead(np_, 3)),  # wrong cell count
        (np_, {"a0": [secret], "a1": [secret]}, noise.draw_ahead(other, 1)),  # drawn for another plan
    ]
    for plan, exact, ahead in cases:
        with pytest.raises(ExecutionFailed) as e:
            noise.release(plan, exact, ahead=ahead)
        text = "".join(traceback.format_exception(e.value))
        assert str(secret) not in text and e.value.__cause__ is None and e.value.__suppress_context__


def test_ahead_draws_are_padded_to_the_quantum() -> None:
    """Without any SQL in between, release with ahead draws returns no sooner than one quantum
    after draw_ahead started, whatever the noise."""
    np_ = calibrate(build_plan((COUNT,)), Fraction(1), DELTA, "zcdp")
    for _ in range(20):
        t0 = time.perf_counter()
        noise.release(np_, {"a0": [0]}, ahead=noise.draw_ahead(np_, 1, pad_quantum=0.01))
        assert time.perf_counter() - t0 >= 0.01
