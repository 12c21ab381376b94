"""The connection state machine without a socket: startup, auth, simple and extended query,
transactions, cursors, settings and errors, driven inline with ``run_sync``."""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import scramp
from pgclient import data_rows, errors, notices, row_description, tag, tags, types_of
from wirelib import DATABASE, PASSWORDS, write_policy

from dpsql.api import open_engine
from dpsql.proxy import commands
from dpsql.proxy.engine import Engine
from dpsql.proxy.wire import messages as m
from dpsql.proxy.wire.connection import Connection, ServerContext, route_statement, run_sync

Msgs = list[tuple[bytes, bytes]]


class Harness:
    """A Connection fed frontend bytes; returns the backend messages it produced."""

    def __init__(self, ctx: ServerContext, *, loopback: bool = True, address: str = "127.0.0.1") -> None:
        self.conn = Connection(ctx, address=address, loopback=loopback)
        self.decoder = m.FrameDecoder()

    def send(self, *chunks: bytes) -> Msgs:
        for msg in self.decoder.feed(b"".join(chunks)):
            run_sync(self.conn.handle(msg))
            if self.conn.closing:
                break
        out = bytes(self.conn.out)
        self.conn.out.clear()
        if out[:1] in (b"N", b"S") and (len(out) == 1):
            return [(out[:1], b"")]
        return m.decode_backend_stream(out)

    def start(self, user: str = "alice", database: str = DATABASE, **params: str) -> Msgs:
        return self.send(m.frontend_startup({"user": user, "database": database, **params}))

    def q(self, sql: str) -> Msgs:
        return self.send(m.frontend_query(sql))


@pytest.fixture(scope="module")
def trust_engine(tmp_path_factory: pytest.TempPathFactory, hospital_db: Path) -> Iterator[Engine]:
    limits = {"max_connections": 3, "max_connections_per_user": 3}
    policy = write_policy(tmp_path_factory.mktemp("conn-trust"), hospital_db, auth="trust", limits=limits)
    engine = open_engine(policy)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def scram_engine(tmp_path_factory: pytest.TempPathFactory, hospital_db: Path) -> Iterator[Engine]:
    policy = write_policy(tmp_path_factory.mktemp("conn-scram"), hospital_db)
    engine = open_engine(policy)
    yield engine
    engine.close()


@pytest.fixture
def ctx(trust_engine: Engine) -> ServerContext:
    return ServerContext(trust_engine, database=DATABASE)


@pytest.fixture
def h(ctx: ServerContext) -> Iterator[Harness]:
    harness = Harness(ctx)
    out = harness.start(application_name="tests")
    assert types_of(out).endswith("KZ"), out
    yield harness
    harness.conn.close()


def spent(h: Harness) -> float:
    """The session's spent privacy loss (ρ under zCDP)."""
    out = h.q("SELECT rho_spent FROM dpsql.budget WHERE scope = 'session'")
    return float(data_rows(out)[0][0] or 0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- startup


def test_startup_reports_parameters_and_key_data(ctx: ServerContext) -> None:
    harness = Harness(ctx)
    out = harness.start(application_name="psql", DateStyle="ISO")
    assert types_of(out)[0] == "R" and out[0][1] == struct.pack("!i", 0)
    status = dict(tuple(b.decode() for b in body.split(b"\0")[:2]) for t, body in out if t == b"S")
    assert status["server_version"].startswith("16.4")
    assert status["client_encoding"] == "UTF8"
    assert status["server_encoding"] == "UTF8"
    assert status["DateStyle"] == "ISO, MDY"
    assert status["TimeZone"] == "UTC"
    assert status["integer_datetimes"] == "on"
    assert status["standard_conforming_strings"] == "on"
    assert status["is_superuser"] == "off"
    assert status["session_authorization"] == "alice"
    assert status["application_name"] == "psql"
    assert "IntervalStyle" in status
    key = next(body for t, body in out if t == b"K")
    assert len(key) == 8 and struct.unpack("!i", key[:4])[0] == harness.conn.pid > 0
    assert out[-1] == (b"Z", b"I")
    harness.conn.close()


def test_startup_options_and_unknown_settings_apply(ctx: ServerContext) -> None:
    harness = Harness(ctx)
    harness.start(options="-c search_path=public -c statement_timeout=5s", extra_float_digits="3", TimeZone="Europe/Berlin")
    assert data_rows(harness.q("SHOW search_path")) == [[b"public"]]
    assert data_rows(harness.q("SHOW statement_timeout")) == [[b"5s"]]
    assert data_rows(harness.q("SHOW timezone")) == [[b"Europe/Berlin"]]
    harness.conn.close()


@pytest.mark.parametrize(
    ("params", "sqlstate"),
    [({"user": "alice", "database": "nope"}, "3D000"), ({"user": "mallory", "database": DATABASE}, "28000"),
     ({"database": DATABASE}, "28000"), ({"user": "alice", "database": DATABASE, "replication": "database"}, "42501"),
     ({"user": "alice", "database": DATABASE, "client_encoding": "LATIN1"}, "0A000"),
     ({"user": "alice", "database": DATABASE, "TimeZone": "Mars/Olympus"}, "22023")],
)
def test_startup_refusal_sqlstates(ctx: ServerContext, params: dict[str, str], sqlstate: str) -> None:
    harness = Harness(ctx)
    err = errors(harness.send(m.frontend_startup(params)))
    assert err[0]["C"] == sqlstate and err[0]["S"] == "FATAL"
    assert harness.conn.closing
    harness.conn.close()


def test_ssl_and_gss_requests_are_refused_without_tls(ctx: ServerContext) -> None:
    harness = Harness(ctx)
    assert harness.send(m.frontend_ssl_request()) == [(b"N", b"")]
    assert harness.send(m.frontend_gssenc_request()) == [(b"N", b"")]
    assert types_of(harness.start()).endswith("Z")
    harness.conn.close()


def test_plaintext_from_beyond_loopback_is_refused(ctx: ServerContext) -> None:
    harness = Harness(ctx, loopback=False, address="192.0.2.7")
    assert harness.send(m.frontend_ssl_request()) == [(b"N", b"")]
    err = errors(harness.start())
    assert err[0]["S"] == "FATAL" and err[0]["C"] == "28000" and "TLS" in err[0]["M"]
    assert harness.conn.closing


def test_protocol_versions(ctx: ServerContext) -> None:
    harness = Harness(ctx)
    err = errors(harness.send(m.frontend_startup({"user": "alice"}, version=2 << 16)))
    assert err[0]["C"] == "0A000"
    harness = Harness(ctx)
    out = harness.send(m.frontend_startup({"user": "alice", "database": DATABASE, "_pq_.compression": "on"}, version=(3 << 16) | 2))
    assert out[0][0] == b"v"
    minor, n = struct.unpack("!ii", out[0][1][:8])
    assert minor == 0 and n == 1 and b"_pq_.compression" in out[0][1]
    assert out[-1][0] == b"Z"
    harness.conn.close()


def test_max_connections(ctx: ServerContext) -> None:
    live = []
    for _ in range(3):
        harness = Harness(ctx)
        assert types_of(harness.start()).endswith("Z")
        live.append(harness)
    extra = Harness(ctx)
    err = errors(extra.start())
    assert err[0]["C"] == "53300"
    live.pop().conn.close()
    again = Harness(ctx)
    assert types_of(again.start()).endswith("Z")
    for harness in [*live, again]:
        harness.conn.close()
    assert ctx.active == 0


# ----------------------------------------------------------------------------------------- SCRAM


def _scram_login(ctx: ServerContext, user: str, password: str, *, address: str = "127.0.0.1") -> tuple[Harness, Msgs]:
    harness = Harness(ctx, address=address)
    out = harness.start(user=user)
    if out[-1][0] == b"E":
        return harness, out
    assert out[-1][0] == b"R" and struct.unpack("!i", out[-1][1][:4])[0] == 10
    assert b"SCRAM-SHA-256\0" in out[-1][1] and b"md5" not in out[-1][1].lower()
    client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    first = client.get_client_first().replace(f"n={user}", "n=").encode()  # libpq sends an empty SCRAM user name
    out = harness.send(m.frontend_message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
    assert out[-1][0] == b"R" and struct.unpack("!i", out[-1][1][:4])[0] == 11
    server_first = out[-1][1][4:].decode()
    client.client_first_bare = client.client_first_bare.replace(f"n={user}", "n=")
    client.set_server_first(server_first)
    out = harness.send(m.frontend_message(b"p", client.get_client_final().encode()))
    return harness, out


def test_scram_login(scram_engine: Engine) -> None:
    ctx = ServerContext(scram_engine, database=DATABASE)
    harness, out = _scram_login(ctx, "alice", PASSWORDS["alice"])
    assert types_of(out).startswith("RR") and out[-1] == (b"Z", b"I"), out
    assert out[0][1][:4] == struct.pack("!i", 12) and out[0][1][4:].startswith(b"v=")
    harness.conn.close()


def test_scram_wrong_password_and_unknown_user_look_alike(scram_engine: Engine) -> None:
    ctx = ServerContext(scram_engine, database=DATABASE)
    _, bad = _scram_login(ctx, "alice", "wrong")
    _, unknown = _scram_login(ctx, "nobody", "whatever")
    for out in (bad, unknown):
        err = errors(out)
        assert err[0]["C"] == "28P01" and err[0]["S"] == "FATAL"
    assert errors(unknown)[0]["M"].replace("nobody", "X") == errors(bad)[0]["M"].replace("alice", "X")


def test_login_lockout_after_five_failures(scram_engine: Engine) -> None:
    ctx = ServerContext(scram_engine, database=DATABASE)
    for _ in range(5):
        _, out = _scram_login(ctx, "bob", "wrong", address="10.0.0.9")
        assert errors(out)[0]["C"] == "28P01"
    _, out = _scram_login(ctx, "bob", PASSWORDS["bob"], address="10.0.0.9")
    assert errors(out)[0]["C"] == "28000" and "too many failed login attempts" in errors(out)[0]["M"]
    harness, out = _scram_login(ctx, "bob", PASSWORDS["bob"], address="10.0.0.10")  # another address is not locked
    assert out[-1] == (b"Z", b"I")
    harness.conn.close()


def test_scram_garbage_fails_cleanly(scram_engine: Engine) -> None:
    ctx = ServerContext(scram_engine, database=DATABASE)
    for payload in (b"", b"SCRAM-SHA-256\0", b"SCRAM-SHA-256\0\0\0\0\x05n,,zz", b"MD5\0\xff\xff\xff\xff", b"\xff" * 40):
        harness = Harness(ctx)
        harness.start()
        err = errors(harness.send(m.frontend_message(b"p", payload)))
        assert err and err[0]["S"] == "FATAL" and err[0]["C"] in ("28P01", "08P01")
        assert harness.conn.closing


# ------------------------------------------------------------------------------------ simple query


def test_multi_statement_query(h: Harness) -> None:
    out = h.q("SELECT 1 AS a; SELECT 'x;y' AS b")
    assert types_of(out) == "TDCTDCZ"
    assert data_rows(out) == [[b"1"], [b"x;y"]]
    assert row_description(out)[0] == ("a", 23, 4, 0)


def test_error_skips_the_rest_of_the_string(h: Harness) -> None:
    out = h.q("SELECT 1; SELECT * FROM visits; SELECT 3")
    assert types_of(out) == "TDCEZ"
    err = errors(out)[0]
    assert err["C"] == "42501" and err["S"] == "ERROR" and err["V"] == "ERROR" and err["H"]


def test_empty_query(h: Harness) -> None:
    assert types_of(h.q("")) == "IZ"
    assert types_of(h.q(" ;; -- nothing\n")) == "IZ"


def test_dp_query_sends_the_cost_notice(h: Harness) -> None:
    out = h.q("SELECT COUNT(*) AS n FROM visits")
    assert types_of(out) == "NTDCZ"
    note = notices(out)[0]
    assert note["S"] == "NOTICE" and "ε=0.1" in note["M"] and "remaining" in note["M"]
    assert tag(out) == "SELECT 1"


def test_session_commands_via_the_engine(h: Harness) -> None:
    assert tag(h.q("SET dp.epsilon = 0.25")) == "SET"
    assert data_rows(h.q("SHOW dp.epsilon")) == [[b"0.25"]]
    out = h.q("EXPLAIN SELECT COUNT(*) FROM visits")
    assert row_description(out)[0][0] == "QUERY PLAN" and len(data_rows(out)) > 2
    out = h.q("SELECT scope, epsilon_spent FROM dpsql.budget")
    assert [r[0] for r in data_rows(out)] == [b"session", b"user"]
    assert errors(h.q("SET dp.epsilon = 99"))[0]["C"] == "22023"


def test_unexpected_exceptions_become_internal_errors(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    assert h.conn.session is not None

    def boom(sql: str, command: Any = None) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(h.conn.session, "execute", boom)
    out = h.q("SELECT COUNT(*) FROM visits")
    err = errors(out)[0]
    assert err["C"] == "XX000" and err["M"] == "internal error" and "secret" not in str(err)
    assert out[-1] == (b"Z", b"I")
    monkeypatch.undo()
    assert types_of(h.q("SELECT 1")) == "TDCZ"


def test_statement_too_long(ctx: ServerContext, h: Harness) -> None:
    out = h.q("SELECT " + "1+" * 40_000 + "1")
    assert errors(out)[0]["C"] == "54000" and out[-1][0] == b"Z"


def test_oversized_and_unsupported_messages(h: Harness) -> None:
    out = h.send(m.frontend_message(b"F", b"\0\0\0\x01\0\0\0\0\0\0"))
    assert errors(out)[0]["C"] == "0A000" and out[-1][0] == b"Z"
    assert h.send(m.frontend_message(b"d", b"xx"), m.frontend_message(b"c")) == []
    run_sync(h.conn.handle(m.Oversized(b"P", 10**8)))
    out = m.decode_backend_stream(bytes(h.conn.out))
    h.conn.out.clear()
    assert errors(out)[0]["C"] == "54000"
    out = h.send(m.frontend_bind("", "nope"), m.FRONTEND_SYNC)
    assert types_of(out) == "Z"  # skipped until Sync


def test_garbage_after_startup_is_fatal(h: Harness) -> None:
    with pytest.raises(m.ProtocolViolation):
        h.decoder.feed(b"Z\0\0\0\x04")
    h.conn.protocol_violation(m.ProtocolViolation("invalid frontend message type"))
    err = m.parse_error_fields(m.decode_backend_stream(bytes(h.conn.out))[0][1])
    assert err["S"] == "FATAL" and err["C"] == "08P01"
    assert h.conn.closing


# ----------------------------------------------------------------------------------- transactions


def test_transaction_status(h: Harness) -> None:
    assert h.q("BEGIN")[-1] == (b"Z", b"T")
    out = h.q("SELECT * FROM visits")
    assert out[-1] == (b"Z", b"E")
    out = h.q("SELECT 1")
    assert errors(out)[0]["C"] == "25P02" and out[-1] == (b"Z", b"E")
    out = h.q("COMMIT")
    assert tag(out) == "ROLLBACK" and out[-1] == (b"Z", b"I")
    out = h.q("BEGIN READ ONLY; SELECT 1; END")
    assert tags(out) == ["BEGIN", "SELECT 1", "COMMIT"] and out[-1] == (b"Z", b"I")
    out = h.q("START TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    assert out[-1] == (b"Z", b"T")
    out = h.q("BEGIN")
    assert notices(out)[0]["C"] == "25001" and notices(out)[0]["S"] == "WARNING"
    assert h.q("ROLLBACK")[-1] == (b"Z", b"I")
    out = h.q("COMMIT")
    assert notices(out)[0]["C"] == "25P01" and tag(out) == "COMMIT"


def test_savepoints(h: Harness) -> None:
    assert errors(h.q("SAVEPOINT a"))[0]["C"] == "25P01"
    h.q("BEGIN")
    assert tag(h.q("SAVEPOINT a")) == "SAVEPOINT"
    h.q("SET application_name = 'inside'")
    assert h.q("SELECT nope()")[-1] == (b"Z", b"E")
    out = h.q("ROLLBACK TO SAVEPOINT a")
    assert tag(out) == "ROLLBACK" and out[-1] == (b"Z", b"T")
    assert data_rows(h.q("SHOW application_name")) == [[b"tests"]]
    assert tag(h.q("RELEASE SAVEPOINT a")) == "RELEASE"
    assert errors(h.q("RELEASE b"))[0]["C"] == "3B001"
    h.q("ROLLBACK")


def test_rollback_undoes_set_and_set_local_ends_with_the_transaction(h: Harness) -> None:
    h.q("BEGIN")
    out = h.q("SET application_name = 'x'")
    h.q("ROLLBACK")
    assert data_rows(h.q("SHOW application_name")) == [[b"tests"]]
    h.q("BEGIN")
    h.q("SET LOCAL application_name = 'y'")
    assert data_rows(h.q("SHOW application_name")) == [[b"y"]]
    out = h.q("COMMIT")
    assert data_rows(h.q("SHOW application_name")) == [[b"tests"]]
    assert out[-1] == (b"Z", b"I")


# ------------------------------------------------------------------------------------- settings


def test_set_show_reset_and_parameter_status(h: Harness) -> None:
    out = h.q("SET application_name = 'my app'")
    assert (b"S", b"application_name\0my app\0") in out and out[-1][0] == b"Z"
    out = h.q("SET TIME ZONE 'Europe/Berlin'")
    assert (b"S", b"TimeZone\0Europe/Berlin\0") in out
    assert data_rows(h.q("SHOW TIME ZONE")) == [[b"Europe/Berlin"]]
    assert row_description(h.q("SHOW timezone"))[0][0] == "TimeZone"
    assert data_rows(h.q("SHOW transaction isolation level")) == [[b"read committed"]]
    assert data_rows(h.q("SHOW server_version_num")) == [[b"160004"]]
    h.q("SET search_path TO public, \"$user\"")
    assert data_rows(h.q("SHOW search_path")) == [[b'public, "$user"']]
    h.q("SET SESSION extra_float_digits = 3")
    h.q("set my.custom = 5")
    assert data_rows(h.q("SHOW my.custom")) == [[b"5"]]
    assert errors(h.q("SHOW no_such_thing"))[0]["C"] == "42704"
    assert errors(h.q("SET TimeZone = 'Mars/Olympus'"))[0]["C"] == "22023"
    assert errors(h.q("SET server_version = '1'"))[0]["C"] == "55P02"
    assert errors(h.q("SET ROLE postgres"))[0]["C"] == "42501"
    assert tag(h.q("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")) == "SET"
    assert tag(h.q("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")) == "SET"
    out = h.q("RESET TIME ZONE")
    assert (b"S", b"TimeZone\0UTC\0") in out
    out = h.q("RESET ALL")
    assert (b"S", b"application_name\0tests\0") in out
    show_all = h.q("SHOW ALL")
    assert [c[0] for c in row_description(show_all)] == ["name", "setting", "description"] and len(data_rows(show_all)) > 10


def test_discard_all_deallocate_listen(h: Harness) -> None:
    h.send(m.frontend_parse("s1", "SELECT 1"), m.FRONTEND_SYNC)
    assert tag(h.q("DEALLOCATE s1")) == "DEALLOCATE"
    assert errors(h.q("DEALLOCATE s1"))[0]["C"] == "26000"
    h.send(m.frontend_parse("s2", "SELECT 1"), m.FRONTEND_SYNC)
    h.q("SET application_name = 'changed'")
    h.q("SET dp.epsilon = 0.5")
    assert tag(h.q("DISCARD ALL")) == "DISCARD ALL"
    assert data_rows(h.q("SHOW application_name")) == [[b"tests"]]
    assert data_rows(h.q("SHOW dp.epsilon")) == [[b"0.1"]]
    assert "s2" not in h.conn.statements
    assert tags(h.q("LISTEN x; UNLISTEN *")) == ["LISTEN", "UNLISTEN"]
    h.q("BEGIN")
    assert errors(h.q("DISCARD ALL"))[0]["C"] == "25001"
    h.q("ROLLBACK")


# -------------------------------------------------------------------------------------- cursors


def test_cursors_page_through_one_charged_result(h: Harness) -> None:
    before = spent(h)
    out = h.q("BEGIN; DECLARE c NO SCROLL CURSOR FOR SELECT department, COUNT(*) FROM visits GROUP BY department")
    assert tags(out) == ["BEGIN", "DECLARE CURSOR"] and notices(out)
    after_declare = spent(h)
    assert after_declare > before
    out = h.q("FETCH 3 FROM c")
    assert tag(out) == "FETCH 3" and len(data_rows(out)) == 3 and types_of(out) == "TDDDCZ"
    out = h.q("FETCH FORWARD ALL IN c")
    assert tag(out) == "FETCH 5"
    assert tag(h.q("FETCH NEXT FROM c")) == "FETCH 0"
    assert tag(h.q("MOVE ABSOLUTE 1 IN c")) == "MOVE 1"
    assert tag(h.q("FETCH BACKWARD 5 FROM c")) == "FETCH 0"
    assert tag(h.q("FETCH LAST FROM c")) == "FETCH 1"
    assert tag(h.q("CLOSE c")) == "CLOSE CURSOR"
    assert errors(h.q("FETCH 1 FROM c"))[0]["C"] == "34000"
    h.q("ROLLBACK")
    assert spent(h) == pytest.approx(after_declare)


def test_tableau_odbc_cursor_sequence(h: Harness) -> None:
    out = h.q('BEGIN;declare "SQL_CUR0x7f" cursor with hold for SELECT department_id, name FROM departments;'
              'fetch 100 in "SQL_CUR0x7f"')
    assert tags(out) == ["BEGIN", "DECLARE CURSOR", "FETCH 8"]
    assert row_description(out)[0][:2] == ("department_id", 23)
    out = h.q('close "SQL_CUR0x7f";COMMIT')
    assert tags(out) == ["CLOSE CURSOR", "COMMIT"] and out[-1] == (b"Z", b"I")


def test_cursor_rules(h: Harness) -> None:
    assert errors(h.q("DECLARE c CURSOR FOR SELECT 1"))[0]["C"] == "25P01"
    assert tag(h.q("DECLARE h BINARY CURSOR WITH HOLD FOR SELECT 7 AS x")) == "DECLARE CURSOR"
    out = h.q("FETCH ALL FROM h")
    assert row_description(out)[0][3] == 1 and data_rows(out) == [[struct.pack("!i", 7)]]
    h.q("BEGIN")
    h.q("DECLARE t CURSOR FOR SELECT 1")
    assert errors(h.q("DECLARE t CURSOR FOR SELECT 1"))[0]["C"] == "42P03"
    h.q("COMMIT")
    assert errors(h.q("FETCH 1 FROM t"))[0]["C"] == "34000"  # closed at commit
    assert tag(h.q("CLOSE ALL")) == "CLOSE CURSOR"


# -------------------------------------------------------------------------------- extended query


def test_extended_query_with_parameters(h: Harness) -> None:
    out = h.send(
        m.frontend_parse("", "SELECT COUNT(*) AS n FROM visits WHERE age > $1 AND sex = $2"),
        m.frontend_describe("S", ""),
        m.frontend_bind("", "", [b"30", b"F"]),
        m.frontend_describe("P", ""),
        m.frontend_execute("", 0),
        m.FRONTEND_SYNC,
    )
    assert types_of(out) == "1tT2TNDCZ"
    pd = next(body for t, body in out if t == b"t")
    assert struct.unpack("!hII", pd) == (2, 23, 25)
    assert row_description(out)[0] == ("n", 20, 8, 0)
    assert tag(out) == "SELECT 1"


def test_describe_plans_but_never_charges(h: Harness) -> None:
    before = spent(h)
    out = h.send(m.frontend_parse("s", "SELECT AVG(cost) FROM visits WHERE age > $1"), m.frontend_describe("S", "s"),
                 m.frontend_bind("p", "s", [b"50"]), m.frontend_describe("P", "p"), m.FRONTEND_SYNC)
    assert types_of(out) == "1tT2TZ"
    assert spent(h) == before
    out = h.send(m.frontend_execute("p"), m.FRONTEND_SYNC)
    assert spent(h) > before
    assert types_of(out) == "NDCZ"


def test_refused_query_fails_at_describe(h: Harness) -> None:
    out = h.send(m.frontend_parse("", "SELECT * FROM visits"), m.frontend_describe("S", ""), m.frontend_bind("", ""),
                 m.frontend_execute(""), m.FRONTEND_SYNC)
    assert types_of(out) == "1tEZ"
    assert errors(out)[0]["C"] == "42501"


def test_binary_results_and_row_limits(h: Harness) -> None:
    out = h.send(m.frontend_parse("d", "SELECT department_id, name, floor FROM departments ORDER BY department_id"),
                 m.frontend_bind("cur", "d", result_formats=[1]), m.frontend_describe("P", "cur"),
                 m.frontend_execute("cur", 3), m.FRONTEND_SYNC)
    assert types_of(out) == "12TDDDsZ"
    rd = row_description(out)
    assert [f[3] for f in rd] == [1, 1, 1]
    rows = data_rows(out)
    assert rows[0][0] == struct.pack("!i", 1) and rows[0][1] == b"emergency"
    out = h.send(m.frontend_execute("cur", 3), m.frontend_execute("cur", 3), m.FRONTEND_SYNC)
    assert types_of(out) == "DDDsDDCZ"
    assert tag(out) == "SELECT 2"


def test_named_statement_reuse_and_errors(h: Harness) -> None:
    out = h.send(m.frontend_parse("st", "SELECT $1::int4 + 1 AS x"), m.FRONTEND_SYNC)
    assert types_of(out) == "1Z"
    assert errors(h.send(m.frontend_parse("st", "SELECT 1"), m.FRONTEND_SYNC))[0]["C"] == "42P05"
    for v in (b"1", b"41"):
        out = h.send(m.frontend_bind("", "st", [v]), m.frontend_execute(""), m.FRONTEND_SYNC)
        assert types_of(out) == "2DCZ"
    assert data_rows(out) == [[b"42"]]
    out = h.send(m.frontend_bind("", "st", [b"x"]), m.frontend_execute(""), m.FRONTEND_SYNC)
    assert errors(out)[0]["C"] == "22P02" and types_of(out) == "EZ"
    out = h.send(m.frontend_bind("", "st", []), m.FRONTEND_SYNC)
    assert errors(out)[0]["C"] == "08P01"
    out = h.send(m.frontend_bind("", "missing"), m.FRONTEND_SYNC)
    assert errors(out)[0]["C"] == "26000"
    out = h.send(m.frontend_describe("P", "missing"), m.FRONTEND_SYNC)
    assert errors(out)[0]["C"] == "34000"
    out = h.send(m.frontend_close("S", "st"), m.frontend_close("P", "nope"), m.FRONTEND_SYNC)
    assert types_of(out) == "33Z"
    out = h.send(m.frontend_parse("", "SELECT 1; SELECT 2"), m.FRONTEND_SYNC)
    assert errors(out)[0]["C"] == "42601"


def test_extended_transaction_and_empty_statement(h: Harness) -> None:
    out = h.send(m.frontend_parse("", "BEGIN"), m.frontend_bind("", ""), m.frontend_execute(""), m.FRONTEND_SYNC)
    assert out[-1] == (b"Z", b"T")
    out = h.send(m.frontend_parse("", ""), m.frontend_bind("", ""), m.frontend_describe("P", ""), m.frontend_execute(""),
                 m.FRONTEND_SYNC)
    assert types_of(out) == "12nIZ"
    out = h.send(m.frontend_parse("", "SELECT nope()"), m.frontend_bind("", ""), m.frontend_execute(""), m.FRONTEND_SYNC)
    assert out[-1] == (b"Z", b"E")
    out = h.send(m.frontend_parse("", "SELECT 1"), m.FRONTEND_SYNC)
    assert errors(out)[0]["C"] == "25P02"
    out = h.send(m.frontend_parse("", "ROLLBACK"), m.frontend_bind("", ""), m.frontend_execute(""), m.FRONTEND_SYNC)
    assert out[-1] == (b"Z", b"I")


def test_binary_parameters(h: Harness) -> None:
    from decimal import Decimal

    from dpsql.proxy.wire.types import encode_numeric_binary

    out = h.send(
        m.frontend_parse("", "SELECT COUNT(*) FROM visits WHERE cost > $1 AND age < $2", [1700, 20]),
        m.frontend_bind("", "", [encode_numeric_binary(Decimal("100.50")), struct.pack("!q", 60)], [1], [1]),
        m.frontend_execute(""),
        m.FRONTEND_SYNC,
    )
    assert types_of(out) == "12NDCZ", errors(out)
    assert len(data_rows(out)[0][0] or b"") == 8


def test_cancel_matches_the_secret(h: Harness, ctx: ServerContext) -> None:
    assert not ctx.cancel(h.conn.pid, b"\0\0\0\0" if h.conn.secret != b"\0\0\0\0" else b"\1\1\1\1")
    assert ctx.cancel(h.conn.pid, h.conn.secret)
    assert not ctx.cancel(h.conn.pid + 1 if h.conn.pid + 1 not in ctx.backends else 0, h.conn.secret)


def test_set_dp_to_default_resets(h: Harness) -> None:
    h.q("SET dp.epsilon = 0.7")
    assert tag(h.q("SET dp.epsilon TO DEFAULT")) == "SET"
    assert data_rows(h.q("SHOW dp.epsilon")) == [[b"0.1"]]


def test_each_statement_is_classified_once(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The router's classification is what the engine session acts on: neither classifies again.
    calls: list[str] = []
    real = commands.classify

    def counting(sql: str) -> commands.Command:
        calls.append(sql)
        return real(sql)

    monkeypatch.setattr(commands, "classify", counting)
    monkeypatch.setattr(sys.modules[route_statement.__module__], "classify", counting)
    for sql in ("SELECT COUNT(*) AS once_a FROM visits", "EXPLAIN SELECT COUNT(*) AS once_b FROM visits",
                "SET dp.epsilon = 0.25", "SHOW dp.epsilon", "SELECT scope FROM dpsql.budget WHERE scope <> 'once'"):
        calls.clear()
        out = h.q(sql)
        assert not errors(out) and calls == [sql], (sql, calls, errors(out))
    calls.clear()
    sql = "SELECT COUNT(*) AS once_c FROM visits WHERE age > $1"
    out = h.send(m.frontend_parse("", sql), m.frontend_bind("", "", [b"40"]), m.frontend_execute(""), m.FRONTEND_SYNC)
    assert not errors(out) and tag(out) == "SELECT 1" and calls == [sql]


def test_a_parameter_value_never_changes_the_route(h: Harness) -> None:
    # Classified before Bind: a value that names dpsql.budget leaves the query a DP query.
    before = spent(h)
    out = h.send(m.frontend_parse("", "SELECT COUNT(*) AS n FROM visits WHERE sex = $1"), m.frontend_bind("", "", [b"dpsql.budget"]),
                 m.frontend_execute(""), m.FRONTEND_SYNC)
    assert not errors(out) and tag(out) == "SELECT 1"
    assert spent(h) > before


def test_execute_encodes_with_the_described_types(h: Harness) -> None:
    # asyncpg: Describe(statement) first, then Bind with binary results and Execute without Describe(portal)
    out = h.send(m.frontend_parse("a1", "SELECT floor FROM departments WHERE department_id = $1"), m.frontend_describe("S", "a1"),
                 m.FRONTEND_SYNC)
    assert row_description(out)[0][:2] == ("floor", 23)
    out = h.send(m.frontend_bind("", "a1", [struct.pack("!i", 3)], [1], [1]), m.frontend_execute(""), m.FRONTEND_SYNC)
    assert data_rows(out) == [[struct.pack("!i", 3)]]


def test_dp_settings_in_startup_options_go_to_the_engine(ctx: ServerContext) -> None:
    harness = Harness(ctx)
    assert types_of(harness.start(options="-c dp.epsilon=0.5 -c application_name=x")).endswith("Z")
    assert data_rows(harness.q("SHOW dp.epsilon")) == [[b"0.5"]]
    assert data_rows(harness.q("SHOW application_name")) == [[b"x"]]
    harness.conn.close()
    harness = Harness(ctx)
    err = errors(harness.start(options="-c dp.epsilon=50"))
    assert err[0]["C"] == "22023" and err[0]["S"] == "FATAL"
    harness.conn.close()


def test_syntax_errors_carry_a_position(h: Harness) -> None:
    err = errors(h.q("SELECT 1; SELECT COUNT(* FROM visits"))[0]
    assert err["C"] == "42601" and err["P"] == str(len("SELECT 1; SELECT COUNT(* ") + 1)
    out = h.send(m.frontend_parse("", "SELECT FROM WHERE x"), m.frontend_bind("", ""), m.frontend_execute(""), m.FRONTEND_SYNC)
    assert errors(out)[0]["P"] == "13"
