"""The last step of a set operation of DP queries: the branches' released rows, tagged by branch,
combined by the set operation in the data-free post-processor (:mod:`dpsql.proxy.post_duckdb`).

Every row here is a released (noisy, post-processed) row or a row of public data, so the set
operation is post-processing and costs nothing (see :mod:`dpsql.rewriter.unions`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dpsql.proxy.post_duckdb import PostProcessor
from dpsql.rewriter.post_query import _PG_TO_DUCK, NOISY_TABLE
from dpsql.rewriter.unions import BRANCH_COLUMN

if TYPE_CHECKING:
    from dpsql.accountant.costs import Cost
    from dpsql.proxy.engine import Result

__all__ = ["combine", "validate"]


def _columns(types: Sequence[str]) -> list[tuple[str, str]]:
    return [(BRANCH_COLUMN, "INTEGER")] + [(f"c{j}", _PG_TO_DUCK.get(t, "VARCHAR")) for j, t in enumerate(types)]


def validate(post: PostProcessor, sql: str, types: Sequence[str]) -> None:
    """Run the set operation over no rows, so an ill-formed one (an unknown ORDER BY column …) is
    refused before the charge; raises the post-processor's DPSQLError."""
    post.run(NOISY_TABLE, _columns(types), [[] for _ in range(len(types) + 1)], sql)


def combine(post: PostProcessor, sql: str, names: Sequence[str], types: Sequence[str], results: Sequence[Result], *,
            notices: list[str], cost: Cost | None = None) -> Result:
    """The set operation ``sql`` over ``results`` (one per branch, in branch order), as one Result
    with the first branch's column ``names`` and the reconciled PostgreSQL ``types``."""
    from dpsql.proxy.engine import Result

    columns = _columns(types)
    tagged = [(i, *row) for i, r in enumerate(results) for row in r.rows]
    data = [[row[j] for row in tagged] for j in range(len(columns))]
    _, rows = post.run(NOISY_TABLE, columns, data, sql)
    return Result(tuple(names), tuple(types), rows, notices=notices, cost=cost)
