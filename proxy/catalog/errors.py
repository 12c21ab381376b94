"""Shadow DuckDB errors → PostgreSQL-like :class:`~dpsql.errors.DPSQLError` with the right SQLSTATE.

The shadow holds only public metadata, so its error text may be shown; it is reworded the way
PostgreSQL words the same error where there is one.

>>> import duckdb
>>> e = translate(duckdb.CatalogException('Catalog Error: Table with name foo does not exist!\\nDid you mean "x"?'))
>>> e.sqlstate, e.message
('42P01', 'relation "foo" does not exist')
"""

from __future__ import annotations

import re

import duckdb

from dpsql.errors import (
    DPSQLError,
    InternalError,
    InvalidTextRepresentation,
    NumericValueOutOfRange,
    OutOfMemory,
    QueryCanceled,
    QuerySyntaxError,
    UndefinedColumn,
    UndefinedFunction,
    UndefinedTable,
    UnsupportedQuery,
)

_PATTERNS: tuple[tuple[re.Pattern[str], type[DPSQLError], str], ...] = (
    (re.compile(r"Table with name (\S+?) does not exist"), UndefinedTable, 'relation "{0}" does not exist'),
    (re.compile(r"(?:Scalar|Table|Aggregate|Macro) Function with name (\S+?) does not exist"), UndefinedFunction,
     "function {0}() does not exist"),
    (re.compile(r'Referenced column "([^"]+)" not found'), UndefinedColumn, 'column "{0}" does not exist'),
    (re.compile(r'Column "([^"]+)" referenced that exists in the SELECT clause'), UndefinedColumn, 'column "{0}" does not exist'),
    (re.compile(r'Referenced table "([^"]+)" not found'), UndefinedTable, 'missing FROM-clause entry for table "{0}"'),
    (re.compile(r"No function matches the given name and argument types '([^(']+)\("), UndefinedFunction,
     "function {0}() does not exist with these argument types"),
)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.sub(r"^[A-Za-z ]*Error: ", "", text).rstrip("!")


def translate(e: duckdb.Error) -> DPSQLError:
    """The DPSQLError to show for a shadow DuckDB error."""
    line = _first_line(e)
    for pattern, cls, template in _PATTERNS:
        m = pattern.search(line)
        if m:
            return cls(template.format(m.group(1).strip('"')))
    if isinstance(e, duckdb.ParserException):
        return QuerySyntaxError(f"syntax error in catalog query: {line}")
    if isinstance(e, duckdb.ConversionException | duckdb.InvalidInputException):
        return InvalidTextRepresentation(f"invalid input syntax: {line}")
    if isinstance(e, duckdb.OutOfRangeException):
        return NumericValueOutOfRange(f"value out of range: {line}")
    if isinstance(e, duckdb.InterruptException):
        return QueryCanceled("canceling statement due to statement timeout")
    if isinstance(e, duckdb.OutOfMemoryException):
        return OutOfMemory("out of memory answering a catalog query")
    if isinstance(e, duckdb.BinderException | duckdb.CatalogException | duckdb.NotImplementedException):
        return UnsupportedQuery(f"catalog query not supported: {line}")
    return InternalError(f"catalog query failed: {line}")
