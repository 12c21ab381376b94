"""A per-process resident-memory guard for the embedded engine (issue 9, "limits that hold").

DuckDB's ``memory_limit`` bounds its buffer manager, not every allocation: the string heaps of
intermediate vectors are allocated outside it, so a row expression that grows strings can take
the process far past the limit. The guard samples the process's resident set size (from
``/proc/self/statm``) every ``INTERVAL`` seconds while at least one statement runs, and when it
exceeds the limit above the resident size measured when the guard was made, calls the
``on_exceeded`` callback of every watching statement (they interrupt themselves and answer
53200). It reads nothing of the data; where ``/proc`` is unavailable it does nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import threading
from collections.abc import Callable

INTERVAL = 0.01  # seconds between samples while a statement runs
_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes in a DuckDB-style size (``4GB``, ``512MiB``, ``100000``); ValueError otherwise."""
    m = _SIZE.match(text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def resident_bytes() -> int | None:
    """The process's resident set size in bytes, or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class MemoryGuard:
    """Watches resident memory while statements run; thread-safe."""

    def __init__(self, limit_bytes: int, *, interval: float = INTERVAL) -> None:
        base = resident_bytes()
        self.enabled = base is not None
        self.threshold = (base or 0) + limit_bytes
        self._interval = interval
        self._cond = threading.Condition()
        self._watchers: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, on_exceeded: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_exceeded`` (once) if memory passes the threshold before the returned
        function is called; the callback runs on the guard's thread and must be quick."""
        with self._cond:
            ident = next(self._ids)
            if self.enabled and not self._closed:
                self._watchers[ident] = on_exceeded
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="dpsql-memory-guard", daemon=True)
                    self._thread.start()
                self._cond.notify()

        def unwatch() -> None:
            with self._cond:
                self._watchers.pop(ident, None)

        return unwatch

    def close(self) -> None:
        """Stop the guard's thread; idempotent."""
        with self._cond:
            self._closed = True
            self._watchers.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._watchers:
                    self._cond.wait()
                if self._closed:
                    return
                self._cond.wait(self._interval)
                if self._closed:
                    return
            rss = resident_bytes()
            if rss is None or rss <= self.threshold:
                continue
            with self._cond:
                fired = list(self._watchers.values())
                self._watchers.clear()
            for callback in fired:
                with contextlib.suppress(Exception):  # a failing callback must not stop the others
                    callback()
