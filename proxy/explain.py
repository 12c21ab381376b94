"""EXPLAIN: the rewritten SQL, the query's cost, and each output column's noise and 95% error bound.

Computed from the rewrite and the calibration only: it reads no data and spends nothing.
"""

from __future__ import annotations

from fractions import Fraction

from dpsql.accountant.calibration import sensitivity_norms
from dpsql.accountant.planner import NoisePlan, SelectionNoise, StatisticNoise
from dpsql.policy import Policy
from dpsql.proxy.quantile_release import explain_lines, explain_quantile
from dpsql.rewriter.plan import AggregateRelease, ReleasePlan, Rewrite, Statistic


def explain_rows(rw: Rewrite, noise: NoisePlan | None, policy: Policy) -> list[str]:
    """The lines of the ``QUERY PLAN`` column for EXPLAIN."""
    if rw.plan is None or noise is None:
        return [
            "dpsql: public tables only — runs as is, no noise, no privacy cost",
            f"{rw.dialect} SQL:",
            f"  {rw.sql}",
        ]
    plan = rw.plan
    lines = [f"dpsql differentially private query ({noise.accounting} accounting)"]
    cost = noise.cost
    if not plan.stats and not plan.quantiles and plan.keys_public:
        lines.append("  cost: nothing — the answer follows from the policy alone (declared or public keys, no aggregate); "
                     "no private row is read and nothing is charged")
    elif noise.accounting == "zcdp":
        lines.append(
            f"  cost: ε = {_g(noise.epsilon)}, δ = {_g(noise.delta)} for this query alone; "
            f"charged ρ = {_g(cost.amount)} (zCDP) and δ = {_g(cost.delta)}"
        )
    else:
        lines.append(f"  cost: ε = {_g(cost.amount)}, δ = {_g(cost.delta)} (pure ε summed by the budget)")
    tp = policy.table(plan.tables[0]) if plan.tables else None
    if tp is not None:
        lines.append(
            f"  contribution bounds: each {tp.unit_label} adds at most {plan.max_rows or tp.max_rows} row(s) to a group"
            + (f" and touches at most {plan.max_groups} group(s)" if plan.keys else "")
            + (f"; at most {plan.max_contributions} row(s) in all across the groups (max_contributions)"
               if plan.max_contributions is not None else "")
        )
        unit_bounded = [c for c in tp.columns.values() if c.unit_lower is not None and c.unit_upper is not None]
        for c in unit_bounded:
            assert c.unit_lower is not None and c.unit_upper is not None
            lines.append(
                f"  per-unit bounds: SUM/AVG({c.name}) clamp each {tp.unit_label}'s total (AVG: mean) in a group to "
                f"[{_g(c.unit_lower)}, {_g(c.unit_upper)}]"
            )
    if plan.keys:
        labels = ", ".join(k.label for k in plan.keys)
        if plan.keys_public:
            lines.append(f"  groups: {labels} — public key set, every key released (absent keys get a noisy zero)")
        else:
            sel = noise.selection
            assert sel is not None
            lines += _selection_lines(labels, sel, noise.selection_alternative, plan)
    lines.append("  output columns:")
    stats = {s.column: s for s in noise.stats}
    sources = _output_sources(plan)
    for out, src in zip(plan.outputs, sources, strict=False):
        if src is None:
            lines.append(f"    {out.name} ({out.pg_type}): computed after noise from the aggregates below")
        elif src[0] == "key":
            lines.append(f"    {out.name}: group key {plan.keys[src[1]].label}")
        else:
            agg = plan.aggregates[src[1]]
            lines.append(f"    {out.name}: {agg.label} — {_agg_noise(agg, stats, plan, noise)}")
    if any(src is None for src in sources):
        lines.append("  aggregates (noisy; HAVING, ORDER BY, LIMIT and arithmetic are applied to these after noise):")
        for agg in plan.aggregates:
            lines.append(f"    {agg.label} — {_agg_noise(agg, stats, plan, noise)}")
    lines.append("  note: the 95% errors are the noise only; contribution bounding (max_rows, max_groups, clamping) can bias "
                 "results further — EXPLAIN (BIAS) estimates it (charged), dpsql tune suggests bounds")
    for d in plan.description:
        lines.append(f"  note: {d}")
    for s in plan.stats:
        n = stats.get(s.column)
        if n is None:
            continue
        lines.append(f"  statistic {s.column}: {s.description}; sensitivity {_sensitivity(s, n, plan)}")
    lines += explain_lines(plan, noise)
    lines.append(f"  {rw.dialect} SQL:")
    lines.append(f"    {rw.sql}")
    if plan.post_sql:
        lines.append("  post-processing (on noisy values):")
        lines.append(f"    {plan.post_sql}")
    return lines


def _selection_lines(labels: str, sel: SelectionNoise, alt: SelectionNoise | None, plan: ReleasePlan) -> list[str]:
    """How the groups are selected: which construction the planner chose, its threshold, and the
    other construction's release point when one was considered (planner docstring)."""
    if sel.construction == "units":
        lines = [
            f"  groups: {labels} — DP partition selection ({sel.mechanism}, scale {_g(sel.scale)}): a group is released "
            f"only if its noisy count of distinct units reaches {sel.threshold}"
        ]
        note = (f"  selection: a separate distinct-unit count (L∞ 1), with its own share of the budget; a group of "
                f"≥ {sel.release_point} units is released with probability ≥ 97.5%")
        if alt is not None:
            note += (f"; thresholding {_label(plan, alt.column)}'s own value instead would need ≥ {alt.release_point} rows "
                     f"(L∞ {alt.linf}), more than these {sel.release_point} units, so it was not chosen (it would drop "
                     f"groups with few rows per unit)")
        return [*lines, note]
    label = _label(plan, sel.column)
    note = (f"  selection: {label}'s own noisy value is thresholded (L∞ {sel.linf}; its noise is the threshold's, with the "
            f"selection's share of the budget); a group of ≥ {sel.release_point} rows is released with probability ≥ 97.5%")
    if alt is not None:
        note += (f"; a separate distinct-unit threshold would need ≥ {alt.release_point} units and add noise to "
                 f"{label}, so it was not chosen")
    return [
        f"  groups: {labels} — DP partition selection on the noisy {label} itself ({sel.mechanism}, scale {_g(sel.scale)}): "
        f"a group is released only if its noisy {label} reaches {sel.threshold}",
        note,
    ]


def _label(plan: ReleasePlan, column: str | None) -> str:
    """The aggregate label of a statistic (e.g. ``COUNT(*)``), for EXPLAIN."""
    for a in plan.aggregates:
        if column in a.stats and a.kind == "count":
            return a.label
    return "COUNT(*)"


def _sensitivity(s: Statistic, n: StatisticNoise, plan: ReleasePlan) -> str:
    """The sensitivity the statistic's noise was calibrated to: L∞ × L0, plus the L1 bound and the
    norm it gives when ``max_contributions`` tightens it."""
    text = f"{s.max_contribution} × {n.l0} group(s)"
    if n.l1 is not None and n.l1 < n.l0 * n.linf:
        l1, l2sq = sensitivity_norms(n.l0, n.linf, n.l1)
        norm = f"L2 = √{l2sq}" if n.mechanism in ("discrete_gaussian", "gaussian_threshold") else f"L1 = {l1}"
        text += f", at most {n.l1} over all groups (max_contributions): {norm}"
    return text


def _output_sources(plan: ReleasePlan) -> list[tuple[str, int] | None]:
    if plan.output_map:
        return list(plan.output_map)
    return [None] * len(plan.outputs)


def _agg_noise(agg: AggregateRelease, stats: dict, plan: ReleasePlan, noise: NoisePlan) -> str:
    if agg.kind == "quantile":
        return explain_quantile(plan, noise, agg.stats[0])
    first = stats.get(agg.stats[0])
    if agg.kind in ("count", "count_units", "sum") and first is not None:
        scale = first.released_scale
        err = first.released_error95
        return f"{first.mechanism} noise, scale {_g(scale)}, 95% error ±{_g(err)}"
    if agg.kind == "avg" and len(agg.stats) >= 2:
        n, s = stats[agg.stats[0]], stats[agg.stats[1]]
        return (
            f"noisy centred SUM / noisy COUNT: 95% error about ±{_g(s.released_error95)}/n "
            f"(+ count noise ±{_g(n.released_error95)}), clamped to [{_g(agg.lower)}, {_g(agg.upper)}]"
        )
    parts = ", ".join(f"{c}: 95% ±{_g(stats[c].released_error95)}" for c in agg.stats if c in stats)
    return f"from noisy count, sum and sum of squares ({parts})"


def _g(v: Fraction | float | int | None) -> str:
    if v is None:
        return "-"
    return f"{float(v):.4g}"
