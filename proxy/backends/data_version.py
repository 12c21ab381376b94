"""Which version of the data a backend serves: the part of a replay key that changes with the data.

A :class:`DataVersion` is computed from file identities and connection targets only — never from
rows — so whether a query replays depends on the query, who asked and the operator's files, not on
what the data holds.

* A DuckDB database file is ATTACHed read-only, which holds a shared lock on it: no DuckDB writer
  can change it while dpsql serves it. Its version is (path, size, mtime, SHA-256 of the content),
  the hash taken once, on first use, while the lock is held; the same for a ``.wal`` beside it.
* A CSV-mapped table is loaded at start-up: its version is the file's identity and hash then.
* A Parquet-mapped table is read by every query: its identity (path, size, mtime, inode) is read
  again for every version, and its hash is recomputed whenever that identity changes.
* An upstream PostgreSQL cannot be pinned (its owner may write at any time): its version names the
  server and database only and is not ``pinned``, so replay bounds its staleness by a TTL.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataVersion:
    """``token`` identifies the data served; ``pinned`` is True when it cannot change while served."""

    token: str
    pinned: bool


def _stat(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def content_hash(path: Path) -> str:
    """SHA-256 of a file's content (hex)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class FileVersions:
    """Versions of the files one DuckDB backend serves (see the module docstring).

    ``locked`` files (the database and its WAL) and ``loaded`` files (CSV tables, read at start)
    are identified once; ``live`` files (Parquet views) at every call. Thread-safe.
    """

    def __init__(self, locked: list[Path], loaded: list[Path], live: list[Path]) -> None:
        self._locked = [p.resolve() for p in locked]
        self._live = [p.resolve() for p in live]
        self._lock = threading.Lock()
        self._fixed: list[str] | None = None
        self._loaded = [self._identify(p.resolve(), _stat(p)) for p in loaded]  # now: the content is loaded now
        self._live_hashes: dict[tuple[Path, tuple[int, int, int]], str] = {}

    @staticmethod
    def _identify(path: Path, st: tuple[int, int, int]) -> str:
        return f"{path}|{st[0]}|{st[1]}|{content_hash(path)}"

    def version(self) -> DataVersion:
        """The current version (pinned: every file is locked or loaded, or re-identified now)."""
        with self._lock:
            if self._fixed is None:
                fixed = []
                for p in self._locked:
                    fixed.append(self._identify(p, _stat(p)))
                    wal = p.with_name(p.name + ".wal")
                    if wal.exists():
                        fixed.append(self._identify(wal, _stat(wal)))
                self._fixed = fixed
            parts = [*self._fixed, *self._loaded]
            for p in self._live:
                try:
                    st = _stat(p)
                except OSError:
                    parts.append(f"{p}|missing")
                    continue
                key = (p, st)
                h = self._live_hashes.get(key)
                if h is None:
                    h = self._live_hashes[key] = self._identify(p, st)
                    if len(self._live_hashes) > 4 * max(1, len(self._live)):
                        self._live_hashes = {key: h}
                parts.append(h)
        token = hashlib.sha256("\n".join(["duckdb", *parts]).encode()).hexdigest()
        return DataVersion(token, pinned=True)


def unpinned(where: str) -> DataVersion:
    """The version of a source that can change under dpsql (named by ``where``)."""
    return DataVersion(hashlib.sha256(f"unpinned\n{where}".encode()).hexdigest(), pinned=False)
