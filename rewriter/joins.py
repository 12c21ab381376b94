"""Joins between private tables on the privacy unit (part of pass 6b, ``unit_paths``, and pass 10).

DESIGN §1: private tables join each other only on the privacy unit. :func:`private_join` checks
that every private table after the first is joined (INNER, LEFT, RIGHT or FULL; ``ON`` or
``USING``, which ``qualify`` has turned into ``ON``) by a top-level conjunct
``new.unit = earlier.unit`` with an earlier private table. By induction over the join order, every
joined row then holds parts of **one** unit only: a new table's row meets an earlier part only when
the condition holds, and it holds only when both units are equal and non-NULL. So the joined
relation is a relation of units like any private table: its rows of unit ``u`` are a function of
``u``'s rows alone (in every private table), and the contribution bounding of pass 10 — applied
*after* the join, per (unit, group) over ``COALESCE`` of the sides' unit columns — bounds what one
unit changes by the same policy constants as for one table.

Fan-out: a unit with n rows in A and m in B has n·m joined rows. Bounding after the join keeps the
sensitivity, but the engine's work per unit would grow with n·m (DESIGN §1, side channels: per-row
cost bounded by the query text). :func:`cap_private_sides` therefore keeps at most
``max_rows·max_groups`` rows per unit of each private side *before* the join (that table's own
policy constants), the rows chosen by a salted hash of the unit and the row's columns used by the
query — a function of that unit's own rows — so a unit's joined rows are at most the product of
those constants, whatever the data.

>>> from sqlglot import parse_one
>>> q = parse_one('SELECT 1 FROM visits AS v JOIN patients AS p ON v.pid = p.pid AND p.x > 1')
>>> [(s.alias, s.kind) for s in private_join(q, {"v": "pid", "p": "pid"})]
[('v', ''), ('p', 'INNER')]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from sqlglot import exp

from dpsql.errors import UnsupportedQuery
from dpsql.schema import TableInfo

__all__ = ["PrivateSide", "cap_private_sides", "joined_info", "private_join", "unit_expression"]

ROW_NUMBER = "__dp_rn"


@dataclass(frozen=True)
class PrivateSide:
    """One private table of the join: its alias, unit column and join kind (``""`` for the first)."""

    alias: str
    unit: str
    kind: str  # "", "INNER", "LEFT", "RIGHT" or "FULL"


def private_join(select: exp.Select, units: Mapping[str, str]) -> list[PrivateSide]:
    """The private sides of ``select``'s FROM/JOINs in join order, checked to join on the unit.

    ``units`` maps each private alias to its privacy-unit column. Raises UnsupportedQuery (0A000,
    naming the tables and the construct) when a private table after the first is not joined by an
    equality of its unit with an earlier private table's unit (a top-level ``AND`` conjunct), or is
    joined by a comma/CROSS JOIN, LATERAL or a join method other than INNER/LEFT/RIGHT/FULL.
    """
    sides: list[PrivateSide] = []
    from_ = select.args.get("from_")
    sources: list[tuple[exp.Expression, exp.Join | None]] = []
    if from_ is not None:
        sources.append((from_.this, None))
    sources.extend((j.this, j) for j in select.args.get("joins") or [])
    for node, join in sources:
        alias = node.alias_or_name if isinstance(node, exp.Table) else None
        if alias is None or alias not in units:
            continue
        if not sides:
            sides.append(PrivateSide(alias, units[alias], ""))
            continue
        assert join is not None
        kind = (join.side or "").upper() or "INNER"
        if (join.kind or "").upper() not in ("", "INNER", "OUTER") or join.args.get("method"):
            raise _refusal(sides, alias, f"{join.kind or join.args.get('method')} JOIN", units[alias])
        on = join.args.get("on")
        if on is None:
            raise _refusal(sides, alias, "a join without ON or USING (CROSS JOIN or a comma)", units[alias])
        earlier = {s.alias: s.unit for s in sides}
        if not any(_unit_equality(c, alias, units[alias], earlier) for c in conjuncts(on)):
            raise _refusal(sides, alias, f"the join condition {on.sql('postgres').replace(chr(34), '')}", units[alias])
        sides.append(PrivateSide(alias, units[alias], kind))
    return sides


def _refusal(sides: list[PrivateSide], alias: str, construct: str, unit: str) -> UnsupportedQuery:
    first = sides[0]
    return UnsupportedQuery(
        f"private tables {', '.join(s.alias for s in sides)} and {alias} are joined by {construct}: private tables may "
        "join each other only on their privacy unit",
        hint=f"join on the privacy unit, e.g. ON {alias}.{unit} = {first.alias}.{first.unit} (or USING), "
        "adding any other condition with AND",
    )


def conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    """The top-level AND conjuncts of a condition (parentheses looked through; none for None)."""
    while isinstance(node, exp.Paren):
        node = node.this
    if node is None:
        return []
    if isinstance(node, exp.And):
        return [*conjuncts(node.this), *conjuncts(node.expression)]
    return [node]


def _unit_equality(cond: exp.Expression, alias: str, unit: str, earlier: Mapping[str, str]) -> bool:
    """``alias.unit = e.unit_e`` (either order) for an earlier private alias ``e``."""
    if not isinstance(cond, exp.EQ):
        return False
    left, right = cond.this, cond.expression
    if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
        return False
    for a, b in ((left, right), (right, left)):
        if a.table == alias and a.name == unit and b.table in earlier and b.table != alias and b.name == earlier[b.table]:
            return True
    return False


def unit_expression(sides: list[PrivateSide]) -> exp.Expression:
    """The joined row's unit: ``COALESCE`` of every side's unit column (all non-NULL ones are equal)."""
    cols = [exp.column(s.unit, table=s.alias, quoted=True) for s in sides]
    if len(cols) == 1:
        return cols[0]
    return exp.Coalesce(this=cols[0], expressions=cols[1:])


def unit_always_from_first(sides: list[PrivateSide]) -> bool:
    """True when every surviving joined row has the first side's unit non-NULL (no later private
    side is RIGHT or FULL joined): then ``COUNT(DISTINCT first.unit)`` counts the row's units."""
    return all(s.kind in ("", "INNER", "LEFT") for s in sides)


def joined_info(infos: list[TableInfo]) -> TableInfo:
    """The bounding constants of the joined relation: the first table's policy with the largest
    ``max_rows`` and ``max_groups`` of the joined tables (any policy constants applied after the
    join give a sensitivity that follows from the policy; the largest keeps what each table allows)."""
    first = infos[0]
    if len(infos) == 1:
        return first
    policy = dataclasses.replace(
        first.policy,
        max_rows=max(i.policy.max_rows for i in infos),
        max_groups=max(i.policy.max_groups for i in infos),
    )
    return dataclasses.replace(first, policy=policy, unit_unique=False)


def side_cap(info: TableInfo) -> int:
    """Rows per unit one private side keeps before a join: ``max_rows·max_groups`` of its own policy
    (what one unit may contribute to one query over that table alone)."""
    return info.policy.max_rows * info.policy.max_groups


def cap_private_sides(
    select: exp.Select, sides: list[PrivateSide], infos: Mapping[str, TableInfo], salt: str
) -> exp.Select:
    """``select`` with each private side's table replaced by a subquery keeping at most
    :func:`side_cap` rows per unit (non-NULL units only), chosen by ``ROW_NUMBER()`` over the unit
    in the order of ``MD5`` of (unit, the columns the query reads of that side, ``salt``): rows
    equal in those columns are interchangeable, so which rows a unit keeps is a function of its own
    rows. Only for joins of two or more private sides; the aliases and column names are unchanged."""
    if len(sides) < 2:
        return select
    out = select.copy()
    used: dict[str, list[str]] = {s.alias: [] for s in sides}
    for col in out.find_all(exp.Column):
        names = used.get(col.table)
        if names is not None and col.name not in names:
            names.append(col.name)
    sources = [out.args.get("from_"), *(out.args.get("joins") or [])]
    for src in sources:
        node = src.this if src is not None else None
        if not isinstance(node, exp.Table) or node.alias_or_name not in used:
            continue
        side = next(s for s in sides if s.alias == node.alias_or_name)
        cols = sorted(set(used[side.alias]) | {side.unit})  # the unit first in the hash, not again
        src.set("this", _capped(node, side, cols, side_cap(infos[side.alias]), salt))
    return out


def _capped(table: exp.Table, side: PrivateSide, cols: list[str], cap: int, salt: str) -> exp.Subquery:
    alias = side.alias
    base = table.copy()
    unit = exp.column(side.unit, table=alias, quoted=True)
    sep = exp.Literal.string("\x1f")
    parts: list[exp.Expression] = [exp.Cast(this=unit.copy(), to=exp.DataType.build("TEXT"))]
    for c in (c for c in cols if c != side.unit):
        text = exp.DPipe(
            this=exp.Literal.string("+"),
            expression=exp.Cast(this=exp.column(c, table=alias, quoted=True), to=exp.DataType.build("TEXT")),
        )
        parts.append(exp.Coalesce(this=text, expressions=[exp.Literal.string("-")]))
    parts.append(exp.Literal.string(salt))
    order = exp.Anonymous(this="MD5", expressions=[exp.Anonymous(this="CONCAT_WS", expressions=[sep, *parts])])
    rank = exp.Window(this=exp.RowNumber(), partition_by=[unit.copy()], order=exp.Order(expressions=[exp.Ordered(this=order)]))
    inner = (
        exp.select(*[exp.column(c, table=alias, quoted=True) for c in cols], copy=False)
        .select(exp.alias_(rank, ROW_NUMBER, quoted=True, copy=False), copy=False)
        .from_(base, copy=False)
        .where(unit.copy().is_(exp.null()).not_(), copy=False)
    )
    ranked = inner.subquery(exp.to_identifier(alias, quoted=True), copy=False)
    kept = (
        exp.select(*[exp.column(c, table=alias, quoted=True) for c in cols], copy=False)
        .from_(ranked, copy=False)
        .where(exp.LTE(this=exp.column(ROW_NUMBER, table=alias, quoted=True), expression=exp.Literal.number(cap)), copy=False)
    )
    return kept.subquery(exp.to_identifier(alias, quoted=True), copy=False)
