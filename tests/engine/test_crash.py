"""Crash consistency (security.md T5c, R22, R25): a `dpsql query` process SIGKILLed at any stage
after the charge leaves the charge in the (reopened) ledger, and delivers no result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dpsql.accountant.filters import limits_for
from dpsql.accountant.ledger import open_ledger
from dpsql.api import open_engine
from dpsql.policy import load_policy

DRIVER = Path(__file__).parent / "crash_driver.py"
SQL = "SELECT department, COUNT(*), AVG(cost) FROM visits GROUP BY department"


def _spent(policy_path: Path) -> int:
    """ρ spent by alice, in ledger units (1e-12), read from a freshly opened ledger."""
    policy = load_policy(policy_path)
    ledger = open_ledger(policy)
    try:
        status = {s.scope: s for s in ledger.status("alice", "-", limits_for(policy, "alice"), time.time())}
    finally:
        ledger.close()
    rho = status["user"].spent_rho
    assert rho is not None
    return int(rho * 10**12)


def _query_cost(policy_path: Path) -> int:
    engine = open_engine(policy_path)
    try:
        _, noise = engine.session("alice").plan(SQL)
    finally:
        engine.close()
    assert noise is not None
    return noise.cost.amount_pico


def _run(stage: str, policy: Path, marker: Path, *, kill_on_marker: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(DRIVER), stage, str(marker), "--", "query", "--policy", str(policy), "--user", "alice", SQL]
    if not kill_on_marker:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the bounded query never started"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("stage", ["after_charge", "during_bounded", "after_noise", "before_output"])
def test_kill_after_the_charge_never_loses_it(write_policy: Callable[..., Path], tmp_path: Path, stage: str) -> None:
    """SIGKILL right after the commit, during the bounded SQL, after noise, before output: the
    process delivers nothing, and the reopened ledger holds exactly one query's charge."""
    policy = write_policy()
    cost = _query_cost(policy)
    done = _run(stage, policy, tmp_path / "marker", kill_on_marker=stage == "during_bounded")
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "department" not in done.stdout  # no result was delivered
    assert _spent(policy) == cost
    shown = subprocess.run([sys.executable, "-m", "dpsql.proxy.cli", "budget", "--policy", str(policy), "--user", "alice"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "alice" in shown.stdout


def test_kill_before_the_charge_charges_nothing(write_policy: Callable[..., Path], tmp_path: Path) -> None:
    """Control: killed before the ledger commit, nothing is charged and nothing was read."""
    policy = write_policy()
    done = _run("before_charge", policy, tmp_path / "marker")
    assert done.returncode == -signal.SIGKILL
    assert _spent(policy) == 0


def test_driver_without_a_kill_answers(write_policy: Callable[..., Path], tmp_path: Path) -> None:
    """Control for the driver itself: a hook that never fires leaves an ordinary, charged answer."""
    policy = write_policy()
    cmd = [sys.executable, str(DRIVER), "none", str(tmp_path / "m"), "--", "query", "--policy", str(policy), "--user", "alice", SQL]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "department" in done.stdout and "cardiology" in done.stdout
    assert _spent(policy) == _query_cost(policy)


def _run_query(policy: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "dpsql.proxy.cli", "query", "--policy", str(policy), "--user", "alice", SQL]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stage", ["after_charge", "during_bounded", "after_noise"])
def test_kill_between_charge_and_store_never_gives_a_free_answer(write_policy: Callable[..., Path], tmp_path: Path,
                                                                  stage: str) -> None:
    """Replay is on (the default). Killed after the charge reserved the replay slot but before the
    answer was stored: the next identical query finds no answer to replay — it is charged (the
    dead owner's slot is taken over at once) and answered; only the run after it is a free replay."""
    policy = write_policy()
    cost = _query_cost(policy)
    done = _run(stage, policy, tmp_path / "marker", kill_on_marker=stage == "during_bounded")
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert _spent(policy) == cost
    t0 = time.monotonic()
    second = _run_query(policy)
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - t0 < 30  # not held up by the dead owner's reservation
    assert "cardiology" in second.stdout and "this query spent ε=1" in second.stderr
    assert _spent(policy) == 2 * cost
    third = _run_query(policy)
    assert third.returncode == 0 and "replayed, no budget spent" in third.stderr
    assert third.stdout == second.stdout  # the answer the second run paid for, unchanged
    assert _spent(policy) == 2 * cost


def test_kill_after_the_store_replays_the_paid_answer(write_policy: Callable[..., Path], tmp_path: Path) -> None:
    """Killed after the answer was stored (before it was printed): that answer was paid for, so the
    next identical query replays it for free."""
    policy = write_policy()
    cost = _query_cost(policy)
    done = _run("before_output", policy, tmp_path / "marker")
    assert done.returncode == -signal.SIGKILL
    again = _run_query(policy)
    assert again.returncode == 0 and "replayed, no budget spent" in again.stderr
    assert _spent(policy) == cost
