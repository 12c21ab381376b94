"""Python drivers against the server: psycopg 3 (extended protocol, server-side prepared
statements), psycopg2 (simple protocol), asyncpg (Describe before Bind, binary results) and pg8000
(pure-Python SCRAM)."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import pytest
from wirelib import DATABASE, PASSWORDS, SLOW_QUERY, dsn

from dpsql.proxy.server import Running

DP_QUERY = "SELECT department, COUNT(*) AS n FROM visits WHERE age > %s GROUP BY department ORDER BY department"


# ------------------------------------------------------------------------------------ psycopg 3


def test_psycopg3_extended_and_prepared(compat_server: Running) -> None:
    import psycopg

    notes: list[str] = []
    with psycopg.connect(dsn(compat_server.host, compat_server.port), prepare_threshold=0, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notes.append(d.message_primary or ""))
        assert conn.info.server_version == 160004
        for age in (30, 50):  # server-side prepared (_pg3_N) at the first execution, reused at the second
            rows = conn.execute(DP_QUERY, (age,)).fetchall()
            assert len(rows) == 8 and all(isinstance(n, int) for _, n in rows)
        assert any("ε=0.1" in n for n in notes)
        row = conn.execute("SELECT COUNT(*) FROM visits WHERE cost < %s AND visit_date >= %s",
                           (Decimal("1000.5"), dt.date(2020, 1, 1))).fetchone()
        assert row is not None and isinstance(row[0], int)
        assert conn.execute("SELECT name FROM departments WHERE department_id = %s", (3,)).fetchone() == ("cardiology",)
        conn.execute("SET dp.epsilon = 0.3")
        assert conn.execute("SHOW dp.epsilon").fetchone() == ("0.3",)
        budget = conn.execute("SELECT scope, epsilon_remaining FROM dpsql.budget").fetchall()
        assert budget[0][0] == "session"


def test_psycopg3_transactions_errors_and_binary(compat_server: Running) -> None:
    import psycopg
    from psycopg import errors

    with psycopg.connect(dsn(compat_server.host, compat_server.port)) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as e:
            conn.execute("SELECT * FROM visits")
        assert e.value.diag.sqlstate == "42501" and e.value.diag.message_hint
        conn.rollback()
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT department_id, name, floor FROM departments ORDER BY department_id")
            assert cur.fetchone() == (1, "emergency", 0)
        with conn.transaction():
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with psycopg.ClientCursor(conn) as cur:  # simple protocol with client-side binding
            cur.execute("SELECT COUNT(*) FROM visits WHERE sex = %s", ("F",))
            assert isinstance(cur.fetchone()[0], int)  # type: ignore[index]


def test_psycopg3_cancel(compat_server: Running) -> None:
    import threading

    import psycopg
    from psycopg import errors

    with psycopg.connect(dsn(compat_server.host, compat_server.port), autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        with pytest.raises(errors.QueryCanceled):
            conn.execute(SLOW_QUERY)
        timer.join()
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ------------------------------------------------------------------------------------ psycopg2


def test_psycopg2_simple_protocol(compat_server: Running) -> None:
    import psycopg2
    import psycopg2.errors

    conn = psycopg2.connect(dsn(compat_server.host, compat_server.port))
    try:
        cur = conn.cursor()
        cur.execute(DP_QUERY, (40,))
        assert len(cur.fetchall()) == 8
        assert any("dpsql: this query spent" in n for n in conn.notices)
        cur.execute("SELECT version()")
        assert cur.fetchone()[0].startswith("PostgreSQL 16.4")  # type: ignore[index]
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SELECT patient_id FROM visits")
        conn.rollback()
        cur.execute("SELECT AVG(cost) AS mean FROM visits")
        assert isinstance(cur.fetchone()[0], float)  # type: ignore[index]
        assert cur.description[0].name == "mean"  # type: ignore[index]
    finally:
        conn.close()


# ------------------------------------------------------------------------------------- asyncpg


def test_asyncpg(compat_server: Running) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(host=compat_server.host, port=compat_server.port, user="alice", password=PASSWORDS["alice"],
                                     database=DATABASE)
        try:
            rows = await conn.fetch("SELECT department, COUNT(*) AS n FROM visits WHERE age > $1 GROUP BY department", 30)
            assert len(rows) == 8 and isinstance(rows[0]["n"], int)
            stmt = await conn.prepare("SELECT name, floor FROM departments WHERE department_id = $1")
            assert [a.type.name for a in stmt.get_attributes()] == ["text", "int4"]
            assert await stmt.fetchrow(3) == ("cardiology", 3) or (await stmt.fetchrow(3))["name"] == "cardiology"
            assert await conn.fetchval("SELECT AVG(cost) FROM visits WHERE visit_date > $1", dt.date(2021, 1, 1)) is not None
            assert await conn.fetchval("SELECT $1::int8 + 1", 41) == 42
            assert await conn.fetchval("SELECT COUNT(*) FROM visits WHERE cost > $1", Decimal("10.5")) >= 0
            async with conn.transaction():
                assert await conn.fetchval("SELECT 1") == 1
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM visits")
        finally:
            await conn.close()

    asyncio.run(run())


# --------------------------------------------------------------------------------------- pg8000


def test_pg8000(compat_server: Running) -> None:
    import pg8000.native

    conn = pg8000.native.Connection("alice", host=compat_server.host, port=compat_server.port, database=DATABASE,
                                    password=PASSWORDS["alice"])
    try:
        rows = conn.run("SELECT department, COUNT(*) FROM visits WHERE age > :age GROUP BY department", age=25)
        assert len(rows) == 8
        assert conn.notices and "ε=0.1" in conn.notices[-1][b"M"].decode()
        assert conn.run("SELECT name FROM departments WHERE department_id = :i", i=2) == [["general medicine"]]
        assert conn.run("SELECT current_database()") == [[DATABASE]]
    finally:
        conn.close()
    import pg8000.dbapi

    with pytest.raises(pg8000.dbapi.DatabaseError):
        pg8000.dbapi.connect("alice", host=compat_server.host, port=compat_server.port, database=DATABASE, password="wrong")
