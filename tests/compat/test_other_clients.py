"""Non-Python clients: pgjdbc (Debian's libpostgresql-jdbc-java, a Java program compiled at test
time), node-postgres, and a pgbench smoke run (simple and extended protocol)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from compatlib import missing, need_tool
from wirelib import DATABASE, PASSWORDS, SLOW_QUERY

from dpsql.proxy.server import Running

HERE = Path(__file__).parent
JDBC_JAR = Path(os.environ.get("DPSQL_JDBC_JAR", "/usr/share/java/postgresql.jar"))
PGBENCH = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)), Path("/nonexistent"))


@pytest.fixture(scope="module")
def jdbc_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    javac = need_tool("javac")
    if not JDBC_JAR.exists():
        missing(f"pgjdbc ({JDBC_JAR}; apt-get install libpostgresql-jdbc-java)")
    out = tmp_path_factory.mktemp("jdbc")
    r = subprocess.run([javac, "-cp", str(JDBC_JAR), "-d", str(out), str(HERE / "jdbc" / "DpsqlJdbc.java")], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    return out


def test_pgjdbc(compat_server: Running, jdbc_classes: Path) -> None:
    java = need_tool("java")
    url = f"jdbc:postgresql://{compat_server.host}:{compat_server.port}/{DATABASE}"
    r = subprocess.run([java, "-cp", f"{JDBC_JAR}:{jdbc_classes}", "DpsqlJdbc", url, "alice", PASSWORDS["alice"], SLOW_QUERY],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "done"
    assert "product PostgreSQL 16" in lines
    assert "schema public" in lines
    assert {"table departments", "table patients", "table visits"} <= set(lines)
    assert {"column patient_id int8", "column cost float8", "column visit_date date", "column age int4"} <= set(lines)
    assert "pkeys 0" in lines and "fkeys 0" in lines
    assert lines.count("count n int8 true") == 7
    # the first execution is charged; the six identical ones after it replay the stored answer
    assert [line for line in lines if line.startswith("warning ")] == ["warning spent"] + ["warning replayed"] * 6
    assert "department cardiology 3" in lines
    assert "avg true" in lines
    assert "fetched 8" in lines
    assert "cancel 57014" in lines
    assert "error 42501" in lines
    assert "after 1" in lines


def _node_package(module: str) -> tuple[str, Path]:
    """node and tests/compat/node with ``module`` installed (npm install there when it is missing)."""
    node = need_tool("node")
    pkg = HERE / "node"
    if not (pkg / "node_modules" / module).exists():
        npm = need_tool("npm")
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=pkg, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            missing(f"{module} (npm install failed: {r.stderr[-300:]})")
    return node, pkg


def test_node_postgres(compat_server: Running) -> None:
    node, pkg = _node_package("pg")
    r = subprocess.run([node, str(pkg / "pgtest.js"), compat_server.host, str(compat_server.port), "alice", PASSWORDS["alice"],
                        DATABASE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"rows": 8, "name": "cardiology", "one": 1, "err": "42501", "named": "string", "notices": 3}


def test_evidence_connector_sequence(compat_server: Running) -> None:
    """Evidence's PostgreSQL source connector (row count over ``WITH root AS (…)``, then a pg-cursor
    read in batches): both answered, the cursor ends with an empty batch. Evidence itself
    (``evidence sources``, @evidence-dev/evidence 39.1.13) runs in tests/compat/test_evidence.py."""
    node, pkg = _node_package("pg-cursor")
    r = subprocess.run([node, str(pkg / "evidence.js"), compat_server.host, str(compat_server.port), "alice",
                        PASSWORDS["alice"], DATABASE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"expected": 8, "batches": [8], "fields": ["department", "visits", "avg_cost"]}


@pytest.mark.parametrize("mode", ["simple", "extended"])
def test_pgbench_smoke(compat_server: Running, tmp_path: Path, mode: str) -> None:
    pgbench = need_tool("pgbench", str(PGBENCH))
    script = tmp_path / "sel1.sql"
    script.write_text("SELECT 1;\n")
    env = {**os.environ, "PGPASSWORD": PASSWORDS["alice"]}
    r = subprocess.run([pgbench, "-h", compat_server.host, "-p", str(compat_server.port), "-U", "alice", "-n", "-f", str(script),
                        "-M", mode, "-c", "1", "-T", "2", DATABASE], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "number of failed transactions: 0" in r.stdout
    m = re.search(r"tps = ([\d.]+)", r.stdout)
    assert m is not None and float(m.group(1)) > 0
