"""The operators' audit log (security.md R32): append-only, hash-chained JSON lines.

One line per statement an engine session answers (private and public queries, EXPLAIN, ``dp.*``
settings, the budget view): time, user, session, peer, TLS, authentication method, a hash of the
whitespace-normalised SQL, the ledger's query hash, mechanisms, what was charged (exact), what
the user has left, whether the answer was replayed, the outcome class and SQLSTATE, and the
latency. Never a value computed from private rows before noise, never a noise draw, never a
message or text from an engine (the SQLSTATE stands for the error) — and no released values
either: the log is for accounting, not results.

Chain: each line is a JSON object whose first two keys are ``prev`` — the SHA-256 (hex) of the
previous line's bytes (without its newline; 64 zeros for the first line) — and ``seq``, the
1-based line number. Changing, inserting or removing any line breaks the chain at the next line;
:func:`verify_chain` names the first line that does not chain. (Cutting lines off the end cannot
be detected from the file alone; ship the log off the host for that.)

Writers: any number of threads and processes may append to one file; each append holds an
exclusive ``flock`` while it reads the last line's hash and writes its own line with one
``write()`` to an ``O_APPEND`` descriptor. The file is created with mode 0600 (admins only).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpsql.errors import AuditLogUnavailable

GENESIS = "0" * 64
_HEAD = b'{"prev":"'
_TAIL_READ = 64 * 1024


def line_hash(line: bytes) -> str:
    """SHA-256 (hex) of one line's bytes, without its newline."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def sql_hash(sql: str) -> str:
    """The hash the log records for a statement: SHA-256 of its whitespace-normalised text (first 32 hex)."""
    return hashlib.sha256(" ".join(sql.split()).rstrip(";").strip().encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ChainReport:
    """The result of :func:`verify_chain`: ``lines`` checked, and the first problem (None if intact)."""

    path: Path
    lines: int
    bad_line: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when every line chains to the one before it."""
        return self.bad_line is None

    def message(self) -> str:
        """One line for an operator."""
        if self.ok:
            return f"audit log {self.path}: {self.lines} line(s), hash chain intact"
        return f"audit log {self.path} is broken at line {self.bad_line}: {self.problem}"


def _lines(f: Any) -> Iterator[bytes]:
    while line := f.readline():
        yield line


def verify_chain(path: str | os.PathLike[str]) -> ChainReport:
    """Check every line of the log at ``path`` (a missing file is an empty, intact log).

    A line must be complete (end in a newline), be a JSON object whose ``prev`` is the hash of the
    line before and whose ``seq`` is its line number. OSError if the file cannot be read."""
    p = Path(path)
    if not p.exists():
        return ChainReport(p, 0)
    expected = GENESIS
    n = 0
    with open(p, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # no writer is half-way through a line
        try:
            for raw in _lines(f):
                n += 1
                if not raw.endswith(b"\n"):
                    return ChainReport(p, n, n, "the line is incomplete (the file was cut or is being written by a non-dpsql tool)")
                try:
                    rec = json.loads(raw)
                except ValueError:
                    return ChainReport(p, n, n, "the line is not JSON")
                if not isinstance(rec, dict) or not raw.startswith(_HEAD):
                    return ChainReport(p, n, n, "the line is not a dpsql audit record")
                if rec.get("prev") != expected:
                    where = "line 1 does not start the chain" if n == 1 else f"it does not chain to line {n - 1}"
                    return ChainReport(p, n, n, f"{where} (line {max(1, n - 1)} or {n} was changed, or lines were inserted or removed)")
                if rec.get("seq") != n:
                    return ChainReport(p, n, n, f"its sequence number is {rec.get('seq')!r}, expected {n} (lines were removed or inserted)")
                expected = line_hash(raw)
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return ChainReport(p, n)


def _last_line(fd: int, size: int) -> bytes:
    """The last complete line of a file of ``size`` bytes (ending in a newline), or b"" if empty."""
    if size == 0:
        return b""
    start = max(0, size - _TAIL_READ)
    while True:
        chunk = os.pread(fd, size - start, start)
        body = chunk[:-1] if chunk.endswith(b"\n") else chunk
        i = body.rfind(b"\n")
        if i >= 0 or start == 0:
            return chunk[i + 1 :]
        start = max(0, start - 4 * (size - start))


class AuditLog:
    """An open audit log. :meth:`open` verifies the chain first and refuses a broken one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._end = -1  # file size after our last append (to skip re-reading the tail)
        self._last = (GENESIS, 0)  # hash and seq of the line that ended at _end

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> AuditLog:
        """Verify the log at ``path`` and return a writer for it. Raises AuditLogUnavailable (58000)
        naming the first bad line when the chain is broken, or when the file cannot be read or its
        directory does not exist — dpsql does not start without an intact trail."""
        p = Path(os.path.abspath(path))
        if not p.parent.is_dir():
            raise AuditLogUnavailable(f"the audit log directory {p.parent} does not exist",
                                      hint="create it, or set [server] audit_log to a path in an existing directory")
        try:
            report = verify_chain(p)
        except OSError as e:
            raise AuditLogUnavailable(f"the audit log {p} cannot be read ({e.strerror or e})") from None
        if not report.ok:
            raise AuditLogUnavailable(report.message(), hint="keep the file as evidence and start a new log: move it aside, "
                                                             "or set [server] audit_log to a new path")
        return cls(p)

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
            self._end = -1
        return self._fd

    def append(self, record: dict[str, Any]) -> None:
        """Append one record (``prev`` and ``seq`` are filled in). Raises AuditLogUnavailable if the
        line cannot be written."""
        try:
            with self._lock:
                fd = self._descriptor()
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    size = os.fstat(fd).st_size
                    if size == self._end:
                        prev, seq = self._last
                    else:
                        last = _last_line(fd, size)
                        if last and not last.endswith(b"\n"):
                            raise AuditLogUnavailable(f"the audit log {self.path} ends in an incomplete line",
                                                      hint="run `dpsql audit verify` and start a new log")
                        prev = line_hash(last) if last else GENESIS
                        seq = int(json.loads(last).get("seq", 0)) if last else 0
                    body = json.dumps({"prev": prev, "seq": seq + 1, **record}, separators=(",", ":"), ensure_ascii=True,
                                      allow_nan=False, default=str)
                    line = body.encode() + b"\n"
                    written = os.write(fd, line)
                    if written != len(line):
                        raise OSError("short write")
                    self._end = size + len(line)
                    self._last = (line_hash(line), seq + 1)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        except (OSError, ValueError) as e:
            self._end = -1
            raise AuditLogUnavailable(f"the audit log {self.path} cannot be written ({type(e).__name__})",
                                      hint="the statement ran (and any charge stands); fix the audit log's disk") from None

    def close(self) -> None:
        """Close the descriptor; idempotent."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None and self._pid == os.getpid():
                os.close(fd)


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds (``2026-01-31T12:00:00.123Z``)."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def outcome_class(sqlstate: str) -> str:
    """``ok``, ``refused`` (the query or its cost was not admitted), ``canceled`` or ``error``."""
    if sqlstate == "00000":
        return "ok"
    if sqlstate.startswith("57"):
        return "canceled"
    if sqlstate[:2] in ("58", "XX"):
        return "error"
    return "refused"
