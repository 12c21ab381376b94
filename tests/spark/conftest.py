"""Spark test fixtures: one throwaway Spark Connect server per test session (``sparkserver``), on
loopback, holding the hospital data as catalog tables over Parquet files written from the same
DuckDB file the DuckDB backend serves.

Without Java, pyspark's Spark (the server) or ``pyspark-client`` (the client, ``dpsql[spark]``) the
tests skip, unless ``CI`` is set: then they fail, since ``.ci/run`` installs all three. Set
``DPSQL_SPARK_PORT`` to pin the server's port (otherwise a free one is taken).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import sparkserver  # noqa: E402
from sparkenv import SparkEnv  # noqa: E402

from dpsql.examples.hospital import generate  # noqa: E402

PATIENTS, VISITS = 800, 3200
TABLES = ("visits", "patients", "departments")


def _require_spark() -> Path:
    problem = None
    home = sparkserver.find_spark_home()
    if sparkserver.find_java() is None:
        problem = "no java found (install default-jdk-headless)"
    elif home is None:
        problem = ("pyspark's Spark was not found (set DPSQL_SPARK_PYTHON to a venv with pyspark, or create "
                   f"{sparkserver.CACHED_VENV} as .ci/run does)")
    else:
        try:
            import pyspark.sql.connect  # noqa: F401
        except ImportError:
            problem = "the Spark Connect client is not installed (pip install 'dpsql[spark]')"
    if problem is None:
        assert home is not None
        return home
    if os.environ.get("CI"):
        pytest.fail(f"{problem}; CI is set, so this is an error: .ci/run installs Java and pyspark")
    pytest.skip(f"{problem}; the Spark tests need it")


def export_parquet(duckdb_file: Path, out: Path, tables: tuple[str, ...]) -> None:
    """Write each table of ``duckdb_file`` to ``out/<table>.parquet`` (the same rows, for Spark)."""
    con = duckdb.connect(str(duckdb_file), read_only=True)
    try:
        for t in tables:
            target = str(out / f"{t}.parquet").replace("'", "''")
            con.execute(f"COPY main.{t} TO '{target}' (FORMAT parquet)")
    finally:
        con.close()


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkEnv]:
    """A started Spark Connect server with the hospital data as catalog tables (stopped at the end)."""
    home = _require_spark()
    hospital = tmp_path_factory.mktemp("spark-hospital")
    generate(hospital, patients=PATIENTS, visits=VISITS)
    export_parquet(hospital / "hospital.duckdb", hospital, TABLES)
    port = int(os.environ["DPSQL_SPARK_PORT"]) if os.environ.get("DPSQL_SPARK_PORT") else None
    server = sparkserver.start_server(home, port=port, ui=True)  # the UI: test_cancel reads the running tasks
    try:
        env = SparkEnv(server, hospital)
        with env.client() as s:
            for t in TABLES:
                s.sql(f"CREATE TABLE {t} USING parquet LOCATION '{hospital / (t + '.parquet')}'")
        yield env
    finally:
        server.stop()
