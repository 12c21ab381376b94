"""Shared helpers for the speed benchmarks: data sets, a throwaway policy, timing, tables.

The benchmarks print numbers (and ratios against a baseline measured in the same run); they
are not tests and assert nothing. Data sets and ledgers live in ``bench/out/`` (gitignored).
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"

SMALL_ROWS = 250_000  # the demo size: enough for a catalog (rewrite and noise benchmarks)
LARGE_ROWS = 10_000_000  # the size: 10M visits / 1M patients


# ------------------------------------------------------------------------------------ data sets


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Silence fds 1 and 2 (DuckDB draws a progress bar on them while generating)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _has_patient_key(path: Path) -> bool:
    """Data sets generated before the example declared patients.patient_id PRIMARY KEY are stale."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return bool(con.execute("SELECT COUNT(*) FROM duckdb_constraints() WHERE table_name = 'patients' "
                                "AND constraint_type = 'PRIMARY KEY'").fetchone()[0])
    finally:
        con.close()


def dataset(rows: int) -> Path:
    """The policy path of the hospital data set with ``rows`` visits (``rows // 10`` patients),
    generated into ``bench/out/hospital-<rows>/`` on first use and reused afterwards."""
    from dpsql.examples.hospital import scale

    directory = OUT / f"hospital-{rows}"
    policy = directory / "policy.toml"
    if policy.exists() and (directory / "hospital.duckdb").exists() and _has_patient_key(directory / "hospital.duckdb"):
        return policy
    print(f"[generating {rows:,} visits / {rows // 10:,} patients into {directory.relative_to(ROOT)} …]", flush=True)
    t0 = time.perf_counter()
    with _quiet_fds():
        path = scale(directory, rows)
    print(f"[generated in {time.perf_counter() - t0:.1f} s]", flush=True)
    return path


def bench_policy(policy_path: Path, *, accounting: str = "zcdp", tag: str = "bench") -> Any:
    """The data set's policy with a practically unlimited budget and a fresh ledger of its own.

    Budget ε = 1e6 (δ = 0.1), no session cap, no global cap; the ledger is a new SQLite file
    under ``bench/out/ledgers/`` so that the demo ledger is never charged.
    """
    import logging

    from dpsql.policy import policy_from_dict

    logging.getLogger("dpsql.accountant.ledger").setLevel(logging.ERROR)  # "created a new, empty … ledger" is expected

    data = tomllib.loads(policy_path.read_text("utf-8"))
    data["privacy"]["accounting"] = accounting
    data["budget"] = {"epsilon": 1e6, "delta": 0.1}
    data["privacy"]["replay"] = "off"  # every timed run is a real release, never a stored answer
    for user in data.get("users", {}).values():
        for key in ("epsilon", "delta", "window", "session_epsilon"):
            user.pop(key, None)
    ledgers = OUT / "ledgers"
    ledgers.mkdir(parents=True, exist_ok=True)
    ledger = ledgers / f"{tag}-{accounting}-{os.getpid()}-{time.time_ns()}.sqlite"
    data["privacy"]["ledger"] = {"path": str(ledger)}
    return policy_from_dict(data, policy_path.resolve())


def remove_ledger(policy: Any) -> None:
    """Delete a throwaway ledger made by :func:`bench_policy`."""
    path = Path(policy.ledger_path)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


# --------------------------------------------------------------------------------------- timing


def clock() -> float:
    return time.perf_counter()


def timeit(fn: Callable[[], Any], *, repeat: int, warmup: int = 1) -> list[float]:
    """``repeat`` wall-clock timings of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0–1) of ``values``, nearest-rank."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))
    return s[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    """Seconds as milliseconds with a sensible number of digits."""
    v = seconds * 1000
    if v != v:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def target_line(ok: bool, text: str) -> None:
    """One line per target; ``bench/run`` collects them into its summary."""
    print(f"TARGET {verdict(ok)}  {text}", flush=True)


# ---------------------------------------------------------------------------------------- output


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], *, left: int = 1, align: str = "") -> None:
    """Print a plain-text table; the first ``left`` columns are left-aligned, the rest right-aligned,
    unless ``align`` gives one letter per column (``l`` or ``r``)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    sides = align or "l" * left + "r" * (len(headers) - left)

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if sides[i] == "l" else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    print(f"\n{title}")
    print(fmt(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(fmt(r))
    sys.stdout.flush()


def header(text: str) -> None:
    print(f"\n{'=' * 100}\n{text}\n{'=' * 100}", flush=True)


def machine() -> str:
    import platform

    import duckdb
    import sqlglot

    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, duckdb {duckdb.__version__}, "
        f"sqlglot {sqlglot.__version__}, {platform.machine()} {platform.system()}; {load()}"
    )


def load() -> str:
    """The 1-minute load average: other processes on the machine skew the numbers."""
    one, _, _ = os.getloadavg()
    return f"load average {one:.2f} on {os.cpu_count()} CPUs"
