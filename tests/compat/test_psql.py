"""psql 15 against the server: meta-commands (\\l, \\dn, \\dt, \\d, \\d+), a DP query with its cost
notice, session commands, and an error that stops the script."""

from __future__ import annotations

import os
import subprocess

import pytest
from compatlib import need_tool
from wirelib import DATABASE, PASSWORDS

from dpsql.proxy.server import Running


def psql(server: Running, *commands: str, user: str = "alice", sslmode: str = "prefer") -> subprocess.CompletedProcess[str]:
    exe = need_tool("psql", "/usr/bin/psql")
    args = [exe, f"host={server.host} port={server.port} user={user} dbname={DATABASE} sslmode={sslmode}", "-X", "-v",
            "ON_ERROR_STOP=1"]
    for c in commands:
        args += ["-c", c]
    env = {**os.environ, "PGPASSWORD": PASSWORDS[user], "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("\\l", ["hospital", "UTF8"]),
        ("\\dn", ["public"]),
        ("\\dt", ["departments", "patients", "visits", "table"]),
        ("\\d visits", ['Table "public.visits"', "patient_id", "bigint", "cost", "double precision", "visit_date", "date"]),
        ("\\d+ visits", ['Table "public.visits"', "Storage", "length_of_stay", "integer"]),
        ("\\d departments", ["department_id", "name", "floor"]),
        ("\\dt+", ["visits"]),
        ("\\conninfo", ["alice", "hospital"]),
    ],
)
def test_meta_commands(compat_server: Running, command: str, expected: list[str]) -> None:
    r = psql(compat_server, command)
    assert r.returncode == 0, r.stderr
    for text in expected:
        assert text in r.stdout, (text, r.stdout)


def test_dp_query_prints_rows_and_cost_notice(compat_server: Running) -> None:
    r = psql(compat_server, "SET dp.epsilon = 0.2",
             "SELECT department, COUNT(*) AS visits FROM visits GROUP BY department ORDER BY department")
    assert r.returncode == 0, r.stderr
    assert "cardiology" in r.stdout and "(8 rows)" in r.stdout
    assert "NOTICE:  dpsql: this query spent ε=0.2" in r.stderr


def test_session_commands(compat_server: Running) -> None:
    r = psql(compat_server, "SHOW dp.epsilon", "SELECT scope, epsilon_remaining FROM dpsql.budget", "EXPLAIN SELECT AVG(cost) FROM visits",
             "SELECT version()", "SHOW server_version", "BEGIN", "SELECT 1", "COMMIT")
    assert r.returncode == 0, r.stderr
    assert "0.1" in r.stdout and "session" in r.stdout and "QUERY PLAN" in r.stdout and "PostgreSQL 16.4" in r.stdout


def test_error_stops_the_script_with_sqlstate_and_hint(compat_server: Running) -> None:
    r = psql(compat_server, "SELECT * FROM visits", "SELECT 1")
    assert r.returncode != 0
    assert "ERROR:" in r.stderr and "HINT:" in r.stderr
    assert "?column?" not in r.stdout


def test_expanded_output_and_multiple_statements(compat_server: Running) -> None:
    r = psql(compat_server, "\\x", "SELECT 1 AS a, 'two' AS b; SELECT COUNT(*) AS n FROM visits")
    assert r.returncode == 0, r.stderr
    assert "-[ RECORD 1 ]" in r.stdout and "two" in r.stdout
