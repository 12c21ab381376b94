"""The single-thread statement watchdog."""

from __future__ import annotations

import threading
import time

from dpsql.proxy.backends.watchdog import Watchdog


def test_fires_in_deadline_order() -> None:
    w = Watchdog()
    fired: list[str] = []
    done = threading.Event()
    w.schedule(0.15, lambda: (fired.append("late"), done.set()))
    w.schedule(0.05, lambda: fired.append("early"))
    assert done.wait(2)
    assert fired == ["early", "late"]
    w.close()


def test_disarm_prevents_the_call() -> None:
    w = Watchdog()
    fired = threading.Event()
    disarm = w.schedule(0.05, fired.set)
    disarm()
    disarm()  # idempotent
    assert not fired.wait(0.2)
    w.close()


def test_a_failing_callback_does_not_stop_others() -> None:
    w = Watchdog()
    ok = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom")

    w.schedule(0.01, boom)
    w.schedule(0.05, ok.set)
    assert ok.wait(2)
    w.close()


def test_many_timers_one_thread() -> None:
    w = Watchdog()
    before = threading.active_count()
    n = 200
    count = 0
    lock = threading.Lock()
    all_done = threading.Event()

    def hit() -> None:
        nonlocal count
        with lock:
            count += 1
            if count == n:
                all_done.set()

    for i in range(n):
        w.schedule(0.001 * (i % 20), hit)
    assert threading.active_count() <= before + 1
    assert all_done.wait(2)
    w.close()


def test_close_drops_pending_and_stops() -> None:
    w = Watchdog()
    fired = threading.Event()
    w.schedule(0.1, fired.set)
    t0 = time.monotonic()
    w.close()
    w.close()
    assert time.monotonic() - t0 < 1
    assert not fired.wait(0.2)
