"""One row per unit: when the engine enforces the privacy unit unique (a one-column PRIMARY KEY or
UNIQUE constraint) and nothing joins, the rewriter skips the per-unit GROUP BY and the ranking
window. The bounded statistics must be exactly those of the general path on the same data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from engine_lib import policy_text

from dpsql.policy import Policy, load_policy
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.rewriter import rewrite
from dpsql.schema import build_catalog

TABLES = """
[tables.people]
privacy_unit = "pid"
max_groups = 2
max_rows = 3

[tables.people.columns]
age = { lower = 0, upper = 100 }
income = { lower = 0.0, upper = 1000.0 }
sex = { values = ["f", "m"] }
region = {}
score = { lower = -5, upper = 5 }

[tables.events]
privacy_unit = "pid"
columns = { kind = {} }

[tables.regions]
public = true
"""

QUERIES = [
    "SELECT COUNT(*) FROM people",
    "SELECT COUNT(DISTINCT pid) FROM people",
    "SELECT sex, COUNT(*), SUM(income), AVG(age) FROM people GROUP BY sex",
    "SELECT region, COUNT(*) AS n, VAR_SAMP(score), STDDEV(income) FROM people GROUP BY region",
    "SELECT COUNT(income), SUM(score) FROM people WHERE age BETWEEN 20 AND 60",
    "SELECT sex, region, COUNT(*) FILTER (WHERE score > 0), SUM(age) FILTER (WHERE income > 500) FROM people GROUP BY sex, region",
    "SELECT age / 10 AS decade, COUNT(*), AVG(income) FROM (SELECT age, income FROM people WHERE sex = 'f') s GROUP BY age / 10",
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("unique") / "people.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE people (pid BIGINT PRIMARY KEY, age INTEGER, income DOUBLE, sex VARCHAR, region VARCHAR, score INTEGER)")
    con.execute(
        "INSERT INTO people SELECT i, CASE WHEN i % 17 = 0 THEN NULL ELSE (i * 7) % 130 - 10 END, "
        "CASE WHEN i % 23 = 0 THEN 'nan'::DOUBLE WHEN i % 29 = 0 THEN NULL ELSE (i * 37) % 1500 - 100.5 END, "
        "CASE WHEN i % 3 = 0 THEN 'f' WHEN i % 3 = 1 THEN 'm' ELSE 'x' END, 'r' || (i % 11), (i * 13) % 21 - 10 "
        "FROM range(5000) t(i)"
    )
    con.execute("CREATE TABLE events (pid BIGINT, kind VARCHAR)")
    con.execute("INSERT INTO events SELECT i % 300, 'k' || (i % 5) FROM range(2000) t(i)")
    con.execute("CREATE TABLE regions (region VARCHAR PRIMARY KEY, name VARCHAR)")
    con.execute("INSERT INTO regions SELECT 'r' || i, 'region ' || i FROM range(11) t(i)")
    con.close()
    return path


_POLICIES: dict[int, Policy] = {}


@pytest.fixture(scope="module")
def backend(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBBackend]:
    d = tmp_path_factory.mktemp("unique-policy")
    policy_path = d / "policy.toml"
    policy_path.write_text(policy_text(source, d / "ledger.sqlite", tables=TABLES))
    policy = load_policy(policy_path)
    b = DuckDBBackend(policy)
    _POLICIES[id(b)] = policy
    yield b
    b.close()


def test_unique_columns_come_from_enforced_constraints(backend: DuckDBBackend) -> None:
    unique = backend.unique_columns()
    assert unique.get("public.people") == frozenset({"pid"})
    assert "public.events" not in unique  # no constraint: several rows per unit
    catalog = build_catalog(backend_policy(backend), backend.describe(), unique)
    assert catalog.table("people").unit_unique and not catalog.table("events").unit_unique
    assert not catalog.table("regions").unit_unique  # public: no privacy unit


def backend_policy(backend: DuckDBBackend) -> Policy:
    return _POLICIES[id(backend)]


@pytest.mark.parametrize("sql", QUERIES)
def test_one_row_path_equals_general_path(backend: DuckDBBackend, sql: str) -> None:
    policy = backend_policy(backend)
    fast_catalog = build_catalog(policy, backend.describe(), backend.unique_columns())
    general_catalog = build_catalog(policy, backend.describe())
    fast = rewrite(sql, fast_catalog, dialect="duckdb")
    general = rewrite(sql, general_catalog, dialect="duckdb")
    assert "GROUP BY __dp_uid" not in fast.sql and "ROW_NUMBER" not in fast.sql
    assert fast.plan.stats == general.plan.stats  # same statistics, same sensitivities
    session = backend.session()
    try:
        a = session.execute(fast.sql).rows
        b = session.execute(general.sql).rows
    finally:
        session.close()
    assert sorted(map(tuple, a), key=repr) == sorted(map(tuple, b), key=repr)
    assert len(a) > 0


def test_joins_keep_the_general_path(backend: DuckDBBackend) -> None:
    policy = backend_policy(backend)
    catalog = build_catalog(policy, backend.describe(), backend.unique_columns())
    rw = rewrite("SELECT g.name, COUNT(*) FROM people p JOIN regions g ON g.region = p.region GROUP BY g.name", catalog)
    assert "GROUP BY __dp_uid" in rw.sql  # a join could repeat a unit's row
    rw = rewrite("SELECT kind, COUNT(*) FROM events GROUP BY kind", catalog)
    assert "GROUP BY __dp_uid" in rw.sql


# --- property: on any data with one row per unit, both paths give the same exact statistics ---

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_DESCRIBED = {
    "public.people": [("pid", "int8"), ("age", "int4"), ("income", "float8"), ("sex", "text"), ("region", "text"), ("score", "int4")],
    "public.events": [("pid", "int8"), ("kind", "text")],
    "public.regions": [("region", "text"), ("name", "text")],
}
_FLOATS = st.one_of(
    st.none(),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 1e300, -1e300]),
    st.floats(min_value=-2000, max_value=3000, allow_nan=False),
)
_ROWS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(-50, 250)),
        _FLOATS,
        st.sampled_from(["f", "m", "x", None]),
        st.sampled_from(["r0", "r1", "r2", "r3", None]),
        st.one_of(st.none(), st.integers(-30, 30)),
    ),
    max_size=40,
)


@pytest.fixture(scope="module")
def catalogs(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    d = tmp_path_factory.mktemp("unique-prop")
    (d / "policy.toml").write_text(policy_text(source, d / "ledger.sqlite", tables=TABLES))
    policy = load_policy(d / "policy.toml")
    return (
        build_catalog(policy, _DESCRIBED, {"public.people": frozenset({"pid"})}),
        build_catalog(policy, _DESCRIBED),
    )


@settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_ROWS, null_unit=st.booleans())
def test_one_row_path_equals_general_path_on_any_data(catalogs: tuple[object, object], rows: list[tuple[object, ...]],
                                                      null_unit: bool) -> None:
    fast_catalog, general_catalog = catalogs
    con = duckdb.connect()
    try:
        # UNIQUE (not PRIMARY KEY) so that a NULL unit may appear, as the constraint allows
        con.execute("CREATE TABLE people (pid BIGINT UNIQUE, age INTEGER, income DOUBLE, sex VARCHAR, region VARCHAR, score INTEGER)")
        con.execute("CREATE TABLE regions (region VARCHAR, name VARCHAR)")
        data = [(i + 1, *r) for i, r in enumerate(rows)]
        if null_unit:
            data += [(None, 10, 10.0, "f", "r0", 1), (None, 20, 20.0, "m", "r1", 2)]
        if data:
            con.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?)", data)
        for sql in QUERIES:
            fast = rewrite(sql, fast_catalog, dialect="duckdb")  # type: ignore[arg-type]
            general = rewrite(sql, general_catalog, dialect="duckdb")  # type: ignore[arg-type]
            assert "GROUP BY __dp_uid" not in fast.sql
            a = con.execute(fast.sql).fetchall()
            b = con.execute(general.sql).fetchall()
            assert sorted(a, key=repr) == sorted(b, key=repr), sql
    finally:
        con.close()
