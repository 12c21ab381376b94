"""``dpsql tune --policy FILE [--epsilon E]``: contribution bounds suggested from DP measurements.

For every private table with a privacy unit, one DP release (at ε, the policy's default δ)
measures, with the query mechanisms (:mod:`dpsql.proxy.measures`), noisy *survival counts* —
the number of units at or above each threshold of a public grid:

* **rows per unit**: S(r) = #{units with ≥ r rows}, r on ``ROW_GRID`` (1 … 1024);
* for each column with public ``values`` (the columns GROUP BY releases without partition
  selection): #{units with ≥ g distinct values}, g on ``GROUP_GRID``;
* for each bounded numeric column, from one row per unit chosen at random: the number of units
  whose value is ≥ t, t on 48 equal steps over [lower − 2w, upper + 4w] (w = upper − lower, the
  declared bounds, public), and the number of units with a value.

One unit adds a 0/1 vector with at most k ones to a k-threshold measure (L2 ≤ ⌈√k⌉, L1 ≤ k).
The charge goes to the operator's own scope in the ledger (user ``operator:NAME``, with the
policy's default per-user budget, and the global filter), before any row is read. Everything
after is post-processing: counts are made non-increasing and read as 0 from the first one below
3σ on (a thin tail is then invisible, and the estimates optimistic for it);

* ``max_rows`` = the smallest grid point R whose estimated share of rows beyond R per unit,
  Σ_u max(0, n_u − R) / Σ_u n_u (sums of S(t) over t > R resp. t ≥ 1, interpolated between grid
  points), is at most ``target`` (default 2%);
* ``max_groups`` = the smallest G whose estimated share of (unit, value) pairs beyond G is at
  most ``target``, over the table's value columns;
* ``max_contributions`` = the same R as ``max_rows`` (the histogram is of each unit's rows in the
  whole table): an L1 cap across groups that drops at most ``target`` of the rows whatever the
  grouping;
* value bounds [L, U] = the grid points where the share of units above U and below L first drops
  to target/4 each (≈ the 0.5% and 99.5% DP quantiles); for non-negative values (L = 0 when
  L < U/10) U is raised until the clamped share of the column's total, ∫_U S(t) dt / ∫_0 S(t) dt,
  is at most ``target``; rounded outward. A bound at the edge of the grid means: widen the
  declared bounds and run again.

It prints the suggested policy lines and, for COUNT(*) at the policy's default ε, the expected
bias (rows dropped) and noise (95% half-width) for the current and the suggested bounds.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp

from dpsql.accountant.calibration import discrete_gaussian_error, discrete_laplace_error, gaussian_sigma, laplace_scale, rho_for_epsilon
from dpsql.accountant.filters import ScopeLimits, budget_filter
from dpsql.accountant.ledger import QueryGuarantee
from dpsql.errors import UnsupportedQuery
from dpsql.policy import Policy, TablePolicy
from dpsql.proxy.bias import clamp_of
from dpsql.proxy.measures import Measure, area_above, calibrate_measures, measure, monotone, sigma, survival

if TYPE_CHECKING:
    from dpsql.proxy.engine import Engine

DEFAULT_TARGET = 0.02
OPERATOR_PREFIX = "operator:"
THRESHOLD_SIGMAS = 3
ROW_GRID: tuple[int, ...] = (*range(1, 17), 18, 20, 22, 24, 26, 28, 30, 32, 36, 40, 44, 48, 56, 64, 72, 80, 96, 112, 128,
                             160, 192, 256, 384, 512, 768, 1024)
GROUP_GRID: tuple[int, ...] = (*range(1, 17), 20, 24, 32, 48, 64)
VALUE_STEPS = 48


def value_grid(lower: float, upper: float, steps: int = VALUE_STEPS) -> tuple[float, ...]:
    """Thresholds for a column's values: ``steps`` + 1 equal steps over [lower − 2w, upper + 4w]
    with w = upper − lower (the policy's declared, public bounds), plus 0, lower and upper."""
    w = (upper - lower) or 1.0
    lo, hi = lower - 2 * w, upper + 4 * w
    points = {lo + i * (hi - lo) / steps for i in range(steps + 1)} | {float(lower), float(upper)}
    if lo < 0 < hi:
        points.add(0.0)
    return tuple(sorted(points))


@dataclass
class TableTune:
    """What tune suggests for one table."""

    table: TablePolicy
    max_rows: int = 1
    max_groups: int = 1
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)


def _rows_cte(engine: Engine, sql: str) -> tuple[exp.Select, str]:
    """The ``__dp_rows`` select of ``sql``'s bounded SQL (unit, keys, clamped values) and the dialect."""
    rw = engine.rewrite(sql)
    tree = sqlglot.parse_one(rw.sql, read=rw.dialect)
    for cte in tree.find_all(exp.CTE):
        if cte.alias == "__dp_rows" and isinstance(cte.this, exp.Select):
            return cte.this.copy(), rw.dialect
    raise UnsupportedQuery("dpsql tune cannot measure this table", hint="check the table's policy")


def _operator_limits(policy: Policy) -> ScopeLimits:
    acc = policy.privacy.accounting
    glob = budget_filter("global", acc, policy.global_budget) if policy.global_budget is not None else None
    return ScopeLimits(acc, budget_filter("session", acc, policy.budget), budget_filter("user", acc, policy.budget), glob)


def _survival_sql(rows: str, per_unit: str, thresholds: Sequence[float], where: str = "") -> str:
    cells = ", ".join(f"SUM(CASE WHEN __dp_n >= {_lit(t)} THEN 1 ELSE 0 END) AS __dp_c{i}" for i, t in enumerate(thresholds))
    return f"WITH __dp_rows AS ({rows}) SELECT {cells} FROM ({per_unit}) AS __dp_u{where}"


def _lit(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def tune(engine: Engine, *, epsilon: Fraction, operator: str, target: float = DEFAULT_TARGET) -> list[str]:
    """Measure every private table of ``engine``'s policy (one charge for all) and return the
    report lines. Raises BudgetExhausted (53400) when the operator's scope cannot pay."""
    policy = engine.policy
    delta = policy.privacy.default_delta
    tables = [t for t in policy.tables.values() if not t.public and t.privacy_unit]
    if not tables:
        raise UnsupportedQuery("the policy has no private table to tune")
    measures: list[Measure] = []
    queries: list[str] = []
    grids: dict[str, tuple[float, ...]] = {}
    plans: list[tuple[TableTune, str, list[str], dict[str, str]]] = []
    for ti, t in enumerate(tables):
        tt = TableTune(t)
        rows, d = _rows_cte(engine, f"SELECT COUNT(*) FROM {t.name}")
        m_rows = f"__t{ti}_rows"
        measures.append(survival(m_rows, ROW_GRID, f"units of {t.name} with at least r rows"))
        grids[m_rows] = tuple(float(r) for r in ROW_GRID)
        queries.append(_survival_sql(rows.sql(dialect=d), "SELECT __dp_uid, COUNT(*) AS __dp_n FROM __dp_rows GROUP BY __dp_uid",
                                     ROW_GRID))
        group_measures: list[str] = []
        value_measures: dict[str, str] = {}
        for c in t.columns.values():
            if c.values is not None:
                rows_k, d = _rows_cte(engine, f'SELECT "{c.name}", COUNT(*) FROM {t.name} GROUP BY "{c.name}"')
                m = f"__t{ti}_g{len(group_measures)}"
                group_measures.append(m)
                measures.append(survival(m, GROUP_GRID, f"units with at least g distinct {c.name}"))
                grids[m] = tuple(float(g) for g in GROUP_GRID)
                queries.append(_survival_sql(rows_k.sql(dialect=d),
                                             "SELECT __dp_uid, COUNT(DISTINCT __dp_k0) AS __dp_n FROM __dp_rows GROUP BY __dp_uid",
                                             GROUP_GRID))
            elif c.lower is not None and c.upper is not None:
                rows_v, d = _rows_cte(engine, f'SELECT SUM("{c.name}") FROM {t.name}')
                found = next((f for p in rows_v.expressions if p.alias_or_name.startswith("__dp_g")
                              for f in [clamp_of(p)] if f is not None), None)
                if found is None:
                    continue
                rows_v.append("expressions", exp.alias_(found[0].copy(), "__dp_x"))
                m = f"__t{ti}_v{len(value_measures)}"
                value_measures[c.name] = m
                grid = (-math.inf, *value_grid(float(c.lower), float(c.upper)))  # first cell: every unit with a value
                grids[m] = grid
                measures.append(survival(m, grid, f"units with a sampled {c.name} ≥ t"))
                cells = ", ".join(
                    ("COUNT(*)" if not math.isfinite(g) else f"SUM(CASE WHEN __dp_n >= {_lit(g)} THEN 1 ELSE 0 END)") + f" AS __dp_c{i}"
                    for i, g in enumerate(grid)
                )
                queries.append(
                    f"WITH __dp_rows AS ({rows_v.sql(dialect=d)}) SELECT {cells} FROM (SELECT __dp_x AS __dp_n, ROW_NUMBER() OVER "
                    f"(PARTITION BY __dp_uid ORDER BY __dp_rand) AS __dp_r FROM (SELECT __dp_uid, __dp_x, RANDOM() AS __dp_rand "
                    f"FROM __dp_rows WHERE __dp_x IS NOT NULL) AS __dp_v) AS __dp_s WHERE __dp_r = 1"
                )
        plans.append((tt, m_rows, group_measures, value_measures))
    _, noise = calibrate_measures(measures, epsilon, delta, policy.privacy.accounting)
    backend = engine.backend
    for sql in queries:
        backend.validate(sql)  # before the charge: a query that cannot run is refused for free
    query_hash = hashlib.sha256("\n".join(queries).encode()).hexdigest()[:32]
    user = f"{OPERATOR_PREFIX}{operator}"
    guarantee = QueryGuarantee(noise.epsilon, noise.delta, noise.conversion_delta)
    engine.ledger.charge(user, f"tune-{uuid.uuid4().hex}", noise.cost, _operator_limits(policy), time.time(), query_hash,
                         guarantee=guarantee)
    # ---- charged: read the rows, add the noise; below, post-processing only.
    session = backend.session()
    exact: dict[str, list[int]] = {}
    try:
        for sql, meas in zip(queries, measures, strict=True):
            rs = session.execute(sql, timeout=policy.limits.statement_timeout)
            row = rs.rows[0] if rs.rows else [0] * meas.cells
            exact[meas.name] = [int(v or 0) for v in row]
    finally:
        session.close()
    noisy = measure(noise, measures, exact)
    del exact
    counts = {m.name: monotone(noisy[m.name], THRESHOLD_SIGMAS * sigma(noise, m.name)) for m in measures}

    out = [
        f"dpsql tune: measured {len(tables)} table(s) at ε = {float(epsilon):g}, δ = {float(delta):.3g}, "
        f"charged to {user} (target: at most {100 * target:g}% lost to each bound)",
    ]
    for tt, m_rows, group_measures, value_measures in plans:
        s_rows = counts[m_rows]
        total = area_above(ROW_GRID, s_rows, 0)
        units = s_rows[0]

        def dropped(r: int, s_rows: Sequence[float] = s_rows, total: float = total) -> float:
            return area_above(ROW_GRID, s_rows, r) / total if total > 0 else 0.0

        tt.max_rows = next((r for r in ROW_GRID if dropped(r) <= target), ROW_GRID[-1])
        g_best = 1
        for m in group_measures:
            s_g = counts[m]
            pairs = area_above(GROUP_GRID, s_g, 0)
            g_best = max(g_best, next((g for g in GROUP_GRID if pairs <= 0 or area_above(GROUP_GRID, s_g, g) / pairs <= target),
                                      GROUP_GRID[-1]))
        tt.max_groups = g_best
        for col, m in value_measures.items():
            tt.bounds[col] = _bounds(counts[m], grids[m], target)
        out += _table_report(policy, tt, total, units, dropped)
    return out


def _bounds(counts: Sequence[float], grid: Sequence[float], target: float) -> tuple[float, float]:
    """[L, U] from survival counts (``counts[0]`` = all units with a value, then S(t) on
    ``grid[1:]``): U = the first t with S(t) ≤ (target/4)·N, L = the last t with
    N − S(t) ≤ (target/4)·N (≈ the target/4 and 1 − target/4 quantiles). For non-negative data
    (L = 0 when L < U/10) U is raised until the clamped share of the total, ∫_U S / ∫_0 S
    (trapezoids over the grid), is at most ``target``. Rounded outward."""
    n = counts[0]
    ts, ss = list(grid[1:]), list(counts[1:])
    if n <= 0:
        return ts[0], ts[-1]
    tail = target / 4 * n
    upper = next((t for t, s in zip(ts, ss, strict=True) if s <= tail), ts[-1])
    lower = ts[0]
    for t, s in zip(ts, ss, strict=True):
        if n - s <= tail:
            lower = t
        else:
            break
    if lower >= 0 and lower <= upper / 10:
        lower = 0.0
        total = _integral(ts, ss, 0.0)
        if total > 0:
            upper = next((t for t in ts if t >= upper and _integral(ts, ss, t) <= target * total), ts[-1])
    width = upper - lower
    if width <= 0:
        return lower, lower + 1
    step = 10.0 ** (math.floor(math.log10(width)) - 1)
    return math.floor(lower / step + 1e-9) * step, math.ceil(upper / step - 1e-9) * step


def _integral(ts: Sequence[float], ss: Sequence[float], start: float) -> float:
    """∫ from ``start`` of the survival curve S (linear between grid points, 0 after the last)."""
    total = 0.0
    for i in range(len(ts) - 1):
        a, b = max(ts[i], start), ts[i + 1]
        if b <= a:
            continue
        sa = ss[i] + (ss[i + 1] - ss[i]) * (a - ts[i]) / (ts[i + 1] - ts[i])
        total += (b - a) * (sa + ss[i + 1]) / 2
    return total


def _count_noise(policy: Policy, l0: int, linf: int) -> float:
    """The 95% half-width of COUNT noise at the policy's default (ε, δ) for a unit touching
    ``l0`` groups with at most ``linf`` rows each (the query calibration for one statistic)."""
    eps, delta = policy.privacy.default_epsilon, policy.privacy.default_delta
    if policy.privacy.accounting == "zcdp":
        return float(discrete_gaussian_error(gaussian_sigma(l0, linf, rho_for_epsilon(eps, delta))))
    return float(discrete_laplace_error(laplace_scale(l0, linf, eps)))


def _table_report(policy: Policy, tt: TableTune, total: float, units: float, drop: Callable[[int], float]) -> list[str]:
    t = tt.table
    lines = [
        "",
        f"# {t.name}: ≈ {total:,.0f} rows over ≈ {units:,.0f} units ({t.unit_label}), from the noisy histograms",
        f"[tables.{t.name}]",
        f"max_rows = {tt.max_rows}  # was {t.max_rows}",
        f"max_groups = {tt.max_groups}  # was {t.max_groups}",
        # the same share of rows per unit, as an L1 cap across all groups: a GROUP BY over many keys
        # (months) then keeps each unit's rows without paying √max_groups in noise
        f"max_contributions = {tt.max_rows}  # was {t.max_contributions if t.max_contributions is not None else 'unset'}"
        f" (rows per unit across all groups; with it, max_groups may be raised for GROUP BY over many keys)",
    ]
    if tt.bounds:
        lines.append(f"[tables.{t.name}.columns]")
        for col, (lo, hi) in tt.bounds.items():
            cp = t.columns[col]
            was = f"[{_num(float(cp.lower or 0))}, {_num(float(cp.upper or 0))}]"
            lines.append(f"{col} = {{ lower = {_num(lo)}, upper = {_num(hi)} }}  # was {was}")
    eps = float(policy.privacy.default_epsilon)
    lines.append(f"# expected COUNT(*) over {t.name} at ε = {eps:g} (bias: rows dropped by max_rows; noise: 95% half-width):")
    for label, r in (("current", t.max_rows), ("suggested", tt.max_rows)):
        bias = drop(r)
        hw = _count_noise(policy, 1, r)
        rel = f" ≈ {100 * hw / total:.2f}% of the total" if total > 0 else ""
        lines.append(f"#   {label:9} max_rows = {r:>4}: bias ≈ −{100 * bias:.1f}%, noise ±{hw:,.0f}{rel}")
    grouped = _count_noise(policy, tt.max_groups, tt.max_rows)
    lines.append(f"#   a GROUP BY with max_groups = {tt.max_groups} adds noise ±{grouped:,.0f} per group")
    return lines


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
