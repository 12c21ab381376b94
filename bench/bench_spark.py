"""Benchmark — dpsql's bounded SQL on Apache Spark (Spark Connect), against plain SQL and DuckDB.

On the hospital data scaled to ``--rows`` visits (``rows // 10`` patients), written once as a DuckDB
file and as Parquet (the same rows; Spark reads the Parquet files as catalog tables), for each query:
the analyst's plain SQL and dpsql's bounded SQL on Spark and on DuckDB, alternating, after one
warm-up of each, median of ``--repeat`` runs. Printed in one run: bounded/plain on Spark,
bounded/plain on DuckDB, and Spark/DuckDB for the bounded SQL.

Where the time goes on Spark: the JVM/server start, the Spark Connect session (and dpsql's
lock-down checks and views), the fixed cost of one job (``SELECT 1`` — planning, scheduling,
collecting one row over gRPC), the analysis alone (``DataFrame.schema``), and per query the job;
a shuffle-free COUNT(*) against the grouped queries shows what the shuffles (per-unit GROUP BY,
window, final GROUP BY) cost.

A Spark Connect server is started from pyspark's own Spark (see ``tests/spark/sparkserver.py``:
``DPSQL_SPARK_PYTHON`` or ``~/.cache/dpsql-spark-venv``) in local mode with ``--cores`` cores,
unless ``--url sc://…`` names a running one (which must then read the Parquet paths itself).

Run: ``.venv/bin/python bench/bench_spark.py [--rows 1000000] [--repeat 3] [--cores 2]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT / "tests" / "spark"))

import sparkserver  # noqa: E402

from dpsql.examples.hospital import scale  # noqa: E402
from dpsql.policy import load_policy  # noqa: E402
from dpsql.proxy.backends.duckdb import DuckDBBackend  # noqa: E402
from dpsql.proxy.backends.spark import SparkBackend  # noqa: E402
from dpsql.proxy.engine import Engine  # noqa: E402
from dpsql.rewriter.plan import Rewrite  # noqa: E402

QUERIES: tuple[tuple[str, str], ...] = (
    ("COUNT(*)", "SELECT COUNT(*) AS n FROM visits"),
    ("COUNT by department", "SELECT department, COUNT(*) AS n FROM visits GROUP BY department"),
    ("SUM+AVG by department", "SELECT department, SUM(cost) AS total, AVG(length_of_stay) AS stay FROM visits GROUP BY department"),
    ("COUNT by diagnosis (selection)", "SELECT diagnosis, COUNT(*) AS n FROM visits GROUP BY diagnosis"),
    ("VAR_POP by sex", "SELECT sex, VAR_POP(cost) AS v FROM visits GROUP BY sex"),
    ("date_trunc key + date WHERE",
     "SELECT date_trunc('month', visit_date) AS m, COUNT(*) AS n FROM visits WHERE visit_date >= DATE '2023-01-01' GROUP BY 1"),
    ("MEDIAN by department (histogram)", "SELECT department, MEDIAN(cost) AS m FROM visits GROUP BY department"),
)

TABLES = ("visits", "patients", "departments")


def _policy(out: Path, source: str, name: str) -> Path:
    """The demo policy with ``source`` as its [source] (the bench runs the bounded SQL directly: nothing is charged)."""
    text = (out / "policy.toml").read_text()
    assert 'duckdb = "hospital.duckdb"' in text
    path = out / f"bench-{name}.toml"
    path.write_text(text.replace('duckdb = "hospital.duckdb"', source))
    return path


def _bounded_sql(rw: Rewrite) -> list[str]:
    """The statements dpsql runs for ``rw``: the bounded SQL (unless a quantile-only query's is a
    placeholder) and each histogram query."""
    hist = [h.sql for h in rw.plan.histograms] if rw.plan is not None else []
    main = [] if hist and rw.plan is not None and not rw.plan.stats else [rw.sql]
    return main + hist


def _median(f: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--memory", default="2g")
    ap.add_argument("--url", help="a running Spark Connect server (default: start one)")
    ap.add_argument("--port", type=int, help="port of the server it starts (default: a free one)")
    ap.add_argument("--dir", type=Path, help="data directory (default: a temporary one)")
    args = ap.parse_args()

    out = args.dir or Path(tempfile.mkdtemp(prefix="dpsql-bench-spark-"))
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if not (out / "hospital.duckdb").exists():
        scale(out, args.rows)
    con = duckdb.connect(str(out / "hospital.duckdb"), read_only=True)
    for table in TABLES:
        if not (out / f"{table}.parquet").exists():
            con.execute(f"COPY main.{table} TO '{out / (table + '.parquet')}' (FORMAT parquet)")
    rows = con.execute("SELECT COUNT(*) FROM main.visits").fetchone()[0]  # type: ignore[index]
    con.close()
    print(f"data: {rows:,} visits in {out} ({time.perf_counter() - t:.1f} s to write)")

    server = None
    if args.url:
        url = args.url
    else:
        home = sparkserver.find_spark_home()
        if home is None:
            print("no pyspark Spark found (set DPSQL_SPARK_PYTHON); see tests/spark/sparkserver.py", file=sys.stderr)
            return 2
        t = time.perf_counter()
        server = sparkserver.start_server(home, port=args.port, cores=args.cores, memory=args.memory,
                                          shuffle_partitions=2 * args.cores)
        url = server.url
        print(f"JVM + Spark Connect server start: {time.perf_counter() - t:.1f} s (local[{args.cores}], {args.memory})")
    try:
        return _run(args, out, url)
    finally:
        if server is not None:
            server.stop()


def _run(args: argparse.Namespace, out: Path, url: str) -> int:
    from pyspark.sql import SparkSession

    setup = SparkSession.builder.remote(url).create()
    for table in TABLES:
        setup.sql(f"CREATE TABLE IF NOT EXISTS {table} USING parquet LOCATION '{out / (table + '.parquet')}'")
    setup.stop()

    t = time.perf_counter()
    spark_policy = load_policy(_policy(out, f'spark = "{url}"', "spark"))
    spark_engine = Engine(spark_policy, SparkBackend(spark_policy))
    print(f"dpsql SparkBackend start (session, lock-down checks, views, schemas): {time.perf_counter() - t:.1f} s")
    duck_policy = load_policy(_policy(out, f'duckdb = "{out / "hospital.duckdb"}"', "duckdb"))
    duck_engine = Engine(duck_policy, DuckDBBackend(duck_policy))
    spark_backend = spark_engine.backend
    assert isinstance(spark_backend, SparkBackend)
    raw = spark_backend._spark  # the same Spark Connect session, for the plain SQL on the catalog tables
    ss, ds = spark_backend.session(), duck_engine.backend.session()

    one_job = _median(lambda: raw.sql("SELECT 1 AS x").toArrow(), args.repeat + 2)
    print(f"fixed cost of one Spark job (SELECT 1: plan, schedule, collect over gRPC): {one_job * 1000:.0f} ms")
    print()
    header = f"{'query':34} {'spark plain':>11} {'bounded':>9} {'ratio':>6} | {'duckdb plain':>12} {'bounded':>9} {'ratio':>6} | " \
             f"{'spark/duckdb':>12} {'analyse':>8}"
    print(header)
    print("-" * len(header))
    ratios = []
    for label, sql in QUERIES:
        s_rw, d_rw = spark_engine.rewrite(sql), duck_engine.rewrite(sql)
        plain_spark = sql.replace("date_trunc('month', visit_date)", "date_trunc('MONTH', visit_date)")
        # the bounded SQL and, for quantiles, their bounded histogram queries (all of them run per query)
        s_sql, d_sql = _bounded_sql(s_rw), _bounded_sql(d_rw)
        plain_spark = plain_spark.replace("MEDIAN(cost)", "percentile(cost, 0.5)")
        jobs: dict[str, Callable[[], object]] = {
            "sp": lambda q=plain_spark: raw.sql(q).toArrow(),
            "sb": lambda qs=s_sql: [ss.execute(q, timeout=3600.0) for q in qs],
            "dp": lambda q=sql: ds.execute(q.replace("FROM visits", "FROM main.visits"), timeout=3600.0),
            "db": lambda qs=d_sql: [ds.execute(q, timeout=3600.0) for q in qs],
        }
        for f in jobs.values():  # warm-up
            f()
        times: dict[str, list[float]] = {k: [] for k in jobs}
        for _ in range(args.repeat):
            for k, f in jobs.items():  # alternating
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        m = {k: statistics.median(v) for k, v in times.items()}
        analyse = _median(lambda qs=s_sql: [raw.sql(q).schema for q in qs], args.repeat)
        ratios.append((m["sb"] / m["sp"], m["db"] / m["dp"], m["sb"] / m["db"]))
        print(f"{label:34} {m['sp']:10.2f}s {m['sb']:8.2f}s {m['sb'] / m['sp']:5.1f}x | {m['dp']:11.3f}s {m['db']:8.3f}s "
              f"{m['db'] / m['dp']:5.1f}x | {m['sb'] / m['db']:11.1f}x {analyse * 1000:6.0f}ms")
    print()
    geo = [statistics.geometric_mean(r[i] for r in ratios) for i in range(3)]
    print(f"geometric means: bounded/plain on Spark {geo[0]:.2f}x, bounded/plain on DuckDB {geo[1]:.2f}x, "
          f"Spark/DuckDB (bounded) {geo[2]:.1f}x")
    print("where the time goes: the fixed per-job cost above is paid by every query; COUNT(*) has one shuffle less "
          "than the grouped queries (per-unit GROUP BY → ranking window → final GROUP BY); collect is one Arrow batch of "
          "at most a few hundred rows")
    ss.close()
    ds.close()
    spark_engine.close()
    duck_engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
