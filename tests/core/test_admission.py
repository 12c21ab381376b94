"""Admission control: per-user private-query rate and concurrency caps (R30)."""

from __future__ import annotations

import pytest

from dpsql.proxy.admission import Admission, TooManyQueries


def test_rate_limit_per_user_and_window() -> None:
    a = Admission(per_minute=3)
    for i in range(3):
        with a.admit("alice", now=100.0 + i):
            pass
    with pytest.raises(TooManyQueries) as info, a.admit("alice", now=110.0):
        pass
    assert info.value.sqlstate == "53000" and "retry in" in (info.value.hint or "")
    with a.admit("bob", now=110.0):  # other users are unaffected
        pass
    with a.admit("alice", now=160.5):  # the first query left the 60 s window
        pass


def test_concurrency_limit_releases_on_exit() -> None:
    a = Admission(per_minute=100, concurrent=2)
    with a.admit("u", now=1.0), a.admit("u", now=1.0), pytest.raises(TooManyQueries), a.admit("u", now=1.0):
        pass
    with a.admit("u", now=2.0):
        pass


def test_refusal_does_not_consume_rate() -> None:
    a = Admission(per_minute=1, concurrent=1)
    with a.admit("u", now=0.0), pytest.raises(TooManyQueries), a.admit("u", now=0.0):
        pass
    with pytest.raises(TooManyQueries), a.admit("u", now=30.0):
        pass  # still 1 in the last minute


def test_a_full_user_queues_and_runs_in_arrival_order() -> None:
    """With 1 slot, three more queries wait (none is refused) and get the slot first come, first served."""
    import threading
    import time

    a = Admission(per_minute=100, concurrent=1)
    order: list[int] = []
    started = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with a.admit("u", wait=10):
            started.set()
            release.wait(10)

    def waiter(i: int) -> None:
        with a.admit("u", wait=10):
            order.append(i)

    h = threading.Thread(target=holder)
    h.start()
    assert started.wait(5)
    waiters = []
    for i in range(3):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        waiters.append(t)
        deadline = time.monotonic() + 5
        while a.waiting("u") < i + 1:  # queue them in a known order
            assert time.monotonic() < deadline
            time.sleep(0.005)
    with a.admit("v"):  # another user is not held up
        pass
    release.set()
    for t in [h, *waiters]:
        t.join(10)
    assert order == [0, 1, 2]
    assert a.running("u") == 0 and a.waiting("u") == 0


def test_the_queue_wait_runs_out_with_53000() -> None:
    import time

    a = Admission(per_minute=100, concurrent=1)
    with a.admit("u"):
        t0 = time.monotonic()
        with pytest.raises(TooManyQueries) as info, a.admit("u", wait=0.2):
            pass
        assert 0.19 <= time.monotonic() - t0 < 5
    assert info.value.sqlstate == "53000" and "waited 0.2 s" in info.value.message
    assert "concurrent_queries_per_user" in (info.value.hint or "")
    with a.admit("u"):  # the refused waiter left no trace
        assert a.waiting("u") == 0


def test_a_waiter_can_be_cancelled() -> None:
    import threading

    from dpsql.errors import QueryCanceled

    a = Admission(per_minute=100, concurrent=1)
    cancel = threading.Event()
    cancel.set()
    with a.admit("u"), pytest.raises(QueryCanceled), a.admit("u", wait=30, cancelled=cancel):
        pass
    assert a.waiting("u") == 0 and a.running("u") == 0
