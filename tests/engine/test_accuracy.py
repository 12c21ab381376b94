"""Accuracy sanity of released numbers on the hospital data at ε = 1 (statistical; the stated
false-failure rate of this whole file is ≤ 1e-6).

Each released value is compared with the *bounded* truth — the bounded SQL run directly on the
database, i.e. the exact value the noise is added to — at 6σ of the noise plan's own scale
(two-sided tail of a discrete Gaussian beyond 6σ < 2·10⁻⁹ per check; ≤ 40 checks here, so
< 10⁻⁷ in all). Partition selection: a diagnosis held by one patient is released with probability
≤ δ_sel ≈ 10⁻⁸ per query; 50 queries give < 10⁻⁶.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dpsql.api import open_engine
from dpsql.examples.hospital import generate
from dpsql.proxy.engine import Engine

SIGMAS = 6
RARE = "ZZ9"  # a diagnosis held by exactly one patient
RARE_PATIENT = 9_999_999


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hospital data at 40,000 patients / 160,000 visits, plus one patient who alone has
    diagnosis ZZ9 (5 visits)."""
    out = tmp_path_factory.mktemp("accuracy")
    generate(out, patients=40_000, visits=160_000)
    path = out / "hospital.duckdb"
    con = duckdb.connect(str(path))
    try:
        con.execute(
            f"INSERT INTO visits SELECT visit_id + 10000000, {RARE_PATIENT}, visit_date, department_id, department, '{RARE}', age, sex, "
            "cost, length_of_stay FROM visits LIMIT 5"
        )
        assert con.execute(f"SELECT count(DISTINCT patient_id) FROM visits WHERE diagnosis = '{RARE}'").fetchone() == (1,)
    finally:
        con.close()
    return path


@pytest.fixture
def engine(write_policy: Callable[..., Path], database: Path) -> Iterator[Engine]:
    e = open_engine(write_policy(database=database, epsilon=1000.0, delta=1e-3))
    yield e
    e.close()


def _exact(database: Path, sql: str, keys: int) -> dict[tuple[Any, ...], dict[str, int]]:
    """The bounded SQL's exact result, run directly on the database: key tuple → statistic → value."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description]
        return {tuple(r[:keys]): dict(zip(cols[keys:], r[keys:], strict=True)) for r in cur.fetchall()}
    finally:
        con.close()


def test_count_is_within_six_sigma(engine: Engine, database: Path) -> None:
    """COUNT(*) at ε = 1: |released − bounded truth| ≤ 6σ; and bounding (≤ 5 visits per patient)
    keeps more than half of the raw count on this skewed data."""
    session = engine.session("alice")
    sql = "SELECT COUNT(*) FROM visits"
    rw, noise = session.plan(sql)
    assert rw.plan is not None and noise is not None
    (stat,) = rw.plan.stats
    exact = _exact(database, rw.sql, 0)[()][stat.column]
    released = session.execute(sql).rows[0][0]
    sigma = noise.stat(stat.column).scale
    assert abs(released - exact) <= SIGMAS * sigma, (released, exact, sigma)
    con = duckdb.connect(str(database), read_only=True)
    raw = con.execute("SELECT count(*) FROM visits").fetchone()
    con.close()
    assert raw is not None and 0.5 * raw[0] <= exact <= raw[0]


def test_counts_and_averages_per_department(engine: Engine, database: Path) -> None:
    """Per-department COUNT(*) within 6σ; AVG(cost) within the bound that 6σ on its noisy centred
    sum and noisy count imply: |Δ| ≤ (6σ_sum + |true centred mean|·6σ_count) / (count − 6σ_count)."""
    session = engine.session("alice")
    sql = "SELECT department, COUNT(*), AVG(cost) FROM visits GROUP BY department"
    rw, noise = session.plan(sql)
    assert rw.plan is not None and noise is not None
    count_agg, avg_agg = rw.plan.aggregates
    exact = _exact(database, rw.sql, 1)
    result = session.execute(sql)
    assert len(result.rows) == 8
    tight = 0
    for department, count, avg in result.rows:
        cells = exact[(department,)]
        c_col = count_agg.stats[0]
        assert abs(count - cells[c_col]) <= SIGMAS * noise.stat(c_col).scale, department
        n_col, s_col = avg_agg.stats
        n, s = cells[n_col], cells[s_col]
        sigma_n, sigma_s = noise.stat(n_col).scale, noise.stat(s_col).scale
        step = noise.stat(s_col).grid
        true_avg = float(avg_agg.center + Fraction(s, n) * step)
        slack = n - SIGMAS * sigma_n
        assert slack > 0, department  # every department is large enough for a meaningful bound
        bound = (SIGMAS * sigma_s * float(step) + abs(s / n) * float(step) * SIGMAS * sigma_n) / slack
        assert abs(avg - true_avg) <= bound, (department, avg, true_avg, bound)
        if n >= 20 * sigma_n:  # generous, but it still says something for the larger departments
            assert bound < 0.1 * float(avg_agg.upper - avg_agg.lower), (department, bound)
            tight += 1
    assert tight >= 5


def test_partition_selection_never_releases_a_single_patients_diagnosis(engine: Engine, database: Path) -> None:
    """R16, T4: GROUP BY diagnosis (no public key list) 50 times: the diagnosis held by one patient
    never appears; common diagnoses always do (their distinct-patient counts are > 20σ above the
    threshold)."""
    session = engine.session("alice")
    sql = "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis"
    rw, noise = session.plan(sql)
    assert rw.plan is not None and noise is not None and noise.selection is not None
    units = _exact(database, rw.sql, 1)
    assert units[(RARE,)][rw.plan.units_column] == 1
    common = [k[0] for k, v in units.items() if v[rw.plan.units_column] > noise.selection.threshold + 20 * noise.selection.scale]
    assert len(common) >= 5
    for _ in range(50):
        released = {r[0] for r in session.execute(sql).rows}
        assert RARE not in released
        assert set(common) <= released
