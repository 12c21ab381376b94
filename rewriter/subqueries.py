"""Pass 6c (``subqueries``): subqueries in WHERE — filters over public tables, semi-joins on the privacy unit.

After ``flatten`` the outer query reads base tables; its WHERE may still hold ``x [NOT] IN (SELECT
…)``, ``[NOT] EXISTS (SELECT …)`` and scalar subqueries ``x > (SELECT MAX(y) FROM t)``. This pass
checks each one and admits two kinds (docs/sql.md "Subqueries", docs/privacy.md §2):

* **over public tables only** (correlated or not): a row-level filter whose value for a row depends
  only on public data and on that row's own columns — like a comparison with a constant. Its body
  is type-checked and made total like the outer row expressions (no run-time error can depend on
  which rows it meets). A scalar subquery must return at most one row: an uncorrelated one is
  counted by :attr:`Subquery.check_sql` before the charge (PostgreSQL's 21000, no budget spent); a
  correlated one must be an aggregate without GROUP BY (exactly one row, whatever the outer row).
* **over one private table, on the privacy unit** (a semi- or anti-join):
  ``v.unit [NOT] IN (SELECT p.unit FROM private p WHERE …)`` or ``[NOT] EXISTS (SELECT … FROM
  private p WHERE p.unit = v.unit AND …)``, where the body's other conditions read ``p`` only. The
  filter of a row of unit ``u`` then depends only on ``u``'s rows of ``p``: a neighbour that removes
  ``u`` from every table changes only ``u``'s rows of the filtered relation, which pass 10 bounds
  after the filter as usual. Rows of ``p`` with a NULL unit belong to nobody and are dropped (as by
  every other bound); no fan-out happens (a row passes at most once). The condition must be a
  top-level AND conjunct of WHERE, and ``IN`` is written as the ``EXISTS`` it equals, so engines plan
  a hash semi-/anti-join (PostgreSQL runs a sublink under OR once per outer row, scanning ``p``).

Everything else reading a private table in a subquery (correlation on a non-unit column, an
aggregate or scalar value of private rows, joins, DISTINCT/LIMIT …) is refused with 0A000 naming the
construct; an aggregated private subquery with ORDER BY … LIMIT is a staged release (rewriter.stages).

Each admitted subquery is replaced in the tree by a reference (:mod:`~dpsql.rewriter.subquery_ref`)
that passes 7–10 treat as a typed row value; :func:`restore` puts the checked bodies back into the
bounded SQL (made total for the engine).

>>> from sqlglot import parse_one
>>> from dpsql.policy import policy_from_dict
>>> from dpsql.schema import build_catalog
>>> policy = policy_from_dict({"server": {"auth": "trust"}, "budget": {"epsilon": 1, "delta": 1e-6}, "users": {"a": {}},
...                            "tables": {"v": {"privacy_unit": "u", "columns": {"d": {}}}, "dep": {"public": True}}})
>>> cat = build_catalog(policy, {"public.v": [("u", "int8"), ("d", "text")], "public.dep": [("name", "text")]})
>>> q = parse_one("SELECT COUNT(*) FROM public.v AS v WHERE v.d IN (SELECT dep.name AS name FROM public.dep AS dep)")
>>> tree, subs = extract(q, cat, {"v": cat.table("public.v")}, {"v.d": "text"})
>>> tree.sql()
'SELECT COUNT(*) FROM public.v AS v WHERE v.d IN (__DP_SUBQUERY(0))'
>>> restore(tree, subs).sql()
'SELECT COUNT(*) FROM public.v AS v WHERE v.d IN (SELECT dep.name AS name FROM public.dep AS dep)'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlglot import exp

from dpsql.errors import CardinalityViolation, UnsupportedQuery
from dpsql.rewriter.contribution import column_families
from dpsql.rewriter.families import Families, type_family
from dpsql.rewriter.joins import conjuncts
from dpsql.rewriter.subquery_ref import is_ref, make_ref, ref_index
from dpsql.schema import Catalog, TableInfo

__all__ = ["Subquery", "check_counts", "check_sql", "exists_columns", "extract", "restore"]

_AGGS_ONE_ROW = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)


@dataclass
class Subquery:
    """One admitted expression subquery: ``kind`` is ``in``, ``exists`` or ``scalar``; ``body`` its
    checked SELECT (aliases made unique); ``private`` whether it reads a private table (a semi-join
    on the unit); ``correlated`` whether it reads outer columns; ``tables`` the private tables read."""

    kind: str
    body: exp.Select
    private: bool
    correlated: bool
    tables: list[str] = field(default_factory=list)

    def note(self) -> str:
        """One line for the plan's description (EXPLAIN)."""
        what = {"in": "IN (subquery)", "exists": "EXISTS (subquery)", "scalar": "scalar subquery"}[self.kind]
        if self.private:
            return (f"{what} over {', '.join(self.tables)}: a semi-join on the privacy unit (a unit's rows pass by its own "
                    "rows only), bounded after the filter")
        if self.needs_check:
            return f"{what} over public tables: a row filter; its row count is checked before the charge"
        return f"{what} over public tables: a row filter"

    @property
    def needs_check(self) -> bool:
        """An uncorrelated scalar subquery: its row count is checked before the charge."""
        return self.kind == "scalar" and not self.correlated


def _what(kind: str) -> str:
    return {"in": "IN (subquery)", "exists": "EXISTS (subquery)", "scalar": "a scalar subquery"}[kind]


def _sql(node: exp.Expression) -> str:
    """What the user wrote, near enough for a message (PostgreSQL spelling, no quotes)."""
    return node.sql("postgres").replace('"', "")


def _refuse(message: str, hint: str) -> UnsupportedQuery:
    return UnsupportedQuery(message, hint=hint)


def exists_columns(tree: exp.Expression) -> exp.Expression:
    """``tree`` (in place) with every ``EXISTS (SELECT FROM …)`` — PostgreSQL allows an empty select
    list — selecting ``1`` instead: the same truth value, and DuckDB and Spark parse it."""
    for node in list(tree.find_all(exp.Exists)):
        body = node.this
        if isinstance(body, exp.Select) and not body.expressions:
            body.set("expressions", [exp.Literal.number(1)])
    return tree


def _subquery_kind(node: exp.Expression) -> tuple[str, exp.Select] | None:
    """(kind, body) when ``node`` is an expression subquery: ``IN``'s query, EXISTS, or a scalar."""
    if isinstance(node, exp.Exists) and isinstance(node.this, exp.Select):
        return "exists", node.this
    if isinstance(node, exp.Subquery) and not isinstance(node.parent, exp.From | exp.Join | exp.CTE | exp.Subquery):
        body = node.this
        while isinstance(body, exp.Subquery):
            body = body.this
        if not isinstance(body, exp.Select):
            raise _refuse("set operations inside a subquery are not supported", "write the subquery as one SELECT")
        parent = node.parent
        if isinstance(parent, exp.In) and parent.args.get("query") is node:
            return "in", body
        return "scalar", body
    return None


def _owner(node: exp.Expression) -> exp.Expression | None:
    """The nearest enclosing SELECT of ``node`` (its scope)."""
    p = node.parent
    while p is not None and not isinstance(p, exp.Select):
        p = p.parent
    return p


def _clause(node: exp.Expression, select: exp.Select) -> str:
    """The clause of ``select`` that holds ``node``: where, on, select, group, having, order …"""
    child, p = node, node.parent
    while p is not None and p is not select:
        child, p = p, p.parent
    if p is None:
        return "?"
    return str(child.arg_key)


def extract(
    select: exp.Select, catalog: Catalog, outer: Mapping[str, TableInfo], families: dict[str, str]
) -> tuple[exp.Select, list[Subquery]]:
    """Check and extract the expression subqueries of ``select`` (modified in place and returned).

    ``outer`` maps the outer FROM/JOIN aliases to their tables; ``families`` holds the type families
    of the outer columns and gets the body columns' added. Raises UnsupportedQuery (0A000) naming
    the construct for a subquery outside WHERE, nested, or reading a private table other than as a
    semi-join on the privacy unit."""
    subs: list[Subquery] = []
    taken = set(outer)
    found = [n for n in select.walk() if _subquery_kind(n) is not None and _owner(n) is select]
    for node in found:
        kind, body = _subquery_kind(node)  # type: ignore[misc]
        clause = _clause(node, select)
        if clause != "where":
            where = {
                "expressions": "the select list",
                "group": "GROUP BY",
                "having": "HAVING",
                "order": "ORDER BY",
                "joins": "JOIN … ON",
            }.get(clause, clause)
            raise _refuse(
                f"{_what(kind)} in {where} is not supported: subqueries may filter rows in WHERE only", "move the condition into WHERE"
            )
        if any(_subquery_kind(n) is not None for n in body.walk() if n is not body) or any(
            isinstance(s.this, exp.Subquery) for s in _sources(body)
        ):
            raise _refuse(f"nested subqueries inside {_what(kind)} are not supported", "write the inner query over base tables")
        index = len(subs)
        predicate = node.parent if kind == "in" else node
        sub = _check(
            kind,
            body.copy(),
            index,
            catalog=catalog,
            outer=outer,
            families=families,
            taken=taken,
            operand=predicate if kind == "in" else None,
            top_level=_top_level_conjunct(predicate, select),
        )
        subs.append(sub)
        columns = [c for c in sub.body.find_all(exp.Column) if c.table in outer]
        family = "bool" if sub.kind == "exists" else _value_family(sub.body, families)
        ref = make_ref(index, _unique(columns), family)
        if sub.kind != kind:  # a private IN written as the EXISTS it equals (_as_exists)
            assert isinstance(predicate, exp.In)
            negated = predicate.parent
            if isinstance(negated, exp.Not):  # NOT IN: two conjuncts, so that engines plan an anti-join
                target = predicate.this.copy()
                negated.replace(exp.paren(exp.and_(target.is_(exp.null()).not_(), exp.Not(this=ref)), copy=False))
            else:
                predicate.replace(ref)
        elif kind == "in":
            node.pop()
            predicate.set("query", None)
            predicate.set("expressions", [ref])
        else:
            node.replace(ref)
    return select, subs


def _top_level_conjunct(predicate: exp.Expression, select: exp.Select) -> bool:
    """True when ``predicate`` (possibly under one NOT) is a top-level AND conjunct of ``select``'s WHERE."""
    node = predicate.parent if isinstance(predicate.parent, exp.Not) else predicate
    p = node.parent
    while isinstance(p, exp.And | exp.Paren):
        p = p.parent
    return isinstance(p, exp.Where) and p.parent is select


def _unique(columns: list[exp.Column]) -> list[exp.Expression]:
    seen: dict[str, exp.Expression] = {}
    for c in columns:
        seen.setdefault(f"{c.table}.{c.name}", c)
    return list(seen.values())


def _sources(body: exp.Select) -> list[exp.Expression]:
    from_ = body.args.get("from_")
    return [s for s in [from_, *(body.args.get("joins") or [])] if s is not None]


def _value_family(body: exp.Select, families: Families) -> str:
    """The type family of the body's one projection (an aggregate's by its kind)."""
    proj = body.expressions[0]
    value = proj.this if isinstance(proj, exp.Alias) else proj
    if isinstance(value, exp.Count):
        return "int"
    if isinstance(value, exp.Min | exp.Max):
        return type_family(value.this, families)
    if isinstance(value, exp.Sum | exp.Avg):
        fam = type_family(value.this, families)
        return "numeric" if fam == "int" else fam
    return type_family(value, families)


def _check(
    kind: str,
    body: exp.Select,
    index: int,
    *,
    catalog: Catalog,
    outer: Mapping[str, TableInfo],
    families: dict[str, str],
    taken: set[str],
    operand: exp.Expression | None,
    top_level: bool,
) -> Subquery:
    tables: list[tuple[exp.Table, TableInfo]] = []
    for src in _sources(body):
        t = src.this
        info = catalog.table(f"{t.db}.{t.name}") if isinstance(t, exp.Table) and t.db else None
        if info is None:
            raise _refuse(f"{_what(kind)} may read only the policy's tables", "read base tables in the subquery's FROM")
        tables.append((t, info))
    if kind == "exists" and not body.expressions:
        body.set("expressions", [exp.Literal.number(1)])  # EXISTS (SELECT FROM …): see exists_columns
    if kind in ("in", "scalar") and len(body.expressions) != 1:
        raise _refuse(f"{_what(kind)} must select exactly one column", "select one column in the subquery")
    _rename_aliases(body, [t for t, _ in tables], taken, index)
    aliases = {t.alias_or_name for t, _ in tables}
    families.update(column_families({t.alias_or_name: info for t, info in tables}))
    for col in body.find_all(exp.Column):
        if col.table not in aliases and col.table not in outer:
            raise _refuse(
                f"{_what(kind)} reads {_sql(col)}, which is neither its own table's nor the outer query's table's column",
                "refer to the tables of the subquery or of the outer FROM",
            )
    correlated = any(c.table in outer for c in body.find_all(exp.Column))
    if any(not info.policy.public for _, info in tables):
        return _check_private(kind, body, tables, outer, operand, correlated, top_level)
    _check_public(kind, body, outer, correlated)
    return Subquery(kind, body, private=False, correlated=correlated)


def _rename_aliases(body: exp.Select, tables: list[exp.Table], taken: set[str], index: int) -> None:
    """Give the body's tables aliases no other scope of the statement uses (columns follow)."""
    renames: dict[str, str] = {}
    for t in tables:
        alias = t.alias_or_name
        new = alias
        n = 0
        while new in taken:
            n += 1
            new = f"{alias}_sq{index}" + (f"_{n}" if n > 1 else "")
        taken.add(new)
        if new != alias:
            renames[alias] = new
            t.set("alias", exp.TableAlias(this=exp.to_identifier(new, quoted=True)))
    if renames:
        for col in body.find_all(exp.Column):
            if col.table in renames:
                col.set("table", exp.to_identifier(renames[col.table], quoted=True))




def _reads_outer(node: exp.Expression, outer: Mapping[str, TableInfo]) -> bool:
    return any(c.table in outer for c in node.find_all(exp.Column))


def _check_public(kind: str, body: exp.Select, outer: Mapping[str, TableInfo], correlated: bool) -> None:
    """A body over public tables: correlation only in WHERE/ON; values a bare column, literal,
    row-level expression or one aggregate of one; a correlated scalar is an ungrouped aggregate."""
    if body.args.get("having") is not None:
        raise _refuse(f"HAVING inside {_what(kind)} is not supported", "filter the subquery's rows in its WHERE")
    for arg in ("group", "order", "limit", "offset", "distinct"):
        part = body.args.get(arg)
        if part is not None and _reads_outer(part, outer):
            raise _refuse(
                f"{_what(kind)} reads the outer query's columns in {arg.upper()}",
                "compare the outer columns with the subquery's in its WHERE",
            )
    for proj in body.expressions:
        value = proj.this if isinstance(proj, exp.Alias) else proj
        if _reads_outer(value, outer):
            raise _refuse(
                f"{_what(kind)} selects the outer query's column {_sql(value)}",
                "compare the outer columns with the subquery's in its WHERE",
            )
        aggs = list(value.find_all(exp.AggFunc))
        if aggs and not (isinstance(value, _AGGS_ONE_ROW) and len(aggs) == 1):
            raise _refuse(
                f"{_sql(value)} inside {_what(kind)}: only a column, a row expression or one COUNT/SUM/AVG/MIN/MAX of one is supported",
                "compute arithmetic over the aggregate outside",
            )
    if correlated and kind == "scalar":
        value = body.expressions[0]
        value = value.this if isinstance(value, exp.Alias) else value
        if not isinstance(value, _AGGS_ONE_ROW) or body.args.get("group") is not None or body.args.get("limit") is not None:
            raise _refuse(
                "a correlated scalar subquery must be one COUNT/SUM/AVG/MIN/MAX without GROUP BY (exactly one row for every outer row)",
                "write e.g. (SELECT MAX(d.floor) FROM departments d WHERE d.name = v.department)",
            )


def _check_private(
    kind: str,
    body: exp.Select,
    tables: list[tuple[exp.Table, TableInfo]],
    outer: Mapping[str, TableInfo],
    operand: exp.Expression | None,
    correlated: bool,
    top_level: bool,
) -> Subquery:
    """A body over a private table: a semi-join on the privacy unit (module docstring), else 0A000."""
    names = ", ".join(t.name for t, info in tables if not info.policy.public)
    units = {a: info.policy.privacy_unit or "" for a, info in outer.items() if not info.policy.public}
    hint = (
        "filter on the privacy unit: WHERE v.unit IN (SELECT p.unit FROM private p WHERE …) or "
        "EXISTS (SELECT 1 FROM private p WHERE p.unit = v.unit AND …)"
    )
    if kind == "scalar":
        raise _refuse(
            f"a scalar subquery over the private table {names} is not supported: its value would be computed from private rows",
            "aggregate the private table in the outer query (or join it on the privacy unit)",
        )
    if len(tables) != 1:
        raise _refuse(f"{_what(kind)} over the private table {names} may read that one table only (no joins)", hint)
    table = tables[0][0]
    alias = table.alias_or_name
    unit = tables[0][1].policy.privacy_unit
    if tables[0][1].policy.keyed:
        raise _refuse(
            f"{_what(kind)} over the keyed table {names} is not supported: its privacy unit "
            f"{tables[0][1].policy.unit_label} is reached through a key, not a column of its own",
            "join it along its key instead (e.g. JOIN … ON k.visit_id = v.visit_id)",
        )
    if not unit:
        raise _refuse(f"{_what(kind)} over the private table {names}: the table has no privacy unit", hint)
    for arg, what in (
        ("group", "GROUP BY"),
        ("having", "HAVING"),
        ("distinct", "DISTINCT"),
        ("order", "ORDER BY"),
        ("limit", "LIMIT"),
        ("offset", "OFFSET"),
    ):
        if body.args.get(arg) is not None:
            raise _refuse(
                f"{what} inside {_what(kind)} over the private table {names} is not supported "
                "(an aggregated subquery with ORDER BY … LIMIT n is a staged release)",
                hint,
            )
    if body.find(exp.AggFunc) is not None:
        raise _refuse(f"an aggregate inside {_what(kind)} over the private table {names} is not supported", hint)
    if not top_level:
        raise _refuse(f"{_what(kind)} over the private table {names} must be a condition of its own in WHERE, joined to "
                      "the others by AND (a semi-join): under OR, CASE or inside an expression the engine would evaluate "
                      "it row by row, at a cost that grows with the private table",
                      "write WHERE … AND v.unit IN (SELECT …), or split the query")
    outer_private = set(units)
    where = body.args.get("where")
    if kind == "in":
        assert operand is not None
        target = operand.this
        proj = body.expressions[0]
        value = proj.this if isinstance(proj, exp.Alias) else proj
        if correlated:
            raise _refuse(
                f"IN (subquery) over the private table {names} reads the outer query's columns: only "
                "an uncorrelated semi-join on the privacy unit is supported",
                hint,
            )
        if not (isinstance(value, exp.Column) and value.table == alias and value.name == unit):
            raise _refuse(f"IN (subquery) over the private table {names} must select its privacy unit {unit}, not {_sql(value)}", hint)
        if not (isinstance(target, exp.Column) and target.table in outer_private and target.name == units.get(target.table)):
            raise _refuse(
                f"IN (subquery) over the private table {names} must be compared with the outer private table's "
                f"privacy unit, not {_sql(target)}",
                hint,
            )
    else:
        links = 0
        for cond in conjuncts(where.this if where is not None else None):
            if _unit_link(cond, alias, unit, outer_private, units):
                links += 1
            elif _reads_outer(cond, outer):
                raise _refuse(
                    f"EXISTS (subquery) over the private table {names} is correlated by "
                    f"{_sql(cond)}: only the privacy unit may link it to the outer query",
                    hint,
                )
        if links == 0:
            raise _refuse(
                f"EXISTS (subquery) over the private table {names} must be correlated on the privacy unit "
                f"({alias}.{unit} = <outer table>.{unit})",
                hint,
            )
        for proj in body.expressions:
            if _reads_outer(proj, outer):
                raise _refuse(f"EXISTS (subquery) over the private table {names} selects an outer column", hint)
    # rows with a NULL unit belong to no unit: dropped, as by every bound
    not_null = exp.column(unit, table=alias, quoted=True).is_(exp.null()).not_()
    body.set("where", exp.Where(this=exp.and_(where.this, not_null) if where is not None else not_null))
    name = f"{table.db or 'public'}.{table.name}"
    if kind == "in":
        assert operand is not None
        return Subquery("exists", _as_exists(body, alias, unit, operand.this), private=True, correlated=True, tables=[name])
    return Subquery(kind, body, private=True, correlated=correlated, tables=[name])


def _as_exists(body: exp.Select, alias: str, unit: str, target: exp.Expression) -> exp.Select:
    """``target IN (SELECT p.unit FROM p WHERE c)`` as ``EXISTS (SELECT 1 FROM p WHERE p.unit =
    target AND c)`` — the same truth value for a non-NULL target (the body has no NULL unit), and
    engines plan it as a hash semi-/anti-join (PostgreSQL runs ``NOT IN (subquery)`` row by row
    when it cannot hash it). ``extract`` writes ``NOT IN`` as ``target IS NOT NULL AND NOT EXISTS …``:
    a NULL target never passes (PostgreSQL would pass it when the list is empty — a fact about
    other units' rows)."""
    out = body.copy()
    out.set("expressions", [exp.Literal.number(1)])
    link = exp.EQ(this=exp.column(unit, table=alias, quoted=True), expression=target.copy())
    out.set("where", exp.Where(this=exp.and_(link, out.args["where"].this)))
    return out


def _unit_link(cond: exp.Expression, alias: str, unit: str, outer_private: set[str], units: Mapping[str, str]) -> bool:
    """``alias.unit = o.unit_o`` (either order) for an outer private alias ``o``."""
    if not isinstance(cond, exp.EQ):
        return False
    a, b = cond.this, cond.expression
    for x, y in ((a, b), (b, a)):
        if (
            isinstance(x, exp.Column)
            and isinstance(y, exp.Column)
            and x.table == alias
            and x.name == unit
            and y.table in outer_private
            and y.name == units.get(y.table)
        ):
            return True
    return False


def restore(tree: exp.Expression, subs: list[Subquery], total: Callable[[exp.Expression], exp.Expression] | None = None) -> exp.Expression:
    """``tree`` (modified in place) with every subquery reference replaced by its body; with
    ``total`` (``totalize`` for the engine) applied to the body's row-level parts: WHERE, ON, GROUP BY,
    ORDER BY, the projections and the arguments of their aggregates."""
    for ref in [n for n in tree.walk() if is_ref(n)]:
        sub = subs[ref_index(ref)]
        body = _totalized(sub.body.copy(), total) if total is not None else sub.body.copy()
        if sub.kind == "in":
            parent = ref.parent
            assert isinstance(parent, exp.In)
            parent.set("expressions", None)
            parent.set("query", exp.Subquery(this=body))
        elif sub.kind == "exists":
            ref.replace(exp.Exists(this=body))
        else:
            ref.replace(exp.Subquery(this=body))
    return tree


def _totalized(body: exp.Select, total: Callable[[exp.Expression], exp.Expression]) -> exp.Select:
    def value(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Alias):
            node.set("this", value(node.this))
            return node
        if isinstance(node, exp.AggFunc):
            for key, arg in list(node.args.items()):
                if isinstance(arg, exp.Expression) and not isinstance(arg, exp.Star):
                    node.set(key, total(arg) if not isinstance(arg, exp.Distinct) else arg)
            return node
        if isinstance(node, exp.Star | exp.Literal):
            return node
        return total(node)

    body.set("expressions", [value(p) for p in body.expressions])
    where = body.args.get("where")
    if where is not None:
        where.set("this", total(where.this))
    for join in body.args.get("joins") or []:
        if join.args.get("on") is not None:
            join.set("on", total(join.args["on"]))
    group = body.args.get("group")
    if group is not None:
        group.set("expressions", [total(e) for e in group.expressions])
    order = body.args.get("order")
    if order is not None:
        for o in order.expressions:
            o.set("this", value(o.this))
    return body


def check_sql(subs: list[Subquery], total: Callable[[exp.Expression], exp.Expression] | None = None) -> exp.Select | None:
    """``SELECT (SELECT COUNT(*) FROM (<body>) AS __dp_sq) AS __dp_n{i}, …`` over the uncorrelated
    scalar subqueries (bodies over public tables only), or None: run before the charge, a count
    above 1 is PostgreSQL's 21000 "more than one row returned by a subquery used as an expression"."""
    counts = []
    for i, sub in enumerate(subs):
        if not sub.needs_check:
            continue
        body = _totalized(sub.body.copy(), total) if total is not None else sub.body.copy()
        inner = exp.select(exp.Count(this=exp.Star())).from_(
            exp.Subquery(this=body, alias=exp.TableAlias(this=exp.to_identifier("__dp_sq")))
        )
        counts.append(exp.alias_(exp.Subquery(this=inner), f"__dp_n{i}"))
    return exp.select(*counts) if counts else None


def check_counts(rows: Sequence[Sequence[object]]) -> None:
    """Raise PostgreSQL's 21000 when a count of :func:`check_sql`'s one row is above 1 (public data
    only; the engine calls this before the charge)."""
    for row in rows:
        if any(n is not None and int(n) > 1 for n in row):  # type: ignore[call-overload]
            raise CardinalityViolation(
                "more than one row returned by a subquery used as an expression",
                hint="make the subquery return one row (an aggregate, or a unique key); no budget was spent",
            )
