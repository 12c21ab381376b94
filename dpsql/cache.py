"""One bounded, thread-safe LRU map for the caches of pure computations.

Used for the engine's rewrite, calibration, validation and timing-shape caches, the wire layer's
parse-tree and route caches, and the synthetic catalog's template and route caches. Every cached
value is a function of public inputs (SQL text, policy, schema), never of private rows, so what
is cached — and what is evicted — reveals nothing about data.

>>> c: BoundedCache[str, int] = BoundedCache(2)
>>> c.put("a", 1); c.put("b", 2); c.get("a"); c.put("c", 3)
1
>>> "b" in c, "a" in c, len(c)
(False, True, 2)
>>> c.get_or_compute("d", lambda: 4), c.get("a")
(4, None)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING: object = object()


class BoundedCache(Generic[K, V]):
    """A map of at most ``size`` entries that evicts the least recently used one (thread-safe).

    ``get`` and ``put`` each hold the lock only for the dictionary operation; ``get_or_compute``
    runs the computation outside the lock, so two threads may compute the same value once each
    (the later store wins — fine for pure computations, which give equal values).
    """

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError("cache size must be a positive integer")
        self.size = size
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value stored for ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            value = self._data.get(key, _MISSING)  # type: ignore[arg-type]
            if value is _MISSING:
                return default
            self._data.move_to_end(key)
            return value  # type: ignore[return-value]

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(True, value) when ``key`` is stored (now the most recently used), else (False, None);
        for caches whose values may be None."""
        with self._lock:
            value = self._data.get(key, _MISSING)  # type: ignore[arg-type]
            if value is _MISSING:
                return False, None
            self._data.move_to_end(key)
            return True, value  # type: ignore[return-value]

    def put(self, key: K, value: V) -> None:
        """Store ``value`` under ``key`` as the most recently used; evict beyond ``size``."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The stored value of ``key``, else ``compute()`` stored and returned. An exception from
        ``compute`` is raised and nothing is stored."""
        hit, value = self.lookup(key)
        if hit:
            return value  # type: ignore[return-value]
        value = compute()
        self.put(key, value)
        return value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()
