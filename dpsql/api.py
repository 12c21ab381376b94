"""The in-process API for embedding dpsql.

>>> import dpsql                                                    # doctest: +SKIP
>>> with dpsql.connect("policy.toml", user="alice") as s:           # doctest: +SKIP
...     r = s.execute("SELECT department, COUNT(*) FROM visits GROUP BY department")
...     print(r.columns, r.rows, r.notices)

:func:`pipeline` is for applications that run the query on their own engine (BigQuery, Snowflake,
Trino, their own PostgreSQL or DuckDB, Spark): it rewrites for a dialect, costs, charges the
ledger, and releases the rows the caller got back, with the server's guarantees
(:mod:`dpsql.embed`, docs/embedding.md):

>>> with dpsql.api.pipeline("policy.toml", dialect="postgres", schema=schema) as pipe:  # doctest: +SKIP
...     s = pipe.session("alice")
...     q = s.prepare("SELECT COUNT(*) FROM visits")      # free
...     token = s.charge(q)                                # durable, before any data is read
...     cur.execute(token.sql)
...     answer = s.release(token, [d[0] for d in cur.description], cur.fetchall())  # once

:func:`rewrite` gives the bounded SQL and release plan only (reading them, not releasing them).
Nothing here needs a password: passwords belong to ``dpsql serve``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from dpsql.policy import Policy, load_policy

if TYPE_CHECKING:
    from dpsql.accountant.ledger import Ledger
    from dpsql.embed import Pipeline
    from dpsql.proxy.backends.base import Backend
    from dpsql.proxy.engine import Engine, Result
    from dpsql.rewriter.plan import Rewrite


def _policy(policy: str | Path | Policy) -> Policy:
    return policy if isinstance(policy, Policy) else load_policy(policy)


def open_backend(policy: Policy, *, duckdb: str | Path | None = None, postgres: str | None = None) -> Backend:
    """The execution backend for ``policy``: ``postgres`` DSN, else a DuckDB file (flag or policy), else
    the policy's Spark Connect server, else file-mapped tables."""
    if postgres is None and duckdb is None and policy.source.spark:
        from dpsql.proxy.backends.spark import SparkBackend

        return SparkBackend(policy)
    dsn = postgres or (policy.source.postgres if duckdb is None else None)
    if dsn:
        from dpsql.proxy.backends.postgres import PostgresBackend

        return PostgresBackend(policy, dsn)
    from dpsql.proxy.backends.duckdb import DuckDBBackend

    return DuckDBBackend(policy, Path(duckdb) if duckdb is not None else None)


def open_engine(policy: str | Path | Policy, *, duckdb: str | Path | None = None, postgres: str | None = None) -> Engine:
    """An engine (backend + ledger) serving ``policy``; share it between sessions, close it when done."""
    from dpsql.proxy.engine import Engine

    pol = _policy(policy)
    backend = open_backend(pol, duckdb=duckdb, postgres=postgres)
    try:
        return Engine(pol, backend)
    except BaseException:
        backend.close()
        raise


class Connection:
    """A session that owns its engine: ``execute`` SQL as one user; close to release everything."""

    def __init__(self, engine: Engine, user: str) -> None:
        self.engine = engine
        self.session = engine.session(user)

    def execute(self, sql: str) -> Result:
        """Run one statement (DP query, public query, EXPLAIN, ``SET dp.*``, ``dpsql.budget``)."""
        return self.session.execute(sql)

    def close(self) -> None:
        """Close the session and the engine."""
        try:
            self.session.close()
        finally:
            self.engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def connect(
    policy: str | Path | Policy, user: str, *, duckdb: str | Path | None = None, postgres: str | None = None
) -> Connection:
    """Open ``policy``'s data source and a session for ``user``; queries charge the policy's ledger."""
    engine = open_engine(policy, duckdb=duckdb, postgres=postgres)
    try:
        return Connection(engine, user)
    except BaseException:
        engine.close()
        raise


def rewrite(
    sql: str,
    policy: str | Path | Policy,
    *,
    schema: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    dialect: str = "duckdb",
) -> Rewrite:
    """Rewrite ``sql`` without running it: bounded SQL for ``dialect`` and the release plan.

    ``schema`` maps each policy table (``public.visits``) to its ``(column, pg_type)`` list; without
    it the policy's data source is opened to read column types (metadata only). To answer the
    query safely from the bounded SQL's rows, use :func:`pipeline` (it charges and noises).
    """
    from dpsql.embed.pipeline import catalog_for
    from dpsql.rewriter import rewrite as _rewrite

    return _rewrite(sql, catalog_for(_policy(policy), schema), dialect=dialect)


def pipeline(
    policy: str | Path | Policy,
    *,
    dialect: str = "duckdb",
    schema: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    unique_columns: Mapping[str, frozenset[str]] | None = None,
    ledger: Ledger | None = None,
) -> Pipeline:
    """The embedding pipeline (:class:`dpsql.embed.Pipeline`) for ``policy`` and ``dialect``:
    prepare → charge (the policy's ledger, SQLite or PostgreSQL, durable and atomic) → you run
    the bounded SQL → release (shape checked, noise, post-processing). Close it when done."""
    from dpsql.embed import Pipeline

    return Pipeline(policy, dialect=dialect, schema=schema, unique_columns=unique_columns, ledger=ledger)
