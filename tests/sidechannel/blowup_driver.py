"""Run one query through an engine over a twin database in this process and print, as JSON, its
outcome (SQLSTATE or None), the seconds it took and the process's peak resident memory.

Usage: python blowup_driver.py DIR with|without SQL [--growth-off] [--timeout 2s] [--memory 1GB]
(``--growth-off`` disables the rewriter's string growth bound: a test-only switch). Runs in its
own process so the peak RSS is the query's, and exits with os._exit so an abandoned statement
cannot hold the process up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sidechannel_lib import make_database, write_policy


def _high_water() -> int | None:
    """The process's peak resident size since exec (VmHWM; ru_maxrss would also count the
    parent's memory at fork), in bytes, or None without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("side", choices=["with", "without"])
    ap.add_argument("sql")
    ap.add_argument("--growth-off", action="store_true")
    ap.add_argument("--timeout", default="2s")
    ap.add_argument("--memory", default="1GB")
    a = ap.parse_args()
    if a.growth_off:
        import dpsql.rewriter.functions as functions

        functions.MAX_TEXT_GROWTH = functions.MAX_TEXT_CONSTANT = functions.MAX_TEXT_WORK = 10**15  # type: ignore[attr-defined]
    from dpsql.api import open_engine
    from dpsql.errors import DPSQLError

    d = Path(a.dir) / a.side
    d.mkdir(parents=True, exist_ok=True)
    db = d / "twin.duckdb"
    if not db.exists():
        make_database(db, with_target=a.side == "with")
    engine = open_engine(write_policy(d, db, limits={"statement_timeout": a.timeout, "memory_limit": a.memory}))
    session = engine.session("alice")
    from dpsql.proxy.backends.memory import resident_bytes

    base = resident_bytes() or 0
    base_peak = _high_water() or 0
    state: str | None = None
    t0 = time.perf_counter()
    try:
        session.execute(a.sql)
    except DPSQLError as e:
        state = e.sqlstate
    elapsed = time.perf_counter() - t0
    peak = _high_water() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"sqlstate": state, "seconds": elapsed, "peak_rss": peak, "base_rss": base, "base_peak": base_peak}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
