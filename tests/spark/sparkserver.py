"""A throwaway Spark Connect server for tests and benchmarks: pyspark's own Spark (its jars and
``bin/spark-submit``) running ``SparkConnectServer`` in local mode on a loopback port, in a
temporary directory (warehouse, metastore, logs), stopped and removed at the end.

Where Spark comes from, first match:

* ``DPSQL_SPARK_HOME``: a Spark distribution or pyspark package directory (holding ``bin/spark-submit``);
* ``DPSQL_SPARK_PYTHON``: the Python of a venv with the full ``pyspark`` package (``.ci/run`` keeps one
  cached outside the checkout, at ``~/.cache/dpsql-spark-venv``);
* ``~/.cache/dpsql-spark-venv/bin/python`` if it exists;
* the running interpreter, if it has the full pyspark (not just ``pyspark-client``).

The client side (the dpsql process) needs only ``pyspark-client`` (``pip install 'dpsql[spark]'``).
The server is started with the lock-down dpsql requires (``spark.sql.runSQLOnFiles=false``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CACHED_VENV = Path.home() / ".cache" / "dpsql-spark-venv"
CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def _home_of(python: str) -> Path | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([python, "-c", "import os, pyspark; print(os.path.dirname(pyspark.__file__))"],
                             capture_output=True, text=True, timeout=60, check=False)
        if out.returncode == 0:
            home = Path(out.stdout.strip())
            if (home / "bin" / "spark-submit").is_file() and (home / "jars").is_dir():
                return home
    return None


def find_spark_home() -> Path | None:
    """The directory holding ``bin/spark-submit`` and ``jars/`` (see the module docstring), or None."""
    if env := os.environ.get("DPSQL_SPARK_HOME"):
        home = Path(env)
        return home if (home / "bin" / "spark-submit").is_file() else None
    pythons = [os.environ.get("DPSQL_SPARK_PYTHON"), str(CACHED_VENV / "bin" / "python"), sys.executable]
    for py in pythons:
        if py and Path(py).exists() and (home := _home_of(py)) is not None:
            return home
    return None


def find_java() -> str | None:
    """The ``java`` launcher (JAVA_HOME first), or None."""
    if jh := os.environ.get("JAVA_HOME"):
        j = Path(jh) / "bin" / "java"
        if j.is_file():
            return str(j)
    return shutil.which("java")


def free_port() -> int:
    """An ephemeral loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running Spark Connect server; :attr:`url` is its ``sc://`` URL."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    log: Path

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the server (its process group: spark-submit and the JVM) and remove its directory."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_server(home: Path, *, port: int | None = None, shuffle_partitions: int = 4, cores: int = 2,
                 memory: str = "1g", extra_conf: dict[str, str] | None = None, timeout: float = 180.0) -> Server:
    """Start a Spark Connect server on ``127.0.0.1:port`` (a free port when None) and wait until it
    accepts connections. Raises RuntimeError (with the end of its log) when it does not start."""
    port = port or free_port()
    directory = Path(tempfile.mkdtemp(prefix="dpsql-spark-"))
    log = directory / "server.log"
    conf = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.sql.runSQLOnFiles": "false",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.warehouse.dir": str(directory / "warehouse"),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={directory}",
        **(extra_conf or {}),
    }
    cmd = [str(home / "bin" / "spark-submit"), "--class", CONNECT_CLASS, "--name", "dpsql-test-connect",
           "--master", f"local[{cores}]", "--driver-memory", memory]
    for k, v in conf.items():
        cmd += ["--conf", f"{k}={v}"]
    cmd.append("spark-internal")
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(directory),
           "SPARK_CONF_DIR": str(directory)}
    if java := find_java():
        env.setdefault("JAVA_HOME", str(Path(os.path.realpath(java)).parent.parent))
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=directory, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    server = Server(proc, port, directory, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if b"Spark Connect server started" in log.read_bytes():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:]
    server.stop()
    raise RuntimeError(f"the Spark Connect server did not start within {timeout:g} s:\n{tail}")
