"""Pass 3b (``public_relations``): derived tables and CTEs that read no private table become public relations.

A FROM/JOIN subquery or a (non-recursive) top-level CTE whose body reads only public tables, or no
table at all (``VALUES``, ``SELECT 1``), depends on public data only, like a public dimension table.
Its body gets the checks of a query over public tables only (pass 4 with ``private=False``, pass 5,
constant divisors) and is then replaced by a placeholder table ``public.__dp_pub{i}`` that the
extended catalog lists as a public table with the body's output columns and types, so every later
pass treats it exactly like a public table: join limits and fan-out rules, public group keys
(``KeySource``, the public key set), ``RIGHT JOIN … USING (k)`` binding ``k`` to the public side.
:func:`restore` puts the bodies back (``(<body>) AS alias``) in the emitted SQL; :func:`check_sql`
is the pre-charge evaluation of every body (its errors come from public data only, but are raised
before the budget is charged).

>>> from sqlglot import parse_one
>>> body = parse_one("SELECT DISTINCT t.k AS k FROM public.t AS t")
>>> restore(parse_one("SELECT g.k FROM public.__dp_pub0 AS g"), {"__dp_pub0": (body, ())}).sql()
'SELECT g.k FROM (SELECT DISTINCT t.k AS k FROM public.t AS t) AS g'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types

from dpsql.errors import UnsupportedQuery
from dpsql.policy import TablePolicy
from dpsql.rewriter.allowlist import check_allowed
from dpsql.rewriter.bind import qualify_names
from dpsql.rewriter.literals import check_divisors
from dpsql.rewriter.post_query import _pg_type
from dpsql.schema import Catalog, ColumnInfo, TableInfo

PREFIX = "__dp_pub"

Bodies = dict[str, tuple[exp.Expression, tuple[str, ...]]]  # placeholder name → (qualified body, column aliases)


@dataclass
class PublicRelations:
    """The result of :func:`extract`: the rewritten tree, the extended catalog and the bodies."""

    tree: exp.Expression
    catalog: Catalog
    bodies: Bodies = field(default_factory=dict)


def extract(tree: exp.Expression, catalog: Catalog) -> PublicRelations:
    """Replace every derived table / top-level CTE over public data only by a public placeholder table.

    Guarantees: a body is replaced only when every table it reads is a public table of the policy
    (or a CTE replaced before it); anything reading a private table, an unknown name or a nested
    CTE is left in place for the passes after (which refuse it as today). Each replaced body passed
    the checks of a public-only query and has a known type for every output column.
    """
    tables: dict[str, TableInfo] = dict(catalog.tables)
    bodies: Bodies = {}
    current = catalog  # the catalog with every placeholder registered so far (bodies may read earlier ones)

    def register(body: exp.Expression, columns: list[str], types: list[exp.DataType] | None = None) -> str:
        nonlocal current
        name = f"{PREFIX}{len(bodies)}"
        qualified, info = _typed(body, current, name, columns, types)
        tables[f"public.{name}"] = info
        bodies[name] = (qualified, tuple(columns))
        current = Catalog(policy=catalog.policy, tables=dict(tables))
        return name

    # every CTE name of the statement: an unqualified name that is one is never read as a policy table
    # (a CTE may shadow one); a public CTE's references become qualified placeholders before later bodies are checked
    cte_names = [c.alias_or_name for c in tree.find_all(exp.CTE)]
    with_ = tree.args.get("with_")
    if isinstance(with_, exp.With) and not with_.args.get("recursive"):
        for cte in list(with_.expressions):
            body = cte.this
            if cte_names.count(cte.alias_or_name) > 1 or not _public_body(body, current, set(cte_names)):
                continue
            cols = [c.name for c in cte.args["alias"].columns] if cte.args.get("alias") is not None else []
            name = register(body.copy(), cols)
            for ref in list(tree.find_all(exp.Table)):
                if ref.name == cte.alias_or_name and not ref.args.get("db") and not _inside(ref, cte):
                    ref.replace(_placeholder(name, ref.alias_or_name))
            cte.pop()
        if not with_.expressions:
            tree.set("with_", None)
    for values in list(tree.find_all(exp.Values)):  # (VALUES (1), (2)) AS g(k): a public relation of literals
        if not isinstance(values.parent, exp.From | exp.Join) or not _attached(values, tree):
            continue
        alias = values.args.get("alias")
        if not isinstance(alias, exp.TableAlias) or not alias.columns:
            continue  # left for the allowlist (0A000)
        cols = [c.name for c in alias.columns]
        inner = exp.Values(
            expressions=[e.copy() for e in values.expressions],
            alias=exp.TableAlias(this=exp.to_identifier("__dp_v"), columns=[exp.to_identifier(c) for c in cols]),
        )
        body = exp.select(*[exp.column(c, table="__dp_v") for c in cols]).from_(inner)
        if not _public_body(body, current, set(cte_names)):
            continue
        name = register(body, [], _values_types(values, cols))
        values.replace(_placeholder(name, alias.name or name))
    for sub in list(tree.find_all(exp.Subquery)):
        if not isinstance(sub.parent, exp.From | exp.Join) or not _attached(sub, tree):
            continue
        body = sub.this
        if not _public_body(body, current, set(cte_names)):
            continue
        alias = sub.args.get("alias")
        cols = [c.name for c in alias.columns] if isinstance(alias, exp.TableAlias) else []
        name = register(body.copy(), cols)
        sub.replace(_placeholder(name, sub.alias_or_name or name))
    if not bodies:
        return PublicRelations(tree, catalog)
    return PublicRelations(tree, current, bodies)


def restore(tree: exp.Expression, bodies: Mapping[str, tuple[exp.Expression, tuple[str, ...]]]) -> exp.Expression:
    """``tree`` with every placeholder table replaced by its body, ``(<body>) AS alias`` (in place)."""
    if not bodies:
        return tree
    for ref in list(tree.find_all(exp.Table)):
        if ref.name in bodies and ref.args.get("db") is not None and ref.db == "public":
            body, cols = bodies[ref.name]
            alias = exp.TableAlias(this=exp.to_identifier(ref.alias_or_name), columns=[exp.to_identifier(c) for c in cols] or None)
            sub = exp.Subquery(this=restore(body.copy(), bodies), alias=alias)  # a body may read an earlier one
            if ref is tree:
                return sub
            ref.replace(sub)
    return tree


def check_sql(bodies: Mapping[str, tuple[exp.Expression, tuple[str, ...]]]) -> list[exp.Expression]:
    """One scalar per body that evaluates every row and column of it and is always 0 (so
    :func:`dpsql.rewriter.subqueries.check_counts` passes it): run before the charge, an error
    in a public body (division by zero, a bad cast over public rows) costs nothing."""
    out: list[exp.Expression] = []
    for i, (body, cols) in enumerate(bodies.values()):
        alias = exp.TableAlias(this=exp.to_identifier("__dp_pb"), columns=[exp.to_identifier(c) for c in cols] or None)
        every = exp.select(exp.Star()).distinct().from_(exp.Subquery(this=body.copy(), alias=alias))
        n = exp.select(exp.Least(this=exp.Count(this=exp.Star()), expressions=[exp.Literal.number(0)])).from_(every.subquery("__dp_pd"))
        out.append(exp.alias_(exp.Subquery(this=n), f"__dp_p{i}"))
    return out


def _placeholder(name: str, alias: str) -> exp.Table:
    return exp.Table(this=exp.to_identifier(name), db=exp.to_identifier("public"), alias=exp.TableAlias(this=exp.to_identifier(alias)))


def _public_body(body: exp.Expression, catalog: Catalog, cte_names: set[str]) -> bool:
    """True when ``body`` reads only public tables of ``catalog`` (placeholders included), none of
    them through an unqualified name that a CTE of the statement also has."""
    if not isinstance(body, exp.Select | exp.SetOperation | exp.Values) or body.find(exp.With) is not None:
        return False
    if body.find(exp.Lateral) is not None:
        return False
    for t in body.find_all(exp.Table):
        if not isinstance(t.this, exp.Identifier):
            return False
        if not t.args.get("db") and t.name in cte_names:
            return False
        info = catalog.table(f"{t.db}.{t.name}" if t.args.get("db") else t.name)
        if info is None or not info.policy.public:
            return False
    return True


def _inside(node: exp.Expression, ancestor: exp.Expression) -> bool:
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent  # type: ignore[assignment]
    return False


def _attached(node: exp.Expression, root: exp.Expression) -> bool:
    return _inside(node, root)


def _values_types(values: exp.Values, cols: list[str]) -> list[exp.DataType]:
    """Each column's type from its literals, which must agree on every row (else 0A000: cast them)."""
    out: list[exp.DataType] = []
    rows = [r.expressions if isinstance(r, exp.Tuple) else [r] for r in values.expressions]
    for i, c in enumerate(cols):
        kinds = set()
        dt: exp.DataType | None = None
        for r in rows:
            if i >= len(r) or len(r) != len(cols):
                raise UnsupportedQuery("VALUES lists must all have the same length", hint="give every row one value per column")
            typed = annotate_types(exp.select(r[i].copy())).selects[0].type
            if typed is None or typed.is_type(exp.DataType.Type.UNKNOWN, exp.DataType.Type.NULL):
                kinds.add("unknown")
            else:
                kinds.add(typed.sql())
                dt = typed
        if len(kinds) != 1 or dt is None:
            raise UnsupportedQuery(
                f'the values of column "{c}" of a VALUES list are not all of one known type',
                hint=f"cast them, e.g. (VALUES (CAST(1 AS BIGINT)), (CAST(2 AS BIGINT))) AS t({c})",
            )
        out.append(dt)
    return out


def _typed(
    body: exp.Expression, catalog: Catalog, name: str, columns: list[str], types: list[exp.DataType] | None = None
) -> tuple[exp.Expression, TableInfo]:
    """The qualified body and a public TableInfo with its output columns (names and types; ``types``
    overrides what sqlglot infers)."""
    check_allowed(body, private=False)
    qualified = qualify_names(body.copy(), catalog)
    check_divisors(qualified)
    annotated = annotate_types(qualified.copy(), schema=catalog.mapping_schema)
    selects = annotated.selects if isinstance(annotated, exp.Query) else []
    if isinstance(annotated, exp.Values):
        selects = list(annotated.expressions[0].expressions) if annotated.expressions else []
    names = columns or [s.alias_or_name for s in selects]
    if len(names) != len(selects) or any(not n for n in names) or len(set(names)) != len(names):
        raise UnsupportedQuery(
            "every column of a derived table over public tables needs one distinct name",
            hint="name each column: (SELECT a AS x, b AS y FROM …) AS d, or d(x, y)",
        )
    infos = []
    for i, (n, s) in enumerate(zip(names, selects, strict=True)):
        dt = types[i] if types is not None else s.type
        if dt is None or dt.is_type(exp.DataType.Type.UNKNOWN, exp.DataType.Type.NULL):
            raise UnsupportedQuery(
                f'cannot determine the type of column "{n}" of a derived table over public tables',
                hint=f"cast it, e.g. CAST(… AS BIGINT) AS {n}",
            )
        infos.append(ColumnInfo(n, _pg_type(dt)))
    policy = TablePolicy(
        name=name, schema="public", table=name, public=True, privacy_unit=None, max_groups=1, max_rows=1, columns={}, columns_declared=False
    )
    return qualified, TableInfo(policy=policy, columns=tuple(infos))
