"""The ``dpsql.budget`` view: one row per privacy filter (session, user, global) of the caller.

A query over it is re-targeted to a data-free DuckDB holding only these rows, so the analyst can
filter and project it with ordinary SQL (``SELECT epsilon_remaining FROM dpsql.budget WHERE scope = 'user'``).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from dpsql.accountant.filters import BudgetStatus
from dpsql.errors import QuerySyntaxError, UndefinedColumn, UndefinedTable, UnsupportedQuery
from dpsql.rewriter.literals import check_divisors, check_row_counts

BUDGET_COLUMNS: tuple[tuple[str, str], ...] = (
    ("scope", "VARCHAR"),
    ("accounting", "VARCHAR"),
    ("epsilon_spent", "DOUBLE"),
    ("delta_spent", "DOUBLE"),
    ("epsilon_remaining", "DOUBLE"),
    ("delta_remaining", "DOUBLE"),
    ("epsilon_budget", "DOUBLE"),
    ("delta_budget", "DOUBLE"),
    ("rho_spent", "DOUBLE"),
    ("rho_remaining", "DOUBLE"),
    ("window_start", "TIMESTAMPTZ"),
    ("next_replenish", "TIMESTAMPTZ"),
)
VIEW = "__dp_budget"


def budget_rows(status: Sequence[BudgetStatus]) -> list[tuple[Any, ...]]:
    """The view's rows for the given filter statuses (None where a value does not apply)."""

    def f(v: Any) -> float | None:
        return None if v is None else float(v)

    def ts(v: float | None) -> _dt.datetime | None:
        return None if v is None else _dt.datetime.fromtimestamp(v, _dt.UTC)

    return [
        (
            s.scope,
            s.accounting,
            f(s.spent_epsilon),
            f(s.spent_delta),
            f(s.remaining_epsilon),
            f(s.remaining_delta),
            f(s.budget_epsilon),
            f(s.budget_delta),
            f(s.spent_rho),
            f(s.remaining_rho),
            ts(s.window_start),
            ts(s.next_replenish),
        )
        for s in status
    ]


def rewrite_budget_query(sql: str) -> str:
    """DuckDB SQL reading the view as ``__dp_budget``; refuses any other table (42P01)."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except ParseError as e:
        raise QuerySyntaxError(f"syntax error: {str(e).splitlines()[0]}") from None
    if not isinstance(tree, exp.Query):
        raise UnsupportedQuery("only SELECT queries can read dpsql.budget")
    check_row_counts(tree)
    check_divisors(tree)
    _check_columns(tree)
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier) or table.db.lower() != "dpsql" or table.name.lower() != "budget":
            raise UndefinedTable(
                f'relation "{table.sql("postgres")}" cannot be combined with dpsql.budget', hint="query dpsql.budget on its own"
            )
        table.set("db", None)
        alias = table.alias or "budget"
        table.set("this", exp.to_identifier(VIEW))
        table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
    return tree.sql(dialect="duckdb", comments=False)


def _check_columns(tree: exp.Expression) -> None:
    """42703 for a column the view does not have, as PostgreSQL words it (names defined inside the
    query, i.e. select-list and derived-table aliases, are fine)."""
    known = {name for name, _ in BUDGET_COLUMNS}
    defined = {a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias}
    for ta in tree.find_all(exp.TableAlias):
        defined |= {c.name.lower() for c in ta.columns}
    for col in tree.find_all(exp.Column):
        if isinstance(col.this, exp.Star):
            continue
        ident = col.this
        name = ident.name if isinstance(ident, exp.Identifier) and ident.quoted else col.name.lower()
        if name not in known and name.lower() not in defined:
            shown = f'"{name}"' if not col.table else f"{col.table}.{name}"
            raise UndefinedColumn(
                f"column {shown} does not exist",
                hint=f"dpsql.budget has the columns {', '.join(n for n, _ in BUDGET_COLUMNS)}",
            )
