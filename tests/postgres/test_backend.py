"""PostgresBackend (security.md R27, R28): start-up checks, lockdown (read-only, pinned search path,
SELECT-only role), statement timeout and cancel (57014), and engine text that never reaches an error."""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pgenv import PgEnv, policy_text, source_line

from dpsql.errors import DPSQLError, ExecutionFailed, PolicyError, QueryCanceled, UnsupportedQuery
from dpsql.policy import Policy, load_policy
from dpsql.proxy.backends.postgres import PostgresBackend
from dpsql.rewriter import rewrite
from dpsql.schema import build_catalog

pytestmark = pytest.mark.postgres

DIAGNOSES = ("J06", "I10", "R07", "M54", "E11", "S52", "K21", "A09")


def _chain_text(e: BaseException) -> str:
    """Everything an error could carry: message, hint, chained exceptions and formatted traceback."""
    parts = [str(e), repr(e), "".join(traceback.format_exception(e))]
    seen = e.__cause__ or e.__context__
    while seen is not None:
        parts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.fixture
def make_policy(tmp_path: Path, pg: PgEnv) -> Callable[..., Policy]:
    def make(source: str | None = None, **options: object) -> Policy:
        path = tmp_path / f"policy-{len(list(tmp_path.glob('policy-*')))}.toml"
        path.write_text(policy_text(source or source_line(pg, "postgres"), ledger=f'path = "{tmp_path / "ledger.sqlite"}"',
                                    **options))  # type: ignore[arg-type]
        return load_policy(path)

    return make


@pytest.fixture
def backend(make_policy: Callable[..., Policy]) -> Iterator[PostgresBackend]:
    b = PostgresBackend(make_policy())
    yield b
    b.close()


@pytest.fixture(scope="module")
def shared(pg: PgEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresBackend]:
    """One backend for the tests that only read."""
    d = tmp_path_factory.mktemp("pgshared")
    (d / "p.toml").write_text(policy_text(source_line(pg, "postgres"), ledger=f'path = "{d / "l.sqlite"}"'))
    b = PostgresBackend(load_policy(d / "p.toml"), pg.reader_dsn)
    yield b
    b.close()


# --- describe and start-up -------------------------------------------------------------------


def test_describe_reads_types_from_the_catalog(shared: PostgresBackend) -> None:
    d = shared.describe()
    assert set(d) == {"public.visits", "public.patients", "public.departments"}
    assert d["public.visits"] == [
        ("visit_id", "int8"), ("patient_id", "int8"), ("visit_date", "date"), ("department_id", "int4"), ("department", "text"),
        ("diagnosis", "text"), ("age", "int4"), ("sex", "text"), ("cost", "float8"), ("length_of_stay", "int4"),
    ]  # fmt: skip
    assert d["public.departments"] == [("department_id", "int4"), ("name", "text"), ("floor", "int4"), ("building", "text")]
    shared.describe()["public.visits"].clear()  # a copy each time
    assert shared.describe()["public.visits"]


def test_describe_matches_duckdb(shared: PostgresBackend, make_policy: Callable[..., Policy], pg: PgEnv) -> None:
    """The same data served by both engines gives the same visible schema."""
    from dpsql.proxy.backends.duckdb import DuckDBBackend

    policy = make_policy(source_line(pg, "duckdb"))
    with DuckDBBackend(policy) as duck:
        assert build_catalog(policy, duck.describe()) .tables == build_catalog(policy, shared.describe()).tables


def test_policy_dsn_is_used(make_policy: Callable[..., Policy]) -> None:
    """PostgresBackend(policy) without a DSN uses [source] postgres; dpsql.api.open_backend picks it."""
    from dpsql.api import open_backend

    policy = make_policy()
    with open_backend(policy) as b:
        assert isinstance(b, PostgresBackend) and b.dialect == "postgres"


def _refused(policy: Policy, dsn: str | None = None) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        PostgresBackend(policy, dsn).close()
    return e.value


def test_missing_table_is_refused_naming_the_key(make_policy: Callable[..., Policy], pg: PgEnv) -> None:
    extra = "[tables.nosuch]\nprivacy_unit = \"patient_id\"\n"
    e = _refused(make_policy(extra=extra))
    assert e.key == "tables.nosuch" and "public.nosuch" in e.problem


def test_table_without_select_is_refused(make_policy: Callable[..., Policy], pg: PgEnv) -> None:
    pg.sql("CREATE TABLE public.secret_table (patient_id int8, x int4)")
    try:
        e = _refused(make_policy(extra="[tables.secret_table]\nprivacy_unit = \"patient_id\"\n"))
        assert e.key == "tables.secret_table" and "SELECT" in e.problem
    finally:
        pg.sql("DROP TABLE public.secret_table")


def test_unique_indexes_are_not_trusted_on_postgres(make_policy: Callable[..., Policy], pg: PgEnv) -> None:
    """A table owner can drop a unique index while dpsql serves, so PostgreSQL tables never take
    the one-row-per-unit path: even with a PRIMARY KEY on the unit the general bounded SQL runs
    (and gives the same exact answer as DuckDB's one-row path on the same data)."""
    pg.sql(
        "CREATE TABLE public.people (pid int8 PRIMARY KEY, age int4)",
        "INSERT INTO public.people SELECT i, (i * 7) % 100 FROM generate_series(1, 500) i",
        "GRANT SELECT ON public.people TO reader",
    )
    try:
        policy = make_policy(extra='[tables.people]\nprivacy_unit = "pid"\ncolumns = { age = { lower = 0, upper = 100 } }\n')
        b = PostgresBackend(policy)
        try:
            assert b.unique_columns() == {}
            rw = rewrite("SELECT COUNT(*), AVG(age) FROM people", build_catalog(policy, b.describe(), b.unique_columns()),
                         dialect="postgres")
            assert "GROUP BY __dp_uid" in rw.sql
            fast = rewrite("SELECT COUNT(*), AVG(age) FROM people",
                           build_catalog(policy, b.describe(), {"public.people": frozenset({"pid"})}), dialect="postgres")
            assert "GROUP BY __dp_uid" not in fast.sql
            s = b.session()
            try:
                assert s.execute(fast.sql).rows == s.execute(rw.sql).rows
            finally:
                s.close()
        finally:
            b.close()
    finally:
        pg.sql("DROP TABLE public.people")


@pytest.mark.parametrize("grant", [
    "GRANT INSERT ON public.visits TO reader",
    "GRANT TRUNCATE ON public.departments TO reader",
    "GRANT CREATE ON SCHEMA public TO reader",
    "GRANT CREATE ON SCHEMA public TO PUBLIC",
])  # fmt: skip
def test_a_role_that_can_write_is_refused(make_policy: Callable[..., Policy], pg: PgEnv, grant: str) -> None:
    """R28: the upstream role may only SELECT the policy tables, and nobody may CREATE in a schema
    of the pinned search path (a planted function could shadow a built-in: CVE-2018-1058)."""
    pg.sql(grant)
    try:
        e = _refused(make_policy())
        assert e.key in ("tables.visits", "tables.departments", "source.postgres")
        assert "write" in e.problem or "CREATE" in e.problem
    finally:
        pg.sql(grant.replace("GRANT", "REVOKE").replace(" TO ", " FROM "))
    PostgresBackend(make_policy()).close()  # and fine again after the REVOKE


def test_superuser_is_refused(make_policy: Callable[..., Policy], pg: PgEnv) -> None:
    e = _refused(make_policy(), pg.admin_dsn)
    assert e.key == "source.postgres" and "superuser" in e.problem


def test_unreachable_or_bad_login_is_refused_without_the_password(make_policy: Callable[..., Policy], pg: PgEnv) -> None:
    policy = make_policy()
    bad_pw = pg.reader_dsn.replace(pg.cluster.passwords["reader"], "wrong-password-123")
    e = _refused(policy, bad_pw)
    assert e.key == "source.postgres" and "wrong-password-123" not in str(e)
    e = _refused(policy, "postgresql://reader:x@127.0.0.1:1/hospital?sslmode=disable")
    assert e.key == "source.postgres" and "127.0.0.1:1" in str(e)


def test_sslmode_is_passed_through(make_policy: Callable[..., Policy], pg: PgEnv) -> None:
    """R27: the DSN's sslmode reaches the driver: sslmode=require against this test cluster (no TLS)
    is refused instead of silently connecting in plaintext."""
    e = _refused(make_policy(), pg.reader_dsn.replace("sslmode=disable", "sslmode=require"))
    assert e.key == "source.postgres"


def test_file_mapped_table_is_refused(make_policy: Callable[..., Policy], tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a\n1\n")
    e = _refused(make_policy(extra=f'[tables.extra]\npublic = true\nfile = "{tmp_path / "x.csv"}"\n'))
    assert e.key == "tables.extra.file"


# --- lockdown ----------------------------------------------------------------------------------


def test_every_statement_is_read_only_with_a_pinned_search_path(shared: PostgresBackend) -> None:
    with shared.session() as s:
        rs = s.execute(
            "SELECT current_setting('transaction_read_only'), current_setting('search_path'), current_setting('statement_timeout'), "
            "current_setting('TimeZone'), current_user"
        )
        assert rs.rows == [("on", "pg_catalog, public", "30s", "UTC", "reader")]
        assert s.execute("SELECT current_setting('statement_timeout')", timeout=2.5).rows == [("2500ms",)]


def test_settings_a_statement_changes_do_not_outlive_it(shared: PostgresBackend) -> None:
    """A session-level set_config() inside one statement is reset before the next (RESET ALL), and
    the next statement pins search_path and read-only again anyway."""
    with shared.session() as s:
        s.execute("SELECT set_config('search_path', 'public', false), set_config('default_transaction_read_only', 'off', false)")
        for _ in range(3):  # whichever pooled connection runs it
            assert s.execute("SELECT current_setting('search_path'), current_setting('transaction_read_only')").rows == [
                ("pg_catalog, public", "on")
            ]


@pytest.mark.parametrize("sql", [
    "DELETE FROM public.visits",
    "INSERT INTO public.departments VALUES (9, 'x', 1, 'Z')",
    "UPDATE public.visits SET cost = 0",
    "WITH x AS (DELETE FROM public.visits RETURNING 1) SELECT count(*) FROM x",
    "CREATE TABLE public.t (x int)",
    "SET search_path = public",
    "COPY public.visits TO STDOUT",
    "SELECT 1; SELECT 2",
    "SELECT 1; DROP TABLE public.visits",
    "",
])  # fmt: skip
def test_anything_but_one_select_is_refused(shared: PostgresBackend, sql: str) -> None:
    with shared.session() as s, pytest.raises(UnsupportedQuery) as e:
        s.execute(sql)
    assert e.value.sqlstate == "0A000"


@pytest.mark.parametrize("sql", [
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT nextval('nosuch_seq')",
    "SELECT * FROM public.visits FOR UPDATE",
    "SELECT pg_terminate_backend(pg_backend_pid())",
])  # fmt: skip
def test_writes_files_and_locks_are_refused_by_the_server(shared: PostgresBackend, sql: str) -> None:
    """Statements that pass the one-SELECT check but write, read files or lock rows fail in the
    read-only transaction / for lack of privilege, as a fixed XX000 error."""
    with shared.session() as s:
        with pytest.raises(ExecutionFailed) as e:
            s.execute(sql)
        assert e.value.sqlstate == "XX000"
        assert s.execute("SELECT 1").rows == [(1,)]  # the session still works


def test_writes_are_refused_even_past_the_statement_check(shared: PostgresBackend) -> None:
    """Defence in depth: a DELETE handed straight to the execution coroutine (bypassing the
    one-SELECT check) is refused by PostgreSQL, and no row is gone."""
    import asyncpg

    done = threading.Event()
    with pytest.raises(asyncpg.PostgresError) as e:
        shared._loop.run(shared._run("DELETE FROM public.visits", 5000, done))
    assert e.value.sqlstate in ("25006", "42501")  # read-only transaction / permission denied
    with shared.session() as s:
        assert s.execute("SELECT count(*) FROM public.visits").rows == [(12000,)]


# --- errors, timeouts, cancel --------------------------------------------------------------------


def test_engine_error_text_is_withheld(shared: PostgresBackend, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL's "invalid input syntax for type integer: "J06"" quotes a private value: the
    error is the fixed XX000 text, with no chained exception, and nothing is logged with it."""
    caplog.set_level(logging.DEBUG)
    with shared.session() as s, pytest.raises(DPSQLError) as e:
        s.execute("SELECT sum(CAST(diagnosis AS integer)) FROM public.visits")
    err = e.value
    assert err.sqlstate == "XX000" and err.__cause__ is None and err.__context__ is None
    text = _chain_text(err) + caplog.text
    assert not any(code in text for code in DIAGNOSES)
    assert "invalid input" not in text and "syntax" not in text


def test_error_detail_with_a_value_is_withheld(shared: PostgresBackend, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with shared.session() as s, pytest.raises(DPSQLError) as e:
        s.execute("SELECT CAST(upper('pri' || 'vate-') || min(diagnosis) AS date) FROM public.visits")
    text = _chain_text(e.value) + caplog.text
    assert "PRIVATE" not in text and "A09" not in text and e.value.sqlstate == "XX000"


def test_statement_timeout_fires_57014(shared: PostgresBackend) -> None:
    with shared.session() as s:
        t = time.monotonic()
        with pytest.raises(QueryCanceled) as e:
            s.execute("SELECT pg_sleep(10)", timeout=0.3)
        assert e.value.sqlstate == "57014" and "statement timeout" in str(e.value)
        assert time.monotonic() - t < 3
        assert s.execute("SELECT 2").rows == [(2,)]


def test_statement_timeout_holds_on_a_string_blowup(shared: PostgresBackend) -> None:
    """A 1 s timeout on a query that builds 64 MB strings row after row answers 57014 within
    max(1.5·t, t + 1 s) (issue 9: limits that hold)."""
    with shared.session() as s:
        t = time.monotonic()
        with pytest.raises(QueryCanceled):
            s.execute("SELECT sum(length(repeat(md5(i::text), 2000000))) FROM generate_series(1, 100000) i", timeout=1.0)
        assert time.monotonic() - t <= 2.0
        assert s.execute("SELECT 5").rows == [(5,)]


def test_policy_statement_timeout_is_the_default(make_policy: Callable[..., Policy]) -> None:
    with PostgresBackend(make_policy(extra="[limits]\nstatement_timeout = \"0.4s\"\n")) as b, b.session() as s:
        t = time.monotonic()
        with pytest.raises(QueryCanceled):
            s.execute("SELECT pg_sleep(10)")
        assert 0.3 < time.monotonic() - t < 3


def test_infinite_timeout_disables_it(shared: PostgresBackend) -> None:
    with shared.session() as s:
        assert s.execute("SELECT current_setting('statement_timeout')", timeout=math.inf).rows == [("0",)]
        with pytest.raises(ValueError):
            s.execute("SELECT 1", timeout=0)


def test_cancel_from_another_thread(shared: PostgresBackend) -> None:
    with shared.session() as s:
        threading.Timer(0.3, s.cancel).start()
        t = time.monotonic()
        with pytest.raises(QueryCanceled) as e:
            s.execute("SELECT pg_sleep(10)")
        assert "user request" in str(e.value) and time.monotonic() - t < 3
        assert s.execute("SELECT 3").rows == [(3,)]
        s.cancel()  # nothing running: a no-op
        assert s.execute("SELECT 4").rows == [(4,)]


def test_close_cancels_the_running_statement(shared: PostgresBackend) -> None:
    s = shared.session()
    threading.Timer(0.3, s.close).start()
    t = time.monotonic()
    with pytest.raises(QueryCanceled):
        s.execute("SELECT pg_sleep(10)")
    assert time.monotonic() - t < 3
    with pytest.raises(ExecutionFailed):
        s.execute("SELECT 1")
    s.close()


def test_no_backend_left_running_after_cancel(shared: PostgresBackend, pg: PgEnv) -> None:
    """The cancel reaches the server: no pg_sleep is still running afterwards."""
    with shared.session() as s:
        threading.Timer(0.2, s.cancel).start()
        with pytest.raises(QueryCanceled):
            s.execute("SELECT pg_sleep(30)")
    rows = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'")
    assert rows[0][0] == 0


def test_sessions_run_concurrently(shared: PostgresBackend) -> None:
    """Eight sessions in eight threads each sleep 0.5 s: together well under 8 × 0.5 s."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with shared.session() as s:
                s.execute("SELECT pg_sleep(0.5)")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and time.monotonic() - t < 2.5


def test_closed_backend_refuses_sessions(make_policy: Callable[..., Policy]) -> None:
    b = PostgresBackend(make_policy())
    s = b.session()
    b.close()
    b.close()
    with pytest.raises(ExecutionFailed):
        b.session()
    with pytest.raises(ExecutionFailed):
        s.execute("SELECT 1")


# --- types ------------------------------------------------------------------------------------------


def test_numeric_sums_are_exact(shared: PostgresBackend) -> None:
    """SUM over int8 is numeric on PostgreSQL: it arrives as an exact Decimal beyond 2^53 and
    beyond int64, and int() of it (what the engine does) is exact."""
    with shared.session() as s:
        rs = s.execute("SELECT SUM(x) AS s, COUNT(*) AS n FROM (VALUES (9223372036854775807::int8), (9223372036854775807::int8), "
                       "(1::int8)) AS v(x)")
    assert rs.types == ("numeric", "int8") and rs.columns == ("s", "n")
    total, n = rs.rows[0]
    assert isinstance(total, Decimal) and int(total) == 2 * (2**63 - 1) + 1 and n == 3


def test_result_types_are_pg_type_names(shared: PostgresBackend) -> None:
    with shared.session() as s:
        rs = s.execute(
            "SELECT 1::int2 a, 1::int4 b, 1::int8 c, 1.5::float8 d, 1.5::numeric e, 'x'::text f, 'x'::varchar g, true h, "
            "DATE '2024-01-01' i, TIMESTAMP '2024-01-01' j, TIMESTAMPTZ '2024-01-01Z' k WHERE false"
        )
    assert rs.types == ("int2", "int4", "int8", "float8", "numeric", "text", "varchar", "bool", "date", "timestamp", "timestamptz")
    assert rs.rows == [] and len(rs) == 0


# --- validate (bind before the charge) ------------------------------------------------------------------


def test_validate_binds_without_reading_rows(shared: PostgresBackend, pg: PgEnv) -> None:
    """validate() accepts SQL that binds and refuses SQL that does not with 42804, reading no row:
    a query that can only fail is refused before it is charged."""
    from dpsql.errors import DatatypeMismatch

    shared.validate("SELECT count(*) FROM public.visits WHERE age > 3")
    with pytest.raises(DatatypeMismatch) as e:
        shared.validate("SELECT count(*) FROM public.visits WHERE diagnosis > 3")
    assert e.value.sqlstate == "42804" and "operator does not exist" in str(e.value)
    with pytest.raises(DatatypeMismatch):
        shared.validate("SELECT count(*) FROM public.visits WHERE visit_date = DATE '2023-13-45'")
    with pytest.raises(UnsupportedQuery):
        shared.validate("DELETE FROM public.visits")
    # binding never evaluates a data-dependent failure
    shared.validate("SELECT sum(CAST(diagnosis AS integer)) FROM public.visits")
