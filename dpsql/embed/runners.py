"""Runners: how :meth:`dpsql.embed.EmbedSession.execute` runs SQL on the caller's engine.

A runner is any callable ``run(sql) -> (column names, rows)``. It must run the SQL it is given
unchanged, on the data the policy describes, and return the engine's rows as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from dpsql.embed.pipeline import Runner


class DBAPIConnection(Protocol):
    """The part of a PEP 249 connection a runner uses (psycopg, duckdb, sqlite3 …)."""

    def cursor(self) -> Any:
        """A new cursor."""
        ...


def dbapi_runner(connection: DBAPIConnection) -> Runner:
    """A runner over a PEP 249 (DB-API 2) connection: one new cursor per statement, all rows
    fetched, column names from ``cursor.description``. It adds nothing of its own: transactions,
    read-only roles and statement timeouts are the connection owner's (docs/embedding.md)."""

    def run(sql: str) -> tuple[Sequence[str], Iterable[Sequence[Any]]]:
        cur = connection.cursor()
        try:
            cur.execute(sql)
            columns = [d[0] for d in (cur.description or ())]
            return columns, list(cur.fetchall())
        finally:
            cur.close()

    return run
