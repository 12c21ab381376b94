"""The embedding pipeline on Spark, through the application's own Spark Connect session and the
code of ``examples/embed_spark.py`` (lock-down check, session views, tagged jobs): the same
answers and charges as the server's engine on the Spark backend, for parity shapes (zero noise
in both paths, see tests/embed/embedlib.py). Deterministic."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sparkenv import SparkEnv, write_policy

from dpsql.embed import Pipeline
from dpsql.examples.embed_spark import check_session, describe_spark, spark_runner
from dpsql.policy import load_policy
from dpsql.proxy.backends.spark import SparkBackend
from dpsql.proxy.engine import Engine
from dpsql.proxy.timing import TimingShield

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "embed"))
from embedlib import parity_queries, zero_noise

pytestmark = pytest.mark.spark
SHAPES = ("count", "declared_keys_avg", "partition_selection", "public_join_sum", "having_order_limit", "date_trunc_key",
          "variance_distinct_units", "strings_and_dates")
QUERIES = parity_queries()


@pytest.fixture(scope="module")
def both(spark: SparkEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Pipeline, Any]]:
    tmp = tmp_path_factory.mktemp("spark-embed")
    engine_policy = load_policy(write_policy(tmp, "engine", spark, "spark", epsilon=1e6, delta=1e-3))
    embed_policy = load_policy(write_policy(tmp, "embed", spark, "spark", epsilon=1e6, delta=1e-3))
    engine = Engine(engine_policy, SparkBackend(engine_policy), shield=TimingShield(enabled=False))
    with spark.client() as session:
        check_session(session, embed_policy)
        pipe = Pipeline(embed_policy, dialect="spark", schema=describe_spark(session, embed_policy), shield=TimingShield(enabled=False))
        try:
            yield engine, pipe, spark_runner(session, timeout=600)
        finally:
            pipe.close()
            engine.close()


@pytest.mark.parametrize("name", SHAPES)
def test_same_answer_and_charge_as_the_engine(both: tuple[Engine, Pipeline, Any], name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, pipe, run = both
    zero_noise(monkeypatch)
    sql = QUERIES[name]
    es, ps = engine.session("alice"), pipe.session("alice")
    _, noise = es.plan(sql)
    prepared = ps.prepare(sql)
    assert prepared.noise == noise and prepared.sql == engine.rewrite(sql).sql
    expected = es.execute(sql)
    got = ps.execute(sql, run)
    assert (got.columns, got.types) == (expected.columns, expected.types)
    assert got.rows == expected.rows
    assert got.cost == expected.cost
