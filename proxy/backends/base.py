"""The engine-neutral execution backend interface, and the only errors a backend may raise.

A backend runs SQL that the rewriter has already bounded; it does not judge queries. What it
guarantees is that the SQL runs safely: one statement per call, under a timeout, cancellable,
on a connection that cannot reach files, the network or extensions, and without any text
written by the engine (which can quote private values) reaching an error seen by the analyst.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from dpsql.errors import ExecutionFailed, QueryCanceled, UnsupportedQuery
from dpsql.proxy.backends.data_version import DataVersion, unpinned

Dialect = Literal["duckdb", "postgres", "spark"]
CancelReason = Literal["timeout", "cancel"]

#: PostgreSQL's own texts for the two ways a statement is canceled (SQLSTATE 57014).
_CANCEL_MESSAGES: dict[CancelReason, str] = {
    "timeout": "canceling statement due to statement timeout",
    "cancel": "canceling statement due to user request",
}


@dataclass(frozen=True)
class ResultSet:
    """Rows returned by one statement: column names, PostgreSQL type names and row tuples."""

    columns: tuple[str, ...]
    types: tuple[str, ...]  # PostgreSQL type names (pg_type.typname), one per column
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


class ResourceExhausted(ExecutionFailed):
    """The engine ran out of memory (or another resource) running the statement (53200)."""

    sqlstate = "53200"


class BackendSession(ABC):
    """A per-connection execution handle. ``execute`` runs in one thread at a time; ``cancel`` may
    be called from any thread."""

    @abstractmethod
    def execute(self, sql: str, *, timeout: float | None = None) -> ResultSet:
        """Run exactly one SELECT statement and return all its rows.

        ``timeout`` is in seconds; None means the backend's default statement timeout (the
        policy's ``[limits] statement_timeout``). Raises only :class:`~dpsql.errors.DPSQLError`
        subclasses, none of which carries engine text or chains an engine exception:
        QueryCanceled (57014) on timeout or cancel, ResourceExhausted (53200) when out of
        memory, UnsupportedQuery (0A000) when ``sql`` is not exactly one SELECT statement, and
        ExecutionFailed (XX000) for any other engine failure.
        """

    @abstractmethod
    def cancel(self) -> None:
        """Interrupt the statement running in this session, if any; thread-safe, never raises."""

    @abstractmethod
    def close(self) -> None:
        """Cancel any running statement and release the handle; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Backend(ABC):
    """An execution engine holding the policy's tables (DuckDB embedded, an upstream PostgreSQL, or Spark)."""

    #: the sqlglot dialect of the SQL this backend runs
    dialect: Dialect

    @abstractmethod
    def describe(self) -> dict[str, list[tuple[str, str]]]:
        """Columns of every policy table, read from metadata only (never rows).

        Keys are the policy's qualified lower-case names (``public.visits``); values list
        ``(column, pg_type)`` in source order, with lower-case column names and PostgreSQL type
        names (``int4``, ``float8``, ``text`` …). This is what :func:`dpsql.schema.build_catalog`
        takes.
        """

    def unique_columns(self) -> dict[str, frozenset[str]]:
        """Per policy table (qualified lower-case name), the single columns the engine itself
        enforces to be unique (a one-column PRIMARY KEY or UNIQUE constraint), from metadata only.

        :func:`dpsql.schema.build_catalog` uses it to know that a table has one row per privacy
        unit. Only constraints the engine enforces may be reported; the default reports none.
        """
        return {}

    @abstractmethod
    def session(self) -> BackendSession:
        """A new execution handle, independent of every other session (usable in another thread)."""

    def data_version(self) -> DataVersion:
        """Which version of the data this backend serves now (file identities or the connection
        target, never rows; see :mod:`~dpsql.proxy.backends.data_version`). The default names
        the backend class and is not pinned, so replays of its answers expire after a TTL."""
        return unpinned(f"{type(self).__module__}.{type(self).__qualname__}")

    def validate(self, sql: str) -> None:
        """Bind ``sql`` without reading any row; raise a DPSQLError if it cannot run on this engine.

        Called before a query is charged, so a query that could only fail is refused for free.
        Failures here must not depend on data. The default accepts everything.
        """
        del sql

    @abstractmethod
    def close(self) -> None:
        """Close every session and release the engine; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# The errors a backend raises instead of engine exceptions. Their texts are fixed strings.


def execution_failed() -> ExecutionFailed:
    """The error for any engine failure: a fixed message that says nothing about the data."""
    return ExecutionFailed(
        "the query failed while executing; the cause is withheld because engine messages can contain private data",
        hint="queries that dpsql rewrites should not fail on data; if this repeats, report the query to the operator",
    )


def query_canceled(reason: CancelReason) -> QueryCanceled:
    """The error for a statement stopped by its timeout or by a cancel request (57014)."""
    hint = "simplify the query, or ask the operator to raise [limits] statement_timeout" if reason == "timeout" else None
    return QueryCanceled(_CANCEL_MESSAGES[reason], hint=hint)


def out_of_memory() -> ResourceExhausted:
    """The error for a statement that exceeded the engine's memory limit (53200)."""
    return ResourceExhausted(
        "the query ran out of memory",
        hint="group by fewer or coarser columns, or ask the operator to raise [limits] memory_limit",
    )


def not_one_select(count: int) -> UnsupportedQuery:
    """The error for SQL that is not exactly one SELECT statement (a bug in the caller, 0A000)."""
    what = {0: "no statement", 1: "a statement that is not a SELECT"}.get(count, f"{count} statements")
    return UnsupportedQuery(
        f"the execution backend runs exactly one SELECT statement at a time, and was given {what}",
        hint="send one SELECT per query",
    )


def session_closed() -> ExecutionFailed:
    """The error for using a session (or backend) after close()."""
    return ExecutionFailed("the execution session is closed", hint="reconnect")
