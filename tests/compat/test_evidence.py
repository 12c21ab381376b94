"""Evidence against dpsql: ``evidence sources`` of a project with a PostgreSQL source
(``@evidence-dev/postgres``) pointed at a server on the demo's policy writes one Parquet file per
source query, with the columns and row counts of dpsql's answers; built again, it charges nothing
(every answer is replayed).

For each source query Evidence's connector first sends the row count
``WITH root as (<query>) SELECT COUNT(*) as rows FROM root``, then reads the query through a
pg-cursor; a failed row count fails the source, so a build that writes the file means both were
answered. Evidence then writes the Parquet through duckdb-wasm. ``@evidence-dev/evidence`` 39.1.13
is pinned (``tests/compat/evidence/package-lock.json``): it is the last release whose universal-sql
uses duckdb-wasm 1.28.0, which has Parquet built in; 39.2 and 40 (duckdb-wasm 1.29 and later) load
the Parquet extension from the network at that step and hang offline.

``.ci/run`` installs the package with ``npm ci`` under ``~/.cache/dpsql-evidence`` (once per
machine; ``DPSQL_EVIDENCE_DIR`` overrides it). Skipped only when that install is missing and CI is
unset."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from compatlib import need_tool

from dpsql.examples.hospital import generate
from dpsql.proxy.audit import sql_hash
from dpsql.proxy.server import Running, start_in_thread

EVIDENCE_DIR = Path(os.environ.get("DPSQL_EVIDENCE_DIR", Path.home() / ".cache" / "dpsql-evidence"))
CLI = EVIDENCE_DIR / "node_modules" / "@evidence-dev" / "evidence" / "cli.js"

if not CLI.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"CI is set but Evidence is not installed at {EVIDENCE_DIR} (.ci/run installs it)")
    pytest.skip(f"no Evidence at {EVIDENCE_DIR} (.ci/run installs it)", allow_module_level=True)

DEPARTMENTS = [
    "cardiology",
    "emergency",
    "general medicine",
    "neurology",
    "obstetrics",
    "oncology",
    "orthopedics",
    "pediatrics",
]  # the demo policy's declared key set
GROUPED = "SELECT department, COUNT(*) AS visits, AVG(cost) AS avg_cost FROM visits GROUP BY department"
SCALAR = "SELECT COUNT(*) AS n, AVG(birth_year) AS mean_birth_year FROM patients"
QUERIES = {"visits_by_department": GROUPED, "patient_count": SCALAR}


def row_count_sql(query: str) -> str:
    """The row-count statement @evidence-dev/postgres sends before a source query."""
    return f"WITH root as ({query.strip()}\n) SELECT COUNT(*) as rows FROM root"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Path]]:
    """The demo's policy (users alice/bob, ε = 1 per query from a budget of 10) on a small data set."""
    policy = generate(tmp_path_factory.mktemp("evidence-demo"), patients=2000, visits=8000)
    running = start_in_thread(policy, listen="127.0.0.1:0")
    yield running, policy
    running.stop()


def _project(root: Path, server: Running) -> Path:
    """An Evidence project with one PostgreSQL source, ``dpsql``, holding QUERIES."""
    source = root / "sources" / "dpsql"
    source.mkdir(parents=True)
    (root / "pages").mkdir()
    (root / "pages" / "index.md").write_text("# dpsql\n")
    (root / "evidence.plugins.yaml").write_text('datasources:\n  "@evidence-dev/postgres": {}\n')
    (source / "connection.yaml").write_text(
        "name: dpsql\ntype: postgres\noptions:\n"
        f"  host: {server.host}\n  port: {server.port}\n  database: hospital\n  user: alice\n  ssl: false\n"
    )
    for name, sql in QUERIES.items():
        (source / f"{name}.sql").write_text(sql + "\n")
    (root / "node_modules").symlink_to(EVIDENCE_DIR / "node_modules", target_is_directory=True)
    return root


def _sources(project: Path) -> subprocess.CompletedProcess[str]:
    """``evidence sources`` in ``project`` (the password from the environment, no usage statistics)."""
    env = {
        **os.environ,
        "EVIDENCE_SOURCE__dpsql__password": "alice-demo",
        "SEND_ANONYMOUS_USAGE_STATS": "no",
        "EVIDENCE_DATA_DIR": str(project / "data"),
        "EVIDENCE_DATA_URL_PREFIX": "static/data",
        "NO_COLOR": "1",
    }
    return subprocess.run([need_tool("node"), str(CLI), "sources"], cwd=project, env=env, capture_output=True, text=True, timeout=120)


def _read(parquet: Path) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{parquet}')")
    return rel.columns, [str(t) for t in rel.types], rel.fetchall()


def _audit(policy: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (policy.parent / "dpsql-audit.jsonl").read_text().splitlines()]


def _charges(policy: Path) -> int:
    conn = sqlite3.connect(policy.parent / "dpsql-ledger.sqlite")
    try:
        return int(conn.execute("SELECT count(*) FROM charges WHERE main > 0").fetchone()[0])
    finally:
        conn.close()


def test_evidence_sources_builds_and_rebuilds_free(demo: tuple[Running, Path], tmp_path: Path) -> None:
    server, policy = demo
    project = _project(tmp_path / "project", server)
    started = time.monotonic()
    done = _sources(project)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "visits_by_department ✔ Finished, wrote 8 rows." in done.stderr, done.stderr
    assert "patient_count ✔ Finished, wrote 1 rows." in done.stderr, done.stderr
    assert took < 60, f"evidence sources took {took:.1f} s"

    data = project / "data"
    manifest = json.loads((data / "manifest.json").read_text())
    assert sorted(manifest["renderedFiles"]["dpsql"]) == [f"static/data/dpsql/{q}/{q}.parquet" for q in sorted(QUERIES)]

    grouped = data / "dpsql" / "visits_by_department" / "visits_by_department.parquet"
    columns, types, rows = _read(grouped)
    first = rows
    assert columns == ["department", "visits", "avg_cost"]
    assert types == ["VARCHAR", "DOUBLE", "DOUBLE"]  # Evidence stores every number as a double
    assert sorted(r[0] for r in rows) == DEPARTMENTS  # declared keys: every department, none from the data
    assert all(isinstance(visits, float) and 0 <= avg <= 10_000 for _, visits, avg in rows), rows  # AVG within its bounds
    columns, types, rows = _read(data / "dpsql" / "patient_count" / "patient_count.parquet")
    assert columns == ["n", "mean_birth_year"] and types == ["DOUBLE", "DOUBLE"] and len(rows) == 1
    # 2000 patients; COUNT's noise has scale 11.1 (dpsql explain), so ±1000 fails with probability < 1e-100
    assert 1000 < rows[0][0] < 3000 and 1920 <= rows[0][1] <= 2025, rows

    audit = _audit(policy)
    by_hash = {line["sql_hash"]: line for line in audit}
    for sql in QUERIES.values():
        for sent in (row_count_sql(sql), sql):
            assert by_hash.get(sql_hash(sent), {}).get("outcome") == "ok", (sent, audit)
    charged = _charges(policy)
    assert charged >= len(QUERIES)  # the row counts evaluate their inner query too (tests/compat/test_bi_queries.py)

    again = _sources(project)  # the same sources built again: every answer replayed, nothing charged
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert _charges(policy) == charged
    rebuilt = _audit(policy)[len(audit) :]
    assert len(rebuilt) >= 2 * len(QUERIES) and all(
        line["outcome"] == "ok" and line["charge"] is None and (line["replayed"] or line["kind"] == "public") for line in rebuilt
    ), rebuilt
    assert "visits_by_department ✔ Finished, wrote 8 rows." in again.stderr, again.stderr
    assert _read(grouped)[2] == first  # the stored answer, not a fresh draw
