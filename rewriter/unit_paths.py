r"""Pass 6b (``unit_paths``): private tables whose rows belong to a unit through a key path.

A policy table may declare ``privacy_unit = { via = "visit_id", references = "visits.visit_id" }``
(a *keyed* table; :class:`~dpsql.policy.UnitStep`): each of its rows belongs to the unit of the
one row of ``visits`` whose ``visit_id`` (declared ``unique = true``, checked in the data at
start-up) equals the row's ``visit_id``; chains (a → b → c, c holding the unit column) resolve the
same way. Such a table has no unit column of its own: the rewriter gives it the reserved column
``__dp_unit`` (:data:`~dpsql.policy.KEYED_UNIT`), so every later pass — the private-join rule of
:mod:`~dpsql.rewriter.joins`, the per-side caps before a join, the contribution bounding of pass 10
with the keyed table's own ``max_rows``/``max_groups``/bounds — treats it as a private table with
a unit column. Analysts cannot name ``__dp_unit`` (it is not in the visible schema: 42703).

Two steps:

1. **This pass** (after ``flatten``, so row-level CTEs and subqueries over either table have
   merged): a join that follows a key path — ``prescriptions p JOIN visits v ON p.visit_id =
   v.visit_id``, or two keyed tables on the same key — gets the conjunct its key implies,
   ``p.__dp_unit = v.patient_id``. It is true of every row the written condition matches (the
   referenced row is unique, and it is the row that defines p's unit), except where that unit is
   NULL (rows of no one, dropped by the bounding anyway), so the query's answer is unchanged and
   the join is a join on the privacy unit. Then :func:`~dpsql.rewriter.joins.private_join` checks
   the joins as for any private tables: a keyed table's key column joined to anything else (another
   column, another table) is not a unit join and is refused (0A000) — the key cannot reach other
   units' rows.
2. **Lowering** (:func:`expand`, in pass 12 before the physical names): every reference to a
   keyed table in the engine SQL becomes ``(SELECT k.<visible columns>, rN.<unit> AS __dp_unit
   FROM keyed AS k JOIN ref1 AS r1 ON k.via = r1.key … ) AS <alias>`` — an inner join along the
   path. Rows whose key has no match belong to no unit and are dropped; the referenced columns
   are unique, so no row is repeated (one row, at most one unit).

>>> from sqlglot import parse_one
>>> from dpsql.policy import policy_from_dict
>>> from dpsql.schema import build_catalog
>>> pol = policy_from_dict({"budget": {"epsilon": 1, "delta": 1e-6}, "users": {"a": {}}, "server": {"auth": "trust"},
...     "tables": {"v": {"privacy_unit": "pid", "columns": {"vid": {"unique": True}}},
...                "rx": {"privacy_unit": {"via": "vid", "references": "v.vid"}, "columns": {"dose": {}}}}})
>>> cat = build_catalog(pol, {"public.v": [("vid", "int8"), ("pid", "int8")],
...                           "public.rx": [("vid", "int8"), ("dose", "int4")]})
>>> q = parse_one('SELECT 1 FROM public.rx AS r JOIN public.v AS v ON r.vid = v.vid')
>>> join_key_paths(q, {"r": cat.table("rx"), "v": cat.table("v")}).sql()
'SELECT 1 FROM public.rx AS r JOIN public.v AS v ON r.vid = v.vid AND "r"."__dp_unit" = "v"."pid"'
>>> sql = expand(parse_one('SELECT COUNT(*) FROM public.rx AS r'), cat).sql()
>>> print(sql.replace(" FROM", "\nFROM").replace(" JOIN", "\nJOIN"))
SELECT COUNT(*)
FROM (SELECT "__dp_k"."vid", "__dp_k"."dose", "__dp_r1"."pid" AS "__dp_unit"
FROM "public"."rx" AS "__dp_k"
JOIN "public"."v" AS "__dp_r1" ON "__dp_k"."vid" = "__dp_r1"."vid") AS "r"
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp

from dpsql.policy import KEYED_UNIT, TablePolicy
from dpsql.rewriter.joins import conjuncts
from dpsql.schema import Catalog, TableInfo

__all__ = ["expand", "join_key_paths"]


def join_key_paths(select: exp.Select, relations: Mapping[str, TableInfo]) -> exp.Select:
    """``select`` (changed in place) with the unit equality added to every join whose ``ON`` has a
    top-level conjunct following a key path between two private tables of ``relations`` (alias →
    table): ``k.via = r.key`` where ``k``'s first step references ``r``'s table and column, or
    ``k1.via = k2.via`` where both tables' first steps reference the same table and column. The
    added conjunct ``k.__dp_unit = r.<unit>`` holds on every row the key equality matches whose
    unit is not NULL; nothing else changes."""
    for join in select.args.get("joins") or []:
        on = join.args.get("on")
        if on is None:
            continue
        added: list[exp.Expression] = []
        for cond in conjuncts(on):
            pair = _key_pair(cond, relations)
            if pair is None:
                continue
            a, b = pair
            unit_eq = exp.EQ(
                this=exp.column(relations[a].policy.privacy_unit or "", table=a, quoted=True),
                expression=exp.column(relations[b].policy.privacy_unit or "", table=b, quoted=True),
            )
            if not any(c == unit_eq for c in [*conjuncts(on), *added]):
                added.append(unit_eq)
        if added:
            join.set("on", exp.and_(on, *added, copy=False))
    return select


def _key_pair(cond: exp.Expression, relations: Mapping[str, TableInfo]) -> tuple[str, str] | None:
    """The aliases (keyed first) of a key-path equality, or None."""
    if not isinstance(cond, exp.EQ):
        return None
    left, right = cond.this, cond.expression
    if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
        return None
    for x, y in ((left, right), (right, left)):
        tx, ty = relations.get(x.table), relations.get(y.table)
        if tx is None or ty is None or x.table == y.table or tx.policy.public or ty.policy.public or not tx.policy.keyed:
            continue
        first = tx.policy.unit_path[0]
        if x.name != first.via:
            continue
        if ty.policy.qualified == first.table and y.name == first.column:
            return x.table, y.table
        other = ty.policy.unit_path[0] if ty.policy.keyed else None
        if other is not None and y.name == other.via and (other.table, other.column) == (first.table, first.column):
            return x.table, y.table
    return None




def expand(tree: exp.Expression, catalog: Catalog) -> exp.Expression:
    """``tree`` (changed in place) with every reference to a keyed table replaced by the inner join
    along its key path that carries the unit as ``__dp_unit`` (module docstring), under the same
    alias. Table references in the policy's logical names (``public.t``), before the physical
    mapping; a tree without keyed tables is returned unchanged."""
    for table in list(tree.find_all(exp.Table)):
        if table.args.get("db") is None or not isinstance(table.this, exp.Identifier):
            continue
        info = catalog.table(f"{table.db}.{table.name}")
        if info is None or not info.policy.keyed:
            continue
        alias = table.alias_or_name
        table.replace(_path_join(info, catalog).subquery(exp.to_identifier(alias, quoted=True), copy=False))
    return tree


def _table(tp: TablePolicy, alias: str) -> exp.Table:
    return exp.Table(
        this=exp.to_identifier(tp.table, quoted=True),
        db=exp.to_identifier(tp.schema, quoted=True),
        alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)),
    )


def _path_join(info: TableInfo, catalog: Catalog) -> exp.Select:
    tp = info.policy
    k = "__dp_k"
    last = f"__dp_r{len(tp.unit_path)}"
    select = (
        exp.select(*[exp.column(c.name, table=k, quoted=True) for c in info.columns], copy=False)
        .select(exp.alias_(exp.column(tp.unit_root or "", table=last, quoted=True), KEYED_UNIT, quoted=True, copy=False), copy=False)
        .from_(_table(tp, k), copy=False)
    )
    prev = k
    for i, step in enumerate(tp.unit_path, 1):
        ref = catalog.table(step.table)
        assert ref is not None
        here = f"__dp_r{i}"
        on = exp.EQ(this=exp.column(step.via, table=prev, quoted=True), expression=exp.column(step.column, table=here, quoted=True))
        select = select.join(_table(ref.policy, here), on=on, copy=False)
        prev = here
    return select
