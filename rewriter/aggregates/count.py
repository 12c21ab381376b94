"""COUNT(*), COUNT(expr) and COUNT_IF(cond): rows per (unit, group), clamped to ``max_rows``.

Row-level input: nothing for COUNT(*) (also COUNT(1) and COUNT(unit), which count the same
rows), the argument for COUNT(expr), ``CASE WHEN cond THEN 1 END`` for COUNT_IF, and
``CASE WHEN filter THEN … END`` for a FILTER.
Partial: ``LEAST(COUNT(…), max_rows)`` per (unit, group); sensitivity ``max_rows`` per group.
Post-processing: the noisy integer, floored at 0. With ``max_rows = 1`` a unit's COUNT(*)
partial is 1 in each group it keeps, so COUNT(*) is the distinct-unit count and shares its
statistic (under partition selection: the threshold's own noisy count).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlglot import exp

from dpsql.errors import UnsupportedQuery
from dpsql.rewriter.aggregates.base import AggregateSpec, Builder, ClassifyContext, Value, check_row_level, pretty
from dpsql.rewriter.plan import AggregateRelease, Statistic

NODES: tuple[type[exp.Expression], ...] = (exp.Count, exp.CountIf)
SPEC_KINDS = ("count_star", "count_col")
RELEASE_KINDS = ("count",)
ALIASES: dict[str, tuple[type[exp.Expression], str]] = {}


def classify(node: exp.Expression, ctx: ClassifyContext) -> AggregateSpec | None:
    """COUNT(*)/COUNT(x)/COUNT_IF(c), with FILTER; refuses COUNT(DISTINCT …) not claimed before."""
    if isinstance(node, exp.CountIf):  # DuckDB's COUNT_IF(cond): the rows where cond is true
        check_row_level(node.this)
        cond = node.this if ctx.condition is None else exp.and_(ctx.condition.copy(), node.this.copy())
        return AggregateSpec("count_col", exp.Case(ifs=[exp.If(this=cond, true=exp.Literal.number(1))]), ctx.label, node)
    arg = node.this
    if isinstance(arg, exp.Distinct):
        raise UnsupportedQuery(f"{ctx.label} is not supported", hint="COUNT(DISTINCT x) takes one expression")
    if arg is None or isinstance(arg, exp.Star | exp.Literal | exp.Boolean) or ctx.is_unit(arg):
        if ctx.condition is None:
            return AggregateSpec("count_star", None, ctx.label, node)
        return AggregateSpec("count_col", ctx.filtered(exp.Literal.number(1)), ctx.label, node)
    check_row_level(arg)
    return AggregateSpec("count_col", ctx.filtered(arg), ctx.label, node)


def bound(spec: AggregateSpec, b: Builder) -> AggregateRelease:
    """One count statistic (or the distinct-unit count when ``max_rows`` is 1 and no argument)."""
    if spec.kind == "count_star" and b.max_rows == 1:
        return AggregateRelease("count", spec.label, (b.units(),), integer=True)
    if spec.kind == "count_star":
        return AggregateRelease("count", spec.label, (b.count_stat(None, "*"),), integer=True)
    assert spec.input is not None
    return AggregateRelease("count", spec.label, (b.count_stat(spec.input, pretty(spec.input)),), integer=True)


def finalize(r: AggregateRelease, stats: Mapping[str, Statistic], cols: Sequence[Sequence[int]], n: int) -> list[Value]:
    """The noisy count per group, floored at 0 (post-processing)."""
    return [max(0, int(v)) for v in cols[0]]


def pg_type(r: AggregateRelease) -> str:
    """Counts are ``int8``."""
    return "int8"
