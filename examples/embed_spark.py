"""Embedding sketch: a Spark session the application owns (Spark Connect).

    python -m dpsql.examples.embed_spark --remote sc://spark.example.org:15002 --policy policy.toml

The shape of an embedding on Spark: the application keeps its SparkSession, dpsql rewrites the
query for the rewriter's ``spark`` dialect, charges the ledger, the application runs the bounded
SQL as one tagged Spark job (cancellable, with a timeout) and hands the collected rows back to
dpsql to release. It needs the rewriter's Spark dialect; until the installed dpsql has one it
stops with a message. Never transpile the DuckDB or PostgreSQL bounded SQL to Spark with sqlglot
instead: that drops ``TRY``, and Spark's ANSI errors, integer sums, casts and ``LIKE`` escapes
differ, so the transpiled SQL is neither total nor exact (issue 13, docs/embedding.md).

The module imports without pyspark; :func:`main` imports it.
"""

from __future__ import annotations

import argparse
import sys
import threading
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dpsql.embed import Pipeline, Runner
from dpsql.policy import Policy, load_policy

#: Spark SQL type (``DataType.simpleString()``) → PostgreSQL type name, for the pipeline's schema
_SPARK_TYPES = {
    "tinyint": "int2", "smallint": "int2", "int": "int4", "bigint": "int8",
    "float": "float4", "double": "float8", "boolean": "bool", "string": "text",
    "date": "date", "timestamp": "timestamptz", "timestamp_ntz": "timestamp",
}  # fmt: skip

#: settings a Spark session must have before it may hold private tables (see README, Spark)
REQUIRED_SETTINGS = {"spark.sql.runSQLOnFiles": "false"}


def pg_type(spark_type: str) -> str:
    """The PostgreSQL type name of a Spark SQL type (decimals → numeric, char/varchar → text)."""
    t = spark_type.strip().lower()
    if t.startswith("decimal"):
        return "numeric"
    if t.startswith(("varchar", "char")):
        return "text"
    return _SPARK_TYPES.get(t, "text")


def spark_table(policy_schema: str, table: str) -> str:
    """The Spark catalog name of a policy table: schema ``public`` is Spark's ``default`` database."""
    return f"{'default' if policy_schema == 'public' else policy_schema}.{table}"


def describe_spark(spark: Any, policy: Policy) -> dict[str, list[tuple[str, str]]]:
    """Columns of every policy table from the Spark catalog; ``.schema`` analyses, runs no job."""
    out: dict[str, list[tuple[str, str]]] = {}
    for qualified, t in policy.tables.items():
        fields = spark.table(spark_table(t.schema, t.table)).schema.fields
        out[qualified] = [(f.name, pg_type(f.dataType.simpleString())) for f in fields]
    return out


def spark_runner(spark: Any, *, timeout: float = 300.0) -> Runner:
    """A runner that runs each statement as one Spark job under its own tag, interrupted by tag
    after ``timeout`` seconds (Spark has no server-side statement timeout), rows collected."""

    def run(sql: str) -> tuple[Sequence[str], Iterable[Sequence[Any]]]:
        tag = f"dpsql-{uuid.uuid4().hex}"
        spark.addTag(tag)
        timer = threading.Timer(timeout, spark.interruptTag, args=(tag,))
        timer.start()
        try:
            df = spark.sql(sql)
            return list(df.columns), [tuple(r) for r in df.collect()]
        finally:
            timer.cancel()
            spark.removeTag(tag)

    return run


def check_session(spark: Any) -> None:
    """Refuse a session whose settings would let SQL read files (fail closed, naming the setting)."""
    for key, want in REQUIRED_SETTINGS.items():
        got = str(spark.conf.get(key, None)).lower()
        if got != want:
            raise SystemExit(f"the Spark session has {key}={got}; set it to {want} on the Spark Connect server")


def main(argv: Sequence[str] | None = None) -> int:
    """Answer one query on the Spark cluster through the embedding pipeline."""
    from dpsql.rewriter import DIALECTS

    ap = argparse.ArgumentParser(prog="python -m dpsql.examples.embed_spark", description=__doc__.splitlines()[0])
    ap.add_argument("--remote", required=True, help="Spark Connect URL, sc://host:port")
    ap.add_argument("--policy", required=True, type=Path, help="the policy file (its ledger is charged)")
    ap.add_argument("--user", default="alice")
    ap.add_argument("--epsilon", default="0.5")
    ap.add_argument("sql", nargs="?", default="SELECT department, COUNT(*), AVG(cost) FROM visits GROUP BY department")
    args = ap.parse_args(argv)
    if "spark" not in DIALECTS:
        print("this dpsql has no Spark dialect in its rewriter yet; a transpiled DuckDB/PostgreSQL bounded SQL is not safe "
              "on Spark, so this example stops here", file=sys.stderr)
        return 2

    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(args.remote).getOrCreate()
    try:
        check_session(spark)
        policy = load_policy(args.policy)
        with Pipeline(policy, dialect="spark", schema=describe_spark(spark, policy)) as pipe:
            session = pipe.session(args.user)
            answer = session.execute(args.sql, spark_runner(spark), epsilon=args.epsilon)
        print(" | ".join(answer.columns))
        for row in answer.rows:
            print(" | ".join(str(v) for v in row))
        for notice in answer.notices:
            print(f"NOTICE: {notice}")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
