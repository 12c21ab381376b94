"""Cancel and statement timeout on Spark (``interruptTag``; Spark has no server-side statement
timeout), that the interrupted job is really gone afterwards (no task thread left running on the
server, its CPU idle), and that a canceled or timed-out query keeps its charge.

Why the slow query is what it is: Spark cancels a job at once in its scheduler (the job leaves the
running list) but a task stops only at its next kill check, which Spark makes when an operator
pulls from its input — per scan batch (``spark.sql.parquet.columnarReaderBatchSize`` rows) or per
shuffle row — never inside a nested-loop join's inner loop or while an aggregate emits its
buffered output. The old slow query, a 4-way cross join of the 3200-row visits, checks once per
4096 × 3200³ joined rows: its tasks ran on for hours after every interrupt (the "known bug"). A
bounded dpsql query does linear work per input row, so the test's stand-in is a 3-way cross join
whose scan is read in batches of 16 rows: about a minute of CPU if not interrupted, one kill check
per 16 × 3200² joined rows (~0.1 s) — like a long linear scan of a large table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sparkenv import SparkEnv, write_policy

from dpsql.errors import QueryCanceled
from dpsql.policy import load_policy
from dpsql.proxy.backends.base import Backend, BackendSession, ResultSet
from dpsql.proxy.backends.spark import SparkBackend
from dpsql.proxy.engine import Engine

pytestmark = [pytest.mark.spark]

# 3.3·10^10 joined rows, ~1 min of CPU on 2 cores unless interrupted (it reads only the backend's views)
SLOW = "SELECT COUNT(*) AS n FROM dpsql_6_public_visits a CROSS JOIN dpsql_6_public_visits b CROSS JOIN dpsql_6_public_visits c"
#: seconds within which an interrupted job's tasks must have stopped and the server gone idle
GONE_WITHIN = 20.0


def interruptible(b: SparkBackend) -> SparkBackend:
    """The stand-in's scan read in batches of 16 rows: a kill check every ~0.1 s (module docstring)."""
    b._spark.conf.set("spark.sql.parquet.columnarReaderBatchSize", "16")
    return b


@pytest.fixture(scope="module")
def backend(spark: SparkEnv, tmp_path_factory: pytest.TempPathFactory) -> SparkBackend:
    tmp = tmp_path_factory.mktemp("spark-cancel")
    b = interruptible(SparkBackend(load_policy(write_policy(tmp, "cancel", spark, "spark"))))
    spark.server.wait_idle(GONE_WITHIN)
    yield b  # type: ignore[misc]
    b.close()


def assert_gone(spark: SparkEnv) -> None:
    """No task of the interrupted job is left running, no job is listed, the server's CPU is idle."""
    waited = spark.server.wait_idle(GONE_WITHIN)
    assert waited < GONE_WITHIN


def test_statement_timeout_interrupts_the_job(backend: SparkBackend, spark: SparkEnv) -> None:
    with backend.session() as s:
        t0 = time.monotonic()
        error = bounded(lambda: s.execute(SLOW, timeout=1.0), 60.0)
        elapsed = time.monotonic() - t0
        assert isinstance(error, QueryCanceled), error
        assert error.sqlstate == "57014" and "statement timeout" in error.message
        assert elapsed < 1.0 + 0.6 * 1.0 + 0.3 * 1.0 + 0.5, elapsed  # client_wait + stop_wait, and some slack
        assert_gone(spark)
        assert s.execute("SELECT COUNT(*) AS n FROM dpsql_6_public_visits").rows[0][0] > 0  # still usable


def test_cancel_interrupts_the_job(backend: SparkBackend, spark: SparkEnv) -> None:
    with backend.session() as s:
        timer = threading.Timer(1.5, s.cancel)
        timer.start()
        t0 = time.monotonic()
        try:
            error = bounded(lambda: s.execute(SLOW, timeout=120.0), 60.0)
        finally:
            timer.cancel()
        assert isinstance(error, QueryCanceled) and "user request" in error.message, error
        assert time.monotonic() - t0 < 30
        assert_gone(spark)


def test_the_slow_job_runs_unless_interrupted(backend: SparkBackend, spark: SparkEnv) -> None:
    """The control: without an interrupt the stand-in keeps the server busy well past GONE_WITHIN,
    so the idle server above is the interrupt's doing. (Stopped here by the timeout after 8 s.)"""
    with backend.session() as s:
        seen: list[list[str]] = []
        threading.Timer(5.0, lambda: seen.append(spark.server.running_tasks())).start()
        error = bounded(lambda: s.execute(SLOW, timeout=8.0), 40.0)
        assert isinstance(error, QueryCanceled), error
        assert seen and seen[0], "the slow job should be running 5 s in"
    assert_gone(spark)


def bounded(fn: Callable[[], Any], within: float) -> BaseException | None:
    """Run ``fn`` on a daemon thread and return what it raised (None if it returned); fail the test,
    instead of hanging it, when it has not returned within ``within`` seconds."""
    out: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # handed to the test thread
            out.append(e)

    t = threading.Thread(target=run, daemon=True, name="bounded-call")
    t.start()
    t.join(within)
    assert not t.is_alive(), f"the call did not return within {within:g} s"
    return out[0] if out else None


class _SlowSession(BackendSession):
    """Runs the slow join instead of the bounded SQL (a stand-in for a long Spark job)."""

    def __init__(self, inner: BackendSession, on_slow: Callable[[], None]) -> None:
        self.inner, self.on_slow = inner, on_slow

    def execute(self, sql: str, *, timeout: float | None = None) -> ResultSet:
        if "__dp_rows" in sql:  # the bounded SQL: after the charge
            self.on_slow()
            sql = SLOW
        return self.inner.execute(sql, timeout=timeout)

    def cancel(self) -> None:
        self.inner.cancel()

    def close(self) -> None:
        self.inner.close()


class _SlowBackend(Backend):
    def __init__(self, inner: Backend, on_slow: Callable[[], None]) -> None:
        self.inner, self.dialect, self.on_slow = inner, inner.dialect, on_slow

    def describe(self) -> dict[str, list[tuple[str, str]]]:
        return self.inner.describe()

    def validate(self, sql: str) -> None:
        self.inner.validate(sql)

    def session(self) -> BackendSession:
        return _SlowSession(self.inner.session(), self.on_slow)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_stopped_query_keeps_its_charge(spark: SparkEnv, tmp_path: Path, how: str) -> None:
    extra = '[limits]\nstatement_timeout = "2s"\n' if how == "timeout" else ""
    policy = load_policy(write_policy(tmp_path, f"keep-{how}", spark, "spark", extra=extra, replay="off"))
    done = threading.Event()
    sessions: list[Any] = []

    def cancel_until_done() -> None:  # from 1 s into the job (a cancel before it starts is dropped), until it returns
        while not done.wait(1.0):
            sessions[0].cancel()

    def on_slow() -> None:
        if how == "cancel":
            threading.Thread(target=cancel_until_done, daemon=True).start()

    engine = Engine(policy, _SlowBackend(interruptible(SparkBackend(policy)), on_slow))
    try:
        session = engine.session("alice")
        sessions.append(session)
        try:
            error = bounded(lambda: session.execute("SELECT department, COUNT(*) FROM visits GROUP BY department"), 90.0)
        finally:
            done.set()
        assert isinstance(error, QueryCanceled), error
        assert sum(s.spent_rho for s in session.budget()) > 0
        assert_gone(spark)
    finally:
        done.set()
        engine.close()
