"""Partition selection on COUNT(*)'s own noisy value, end to end: at equal ε the released COUNT's
error is lower than under a separate distinct-unit threshold, EXPLAIN names the construction,
and the L1 row cap's policies that make it the better choice still release their groups.

Statistical: the variance comparison fails only if the observed error-variance ratio (b)/(a)
reaches 1 while the plans' exact ratio is ≤ 1/2 (zcdp) or 1/4 (basic). Over n ≥ 300 paired
errors, log(s²_b/s²_a) has standard deviation ≤ √(2·(2 + κ)/n) (κ the excess kurtosis: 0 for
the Gaussian, 3 for the Laplace), so that needs a deviation of ln 2/0.12 ≥ 5.7 (zcdp) or
ln 4/0.18 ≥ 7.6 (basic) standard deviations: false failure < 1e-6 per test (normal approximation
of the log variance ratio).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from engine_lib import HOSPITAL_TABLES

from dpsql.api import open_engine
from dpsql.examples.hospital import generate

OWN = "SELECT diagnosis, COUNT(*) AS n FROM visits GROUP BY diagnosis"  # (b): COUNT(*) is thresholded
# COUNT(diagnosis) counts the same rows in every non-NULL group with the same sensitivity, but is
# not a thresholding candidate (COUNT(x) can count fewer rows than units): construction (a)
UNITS = "SELECT diagnosis, COUNT(diagnosis) AS n FROM visits GROUP BY diagnosis"
REPEATS = 40
BIG = 100  # only groups this large: both constructions release them and the floor at 0 never binds


def _tables(k: int) -> str:
    return HOSPITAL_TABLES.replace("max_rows = 5\n", f"max_rows = 5\nmax_contributions = {k}\n", 1)


@pytest.mark.parametrize(("accounting", "k", "ratio"), [("zcdp", 1, 0.5), ("basic", 2, 0.25)])
def test_own_count_threshold_lowers_the_released_error(
    write_policy: Callable[..., Path], hospital: Path, accounting: str, k: int, ratio: float
) -> None:
    database = hospital / "hospital.duckdb"
    engine = open_engine(write_policy(accounting=accounting, tables=_tables(k), epsilon=1000.0, delta=1e-3, replay="off"))
    try:
        session = engine.session("alice")
        errors: dict[str, list[float]] = {}
        scales: dict[str, float] = {}
        for sql, construction in ((OWN, "count"), (UNITS, "units")):
            rw, noise = session.plan(sql)
            assert rw.plan is not None and noise is not None and noise.selection is not None
            assert noise.selection.construction == construction
            (count_col,) = [s.column for s in rw.plan.stats if s.kind == "count"]
            scales[construction] = noise.stat(count_col).scale
            con = duckdb.connect(str(database), read_only=True)
            try:
                cur = con.execute(rw.sql)
                names = [d[0] for d in cur.description]
                exact = {r[0]: int(r[names.index(count_col)]) for r in cur.fetchall()}
            finally:
                con.close()
            big = {key for key, v in exact.items() if v >= BIG}
            errs: list[float] = []
            for _ in range(REPEATS):
                for key, n in session.execute(sql).rows:
                    if key in big:
                        errs.append(float(n - exact[key]))
            errors[construction] = errs
            explain = "\n".join(r[0] for r in session.execute("EXPLAIN " + sql).rows)
            assert ("on the noisy COUNT(*) itself" in explain) == (construction == "count")
        assert (scales["count"] / scales["units"]) ** 2 == pytest.approx(ratio, rel=1e-6)  # the plans' exact ratio
        n = min(len(errors["count"]), len(errors["units"]))
        assert n >= 300, n
        var_b = sum(e * e for e in errors["count"][:n]) / n
        var_a = sum(e * e for e in errors["units"][:n]) / n
        assert var_b / var_a < 1, (var_b, var_a)
        print(f"{accounting}: released COUNT error variance (b)/(a) = {var_b / var_a:.3f} over {n} pairs (plans: {ratio}); "
              f"(b) {var_b:.2f} (a) {var_a:.2f}, scales {scales}")
    finally:
        engine.close()


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's data set (50,000 patients, 250,000 visits)."""
    out = tmp_path_factory.mktemp("demo")
    generate(out)
    return out / "hospital.duckdb"


@pytest.mark.parametrize(("accounting", "construction", "tail"), [("zcdp", "units", 6), ("basic", "count", 20)])
def test_demo_bounds_release_their_groups(
    write_policy: Callable[..., Path], demo_database: Path, accounting: str, construction: str, tail: int
) -> None:
    """The demo's data and bounds (max_rows 40, max_groups 48, k 60) at ε = 1: zcdp keeps the unit
    threshold (its groups have ~1.5 rows per unit), basic thresholds COUNT(*) itself; either way
    every diagnosis at least ``tail`` noise scales above the threshold (in its own unit) is
    released — P(miss) < 1e-8 per group (Gaussian 6σ, Laplace e^-20) — and there are ≥ 20 such."""
    tables = (HOSPITAL_TABLES.replace("max_groups = 3\n", "max_groups = 48\n", 1)
              .replace("max_rows = 5\n", "max_rows = 40\nmax_contributions = 60\n", 1))
    engine = open_engine(write_policy(database=demo_database, accounting=accounting, tables=tables, epsilon=100.0, delta=1e-3))
    try:
        session = engine.session("alice")
        rw, noise = session.plan(OWN)
        assert rw.plan is not None and noise is not None and noise.selection is not None
        sel = noise.selection
        assert sel.construction == construction
        column = sel.column or rw.plan.units_column
        con = duckdb.connect(str(demo_database), read_only=True)
        try:
            cur = con.execute(rw.sql)
            names = [d[0] for d in cur.description]
            result = cur.fetchall()
        finally:
            con.close()
        exact = {r[0]: int(r[names.index(column)]) for r in result}
        # the rule's premise: every group's bounded COUNT(*) is ≥ its distinct-unit count
        (star_col,) = [st.column for st in rw.plan.stats if st.counts_rows]
        units_col = rw.plan.units_column
        assert all(r[names.index(star_col)] >= r[names.index(units_col)] >= 1 for r in result)
        sure = {key for key, v in exact.items() if v >= sel.threshold + tail * sel.scale}
        assert len(sure) >= 20, (len(sure), sel.threshold)
        released = {r[0] for r in session.execute(OWN).rows}
        assert sure <= released
    finally:
        engine.close()
