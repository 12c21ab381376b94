"""T7 on Spark, a slice of ``tests/replay/test_error_channel.py``: the bounded SQL of generated
queries (the clean grammar: division, modulo, casts, int64-edge arithmetic, string and date
functions) and of hand-picked risky expressions runs on the replay database with the *poison*
unit (0, 'abc', NaN, ±inf, 2^63−1, −2^63, extreme dates …) under ANSI mode on and off: it must
never fail (the charge is taken before it runs, so any failure would be a data-dependent error),
and both modes must give identical results (no silent wrap or NULL where the other raises).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from sparkenv import SparkEnv

_REPLAY = str(Path(__file__).parent.parent / "replay")
if _REPLAY not in sys.path:
    sys.path.insert(0, _REPLAY)

import replay_lib as R  # noqa: E402


def _load_replay_grammar() -> Any:
    """The replay suite's query grammar, loaded by path under its own name (this module shares its file name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("replay_test_error_channel", Path(_REPLAY) / "test_error_channel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ec = _load_replay_grammar()

from dpsql.errors import DPSQLError  # noqa: E402
from dpsql.policy import Policy, policy_from_dict  # noqa: E402
from dpsql.proxy.backends.spark import SparkBackend  # noqa: E402
from dpsql.rewriter import rewrite  # noqa: E402
from dpsql.schema import Catalog, build_catalog  # noqa: E402

pytestmark = pytest.mark.spark

GENERATED = 30
HAND_PICKED = [
    # concat() of non-text columns: sqlglot's CONCAT(COALESCE(a, ''), …) cast '' to INT under ANSI when a is NULL
    "SELECT CAST(concat(h, a) AS INT) AS k1, g, SUM(a) FROM t WHERE ((d >= d) OR (NOT FALSE)) GROUP BY 1, 2",
    "SELECT COUNT(concat(a, x, d, k)) FROM t",
    "SELECT SUM(LEAST(GREATEST(a * 9223372036854775807, -5), 5)) FROM t",
    "SELECT COUNT(*) FROM t WHERE a / 0 > 1 OR k % 0 = 1 OR x / 0.0 > 1",
    "SELECT SUM(LEAST(GREATEST(CAST(x AS BIGINT), -5), 5)), COUNT(CAST(x * 1e300 AS BIGINT)) FROM t",
    "SELECT COUNT(CAST(h AS INT)), COUNT(CAST(g AS DATE)), COUNT(CAST(h AS DOUBLE)) FROM t",
    "SELECT SUM(LEAST(GREATEST(abs(a) + abs(k), 0), 5)) FROM t WHERE (- a) < 0",
    "SELECT COUNT(*) FROM t WHERE (d + 2147483647) > DATE '2000-01-01' OR (d - k) < DATE '1990-01-01'",
    "SELECT COUNT(*) FILTER (WHERE (d - DATE '1970-01-01') > 10), SUM(LEAST(GREATEST(sqrt(x) + ln(x) + exp(x), 0), 9)) FROM t",
    "SELECT date_trunc('month', d) AS m, COUNT(*) FROM t GROUP BY 1",
    "SELECT COUNT(CAST(x AS DECIMAL(6, 2))), COUNT(CAST(x * 1e10 AS DECIMAL(6, 2))), COUNT(power(x, 3)) FROM t",
    "SELECT COUNT(*) FROM t WHERE h LIKE '%\\%' OR h LIKE 'a\\_b%' OR h ILIKE 'H%' OR substring(h, 2, 3) = 'bc'",
    "SELECT (a / 3) AS q, COUNT(*) FROM t GROUP BY 1",
    "SELECT ROUND(x) AS r, AVG(LEAST(GREATEST(CAST(k AS SMALLINT), 0), 10)) FROM t GROUP BY 1",
    "SELECT g, VAR_POP(LEAST(GREATEST(x * y, -1), 1)), COUNT(DISTINCT uid) FROM t GROUP BY g",
    "SELECT p.name, SUM(CASE WHEN t.a > 2 THEN t.x ELSE 0 END) FROM t JOIN p ON t.k = p.k GROUP BY p.name",
]


def _policy(db_dir: Path, url: str, ansi: bool) -> Policy:
    tables = {name: {**spec, "file": str(db_dir / f"{name}.parquet")} for name, spec in R.POLICY["tables"].items()}
    source: dict[str, Any] = {"spark": url, "spark_ansi": ansi}
    limits = {"statement_timeout": "300s"}  # a cold local-mode server on a busy machine can be slow
    return policy_from_dict({**R.POLICY, "source": source, "tables": tables, "limits": limits}, db_dir / "policy.toml")


@pytest.fixture(scope="module")
def backends(spark: SparkEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SparkBackend]]:
    """The poison database as Parquet, served by one Spark backend with ANSI on and one with it off."""
    db_dir = tmp_path_factory.mktemp("spark-poison")
    con = R.connect_db(R.poison_databases()["poison"])
    try:
        for t in ("t", "e", "p"):
            con.execute(f"COPY main.{t} TO '{db_dir / (t + '.parquet')}' (FORMAT parquet)")
    finally:
        con.close()
    out: dict[str, SparkBackend] = {}
    try:
        for name, ansi in (("ansi", True), ("noansi", False)):
            out[name] = SparkBackend(_policy(db_dir, spark.url, ansi))
        yield out
    finally:
        for b in out.values():
            b.close()


def _catalog(backend: SparkBackend) -> Catalog:
    return build_catalog(R.policy(), backend.describe())


def _norm(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return v


def _run(backends: dict[str, SparkBackend], sql: str) -> str:
    """"refused" (before any charge) or "ran"; asserts no execution failure and ANSI on == off."""
    catalog = _catalog(backends["ansi"])
    try:
        rw = rewrite(sql, catalog, dialect="spark")
    except DPSQLError:
        return "refused"
    if rw.plan is None:
        return "refused"
    results = {}
    for name, b in backends.items():
        try:
            b.validate(rw.sql)  # what the engine does before the charge
            if rw.plan.constants_sql is not None:
                with b.session() as s:
                    s.execute(rw.plan.constants_sql)
        except DPSQLError:
            return "refused"
        with b.session() as s:
            try:
                rs = s.execute(rw.sql)
            except DPSQLError as e:
                pytest.fail(f"bounded SQL failed on Spark ({name}: {e.sqlstate}): {sql}\n{rw.sql}")
        results[name] = (rs.columns, sorted((tuple(_norm(v) for v in r) for r in rs.rows), key=repr))
    assert results["ansi"] == results["noansi"], sql
    return "ran"


def test_the_poison_unit_reaches_spark(backends: dict[str, SparkBackend]) -> None:
    """The special values survive the trip through Parquet (else the slice says little)."""
    con = R.connect_db(R.poison_databases()["poison"])
    try:
        assert con.execute("SELECT count(*) FILTER (isnan(x)) FROM main.t").fetchone()[0] >= 1  # type: ignore[index]
    finally:
        con.close()
    cat = _catalog(backends["ansi"])
    rw = rewrite("SELECT COUNT(*) FROM t WHERE x > 1e300 OR a = 9223372036854775807 OR h = 'abc'", cat, dialect="spark")
    with backends["ansi"].session() as s:
        assert int(s.execute(rw.sql).rows[0][0]) >= 1


@pytest.mark.parametrize("sql", HAND_PICKED)
def test_risky_expressions_never_fail_and_ansi_does_not_matter(backends: dict[str, SparkBackend], sql: str) -> None:
    assert _run(backends, sql) == "ran"


def test_generated_queries_never_fail_and_ansi_does_not_matter(backends: dict[str, SparkBackend]) -> None:
    ran: list[str] = []

    @settings(max_examples=GENERATED, deadline=None, derandomize=True, database=None, phases=(Phase.generate,),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(ec.queries(False))
    def one(sql: str) -> None:
        if _run(backends, sql) == "ran":
            ran.append(sql)

    one()
    assert len(ran) >= GENERATED // 3, ran
