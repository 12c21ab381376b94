"""The rewriter: SQL text + policy → bounded SQL for the target engine + a release plan.

Pure: no I/O, no randomness. :data:`RULES` lists the passes in the order :func:`rewrite` applies
them, each in its own module (sqlglot's optimizer ``RULES`` is the model); this numbering is the
one used by DEVELOPERS.md and by every pass module's docstring:

1. ``parse`` — :mod:`~dpsql.rewriter.parse`: one read-only statement, size limits; with
   :mod:`~dpsql.rewriter.literals`: PostgreSQL's errors on constant LIMIT/OFFSET counts;
1b. ``normalize`` — :mod:`~dpsql.rewriter.normalize`: PostgreSQL spellings (E/$$/U& strings, ANY/ALL
   arrays, to_char, width_bucket, make_date, age) as canonical nodes;
1c. ``layers`` — :mod:`~dpsql.rewriter.layers`: SQL over an aggregated subquery/CTE is split into its
   DP release (rewritten by the whole pipeline) and a post-processing query over the noisy rows;
2. ``bind_tables`` — :mod:`~dpsql.rewriter.bind`: every table is in the policy;
3. ``aliases`` — :mod:`~dpsql.rewriter.aggregates`: other dialects' aggregate names (VAR, STD …);
3b. ``public_relations`` — :mod:`~dpsql.rewriter.public_relations`: a derived table or CTE over public
    tables only becomes a public relation (a placeholder public table; its body is put back in pass 12);
4. ``allowlist`` — :mod:`~dpsql.rewriter.allowlist`: default-deny node types and functions;
5. ``qualify`` — :mod:`~dpsql.rewriter.bind`: sqlglot ``qualify`` against the visible schema
   (a query over public tables only is emitted as is after this pass);
6. ``flatten`` — :mod:`~dpsql.rewriter.flatten`: merge row-level subqueries/CTEs;
6b. ``unit_paths`` — :mod:`~dpsql.rewriter.unit_paths`: a join along a declared key path gets the
    unit equality its key implies; then :mod:`~dpsql.rewriter.joins` checks that private tables
    join only on the privacy unit (a keyed table's references are lowered to the inner join along
    its key path, carrying the unit as ``__dp_unit``, in pass 12);
6c. ``subqueries`` — :mod:`~dpsql.rewriter.subqueries`: subqueries in WHERE (IN, EXISTS, scalar) over
   public tables are row filters, over a private table semi-joins on the privacy unit; each is
   replaced by a typed reference that pass 10 puts back;
7. ``typecheck`` — :mod:`~dpsql.rewriter.typecheck`: no run-time casts of private text;
8. ``rowcost`` — :mod:`~dpsql.rewriter.rowcost`: bounded per-row cost;
9. ``analyze`` — :mod:`~dpsql.rewriter.analyze`: private relation, keys, aggregates;
10. ``contribution`` — :mod:`~dpsql.rewriter.contribution` (with :mod:`~dpsql.rewriter.aggregates`,
    :mod:`~dpsql.rewriter.totalize` and :mod:`~dpsql.rewriter.bounds`): the bounded SQL;
11. ``post`` — :mod:`~dpsql.rewriter.post_query`: the post-processing query over noisy values;
12. ``emit`` — :mod:`~dpsql.rewriter.emit`: keyed tables lowered to their key-path joins
    (:func:`~dpsql.rewriter.unit_paths.expand`), physical names, engine SQL that is a
    parse/generate fixed point.

Golden before/after files for the passes that change the tree are in
``tests/rewriter/fixtures/<pass>.sql`` (run by ``tests/rewriter/test_fixtures.py`` through
:func:`rewrite_until`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.schema import MappingSchema

from dpsql.errors import UnsupportedQuery
from dpsql.rewriter import aggregates, public_relations
from dpsql.rewriter import spark as spark_dialect
from dpsql.rewriter.allowlist import check_allowed
from dpsql.rewriter.analyze import QueryShape, analyze_shape
from dpsql.rewriter.bind import check_no_star, output_names, qualify_names, resolve_tables
from dpsql.rewriter.contribution import Bounded, BoundingContext, KeySource, build_bounded, column_families, make_salt
from dpsql.rewriter.emit import emit
from dpsql.rewriter.flatten import flatten
from dpsql.rewriter.joins import (
    PrivateSide,
    cap_private_sides,
    joined_info,
    private_join,
    unit_always_from_first,
    unit_expression,
)
from dpsql.rewriter.layers import compose as compose_layers
from dpsql.rewriter.layers import split as split_layers
from dpsql.rewriter.literals import check_divisors, check_row_counts
from dpsql.rewriter.normalize import normalize, postgres_to_char
from dpsql.rewriter.parse import parse_statement
from dpsql.rewriter.plan import Histogram, OutputColumn, ReleasePlan, Rewrite
from dpsql.rewriter.post_query import Post, _pg_type, build_post
from dpsql.rewriter.rowcost import check_row_cost
from dpsql.rewriter.subqueries import Subquery, check_sql, exists_columns, extract, restore
from dpsql.rewriter.totalize import totalize
from dpsql.rewriter.typecheck import check_types, constant_subexpressions
from dpsql.rewriter.unit_paths import expand as expand_unit_paths
from dpsql.rewriter.unit_paths import join_key_paths
from dpsql.schema import Catalog, TableInfo

__all__ = ["RULES", "ReleasePlan", "Rewrite", "RewriteState", "rewrite", "rewrite_until"]

DIALECTS = ("duckdb", "postgres", "spark")


@dataclass
class RewriteState:
    """What the passes hand on to each other; ``tree`` is the current tree after each pass."""

    sql: str | exp.Expression
    catalog: Catalog
    dialect: str
    tree: exp.Expression = field(default_factory=exp.Select)
    text: str = ""
    refs: Any = None
    names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    relations: dict[str, TableInfo] = field(default_factory=dict)
    alias: str = ""
    info: TableInfo | None = None
    families: dict[str, str] = field(default_factory=dict)
    constants: list[exp.Expression] = field(default_factory=list)
    shape: QueryShape | None = None
    ctx: BoundingContext | None = None
    bounded: Bounded | None = None
    post: Post | None = None
    result: Rewrite | None = None  # set by the pass that finishes the rewrite
    sides: list[PrivateSide] = field(default_factory=list)  # private tables in join order (rewriter.joins)
    private: dict[str, TableInfo] = field(default_factory=dict)  # alias → private table, join order
    subqueries: list[Subquery] = field(default_factory=list)  # expression subqueries (rewriter.subqueries)
    public_bodies: public_relations.Bodies = field(default_factory=dict)  # placeholder → public relation body

    @property
    def limits(self):  # type: ignore[no-untyped-def]
        """The policy's size limits."""
        return self.catalog.policy.limits


def _parse(st: RewriteState) -> None:
    if isinstance(st.sql, exp.Expression):
        st.tree = st.sql.copy()
        st.text = st.tree.sql("postgres")
    else:
        st.tree = parse_statement(st.sql, max_bytes=st.limits.max_statement_bytes, max_nodes=st.limits.max_ast_nodes)
        st.text = st.sql
    # PostgreSQL's names of what the user wrote (before normalize; VAR(x) is named "var" though it
    # becomes VAR_SAMP(x))
    st.names = output_names(st.tree)


def _normalize(st: RewriteState) -> None:
    st.tree = normalize(st.tree)
    check_row_counts(st.tree)


def _layers(st: RewriteState) -> None:
    layer = split_layers(st.tree, lambda name: _is_private(st.catalog, name))
    if layer is not None:  # SQL over a DP result: the release, then post-processing of its noisy rows
        st.result = compose_layers(rewrite(layer.inner, st.catalog, dialect=st.dialect), layer)


def _bind_tables(st: RewriteState) -> None:
    st.refs = resolve_tables(st.tree, st.catalog)


def _aliases(st: RewriteState) -> None:
    st.notes.extend(aggregates.normalize_aliases(st.tree))


def _public_relations(st: RewriteState) -> None:
    if not st.refs.private:
        return  # a query over public tables only is emitted as written after pass 5
    found = public_relations.extract(st.tree, st.catalog)
    st.tree, st.catalog, st.public_bodies = found.tree, found.catalog, found.bodies
    if st.public_bodies:
        st.notes.append(f"{len(st.public_bodies)} derived table(s)/CTE(s) over public tables only: public relations, "
                        "joined and grouped like public tables and evaluated before the charge")


def _allowlist(st: RewriteState) -> None:
    check_allowed(st.tree, private=bool(st.refs.private))
    check_no_star(st.tree, st.refs)


def _qualify(st: RewriteState) -> None:
    st.tree = qualify_names(st.tree, st.catalog)
    if not st.refs.private:
        check_divisors(st.tree)
        public = physical_names(exists_columns(st.tree.copy()), st.dialect)
        if st.dialect != "postgres" and public.find(exp.NumberToStr) is not None:
            raise UnsupportedQuery(
                "to_char() of a number over public tables or constants runs only on a PostgreSQL backend",
                hint="format the number in the client; over a private table's aggregate, to_char(SUM(x), '999,999') works",
            )
        st.result = Rewrite(
            sql=emit(postgres_to_char(public) if st.dialect == "postgres" else public, st.dialect),
            dialect=st.dialect,
            plan=None,
            outputs=_public_outputs(st.tree, st.names, st.catalog),
            public_only=True,
        )


MAX_PUBLIC_JOINS = 12  # joins to public (dimension) tables in one statement, beside [limits] max_joins


def _flatten(st: RewriteState) -> None:
    private_names = {t.policy.table for t in st.refs.private}
    st.tree = flatten(st.tree, private_names)
    st.relations = _relations(st.tree, st.catalog)
    private = {a: t for a, t in st.relations.items() if not t.policy.public}
    if not private:
        if any(isinstance(n, exp.Exists) or (isinstance(n, exp.Subquery) and not isinstance(n.parent, exp.From | exp.Join))
               for n in st.tree.walk()):
            raise UnsupportedQuery(
                f"a subquery reads the private table {', '.join(sorted(private_names))} to filter rows of public tables only: "
                "its answer would depend on individual private rows",
                hint="read the private table in FROM and aggregate it, e.g. SELECT COUNT(*) FROM private p JOIN public_t t ON …",
            )
        raise UnsupportedQuery(
            "this query reads a private table through a construct dpsql cannot bound",
            hint="read private tables in FROM/JOIN, joined with each other only on the privacy unit",
        )


def _unit_paths(st: RewriteState) -> None:
    assert isinstance(st.tree, exp.Select)
    join_key_paths(st.tree, st.relations)
    private = {a: t for a, t in st.relations.items() if not t.policy.public}
    try:
        st.sides = private_join(st.tree, {a: t.policy.privacy_unit or "" for a, t in private.items()})
    except UnsupportedQuery as e:
        keyed = [(a, t.policy) for a, t in private.items() if t.policy.keyed]
        if not keyed:
            raise
        paths = "; ".join(f"{a}.{tp.unit_path[0].via} belongs to the {tp.unit_root} of its row of {tp.unit_path[0].table}"
                          for a, tp in keyed)
        raise UnsupportedQuery(
            f"{e.message}; {paths}, so its key may join only that row",
            hint="join a keyed table along its key path (e.g. ON p.visit_id = v.visit_id with the referenced table), "
                 "other private tables on their privacy unit",
        ) from None
    st.private = {s.alias: private[s.alias] for s in st.sides}
    st.alias = st.sides[0].alias
    st.info = joined_info(list(st.private.values()))
    joins = st.tree.args.get("joins") or []
    private_joins = len(st.sides) - 1
    if private_joins > st.limits.max_joins:
        raise UnsupportedQuery(f"the query joins {private_joins} private tables to the first, more than the limit of "
                               f"{st.limits.max_joins}", hint="raise [limits] max_joins in the policy, or join fewer tables")
    if len(joins) - private_joins > MAX_PUBLIC_JOINS:
        # joins to public tables cannot change a sensitivity (their rows are public) and cost the
        # same whatever the private rows hold; this only bounds the size of one statement
        raise UnsupportedQuery(f"the query joins {len(joins) - private_joins} public tables, more than the limit of "
                               f"{MAX_PUBLIC_JOINS}", hint="join fewer dimension tables")
    st.families = column_families(st.relations)


def _subqueries(st: RewriteState) -> None:
    assert isinstance(st.tree, exp.Select)
    families = dict(st.families)
    st.tree, st.subqueries = extract(st.tree, st.catalog, st.relations, families)
    for sub in st.subqueries:  # the bodies get the outer query's row-level checks (passes 7 and 8)
        check_types(sub.body, families)
        check_row_cost(sub.body, families)
        st.notes.append(sub.note())
    st.families = families


def _typecheck(st: RewriteState) -> None:
    check_types(st.tree, st.families)


def _rowcost(st: RewriteState) -> None:
    check_row_cost(st.tree, st.families)
    st.constants = [c.copy() for c in constant_subexpressions(st.tree)]
    for sub in st.subqueries:
        st.constants.extend(c.copy() for c in constant_subexpressions(sub.body))


def _analyze(st: RewriteState) -> None:
    assert st.info is not None
    bounded_columns = {c.name for c in st.info.policy.columns.values() if c.bounded}
    st.shape = analyze_shape(st.tree, private_alias=st.alias, unit_column=st.info.policy.privacy_unit,
                             families=st.families, bounded=bounded_columns,
                             other_units={s.alias: s.unit for s in st.sides[1:]},
                             count_units=unit_always_from_first(st.sides))


def _contribution(st: RewriteState) -> None:
    assert st.shape is not None and st.info is not None
    bounds: dict[tuple[str, str], tuple[Fraction, Fraction] | None] = {}
    time_bounds: dict[tuple[str, str], tuple[object, object]] = {}
    for a, t in st.relations.items():
        for c in t.policy.columns.values():
            if c.bounded:
                assert c.lower is not None and c.upper is not None
                bounds[(a, c.name)] = (c.lower, c.upper)
            if c.time_bounded:
                time_bounds[(a, c.name)] = (c.time_lower, c.time_upper)
    key_sources: list[KeySource | None] = []
    for key in st.shape.keys:
        src: KeySource | None = None
        if isinstance(key, exp.Column) and key.table in st.relations:
            t = st.relations[key.table]
            cp = t.policy.columns.get(key.name)
            if not t.policy.public and cp is not None and cp.values is not None:
                src = KeySource(values=cp.values)
            elif t.policy.public:
                src = KeySource(table=t, column=key.name, alias=key.table)
        key_sources.append(src)
    st.ctx = BoundingContext(
        dialect=st.dialect,
        private=st.info,
        private_alias=st.alias,
        families=st.families,
        bounds=bounds,
        key_sources=key_sources,
        salt=make_salt(st.text),
        max_released_groups=st.limits.max_released_groups,
        time_bounds=time_bounds,
    )
    if len(st.sides) > 1:  # fan-out: ≤ a policy constant of rows per unit from each side (rewriter.joins)
        st.shape.select = cap_private_sides(st.shape.select, st.sides, st.private, st.ctx.salt)
        st.ctx.unit = unit_expression(st.sides)
        st.ctx.joined = dict(st.private)
        st.ctx.notes.append(
            "private tables joined on the privacy unit: each side keeps ≤ max_rows·max_groups rows per unit "
            "(its own policy) before the join, and the joined rows are bounded per unit after it"
        )
    st.bounded = build_bounded(st.shape, st.ctx)
    if st.subqueries:  # the checked bodies back in place of their references, made total for the engine
        dialect, families = st.dialect, st.families

        def total(node: exp.Expression) -> exp.Expression:
            return totalize(node, dialect, families)

        restore(st.bounded.query, st.subqueries, total)
        st.bounded.histograms = tuple((restore(q, st.subqueries, total), k) for q, k in st.bounded.histograms)
    st.tree = st.bounded.query


def _post(st: RewriteState) -> None:
    assert st.shape is not None and st.bounded is not None
    st.post = build_post(st.shape, st.bounded.keys, st.bounded.aggregates, st.names)


def _emit(st: RewriteState) -> None:
    assert st.bounded is not None and st.post is not None and st.ctx is not None and st.info is not None
    bounded, post, dialect = st.bounded, st.post, st.dialect
    notes = [*st.notes, *st.ctx.notes]
    if bounded.keys and not bounded.keys_public:
        notes.append("group keys are not declared public: released only through DP partition selection")
    plan = ReleasePlan(
        max_groups=_groups_per_unit(st.info.policy.max_groups, st.ctx.key_sources) if bounded.keys else 1,
        keys=bounded.keys,
        stats=bounded.stats,
        aggregates=bounded.aggregates,
        outputs=post.outputs,
        keys_public=bounded.keys_public,
        public_keys_sql=(
            emit(physical_names(_public(st, bounded.public_keys_query), dialect), dialect)
            if bounded.public_keys_query is not None else None
        ),
        units_column=bounded.units_column,
        post_sql=post.sql,
        post_types=post.types,
        output_map=post.output_map,
        max_released_groups=st.limits.max_released_groups,
        tables=tuple(dict.fromkeys([*(t.policy.qualified for t in st.private.values()),
                                    *(name for sub in st.subqueries for name in sub.tables)])) or (st.info.policy.qualified,),
        description=tuple(notes),
        constants_sql=emit(exp.select(*st.constants), dialect) if st.constants else None,
        quantiles=bounded.quantiles,
        max_rows=st.info.policy.max_rows,
        private_join=len(st.sides) > 1,
        histograms=tuple(Histogram(emit(physical_names(_public(st, _lowered(expand_unit_paths(q.copy(), st.catalog), dialect)),
                                                       dialect), dialect), k)
                         for q, k in bounded.histograms),
        max_contributions=bounded.max_contributions,
        subquery_check_sql=_subquery_check(st),
    )
    query = _public(st, _lowered(expand_unit_paths(bounded.query.copy(), st.catalog), dialect))
    sql = emit(physical_names(query, dialect), dialect)
    st.result = Rewrite(sql=sql, dialect=dialect, plan=plan, outputs=post.outputs)


def _subquery_check(st: RewriteState) -> str | None:
    """The pre-charge row count of the uncorrelated scalar subqueries (public tables only)."""
    dialect, families = st.dialect, st.families
    check = check_sql(st.subqueries, lambda node: totalize(node, dialect, families))
    evaluated = public_relations.check_sql(st.public_bodies)  # every public body evaluates before the charge
    if evaluated:
        check = exp.select(*(check.expressions if check is not None else []), *evaluated)
    return emit(physical_names(_public(st, check), dialect), dialect) if check is not None else None


def _public(st: RewriteState, query: exp.Expression) -> exp.Expression:
    """``query`` with the public relations' bodies back in place of their placeholders."""
    return public_relations.restore(query, st.public_bodies)


def _lowered(query: exp.Expression, dialect: str) -> exp.Expression:
    """The engine-specific lowering of a bounded query (Spark: exact sums, TRY_CAST kept)."""
    return spark_dialect.lower_bounded(query) if dialect == "spark" else query


Pass = Callable[[RewriteState], None]

RULES: tuple[tuple[str, Pass], ...] = (
    ("parse", _parse),
    ("normalize", _normalize),
    ("layers", _layers),
    ("bind_tables", _bind_tables),
    ("aliases", _aliases),
    ("public_relations", _public_relations),
    ("allowlist", _allowlist),
    ("qualify", _qualify),
    ("flatten", _flatten),
    ("unit_paths", _unit_paths),
    ("subqueries", _subqueries),
    ("typecheck", _typecheck),
    ("rowcost", _rowcost),
    ("analyze", _analyze),
    ("contribution", _contribution),
    ("post", _post),
    ("emit", _emit),
)


def _run(sql: str | exp.Expression, catalog: Catalog, dialect: str, until: str | None) -> RewriteState:
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    if until is not None and until not in dict(RULES):
        raise ValueError(f"unknown pass {until!r}")
    st = RewriteState(sql, catalog, dialect)
    for name, apply in RULES:
        apply(st)
        if st.result is not None or name == until:
            break
    return st


def rewrite(sql: str | exp.Expression, catalog: Catalog, *, dialect: str = "duckdb") -> Rewrite:
    """Rewrite one query for ``dialect`` ("duckdb", "postgres" or "spark"), applying :data:`RULES` in order.

    Guarantees: the returned SQL reads private rows only through per-unit contribution bounding
    whose sensitivities, recorded in the plan, follow from the policy alone; the plan (and so the
    query's cost) depends only on the query text and the policy, never on data. A query over public
    tables only comes back with ``plan=None`` and ``public_only=True``. Refusals raise
    :class:`~dpsql.errors.DPSQLError` subclasses with the SQLSTATEs of DESIGN §3.
    """
    st = _run(sql, catalog, dialect, None)
    assert st.result is not None
    return st.result


def rewrite_until(sql: str | exp.Expression, catalog: Catalog, pass_name: str, *, dialect: str = "duckdb") -> str:
    """The SQL (in ``dialect``, policy-logical names) of the tree right after pass ``pass_name``
    (for the golden fixtures); the final engine SQL for ``emit``. Raises what the passes raise."""
    st = _run(sql, catalog, dialect, pass_name)
    if pass_name == "emit" or (st.result is not None and st.result.public_only):
        assert st.result is not None
        return st.result.sql
    return restore(st.tree.copy(), st.subqueries).sql(dialect)  # subquery references shown as their bodies (placeholders kept)


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
    """Map the policy's logical schema to the engine's: ``public`` is DuckDB's ``main`` schema; on
    Spark every policy table is a session view (:func:`dpsql.rewriter.spark.view_name`)."""
    if dialect == "spark":
        return spark_dialect.physical_names(tree)
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
