"""Pass 9 (``analyze``): read the flattened query's shape — the private relation, group keys and aggregates.

After this pass the query is known to be: one private table (the *privacy unit* source) joined with
public relations, a row-level WHERE, GROUP BY over row-level expressions, and a projection,
HAVING and ORDER BY built only from group keys and supported aggregates. Any column of a private
table used outside an aggregate or group key is refused (42501).

>>> from sqlglot import parse_one
>>> s = analyze_shape(parse_one('SELECT t.g AS g, COUNT(*) AS n FROM t AS t GROUP BY t.g'), private_alias="t")
>>> [k.sql() for k in s.keys], [a.kind for a in s.aggregates]
(['t.g'], ['count_star'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field

from sqlglot import exp

from dpsql.errors import GroupingError, PrivacyViolation, UnsupportedQuery
from dpsql.rewriter import aggregates
from dpsql.rewriter.aggregates.base import AggregateSpec, ClassifyContext
from dpsql.rewriter.intervals import interval_bounds, interval_call

__all__ = ["AGG_PREFIX", "KEY_PREFIX", "AggregateSpec", "QueryShape", "analyze_shape"]

KEY_PREFIX = "__dp_k"
AGG_PREFIX = "__dp_a"


@dataclass
class QueryShape:
    """The parts of a private aggregate query, with keys and aggregates replaced in the outer parts."""

    select: exp.Select
    private_alias: str
    keys: list[exp.Expression]
    aggregates: list[AggregateSpec]
    projections: list[exp.Expression]  # over __dp_k{i} / __dp_a{j} columns
    having: exp.Expression | None
    order: exp.Order | None
    limit: exp.Expression | None
    offset: exp.Expression | None
    distinct: bool
    relation_aliases: set[str] = field(default_factory=set)


def analyze_shape(select: exp.Expression, *, private_alias: str, unit_column: str | None = None,
                  families: Mapping[str, str] | None = None, bounded: Set[str] = frozenset(),
                  other_units: Mapping[str, str] | None = None, count_units: bool = True) -> QueryShape:
    """Split a flattened, qualified SELECT into keys, aggregates and post-processing parts.

    ``families`` (``alias.column`` → type family) and ``bounded`` (the private columns with declared
    lower/upper) only shape the hints of refusals: each suggests what is valid for that column.
    ``other_units`` maps the aliases of further private tables joined on the unit to their unit
    columns (their raw columns and units are refused like the first's); ``count_units`` False
    (a RIGHT/FULL private join) stops ``COUNT(DISTINCT unit)`` being read as the unit count.

    Raises PrivacyViolation for raw private columns outside aggregates or keys and for aggregates over
    the privacy unit, and UnsupportedQuery for shapes outside the supported subset.
    """
    if not isinstance(select, exp.Select):
        raise UnsupportedQuery("only a single SELECT is supported over private tables", hint="run the parts separately")
    for arg in ("qualify", "windows", "laterals", "connect", "prewhere", "sample", "pivots", "into"):
        if select.args.get(arg):
            raise UnsupportedQuery(f"{arg.upper()} is not supported", hint="rewrite the query with plain SELECT syntax")
    _check_interval_positions(select)
    group = select.args.get("group")
    keys: list[exp.Expression] = list(group.expressions) if group is not None else []
    distinct = select.args.get("distinct") is not None
    has_aggs = any(p.find(exp.AggFunc) is not None for p in select.expressions)
    if distinct and not keys and not has_aggs:
        # SELECT DISTINCT a, b FROM private … is GROUP BY a, b (the DISTINCT is then a no-op).
        keys = [p.unalias() if isinstance(p, exp.Alias) else p for p in select.expressions]
        distinct = False
    for k in keys:
        if k.find(exp.AggFunc) is not None:
            raise UnsupportedQuery("aggregates are not allowed in GROUP BY", hint="group by row values")
        if isinstance(k, exp.Literal):
            raise UnsupportedQuery("GROUP BY a constant is not supported", hint="group by a column or expression")
        units = {private_alias: unit_column, **(other_units or {})}
        if any(u and _is_unit(k, a, u) for a, u in units.items()):
            raise PrivacyViolation(
                "grouping by the privacy unit would release one group per individual",
                hint="group by a coarser, public attribute",
            )

    aggregates: list[AggregateSpec] = []
    agg_index: dict[str, int] = {}

    def agg_ref(node: exp.Expression) -> exp.Expression:
        spec = _classify(node, private_alias, unit_column if count_units else None)
        key = f"{spec.kind}:{spec.input.sql() if spec.input is not None else ''}:{spec.params!r}"
        if key not in agg_index:
            agg_index[key] = len(aggregates)
            aggregates.append(spec)
        return exp.column(f"{AGG_PREFIX}{agg_index[key]}")

    def hint(column: str) -> str:
        return column_hint(column, (families or {}).get(f"{private_alias}.{column}", "unknown"), column in bounded,
                           column == unit_column)

    intervals: dict[str, str] = {}  # DP_INTERVAL_* argument (replaced SQL) -> its interval tag

    private_aliases = frozenset({private_alias, *(other_units or {})})

    def outer(node: exp.Expression) -> exp.Expression:
        return _replace(node.copy(), keys, agg_ref, private_aliases, intervals, hint)

    projections = [outer(p) for p in select.expressions]
    if not aggregates and not keys:
        raise PrivacyViolation(
            "a query over a private table must aggregate: one output row per private row would reveal the exact row count",
            hint="use COUNT(*), SUM(col) or AVG(col), optionally with GROUP BY",
        )
    having = select.args.get("having")
    having_expr = outer(having.this) if having is not None else None
    order = select.args.get("order")
    order_expr = outer(order) if order is not None else None
    assert order_expr is None or isinstance(order_expr, exp.Order)
    if order_expr is not None:
        # qualify names unaliased projections "_col_N" and ORDER BY refers to them by that alias;
        # the post-processing query aliases outputs by PostgreSQL's names, so order by the expression.
        by_alias = {p.alias: p.this for p in projections if isinstance(p, exp.Alias)}

        def unalias(n: exp.Expression) -> exp.Expression:
            if isinstance(n, exp.Column) and not n.table and n.name in by_alias:
                return by_alias[n.name].copy()
            return n

        order_expr = order_expr.transform(unalias, copy=False)  # type: ignore[assignment]
    return QueryShape(
        select=select,
        private_alias=private_alias,
        keys=keys,
        aggregates=aggregates,
        projections=projections,
        having=having_expr,
        order=order_expr,
        limit=select.args.get("limit"),
        offset=select.args.get("offset"),
        distinct=distinct,
    )


def _is_unit(node: exp.Expression, alias: str, unit: str) -> bool:
    return isinstance(node, exp.Column) and node.table == alias and node.name == unit


def _classify(node: exp.Expression, alias: str, unit: str | None) -> AggregateSpec:
    """The registry's spec for one aggregate (FILTER unwrapped; nested aggregates refused)."""
    label = node.sql("postgres", identify=False).replace('"', "")
    condition: exp.Expression | None = None
    if isinstance(node, exp.Filter):
        where = node.expression
        condition = where.this if isinstance(where, exp.Where) else where
        node = node.this
    own = node.this if isinstance(node, exp.WithinGroup) else node  # PERCENTILE_CONT(q) WITHIN GROUP (…)
    for inner in node.find_all(exp.AggFunc):
        if inner is not own:
            raise UnsupportedQuery("nested aggregates are not supported", hint="aggregate once per expression")
    return aggregates.classify(node, ClassifyContext(alias=alias, unit=unit, label=label, condition=condition))


def column_hint(column: str, family: str, bounded: bool, unit: bool) -> str:
    """A hint that suggests only what is valid for ``column``: never grouping by the privacy unit,
    never AVG/SUM of text, dates or columns without declared bounds.

    >>> column_hint("cost", "float", True, False)
    'aggregate it (e.g. AVG(cost) or SUM(cost)) or group by it'
    >>> column_hint("visit_date", "date", False, False)
    "group by it (or by date_trunc('month', visit_date)), or count it: COUNT(visit_date)"
    """
    if unit:
        return f"{column} is the privacy unit: count individuals with COUNT(DISTINCT {column}), or group by another column"
    if family in ("int", "float", "numeric"):
        if bounded:
            return f"aggregate it (e.g. AVG({column}) or SUM({column})) or group by it"
        return f"group by it or count it (COUNT({column})); AVG and SUM need lower/upper bounds for it in the policy"
    if family in ("date", "timestamp"):
        return f"group by it (or by date_trunc('month', {column})), or count it: COUNT({column})"
    return f"group by it, or count it: COUNT({column})"


def _non_null_literal(node: exp.Expression) -> bool:
    return isinstance(node, (exp.Literal, exp.Boolean))


def _check_row_level(node: exp.Expression) -> None:
    if node.find(exp.AggFunc) is not None:
        raise UnsupportedQuery("nested aggregates are not supported", hint="aggregate once per expression")


def _check_interval_positions(select: exp.Select) -> None:
    """DP_INTERVAL_LOW/HIGH bound released values: refuse them in row-level parts (WHERE, JOIN,
    GROUP BY, inside an aggregate or a subquery)."""
    for node in select.find_all(exp.Anonymous):
        if interval_call(node) is None:
            continue
        parent = node.parent
        while parent is not None and parent is not select:
            if isinstance(parent, exp.Where | exp.Join | exp.Group | exp.AggFunc | exp.Select | exp.Filter):
                raise UnsupportedQuery(
                    f"{node.name.upper()} bounds a released aggregate: it is allowed only in the select list, HAVING and ORDER BY",
                    hint=f"write {node.name.upper()}(COUNT(*)) or {node.name.upper()}(AVG(col)) in the select list",
                )
            parent = parent.parent


def _interval(n: exp.Expression, side: str, keys: list[exp.Expression], agg_ref, alias: str | frozenset[str],
              intervals: dict[str, str]) -> exp.Expression:
    """The interval-arithmetic bound (:mod:`~dpsql.rewriter.intervals`) of a DP_INTERVAL_* call."""
    name = n.name.upper()
    if len(n.expressions) != 1:
        raise UnsupportedQuery(f"{name} takes exactly one argument", hint=f"{name}(COUNT(*))")
    arg = n.expressions[0].copy()
    if any(interval_call(a) for a in arg.find_all(exp.Anonymous)):
        raise UnsupportedQuery(f"{name} cannot be nested", hint="bound the aggregate expression once")
    inner = _replace(arg, keys, agg_ref, alias, intervals)
    if not any(c.name.startswith(AGG_PREFIX) and not c.table for c in inner.find_all(exp.Column)):
        raise UnsupportedQuery(f"{name} needs an aggregate in its argument", hint=f"{name}(SUM(col))")
    tag = intervals.setdefault(inner.sql(dialect="duckdb"), f"i{len(intervals)}")
    lo, hi = interval_bounds(inner, tag)
    bound = exp.paren(lo if side == "low" else hi, copy=False)
    bound.meta["dp_interval_of"] = inner.sql(dialect="duckdb")  # what rounding measures (rewriter.post_query)
    bound.meta["dp_interval_side"] = "lo" if side == "low" else "hi"  # rounding widens, never narrows
    return bound


def _replace(node: exp.Expression, keys: list[exp.Expression], agg_ref, alias: str | frozenset[str],
             intervals: dict[str, str] | None = None, hint: Callable[[str], str] | None = None) -> exp.Expression:
    """Replace group keys and aggregates by column references (DP_INTERVAL_* calls by their
    interval bounds); refuse leftover private columns."""
    tags: dict[str, str] = intervals if intervals is not None else {}

    def visit(n: exp.Expression) -> exp.Expression:
        side = interval_call(n)
        if side is not None:
            return _interval(n, side, keys, agg_ref, alias, tags)
        for i, k in enumerate(keys):
            if n == k:
                return exp.column(f"{KEY_PREFIX}{i}")
        if (isinstance(n, exp.Filter) and isinstance(n.this, exp.AggFunc | exp.WithinGroup)) or isinstance(
            n, exp.AggFunc | exp.WithinGroup
        ):
            return agg_ref(n)
        return n

    replaced = node.transform(visit, copy=False)
    for col in replaced.find_all(exp.Column):
        if col.name.startswith((KEY_PREFIX, AGG_PREFIX)) and not col.table:
            continue
        if not col.table:
            continue  # an output alias (ORDER BY alias): resolved by the post-processing query
        if col.table == alias or (isinstance(alias, frozenset) and col.table in alias):
            raise PrivacyViolation(
                f'column "{col.name}" of a private table must be inside an aggregate or in GROUP BY',
                hint=hint(col.name) if hint is not None else "aggregate it or group by it",
            )
        raise GroupingError(
            f'column "{col.table}.{col.name}" must appear in the GROUP BY clause or be used in an aggregate function',
        )
    return replaced
