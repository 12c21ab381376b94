"""Per-user admission control for private queries (security.md R30): a rate and a concurrency cap.

Decided on the user's own activity only (never on data or cost estimates). Refusals cost nothing
and carry SQLSTATE 53000 with a hint saying when to retry.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager

from dpsql.errors import DPSQLError


class TooManyQueries(DPSQLError):
    """The user exceeded the private-query rate or concurrency limit (53000)."""

    sqlstate = "53000"


class Admission:
    """At most ``per_minute`` private queries per user in any 60 s, and ``concurrent`` at a time."""

    def __init__(self, per_minute: int, concurrent: int = 4) -> None:
        self.per_minute = per_minute
        self.concurrent = concurrent
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._running: dict[str, int] = defaultdict(int)

    @contextmanager
    def admit(self, user: str, now: float | None = None) -> Iterator[None]:
        """Hold a slot for one private query of ``user``; raise TooManyQueries if none is free."""
        t = time.monotonic() if now is None else now
        with self._lock:
            recent = self._recent[user]
            while recent and recent[0] <= t - 60.0:
                recent.popleft()
            if len(recent) >= self.per_minute:
                wait = max(1, int(recent[0] + 60.0 - t) + 1)
                raise TooManyQueries(
                    f"more than {self.per_minute} private queries in a minute for user {user}",
                    hint=f"retry in {wait} s, or ask the operator to raise [limits] queries_per_minute",
                )
            if self._running[user] >= self.concurrent:
                raise TooManyQueries(
                    f"user {user} already has {self.concurrent} private queries running", hint="wait for one to finish"
                )
            recent.append(t)
            self._running[user] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running[user] -= 1
