"""The rewriter: SQL text + policy → bounded SQL for the target engine + a release plan.

Pure: no I/O, no randomness. The passes run in order, each in its own module (sqlglot's optimizer
is the model):

1. :mod:`~dpsql.rewriter.parse` — one read-only statement, size limits; then
   :mod:`~dpsql.rewriter.normalize` — PostgreSQL spellings (E/$$/U& strings, ANY/ALL arrays, to_char,
   width_bucket, make_date, age) as canonical nodes, and :mod:`~dpsql.rewriter.literals` — PostgreSQL's
   errors on constant LIMIT/OFFSET counts; :mod:`~dpsql.rewriter.layers` — SQL over an aggregated
   subquery/CTE is split into its DP release and a post-processing query over the noisy rows;
2. :mod:`~dpsql.rewriter.bind` (tables) — every table is in the policy;
3. :mod:`~dpsql.rewriter.allowlist` — default-deny node types and functions;
4. :mod:`~dpsql.rewriter.bind` (columns) — sqlglot ``qualify`` against the visible schema;
5. :mod:`~dpsql.rewriter.flatten` — merge row-level subqueries/CTEs, then
   :mod:`~dpsql.rewriter.typecheck` — no run-time casts of private text, explicit literal casts;
6. :mod:`~dpsql.rewriter.analyze` — private relation, keys, aggregates, post-processing parts;
7. :mod:`~dpsql.rewriter.contribution` (with :mod:`~dpsql.rewriter.totalize` and
   :mod:`~dpsql.rewriter.bounds`) — the bounded SQL and its statistics' sensitivities;
8. :mod:`~dpsql.rewriter.post` — the post-processing query over noisy values (constant x/0 refused);
9. :mod:`~dpsql.rewriter.emit` — engine SQL that is a parse/generate fixed point.
"""

from __future__ import annotations

from fractions import Fraction

from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.schema import MappingSchema

from dpsql.errors import UnsupportedQuery
from dpsql.rewriter.allowlist import check_allowed
from dpsql.rewriter.analyze import analyze_shape
from dpsql.rewriter.bind import check_no_star, output_names, qualify_names, resolve_tables
from dpsql.rewriter.contribution import BoundingContext, KeySource, build_bounded, column_families, make_salt
from dpsql.rewriter.emit import emit
from dpsql.rewriter.flatten import flatten
from dpsql.rewriter.layers import compose as compose_layers
from dpsql.rewriter.layers import split as split_layers
from dpsql.rewriter.literals import check_divisors, check_row_counts
from dpsql.rewriter.normalize import normalize, postgres_to_char
from dpsql.rewriter.parse import parse_statement
from dpsql.rewriter.plan import OutputColumn, ReleasePlan, Rewrite
from dpsql.rewriter.post import _pg_type, build_post
from dpsql.rewriter.rowcost import check_row_cost
from dpsql.rewriter.typecheck import check_types, constant_subexpressions
from dpsql.schema import Catalog, TableInfo

__all__ = ["ReleasePlan", "Rewrite", "rewrite"]

DIALECTS = ("duckdb", "postgres")


def rewrite(sql: str | exp.Expression, catalog: Catalog, *, dialect: str = "duckdb") -> Rewrite:
    """Rewrite one query for ``dialect`` ("duckdb" or "postgres").

    Guarantees: the returned SQL reads private rows only through per-unit contribution bounding
    whose sensitivities, recorded in the plan, follow from the policy alone; the plan (and so the
    query's cost) depends only on the query text and the policy, never on data. A query over public
    tables only comes back with ``plan=None`` and ``public_only=True``. Refusals raise
    :class:`~dpsql.errors.DPSQLError` subclasses with the SQLSTATEs of DESIGN §3.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    limits = catalog.policy.limits
    if isinstance(sql, exp.Expression):
        tree = sql.copy()
        text = tree.sql("postgres")
    else:
        tree = parse_statement(sql, max_bytes=limits.max_statement_bytes, max_nodes=limits.max_ast_nodes)
        text = sql
    names = output_names(tree)  # PostgreSQL's names of what the user wrote (before normalize)
    tree = normalize(tree)
    check_row_counts(tree)
    layer = split_layers(tree, lambda name: _is_private(catalog, name))
    if layer is not None:  # SQL over a DP result: the release, then post-processing of its noisy rows
        return compose_layers(rewrite(layer.inner, catalog, dialect=dialect), layer)
    refs = resolve_tables(tree, catalog)
    check_allowed(tree, private=bool(refs.private))
    check_no_star(tree, refs)
    qualified = qualify_names(tree, catalog)
    if not refs.private:
        check_divisors(qualified)
        public = physical_names(qualified.copy(), dialect)
        return Rewrite(
            sql=emit(postgres_to_char(public) if dialect == "postgres" else public, dialect),
            dialect=dialect,
            plan=None,
            outputs=_public_outputs(qualified, names, catalog),
            public_only=True,
        )

    private_names = {t.policy.table for t in refs.private}
    flat = flatten(qualified, private_names)
    relations = _relations(flat, catalog)
    private = [(a, t) for a, t in relations.items() if not t.policy.public]
    if len(private) != 1:
        raise UnsupportedQuery(
            "joins between private tables are not supported yet",
            hint="query one private table at a time, joined only with public tables",
        )
    alias, info = private[0]
    joins = flat.args.get("joins") or []
    if len(joins) > limits.max_joins:
        raise UnsupportedQuery(f"the query has {len(joins)} joins, more than the limit of {limits.max_joins}")
    families = column_families(relations)
    check_types(flat, families)
    check_row_cost(flat, families)
    constants = [c.copy() for c in constant_subexpressions(flat)]
    bounded_columns = {c.name for c in info.policy.columns.values() if c.bounded}
    shape = analyze_shape(flat, private_alias=alias, unit_column=info.policy.privacy_unit, families=families,
                          bounded=bounded_columns)

    bounds: dict[tuple[str, str], tuple[Fraction, Fraction] | None] = {}
    for a, t in relations.items():
        for c in t.policy.columns.values():
            if c.bounded:
                assert c.lower is not None and c.upper is not None
                bounds[(a, c.name)] = (c.lower, c.upper)
    key_sources: list[KeySource | None] = []
    for key in shape.keys:
        src: KeySource | None = None
        if isinstance(key, exp.Column) and key.table in relations:
            t = relations[key.table]
            cp = t.policy.columns.get(key.name)
            if not t.policy.public and cp is not None and cp.values is not None:
                src = KeySource(values=cp.values)
            elif t.policy.public:
                src = KeySource(table=t, column=key.name)
        key_sources.append(src)

    ctx = BoundingContext(
        dialect=dialect,
        private=info,
        private_alias=alias,
        families=families,
        bounds=bounds,
        key_sources=key_sources,
        salt=make_salt(text),
        max_released_groups=limits.max_released_groups,
    )
    bounded = build_bounded(shape, ctx)
    post = build_post(shape, bounded.keys, bounded.aggregates, names)
    notes = list(ctx.notes)
    if bounded.keys and not bounded.keys_public:
        notes.append("group keys are not declared public: released only through DP partition selection")
    plan = ReleasePlan(
        max_groups=_groups_per_unit(info.policy.max_groups, key_sources) if bounded.keys else 1,
        keys=bounded.keys,
        stats=bounded.stats,
        aggregates=bounded.aggregates,
        outputs=post.outputs,
        keys_public=bounded.keys_public,
        public_keys_sql=(
            emit(physical_names(bounded.public_keys_query, dialect), dialect) if bounded.public_keys_query is not None else None
        ),
        units_column=bounded.units_column,
        post_sql=post.sql,
        post_types=post.types,
        output_map=post.output_map,
        max_released_groups=limits.max_released_groups,
        tables=(info.policy.qualified,),
        description=tuple(notes),
        constants_sql=emit(exp.select(*constants), dialect) if constants else None,
    )
    return Rewrite(sql=emit(physical_names(bounded.query, dialect), dialect), dialect=dialect, plan=plan, outputs=post.outputs)


def _is_private(catalog: Catalog, name: str) -> bool:
    """True when ``name`` (``t`` or ``schema.t``, as written) is a private table of the policy."""
    schema, _, table = name.rpartition(".")
    info = catalog.table(f"{'public' if schema in ('', 'main') else schema}.{table}")
    return info is not None and not info.policy.public


def _groups_per_unit(max_groups: int, key_sources: list[KeySource | None]) -> int:
    """L0: ``max_groups``, or fewer when the keys are declared values with fewer combinations."""
    combos = 1
    for src in key_sources:
        if src is None or src.values is None:
            return max_groups
        combos *= len(src.values)
    return max(1, min(max_groups, combos))


def physical_names(tree: exp.Expression, dialect: str) -> exp.Expression:
    """Map the policy's logical schema to the engine's: ``public`` is DuckDB's ``main`` schema."""
    if dialect != "duckdb":
        return tree
    for table in tree.find_all(exp.Table):
        db = table.args.get("db")
        if isinstance(db, exp.Identifier) and db.this == "public":
            table.set("db", exp.to_identifier("main", quoted=db.quoted))
    return tree


def _relations(select: exp.Expression, catalog: Catalog) -> dict[str, TableInfo]:
    """alias → table for the base tables in the outer FROM/JOINs (public subqueries are skipped)."""
    out: dict[str, TableInfo] = {}
    sources = [select.args.get("from_"), *list(select.args.get("joins") or [])]
    for src in sources:
        if src is None:
            continue
        node = src.this
        if isinstance(node, exp.Table) and node.args.get("db") is not None:
            info = catalog.table(f"{node.db}.{node.name}")
            if info is not None:
                out[node.alias_or_name] = info
    return out


def _public_outputs(tree: exp.Expression, names: list[str], catalog: Catalog) -> tuple[OutputColumn, ...]:
    try:
        annotated = annotate_types(tree.copy(), schema=MappingSchema(catalog.sqlglot_schema(), dialect="postgres"))
        types = [_pg_type(p.type) for p in annotated.selects]
    except Exception:
        types = ["text"] * len(names)
    if len(types) != len(names):
        names = [p.alias_or_name for p in tree.selects]
    return tuple(OutputColumn(n, t) for n, t in zip(names, types, strict=False))
