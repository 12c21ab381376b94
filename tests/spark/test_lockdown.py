"""The Spark lock-down fails closed: settings dpsql depends on are checked at start-up (refused,
naming the setting), UDFs shadowing emitted functions and catalog views are refused, and every
statement is verified against the Spark allowlist before it is sent — no ``reflect``,
``java_method``, UDF or file relation can reach the engine. Also: the policy's ``[source] spark``
keys, ``dpsql check`` on a Spark policy, and dpsql without pyspark installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sparkenv import SparkEnv, write_policy

from dpsql.errors import PolicyError
from dpsql.policy import load_policy, policy_from_dict
from dpsql.proxy.backends.spark import SparkBackend
from dpsql.proxy.backends.spark_setup import lock_down
from dpsql.rewriter.emit import RewriteInvariantError
from dpsql.rewriter.spark import verify

pytestmark = pytest.mark.spark

VIEWS = {"dpsql_6_public_visits"}


@pytest.mark.parametrize("sql", [
    "SELECT reflect('java.lang.System', 'getProperty', 'user.name')",
    "SELECT java_method('java.lang.Runtime', 'getRuntime') FROM dpsql_6_public_visits",
    "SELECT * FROM text.`/etc/hostname`",
    "SELECT * FROM parquet.`/tmp/x.parquet`",
    "SELECT COUNT(*) FROM default.visits",
    "SELECT COUNT(*) FROM visits",
    "SELECT my_udf(age) FROM dpsql_6_public_visits",
    "SELECT CEIL(cost) FROM dpsql_6_public_visits",  # FLOOR is emitted (quantile bins); CEIL never is
    "SELECT input_file_name() FROM dpsql_6_public_visits",
    "SELECT COUNT(*) FROM dpsql_6_public_visits; SELECT 1",
    "CREATE TABLE x AS SELECT 1",
])
def test_verify_refuses_what_dpsql_does_not_emit(sql: str) -> None:
    with pytest.raises(RewriteInvariantError) as e:
        verify(sql, VIEWS)
    assert e.value.sqlstate == "XX000"


def test_verify_accepts_the_bounded_sql(spark: SparkEnv, tmp_path: Path) -> None:
    """The SQL the Spark dialect emits passes; a statement that does not is refused by the
    backend before anything is sent (the session stays usable)."""
    policy = load_policy(write_policy(tmp_path, "verify", spark, "spark"))
    with SparkBackend(policy) as backend, backend.session() as s:
        from dpsql.proxy.engine import Engine

        engine = Engine(policy, backend)
        rw = engine.rewrite("SELECT diagnosis, COUNT(*), AVG(cost) FROM visits WHERE diagnosis LIKE 'I%' GROUP BY diagnosis")
        assert verify(rw.sql, backend.views) == rw.sql
        with pytest.raises(RewriteInvariantError):
            s.execute("SELECT reflect('java.lang.System', 'exit', '1')")
        with pytest.raises(RewriteInvariantError):
            s.execute("SELECT * FROM text.`/etc/hostname`")
        assert s.execute("SELECT COUNT(*) AS n FROM dpsql_6_public_visits").rows[0][0] > 0


def test_the_server_reads_no_files(spark: SparkEnv) -> None:
    """The test server runs with spark.sql.runSQLOnFiles=false, as the README asks."""
    with spark.client() as s:
        with pytest.raises(Exception) as e:
            s.sql("SELECT * FROM text.`/etc/hostname`").collect()
        assert "hostname" not in str(e.value).split("\n")[0] or "TABLE_OR_VIEW_NOT_FOUND" in str(e.value)


@pytest.mark.parametrize("setting", ["spark.sql.runSQLOnFiles", "spark.sql.parser.escapedStringLiterals"])
def test_start_up_refuses_a_wrong_setting_naming_it(spark: SparkEnv, tmp_path: Path, setting: str) -> None:
    policy = load_policy(write_policy(tmp_path, "wrong", spark, "spark"))
    with spark.client() as s:
        s.conf.set(setting, "true")
        with pytest.raises(PolicyError) as e:
            lock_down(s, policy)
    assert setting in e.value.message and e.value.sqlstate == "F0000"


def test_start_up_refuses_a_udf_shadowing_an_emitted_function(spark: SparkEnv, tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, "udf", spark, "spark"))
    with spark.client() as s:
        from pyspark.sql.types import StringType

        s.udf.register("md5", lambda v: "0" * 32, StringType())
        with pytest.raises(PolicyError) as e:
            lock_down(s, policy)
    assert "'md5'" in e.value.message


@pytest.mark.parametrize("ansi", [True, False])
def test_start_up_pins_ansi_mode_and_utc(spark: SparkEnv, tmp_path: Path, ansi: bool) -> None:
    policy = load_policy(write_policy(tmp_path, "pin", spark, "spark", ansi=ansi))
    with SparkBackend(policy) as backend:
        conf = backend._spark.conf
        assert conf.get("spark.sql.ansi.enabled") == ("true" if ansi else "false")
        assert conf.get("spark.sql.session.timeZone") == "UTC"
        assert backend.unique_columns() == {}


def test_a_catalog_view_is_refused(spark: SparkEnv, tmp_path: Path) -> None:
    """A view's definition could call reflect() or read files: only tables are served."""
    with spark.client() as s:
        s.sql("CREATE OR REPLACE VIEW sneaky AS SELECT reflect('java.lang.System', 'getProperty', 'user.name') AS name")
    extra = '[tables.sneaky]\npublic = true\nspark_table = "default.sneaky"\n'
    policy = load_policy(write_policy(tmp_path, "view", spark, "spark", extra=extra))
    with pytest.raises(PolicyError) as e:
        SparkBackend(policy)
    assert e.value.key == "tables.sneaky" and "VIEW" in e.value.message  # type: ignore[attr-defined]


def test_a_missing_parquet_path_names_the_table(spark: SparkEnv, tmp_path: Path) -> None:
    extra = f'[tables.gone]\npublic = true\nspark_path = "{tmp_path / "nope.parquet"}"\n'
    policy = load_policy(write_policy(tmp_path, "gone", spark, "spark", extra=extra))
    with pytest.raises(PolicyError) as e:
        SparkBackend(policy)
    assert e.value.key == "tables.gone"  # type: ignore[attr-defined]


def test_dpsql_check_validates_a_spark_policy(spark: SparkEnv, tmp_path: Path) -> None:
    path = write_policy(tmp_path, "check", spark, "spark")
    dpsql = Path(sys.executable).with_name("dpsql")
    out = subprocess.run([str(dpsql), "check", "--policy", str(path)], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "public.visits (private, unit patient_id)" in out.stdout and "Traceback" not in out.stderr
    bad = write_policy(tmp_path, "checkbad", spark, "spark", extra=f'[tables.gone]\npublic = true\nspark_path = "{tmp_path}/x.parquet"\n')
    out = subprocess.run([str(dpsql), "check", "--policy", str(bad)], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode != 0 and "tables.gone" in out.stderr and "Traceback" not in out.stderr


_BASE = {"server": {"auth": "trust"}, "privacy": {"accounting": "zcdp"}, "budget": {"epsilon": 1.0, "delta": 1e-6},
         "users": {"alice": {}}}


@pytest.mark.parametrize(("source", "tables", "key"), [
    ({"spark": "http://host:15002"}, {}, "source.spark"),
    ({"spark": "sc://h:1", "duckdb": "x.duckdb"}, {}, "source.spark"),
    ({"duckdb": "x.duckdb", "spark_ansi": False}, {}, "source.spark_ansi"),
    ({"duckdb": "x.duckdb"}, {"t": {"public": True, "spark_table": "db.t"}}, "tables.t.spark_table"),
    ({"spark": "sc://h:1"}, {"t": {"public": True, "spark_table": "db.t", "spark_path": "/x"}}, "tables.t.file"),
    ({"spark": "sc://h:1"}, {"t": {"public": True, "file": "t.csv"}}, "tables.t.file"),
    ({"spark": "sc://h:1"}, {"t": {"public": True, "spark_table": "a.b.c.d"}}, "tables.t.spark_table"),
])
def test_policy_spark_keys_are_validated(source: dict[str, object], tables: dict[str, object], key: str) -> None:
    with pytest.raises(PolicyError) as e:
        policy_from_dict({**_BASE, "source": source, "tables": tables}, "/nonexistent/p.toml")
    assert e.value.key == key  # type: ignore[attr-defined]


def test_policy_accepts_spark_sources() -> None:
    p = policy_from_dict({**_BASE, "source": {"spark": "sc://spark.internal:15002/;use_ssl=true;token=abc", "spark_ansi": False},
                          "tables": {"a": {"public": True, "spark_table": "lake.sales.a"}, "b": {"public": True, "spark_path": "s3a://x/b/"},
                                     "c": {"public": True, "file": "c.parquet"}}}, "/srv/p.toml")
    assert p.source.spark is not None and p.source.spark_ansi is False
    assert p.tables["public.a"].spark_table == "lake.sales.a" and p.tables["public.b"].spark_path == "s3a://x/b/"
    assert str(p.tables["public.c"].file) == "/srv/c.parquet"


def test_dpsql_works_without_pyspark(tmp_path: Path) -> None:
    """pyspark is an optional extra: without it dpsql imports, rewrites for Spark, and the Spark
    backend refuses to start with a clear error naming the extra."""
    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "import dpsql, dpsql.api, dpsql.proxy.engine, dpsql.proxy.backends.spark\n"
        "from dpsql.policy import policy_from_dict\n"
        "from dpsql.errors import PolicyError\n"
        "p = policy_from_dict({'server': {'auth': 'trust'}, 'privacy': {'accounting': 'zcdp'}, 'budget': {'epsilon': 1.0, "
        "'delta': 1e-6}, 'users': {'alice': {}}, 'source': {'spark': 'sc://127.0.0.1:1'}, 'tables': {'t': {'public': True}}}, 'p.toml')\n"
        "try:\n    dpsql.api.open_backend(p)\nexcept PolicyError as e:\n    print('REFUSED', e.message)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    assert "REFUSED" in out.stdout and "dpsql[spark]" in out.stdout
