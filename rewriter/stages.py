"""Staged releases: a DP subquery whose released keys restrict an outer DP query.

Superset's series limit and the analyst's top-k filter ::

    SELECT diagnosis, COUNT(*) FROM visits
      JOIN (SELECT diagnosis AS diagnosis__, COUNT(*) AS mme_inner__ FROM visits
            GROUP BY diagnosis ORDER BY COUNT(*) DESC LIMIT 5) AS series_limit ON diagnosis = diagnosis__
     GROUP BY diagnosis

    SELECT diagnosis, AVG(cost) FROM visits
     WHERE diagnosis IN (SELECT diagnosis FROM visits GROUP BY diagnosis ORDER BY COUNT(*) DESC LIMIT 5)
     GROUP BY diagnosis

are answered as two releases, exactly as if the analyst ran them by hand:

1. **stage 1**, the subquery, released on its own (its keys are DP: its ORDER BY/LIMIT act on noisy
   values, and keys without declared values go through partition selection);
2. **stage 2**, the outer query with the join (or the IN) replaced by ``k IN (<stage-1 keys>)`` and,
   for this statement, those keys declared as the key column's public values — so every one of them
   is released (absent ones with a noisy zero) and no second partition selection runs.

Both are charged together before any row is read, each at half the statement's ε and δ (basic
composition: the pair is (ε, δ)-DP; stage 2 chooses its keys from stage 1's output, which adaptive
composition allows). Stage 2's cost is known before stage 1 runs: it is calibrated on a stand-in key
set of the largest size stage 1 can release (its LIMIT), and a smaller real key set only lowers the
sensitivity (L0 = min(max_groups, number of keys)).

This module is pure: it recognises the shapes (:func:`split`) and writes stage 2 for a key set
(:func:`stage2_sql`, :func:`declared`).

>>> from sqlglot import parse_one
>>> s = split(parse_one("SELECT d, COUNT(*) FROM t WHERE d IN (SELECT d FROM t GROUP BY d ORDER BY COUNT(*) DESC LIMIT 2) "
...                     "GROUP BY d", read="postgres"), lambda n: n == "t")
>>> s.stage1, s.limit, s.key_names
('SELECT d FROM t GROUP BY d ORDER BY COUNT(*) DESC LIMIT 2', 2, ('d',))
>>> stage2_sql(s, [("a",), ("b",)])
"SELECT d, COUNT(*) FROM t WHERE d IN ('a', 'b') GROUP BY d"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sqlglot import exp

from dpsql.errors import UnsupportedQuery
from dpsql.schema import Catalog

__all__ = ["Staged", "declared", "split", "stage2_sql"]

_MARK = "__dp_stage_keys"


@dataclass(frozen=True)
class Staged:
    """A two-stage query: ``stage1`` (PostgreSQL text) releases keys; ``outer`` is stage 2 with the
    marker condition where ``outer_columns IN (<keys>)`` goes; ``key_names`` are the stage-1 output
    columns holding the keys (in the order of ``outer_columns``); ``limit`` bounds their number."""

    stage1: str
    outer: exp.Select
    outer_columns: tuple[exp.Column, ...]
    key_names: tuple[str, ...]
    limit: int | None


def split(tree: exp.Expression, is_private: Callable[[str], bool]) -> Staged | None:
    """The stages of ``tree``, or None when it is not a staged shape. Shapes: one INNER JOIN of the
    private table with an aggregated subquery over a private table ``ON`` equalities of outer
    columns and subquery outputs; or a top-level ``WHERE … col IN (aggregated subquery)``. Refuses
    (0A000) a staged shape whose outer query does not group by the key columns."""
    if not isinstance(tree, exp.Select) or tree.args.get("with_") is not None:
        return None
    staged = _join_shape(tree, is_private) or _in_shape(tree, is_private)
    if staged is None:
        return None
    group = staged.outer.args.get("group")
    grouped = {g.name.lower() for g in (group.expressions if group is not None else []) if isinstance(g, exp.Column)}
    grouped |= {p.alias.lower() for p in staged.outer.expressions if isinstance(p, exp.Alias)
                and isinstance(p.this, exp.Column) and p.this.name.lower() in grouped}
    for col in staged.outer_columns:
        if col.name.lower() not in grouped:
            raise UnsupportedQuery(
                f"a staged release needs the outer query grouped by {col.sql(dialect='postgres')}",
                hint="add it to GROUP BY, or run the subquery first and filter with its released keys",
            )
    return staged


def stage2_sql(staged: Staged, keys: Sequence[tuple[object, ...]]) -> str:
    """Stage 2 as PostgreSQL text, its key columns restricted to ``keys`` (non-empty tuples of
    released values, one per key column)."""
    if not keys:
        raise ValueError("stage 2 needs at least one key")
    cols = [c.copy() for c in staged.outer_columns]
    target: exp.Expression = cols[0] if len(cols) == 1 else exp.Tuple(expressions=cols)
    values = [_literal(k[0]) if len(cols) == 1 else exp.Tuple(expressions=[_literal(v) for v in k]) for k in keys]
    condition = exp.In(this=target, expressions=values)

    def fill(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder) and node.this == _MARK:
            return condition.copy()
        return node

    return staged.outer.copy().transform(fill).sql(dialect="postgres")


def declared(catalog: Catalog, staged: Staged, keys: Sequence[tuple[object, ...]]) -> Catalog:
    """``catalog`` with each key column of the private table declaring ``keys``' values as its
    public values, for stage 2 only (the stage-1 release made them public)."""
    tables = dict(catalog.tables)
    for i, col in enumerate(staged.outer_columns):
        values = tuple(dict.fromkeys(k[i] for k in keys))
        for key, info in catalog.tables.items():
            tp = info.policy
            if tp.public or col.name.lower() not in tp.columns:
                continue
            if col.table and col.table.lower() not in (tp.table.lower(), *_aliases(staged.outer, tp.table)):
                continue
            columns = dict(tp.columns)
            columns[col.name.lower()] = replace(columns[col.name.lower()], values=values)
            tables[key] = replace(info, policy=replace(tp, columns=columns))
    return Catalog(catalog.policy, tables)


# ------------------------------------------------------------------------------------------ internals


def _aliases(tree: exp.Select, table: str) -> tuple[str, ...]:
    return tuple(t.alias.lower() for t in tree.find_all(exp.Table) if t.name.lower() == table.lower() and t.alias)


def _literal(v: object) -> exp.Expression:
    if isinstance(v, bool):
        return exp.Boolean(this=v)
    if isinstance(v, int | float):
        return exp.Literal.number(v)
    return exp.Literal.string(str(v))


def _aggregated_private(body: exp.Expression | None, is_private: Callable[[str], bool]) -> bool:
    if not isinstance(body, exp.Select):
        return False
    aggregated = body.args.get("group") is not None or body.args.get("distinct") is not None or any(
        p.find(exp.AggFunc) is not None for p in body.expressions)
    return aggregated and any(is_private(t.name) for t in body.find_all(exp.Table))


def _limit(body: exp.Select) -> int | None:
    limit = body.args.get("limit")
    value = limit.expression if isinstance(limit, exp.Limit) else None
    if isinstance(value, exp.Literal) and not value.is_string and value.name.isdigit():
        return int(value.name)
    return None


def _join_shape(tree: exp.Select, is_private: Callable[[str], bool]) -> Staged | None:
    joins = tree.args.get("joins") or []
    if len(joins) != 1:
        return None
    join = joins[0]
    sub = join.this
    if not isinstance(sub, exp.Subquery) or not _aggregated_private(sub.this, is_private):
        return None
    if join.args.get("side") or join.args.get("kind") not in (None, "INNER") or join.args.get("using"):
        raise UnsupportedQuery(
            "a staged release needs an inner JOIN … ON equalities with the aggregated subquery",
            hint="write JOIN (SELECT k AS k__ … LIMIT n) AS s ON k = k__",
        )
    body: exp.Select = sub.this
    alias = sub.alias.lower()
    outputs = {p.alias_or_name.lower(): p for p in body.expressions}
    outer_cols: list[exp.Column] = []
    key_names: list[str] = []
    on = join.args.get("on")
    conjuncts = list(on.flatten()) if isinstance(on, exp.And) else [on]
    for cond in conjuncts:
        if not isinstance(cond, exp.EQ) or not all(isinstance(s, exp.Column) for s in (cond.this, cond.expression)):
            raise UnsupportedQuery(
                f"a staged release joins only on equalities of columns, not {cond.sql(dialect='postgres') if cond else 'nothing'}",
                hint="write ON k = k__ for each key column",
            )
        a, b = cond.this, cond.expression
        inner, outer = (a, b) if _is_output(a, alias, outputs) else (b, a) if _is_output(b, alias, outputs) else (None, None)
        if inner is None or outer is None or _is_output(outer, alias, outputs):
            raise UnsupportedQuery(
                f"the join condition {cond.sql(dialect='postgres')} must equate an outer column with a column of the subquery",
                hint="write ON k = k__ for each key column",
            )
        outer_cols.append(outer)
        key_names.append(inner.name.lower())
    outer = tree.copy()
    outer.set("joins", None)
    marker = exp.Placeholder(this=_MARK)
    where = outer.args.get("where")
    outer.set("where", exp.Where(this=marker if where is None else exp.and_(where.this, marker)))
    for col in outer.find_all(exp.Column):
        if col.table.lower() == alias or (not col.table and col.name.lower() in outputs and col.name.lower() not in
                                          {c.name.lower() for c in outer_cols}):
            raise UnsupportedQuery(
                f"the outer query reads {col.sql(dialect='postgres')} of the joined DP result",
                hint="a staged release uses the subquery only to choose keys; select its values in a query of their own",
            )
    return Staged(body.sql(dialect="postgres"), outer, tuple(outer_cols), tuple(key_names), _limit(body))


def _is_output(col: exp.Column, alias: str, outputs: dict[str, exp.Expression]) -> bool:
    if col.table:
        return col.table.lower() == alias
    return col.name.lower() in outputs


def _in_shape(tree: exp.Select, is_private: Callable[[str], bool]) -> Staged | None:
    where = tree.args.get("where")
    if where is None or tree.args.get("joins"):
        return None
    conjuncts = list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    found = [c for c in conjuncts if isinstance(c, exp.In) and isinstance(c.args.get("query"), exp.Subquery | exp.Select)]
    if len(found) != 1:
        return None
    cond = found[0]
    query = cond.args["query"]
    body = query.this if isinstance(query, exp.Subquery) else query
    if not _aggregated_private(body, is_private):
        return None
    targets = cond.this.expressions if isinstance(cond.this, exp.Tuple) else [cond.this]
    if not all(isinstance(t, exp.Column) for t in targets) or len(body.expressions) != len(targets):
        raise UnsupportedQuery("a staged release filters columns IN (a subquery selecting as many columns)",
                               hint="write col IN (SELECT col FROM … GROUP BY col ORDER BY … LIMIT n)")
    outer = tree.copy()
    marker = exp.Placeholder(this=_MARK)
    rest = [c.copy() for c in conjuncts if c is not cond]
    outer.set("where", exp.Where(this=exp.and_(*rest, marker) if rest else marker))
    names = tuple(p.alias_or_name.lower() for p in body.expressions)
    return Staged(body.sql(dialect="postgres"), outer, tuple(t.copy() for t in targets), names, _limit(body))
