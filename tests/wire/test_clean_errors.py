"""Clean PostgreSQL-like errors over the wire (issue 9, item 6): multi-query strings (R31), SET of
names dpsql does not implement, CHECKPOINT, LIMIT/OFFSET and division by zero, each with the
SQLSTATE PostgreSQL 15 gives (checked against a real server: tests/postgres/test_pg_sqlstates.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pgclient import data_rows, errors, tags, types_of
from test_connection import Harness, spent
from wirelib import DATABASE, write_policy

from dpsql.api import open_engine
from dpsql.proxy.engine import Engine
from dpsql.proxy.wire.connection import ServerContext

PRIVATE = "SELECT COUNT(*) FROM visits"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, hospital_db: Path) -> Iterator[Engine]:
    policy = write_policy(tmp_path_factory.mktemp("clean-errors"), hospital_db, auth="trust")
    eng = open_engine(policy)
    yield eng
    eng.close()


@pytest.fixture
def h(engine: Engine) -> Iterator[Harness]:
    harness = Harness(ServerContext(engine, database=DATABASE))
    assert types_of(harness.start(application_name="tests")).endswith("KZ")
    yield harness
    harness.conn.close()


# ----------------------------------------------------------------------------- R31: one private query per string


@pytest.mark.parametrize("sql", [
    f"{PRIVATE}; {PRIVATE}",
    f"SET dp.epsilon = 0.5; {PRIVATE}; SELECT SUM(age) FROM visits",
    f"SELECT 1; {PRIVATE}; SHOW dp.epsilon; {PRIVATE} WHERE age > 30",
    f"BEGIN; DECLARE c CURSOR FOR {PRIVATE}; {PRIVATE}; COMMIT",
])  # fmt: skip
def test_two_private_queries_in_one_string_are_refused_up_front(h: Harness, sql: str) -> None:
    before = spent(h)
    out = h.q(sql)
    assert types_of(out) == "EZ"  # nothing ran: not even the SET, BEGIN or SELECT 1 before them
    err = errors(out)[0]
    assert err["C"] == "0A000" and err["S"] == "ERROR"
    assert "differentially private queries" in err["M"] and "ran none of the statements" in err["M"]
    assert "in its own message" in err["H"]
    assert spent(h) == before
    assert data_rows(h.q("SHOW dp.epsilon")) == [[b"0.1"]]  # the SET in the refused string did not apply
    assert out[-1] == (b"Z", b"I")


@pytest.mark.parametrize(("sql", "expected"), [
    (f"SET dp.epsilon = 0.5; {PRIVATE}", ["SET", "SELECT 1"]),
    (f"SELECT 1; SELECT * FROM departments; {PRIVATE}; SHOW dp.epsilon", ["SELECT 1", "SELECT 8", "SELECT 1", "SHOW"]),
    ("SELECT 1; SELECT 2; SELECT COUNT(*) FROM departments", ["SELECT 1", "SELECT 1", "SELECT 1"]),
    (f"EXPLAIN {PRIVATE}; EXPLAIN {PRIVATE}; SELECT * FROM dpsql.budget", None),
])  # fmt: skip
def test_one_private_query_with_settings_and_public_statements_runs(h: Harness, sql: str, expected: list[str] | None) -> None:
    out = h.q(sql)
    assert not errors(out), errors(out)
    if expected is not None:
        assert tags(out) == expected


def test_a_failing_statement_does_not_count_as_private(h: Harness) -> None:
    """A statement that does not rewrite fails in its turn, after the ones before it, as in PostgreSQL."""
    out = h.q(f"{PRIVATE}; SELECT COUNT(* FROM visits")
    assert tags(out) == ["SELECT 1"] and errors(out)[0]["C"] == "42601"


# ----------------------------------------------------------------------------- SET of names dpsql does not implement


@pytest.mark.parametrize("sql", ["SET foo = 1", "SET work_mem = '64MB'", "SET SESSION enable_seqscan TO off",
                                 "SET LOCAL geqo = off", "RESET foo", "SET foo TO DEFAULT"])  # fmt: skip
def test_unknown_setting_is_42704_and_never_echoed(h: Harness, sql: str) -> None:
    name = sql.split()[2 if sql.split()[1].upper() in ("SESSION", "LOCAL") else 1].lower()
    out = h.q(sql)
    err = errors(out)[0]
    assert err["C"] == "42704" and err["M"] == f'unrecognized configuration parameter "{name}"'
    assert "SHOW ALL" in err["H"]
    assert not [body for t, body in out if t == b"S"]  # no ParameterStatus
    assert errors(h.q(f"SHOW {name}"))[0]["C"] == "42704"
    assert errors(h.q(f"SELECT current_setting('{name}')"))  # the catalog does not know it either


@pytest.mark.parametrize("sql", [
    "SET application_name = 'x'", "SET extra_float_digits = 3", "SET DateStyle = 'ISO'", "SET datestyle TO 'ISO, MDY'",
    "SET client_encoding = 'UTF8'", "SET NAMES 'UTF8'", "SET search_path = public", "SET statement_timeout = '5s'",
    "SET TimeZone = 'UTC'", "SET TIME ZONE 'Europe/Berlin'", "SET IntervalStyle = postgres",
    "SET standard_conforming_strings = on", "SET lock_timeout = '1s'", "SET idle_in_transaction_session_timeout = 0",
    "SET bytea_output = 'hex'", "SET client_min_messages = warning", "SET jit = off", "SET myapp.tenant = '7'",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "SET default_transaction_isolation = 'read committed'",
])  # fmt: skip
def test_settings_clients_send_are_kept(h: Harness, sql: str) -> None:
    assert tags(h.q(sql)) == ["SET"], errors(h.q(sql))


@pytest.mark.parametrize(("sql", "sqlstate"), [
    ("SET DateStyle = 'German'", "0A000"), ("SET datestyle = 'SQL, DMY'", "0A000"), ("SET IntervalStyle = iso_8601", "0A000"),
    ("SET bytea_output = escape", "0A000"), ("SET extra_float_digits = 9", "22023"),
])  # fmt: skip
def test_values_dpsql_cannot_honour_are_refused(h: Harness, sql: str, sqlstate: str) -> None:
    name = sql.split()[1].lower()
    before = data_rows(h.q(f"SHOW {name}"))
    assert errors(h.q(sql))[0]["C"] == sqlstate
    assert data_rows(h.q(f"SHOW {name}")) == before


def test_unknown_startup_parameter_is_fatal_42704(engine: Engine) -> None:
    harness = Harness(ServerContext(engine, database=DATABASE))
    out = harness.start(work_mem="64MB")
    err = errors(out)[0]
    assert (err["S"], err["C"], err["M"]) == ("FATAL", "42704", 'unrecognized configuration parameter "work_mem"')
    assert harness.conn.closing
    harness.conn.close()
    ok = Harness(ServerContext(engine, database=DATABASE))
    assert types_of(ok.start(DateStyle="ISO", extra_float_digits="3", TimeZone="UTC", client_encoding="UTF8")).endswith("KZ")
    ok.conn.close()


def test_startup_below_the_probe_floor_is_fatal_22023(engine: Engine) -> None:
    """PGOPTIONS='-c dp.epsilon=0.001' goes through the same floor as SET dp.epsilon."""
    harness = Harness(ServerContext(engine, database=DATABASE))
    err = errors(harness.start(options="-c dp.epsilon=0.001"))[0]
    assert (err["S"], err["C"]) == ("FATAL", "22023") and "min_epsilon_per_query" in err["M"]
    harness.conn.close()


# ----------------------------------------------------------------------------- CHECKPOINT, LIMIT/OFFSET, x/0


@pytest.mark.parametrize(("sql", "sqlstate", "message"), [
    ("CHECKPOINT", "42501", "must be superuser or have privileges of pg_checkpoint to do CHECKPOINT"),
    (f"{PRIVATE} LIMIT -1", "2201W", "LIMIT must not be negative"),
    (f"{PRIVATE} OFFSET -1", "2201X", "OFFSET must not be negative"),
    (f"{PRIVATE} OFFSET 99999999999999999999", "22003", "bigint out of range"),
    (f"{PRIVATE} LIMIT 9223372036854775808", "22003", "bigint out of range"),
    (f"{PRIVATE} LIMIT 'abc'", "22P02", 'invalid input syntax for type bigint: "abc"'),
    ("SELECT COUNT(*)/0 FROM visits", "22012", "division by zero"),
    ("SELECT sex, COUNT(*) FROM visits GROUP BY sex HAVING 1/0 > 0", "22012", "division by zero"),
    ("SELECT * FROM departments LIMIT -1", "2201W", "LIMIT must not be negative"),
    ("SELECT foo FROM dpsql.budget", "42703", 'column "foo" does not exist'),
])  # fmt: skip
def test_refused_for_free_with_postgres_sqlstate(h: Harness, sql: str, sqlstate: str, message: str) -> None:
    before = spent(h)
    err = errors(h.q(sql))[0]
    assert (err["C"], err["M"]) == (sqlstate, message)
    assert err.get("H")
    assert spent(h) == before
    # the same statement through the extended protocol
    from dpsql.proxy.wire import messages as m

    out = h.send(m.frontend_parse("", sql), m.frontend_bind("", ""), m.frontend_execute(""), m.FRONTEND_SYNC)
    assert errors(out)[0]["C"] == sqlstate
    assert spent(h) == before


def test_huge_limit_within_bigint_is_accepted(h: Harness) -> None:
    assert tags(h.q(f"{PRIVATE} LIMIT 9223372036854775807 OFFSET 0")) == ["SELECT 1"]
    assert tags(h.q(f"{PRIVATE} OFFSET 9223372036854775807")) == ["SELECT 0"]
    assert tags(h.q(f"{PRIVATE} LIMIT NULL")) == ["SELECT 1"]
