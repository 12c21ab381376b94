"""One timer thread for all statement timeouts of a backend.

A ``threading.Timer`` per statement would start a thread per query; the watchdog keeps a heap
of deadlines served by a single daemon thread, started on first use. Callbacks run on that
thread and must be quick (they only ask the engine to interrupt a statement).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Watchdog:
    """Runs callbacks at deadlines on one daemon thread; each scheduled call can be disarmed."""

    def __init__(self, name: str = "dpsql-watchdog") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def schedule(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` once after ``delay`` seconds unless the returned disarm function is
        called first. Disarming is idempotent and guarantees the callback has not started by the
        time it returns only if it returns before the deadline; callers must tolerate a late call."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the watchdog is closed")
            ident = next(self._ids)
            self._armed[ident] = callback
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), ident))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

        def disarm() -> None:
            with self._cond:
                self._armed.pop(ident, None)

        return disarm

    def close(self) -> None:
        """Drop every pending callback and stop the thread; idempotent."""
        with self._cond:
            self._closed = True
            self._armed.clear()
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    while self._heap and self._heap[0][1] not in self._armed:
                        heapq.heappop(self._heap)  # disarmed: drop lazily
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._closed:
                    return
                _, ident = heapq.heappop(self._heap)
                callback = self._armed.pop(ident)
            with contextlib.suppress(Exception):  # a failing callback must not stop the others
                callback()
