"""Intervals, rounding and EXPLAIN (BIAS) over the wire (psycopg2, the demo policy): the types a
client is told at Describe are the ones it gets, settings travel as SET, EXPLAIN (BIAS) is charged
and counts as a charged statement of a multi-statement string (R31)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

from dpsql.examples.hospital import generate
from dpsql.proxy.server import Running, start_in_thread


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    policy = generate(tmp_path, patients=2000, visits=8000)
    running = start_in_thread(policy, listen="127.0.0.1:0")
    yield running, policy
    running.stop()


def _connect(running: Running) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(host=running.host, port=running.port, user="alice", password="alice-demo", dbname="hospital")
    conn.autocommit = True
    return conn


def _charges(policy: Path) -> int:
    conn = sqlite3.connect(policy.parent / "dpsql-ledger.sqlite")
    try:
        return int(conn.execute("SELECT count(*) FROM charges WHERE main > 0").fetchone()[0])
    finally:
        conn.close()


def test_intervals_and_rounding_over_the_wire(demo: tuple[Running, Path]) -> None:
    running, policy = demo
    with _connect(running) as conn, conn.cursor() as cur:
        cur.execute("SET dp.confidence = 0.9")
        cur.execute("SELECT department, COUNT(*) AS n, DP_INTERVAL_LOW(COUNT(*)) AS n_lo, DP_INTERVAL_HIGH(COUNT(*)) AS n_hi, "
                    "AVG(cost) AS a, DP_INTERVAL_LOW(AVG(cost)) AS a_lo, DP_INTERVAL_HIGH(AVG(cost)) AS a_hi "
                    "FROM visits GROUP BY department ORDER BY department")
        rows = cur.fetchall()
        assert len(rows) == 8
        for _dept, n, n_lo, n_hi, a, a_lo, a_hi in rows:
            assert isinstance(n_lo, int) and n_lo <= n <= n_hi
            assert isinstance(a, float) and a_lo <= a <= a_hi
            assert len(repr(a).split(".")[-1]) <= 6  # rounded to what the noise supports
        cur.execute("SHOW dp.confidence")
        assert cur.fetchone() == ("0.9",)
        with pytest.raises(psycopg2.Error) as e:
            cur.execute("SET dp.confidence = 2")
        assert e.value.pgcode == "22023"
    with _connect(running) as conn, conn.cursor() as cur:
        cur.execute("SET dp.rounding = 'off'")
        cur.execute("SELECT ROUND(AVG(cost), 2) AS r FROM visits")
        (r,), = cur.fetchall()
        assert isinstance(r, float | Decimal)
    assert _charges(policy) == 2


def test_explain_bias_over_the_wire(demo: tuple[Running, Path]) -> None:
    running, policy = demo
    with _connect(running) as conn, conn.cursor() as cur:
        cur.execute("EXPLAIN (BIAS) SELECT COUNT(*) FROM visits")
        lines = [r[0] for r in cur.fetchall()]
        assert any("rows dropped by max_rows=40" in line for line in lines), lines
        assert _charges(policy) == 1
        with pytest.raises(psycopg2.Error) as e:
            cur.execute("EXPLAIN (BIAS) SELECT COUNT(*) FROM visits; EXPLAIN (BIAS) SELECT SUM(cost) FROM visits")
        assert e.value.pgcode == "0A000"
    assert _charges(policy) == 1
