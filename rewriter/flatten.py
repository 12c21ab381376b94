"""Pass 6 (``flatten``): merge row-level CTEs and derived tables into the outer query (sqlglot's own passes).

A FROM subquery or CTE over a private table is allowed only when it is row-level: no aggregation,
window, DISTINCT, ORDER BY or LIMIT. Such subqueries merge into the outer SELECT, so that every
aggregate input becomes an expression over base-table columns whose bounds the policy declares.
Whatever cannot be merged and still reads a private table is refused with the reason.

>>> from sqlglot import parse_one
>>> q = parse_one('WITH v AS (SELECT t.x * 2 AS y FROM t AS t WHERE t.x > 1) SELECT SUM(v.y) AS s FROM v AS v')
>>> flatten(q, {"t"}).sql()
'SELECT SUM(t.x * 2) AS s FROM t AS t WHERE t.x > 1'
"""

from __future__ import annotations

from collections.abc import Set

from sqlglot import exp
from sqlglot.optimizer.eliminate_ctes import eliminate_ctes
from sqlglot.optimizer.eliminate_subqueries import eliminate_subqueries
from sqlglot.optimizer.merge_subqueries import merge_subqueries

from dpsql.errors import PrivacyViolation, UnsupportedQuery


def flatten(tree: exp.Expression, private_tables: Set[str]) -> exp.Expression:
    """Merge mergeable subqueries/CTEs; refuse any remaining one that reads a private table.

    ``private_tables`` holds the lower-case names of private base tables. The result's FROM and
    JOINs reference base tables, or subqueries/CTEs over public tables only.
    """
    merged = eliminate_ctes(merge_subqueries(_inline_shared_ctes(eliminate_subqueries(tree), private_tables)))
    with_ = merged.args.get("with_")
    ctes = list(with_.expressions) if isinstance(with_, exp.With) else []
    private_ctes: set[str] = set()
    for cte in ctes:
        body = cte.this
        if _reads(body, private_tables | private_ctes):
            private_ctes.add(cte.alias_or_name)
            _refuse_unmergeable(body)
    for src in [merged.args.get("from_"), *(merged.args.get("joins") or [])]:
        node = src.this if src is not None else None
        if isinstance(node, exp.Subquery) and _reads(node, private_tables):
            raise UnsupportedQuery(
                "this subquery over a private table cannot be merged into the outer query",
                hint="for the inner side of an outer join, move the subquery's WHERE into the join's ON condition",
            )
    if private_ctes:
        refs = [t for t in merged.find_all(exp.Table) if t.name in private_ctes]
        if len(refs) > 1:
            raise UnsupportedQuery(
                "joins between private tables are not supported yet",
                hint="query one private table at a time, joined only with public tables",
            )
        raise UnsupportedQuery(
            "this subquery over a private table cannot be merged into the outer query",
            hint="write it as a plain row-level subquery (no aggregation, DISTINCT, ORDER BY or LIMIT) joined only to public tables",
        )
    return merged


def _inline_shared_ctes(tree: exp.Expression, private_tables: Set[str]) -> exp.Expression:
    """A row-level CTE over a private table referenced more than once (a self-join on the unit)
    becomes one derived table per reference, which ``merge_subqueries`` then merges; sqlglot
    merges only CTEs used once. Anything else is left for the checks below."""
    with_ = tree.args.get("with_")
    if not isinstance(with_, exp.With) or with_.recursive:
        return tree
    for cte in list(with_.expressions):
        name, body = cte.alias_or_name, cte.this
        refs = [t for t in tree.find_all(exp.Table) if t.name == name and not t.args.get("db")]
        if len(refs) < 2 or not _reads(body, private_tables) or not _row_level(body):
            continue
        for ref in refs:
            sub = exp.Subquery(this=body.copy(), alias=exp.TableAlias(this=exp.to_identifier(ref.alias_or_name)))
            ref.replace(sub)
        cte.pop()
    if not with_.expressions:
        tree.set("with_", None)
    return tree


def _row_level(body: exp.Expression) -> bool:
    return isinstance(body, exp.Select) and not any(
        body.args.get(a) is not None for a in ("limit", "offset", "distinct", "order", "group", "having")
    ) and body.find(exp.AggFunc, exp.Window) is None


def _reads(node: exp.Expression, names: Set[str]) -> bool:
    return any(t.name in names for t in node.find_all(exp.Table))


def _refuse_unmergeable(body: exp.Expression) -> None:
    if not isinstance(body, exp.Select):
        raise UnsupportedQuery("set operations over private tables are not supported", hint="run the queries separately")
    if body.args.get("limit") is not None or body.args.get("offset") is not None:
        raise PrivacyViolation(
            "LIMIT/OFFSET before aggregation would pick individual rows",
            hint="apply LIMIT to the aggregated result instead",
        )
    if body.args.get("distinct") is not None:
        raise PrivacyViolation(
            "DISTINCT before aggregation is not allowed", hint="use GROUP BY in the outer query or COUNT(DISTINCT <privacy unit>)"
        )
    if body.args.get("order") is not None:
        raise PrivacyViolation("ORDER BY before aggregation is not allowed", hint="order the aggregated result instead")
    if body.args.get("group") is not None or body.find(exp.AggFunc) is not None:
        raise UnsupportedQuery(
            "aggregation inside a subquery over a private table is not supported",
            hint="aggregate once, in the outermost query",
        )
