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
        if info is not None and isinstance(table.this, exp.Identifier) and table.this.quoted and info.policy.table != name:
            info = None  # a quoted name is case-sensitive: "PAYMENTS" is not payments
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
    sides = _using_sides(tree)
    try:
        qualified = qualify(
            tree,
            schema=schema,
            dialect="postgres",
            validate_qualify_columns=True,
            quote_identifiers=True,
        )
    except OptimizeError as e:
        text = str(e)
        if "could not be resolved" in text or "Unknown column" in text or "Ambiguous" in text:
            col = _unresolved_column(text, tree)
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
    _bind_using_columns(qualified, sides)
    _drop_column_aliases(qualified, catalog)
    return qualified


def _unresolved_column(text: str, tree: exp.Expression) -> str:
    """The column an OptimizeError names, as the user wrote it (``p.age`` for a qualified one):
    sqlglot says ``Column 'x' could not be resolved`` or ``Unknown column: x``."""
    if "'" in text:
        name = text.split("'")[1]
    elif ":" in text:
        name = text.split(":", 1)[1].strip().splitlines()[0].strip()
    else:
        return "?"
    tables = {col.table for col in tree.find_all(exp.Column) if col.name.lower() == name.lower()}
    return f"{tables.pop()}.{name}" if len(tables) == 1 and "" not in tables else name


def _using_sides(tree: exp.Expression) -> dict[tuple[str, str], str]:
    """(alias of the joined table, USING column) → join side, for every ``JOIN … USING``."""
    out: dict[tuple[str, str], str] = {}
    for join in tree.find_all(exp.Join):
        using = join.args.get("using")
        if not using or not isinstance(join.this, exp.Table):
            continue
        side = (join.side or "").upper()
        for col in using:
            out[(join.this.alias_or_name.lower(), col.name.lower())] = side
    return out


def _bind_using_columns(tree: exp.Expression, sides: dict[tuple[str, str], str]) -> None:
    """qualify turns a USING column into COALESCE(left.k, right.k). PostgreSQL's merged column is
    exactly that for FULL JOIN; for INNER and LEFT it is the left side's value and for RIGHT JOIN
    the right side's (equal wherever both exist), so bind it to that one column — which lets a
    public right side's keys be released as public keys."""
    if not sides:
        return

    def visit(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Coalesce) or node.expressions is None or len(node.expressions) != 1:
            return node
        left, right = node.this, node.expressions[0]
        if not (isinstance(left, exp.Column) and isinstance(right, exp.Column) and left.name == right.name):
            return node
        side = sides.get((right.table.lower(), right.name.lower()))
        if side is None or side == "FULL":
            return node
        return (right if side == "RIGHT" else left).copy()

    tree.transform(visit, copy=False)


def _drop_column_aliases(tree: exp.Expression, catalog: Catalog) -> None:
    """``FROM t AS a(x, y)``: refer to the base table's own column names (in the visible schema's
    order, as qualify bound them) and drop the column list, so that every later pass — bounds,
    public key sets, families — sees policy columns."""
    renames: dict[tuple[str, str], str] = {}
    for table in tree.find_all(exp.Table):
        alias = table.args.get("alias")
        if not isinstance(alias, exp.TableAlias) or not alias.columns or table.args.get("db") is None:
            continue
        info = catalog.table(f"{table.db}.{table.name}")
        if info is None:
            continue
        for given, col in zip(alias.columns, info.columns, strict=False):
            renames[(alias.name, given.name)] = col.name
        alias.set("columns", None)
    if not renames:
        return
    for col in tree.find_all(exp.Column):
        real = renames.get((col.table, col.name))
        if real is not None:
            col.set("this", exp.to_identifier(real, quoted=True))


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
    exp.ApproxDistinct: "approx_count_distinct",  # DuckDB's name (sqlglot's node is APPROX_DISTINCT)
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
        from dpsql.rewriter.normalize import display_name

        return display_name(node)
    return "?column?"


def _ident(node: exp.Expression | str | None) -> str:
    if node is None:
        return ""
    if isinstance(node, str):
        return node.lower()
    if isinstance(node, exp.Identifier):
        return node.this if node.quoted else node.this.lower()
    return node.name.lower()
