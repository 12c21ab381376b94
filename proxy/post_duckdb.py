"""A private, data-free DuckDB for post-processing: HAVING/ORDER BY/LIMIT over noisy values, and the
``dpsql.budget`` view.

It holds no table and can read no file: the only rows it sees are passed in as parameters (noisy
values, or budget figures), so nothing it computes can reveal an exact value.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import duckdb

from dpsql.errors import (
    DivisionByZero,
    DPSQLError,
    ExecutionFailed,
    InvalidArgumentForLogarithm,
    InvalidArgumentForPowerFunction,
    InvalidTextRepresentation,
    NumericValueOutOfRange,
)
from dpsql.proxy.backends.duckdb_types import pg_type_name
from dpsql.rewriter.number_format import to_char_number
from dpsql.rewriter.post_query import POST_TO_CHAR

_CONFIG = {
    "threads": 1,
    "memory_limit": "256MB",
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "enable_external_access": False,
    # PostgreSQL's arithmetic: integer / integer divides as integers, and a division by zero is an
    # error (22012), not Infinity/NaN.
    "integer_division": True,
    "ieee_floating_point_ops": False,
}


_AFTER = "post-processing the noisy values (select list, HAVING, ORDER BY) failed"
_RANGE_NAMES = (("INT64", "bigint"), ("INT32", "integer"), ("INT16", "smallint"))


def postprocessing_error(e: duckdb.Error) -> DPSQLError:
    """The PostgreSQL-style error for a post-processing failure: the SQLSTATE PostgreSQL raises for
    the same arithmetic (22012, 22003, 2201E, 2201F, 22P02), else XX000. The engine's text is only
    classified, never shown."""
    text = str(e)
    hint = f"{_AFTER}; when it depends on noisy values the query's charge stands"
    if isinstance(e, duckdb.InvalidInputException) and "Division by zero" in text:
        return DivisionByZero("division by zero", hint=hint)
    if isinstance(e, duckdb.OutOfRangeException | duckdb.ConversionException):
        if "square root" in text:
            return InvalidArgumentForPowerFunction("cannot take square root of a negative number", hint=hint)
        if "logarithm of zero" in text:
            return InvalidArgumentForLogarithm("cannot take logarithm of zero", hint=hint)
        if "logarithm of a negative" in text:
            return InvalidArgumentForLogarithm("cannot take logarithm of a negative number", hint=hint)
        if isinstance(e, duckdb.OutOfRangeException) or "out of range" in text:
            name = next((pg for duck, pg in _RANGE_NAMES if duck in text), None)
            return NumericValueOutOfRange(f"{name} out of range" if name else "value out of range", hint=hint)
        return InvalidTextRepresentation("invalid input syntax in a cast of a released value", hint=hint)
    return ExecutionFailed(
        f"post-processing the noisy result failed ({type(e).__name__})",
        hint="check the expressions in the select list, HAVING and ORDER BY",
    )


def _to_char_number(value: str | None, pattern: str | None, source_type: str | None) -> str | None:
    """PostgreSQL's to_char(number, pattern) over a released value (NULL in, NULL out)."""
    if value is None or pattern is None:
        return None
    return to_char_number(value, pattern, source_type or "DECIMAL")


class PostProcessor:
    """Runs post-processing SQL over rows given as typed column lists (``UNNEST`` of parameters)."""

    def __init__(self) -> None:
        self._con = duckdb.connect(":memory:", config=dict(_CONFIG))
        self._con.create_function(
            POST_TO_CHAR, _to_char_number, ["VARCHAR"] * 3, "VARCHAR", null_handling="special"
        )
        self._con.execute("SET lock_configuration = true")
        self._local = threading.local()
        self._lock = threading.Lock()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self._con.cursor()
            self._local.cursor = cur
        return cur

    def run(
        self, table: str, columns: Sequence[tuple[str, str]], data: Sequence[Sequence[Any]], sql: str
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run ``sql`` (DuckDB dialect, one SELECT reading ``table``) over the given columns.

        ``columns`` are (name, DuckDB type) pairs and ``data`` one value list per column. Returns
        the result's column names and rows. Errors are DPSQLError with a message of dpsql's own
        (the values here are all noisy or public, but the engine's wording is not ours to show).
        """
        names, _, rows = self.run_typed(table, columns, data, sql)
        return names, rows

    def run_typed(
        self, table: str, columns: Sequence[tuple[str, str]], data: Sequence[Sequence[Any]], sql: str
    ) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
        """Like :meth:`run`, and also the PostgreSQL type name of each result column (as DuckDB
        computed it, so every value fits the type it is declared with)."""
        if columns:
            parts = ", ".join(f"UNNEST(?::{t}[]) AS {name}" for name, t in columns)
            source = f"SELECT {parts}"
        else:
            source = "SELECT 1 AS __dp_dummy"
        query = f"WITH {table} AS ({source}) {sql}"
        try:
            cur = self._cursor()
            rel = cur.execute(query, [list(col) for col in data])
            names = [d[0] for d in rel.description]
            types = [pg_type_name(str(d[1])) for d in rel.description]
            return names, types, rel.fetchall()
        except DPSQLError:
            raise
        except duckdb.Error as e:
            raise postprocessing_error(e) from None

    def close(self) -> None:
        """Release the DuckDB connection."""
        self._con.close()
