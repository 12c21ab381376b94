"""COUNT(DISTINCT unit): the number of privacy units per group.

Row-level input: none (the per-unit layer already has one row per (unit, group)). Partial: none —
the statistic is ``COUNT(*)`` over the kept (unit, group) rows, the shared ``__dp_units``
column; sensitivity 1 per group. Under partition selection it is the threshold mechanism's own
noisy count (not noised twice). Post-processing: floored at 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlglot import exp

from dpsql.rewriter.aggregates.base import AggregateSpec, Builder, ClassifyContext, Value
from dpsql.rewriter.plan import AggregateRelease, Statistic

NODES: tuple[type[exp.Expression], ...] = (exp.Count,)
SPEC_KINDS = ("count_units",)
RELEASE_KINDS = ("count_units",)
ALIASES: dict[str, tuple[type[exp.Expression], str]] = {}


def classify(node: exp.Expression, ctx: ClassifyContext) -> AggregateSpec | None:
    """``COUNT(DISTINCT unit)`` without FILTER; anything else is left to the next module."""
    arg = node.this
    if not isinstance(arg, exp.Distinct) or ctx.condition is not None:
        return None
    exprs = arg.expressions
    if len(exprs) == 1 and ctx.is_unit(exprs[0]):
        return AggregateSpec("count_units", None, ctx.label, node)
    return None


def bound(spec: AggregateSpec, b: Builder) -> AggregateRelease:
    """The shared distinct-unit statistic."""
    return AggregateRelease("count_units", spec.label, (b.units(),), integer=True)


def finalize(r: AggregateRelease, stats: Mapping[str, Statistic], cols: Sequence[Sequence[int]], n: int) -> list[Value]:
    """The noisy unit count per group, floored at 0 (post-processing)."""
    return [max(0, int(v)) for v in cols[0]]


def pg_type(r: AggregateRelease) -> str:
    """Counts are ``int8``."""
    return "int8"
