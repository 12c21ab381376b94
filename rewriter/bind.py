"""Passes 2 (``bind_tables``) and 5 (``qualify``): bind table and column names to the policy's
visible schema with sqlglot's ``qualify``.

Tables not in the policy are invisible (42P01); columns the policy does not expose are unknown
(42703). After this pass every column is qualified with its table alias and every projection has
an alias, and :func:`output_names` gives the names PostgreSQL would show.

>>> from dpsql.policy import policy_from_dict
>>> from dpsql.schema import build_catalog
>>> from dpsql.rewriter.parse import parse_statement
>>> pol = policy_from_dict({"budget": {"epsilon": 1, "delta": 1e-6}, "users": {"a": {}},
...     "server": {"auth": "trust"}, "tables": {"t": {"privacy_unit": "uid", "columns": {"x": {}}}}})
>>> cat = build_catalog(pol, {"public.t": [("uid", "int8"), ("x", "int4")]})
>>> tree = parse_statement("SELECT COUNT(x) FROM t")
>>> [t.policy.qualified for t in resolve_tables(tree, cat).private]
['public.t']
>>> qualify_names(tree, cat).sql()
'SELECT COUNT("t"."x") AS "_col_0" FROM "public"."t" AS "t"'
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify

from dpsql.errors import PrivacyViolation, UndefinedColumn, UndefinedTable
from dpsql.schema import Catalog, TableInfo

_SCHEMA_ALIASES = {"main": "public"}


@dataclass(frozen=True)
class TableRefs:
    """The policy tables a query references (CTE names excluded)."""

    tables: tuple[TableInfo, ...]

    @property
    def private(self) -> tuple[TableInfo, ...]:
        """The private tables among them (one entry per reference)."""
        return tuple(t for t in self.tables if not t.policy.public)


def resolve_tables(tree: exp.Expression, catalog: Catalog) -> TableRefs:
    """Resolve every table reference against the catalog; raise UndefinedTable for any other name.

    Also normalises the schema of each reference to the policy's logical schema (``main`` → ``public``).
    """
    cte_names = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    found: list[TableInfo] = []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise PrivacyViolation(
                "table functions (read_csv, read_parquet, generate_series …) are not allowed",
                hint="query the tables listed by \\dt",
            )
        if isinstance(table.parent, exp.Into):
            raise PrivacyViolation("SELECT INTO writes data; dpsql is read-only", hint="remove INTO")
        name = _ident(table.this)
        db = _ident(table.args.get("db")) if table.args.get("db") is not None else None
        if db is None and name in cte_names:
            continue
        schema = _SCHEMA_ALIASES.get(db, db) if db else "public"
        info = catalog.table(f"{schema}.{name}")
        if info is None:
            shown = f"{db}.{name}" if db else name
            raise UndefinedTable(
                f'relation "{shown}" does not exist',
                hint="dpsql shows only the tables its policy declares; \\dt lists them",
            )
        table.set("db", exp.to_identifier(info.policy.schema))
        found.append(info)
    return TableRefs(tuple(found))


def check_no_star(tree: exp.Expression, refs: TableRefs) -> None:
    """Refuse ``SELECT *`` / ``t.*`` in the outermost projection of a query that reads private tables."""
    if not refs.private or not isinstance(tree, exp.Select):
        return
    for projection in tree.expressions:
        star = projection if isinstance(projection, exp.Star) else None
        if isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
            star = projection
        if star is not None:
            raise PrivacyViolation(
                "SELECT * would return private rows; dpsql releases only aggregates",
                hint="select aggregates such as COUNT(*) or AVG(col), grouped by public columns",
            )


def qualify_names(tree: exp.Expression, catalog: Catalog) -> exp.Expression:
    """Qualify every column with its table, validate names against the visible schema.

    Raises UndefinedColumn (42703) for an unknown or hidden column and UndefinedTable (42P01) for an
    unknown table alias.
    """
    schema = catalog.mapping_schema
    try:
        return qualify(
            tree,
            schema=schema,
            dialect="postgres",
            validate_qualify_columns=True,
            quote_identifiers=True,
        )
    except OptimizeError as e:
        text = str(e)
        if "could not be resolved" in text or "Unknown column" in text or "Ambiguous" in text:
            col = text.split("'")[1] if "'" in text else "?"
            if "Ambiguous" in text:
                raise UndefinedColumn(
                    f'column reference "{col}" is ambiguous', hint="qualify it with its table name", sqlstate="42702"
                ) from None
            raise UndefinedColumn(
                f'column "{col}" does not exist', hint="dpsql shows only the columns its policy declares; \\d TABLE lists them"
            ) from None
        if "Unknown table" in text or "not found" in text:
            raise UndefinedTable(f"unknown table reference: {text.split(':')[-1].strip()}") from None
        raise UndefinedColumn(f"could not resolve the query's names: {text.splitlines()[0]}") from None


def output_names(tree: exp.Expression) -> list[str]:
    """The column names PostgreSQL would give the outermost projections (before qualification).

    >>> from sqlglot import parse_one
    >>> output_names(parse_one("SELECT a, t.b, COUNT(*), SUM(x) AS s, x + 1, x::int, CASE WHEN a THEN 1 END FROM t"))
    ['a', 'b', 'count', 's', '?column?', 'x', 'case']
    """
    if not isinstance(tree, exp.Select):
        return [p.alias_or_name for p in tree.selects]
    return [_pg_name(p) for p in tree.expressions]


_FUNC_NAMES: dict[type[exp.Expression], str] = {
    exp.Count: "count",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Variance: "variance",
    exp.VariancePop: "var_pop",
    exp.Stddev: "stddev",
    exp.StddevPop: "stddev_pop",
    exp.StddevSamp: "stddev_samp",
    exp.Case: "case",
    exp.Coalesce: "coalesce",
    exp.Greatest: "greatest",
    exp.Least: "least",
    exp.Nullif: "nullif",
    exp.TimestampTrunc: "date_trunc",
    exp.DateTrunc: "date_trunc",
    exp.Extract: "extract",
    exp.Substring: "substring",
    exp.StrPosition: "strpos",
}


def _pg_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Alias):
        return node.alias
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Column):
        return node.name if not isinstance(node.this, exp.Star) else "?column?"
    if isinstance(node, exp.Filter):
        return _pg_name(node.this)
    if isinstance(node, exp.Cast | exp.TryCast):
        inner = _pg_name(node.this)
        if inner != "?column?":
            return inner
        return node.to.sql("postgres").lower().split("(")[0]
    if type(node) in _FUNC_NAMES:
        return _FUNC_NAMES[type(node)]
    if isinstance(node, exp.Func):
        if isinstance(node, exp.Anonymous):
            return node.name.lower()
        return node.sql_name().lower()
    return "?column?"


def _ident(node: exp.Expression | str | None) -> str:
    if node is None:
        return ""
    if isinstance(node, str):
        return node.lower()
    if isinstance(node, exp.Identifier):
        return node.this if node.quoted else node.this.lower()
    return node.name.lower()
