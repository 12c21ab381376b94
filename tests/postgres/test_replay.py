"""T1 sensitivity replay on PostgreSQL (security.md §4) for a subset of shapes: the PostgreSQL
dialect's bounded SQL, noise off, on D and on D minus one unit, checked against the plan's
sensitivities with the replay's own checker (``replay_lib.check_neighbours``).

Databases: the T7 poison set (empty, ordinary, a unit with every poison value, both together),
units at and beyond the bounds in every group, and generated databases with special values.
Each database is loaded once into PostgreSQL; every variant (D, D minus u, u alone) is a schema
of views over it, and the bounded SQL's ``"public".`` is pointed at the variant's schema.
Values PostgreSQL cannot store (dates past 5874897 AD or before 4713 BC) become NULL there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pgenv import PgEnv

sys.path.insert(0, str(Path(__file__).parent.parent / "replay"))
import replay_lib as R

pytestmark = pytest.mark.postgres

SHAPES = [
    "count_star", "count_distinct_unit", "sum_int", "sum_float", "sum_bounds_without_zero", "avg", "var_samp", "stddev",
    "many_aggregates", "group_declared_values", "group_private", "group_private_units", "group_two_columns", "group_case",
    "group_date_trunc", "group_extract", "group_float_expression", "where_mixed", "where_intdiv_mod", "join_public_group",
    "join_public_where", "cte_row_level", "sum_arithmetic", "sum_clamped", "filter", "second_table_few_keys",
    "second_table_int_values", "select_distinct", "count_distinct_values", "count_distinct_ranked",
    "count_distinct_private_keys",
]  # fmt: skip
MAX_REMOVALS = 4

_PG_MAX_YEAR, _PG_MIN_BC_YEAR = 5874897, 4713


def _pg_date(d: str | None) -> str | None:
    """``d`` if PostgreSQL can store it as a date, else None."""
    if d is None or d in ("infinity", "-infinity"):
        return d
    m = re.match(r"^(\d+)-\d\d-\d\d( \(BC\))?$", d)
    if m is None:
        return None
    year = int(m.group(1))
    return d if (year <= _PG_MAX_YEAR if not m.group(2) else year <= _PG_MIN_BC_YEAR) else None


def _databases() -> list[R.DB]:
    dbs = list(R.poison_databases().values())
    at_bounds = tuple(
        (u, (10, 0)[u % 2], (20.0, -5.0)[u % 2], (5.0, 2.0)[u % 2], g, f"h{u % 3}", "2023-05-17", u % 5)
        for u in range(6) for g in "abc" for _ in range(R.T_MAX_ROWS + 2)
    )  # fmt: skip
    dbs.append(R.DB("extreme_units", at_bounds, tuple((u, (7, -3)[u % 2], c, w) for u in range(6) for c in "xy" for w in (1, 2, 3))))
    for seed, special in ((11, 0.25), (12, 0.6), (13, 0.0), (14, 0.05)):
        spec = R.DBSpec(tuple([1, 4, 7, 2, 12, 3] * 3), seed=seed, p_special=special, h_pool=5, wide_uids=seed % 2 == 0, null_uid_rows=2)
        dbs.append(R.materialize(spec, f"generated{seed}"))
    return dbs


async def _load(conn: asyncpg.Connection, dbs: list[R.DB]) -> list[tuple[int, int, str, int | None]]:
    """Load every database into schema ``base``; create one schema of views per variant.
    Returns (rep, db index, kind, unit) per variant."""
    await conn.execute("DROP SCHEMA IF EXISTS base CASCADE; CREATE SCHEMA base")
    await conn.execute("CREATE TABLE base.t (db int4, uid int8, a int8, x float8, y float8, g text, h text, d text, k int4)")
    await conn.execute("CREATE TABLE base.e (db int4, uid int8, v int4, c text, w int4)")
    await conn.execute("CREATE TABLE base.p (k int4, name text)")
    t_rows = [(i, *r[:6], _pg_date(r[6]), r[7]) for i, db in enumerate(dbs) for r in db.t]
    e_rows = [(i, *r) for i, db in enumerate(dbs) for r in db.e]
    await conn.copy_records_to_table("t", schema_name="base", records=t_rows)
    await conn.copy_records_to_table("e", schema_name="base", records=e_rows)
    await conn.copy_records_to_table("p", schema_name="base", records=list(R.P_ROWS))
    variants: list[tuple[int, int, str, int | None]] = []
    rep = 0
    for i, db in enumerate(dbs):
        variants.append((rep, i, "full", None))
        rep += 1
        for u in db.units()[:MAX_REMOVALS]:
            variants += [(rep, i, "minus", u), (rep + 1, i, "only", u)]
            rep += 2
    for rep, i, kind, u in variants:
        cond = {"full": "true", "minus": f"uid IS DISTINCT FROM {u}", "only": f"uid = {u}"}[kind]
        await conn.execute(
            f"DROP SCHEMA IF EXISTS r{rep} CASCADE; CREATE SCHEMA r{rep}; "
            f"CREATE VIEW r{rep}.t AS SELECT uid, a, x, y, g, h, CAST(d AS date) AS d, k FROM base.t WHERE db = {i} AND {cond}; "
            f"CREATE VIEW r{rep}.e AS SELECT uid, v, c, w FROM base.e WHERE db = {i} AND {cond}; "
            f"CREATE VIEW r{rep}.p AS SELECT k, name FROM base.p"
        )
    return variants


def _cells(rows: list[Any], columns: list[str], plan: Any, problems: list[str], where: str) -> R.Cells:
    fixed = []
    for r in rows:
        fixed.append(tuple(int(v) if isinstance(v, Decimal) and v == v.to_integral_value() else v for v in r))
    return R.cells_of(columns, fixed, plan, problems, where)


async def _replay(dsn: str) -> tuple[list[str], int, int, int]:
    conn = await asyncpg.connect(dsn)
    problems: list[str] = []
    checks = runs = caught = 0
    try:
        dbs = _databases()
        variants = await _load(conn, dbs)
        for name in SHAPES:
            rw = R.rewritten(R.SHAPES[name], "postgres")
            plan = rw.plan
            assert plan is not None
            keys = ", ".join(f"CAST({k.column} AS text) AS {k.column}" for k in plan.keys)
            stats = ", ".join(s.column for s in plan.stats)
            results: dict[int, R.Cells] = {}
            for rep, i, _, _ in variants:
                sql = rw.sql.replace('"public".', f'"r{rep}".')
                wrapped = f"SELECT {keys + ', ' if keys else ''}{stats} FROM ({sql}) AS q"
                where = f"{name}/{dbs[i].name}/rep{rep}"
                try:
                    stmt = await conn.prepare(wrapped)
                    rows = await stmt.fetch()
                except asyncpg.PostgresError as e:
                    problems.append(f"{where}: PostgreSQL failed with SQLSTATE {e.sqlstate} ({type(e).__name__})")
                    continue
                runs += 1
                results[rep] = _cells(rows, [a.name for a in stmt.get_attributes()], plan, problems, where)
            by_db: dict[int, int] = {i: rep for rep, i, kind, _ in variants if kind == "full"}
            for rep, i, kind, u in variants:
                if kind != "minus" or rep not in results or rep + 1 not in results or by_db[i] not in results:
                    continue
                full, minus, only = results[by_db[i]], results[rep], results[rep + 1]
                problems += R.check_neighbours(plan, full, minus, only, f"{name}/{dbs[i].name}/without unit {u}")
                checks += 1
                # negative control: the same results against a plan that understates L∞ must be caught
                understated = dataclasses.replace(plan, stats=tuple(dataclasses.replace(s, max_contribution=1) for s in plan.stats))
                caught += bool(R.check_neighbours(understated, full, minus, only, "control"))
    finally:
        await conn.execute("DROP SCHEMA IF EXISTS base CASCADE")
        await conn.close()
    return problems, checks, runs, caught


def test_replay_on_postgres(pg: PgEnv) -> None:
    """Guards R5–R7, R15–R17 for the PostgreSQL dialect: per group |Δ| ≤ L∞, ≤ L0 groups change,
    ‖Δ‖₁ ≤ L0·L∞, ‖Δ‖₂ ≤ √L0·L∞, distinct-unit counts move by ≤ 1, key sets change only in the
    removed unit's keys; every bounded query runs on every variant (no data-dependent failure)."""
    pg.sql("DROP DATABASE IF EXISTS replay", database="postgres")
    pg.sql("CREATE DATABASE replay", database="postgres")
    problems, checks, runs, caught = asyncio.run(_replay(pg.cluster.dsn("postgres", "replay")))
    if problems:
        shown = "\n".join(problems[:25])
        pytest.fail(f"{len(problems)} problems on PostgreSQL, e.g.:\n{shown}")
    assert checks >= len(SHAPES) * 20 and runs >= checks * 2, (checks, runs)
    print(f"replay: {checks} neighbour checks, {runs} runs, negative control caught {caught}")
    assert caught >= checks // 4, (caught, checks)  # the checker sees the changes (negative control)
