"""DuckDBBackend: describe, execution, errors that withhold engine text, timeouts, cancel, threads."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from dpsql.errors import ExecutionFailed, PolicyError, QueryCanceled, QuerySyntaxError
from dpsql.policy import Policy
from dpsql.proxy.backends.base import ResourceExhausted
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.schema import build_catalog

from .conftest import SECRET

SLOW = "SELECT sum(a.range * b.range + length(a.range::VARCHAR)) FROM range(1000000000) a, range(1000000000) b"


def _chain_text(e: BaseException) -> str:
    """Everything an error could carry: message, hint, chained exceptions and formatted traceback."""
    parts = [str(e), repr(e), "".join(traceback.format_exception(e))]
    seen = e.__cause__ or e.__context__
    while seen is not None:
        parts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


# --- describe ------------------------------------------------------------------------------


def test_describe_maps_types(backend: DuckDBBackend) -> None:
    d = backend.describe()
    assert set(d) == {"public.visits", "sales.orders", "public.departments", "public.labs"}
    assert dict(d["public.visits"]) == {
        "patient_id": "int8",
        "age": "int4",
        "small": "int2",
        "tiny": "int2",
        "utiny": "int4",
        "usmall": "int4",
        "uint": "int8",
        "ubig": "numeric",
        "huge": "numeric",
        "cost": "float8",
        "f4": "float4",
        "dec": "numeric",
        "s": "text",
        "flag": "bool",
        "d": "date",
        "ts": "timestamp",
        "tstz": "timestamptz",
        "t": "time",
        "iv": "interval",
        "b": "bytea",
        "u": "uuid",
    }
    assert [c for c, _ in d["public.visits"]][:3] == ["patient_id", "age", "small"]  # source order
    assert d["sales.orders"] == [("customer_id", "int8"), ("amount", "numeric")]
    assert d["public.departments"] == [("department_id", "int4"), ("name", "text")]
    assert d["public.labs"] == [("patient_id", "int8"), ("test", "int8"), ("value", "float8")]


def test_describe_fits_build_catalog(policy: Policy, backend: DuckDBBackend) -> None:
    catalog = build_catalog(policy, backend.describe())
    visits = catalog.table("visits")
    assert visits is not None
    assert [c.name for c in visits.columns] == ["patient_id", "age", "cost", "s"]
    departments = catalog.table("public.departments")
    assert departments is not None and [c.name for c in departments.columns] == ["department_id", "name"]


def test_describe_reads_no_rows(backend: DuckDBBackend) -> None:
    # describe() is served from metadata read at startup; it returns a fresh copy each time
    d = backend.describe()
    d["public.visits"].clear()
    assert backend.describe()["public.visits"]


# --- execution -----------------------------------------------------------------------------


def test_queries_resolve_public_as_main(backend: DuckDBBackend) -> None:
    with backend.session() as s:
        assert s.execute("SELECT count(*) FROM visits").rows == [(100,)]
        assert s.execute("SELECT count(*) FROM main.visits").rows == [(100,)]
        assert s.execute('SELECT count(*) FROM "public"."visits" AS "visits"').rows == [(100,)]  # as the rewriter emits
        assert s.execute("SELECT count(*) FROM public.departments").rows == [(8,)]
        assert s.execute("SELECT count(*) AS n FROM sales.orders").columns == ("n",)


def test_parquet_and_csv_tables(backend: DuckDBBackend) -> None:
    with backend.session() as s:
        r = s.execute("SELECT name FROM departments WHERE department_id = 3")
        assert r.rows == [("dept3",)] and r.types == ("text",)
        r = s.execute("SELECT test, count(*) AS n, sum(value) FROM labs GROUP BY test ORDER BY test")
        assert r.columns == ("test", "n", 'sum("value")')
        assert [row[:2] for row in r.rows] == [(t, 10) for t in range(5)]
        joined = s.execute("SELECT d.name, count(*) FROM labs l JOIN departments d ON l.test = d.department_id GROUP BY 1 ORDER BY 1")
        assert len(joined.rows) == 5


def test_files_only_in_memory_database(make_policy: Callable[..., Policy], data_files: dict[str, Path]) -> None:
    policy = make_policy(
        {
            "departments": {"public": True, "file": str(data_files["parquet"])},
            "labs": {"privacy_unit": "patient_id", "file": str(data_files["csv"])},
        }
    )
    with DuckDBBackend(policy) as b, b.session() as s:
        assert s.execute("SELECT count(*) FROM labs").rows == [(50,)]
        assert s.execute("SELECT count(*) FROM departments").rows == [(8,)]


def test_hugeint_and_decimal_results(backend: DuckDBBackend) -> None:
    with backend.session() as s:
        r = s.execute("SELECT sum(patient_id) AS total, max(huge) AS big, sum(dec) AS d FROM visits")
        total, big, dec = r.rows[0]
        assert r.types == ("numeric", "numeric", "numeric")
        assert type(total) is int and total == 4950
        assert type(big) is int and big == 99 * 10**12
        assert isinstance(dec, Decimal)
        r = s.execute("SELECT sum(huge) * 100000000000000000 AS x FROM visits")
        assert type(r.rows[0][0]) is int and r.rows[0][0] > 2**64


def test_result_types(backend: DuckDBBackend) -> None:
    with backend.session() as s:
        r = s.execute(
            "SELECT count(*) AS n, avg(cost) AS a, min(d) AS d, min(ts) AS ts, min(s) AS s, "
            "bool_or(flag) AS f, min(age)::SMALLINT AS sm, NULL AS nothing FROM visits"
        )
        assert r.types == ("int8", "float8", "date", "timestamp", "text", "bool", "int2", "text")
        assert r.columns == ("n", "a", "d", "ts", "s", "f", "sm", "nothing")
        assert len(r) == 1


# --- errors withhold engine text -----------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT CAST(s AS INT) FROM visits",
        "SELECT sum(CAST(s AS INT)) FROM visits",
        "SELECT 10 // (age - age) FROM visits",
        "SELECT error(s) FROM visits",
        "SELECT regexp_matches('x', s || '(') FROM visits",
        "SELECT * FROM nosuch_abc",
        "SELECT nosuch_abc FROM visits",
    ],
)
def test_engine_errors_withhold_text(backend: DuckDBBackend, sql: str) -> None:
    with backend.session() as s:
        with pytest.raises(ExecutionFailed) as info:
            s.execute(sql)
        e = info.value
        assert type(e) is ExecutionFailed and e.sqlstate == "XX000"
        assert e.__cause__ is None and e.__context__ is None
        text = _chain_text(e)
        assert SECRET not in text
        assert "INT32" not in text and "Conversion" not in text and "Binder" not in text
        assert "withheld" in e.message
        assert s.execute("SELECT 1").rows == [(1,)]  # the session is still usable


def test_parse_errors_withhold_text(backend: DuckDBBackend) -> None:
    with backend.session() as s, pytest.raises(QuerySyntaxError) as info:
        s.execute(f"SELEC '{SECRET}'")
    assert info.value.__context__ is None and SECRET not in _chain_text(info.value)


def test_out_of_memory_is_class_53(make_policy: Callable[..., Policy], source_db: Path) -> None:
    policy = make_policy(
        {"visits": {"privacy_unit": "patient_id"}},
        source={"duckdb": str(source_db)},
        limits={"memory_limit": "64MB"},
    )
    with DuckDBBackend(policy) as b, b.session() as s:
        with pytest.raises(ResourceExhausted) as info:
            s.execute("SELECT len(list(range)) FROM range(50000000)")
        assert info.value.sqlstate == "53200" and info.value.__context__ is None
        assert s.execute("SELECT 1").rows == [(1,)]


# --- timeouts and cancel -------------------------------------------------------------------


def test_timeout_cancels(backend: DuckDBBackend) -> None:
    with backend.session() as s:
        t0 = time.monotonic()
        with pytest.raises(QueryCanceled) as info:
            s.execute(SLOW, timeout=0.2)
        elapsed = time.monotonic() - t0
        assert 0.19 <= elapsed < 0.75, elapsed
        assert info.value.sqlstate == "57014" and "timeout" in info.value.message
        assert info.value.__context__ is None
        assert s.execute("SELECT 1").rows == [(1,)]


def test_default_timeout_comes_from_policy(make_policy: Callable[..., Policy], source_db: Path) -> None:
    policy = make_policy(
        {"visits": {"privacy_unit": "patient_id"}},
        source={"duckdb": str(source_db)},
        limits={"statement_timeout": "200ms"},
    )
    with DuckDBBackend(policy) as b, b.session() as s:
        t0 = time.monotonic()
        with pytest.raises(QueryCanceled):
            s.execute(SLOW)
        assert time.monotonic() - t0 < 0.75


def test_timeout_does_not_hit_later_statements(backend: DuckDBBackend) -> None:
    with backend.session() as s:
        for _ in range(20):
            assert s.execute("SELECT 1", timeout=0.05).rows == [(1,)]
        time.sleep(0.1)  # any timer of the quick statements has passed its deadline by now
        r = s.execute("SELECT count(*) FROM range(30000000) a WHERE a.range % 7 = 0", timeout=30)
        assert r.rows == [(4285715,)]


def test_bad_timeout(backend: DuckDBBackend) -> None:
    with backend.session() as s:
        for bad in (0, -1, float("nan")):
            with pytest.raises(ValueError):
                s.execute("SELECT 1", timeout=bad)
        assert s.execute("SELECT 1", timeout=float("inf")).rows == [(1,)]


def test_cancel_from_another_thread(backend: DuckDBBackend) -> None:
    with backend.session() as s:
        timer = threading.Timer(0.2, s.cancel)
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(QueryCanceled) as info:
            s.execute(SLOW, timeout=30)
        assert time.monotonic() - t0 < 0.75
        assert "user request" in info.value.message
        s.cancel()  # idle: a no-op
        assert s.execute("SELECT 1").rows == [(1,)]


def test_close_from_another_thread_stops_the_statement(backend: DuckDBBackend) -> None:
    s = backend.session()
    threading.Timer(0.2, s.close).start()
    with pytest.raises(QueryCanceled):
        s.execute(SLOW, timeout=30)
    with pytest.raises(ExecutionFailed):
        s.execute("SELECT 1")


# --- concurrency ---------------------------------------------------------------------------


def test_concurrent_sessions_in_threads(backend: DuckDBBackend) -> None:
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with backend.session() as s:
                for _ in range(20):
                    r = s.execute(f"SELECT count(*), sum(age) FROM visits WHERE patient_id % 8 = {i}")
                    results[i] = r.rows[0]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(n for n, _ in results.values()) == 100  # type: ignore[misc]


def test_a_slow_session_does_not_block_another(backend: DuckDBBackend) -> None:
    slow = backend.session()
    caught: list[BaseException] = []

    def run_slow() -> None:
        try:
            slow.execute(SLOW, timeout=1.5)
        except QueryCanceled as e:
            caught.append(e)

    t = threading.Thread(target=run_slow)
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    with backend.session() as fast:
        for _ in range(10):
            assert fast.execute("SELECT count(*) FROM visits").rows == [(100,)]
    assert time.monotonic() - t0 < 1.0
    t.join()
    assert len(caught) == 1


# --- startup checks ------------------------------------------------------------------------


def test_public_and_main_collide(make_policy: Callable[..., Policy], source_db: Path) -> None:
    policy = make_policy(
        {"visits": {"privacy_unit": "patient_id"}, "main.visits": {"privacy_unit": "patient_id"}},
        source={"duckdb": str(source_db)},
    )
    with pytest.raises(PolicyError) as info:
        DuckDBBackend(policy)
    assert info.value.key == "tables.main.visits"


def test_missing_table_is_a_policy_error(make_policy: Callable[..., Policy], source_db: Path) -> None:
    policy = make_policy(
        {"visits": {"privacy_unit": "patient_id"}, "sales.nosuch": {"privacy_unit": "x"}},
        source={"duckdb": str(source_db)},
    )
    with pytest.raises(PolicyError) as info:
        DuckDBBackend(policy)
    assert info.value.key == "tables.sales.nosuch" and "sales.nosuch" in info.value.problem


def test_missing_database_is_not_created(make_policy: Callable[..., Policy], tmp_path: Path) -> None:
    missing = tmp_path / "missing.duckdb"
    policy = make_policy({"visits": {"privacy_unit": "patient_id"}}, source={"duckdb": str(missing)})
    with pytest.raises(PolicyError) as info:
        DuckDBBackend(policy)
    assert info.value.key == "source.duckdb"
    assert not missing.exists()


def test_database_argument_overrides_policy(make_policy: Callable[..., Policy], source_db: Path, tmp_path: Path) -> None:
    elsewhere = {"duckdb": str(tmp_path / "x.duckdb")}
    policy = make_policy({"visits": {"privacy_unit": "patient_id"}}, source=elsewhere)
    with DuckDBBackend(policy, database=source_db) as b, b.session() as s:
        assert s.execute("SELECT count(*) FROM visits").rows == [(100,)]


def test_table_without_source(make_policy: Callable[..., Policy]) -> None:
    with pytest.raises(PolicyError) as info:
        DuckDBBackend(make_policy({"visits": {"privacy_unit": "patient_id"}}))
    assert info.value.key == "tables.visits"


def test_missing_or_bad_mapped_file(make_policy: Callable[..., Policy], tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        DuckDBBackend(make_policy({"d": {"public": True, "file": str(tmp_path / "nope.parquet")}}))
    assert info.value.key == "tables.d.file"
    bad = tmp_path / "bad.parquet"
    bad.write_text(f"not parquet {SECRET}")
    with pytest.raises(PolicyError) as info:
        DuckDBBackend(make_policy({"d": {"public": True, "file": str(bad)}}))
    assert info.value.key == "tables.d.file" and info.value.__context__ is None


def test_not_a_duckdb_file(make_policy: Callable[..., Policy], tmp_path: Path) -> None:
    bad = tmp_path / "bad.duckdb"
    bad.write_text("hello")
    with pytest.raises(PolicyError) as info:
        DuckDBBackend(make_policy({"visits": {"privacy_unit": "patient_id"}}, source={"duckdb": str(bad)}))
    assert info.value.key == "source.duckdb"


def test_unclosed_backend_is_finalized(policy: Policy) -> None:
    import gc

    b = DuckDBBackend(policy)
    s = b.session()
    spill = b._db.spill_dir
    del b
    gc.collect()
    assert spill.exists()  # the session keeps the backend alive
    assert s.execute("SELECT count(*) FROM visits").rows == [(100,)]
    del s
    gc.collect()
    assert not spill.exists()


def test_timestamptz_results(backend: DuckDBBackend) -> None:
    pytest.importorskip("pytz", reason="duckdb needs pytz to return TIMESTAMP WITH TIME ZONE values")
    with backend.session() as s:
        r = s.execute("SELECT min(tstz) AS t FROM visits")
        assert r.types == ("timestamptz",) and r.rows[0][0].year == 2024


def test_closed_backend(policy: Policy) -> None:
    b = DuckDBBackend(policy)
    s = b.session()
    b.close()
    b.close()
    with pytest.raises(ExecutionFailed):
        s.execute("SELECT 1")
    with pytest.raises(ExecutionFailed):
        b.session()
