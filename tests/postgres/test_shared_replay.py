"""Replay and start-up on the shared PostgreSQL ledger (issue 12): answers are stored in the ledger
schema and replayed by every instance; identical queries racing across instances are charged
once; an upstream PostgreSQL source bounds replay staleness by ``replay_ttl``; several
``dpsql serve`` started at the same instant on a fresh ledger all come up; an old (version 1)
ledger is migrated once, even by instances starting together."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import asyncpg
import psycopg2
import pytest
from pgenv import PgEnv, policy_text, source_line

from dpsql.accountant.postgres_ledger import SCHEMA_VERSION, PostgresLedger
from dpsql.api import open_engine

pytestmark = pytest.mark.postgres

SQL = "SELECT department, COUNT(*), AVG(cost) FROM visits GROUP BY department"


def _fresh_url(pg: PgEnv) -> str:
    """A new database owned by the ledger role (the policy's ledger uses the default schema)."""
    name = f"h_{os.getpid()}_{random.randrange(10**9)}"
    pg.sql(f"CREATE DATABASE {name} OWNER ledger", database="postgres")
    return pg.ledger_dsn.replace("/ledger?", f"/{name}?")


async def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def _charges(url: str) -> int:
    return int(asyncio.run(_fetch(url, "SELECT count(*) FROM dpsql_ledger.charges WHERE main > 0"))[0][0])


def _policy(pg: PgEnv, tmp_path: Path, url: str, kind: str = "duckdb", name: str = "policy.toml", **options: object) -> Path:
    path = tmp_path / name
    path.write_text(policy_text(source_line(pg, kind), ledger=f'url = "{url}"', epsilon=100.0, **options))  # type: ignore[arg-type]
    return path


def test_two_instances_replay_one_answer(pg: PgEnv, tmp_path: Path) -> None:
    """Engine A pays; engine B (another instance, its own ledger connection) and a restarted A
    replay the same rows for free."""
    url = _fresh_url(pg)
    policy = _policy(pg, tmp_path, url)
    a, b = open_engine(policy), open_engine(policy)
    try:
        first = a.session("alice").execute(SQL)
        again = b.session("alice").execute(SQL)
    finally:
        a.close()
        b.close()
    assert again.rows == first.rows and again.notices[0].startswith("dpsql: replayed, no budget spent")
    restarted = open_engine(policy)
    try:
        assert restarted.session("alice").execute(SQL).rows == first.rows
    finally:
        restarted.close()
    assert _charges(url) == 1


_RACER = textwrap.dedent(
    """
    import sys, threading, time
    from dpsql.api import open_engine
    policy, start, n, sql = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    engine = open_engine(policy)
    rows, errors = [], []
    def go():
        s = engine.session("alice")
        while time.time() < start:
            time.sleep(0.0005)
        try:
            rows.append(repr(s.execute(sql).rows))
        except Exception as e:
            errors.append(repr(e))
    ts = [threading.Thread(target=go) for _ in range(n)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    engine.close()
    print(len(set(rows)), len(rows), len(errors), errors[:1])
    print(rows[0] if rows else "")
    """
)


def test_fifty_identical_queries_on_two_instances_are_charged_once(pg: PgEnv, tmp_path: Path) -> None:
    """2 processes × 25 threads send one query at the same instant: one charge, one answer for all 50."""
    url = _fresh_url(pg)
    policy = _policy(pg, tmp_path, url, extra="[limits]\nconcurrent_queries_per_user = 4\n")
    PostgresLedger(url).close()  # the schema exists before the race (start-up races are tested below)
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(policy), str(start), "25", SQL], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    answers = set()
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        summary, answer = out.strip().splitlines()[-2:]
        distinct, n, errors, _ = summary.split(" ", 3)
        assert (distinct, n, errors) == ("1", "25", "0"), summary
        answers.add(answer)
    assert len(answers) == 1
    assert _charges(url) == 1


def test_postgres_source_replays_within_its_ttl(pg: PgEnv, tmp_path: Path) -> None:
    """With an upstream PostgreSQL source (not pinned: its owner may write) a stored answer is
    replayed for at most ``replay_ttl``; a DuckDB source (read-locked, pinned) keeps the window."""
    url = _fresh_url(pg)
    for kind, replays_after in (("postgres", False), ("duckdb", True)):
        policy = _policy(pg, tmp_path, url, kind, name=f"{kind}.toml", privacy_extra='replay_ttl = "1s"')
        engine = open_engine(policy)
        try:
            s = engine.session("alice")
            s.execute(SQL)
            assert s.execute(SQL).notices[0].startswith("dpsql: replayed")
            time.sleep(1.2)
            assert s.execute(SQL).notices[0].startswith("dpsql: replayed") is replays_after, kind
        finally:
            engine.close()
    assert _charges(url) == 3  # postgres: twice, duckdb: once


_SERVE = textwrap.dedent(
    """
    import sys, time
    start = float(sys.argv[1])
    from dpsql.proxy.cli import main
    while time.time() < start:
        time.sleep(0.0005)
    sys.exit(main(sys.argv[2:]))
    """
)


def test_instances_started_together_on_a_fresh_ledger_all_come_up(pg: PgEnv, tmp_path: Path) -> None:
    """Four `dpsql serve` started at the same instant against a database with no ledger yet: all
    listen (none exits with DuplicateSchemaError), all answer, and they share one ledger."""
    url = _fresh_url(pg)
    policy = _policy(pg, tmp_path, url)
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", _SERVE, str(start), "serve", "--policy", str(policy), "--listen",
                               "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]  # fmt: skip
    try:
        ports = []
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert "listening on" in line, (line, p.poll(), p.stderr.read() if p.poll() is not None and p.stderr else "")
            ports.append(int(line.split("listening on ")[1].split(" ")[0].rsplit(":", 1)[1]))
        for i, port in enumerate(ports):
            conn = psycopg2.connect(host="127.0.0.1", port=port, user="alice", dbname="hospital")
            try:
                cur = conn.cursor()
                cur.execute(f"SELECT COUNT(*) FROM visits WHERE age >= {i}")
                assert cur.fetchone() is not None
            finally:
                conn.close()
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
    assert _charges(url) == 4
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]


_OPENER = textwrap.dedent(
    """
    import sys, time
    from dpsql.accountant.postgres_ledger import PostgresLedger
    url, schema, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.0005)
    PostgresLedger(url, schema=schema).close()
    print("ok")
    """
)


def test_ledgers_opened_at_the_same_instant_create_the_schema_once(pg: PgEnv, ledger_schema: str) -> None:
    """Six processes open a ledger whose schema does not exist yet at the same instant (right at the
    ledger, without the jitter of a whole `dpsql serve` start): all succeed. Before the fix, all but
    one failed with DuplicateSchemaError: a schema lookup before the advisory lock left a stale
    catalog cache entry that hid the schema another instance committed while this one waited."""
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, pg.ledger_dsn, ledger_schema, str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]  # fmt: skip
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 and out.strip() == "ok" for p, (out, _) in zip(procs, outcomes, strict=True)), outcomes
    assert pg.sql(f"SELECT value FROM {ledger_schema}.meta WHERE key = 'schema_version'", database="ledger")[0][0] == str(SCHEMA_VERSION)


def test_a_version_1_ledger_is_migrated_once_by_instances_starting_together(pg: PgEnv, ledger_schema: str) -> None:
    """A ledger of schema version 1 (no replay table) is brought to version 2 by the first of six
    instances opening it at once; the others wait for it and find it migrated; charges survive."""
    from fractions import Fraction

    from dpsql.accountant.costs import Cost
    from dpsql.accountant.filters import FilterLimit, ScopeLimits

    led = PostgresLedger(pg.ledger_dsn, schema=ledger_schema)
    f = lambda s, m: FilterLimit(s, "zcdp", m, None, None, None, None, Fraction(1, 10**7))  # noqa: E731
    limits = ScopeLimits("zcdp", f("session", None), f("user", 10**12), None)
    led.charge("alice", "s", Cost("zcdp", Fraction(1, 10)), limits, time.time(), "q")
    led.close()
    pg.sql(f"DROP TABLE {ledger_schema}.replay", f"UPDATE {ledger_schema}.meta SET value = '1' WHERE key = 'schema_version'",
           database="ledger")
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, pg.ledger_dsn, ledger_schema, str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    version = pg.sql(f"SELECT value FROM {ledger_schema}.meta WHERE key = 'schema_version'", database="ledger")[0][0]
    assert version == str(SCHEMA_VERSION)
    assert pg.sql(f"SELECT count(*) FROM {ledger_schema}.charges", database="ledger")[0][0] == 1
    assert pg.sql(f"SELECT count(*) FROM {ledger_schema}.replay", database="ledger")[0][0] == 0
