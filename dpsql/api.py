"""The in-process API for embedding dpsql.

>>> import dpsql                                                    # doctest: +SKIP
>>> with dpsql.connect("policy.toml", user="alice") as s:           # doctest: +SKIP
...     r = s.execute("SELECT department, COUNT(*) FROM visits GROUP BY department")
...     print(r.columns, r.rows, r.notices)

:func:`rewrite` gives the bounded SQL and release plan only, for applications that run and noise
the query themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from dpsql.errors import PolicyError
from dpsql.policy import Policy, load_policy
from dpsql.schema import build_catalog

if TYPE_CHECKING:
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
    it the policy's data source is opened to read column types (metadata only).
    """
    from dpsql.rewriter import rewrite as _rewrite

    pol = _policy(policy)
    unique: dict[str, frozenset[str]] | None = None
    if schema is None:
        backend = open_backend(pol)
        try:
            schema = backend.describe()
            unique = backend.unique_columns()
        finally:
            backend.close()
    try:
        catalog = build_catalog(pol, schema, unique)
    except KeyError as e:
        raise PolicyError(str(pol.file), "tables", f"schema lacks {e}") from None
    return _rewrite(sql, catalog, dialect=dialect)
