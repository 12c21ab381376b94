"""Benchmark 4 — the PostgreSQL-wire server.

Targets (issue 3): ``SELECT 1`` and catalog probes ≥ 10,000 queries/s over one connection with
pgbench (simple and extended protocol); a DP aggregate over the wire ≥ 60% of the rate of the same
query run in-process on the engine; connection set-up including SCRAM-SHA-256 ≤ 5 ms.

The server runs in its own process (``bench_wire.py --serve``, as ``dpsql serve`` would) over the
demo-size hospital data set (250k visits), with a throwaway policy: budget ε = 1e6, its own ledger
under ``bench/out/ledgers/``, no rate limit. Clients: PostgreSQL 15's pgbench (C, so the client
costs little) for rates, psycopg 3 / libpq for connection set-up. The in-process baseline runs the
same DP query on an ``Engine`` session in this process, over its own throwaway ledger.

Run: ``.venv/bin/python bench/bench_wire.py [--seconds 5]``
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

PASSWORD = "alice-demo"
DP_QUERY = "SELECT department, COUNT(*) AS n, AVG(cost) AS mean_cost FROM visits GROUP BY department"
PROBES = (
    ("SELECT 1", "SELECT 1;"),
    ("select current_schema()", "select current_schema();"),
    ("select pg_catalog.version()", "select pg_catalog.version();"),
    ("SHOW search_path", "SHOW search_path;"),
    ("SET application_name", "SET application_name = 'bench';"),
    ("pg_type lookup (shadow DuckDB)", "SELECT typname FROM pg_catalog.pg_type WHERE oid = 23;"),
)


def _policy(tag: str) -> Any:
    policy = bl.bench_policy(bl.dataset(bl.SMALL_ROWS), tag=tag)
    from dataclasses import replace

    return replace(policy, limits=replace(policy.limits, queries_per_minute=10**9, max_connections=256))


def serve(tag: str) -> None:
    """``--serve``: run a server on an ephemeral port, print ``PORT n``, serve until stdin closes."""
    from dpsql.proxy.server import start_in_thread

    policy = _policy(tag)
    running = start_in_thread(policy, listen="127.0.0.1:0")
    print(f"PORT {running.port} DB {running.server.ctx.database} CATALOG {running.server.ctx.catalog is not None}", flush=True)
    sys.stdin.read()
    running.stop()
    bl.remove_ledger(policy)


_MINIMAL_SERVER = r"""
import asyncio, struct, sys
import uvloop
def msg(t, b): return t + struct.pack("!i", len(b) + 4) + b
READY = msg(b"Z", b"I")
ANSWER = (msg(b"T", struct.pack("!h", 1) + b"?column?\0" + struct.pack("!IhIhih", 0, 0, 23, 4, -1, 0))
          + msg(b"D", struct.pack("!hi", 1, 1) + b"1") + msg(b"C", b"SELECT 1\0") + READY)
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf, self.started = t, b"", False
    def data_received(self, d):
        self.buf += d; out = []
        while True:
            if not self.started:
                if len(self.buf) < 8 or len(self.buf) < struct.unpack("!i", self.buf[:4])[0]: break
                n, code = struct.unpack("!ii", self.buf[:8]); self.buf = self.buf[n:]
                if code == 80877103: out.append(b"N"); continue
                self.started = True
                out.append(msg(b"R", struct.pack("!i", 0)) + msg(b"S", b"server_version\x0016.4\0") + msg(b"K", b"\0" * 8) + READY)
                continue
            if len(self.buf) < 5: break
            t, n = struct.unpack("!ci", self.buf[:5])
            if len(self.buf) < n + 1: break
            self.buf = self.buf[n + 1:]
            if t == b"Q": out.append(ANSWER)
            elif t == b"X": self.t.close(); return
        if out: self.t.write(b"".join(out))
async def main():
    s = await asyncio.get_running_loop().create_server(P, "127.0.0.1", 0)
    print(s.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
uvloop.install(); asyncio.run(main())
"""


def minimal_server_rate(pgb: str, seconds: float) -> float:
    """pgbench SELECT 1 (simple) against a 30-line fixed-reply asyncio+uvloop server: this machine's
    ceiling for a Python server right now (docs/wire measured 27.5k on a quiet 2-core VM)."""
    proc = subprocess.Popen([sys.executable, "-c", _MINIMAL_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        port = int(proc.stdout.readline())
        return pgbench(pgb, port, "x", "SELECT 1;", seconds=seconds)["tps"]
    finally:
        proc.stdin.close()
        proc.wait(10)


def _pgbench() -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)
    return str(found[0]) if found else None


def pgbench(
    pgb: str, port: int, db: str, sql: str, *, mode: str = "simple", seconds: float = 5, connect_each: bool = False
) -> dict[str, float]:
    """tps and average latency (ms) of one pgbench run of ``sql`` over one connection."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(sql + "\n")
        script = f.name
    args = [pgb, "-h", "127.0.0.1", "-p", str(port), "-U", "alice", "-n", "-f", script, "-M", mode, "-c", "1", "-T", str(int(seconds))]
    if connect_each:
        args.append("-C")
    args.append(db)
    try:
        r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PGPASSWORD": PASSWORD}, timeout=seconds + 60)
    finally:
        os.unlink(script)
    tps = re.search(r"tps = ([\d.]+)", r.stdout)
    lat = re.search(r"latency average = ([\d.]+) ms", r.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    if r.returncode != 0 or tps is None:
        print(f"pgbench failed: {r.stdout[-500:]} {r.stderr[-500:]}", flush=True)
        return {"tps": float("nan"), "latency_ms": float("nan"), "failed": float("nan")}
    return {"tps": float(tps.group(1)), "latency_ms": float(lat.group(1)) if lat else float("nan"),
            "failed": float(failed.group(1)) if failed else 0.0}


def in_process_rate(seconds: float, *, shield: bool = True) -> tuple[float, float]:
    """q/s and median latency of DP_QUERY on an in-process engine session (same data, own ledger);
    ``shield=False`` runs it with the timing shield off, to measure the shield's cost."""
    from dpsql.api import open_engine
    from dpsql.proxy.timing import TimingShield

    policy = _policy("inproc" if shield else "inproc-noshield")
    engine = open_engine(policy)
    if not shield:
        engine.shield = TimingShield(enabled=False)
    try:
        session = engine.session("alice")
        for _ in range(5):
            session.execute(DP_QUERY)
        times: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            session.execute(DP_QUERY)
            times.append(time.perf_counter() - t0)
        session.close()
    finally:
        engine.close()
        bl.remove_ledger(policy)
    return len(times) / sum(times), bl.median(times)


def wire_client_rate(port: int, db: str, seconds: float) -> float:
    """q/s of DP_QUERY through psycopg 3 (extended protocol), for reference."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="alice", password=PASSWORD, dbname=db, autocommit=True) as conn:
        for _ in range(5):
            conn.execute(DP_QUERY).fetchall()
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            conn.execute(DP_QUERY).fetchall()
            n += 1
        return n / (time.perf_counter() - t0)


def connect_times(port: int, db: str, n: int = 100) -> list[float]:
    """Seconds per psycopg 3 connect (TCP + startup + SCRAM-SHA-256 + ReadyForQuery) and close."""
    import psycopg

    out = []
    for _ in range(n + 5):
        t0 = time.perf_counter()
        conn = psycopg.connect(host="127.0.0.1", port=port, user="alice", password=PASSWORD, dbname=db)
        conn.close()
        out.append(time.perf_counter() - t0)
    return out[5:]


def client_pbkdf2_time() -> float:
    """Seconds the client spends on PBKDF2 (4096 iterations) per SCRAM login: libpq's share of set-up."""
    import hashlib

    t0 = time.perf_counter()
    for _ in range(20):
        hashlib.pbkdf2_hmac("sha256", b"alice-demo", b"0123456789abcdef", 4096)
    return (time.perf_counter() - t0) / 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each pgbench run")
    ap.add_argument("--serve", metavar="TAG", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    bl.header("Benchmark 4 — wire server: pgbench rates, DP aggregate over the wire vs in-process, connection set-up")
    print(bl.machine())
    pgb = _pgbench()
    if pgb is None:
        print("pgbench not found (apt-get install postgresql); skipping", flush=True)
        return 1
    bl.dataset(bl.SMALL_ROWS)
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "wire"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    m = re.match(r"PORT (\d+) DB (\S+) CATALOG (\S+)", line)
    if m is None:
        print(f"server did not start: {line!r}")
        proc.kill()
        return 1
    port, db = int(m.group(1)), m.group(2)
    print(f"server: dpsql in its own process on 127.0.0.1:{port}, database {db}, synthetic catalog loaded: {m.group(3)}")
    try:
        rows = []
        results: dict[tuple[str, str], dict[str, float]] = {}
        for label, sql in PROBES:
            for mode in ("simple", "extended", "prepared"):
                if label.startswith("SET") and mode != "simple":
                    continue
                res = pgbench(pgb, port, db, sql, mode=mode, seconds=args.seconds)
                results[(label, mode)] = res
                rows.append([label, mode, f"{res['tps']:,.0f}", f"{res['latency_ms']:.3f}", f"{res['failed']:.0f}"])
        ceiling = minimal_server_rate(pgb, args.seconds)
        rows.append(["SELECT 1 — minimal fixed-reply uvloop server", "simple", f"{ceiling:,.0f}", "", ""])
        bl.table("pgbench over one connection (-c 1)", ["statement", "protocol", "queries/s", "latency ms", "failed"], rows, left=2)
        print(f"dpsql SELECT 1 (simple) at {results[('SELECT 1', 'simple')]['tps'] / ceiling:.0%} of the minimal server's rate "
              f"on this machine now")

        inproc_qps, inproc_p50 = in_process_rate(args.seconds)
        dp_simple = pgbench(pgb, port, db, DP_QUERY + ";", mode="simple", seconds=args.seconds)
        dp_extended = pgbench(pgb, port, db, DP_QUERY + ";", mode="extended", seconds=args.seconds)
        psy = wire_client_rate(port, db, args.seconds)
        bl.table(
            f"DP aggregate: {DP_QUERY}",
            ["path", "queries/s", "ratio to in-process"],
            [
                ["in-process Engine session.execute", f"{inproc_qps:,.1f}", "1.00"],
                ["wire, pgbench simple", f"{dp_simple['tps']:,.1f}", f"{dp_simple['tps'] / inproc_qps:.2f}"],
                ["wire, pgbench extended", f"{dp_extended['tps']:,.1f}", f"{dp_extended['tps'] / inproc_qps:.2f}"],
                ["wire, psycopg 3 loop", f"{psy:,.1f}", f"{psy / inproc_qps:.2f}"],
            ],
        )
        off_qps, off_p50 = in_process_rate(args.seconds, shield=False)
        print(f"(in-process median latency {bl.ms(inproc_p50)} ms, including the noise step's 5 ms pad and the timing "
              f"shield; with the shield off {bl.ms(off_p50)} ms, {off_qps:,.1f} q/s: the shield costs "
              f"{bl.ms(inproc_p50 - off_p50)} ms)")

        conn = connect_times(port, db)
        per_conn = pgbench(pgb, port, db, "SELECT 1;", mode="simple", seconds=min(args.seconds, 3), connect_each=True)
        pbkdf2 = client_pbkdf2_time()
        bl.table(
            "connection set-up (TCP + startup + SCRAM-SHA-256 + ParameterStatus + ReadyForQuery)",
            ["measure", "ms"],
            [
                ["psycopg 3 connect+close, median of 100", bl.ms(bl.median(conn))],
                ["psycopg 3 connect+close, p95", bl.ms(bl.pct(conn, 0.95))],
                ["pgbench -C (connect per SELECT 1), average latency", f"{per_conn['latency_ms']:.2f}"],
                ["of which the client's PBKDF2 (4096 iterations)", bl.ms(pbkdf2)],
            ],
        )
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

    sel_simple = results[("SELECT 1", "simple")]["tps"]
    sel_ext = results[("SELECT 1", "extended")]["tps"]
    probe_min = min(results[(label, "simple")]["tps"] for label, _ in PROBES[1:4])
    bl.target_line(sel_simple >= 10_000 and sel_ext >= 10_000,
                   f"wire SELECT 1 ≥ 10,000 q/s on one connection: simple {sel_simple:,.0f}, extended {sel_ext:,.0f}")
    bl.target_line(probe_min >= 10_000,
                   f"wire catalog probes ≥ 10,000 q/s (canned: version, current_schema, SHOW): slowest {probe_min:,.0f}")
    ratio = dp_simple["tps"] / inproc_qps
    bl.target_line(ratio >= 0.6, f"wire DP aggregate ≥ 60% of in-process: {ratio:.0%} ({dp_simple['tps']:,.1f} vs {inproc_qps:,.1f} q/s)")
    med = bl.median(conn)
    bl.target_line(med <= 0.005, f"wire connection set-up incl. SCRAM ≤ 5 ms: median {bl.ms(med)} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
