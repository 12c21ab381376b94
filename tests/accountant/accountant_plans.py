"""Small release plans built the way the rewriter builds them (shared by the accountant tests)."""

from __future__ import annotations

from fractions import Fraction

from dpsql.rewriter.plan import AggregateRelease, KeyColumn, OutputColumn, ReleasePlan, Statistic

COUNT = Statistic("a0", "count", "COUNT(*)", 1)
SUM5 = Statistic("a1", "sum", "SUM(x)", 5, Fraction(1, 4))
UNITS = Statistic("u", "units", "COUNT(DISTINCT pid)", 1)


def build_plan(
    stats: tuple[Statistic, ...],
    *,
    max_groups: int = 1,
    selection: bool = False,
    units_column: str | None = None,
    release_units: bool = True,
) -> ReleasePlan:
    """A plan with one text key: public keys, or DP partition selection when ``selection``."""
    aggs = tuple(
        AggregateRelease("count_units" if s.kind == "units" else s.kind, s.description, (s.column,))
        for s in stats
        if s.kind != "units" or release_units
    )
    return ReleasePlan(
        max_groups=max_groups,
        keys=(KeyColumn("k0", "k", "text"),),
        stats=stats,
        aggregates=aggs,
        outputs=(OutputColumn("k", "text"),),
        keys_public=not selection,
        public_keys_sql=None if selection else "SELECT 'a' UNION ALL SELECT 'b'",
        units_column=units_column,
        post_sql=None,
    )
