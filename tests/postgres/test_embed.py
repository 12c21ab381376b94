"""The embedding pipeline on PostgreSQL: the caller's own psycopg connection runs the bounded SQL
(dialect "postgres"), the budget ledger is PostgreSQL — shared with the server's engine.

* every parity shape gives the engine's answer exactly (zero noise in both paths, see
  tests/embed/embedlib.py) and the engine's charge;
* a charge never released stands, seen by a new ledger connection and by a server engine on the
  same ledger; engine and pipeline spend one budget;
* ``describe_postgres`` reads the schema the PostgreSQL backend reads.
Deterministic: no false failures.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgenv import PgEnv, policy_text, source_line

from dpsql.accountant.postgres_ledger import PostgresLedger
from dpsql.embed import Pipeline, dbapi_runner, describe_postgres
from dpsql.policy import Policy, load_policy
from dpsql.proxy.backends.postgres import PostgresBackend
from dpsql.proxy.engine import Engine
from dpsql.proxy.timing import TimingShield

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "embed"))
from embedlib import parity_queries, zero_noise

pytestmark = pytest.mark.postgres
QUERIES = parity_queries()


def _policy(tmp: Path, name: str, pg: PgEnv) -> Policy:
    path = tmp / f"{name}.toml"
    path.write_text(policy_text(source_line(pg, "postgres"), ledger=f'url = "{pg.ledger_dsn}"', epsilon=1e6, delta=1e-2))
    return load_policy(path)


@pytest.fixture(scope="module")
def both(pg: PgEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Pipeline, Any]]:
    """A server engine and a pipeline over the same policy, each with its own PostgreSQL ledger
    schema; the pipeline's engine is a psycopg connection of the caller's, as the reader role."""
    import secrets

    tmp = tmp_path_factory.mktemp("embed-pg")
    policy = _policy(tmp, "p", pg)
    engine_ledger = PostgresLedger(pg.ledger_dsn, schema=f"ledger_{secrets.token_hex(6)}")
    embed_ledger = PostgresLedger(pg.ledger_dsn, schema=f"ledger_{secrets.token_hex(6)}")
    engine = Engine(policy, PostgresBackend(policy), engine_ledger, shield=TimingShield(enabled=False))
    conn = psycopg.connect(pg.reader_dsn, autocommit=True)
    pipe = Pipeline(policy, dialect="postgres", schema=describe_postgres(conn, policy), ledger=embed_ledger,
                    shield=TimingShield(enabled=False))
    yield engine, pipe, conn
    pipe.close()
    embed_ledger.close()
    conn.close()
    engine.close()


def test_schema_is_the_backends(both: tuple[Engine, Pipeline, Any]) -> None:
    engine, pipe, _ = both
    described = {k: list(v) for k, v in engine.backend.describe().items()}
    assert {k: [(c.name, c.pg_type) for c in t.columns] for k, t in pipe.catalog.tables.items()} == \
        {k: [(c.name, c.pg_type) for c in t.columns] for k, t in engine.catalog.tables.items()}
    assert set(described) == set(pipe.catalog.tables)


@pytest.mark.parametrize("name", QUERIES)
def test_same_answer_and_charge_as_the_engine(both: tuple[Engine, Pipeline, Any], name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, pipe, conn = both
    zero_noise(monkeypatch)
    sql = QUERIES[name]
    es, ps = engine.session("alice"), pipe.session("alice")
    _, noise = es.plan(sql)
    prepared = ps.prepare(sql)
    assert prepared.noise == noise and prepared.sql == engine.rewrite(sql).sql
    expected = es.execute(sql)
    got = ps.execute(sql, dbapi_runner(conn))
    assert (got.columns, got.types) == (expected.columns, expected.types)
    assert got.rows == expected.rows
    spent = {b.scope: b.spent_epsilon for b in ps.budget()}
    assert spent == {b.scope: b.spent_epsilon for b in es.budget()}


def test_shared_ledger_charge_stands(pg: PgEnv, ledger_schema: str, tmp_path: Path) -> None:
    """Pipeline and server engine on ONE PostgreSQL ledger: a charge the caller never releases is
    committed (a new connection sees it) and counts against the user on the server too."""
    policy = _policy(tmp_path, "shared", pg)
    led = PostgresLedger(pg.ledger_dsn, schema=ledger_schema)
    conn = psycopg.connect(pg.reader_dsn, autocommit=True)
    engine = Engine(policy, PostgresBackend(policy), PostgresLedger(pg.ledger_dsn, schema=ledger_schema),
                    shield=TimingShield(enabled=False))
    try:
        with Pipeline(policy, dialect="postgres", schema=describe_postgres(conn, policy), ledger=led,
                      shield=TimingShield(enabled=False)) as pipe:
            s = pipe.session("bob")
            token = s.charge(s.prepare("SELECT COUNT(*) FROM visits"))
            del token  # never released
            other = PostgresLedger(pg.ledger_dsn, schema=ledger_schema)
            try:
                seen = other.status("bob", "elsewhere", s.limits(), time.time())
            finally:
                other.close()
            user_spent = next(b.spent_epsilon for b in seen if b.scope == "user")
            assert user_spent > 0
            server_view = {b.scope: b.spent_epsilon for b in engine.session("bob").budget()}
            assert server_view["user"] == user_spent
            engine.session("bob").execute("SELECT COUNT(*) FROM visits WHERE age > 40")
            assert next(b.spent_epsilon for b in s.budget() if b.scope == "user") > user_spent
    finally:
        led.close()
        conn.close()
        engine.close()


def test_psycopg_example_runs(pg: PgEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/embed_psycopg.py against a database the caller owns (loaded by --load)."""
    import pgcluster

    from dpsql.examples.embed_psycopg import main

    pg.sql("DROP DATABASE IF EXISTS embed_example", "CREATE DATABASE embed_example")
    assert main(["--dsn", pg.cluster.dsn(pgcluster.SUPERUSER, "embed_example"), "--load", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "count | avg" in out and "building | sum" in out and "region | n" in out
    assert out.count("NOTICE: dpsql: this query spent ε=0.5") == 3
