"""The typed objects of the embedding pipeline (:mod:`dpsql.embed`).

:class:`PreparedQuery` — a query rewritten for one dialect and calibrated at (ε, δ); derived from
the query text, the policy and the schema only, so preparing reads no data and spends nothing.

:class:`ReleaseToken` — what a charge returns, only once the ledger has committed it durably. It
names the bounded SQL the caller must run and the columns the rows must come back with. It is
single-use: the pipeline that issued it releases it at most once, whatever the outcome.

:class:`Release` — the answer: noisy, post-processed rows in the analyst's column names and
PostgreSQL types. Nothing in it was computed from exact values without noise first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from dpsql.accountant.costs import Cost
from dpsql.accountant.ledger import Receipt
from dpsql.accountant.planner import NoisePlan
from dpsql.rewriter.plan import OutputColumn, ReleasePlan, Rewrite


@dataclass(frozen=True)
class PreparedQuery:
    """One query, rewritten for ``dialect`` and calibrated at (``epsilon``, ``delta``).

    ``rewrite.plan`` is None for a query over public tables only (``public_only``): run
    :attr:`sql` as is, nothing is charged. Otherwise :attr:`sql` is the bounded SQL, whose result
    is one row per group with the :attr:`expected_columns`; ``noise`` is the calibrated noise
    plan and ``noise.cost`` what the charge will record.
    """

    text: str  # the analyst's SQL
    dialect: str
    rewrite: Rewrite
    noise: NoisePlan | None
    epsilon: Fraction
    delta: Fraction
    pipeline_id: str = field(default="", repr=False, compare=False)

    @property
    def public_only(self) -> bool:
        """True when the query reads public tables only: no noise, no cost."""
        return self.rewrite.plan is None

    @property
    def sql(self) -> str:
        """The SQL the caller runs on its engine: the bounded SQL (or the public query)."""
        return self.rewrite.sql

    @property
    def plan(self) -> ReleasePlan | None:
        """The release plan (None for a public-only query)."""
        return self.rewrite.plan

    @property
    def cost(self) -> Cost | None:
        """What charging this query records in the ledger (None for a public-only query)."""
        return self.noise.cost if self.noise is not None else None

    @property
    def public_keys_sql(self) -> str | None:
        """SQL over public data only (declared values or public tables) listing every group key
        tuple the answer releases; its rows go to ``EmbedSession.charge(public_keys=…)``. None
        when the plan releases keys by partition selection or has no keys."""
        plan = self.rewrite.plan
        return plan.public_keys_sql if plan is not None and plan.keys_public else None

    @property
    def constants_sql(self) -> str | None:
        """A SELECT of the query's constant expressions; run it before the charge: if it fails,
        the query cannot be answered and nothing was spent."""
        plan = self.rewrite.plan
        return plan.constants_sql if plan is not None else None

    @property
    def subquery_check_sql(self) -> str | None:
        """A SELECT of the row counts of the query's uncorrelated scalar subqueries (public tables
        only); run it before the charge and pass its rows to
        :func:`dpsql.rewriter.subqueries.check_counts` (21000 when one returns more than one row)."""
        plan = self.rewrite.plan
        return plan.subquery_check_sql if plan is not None else None

    @property
    def expected_columns(self) -> tuple[str, ...]:
        """The bounded SQL's result columns, in order: the group keys, then the statistics."""
        plan = self.rewrite.plan
        if plan is None:
            return ()
        return tuple(k.column for k in plan.keys) + tuple(s.column for s in plan.stats)

    @property
    def outputs(self) -> tuple[OutputColumn, ...]:
        """The analyst's result columns (names and PostgreSQL types)."""
        plan = self.rewrite.plan
        return plan.outputs if plan is not None else self.rewrite.outputs


@dataclass(frozen=True, eq=False)
class ReleaseToken:
    """Proof that ``prepared`` was charged: returned only after the ledger committed the charge.

    Run :attr:`sql` on your engine and pass the rows to ``EmbedSession.release`` — once. The
    charge stands whether or not the token is ever released (nothing is refunded).
    """

    prepared: PreparedQuery
    receipt: Receipt
    public_keys: tuple[tuple[Any, ...], ...] | None = field(repr=False)
    id: str = field(repr=False)

    def __copy__(self) -> ReleaseToken:
        return self  # a token is a capability: a copy is the same token (and is spent with it)

    def __deepcopy__(self, memo: dict[int, Any]) -> ReleaseToken:
        return self

    @property
    def sql(self) -> str:
        """The bounded SQL to run on your engine."""
        return self.prepared.sql

    @property
    def expected_columns(self) -> tuple[str, ...]:
        """The columns the rows must come back with, in order (keys, then statistics)."""
        return self.prepared.expected_columns

    @property
    def charge_id(self) -> int:
        """The ledger's id of this charge."""
        return self.receipt.charge_id

    @property
    def cost(self) -> Cost:
        """What was charged."""
        return self.receipt.cost


@dataclass(frozen=True)
class Release:
    """A released answer: columns with PostgreSQL types, noisy post-processed rows, notices.

    ``cost`` and ``charge_id`` are None for a public-only query (nothing charged)."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    notices: tuple[str, ...] = ()
    cost: Cost | None = None
    charge_id: int | None = None
