"""Pass 1c: SQL over a DP result is post-processing — split it into the release and a query over it.

An outer query whose only source is an aggregated subquery or CTE over a private table (Superset's
row count and virtual datasets, Evidence's ``WITH root AS (…) SELECT COUNT(*) FROM root``) reads
nothing but the noisy rows that subquery releases. By the post-processing property of differential
privacy (Dwork–Roth Prop. 2.1) whatever it computes from them costs nothing more, so the query is
answered as:

1. the **release**: the inner query, rewritten on its own (its bounded SQL, statistics, noise and
   cost are exactly those of running it alone — including its ORDER BY/LIMIT, which act on noisy
   values, and its released key set under partition selection, which is itself DP);
2. the **post-processing query**: the outer query with its source replaced by the release's own
   post-processing over ``__dp_noisy``. It runs in the data-free post-processor
   (:mod:`dpsql.proxy.post_duckdb`), so it can read no table and no exact value.

The outer query may be anything the post-processor can run over that one relation (aggregates,
GROUP BY, WHERE, ORDER BY, LIMIT, arithmetic, window functions); a reference to any other table or
CTE is refused (0A000): the outer query sees only the released rows.

>>> from sqlglot import parse_one
>>> layer = split(parse_one("WITH r AS (SELECT d, COUNT(*) AS n FROM t GROUP BY d) SELECT COUNT(*) AS rows FROM r"),
...               lambda name: name == "t")
>>> layer.inner.sql(), layer.outer.sql()
('SELECT d, COUNT(*) AS n FROM t GROUP BY d', 'SELECT COUNT(*) AS rows FROM r')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from dpsql.errors import UndefinedColumn, UnsupportedQuery
from dpsql.rewriter.allowlist import check_allowed
from dpsql.rewriter.analyze import AGG_PREFIX, KEY_PREFIX
from dpsql.rewriter.bind import output_names
from dpsql.rewriter.plan import OutputColumn, Rewrite
from dpsql.rewriter.post_query import _PG_TO_DUCK, NOISY_TABLE, _conform_integers, _pg_type

__all__ = ["Layer", "compose", "split"]


@dataclass(frozen=True)
class Layer:
    """A query split into a DP release (``inner``) and a query over its result (``outer``, reading
    the relation ``alias``, whose columns are renamed to ``columns`` when the query names them)."""

    inner: exp.Select
    outer: exp.Select
    alias: str
    columns: tuple[str, ...]


def split(tree: exp.Expression, is_private: Callable[[str], bool]) -> Layer | None:
    """The release and the outer query of ``tree``, or None when ``tree`` is not a query over one
    aggregated subquery or CTE that reads a private table (``is_private(name)`` says whether a
    table name, as written, is a private table). Raises UnsupportedQuery when the outer query reads
    anything besides that result."""
    if not isinstance(tree, exp.Select):
        return None
    if tree.args.get("joins"):
        _refuse_joined_results(tree, is_private)
        return None
    from_ = tree.args.get("from_")
    if not isinstance(from_, exp.From):
        return None
    src = from_.this
    with_ = tree.args.get("with_")
    ctes = {c.alias_or_name.lower(): c for c in (with_.expressions if isinstance(with_, exp.With) else [])}
    body: exp.Expression | None = None
    alias_node: exp.TableAlias | None = None
    used_cte: str | None = None
    if isinstance(src, exp.Subquery):
        body, alias_node = src.this, src.args.get("alias")
    elif isinstance(src, exp.Table) and src.args.get("db") is None and src.name.lower() in ctes:
        used_cte = src.name.lower()
        cte = ctes[used_cte]
        body, alias_node = cte.this, cte.args.get("alias")
        if src.args.get("alias") is not None:
            alias_node = exp.TableAlias(this=src.args["alias"].this, columns=alias_node.columns if alias_node else None)
    if not isinstance(body, exp.Select) or not _aggregates(body):
        return None
    private_ctes = {n for n, c in ctes.items() if _reads_private(c.this, is_private, ctes)}
    if not _reads_private(body, is_private, ctes):
        return None
    alias = alias_node.name if alias_node is not None and alias_node.name else (used_cte or "__dp_result")
    columns = tuple(c.name for c in alias_node.columns) if alias_node is not None and alias_node.columns else ()

    inner = body.copy()
    others = [c.copy() for n, c in ctes.items() if n != used_cte]
    if others and inner.args.get("with_") is None:
        inner.set("with_", exp.With(expressions=others))
    outer = tree.copy()
    outer.set("with_", None)
    outer.args["from_"].set("this", exp.Table(this=exp.to_identifier(alias)))
    for table in outer.find_all(exp.Table):
        if table.args.get("db") is not None or table.name != alias or table is not outer.args["from_"].this:
            if table.name.lower() in private_ctes or is_private(table.name):
                raise UnsupportedQuery(
                    "a query over a DP result can read only that result",
                    hint="join private data inside the aggregated subquery, or run the queries separately",
                )
            raise UnsupportedQuery(
                f'a query over a DP result can read only that result, not "{table.name}"',
                hint="join public tables inside the aggregated subquery, or run the queries separately",
            )
    return Layer(inner=inner, outer=outer, alias=alias, columns=columns)


def compose(release: Rewrite, layer: Layer) -> Rewrite:
    """``release`` (the rewrite of ``layer.inner``) with ``layer.outer`` as its post-processing.

    Guarantees: the bounded SQL, the statistics and the cost are those of the release alone; the
    outer query runs only in the post-processor, over the release's noisy result."""
    plan = release.plan
    if plan is None:  # pragma: no cover - split only picks subqueries that read a private table
        raise UnsupportedQuery("the subquery reads no private table")
    check_allowed(layer.outer, private=False)
    names = [o.name for o in plan.outputs]
    if layer.columns:
        if len(layer.columns) > len(names):
            raise UnsupportedQuery(
                f'table "{layer.alias}" has {len(names)} columns available but {len(layer.columns)} columns specified',
            )
        names = list(layer.columns) + names[len(layer.columns):]
    if len({n.lower() for n in names}) != len(names):
        raise UnsupportedQuery(
            "the aggregated subquery has two columns with the same name",
            hint="give each column of the subquery its own alias (COUNT(*) AS n, AVG(cost) AS avg_cost)",
        )
    inner = _release_select(release, names)
    duck_types = {n: _PG_TO_DUCK.get(o.pg_type, "VARCHAR") for n, o in zip(names, plan.outputs, strict=True)}
    known = dict(zip(names, (o.pg_type for o in plan.outputs), strict=True))
    outer = layer.outer.copy()
    out_names = output_names(outer)
    schema = MappingSchema({layer.alias: duck_types}, dialect="duckdb")
    try:
        qualified = qualify(outer.copy(), schema=schema, dialect="duckdb", validate_qualify_columns=True, quote_identifiers=True)
        annotated = annotate_types(qualified, schema=schema, dialect="duckdb")
    except OptimizeError as e:
        text = str(e)
        col = text.split("'")[1] if "'" in text else "?"
        raise UndefinedColumn(f'column "{col}" does not exist in the subquery "{layer.alias}"',
                              hint=f"its columns are {', '.join(names)}") from None
    if len(annotated.selects) != len(out_names):
        out_names = [p.alias_or_name for p in annotated.selects]
    outputs = tuple(OutputColumn(n, _output_type(p, known)) for n, p in zip(out_names, annotated.selects, strict=True))
    query = qualified
    source = query.args["from_"].this
    source.replace(exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(layer.alias, quoted=True))))
    _conform_integers(query, outputs, {})
    for proj, name in zip(query.expressions, out_names, strict=True):
        inner_expr = proj.this if isinstance(proj, exp.Alias) else proj
        proj.replace(exp.alias_(inner_expr.copy(), name, quoted=True))
    post_plan = replace(
        plan,
        post_sql=query.sql(dialect="duckdb", comments=False),
        output_map=(),
        outputs=outputs,
        description=(*plan.description, f'the outer query over "{layer.alias}" is post-processing of its noisy result: no extra cost'),
    )
    return Rewrite(sql=release.sql, dialect=release.dialect, plan=post_plan, outputs=outputs)


def _refuse_joined_results(tree: exp.Select, is_private: Callable[[str], bool]) -> None:
    """A join with an aggregated subquery over a private table (Superset's series limit) would be
    a staged release: not supported yet, refused naming the construct."""
    with_ = tree.args.get("with_")
    ctes = {c.alias_or_name.lower(): c for c in (with_.expressions if isinstance(with_, exp.With) else [])}
    sources = [tree.args.get("from_"), *tree.args.get("joins", [])]
    for src in sources:
        node = src.this if src is not None else None
        body = node.this if isinstance(node, exp.Subquery) else None
        if isinstance(node, exp.Table) and node.args.get("db") is None and node.name.lower() in ctes:
            body = ctes[node.name.lower()].this
        if isinstance(body, exp.Select) and _aggregates(body) and _reads_private(body, is_private, ctes):
            raise UnsupportedQuery(
                "joining an aggregated subquery over a private table (a staged release) is not supported yet",
                hint="run the subquery first and filter the outer query with its released keys (WHERE k IN ('a', 'b'))",
            )


def _release_select(release: Rewrite, names: list[str]) -> exp.Select:
    """The release's result as a SELECT over ``__dp_noisy`` with columns ``names``."""
    import sqlglot

    plan = release.plan
    assert plan is not None
    if plan.post_sql is not None:
        select = sqlglot.parse_one(plan.post_sql, read="duckdb")
        assert isinstance(select, exp.Select)
        # the release's post query may end with hidden half-width columns for dp.rounding; the
        # outer query reads the released values themselves (rounding is for display only)
        select.set("expressions", select.expressions[: len(names)])
        for proj, name in zip(select.expressions, names, strict=True):
            inner = proj.this if isinstance(proj, exp.Alias) else proj
            proj.replace(exp.alias_(inner.copy(), name, quoted=True))
        return select
    projections = [
        exp.alias_(exp.column(f"{KEY_PREFIX if kind == 'key' else AGG_PREFIX}{i}"), name, quoted=True)
        for (kind, i), name in zip(plan.output_map, names, strict=True)
    ]
    select = exp.select(*projections).from_(NOISY_TABLE)
    if plan.keys:
        select = select.order_by(*[exp.column(k.column) for k in plan.keys])
    return select


def _output_type(p: exp.Expression, known: dict[str, str]) -> str:
    inner = p.this if isinstance(p, exp.Alias) else p
    if isinstance(inner, exp.Column) and inner.name in known:
        return known[inner.name]
    return _pg_type(p.type)


def _aggregates(body: exp.Select) -> bool:
    """True when ``body`` releases aggregated rows (GROUP BY, an aggregate, or DISTINCT)."""
    if body.args.get("group") is not None or body.args.get("distinct") is not None:
        return True
    return any(p.find(exp.AggFunc) is not None for p in body.expressions)


def _reads_private(node: exp.Expression, is_private: Callable[[str], bool], ctes: dict[str, exp.CTE],
                   seen: frozenset[str] = frozenset()) -> bool:
    for table in node.find_all(exp.Table):
        name = table.name.lower()
        if table.args.get("db") is None and name in ctes and name not in seen:
            if _reads_private(ctes[name].this, is_private, ctes, seen | {name}):
                return True
        elif is_private(table.name if table.args.get("db") is None else f"{table.db}.{table.name}"):
            return True
    return False
