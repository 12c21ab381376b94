"""Pass 1 (``parse``): parse exactly one read-only statement (PostgreSQL dialect), within size limits.

>>> parse_statement("SELECT COUNT(*) FROM visits;").sql()
'SELECT COUNT(*) FROM visits'
>>> parse_statement("SELECT 1; SELECT 2")
Traceback (most recent call last):
...
dpsql.errors.UnsupportedQuery: send one statement at a time (got 2) (hint: split the string into separate queries)
"""

from __future__ import annotations

import logging
import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from dpsql.errors import LimitExceeded, PrivacyViolation, QuerySyntaxError, UnsupportedQuery

logging.getLogger("sqlglot").setLevel(logging.ERROR)

READ_DIALECT = "postgres"

_WRITE_STATEMENTS: tuple[type[exp.Expression], ...] = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Copy,
    exp.Pragma,
    exp.Command,
    exp.Set,
    exp.Use,
    exp.Describe,
    exp.TruncateTable,
    exp.Cache,
    exp.Uncache,
    exp.Refresh,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.LoadData,
    exp.Grant,
)


_TSQL_TOP = re.compile(r"\s*SELECT\s+(?:DISTINCT\s+)?TOP\s*\(?\s*(\d+)", re.IGNORECASE)


def parse_statement(sql: str, *, max_bytes: int = 64 * 1024, max_nodes: int = 2000) -> exp.Expression:
    """Parse ``sql`` into one query expression, or raise the right SQLSTATE error.

    Guarantees: the result is a single SELECT or set operation (no DDL/DML/COPY/PRAGMA/ATTACH/INSTALL/
    LOAD/macros), the text is at most ``max_bytes`` and the tree at most ``max_nodes`` nodes.
    """
    if len(sql.encode("utf-8", "surrogatepass")) > max_bytes:
        raise LimitExceeded(
            f"the statement is longer than {max_bytes} bytes", hint="shorten the query or raise [limits] max_statement_bytes"
        )
    try:
        statements = [s for s in sqlglot.parse(sql, read=READ_DIALECT) if s is not None]
    except (ParseError, TokenError) as e:
        top = _TSQL_TOP.match(sql)
        if top is not None:
            raise QuerySyntaxError(
                "syntax error: SELECT TOP n is SQL Server syntax; dpsql speaks PostgreSQL",
                hint=f"write LIMIT {top.group(1)} at the end of the query instead",
            ) from None
        raise QuerySyntaxError(f"syntax error: {_first_line(str(e))}", hint="check the SQL near the position shown") from None
    except RecursionError:
        raise LimitExceeded("the statement is nested too deeply") from None
    if not statements:
        raise QuerySyntaxError("empty query", hint="send a SELECT statement")
    if len(statements) > 1:
        raise UnsupportedQuery(
            f"send one statement at a time (got {len(statements)})", hint="split the string into separate queries"
        )
    tree = statements[0]
    if isinstance(tree, _WRITE_STATEMENTS) or not isinstance(tree, exp.Query):
        raise PrivacyViolation(
            f"{_statement_name(tree)} is not allowed: dpsql answers read-only SELECT queries with differentially private aggregates",
            hint="write a SELECT with aggregates such as COUNT(*), SUM(col) or AVG(col)",
        )
    for nodes, _ in enumerate(tree.walk(), start=1):
        if nodes > max_nodes:
            raise LimitExceeded(
                f"the query has more than {max_nodes} syntax nodes", hint="simplify the query or raise [limits] max_ast_nodes"
            )
    return tree


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "invalid SQL"
    return line.replace("\x1b[4m", "").replace("\x1b[0m", "")


def _statement_name(tree: exp.Expression) -> str:
    if isinstance(tree, exp.Command):
        return str(tree.this).upper()
    if isinstance(tree, exp.Alias) and isinstance(tree.this, exp.Column):
        return tree.this.name.upper()
    if isinstance(tree, exp.Column):  # a bare command word such as CHECKPOINT
        return tree.name.upper()
    return type(tree).__name__.upper()
