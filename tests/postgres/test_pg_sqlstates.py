"""dpsql's clean errors match PostgreSQL's own (issue 9, item 6): each statement is run on the real
PostgreSQL cluster (as the read-only ``reader`` role) and through dpsql, on both backends, and both
must give the same SQLSTATE and message; dpsql must not charge for any of them."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from pgenv import PgEnv, policy_text, source_line

from dpsql.api import open_engine
from dpsql.errors import DPSQLError
from dpsql.proxy.engine import Engine
from dpsql.proxy.wire import messages as m
from dpsql.proxy.wire.connection import Connection, ServerContext, run_sync

pytestmark = pytest.mark.postgres

CASES = [
    "SELECT COUNT(*) FROM visits LIMIT -1",
    "SELECT COUNT(*) FROM visits OFFSET -1",
    "SELECT COUNT(*) FROM visits OFFSET 99999999999999999999",
    "SELECT COUNT(*) FROM visits LIMIT 9223372036854775808",
    "SELECT COUNT(*) FROM visits LIMIT -1e30",
    "SELECT COUNT(*) FROM visits LIMIT 'abc'",
    "SELECT COUNT(*)/0 FROM visits",
    "SELECT COUNT(*) % 0 FROM visits",
    "SELECT sex, COUNT(*) FROM visits GROUP BY sex HAVING 1/0 > 0",
    "SELECT sex, COUNT(*) FROM visits GROUP BY sex ORDER BY 1/(1-1)",
    "SELECT * FROM departments LIMIT -5",
    "SET foo = 1",
    "RESET foo",
    "SHOW foo",
    "CHECKPOINT",
]


def _postgres(pg: PgEnv, sql: str) -> tuple[str, str]:
    async def go() -> tuple[str, str]:
        conn = await asyncpg.connect(pg.reader_dsn)
        try:
            await conn.execute(sql)
        except asyncpg.PostgresError as e:
            return str(e.sqlstate), str(e.args[0] if e.args else e)
        finally:
            await conn.close()
        raise AssertionError(f"PostgreSQL accepted {sql!r}")

    return asyncio.run(go())


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def engine(request: pytest.FixtureRequest, pg: PgEnv, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    d = tmp_path_factory.mktemp(f"sqlstates-{request.param}")
    path = d / "policy.toml"
    path.write_text(policy_text(source_line(pg, request.param), ledger=f'path = "{d / "ledger.sqlite"}"'))
    eng = open_engine(path)
    request.addfinalizer(eng.close)
    return eng


def _dpsql_wire(engine: Engine, sql: str) -> tuple[str, str]:
    """Through a wire connection driven inline (SET/SHOW/CHECKPOINT are the wire layer's)."""
    conn = Connection(ServerContext(engine, database="hospital"))
    decoder = m.FrameDecoder()
    try:
        for msg in (m.frontend_startup({"user": "alice", "database": "hospital"}), m.frontend_query(sql)):
            for frame in decoder.feed(msg):
                run_sync(conn.handle(frame))
        out = m.decode_backend_stream(bytes(conn.out))
    finally:
        conn.close()
    fields = [dict((f[:1].decode(), f[1:].decode()) for f in body.split(b"\0") if f) for t, body in out if t == b"E"]
    assert fields, f"dpsql accepted {sql!r}"
    return fields[0]["C"], fields[0]["M"]


@pytest.mark.parametrize("sql", CASES)
def test_same_sqlstate_and_message_as_postgres(pg: PgEnv, engine: Engine, sql: str) -> None:
    expected = _postgres(pg, sql)
    session = engine.session("alice")
    before = session.budget()
    if sql.split()[0].upper() in ("SET", "RESET", "SHOW", "CHECKPOINT"):
        got = _dpsql_wire(engine, sql)
    else:
        with pytest.raises(DPSQLError) as e:
            session.execute(sql)
        got = (e.value.sqlstate, e.value.message)
    assert got == expected
    assert session.budget() == before  # refused for free
