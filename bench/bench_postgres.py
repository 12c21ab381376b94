"""Benchmark 4 — the bounded SQL on PostgreSQL ≤ 2.5× the same plain aggregate, at 1M visits.

A throwaway PostgreSQL cluster (initdb in a temporary directory, as the tests do) is loaded with
the hospital data set at ``--rows`` visits (COPY from the same DuckDB file the DuckDB backend
serves). For each query, on ONE PostgresBackend session (the SELECT-only reader role, read-only
transaction, pinned search path — exactly the production path) the analyst's plain SQL and the
rewriter's bounded SQL run alternately; the same pair also runs on a DuckDBBackend session, so
both engines are measured side by side in one run. Ratios are bounded ÷ plain on the same
engine. For a query over its target the bounded SQL's ``EXPLAIN (ANALYZE, BUFFERS)`` is
summarised (its slowest nodes, sorts that spill) and written to ``bench/out/``.

Usage: ``.venv/bin/python bench/bench_postgres.py [--rows N] [--repeat K] [--work-mem 4MB]``
(needs PostgreSQL server binaries: ``apt-get install postgresql``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path
from typing import Any

import benchlib as bl

sys.path.insert(0, str(bl.ROOT / "tests" / "postgres"))
import pgcluster

TARGET_RATIO = 2.5

QUERIES: tuple[tuple[str, str], ...] = (
    ("COUNT(*)", "SELECT COUNT(*) AS n FROM visits"),
    ("grouped COUNT+AVG", "SELECT department, COUNT(*) AS n, AVG(cost) AS mean_cost FROM visits GROUP BY department"),
    ("SUM with WHERE", "SELECT SUM(cost) AS total FROM visits WHERE visit_date >= DATE '2024-01-01'"),
    ("GROUP BY diagnosis (selection)", "SELECT diagnosis, COUNT(*) AS n FROM visits GROUP BY diagnosis"),
    (
        "join departments",
        "SELECT d.floor, COUNT(*) AS n, AVG(v.length_of_stay) AS stay FROM visits v "
        "JOIN departments d ON d.department_id = v.department_id GROUP BY d.floor",
    ),
)


async def _load(cluster: pgcluster.Cluster, duckdb_path: Path) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(cluster.dsn())
    try:
        await conn.execute(cluster.add_role("reader"))
        await conn.execute("CREATE DATABASE hospital")
    finally:
        await conn.close()
    conn = await asyncpg.connect(cluster.dsn(pgcluster.SUPERUSER, "hospital"))
    try:
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        counts = await pgcluster.copy_duckdb_tables(conn, duckdb_path, ("visits", "patients", "departments"))
        await conn.execute(
            "GRANT CONNECT ON DATABASE hospital TO reader; GRANT USAGE ON SCHEMA public TO reader; "
            "GRANT SELECT ON public.visits, public.patients, public.departments TO reader; "
            "ALTER ROLE reader SET default_transaction_read_only = on"
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return counts


async def _explain(dsn: str, sql: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) {sql}")
        return "\n".join(r[0] for r in rows)
    finally:
        await conn.close()


def _summarise(plan: str, top: int = 4) -> list[str]:
    """The slowest plan nodes (by their own actual time, children subtracted roughly) and spills."""
    nodes: list[tuple[float, str]] = []
    for line in plan.splitlines():
        m = re.search(r"->\s+(.*?)\s+\(cost=.*actual time=[\d.]+\.\.([\d.]+) rows=(\d+) loops=(\d+)", line)
        if m is None:
            m2 = re.match(r"^(\S.*?)\s+\(cost=.*actual time=[\d.]+\.\.([\d.]+) rows=(\d+) loops=(\d+)", line)
            if m2 is None:
                continue
            m = m2
        nodes.append((float(m.group(2)) * int(m.group(4)), f"{m.group(1)} {float(m.group(2)):.0f} ms rows={m.group(3)}"))
    out = [n for _, n in sorted(nodes, reverse=True)[:top]]
    out += [line.strip() for line in plan.splitlines() if "Disk:" in line or "external" in line][:3]
    out += [line.strip() for line in plan.splitlines() if line.strip().startswith(("Planning Time", "Execution Time", "JIT:"))]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--work-mem", default=None, help="PostgreSQL work_mem for the cluster (default: the server default, 4MB)")
    ap.add_argument("--jit", choices=("on", "off"), default=None, help="PostgreSQL jit for the cluster (default: the server default, on)")
    args = ap.parse_args(argv)

    from dpsql.policy import policy_from_dict
    from dpsql.proxy.backends.duckdb import DuckDBBackend
    from dpsql.proxy.backends.postgres import PostgresBackend
    from dpsql.rewriter import rewrite
    from dpsql.schema import build_catalog

    bl.header(
        f"Benchmark 4: bounded SQL vs plain SQL on PostgreSQL and DuckDB, {args.rows:,} visits / {args.rows // 10:,} patients "
        f"(target: bounded ≤ {TARGET_RATIO:g}× plain on PostgreSQL)"
    )
    policy_path = bl.dataset(args.rows)
    duck_policy = bl.bench_policy(policy_path, tag="pg-bench")
    if pgcluster.find_bindir() is None:
        print("PostgreSQL server binaries not found: apt-get install postgresql", file=sys.stderr)
        return 2
    settings = {k: v for k, v in (("work_mem", args.work_mem), ("jit", args.jit)) if v}
    t0 = time.perf_counter()
    cluster = pgcluster.start_cluster(settings)
    try:
        counts = asyncio.run(_load(cluster, policy_path.parent / "hospital.duckdb"))
        version = asyncio.run(_explain_version(cluster.dsn()))
        print(f"[PostgreSQL cluster started and loaded in {time.perf_counter() - t0:.1f} s: {counts}]")
        print(f"{bl.machine()}; {version}; work_mem {args.work_mem or 'default (4MB)'}, jit {args.jit or 'default (on)'}")
        pg_policy = policy_from_dict(_policy_dict(policy_path, duck_policy, cluster.dsn("reader", "hospital")), policy_path.resolve())
        pg_backend = PostgresBackend(pg_policy)
        duck_backend = DuckDBBackend(duck_policy)
        try:
            return _measure(args, cluster, pg_backend, duck_backend, pg_policy, duck_policy, rewrite, build_catalog)
        finally:
            pg_backend.close()
            duck_backend.close()
            bl.remove_ledger(duck_policy)
    finally:
        cluster.stop()


async def _explain_version(dsn: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        v = await conn.fetchval("SHOW server_version")
        return f"PostgreSQL {v}"
    finally:
        await conn.close()


def _policy_dict(policy_path: Path, duck_policy: Any, dsn: str) -> dict[str, Any]:
    import tomllib

    data = tomllib.loads(policy_path.read_text("utf-8"))
    data["source"] = {"postgres": dsn}
    data["budget"] = {"epsilon": 1e6, "delta": 0.1}
    data["privacy"]["replay"] = "off"  # every timed run is a real release, never a stored answer
    for user in data.get("users", {}).values():
        for key in ("epsilon", "delta", "window", "session_epsilon"):
            user.pop(key, None)
    data["privacy"]["ledger"] = {"path": str(duck_policy.ledger_path)}
    return data


def _measure(args: argparse.Namespace, cluster: pgcluster.Cluster, pg_backend: Any, duck_backend: Any, pg_policy: Any,
             duck_policy: Any, rewrite: Any, build_catalog: Any) -> int:
    pg_catalog = build_catalog(pg_policy, pg_backend.describe())
    duck_catalog = build_catalog(duck_policy, duck_backend.describe())
    sessions = {"postgres": pg_backend.session(), "duckdb": duck_backend.session()}
    rewrites = {
        "postgres": {name: rewrite(sql, pg_catalog, dialect="postgres").sql for name, sql in QUERIES},
        "duckdb": {name: rewrite(sql, duck_catalog, dialect="duckdb").sql for name, sql in QUERIES},
    }
    med: dict[tuple[str, str, str], float] = {}
    rows_out: list[list[Any]] = []
    for name, plain in QUERIES:
        for engine in ("postgres", "duckdb"):
            s = sessions[engine]
            bounded = rewrites[engine][name]
            for sql in (plain, bounded):  # warm-up: caches, plans, statistics
                s.execute(sql)
            tp: list[float] = []
            tb: list[float] = []
            for _ in range(args.repeat):  # alternate, so drift hits both alike
                t = bl.clock()
                s.execute(plain)
                tp.append(bl.clock() - t)
                t = bl.clock()
                s.execute(bounded)
                tb.append(bl.clock() - t)
            med[name, engine, "plain"] = bl.median(tp)
            med[name, engine, "bounded"] = bl.median(tb)
        p_pg, b_pg = med[name, "postgres", "plain"], med[name, "postgres", "bounded"]
        p_dk, b_dk = med[name, "duckdb", "plain"], med[name, "duckdb", "bounded"]
        rows_out.append([name, bl.ms(p_pg), bl.ms(b_pg), f"{b_pg / p_pg:.2f}×", bl.verdict(b_pg <= TARGET_RATIO * p_pg),
                         bl.ms(p_dk), bl.ms(b_dk), f"{b_dk / p_dk:.2f}×", f"{b_pg / b_dk:.1f}×"])  # fmt: skip
    bl.table(
        f"Median wall time (ms) over {args.repeat} alternating runs; {bl.load()}",
        ["query", "PG plain", "PG bounded", "PG ratio", f"≤{TARGET_RATIO:g}×", "Duck plain", "Duck bounded", "Duck ratio",
         "PG÷Duck bounded"],
    rows_out)  # fmt: skip
    misses = [name for name, _ in QUERIES if med[name, "postgres", "bounded"] > TARGET_RATIO * med[name, "postgres", "plain"]]
    out_dir = bl.OUT
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, plain in QUERIES:
        if name not in misses:
            continue
        dsn = cluster.dsn(pgcluster.SUPERUSER, "hospital")
        plan_b = asyncio.run(_explain(dsn, rewrites["postgres"][name]))
        plan_p = asyncio.run(_explain(dsn, plain))
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        path = out_dir / f"pg-explain-{slug}.txt"
        path.write_text(f"-- plain\n{plain}\n{plan_p}\n\n-- bounded\n{rewrites['postgres'][name]}\n{plan_b}\n")
        print(f"\nEXPLAIN ANALYZE of the bounded SQL of {name!r} (full plans in {path.relative_to(bl.ROOT)}):")
        for line in _summarise(plan_b):
            print(f"    {line}")
        print("  plain:")
        for line in _summarise(plan_p, top=2):
            print(f"    {line}")
    for name, _ in QUERIES:
        ratio = med[name, "postgres", "bounded"] / med[name, "postgres", "plain"]
        bl.target_line(ratio <= TARGET_RATIO, f"PostgreSQL bounded ≤ {TARGET_RATIO:g}× plain, {name}: {ratio:.2f}× "
                       f"({bl.ms(med[name, 'postgres', 'bounded'])} vs {bl.ms(med[name, 'postgres', 'plain'])} ms, {args.rows:,} rows)")
    for s in sessions.values():
        s.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
