"""Per-user admission control for private queries (security.md R30): a rate cap and a queue.

Decided on the user's own activity only (never on data or cost estimates). A user runs at most
``concurrent`` private queries at a time (``[limits] concurrent_queries_per_user``); more wait in
a first-come, first-served queue — BI tools fire a dashboard's charts in parallel from one
account — until a slot frees up, the wait runs out (the statement's own deadline) or the
statement is cancelled. Refusals cost nothing and carry SQLSTATE 53000 with a hint: at once when
the user exceeds ``per_minute`` private queries in 60 s, and only when the wait runs out for a
full queue.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager

from dpsql.errors import DPSQLError, QueryCanceled

_TICK = 0.05  # seconds between checks of a waiter's cancel flag


class TooManyQueries(DPSQLError):
    """The user exceeded the private-query rate, or waited too long for a concurrency slot (53000)."""

    sqlstate = "53000"


class Admission:
    """At most ``per_minute`` private queries per user in any 60 s, and ``concurrent`` at a time
    (the rest queue in arrival order)."""

    def __init__(self, per_minute: int, concurrent: int = 4) -> None:
        self.per_minute = per_minute
        self.concurrent = concurrent
        self._cond = threading.Condition()
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._running: dict[str, int] = defaultdict(int)
        self._queues: dict[str, deque[object]] = defaultdict(deque)

    def running(self, user: str) -> int:
        """How many private queries of ``user`` hold a slot now."""
        with self._cond:
            return self._running[user]

    def waiting(self, user: str) -> int:
        """How many private queries of ``user`` wait for a slot now."""
        with self._cond:
            return len(self._queues[user])

    @contextmanager
    def admit(
        self,
        user: str,
        now: float | None = None,
        *,
        wait: float = 0.0,
        cancelled: threading.Event | None = None,
    ) -> Iterator[None]:
        """Hold a slot for one private query of ``user`` while the block runs.

        Raises TooManyQueries at once when the rate cap is reached; when all ``concurrent`` slots
        are taken, waits in the user's FIFO queue for up to ``wait`` seconds, then raises
        TooManyQueries. Raises QueryCanceled (57014) if ``cancelled`` is set while waiting. A
        refused or cancelled query uses neither a slot nor the rate."""
        t = time.monotonic() if now is None else now
        start = time.monotonic()
        me = object()
        with self._cond:
            recent = self._recent[user]
            while recent and recent[0] <= t - 60.0:
                recent.popleft()
            if len(recent) >= self.per_minute:
                retry = max(1, int(recent[0] + 60.0 - t) + 1)
                raise TooManyQueries(
                    f"more than {self.per_minute} private queries in a minute for user {user}",
                    hint=f"retry in {retry} s, or ask the operator to raise [limits] queries_per_minute",
                )
            queue = self._queues[user]
            queue.append(me)
            try:
                while queue[0] is not me or self._running[user] >= self.concurrent:
                    if cancelled is not None and cancelled.is_set():
                        raise QueryCanceled("canceling statement due to user request")
                    left = wait - (time.monotonic() - start)
                    if left <= 0:
                        waited = f" and this one waited {wait:g} s for a slot" if wait > 0 else ""
                        raise TooManyQueries(
                            f"user {user} already has {self.concurrent} private queries running{waited}",
                            hint="wait for one to finish, or ask the operator to raise [limits] concurrent_queries_per_user",
                        )
                    self._cond.wait(min(left, _TICK) if cancelled is not None else left)
            except BaseException:
                queue.remove(me)
                self._cond.notify_all()
                raise
            queue.popleft()
            recent.append(t)
            self._running[user] += 1
            self._cond.notify_all()  # the next in line may also fit
        try:
            yield
        finally:
            with self._cond:
                self._running[user] -= 1
                self._cond.notify_all()
