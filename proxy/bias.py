"""``EXPLAIN (BIAS) SELECT …``: a DP estimate of what a query's statistics lose to contribution bounding.

The bounded SQL of a private query starts from ``__dp_rows`` — one row per private row that
passes the query's WHERE, with the privacy unit ``__dp_uid``, the group keys ``__dp_k{i}`` and
the clamped values ``__dp_g{j}``. From it :func:`build` derives, per privacy unit u (with R the
table's ``max_rows``, G the query's ``max_groups`` (1 without GROUP BY), n_ug the unit's rows in
group g, and C = max(2R, 100) a public clip):

* A = Σ_u min(Σ_g n_ug, C) — the rows the query reads;
* K₁ = Σ_u min(Σ_g min(n_ug, R), C) — what is left after ``max_rows``;
* K = Σ_u min(Σ_{G largest groups} min(n_ug, R), C) — after ``max_groups`` as well (the
  bounded SQL keeps each unit's groups with the most rows, as here);
* with the L1 row cap k (``max_contributions``, when it applies to the query),
  K_c = Σ_u min(Σ_{G largest groups} min(n_ug, R), k, C) — after the cap as well (the cap keeps
  rows within ``max_rows`` first, in the unit's group order, so it removes what exceeds k of
  them; reported as "rows dropped by max_contributions", (K − K_c)/A);
* for each clamped column j, X_j = Σ_u min(#rows of u whose value lies outside the bounds, C).

Each is one noisy sum with sensitivity C (:mod:`dpsql.proxy.measures`), released at
``dp.bias_epsilon`` (default 0.25; the query's δ) and charged before any row is read, like a
query. The report states (A − K₁)/A "rows dropped by max_rows", (K₁ − K)/A "rows dropped by
max_groups" and X_j/A "values clamped", each ± its 95% error from the noise (delta method:
sd(X/A) ≈ √(σ_X² + (X/A)²σ_A²)/A, ×1.96). Units with more than C rows count as C rows, so with
very heavy users the drop estimates are lower bounds (said in the report).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import sqlglot
from sqlglot import exp

from dpsql.accountant.costs import Accounting
from dpsql.accountant.planner import NoisePlan
from dpsql.errors import UnsupportedQuery
from dpsql.policy import Policy
from dpsql.proxy.measures import Measure, calibrate_measures, sigma
from dpsql.rewriter.plan import ReleasePlan, Rewrite

_ROWS, _KEPT_ROWS, _KEPT, _CAPPED = "__dp_a", "__dp_kr", "__dp_kg", "__dp_kc"


@dataclass(frozen=True)
class Clamp:
    """One clamped value column of ``__dp_rows``: its raw expression and bounds (for the report)."""

    column: str  # the flag column, __dp_c{j}
    label: str
    lower: str
    upper: str


@dataclass(frozen=True)
class BiasPlan:
    """The bias query of one private query: SQL, measures and their calibration (pure)."""

    sql: str
    measures: tuple[Measure, ...]
    noise: NoisePlan
    release_plan: ReleasePlan
    table: str
    unit: str
    max_rows: int
    max_groups: int
    grouped: bool
    clip: int
    clamps: tuple[Clamp, ...]
    max_contributions: int | None = None  # the query's L1 row cap k, when it applies


def build(rw: Rewrite, policy: Policy, epsilon: Fraction, delta: Fraction) -> BiasPlan:
    """The bias query of ``rw`` at (ε, δ). Reads no data. UnsupportedQuery (0A000) when the
    query's bounded SQL has no row relation to measure (e.g. a public-only query)."""
    plan = rw.plan
    if plan is None:
        raise UnsupportedQuery("EXPLAIN (BIAS) measures contribution bounding; this query reads public tables only",
                               hint="its answer is exact: there is no bounding bias")
    tp = policy.table(plan.tables[0]) if plan.tables else None
    if plan.private_join:
        raise UnsupportedQuery("EXPLAIN (BIAS) does not yet measure joins between private tables",
                               hint="measure each table's query on its own; no budget was spent")
    try:
        tree = sqlglot.parse_one(rw.sql, read=rw.dialect)
    except sqlglot.errors.ParseError:
        tree = None
    ctes = list(tree.find_all(exp.CTE)) if tree is not None else []
    rows = next((c for c in ctes if c.alias == "__dp_rows"), None)
    if tp is None or rows is None or not isinstance(rows.this, exp.Select):
        raise UnsupportedQuery("EXPLAIN (BIAS) is not available for this query", hint="try it without joins or subqueries")
    select = rows.this.copy()
    names = [p.alias_or_name for p in select.expressions]
    keys = [n for n in names if n.startswith("__dp_k")]
    clamps: list[Clamp] = []
    for p in list(select.expressions):
        if not p.alias_or_name.startswith("__dp_g"):
            continue
        found = clamp_of(p)
        if found is None:
            continue
        raw, lo, hi = found
        flag = f"__dp_c{len(clamps)}"
        cond = exp.or_(exp.LT(this=raw.copy(), expression=lo.copy()), exp.GT(this=raw.copy(), expression=hi.copy()))
        select.append("expressions", exp.alias_(exp.Case(ifs=[exp.If(this=cond, true=exp.Literal.number(1))],
                                                          default=exp.Literal.number(0)), flag))
        label = raw.sql(dialect="postgres").replace('"', "")
        clamps.append(Clamp(flag, label, lo.sql(dialect="postgres"), hi.sql(dialect="postgres")))
    r, g = tp.max_rows, (plan.max_groups if plan.keys else 1)
    clip = max(2 * r, 100)
    grouped = bool(keys)
    d = rw.dialect
    rows_sql = select.sql(dialect=d)
    key_list = "".join(f", {k}" for k in keys)
    flags = "".join(f", SUM({c.column}) AS {c.column}" for c in clamps)
    unit_flags = "".join(f", LEAST(SUM({c.column}), {clip}) AS {c.column}" for c in clamps)
    kept = f"CASE WHEN __dp_rank <= {g} THEN LEAST(__dp_n, {r}) ELSE 0 END" if grouped else f"LEAST(__dp_n, {r})"
    ranked = (f"__dp_ranked AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY __dp_uid ORDER BY LEAST(__dp_n, {r}) DESC) "
              f"AS __dp_rank FROM __dp_pairs)") if grouped else "__dp_ranked AS (SELECT * FROM __dp_pairs)"
    cap = plan.max_contributions
    capped = f", LEAST(SUM({kept}), {cap}, {clip}) AS {_CAPPED}" if cap is not None else ""
    cells = [_ROWS, _KEPT_ROWS, _KEPT, *([_CAPPED] if cap is not None else []), *(c.column for c in clamps)]
    sums = ", ".join(f"COALESCE(SUM({c}), 0) AS {c}" for c in cells)
    sql = (
        f"WITH __dp_rows AS ({rows_sql}), "
        f"__dp_pairs AS (SELECT __dp_uid{key_list}, COUNT(*) AS __dp_n{flags} FROM __dp_rows GROUP BY __dp_uid{key_list}), "
        f"{ranked}, "
        f"__dp_units AS (SELECT __dp_uid, LEAST(SUM(__dp_n), {clip}) AS {_ROWS}, "
        f"LEAST(SUM(LEAST(__dp_n, {r})), {clip}) AS {_KEPT_ROWS}, LEAST(SUM({kept}), {clip}) AS {_KEPT}{capped}{unit_flags} "
        f"FROM __dp_ranked GROUP BY __dp_uid) "
        f"SELECT {sums} FROM __dp_units"
    )
    measures = [Measure(_ROWS, 1, clip, "rows read"), Measure(_KEPT_ROWS, 1, clip, "rows kept by max_rows")]
    if grouped:
        measures.append(Measure(_KEPT, 1, clip, "rows kept by max_rows and max_groups"))
    if cap is not None:
        measures.append(Measure(_CAPPED, 1, clip, "rows kept by max_rows, max_groups and max_contributions"))
    measures += [Measure(c.column, 1, clip, f"rows with {c.label} clamped") for c in clamps]
    accounting: Accounting = policy.privacy.accounting
    release_plan, noise = calibrate_measures(measures, epsilon, delta, accounting)
    return BiasPlan(sql, tuple(measures), noise, release_plan, tp.name, tp.unit_label, r, g, grouped, clip,
                    tuple(clamps), cap)


def clamp_of(node: exp.Expression) -> tuple[exp.Expression, exp.Expression, exp.Expression] | None:
    """(raw expression, lower, upper) of the rewriter's clamp ``CASE WHEN x < lo THEN lo WHEN x > hi
    THEN hi ELSE x END`` inside a value column, or None."""
    for case in node.find_all(exp.Case):
        ifs = case.args.get("ifs") or []
        if len(ifs) != 2 or case.args.get("default") is None:
            continue
        a, b = ifs
        if isinstance(a.this, exp.LT) and isinstance(b.this, exp.GT) and a.this.this == b.this.this == case.args["default"]:
            return case.args["default"], a.this.expression, b.this.expression
    return None


def exact_cells(bp: BiasPlan, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> dict[str, list[int]]:
    """The exact integer of each measure from the bias query's one result row (never shown)."""
    row = rows[0] if rows else [0] * len(columns)
    index = {c.lower(): i for i, c in enumerate(columns)}
    return {m.name: [int(row[index[m.name]] or 0)] for m in bp.measures}  # type: ignore[call-overload]


@dataclass(frozen=True)
class Estimate:
    """A released fraction and its 95% noise error."""

    value: float
    error95: float


def _ratio(num: float, sd_num: float, den: float, sd_den: float) -> Estimate:
    if den <= 0:
        return Estimate(math.nan, math.inf)
    r = num / den
    return Estimate(r, 1.96 * math.sqrt(sd_num**2 + (r * sd_den) ** 2) / den)


def estimates(bp: BiasPlan, noisy: Mapping[str, Sequence[int]]) -> dict[str, Estimate]:
    """The bias fractions from the noisy measures (post-processing): ``max_rows``, ``max_groups``
    (grouped queries) and one per clamped column (by flag column)."""
    v = {m.name: float(noisy[m.name][0]) for m in bp.measures}
    sd = {m.name: sigma(bp.noise, m.name) for m in bp.measures}
    a, sa = v[_ROWS], sd[_ROWS]
    out = {"max_rows": _ratio(a - v[_KEPT_ROWS], math.hypot(sa, sd[_KEPT_ROWS]), a, sa)}
    if bp.grouped:
        out["max_groups"] = _ratio(v[_KEPT_ROWS] - v[_KEPT], math.hypot(sd[_KEPT_ROWS], sd[_KEPT]), a, sa)
    if bp.max_contributions is not None:
        base = _KEPT if bp.grouped else _KEPT_ROWS
        out["max_contributions"] = _ratio(v[base] - v[_CAPPED], math.hypot(sd[base], sd[_CAPPED]), a, sa)
    for c in bp.clamps:
        out[c.column] = _ratio(v[c.column], sd[c.column], a, sa)
    return out


def report(bp: BiasPlan, est: Mapping[str, Estimate]) -> list[str]:
    """The QUERY PLAN lines of EXPLAIN (BIAS)."""
    noise = bp.noise
    lines = [
        f"dpsql bias estimate: contribution bounding of {bp.table} (privacy unit {bp.unit}), released with "
        f"ε = {float(noise.epsilon):g}, δ = {float(noise.delta):.3g} (charged); ± is the 95% noise error",
        f"  rows dropped by max_rows={bp.max_rows}: {_pct(est['max_rows'])}",
    ]
    if bp.grouped:
        lines.append(f"  rows dropped by max_groups={bp.max_groups}: {_pct(est['max_groups'])}")
    if bp.max_contributions is not None:
        lines.append(f"  rows dropped by max_contributions={bp.max_contributions} (beyond those): "
                     f"{_pct(est['max_contributions'])}")
    for c in bp.clamps:
        lines.append(f"  rows with {c.label} clamped to [{c.lower}, {c.upper}]: {_pct(est[c.column])}")
    lines.append(f"  (a {bp.unit} with more than {bp.clip} rows counts as {bp.clip}: with heavier users the drops are lower bounds)")
    lines.append("  the query's noise intervals (DP_INTERVAL_LOW/HIGH, EXPLAIN) do not include this bias; "
                 "`dpsql tune` suggests bounds that reduce it")
    return lines


def _pct(e: Estimate) -> str:
    if not math.isfinite(e.value):
        return "not estimable (too few rows for this ε)"
    value = min(max(e.value, 0.0), 1.0)
    return f"≈ {100 * value:.1f}% (± {100 * e.error95:.1f}%)"
