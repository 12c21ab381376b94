"""The hospital demo data set: shape of the data, determinism, and a policy that fits it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from dpsql.examples.hospital import DEMO_PASSWORDS, generate, main, scale
from dpsql.examples.hospital_data import DEPARTMENTS, INSURANCES, REGIONS
from dpsql.policy import load_policy
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.passwords import check_password
from dpsql.schema import build_catalog


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The default-size data set, generated once, with the time it took."""
    out = tmp_path_factory.mktemp("demo")
    t0 = time.perf_counter()
    policy = generate(out)
    return policy, time.perf_counter() - t0


@pytest.fixture(scope="module")
def con(demo: tuple[Path, float]) -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(demo[0].parent / "hospital.duckdb"), read_only=True)
    yield c
    c.close()


def one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row


def test_files_written(demo: tuple[Path, float]) -> None:
    out = demo[0].parent
    assert sorted(p.name for p in out.iterdir()) == ["hospital.duckdb", "policy.toml"]
    assert (demo[0].stat().st_mode & 0o777) == 0o600


def test_policy_loads_and_fits_the_backend(demo: tuple[Path, float]) -> None:
    policy = load_policy(demo[0])
    assert policy.source.duckdb == demo[0].parent / "hospital.duckdb"
    assert (policy.server.listen_host, policy.server.listen_port, policy.server.auth) == (
        "127.0.0.1",
        6432,
        "scram-sha-256",
    )
    assert policy.privacy.accounting == "zcdp"
    assert float(policy.privacy.default_epsilon) == 1.0 and float(policy.privacy.default_delta) == 1e-7
    assert float(policy.privacy.max_epsilon_per_query) == 2.0
    assert float(policy.budget.epsilon) == 10 and float(policy.budget.delta) == 1e-6
    assert policy.budget.window_seconds == 7 * 86400 and policy.session_epsilon == 5
    assert policy.global_budget is not None and float(policy.global_budget.epsilon) == 40
    assert float(policy.global_budget.delta) == 1e-5
    for user, password in DEMO_PASSWORDS.items():
        u = policy.user(user)
        assert u is not None and u.password is not None and check_password(password, u.password)
    visits = policy.table("visits")
    assert visits is not None and visits.privacy_unit == "patient_id"
    assert visits.columns["diagnosis"].values is None  # partition selection, not a public list
    assert visits.columns["department"].values is not None
    assert visits.columns["cost"].bounded and visits.columns["age"].bounded
    departments = policy.table("departments")
    assert departments is not None and departments.public

    with DuckDBBackend(policy) as backend:
        catalog = build_catalog(policy, backend.describe())
        cols = {c.name: c.pg_type for c in catalog.tables["public.visits"].columns}
        assert cols == {
            "patient_id": "int8",
            "visit_date": "date",
            "department_id": "int4",
            "department": "text",
            "diagnosis": "text",
            "age": "int4",
            "sex": "text",
            "cost": "float8",
            "length_of_stay": "int4",
        }
        patients = {c.name for c in catalog.tables["public.patients"].columns}
        assert patients == {"patient_id", "birth_year", "sex", "region", "insurance"}
        assert [c.name for c in catalog.tables["public.departments"].columns] == [
            "department_id",
            "name",
            "floor",
            "building",
        ]
        with backend.session() as s:
            assert s.execute("SELECT count(*) FROM visits").rows == [(250_000,)]


def test_sizes_and_keys(con: duckdb.DuckDBPyConnection) -> None:
    assert one(con, "SELECT count(*), count(DISTINCT visit_id), min(visit_id), max(visit_id) FROM visits") == (
        250_000,
        250_000,
        1,
        250_000,
    )
    assert one(con, "SELECT count(*), count(DISTINCT patient_id) FROM patients") == (50_000, 50_000)
    # every patient has a visit, and every visit a known patient
    assert one(con, "SELECT count(DISTINCT patient_id) FROM visits") == (50_000,)
    assert one(con, "SELECT count(*) FROM visits v ANTI JOIN patients p USING (patient_id)") == (0,)
    assert one(con, "SELECT count(*) FROM departments") == (len(DEPARTMENTS),)


def test_consistency(con: duckdb.DuckDBPyConnection) -> None:
    # department matches department_id; age and sex are the patient's, constant over visits
    assert one(con, "SELECT count(*) FROM visits v JOIN departments d USING (department_id) WHERE v.department <> d.name") == (0,)
    assert one(
        con,
        "SELECT count(*) FROM visits v JOIN patients p USING (patient_id) WHERE v.age <> 2024 - p.birth_year OR v.sex <> p.sex",
    ) == (0,)
    assert one(con, "SELECT min(age), max(age), min(visit_date), max(visit_date) FROM visits")[:2] == (0, 100)
    lo, hi = one(con, "SELECT min(birth_year), max(birth_year) FROM patients")
    assert lo >= 1920 and hi <= 2025
    assert one(con, "SELECT count(*) FROM visits WHERE diagnosis = 'O80' AND (sex = 'M' OR age NOT BETWEEN 16 AND 45)") == (0,)


def test_distributions(con: duckdb.DuckDBPyConnection) -> None:
    # visits per patient: mostly 1–2, a few with dozens
    share_1_2, most = one(
        con,
        "SELECT avg((n <= 2)::INT), max(n) FROM (SELECT patient_id, count(*) AS n FROM visits GROUP BY 1)",
    )
    assert share_1_2 > 0.5 and most >= 24
    # diagnoses: ~30 codes, skewed, some rare
    codes = con.execute("SELECT diagnosis, count(DISTINCT patient_id) FROM visits GROUP BY 1 ORDER BY 2 DESC").fetchall()
    assert 28 <= len(codes) <= 40
    assert codes[0][1] > 50 * codes[-1][1]
    assert sum(1 for _, n in codes if n < 20) >= 2
    # cost: skewed, a few NULLs, a few beyond 5000 (the demo policy clamps at 10000)
    nulls, over, median, mean = one(
        con,
        "SELECT avg((cost IS NULL)::INT), avg((cost > 5000)::INT), median(cost), avg(cost) FROM visits",
    )
    assert 0.001 < nulls < 0.02 and 0.001 < over < 0.05 and mean > median > 0
    assert one(con, "SELECT count(*) FROM visits WHERE cost < 0") == (0,)
    stays, long_stays = one(con, "SELECT avg((length_of_stay > 0)::INT), count(*) FILTER (length_of_stay > 30) FROM visits")
    assert 0.05 < stays < 0.5 and long_stays > 0
    # children and the elderly both present; sexes roughly balanced
    kids, old, female = one(con, "SELECT avg((birth_year > 2008)::INT), avg((birth_year < 1955)::INT), avg((sex = 'F')::INT) FROM patients")
    assert 0.08 < kids < 0.3 and 0.05 < old < 0.4 and 0.45 < female < 0.6


def test_public_value_lists_cover_the_data(con: duckdb.DuckDBPyConnection) -> None:
    def distinct(sql: str) -> set:
        return {r[0] for r in con.execute(sql).fetchall()}

    assert distinct("SELECT DISTINCT department FROM visits") == {d.name for d in DEPARTMENTS}
    assert distinct("SELECT DISTINCT department_id FROM visits") == {d.id for d in DEPARTMENTS}
    assert distinct("SELECT DISTINCT sex FROM visits") == {"F", "M"}
    assert distinct("SELECT DISTINCT region FROM patients") == {r for r, _ in REGIONS}
    assert distinct("SELECT DISTINCT insurance FROM patients") == set(INSURANCES)


def _fingerprint(db: Path) -> tuple:
    c = duckdb.connect(str(db), read_only=True)
    try:
        return tuple(
            c.execute(f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {t}").fetchone() for t in ("visits", "patients", "departments")
        )
    finally:
        c.close()


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", patients=2_000, visits=10_000, seed=3).parent / "hospital.duckdb"
    b = generate(tmp_path / "b", patients=2_000, visits=10_000, seed=3).parent / "hospital.duckdb"
    c = generate(tmp_path / "c", patients=2_000, visits=10_000, seed=4).parent / "hospital.duckdb"
    assert _fingerprint(a) == _fingerprint(b)
    assert _fingerprint(a) != _fingerprint(c)


def test_regenerating_in_place(tmp_path: Path) -> None:
    generate(tmp_path, patients=100, visits=500)
    policy = generate(tmp_path, patients=200, visits=1_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hospital.duckdb", "policy.toml"]
    with DuckDBBackend(load_policy(policy)) as b, b.session() as s:
        assert s.execute("SELECT count(*) FROM visits").rows == [(1_000,)]


def test_parquet_format(tmp_path: Path) -> None:
    policy_path = generate(tmp_path, patients=1_000, visits=5_000, fmt="parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "departments.parquet",
        "patients.parquet",
        "policy.toml",
        "visits.parquet",
    ]
    policy = load_policy(policy_path)
    assert policy.source.duckdb is None
    assert all(t.file is not None and t.file.suffix == ".parquet" for t in policy.tables.values())
    with DuckDBBackend(policy) as backend:
        catalog = build_catalog(policy, backend.describe())
        assert set(catalog.tables) == {"public.visits", "public.patients", "public.departments"}
        with backend.session() as s:
            r = s.execute("SELECT count(*), count(DISTINCT patient_id) FROM visits")
            assert r.rows == [(5_000, 1_000)]


def test_fewer_visits_than_patients(tmp_path: Path) -> None:
    policy = generate(tmp_path, patients=1_000, visits=300)
    with DuckDBBackend(load_policy(policy)) as b, b.session() as s:
        assert s.execute("SELECT count(*), count(DISTINCT patient_id) FROM visits").rows == [(300, 300)]


def test_scale(tmp_path: Path) -> None:
    policy = scale(tmp_path, 20_000)
    with DuckDBBackend(load_policy(policy)) as b, b.session() as s:
        assert s.execute("SELECT count(*) FROM visits").rows == [(20_000,)]
        assert s.execute("SELECT count(*) FROM patients").rows == [(2_000,)]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, fmt="csv")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        generate(tmp_path, patients=0)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--patients", "100", "--visits", "400", "--format", "parquet"]) == 0
    out = capsys.readouterr().out
    assert "policy.toml" in out and "alice-demo" in out
    assert (tmp_path / "visits.parquet").exists()


@pytest.mark.slow
@pytest.mark.parametrize("rows", [1_000_000, 10_000_000])
def test_benchmark_sizes(tmp_path: Path, rows: int) -> None:
    policy = scale(tmp_path, rows)
    with DuckDBBackend(load_policy(policy)) as b, b.session() as s:
        assert s.execute("SELECT count(*) FROM visits").rows == [(rows,)]
        assert s.execute("SELECT count(*) FROM patients").rows == [(rows // 10,)]


def test_the_demos_refusal_examples_are_refused_before_any_charge(demo: tuple[Path, float]) -> None:
    """``dpsql demo`` shows these as refusals: each must be refused (42501/0A000), and free."""
    from dpsql.api import connect
    from dpsql.errors import DPSQLError
    from dpsql.proxy.demo import DEMO_REFUSALS

    with connect(demo[0], "alice") as conn:
        before = conn.execute("SELECT epsilon_spent FROM dpsql.budget WHERE scope = 'user'").rows
        for sql in DEMO_REFUSALS:
            with pytest.raises(DPSQLError) as err:
                conn.execute(sql)
            assert err.value.sqlstate in ("42501", "0A000"), (sql, err.value.sqlstate)
        assert conn.execute("SELECT epsilon_spent FROM dpsql.budget WHERE scope = 'user'").rows == before
