"""The release plan: what the bounded SQL returns and how its exact cells become a noisy answer.

The rewriter produces a :class:`Rewrite` (bounded SQL + :class:`ReleasePlan`); the accountant turns
the plan's statistics and sensitivities into mechanisms and a cost; the executor runs the SQL, adds
the noise and calls :func:`dpsql.rewriter.estimates.finalize`. Everything here is derived from the
query and the policy only, never from data.

Shape of the bounded SQL's result: one row per group, with the key columns (``KeyColumn.column``)
followed by one exact integer column per :class:`Statistic` (``Statistic.column``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

StatKind = Literal["count", "sum", "units"]
# An aggregate release kind: one of the RELEASE_KINDS of a module in dpsql.rewriter.aggregates
# (count, count_units, sum, avg, var_pop, var_samp, stddev_pop, stddev_samp, …).
AggKind = str


@dataclass(frozen=True)
class Statistic:
    """One exact integer per group that receives noise.

    ``max_contribution`` (L∞) is the most one privacy unit can change this statistic in one group,
    in integer units; a unit touches at most ``ReleasePlan.max_groups`` groups (L0). The released
    value is ``noisy_integer * grid``.
    """

    column: str
    kind: StatKind
    description: str
    max_contribution: int
    grid: Fraction = Fraction(1)
    weight: int = 1  # share of the query's budget relative to the other statistics
    # With ReleasePlan.max_contributions: the most one unit can change this statistic summed over
    # all groups (L1, integer units), from the row cap; None when no tighter than L0 × L∞.
    l1: int | None = None
    # COUNT(*) of the kept rows: every (unit, group) the bounded SQL keeps adds ≥ 1, so the
    # group's total is ≥ its distinct-unit count (a candidate for thresholding its own value).
    counts_rows: bool = False

    @property
    def linf(self) -> int:
        """Alias of ``max_contribution``: the per-group sensitivity in integer units."""
        return self.max_contribution


@dataclass(frozen=True)
class KeyColumn:
    """A GROUP BY key as the bounded SQL returns it."""

    column: str  # column name in the bounded SQL result
    label: str  # the group expression as the analyst wrote it (for EXPLAIN)
    pg_type: str  # PostgreSQL type name of the key
    public_values: tuple[object, ...] | None = None  # declared values, when public by `values = [...]`


@dataclass(frozen=True)
class AggregateRelease:
    """How one SQL aggregate is computed from noisy statistics (post-processing)."""

    kind: AggKind
    label: str  # e.g. "AVG(visits.cost)"
    stats: tuple[str, ...]  # Statistic.column names, in the order the kind needs (see rewriter.estimates)
    lower: Fraction | None = None  # clamp range of the aggregated expression (sum/avg/var)
    upper: Fraction | None = None
    center: Fraction = Fraction(0)  # centred sums: value - center was summed
    integer: bool = False  # release as an integer (count, or sum of an integer expression on grid 1)
    pg_type: str | None = None  # the released type when the kind's module does not fix it (quantiles)


@dataclass(frozen=True)
class Histogram:
    """A bounded histogram query: one row per (group, candidate) — the key columns, ``__dp_bin``
    (candidate index) and ``__dp_n`` (exact count of kept values); see ``quantile_sql``."""

    sql: str
    candidates: int


@dataclass(frozen=True)
class QuantileStatistic:
    """One DP selection over a histogram's candidates, per released group (quantiles, MIN/MAX).

    ``target`` is ``quantile`` (level ``alpha``), ``min`` or ``max``; a unit adds at most
    ``max_contribution`` values to each of at most ``ReleasePlan.max_groups`` groups' histograms.
    ``grid`` (a :class:`~dpsql.rewriter.quantile_sql.ValueGrid`) decodes a candidate index.
    """

    column: str
    histogram: int  # index into ReleasePlan.histograms
    target: Literal["quantile", "min", "max"]
    alpha: Fraction | None
    candidates: int
    max_contribution: int
    description: str
    grid: object = None
    weight: int = 1


@dataclass(frozen=True)
class OutputColumn:
    """One column of the analyst's result."""

    name: str  # as PostgreSQL would name it ("count", "avg", "?column?" or the alias)
    pg_type: str  # PostgreSQL type name (int8, float8, text …)


@dataclass(frozen=True)
class ReleasePlan:
    """Everything the accountant and the executor need besides the bounded SQL."""

    max_groups: int  # L0: groups one unit may touch
    keys: tuple[KeyColumn, ...]
    stats: tuple[Statistic, ...]
    aggregates: tuple[AggregateRelease, ...]
    outputs: tuple[OutputColumn, ...]
    keys_public: bool  # True: every key tuple of public_keys_sql is released (absent ones get a noisy zero)
    public_keys_sql: str | None  # when keys_public and keys exist: SQL over public data listing all key tuples
    units_column: str | None  # Statistic column of distinct units per group (partition selection)
    post_sql: str | None  # DuckDB SQL over table __dp_noisy(__dp_k.., __dp_a..); None when outputs map 1:1
    post_types: tuple[tuple[str, str], ...] = ()  # (column, DuckDB type) of __dp_noisy, for post_sql
    output_map: tuple[tuple[Literal["key", "agg"], int], ...] = ()  # used when post_sql is None
    max_released_groups: int = 10_000
    tables: tuple[str, ...] = ()  # private tables read (for audit)
    description: tuple[str, ...] = ()  # human-readable notes for EXPLAIN (bounds, grids, key handling)
    constants_sql: str | None = None  # SELECT of the query's constant casts: evaluated before the charge
    # SELECT of the row counts of the uncorrelated scalar subqueries (public tables only), run before
    # the charge on every execution: a count above 1 is 21000 (rewriter.subqueries.check_sql)
    subquery_check_sql: str | None = None
    quantiles: tuple[QuantileStatistic, ...] = ()  # DP selections, released per kept group
    histograms: tuple[Histogram, ...] = ()  # their bounded histogram queries (run after the bounded SQL)
    max_rows: int = 0  # rows one unit adds to a group (0: the first table's max_rows)
    private_join: bool = False  # private tables joined on the unit (rewriter/joins.py)
    # The L1 row cap: each unit keeps at most this many rows across all groups before its partials
    # (so it touches ≤ min(max_groups, k) groups and each statistic's Statistic.l1 holds); None = off.
    max_contributions: int | None = None
    # GoogleSQL's min_privacy_units_per_group: partition selection keeps a group only when its noisy
    # distinct-unit count is ≥ max(τ, min_units) (a higher threshold: never a higher δ); None = τ alone
    min_units: int | None = None

    @property
    def partition_selection(self) -> bool:
        """True when the group keys are released through DP partition selection."""
        return bool(self.keys) and not self.keys_public


@dataclass(frozen=True)
class Rewrite:
    """The rewriter's result for one statement."""

    sql: str  # bounded SQL in the target dialect (or the regenerated public-only query)
    dialect: str
    plan: ReleasePlan | None  # None for a query over public tables only: run as is, no noise, no cost
    outputs: tuple[OutputColumn, ...] = field(default=())
    public_only: bool = False
