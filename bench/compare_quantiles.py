"""dpsql quantiles vs OpenDP's ``make_private_quantile``: accuracy at the same privacy loss, in one run.

    .venv/bin/python bench/compare_quantiles.py [--runs 200] [--quick]

Both sides answer the same quantile of the same column over the same public candidate grid
(dpsql's ``QuantileGrid.from_bounds`` for the column's declared bounds) and the same contribution
bound: on PUMS_pid each person has one row; on the demo hospital data each patient keeps at most
``max_rows`` visits (dpsql's bounded SQL picks them; the OpenDP side is given the same rows and
``d_in = max_rows`` under the symmetric distance). The privacy loss is matched exactly:

* ``basic`` — dpsql's pure-ε query at ε; OpenDP ``max_divergence`` with its scale found by
  ``binary_search_param`` so that its own map at ``d_in`` is ε;
* ``zcdp`` — dpsql's query at (ε, δ) charges ρ (read from the result's cost); OpenDP
  ``zero_concentrated_divergence`` calibrated to that same ρ.

Errors are absolute, against the exact quantile of the same rows (DuckDB ``quantile_cont`` on the
full data: both sides' bounding bias is included; on PUMS_pid there is none). Printed: median and
90th-percentile absolute error per system and ε, and the ratio dpsql/OpenDP of the medians
(≤ 1 means dpsql is at least as accurate). Differences within sampling error are expected: the
mechanisms are the same (exponential mechanism / permute-and-flip over quantile scores); what
differs is who computes the scores (the engine's histogram vs OpenDP's in-memory vector).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl
import compare_smartnoise as cs

EPSILONS = (0.1, 1.0, 10.0)
DELTA = cs.DELTA


@dataclass(frozen=True)
class QuantileQuery:
    """One quantile both systems answer: ``alpha`` of ``column`` in ``table`` of data set ``data``."""

    label: str
    data: str  # "pums_pid" or "hospital"
    table: str
    column: str
    alpha: float
    lower: float
    upper: float
    integral: bool


QUERIES: tuple[QuantileQuery, ...] = (
    QuantileQuery("MEDIAN(income) PUMS", "pums_pid", "pums.pums_pid", "income", 0.5, 0, 500000, False),
    QuantileQuery("p25(age) PUMS", "pums_pid", "pums.pums_pid", "age", 0.25, 0, 100, True),
    QuantileQuery("p90(income) PUMS", "pums_pid", "pums.pums_pid", "income", 0.9, 0, 500000, False),
    QuantileQuery("MEDIAN(cost) hospital", "hospital", "visits", "cost", 0.5, 0, 0, False),  # bounds from the demo policy
)


def _sql(q: QuantileQuery) -> str:
    return f"SELECT PERCENTILE_CONT({q.alpha}) WITHIN GROUP (ORDER BY {q.column}) AS v FROM {q.table}"


def _bounds(q: QuantileQuery, tables: dict[str, Any]) -> tuple[float, float]:
    if q.upper > q.lower:
        return q.lower, q.upper
    col = tables[q.table]["columns"][q.column]
    return float(col["lower"]), float(col["upper"])


def _rows_for_opendp(db: Path, q: QuantileQuery, unit: str | None, max_rows: int) -> list[float]:
    """The column's values with at most ``max_rows`` per unit, chosen by a hash of the row id (any
    choice from the unit's own rows has the same sensitivity; a hash order keeps it unbiased)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        if unit is None:
            sql = f"SELECT CAST({q.column} AS DOUBLE) FROM {q.table} WHERE {q.column} IS NOT NULL"
        else:
            sql = (
                f"SELECT CAST({q.column} AS DOUBLE) FROM (SELECT {q.column}, row_number() OVER "
                f"(PARTITION BY {unit} ORDER BY hash(visit_id)) AS rn FROM {q.table} WHERE {q.column} IS NOT NULL "
                f"AND {unit} IS NOT NULL) WHERE rn <= {max_rows}"
            )
        return [float(r[0]) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


def _truth(db: Path, q: QuantileQuery) -> float:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return float(con.execute(f"SELECT quantile_cont({q.column}, {q.alpha}) FROM {q.table}").fetchone()[0])
    finally:
        con.close()


def _opendp_measurement(candidates: list[float], alpha: float, d_in: int, accounting: str, loss: float) -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    measure = dp.max_divergence() if accounting == "basic" else dp.zero_concentrated_divergence()
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance()

    def make(scale: float) -> Any:
        return dp.m.make_private_quantile(*space, measure, candidates=candidates, alpha=alpha, scale=scale)

    scale = dp.binary_search_param(make, d_in=d_in, d_out=loss, T=float)
    return make(scale)


def _summary(errors: Sequence[float]) -> tuple[float, float]:
    xs = sorted(errors)
    return statistics.median(xs), bl.pct(xs, 90)


def run(runs: int, epsilons: Sequence[float]) -> list[tuple[str, ...]]:
    import dpsql.api as dpapi
    from dpsql.rewriter.quantile_grid import QuantileGrid

    pums = cs.pums_db()
    hospital = cs.hospital_db()
    pums_tables = cs.pums_tables(pid_only=True)
    hospital_tables = cs.hospital_tables(hospital, max_groups=1, max_rows=cs.HOSPITAL_MAX_ROWS)
    for t in pums_tables.values():
        t["columns"] = {k: dict(v) for k, v in t["columns"].items()}
    policies = {
        (data, acc): cs.write_policy(f"quantiles-{data}", db, tables, acc)
        for data, db, tables in (("pums_pid", pums, pums_tables), ("hospital", hospital, hospital_tables))
        for acc in ("zcdp", "basic")
    }
    conns = {k: dpapi.connect(p, user=cs.USER) for k, p in policies.items()}
    rows_out: list[tuple[str, ...]] = []
    try:
        for q in QUERIES:
            db = pums if q.data == "pums_pid" else hospital
            tables = pums_tables if q.data == "pums_pid" else hospital_tables
            lo, hi = _bounds(q, tables)
            grid = QuantileGrid.from_bounds(Fraction(lo), Fraction(hi), integral=q.integral)
            candidates = [float(c) for c in grid.candidates()]
            unit, max_rows = (None, 1) if q.data == "pums_pid" else ("patient_id", cs.HOSPITAL_MAX_ROWS)
            values = _rows_for_opendp(db, q, unit, max_rows)
            truth = _truth(db, q)
            t0 = time.perf_counter()
            for eps in epsilons:
                for acc in ("zcdp", "basic"):
                    conn = conns[(q.data, acc)]
                    conn.execute(f"SET dp.epsilon = {eps!r}")
                    conn.execute(f"SET dp.delta = {DELTA!r}")
                    dp_err: list[float] = []
                    loss: float | None = None
                    for _ in range(runs):
                        r = conn.execute(_sql(q))
                        dp_err.append(abs(float(r.rows[0][0]) - truth))
                        loss = float(r.cost.amount) if r.cost is not None else loss
                    assert loss is not None
                    meas = _opendp_measurement(candidates, q.alpha, max_rows, acc, loss)
                    od_err = [abs(float(meas(values)) - truth) for _ in range(runs)]
                    dm, d90 = _summary(dp_err)
                    om, o90 = _summary(od_err)
                    ratio = dm / om if om > 0 else (1.0 if dm == 0 else float("inf"))
                    rows_out.append(
                        (
                            q.label,
                            f"{eps:g}",
                            acc,
                            f"{loss:.4g}",
                            f"{len(candidates)}",
                            cs.fnum(dm),
                            cs.fnum(d90),
                            cs.fnum(om),
                            cs.fnum(o90),
                            f"{ratio:.2f}",
                        )
                    )
            print(f"  {q.label}: {time.perf_counter() - t0:.1f} s (truth {cs.fnum(truth)})", flush=True)
    finally:
        for c in conns.values():
            c.close()
    return rows_out


def main(argv: list[str] | None = None) -> int:
    """Print the accuracy table; exit 0 (the numbers are the output, not a pass/fail)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="40 runs per cell")
    args = ap.parse_args(argv)
    runs = 40 if args.quick else args.runs
    bl.header(f"dpsql vs OpenDP make_private_quantile — {runs} runs per cell, δ = {DELTA:g} — {bl.machine()}")
    rows = run(runs, EPSILONS)
    bl.table(
        "absolute error of the released quantile (median, p90) at the same privacy loss",
        ["query", "ε", "mode", "loss (ρ or ε)", "cand.", "dpsql med", "dpsql p90", "OpenDP med", "OpenDP p90", "dpsql/OpenDP"],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
