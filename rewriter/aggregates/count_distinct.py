"""COUNT(DISTINCT x) for a non-unit expression x (any comparable type), and APPROX_COUNT_DISTINCT(x).

Row-level input: ``x`` made total and canonical (``__dp_v{n}``; under FILTER ``CASE WHEN cond
THEN x END``). Bounding (:mod:`~dpsql.rewriter.distinct_sql`): within each of its kept groups a
unit keeps at most k distinct non-NULL values of x — k is the column's ``max_distinct`` when x is
a bare column that declares it, else ``max_rows`` — the first by MD5 of (unit id, value, salt): a
choice that depends on that unit's own rows only. The statistic is the number of distinct values
kept by any unit; removing one unit removes at most its k values from each of its ≤
``max_groups`` groups (values other units kept stay), so L∞ = k, L0 = ``max_groups``, and under
``max_contributions = m`` L1 = m (each kept value needs a kept row).
Post-processing: the noisy integer, floored at 0 (``int8``), through the count module.

DuckDB's ``APPROX_COUNT_DISTINCT(x)`` is read as ``COUNT(DISTINCT x)`` (:func:`approx_distinct`,
a note in EXPLAIN): the bounded SQL counts exactly — a sketch (HyperLogLog) would not have this
sensitivity — and the noise is what makes the answer approximate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlglot import exp

from dpsql.errors import UnsupportedQuery
from dpsql.rewriter.aggregates.base import AggregateSpec, Builder, ClassifyContext, Value, check_row_level
from dpsql.rewriter.families import type_family
from dpsql.rewriter.plan import AggregateRelease, Statistic

NODES: tuple[type[exp.Expression], ...] = (exp.Count, exp.ApproxDistinct)
SPEC_KINDS = ("count_distinct",)
RELEASE_KINDS: tuple[str, ...] = ()  # released as a "count" (floored at 0, int8)
ALIASES: dict[str, tuple[type[exp.Expression], str]] = {}

APPROX_NOTE = (
    "APPROX_COUNT_DISTINCT(x) is answered as COUNT(DISTINCT x): the bounded SQL counts exactly (no sketch), "
    "the noise makes it approximate"
)


def approx_distinct(node: exp.ApproxDistinct) -> exp.Expression:
    """``APPROX_COUNT_DISTINCT(x)`` → ``COUNT(DISTINCT x)``; refuses an accuracy argument (0A000).

    >>> from sqlglot import parse_one
    >>> approx_distinct(parse_one("SELECT APPROX_COUNT_DISTINCT(x)").expressions[0]).sql()
    'COUNT(DISTINCT x)'
    """
    if node.args.get("accuracy") is not None or node.this is None:
        raise UnsupportedQuery(
            "APPROX_COUNT_DISTINCT takes exactly one argument", hint="write APPROX_COUNT_DISTINCT(column)"
        )
    return exp.Count(this=exp.Distinct(expressions=[node.this.copy()]))


def classify(node: exp.Expression, ctx: ClassifyContext) -> AggregateSpec | None:
    """``COUNT(DISTINCT x)`` (FILTER allowed) for one row-level expression x; None for any other COUNT."""
    if isinstance(node, exp.ApproxDistinct):  # normally rewritten by normalize_aliases already
        node = approx_distinct(node)
    arg = node.this
    if not isinstance(arg, exp.Distinct):
        return None
    exprs = arg.expressions
    if len(exprs) != 1 or isinstance(exprs[0], exp.Tuple | exp.Star):
        raise UnsupportedQuery(
            f"{ctx.label}: COUNT(DISTINCT …) of several expressions is not supported",
            hint="count the distinct values of one expression, e.g. COUNT(DISTINCT a || '/' || b)",
        )
    x = exprs[0]
    check_row_level(x)
    return AggregateSpec("count_distinct", ctx.filtered(x), ctx.label, node)


def bound(spec: AggregateSpec, b: Builder) -> AggregateRelease:
    """One distinct-count statistic: L∞ = k (the column's ``max_distinct``, else ``max_rows``) per group,
    L1 = ``max_contributions``."""
    assert spec.input is not None
    if type_family(spec.input, b.families) == "unknown":
        raise UnsupportedQuery(
            f"{spec.label}: COUNT(DISTINCT …) of this type is not supported",
            hint="count the distinct values of a number, text, boolean, date or timestamp expression",
        )
    col = b.value_column(spec.input)
    r, why = b.distinct_limit(spec.input)
    desc = f"{spec.label}: ≤ {r} distinct value(s) per unit and group ({why}), chosen by a hash of the unit and the value"
    s = b.distinct_stat(col, "n", r, desc, per_unit=r, l1=b.rows_l1(1))
    return AggregateRelease("count", spec.label, (s,), integer=True)


def finalize(r: AggregateRelease, stats: Mapping[str, Statistic], cols: Sequence[Sequence[int]], n: int) -> list[Value]:
    """The noisy count per group, floored at 0 (post-processing; releases go through ``count``)."""
    return [max(0, int(v)) for v in cols[0]]


def pg_type(r: AggregateRelease) -> str:
    """Counts are ``int8``."""
    return "int8"
