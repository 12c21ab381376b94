"""Write the private tables into the Spark catalog bucketed (and sorted) by the privacy unit.

    python spark_tables.py --remote sc://spark-connect.internal:15002 --parquet /data/hospital [--buckets 64]

dpsql's bounded SQL first aggregates per (privacy unit, group) and ranks each unit's groups
(``PARTITION BY unit``); on a table bucketed by the unit both run inside each bucket, without a
shuffle of the private rows — only the per-group partials (one row per unit and group) move.
Public tables are written as they are. Use as many buckets as the cluster has cores for the
largest table, or a multiple of it; ``bench/bench_bucketing.py`` measures the effect.
"""

from __future__ import annotations

import argparse

PRIVATE = {"visits": "patient_id", "patients": "patient_id"}  # table → privacy unit
PUBLIC = ("departments",)


def main() -> None:
    """Read ``<parquet>/<table>.parquet`` and save each table into the ``default`` database."""
    from pyspark.sql import SparkSession

    ap = argparse.ArgumentParser()
    ap.add_argument("--remote", help="Spark Connect URL (default: a local session)")
    ap.add_argument("--parquet", required=True, help="directory holding <table>.parquet")
    ap.add_argument("--buckets", type=int, default=64)
    args = ap.parse_args()
    builder = SparkSession.builder.remote(args.remote) if args.remote else SparkSession.builder.master("local[*]")
    spark = builder.getOrCreate()
    for table, unit in PRIVATE.items():
        df = spark.read.parquet(f"{args.parquet}/{table}.parquet")
        (df.write.mode("overwrite").bucketBy(args.buckets, unit).sortBy(unit)
           .saveAsTable(f"default.{table}"))  # fmt: skip
    for table in PUBLIC:
        spark.read.parquet(f"{args.parquet}/{table}.parquet").write.mode("overwrite").saveAsTable(f"default.{table}")
    spark.stop()


if __name__ == "__main__":
    main()
