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
