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
With ``ui=True`` its web UI listens on another loopback port, and :meth:`Server.running_tasks`
reads the driver's thread dump from the UI's REST API: the tasks still executing on the (local)
executor, which is how the cancel tests check that an interrupted job is really gone (the job
and stage lists empty at once on a cancel, while the task threads stop only at their next kill
check).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
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
    ui_port: int | None = None

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def _rest(self, path: str) -> object:
        if self.ui_port is None:
            raise RuntimeError("the server was started without its UI (start_server(ui=True))")
        base = f"http://127.0.0.1:{self.ui_port}/api/v1/applications"
        with urllib.request.urlopen(base, timeout=10) as r:
            app = json.load(r)[0]["id"]
        with urllib.request.urlopen(f"{base}/{app}/{path}", timeout=10) as r:
            return json.load(r)

    def running_tasks(self) -> list[str]:
        """Names of the executor threads running a task now (``Executor task launch worker for task
        …``, RUNNABLE), from the driver's thread dump; local mode runs the executor in the driver."""
        threads = self._rest("executors/driver/threads")
        assert isinstance(threads, list)
        return [str(t["threadName"]) for t in threads
                if str(t.get("threadName", "")).startswith("Executor task launch worker for task")
                and t.get("threadState") == "RUNNABLE"]

    def running_jobs(self) -> int:
        """How many Spark jobs the scheduler lists as running."""
        jobs = self._rest("jobs?status=running")
        assert isinstance(jobs, list)
        return len(jobs)

    def cpu_seconds(self) -> float:
        """CPU time (user + system, s) used so far by the server's processes (Linux ``/proc``)."""
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.process.pid:  # the process group start_new_session made
                    total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, within: float, *, busy_cpu: float = 0.5) -> float:
        """Wait (at most ``within`` s) until no task runs and the server used less than ``busy_cpu``
        CPU-seconds over the last second; return the seconds waited. Raises AssertionError naming
        the tasks still running when the bound passes."""
        t0 = time.monotonic()
        tasks: list[str] = []
        used = math.inf
        while time.monotonic() - t0 < within:
            c0 = self.cpu_seconds()
            time.sleep(1.0)
            used = self.cpu_seconds() - c0
            tasks = self.running_tasks()
            if not tasks and self.running_jobs() == 0 and used < busy_cpu:
                return time.monotonic() - t0
        raise AssertionError(f"the Spark server is still busy {within:g} s later: {used:.2f} CPU-s/s, running tasks {tasks}")

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
                 memory: str = "1g", extra_conf: dict[str, str] | None = None, timeout: float = 180.0,
                 ui: bool = False) -> Server:
    """Start a Spark Connect server on ``127.0.0.1:port`` (a free port when None) and wait until it
    accepts connections; with ``ui`` its web UI on another free loopback port (for
    :meth:`Server.running_tasks`). Raises RuntimeError (with the end of its log) when it does not start."""
    port = port or free_port()
    ui_port = free_port() if ui else None
    directory = Path(tempfile.mkdtemp(prefix="dpsql-spark-"))
    log = directory / "server.log"
    conf = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.sql.runSQLOnFiles": "false",
        "spark.ui.enabled": "true" if ui else "false",
        **({"spark.ui.port": str(ui_port)} if ui else {}),
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
    server = Server(proc, port, directory, log, ui_port)
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
