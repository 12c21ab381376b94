"""A Superset dashboard on the demo policy (issue 12), replayed as its exact SQL over psycopg2 with one
connection per statement and 8 in parallel: the first load charges its 4 private chart queries, the
next 20 loads charge nothing and get the same answers, and queueing leaves no 53000. The Prometheus
endpoint and the audit log show what happened, per statement, from the wire."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from dpsql.examples.hospital import generate
from dpsql.proxy.server import Running, start_in_thread

CHARTS = [
    "SELECT department AS department, COUNT(*) AS count \nFROM public.visits GROUP BY department ORDER BY count DESC \n LIMIT 10000",
    "SELECT DATE_TRUNC('month', visit_date) AS visit_date, COUNT(*) AS count \nFROM public.visits "
    "GROUP BY DATE_TRUNC('month', visit_date) ORDER BY visit_date ASC \n LIMIT 10000",
    'SELECT diagnosis AS diagnosis, AVG(cost) AS "AVG(cost)" \nFROM public.visits GROUP BY diagnosis '
    'ORDER BY "AVG(cost)" DESC \n LIMIT 10000',
    "SELECT COUNT(*) AS count FROM public.visits LIMIT 50000",
]
FILTER_VALUES = "SELECT department AS department \nFROM public.visits GROUP BY department LIMIT 1000"
LOAD = [*CHARTS, FILTER_VALUES]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    """The demo's policy (budget ε = 10, ε = 1 per query, scram users alice/bob) on a small data
    set, served with a metrics endpoint on an ephemeral port."""
    policy = generate(tmp_path, patients=2000, visits=8000)
    text = policy.read_text().replace('auth = "scram-sha-256"', 'auth = "scram-sha-256"\nmetrics_listen = "127.0.0.1:0"', 1)
    policy.write_text(text)
    running = start_in_thread(policy, listen="127.0.0.1:0")
    yield running, policy
    running.stop()


def _statement(running: Running, sql: str) -> tuple[list[tuple[Any, ...]], list[str]]:
    """One statement on its own connection (as Superset's per-query engine does)."""
    conn = psycopg2.connect(host=running.host, port=running.port, user="alice", password="alice-demo", dbname="hospital")
    try:
        cur = conn.cursor()
        cur.execute(sql)
        rows = cur.fetchall()
        conn.rollback()
        return rows, list(conn.notices)
    finally:
        conn.close()


def _charges(policy: Path) -> int:
    conn = sqlite3.connect(policy.parent / "dpsql-ledger.sqlite")
    try:
        return int(conn.execute("SELECT count(*) FROM charges WHERE main > 0").fetchone()[0])
    finally:
        conn.close()


def test_dashboard_loads_are_charged_once(demo: tuple[Running, Path]) -> None:
    running, policy = demo
    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(lambda q: _statement(running, q), LOAD))
        assert _charges(policy) == 4
        reloads = list(pool.map(lambda q: _statement(running, q), LOAD * 20))  # 100 statements, 8 at a time
    assert _charges(policy) == 4  # the next 20 loads cost nothing
    answers = {q: rows for q, (rows, _) in zip(LOAD, first, strict=True)}
    for q, (rows, notices) in zip(LOAD * 20, reloads, strict=True):
        assert rows == answers[q]  # the same answer on every load (no fresh noise)
        if q in CHARTS:
            assert any("replayed, no budget spent" in n for n in notices), notices
    assert all(any("this query spent ε=1" in n for n in notices) for _, notices in first[:4])

    host, port = running.server.metrics_address or ("", 0)
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    assert 'dpsql_replays_total{user="alice"} 80.0' in text
    assert 'dpsql_charged_queries_total{user="alice"} 4.0' in text
    assert 'dpsql_epsilon_charged_total{user="alice"} 4.0' in text
    # the filter-values query is a free answer (declared keys, no aggregate): kind "free", never charged
    assert 'dpsql_statement_duration_seconds_count{kind="private"} 84.0' in text
    assert 'dpsql_statement_duration_seconds_count{kind="free"} 21.0' in text
    assert "53000" not in text

    lines = [json.loads(line) for line in (policy.parent / "dpsql-audit.jsonl").read_text().splitlines()]
    private = [r for r in lines if r["kind"] == "private"]
    assert len(private) == 84 and sum(r["replayed"] for r in private) == 80
    free = [r for r in lines if r["kind"] == "free"]
    assert len(free) == 21 and not any(r["replayed"] for r in free)
    assert {(r["peer"], r["tls"], r["auth"]) for r in lines} == {("127.0.0.1", False, "scram-sha-256")}
    assert all(r["outcome"] == "ok" for r in lines)


def test_a_refusal_is_counted_by_sqlstate(demo: tuple[Running, Path]) -> None:
    running, _ = demo
    with pytest.raises(psycopg2.Error) as e:
        _statement(running, "SELECT * FROM visits")
    assert e.value.pgcode == "42501"
    host, port = running.server.metrics_address or ("", 0)
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    assert 'dpsql_refusals_total{sqlstate="42501"} 1.0' in text
