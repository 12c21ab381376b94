"""COUNT(DISTINCT unit), with or without FILTER: the number of privacy units per group.

Without FILTER. Row-level input: none (the per-unit layer already has one row per (unit,
group)). Partial: none — the statistic is ``COUNT(*)`` over the kept (unit, group) rows, the
shared ``__dp_units`` column; sensitivity 1 per group. Under partition selection it is the
threshold mechanism's own noisy count (not noised twice).

With ``FILTER (WHERE cond)``. Row-level input: ``CASE WHEN cond THEN 1 END``. Partial:
``LEAST(COUNT(input), 1)`` per (unit, group) — 1 when the unit has a row satisfying cond in the
group, else 0 — so the group total is the number of such units and one unit changes it by at
most 1 (L∞ = 1, L1 = ``max_contributions``: a unit's 1 needs one of its kept rows).

Post-processing: floored at 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlglot import exp

from dpsql.rewriter.aggregates.base import AggregateSpec, Builder, ClassifyContext, Value, check_row_level, least
from dpsql.rewriter.plan import AggregateRelease, Statistic

NODES: tuple[type[exp.Expression], ...] = (exp.Count,)
SPEC_KINDS = ("count_units", "count_units_filtered")
RELEASE_KINDS = ("count_units",)
ALIASES: dict[str, tuple[type[exp.Expression], str]] = {}


def classify(node: exp.Expression, ctx: ClassifyContext) -> AggregateSpec | None:
    """``COUNT(DISTINCT unit)``, with or without FILTER; anything else is left to the next module."""
    arg = node.this
    if not isinstance(arg, exp.Distinct):
        return None
    exprs = arg.expressions
    if len(exprs) != 1 or not ctx.is_unit(exprs[0]):
        return None
    if ctx.condition is None:
        return AggregateSpec("count_units", None, ctx.label, node)
    check_row_level(ctx.condition)
    return AggregateSpec("count_units_filtered", ctx.filtered(exp.Literal.number(1)), ctx.label, node)


def bound(spec: AggregateSpec, b: Builder) -> AggregateRelease:
    """The shared distinct-unit statistic, or (under FILTER) a 0/1 partial per (unit, group)."""
    if spec.kind == "count_units":
        return AggregateRelease("count_units", spec.label, (b.units(),), integer=True)
    assert spec.input is not None
    key = f"units_if:{spec.input.sql()}"
    found = b.has_stat(key)
    if found is None:
        col = b.input_column(spec.input, grid=None)
        partial = least(exp.Count(this=exp.column(col)), exp.Literal.number(1))
        desc = f"{spec.label}: 1 per unit with a row satisfying the filter in the group"
        found = b.stat(key, "count", partial, 1, desc, l1=b.rows_l1(1))
    return AggregateRelease("count_units", spec.label, (found,), integer=True)


def finalize(r: AggregateRelease, stats: Mapping[str, Statistic], cols: Sequence[Sequence[int]], n: int) -> list[Value]:
    """The noisy unit count per group, floored at 0 (post-processing)."""
    return [max(0, int(v)) for v in cols[0]]


def pg_type(r: AggregateRelease) -> str:
    """Counts are ``int8``."""
    return "int8"
