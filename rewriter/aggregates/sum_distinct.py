"""SUM(DISTINCT x) for a numeric expression x with declared bounds [L, U].

Row-level input: x clamped to [L, U] and put on its grid (the same ``__dp_g`` column as SUM(x)),
so the distinct values summed are the distinct *clamped grid* values (two values that clamp to
the same bound, or fall on the same grid step, count once). Bounding
(:mod:`~dpsql.rewriter.distinct_sql`): each unit keeps at most k distinct values per kept group
(k = the column's ``max_distinct``, else ``max_rows``), chosen by MD5 of (unit id, value, salt);
the statistic is the sum of the distinct values kept by any unit. Removing one unit removes at
most k values, each of magnitude ≤ c = max(|L|, |U|), from each of its ≤ ``max_groups`` groups:
L∞ = k·c grid units
(L1 = ``max_contributions``·c under the row cap). Per-unit bounds (``unit_lower``/``unit_upper``)
do not apply: the rows need ``lower``/``upper``. Released like SUM (``int8`` on grid 1, else
``float8``) through the sum module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlglot import exp

from dpsql.errors import UnsupportedQuery
from dpsql.rewriter.aggregates.base import AggregateSpec, Builder, ClassifyContext, Value, fmt, numeric_argument, pretty
from dpsql.rewriter.plan import AggregateRelease, Statistic

NODES: tuple[type[exp.Expression], ...] = (exp.Sum,)
SPEC_KINDS = ("sum_distinct",)
RELEASE_KINDS: tuple[str, ...] = ()  # released as a "sum"
ALIASES: dict[str, tuple[type[exp.Expression], str]] = {}


def classify(node: exp.Expression, ctx: ClassifyContext) -> AggregateSpec | None:
    """``SUM(DISTINCT x)`` (FILTER allowed) for one row-level, non-unit numeric expression; None for SUM(x)."""
    arg = node.this
    if not isinstance(arg, exp.Distinct):
        return None
    if len(arg.expressions) != 1:
        raise UnsupportedQuery(f"{ctx.label}: SUM(DISTINCT …) takes one expression", hint="write SUM(DISTINCT column)")
    x = numeric_argument(exp.Sum(this=arg.expressions[0].copy()), ctx)
    return AggregateSpec("sum_distinct", ctx.filtered(x), ctx.label, node)


def bound(spec: AggregateSpec, b: Builder) -> AggregateRelease:
    """One statistic: the sum of distinct kept grid values, L∞ = ``k · max(|L|, |U|)`` grid units (k: the
    column's ``max_distinct``, else ``max_rows``)."""
    assert spec.input is not None
    g = b.grid_for(spec)
    col = b.input_column(spec.input, grid=g)
    c = max(abs(g.lo), abs(g.hi))
    r, why = b.distinct_limit(spec.input)
    desc = (
        f"SUM(DISTINCT {pretty(spec.input)}) clamped to [{fmt(g.lower)}, {fmt(g.upper)}] per row, grid {fmt(g.step)}: "
        f"≤ {r} distinct value(s) per unit and group ({why}), chosen by a hash of the unit and the value"
    )
    s = b.distinct_stat(col, "s", r * c, desc, per_unit=r, kind="sum", grid=g.step, l1=b.rows_l1(c))
    return AggregateRelease("sum", spec.label, (s,), g.lower, g.upper, integer=g.integer_input and g.exponent == 0)


def finalize(r: AggregateRelease, stats: Mapping[str, Statistic], cols: Sequence[Sequence[int]], n: int) -> list[Value]:
    """Noisy integer × grid per group (releases go through ``sum``)."""
    from dpsql.rewriter.aggregates import sum as sum_

    return sum_.finalize(r, stats, cols, n)


def pg_type(r: AggregateRelease) -> str:
    """Like SUM: ``int8`` on grid 1, else ``float8``."""
    return "int8" if r.integer else "float8"
