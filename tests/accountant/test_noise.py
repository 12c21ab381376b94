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
