"""Does bucketing the private table by the privacy unit help dpsql's bounded SQL on Spark?

    .venv/bin/python bench/bench_bucketing.py [--visits 1000000] [--buckets 8] [--repeat 3]

(needs pyspark and Java 17; not part of ``bench/run``). Writes the synthetic hospital visits
twice into a local Spark warehouse — as a plain table and bucketed (``bucketBy(N, patient_id)``,
sorted by it) — and runs dpsql's bounded SQL of four query shapes on both, in local mode. The
bounded SQL groups by (unit, key), ranks each unit's groups (``PARTITION BY unit``) and then
groups by key; on a table bucketed by the unit the first two need no shuffle. Prints, per
query and table: the median wall time of ``collect()`` over ``--repeat`` runs after one warm-up,
and the number of shuffle exchanges in the executed plan.

The Spark SQL here is dpsql's PostgreSQL-dialect bounded SQL transpiled by sqlglot: fine for
measuring plan shapes and time on these shapes (none has a TRY, a cast or a LIKE), **not** for
releasing answers (issue 13 lists why; the rewriter's own Spark dialect is for that).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import sqlglot

from dpsql.api import rewrite
from dpsql.examples.hospital import generate

_SHUFFLE = re.compile(r"(?<!Broadcast)Exchange (?:hashpartitioning|SinglePartition|rangepartitioning)")
QUERIES = {
    "count": "SELECT COUNT(*) FROM visits",
    "count_by_department": "SELECT department, COUNT(*) FROM visits GROUP BY department",
    "sum_avg_by_department": "SELECT department, SUM(length_of_stay), AVG(cost) FROM visits GROUP BY department",
    "count_by_diagnosis": "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis",
}


def main() -> None:
    """Run the measurement and print one line per query and table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--visits", type=int, default=1_000_000)
    ap.add_argument("--buckets", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from pyspark.sql import SparkSession

    work = Path(tempfile.mkdtemp(prefix="dpsql-bucketing-"))
    policy = generate(work / "data", patients=max(1, args.visits // 5), visits=args.visits, fmt="parquet")
    started = time.perf_counter()
    spark = (
        SparkSession.builder.master("local[2]").appName("dpsql-bucketing")
        .config("spark.sql.warehouse.dir", str(work / "warehouse"))
        .config("spark.sql.shuffle.partitions", str(args.buckets))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )  # fmt: skip
    spark.sparkContext.setLogLevel("ERROR")
    print(f"spark {spark.version} local[2] started in {time.perf_counter() - started:.1f} s; {args.visits:,} visits, "
          f"{args.buckets} buckets, median of {args.repeat}")
    visits = spark.read.parquet(str(work / "data" / "visits.parquet"))
    t = time.perf_counter()
    visits.write.saveAsTable("plain_visits")
    plain_s = time.perf_counter() - t
    t = time.perf_counter()
    # one file per bucket: repartition by the unit first (else every write task writes a file per bucket)
    (visits.repartition(args.buckets, "patient_id").write.bucketBy(args.buckets, "patient_id").sortBy("patient_id")
     .saveAsTable("bucketed_visits"))  # fmt: skip
    bucketed_s = time.perf_counter() - t
    print(f"write: plain {plain_s:.1f} s, bucketed {bucketed_s:.1f} s")

    print(f"{'query':24} {'table':9} {'median s':>9} {'exchanges':>9}")
    for name, sql in QUERIES.items():
        bounded = rewrite(sql, policy, dialect="postgres").sql
        spark_sql = sqlglot.transpile(bounded, read="postgres", write="spark")[0]
        texts = {table: spark_sql.replace("`public`.`visits`", f"`{table}_visits`") for table in ("plain", "bucketed")}
        runs: dict[str, list[float]] = {table: [] for table in texts}
        exchanges: dict[str, int] = {}
        for table, text in texts.items():
            df = spark.sql(text)
            df.collect()  # warm-up
            exchanges[table] = len(_SHUFFLE.findall(df._jdf.queryExecution().executedPlan().toString()))
        for _ in range(args.repeat):  # interleaved, so that load from elsewhere hits both alike
            for table, text in texts.items():
                t = time.perf_counter()
                spark.sql(text).collect()
                runs[table].append(time.perf_counter() - t)
        times = {table: statistics.median(r) for table, r in runs.items()}
        for table in texts:
            print(f"{name:24} {table:9} {times[table]:9.2f} {exchanges[table]:9d}")
        print(f"{name:24} {'ratio':9} {times['plain'] / times['bucketed']:9.2f}x")
    spark.stop()


if __name__ == "__main__":
    main()
