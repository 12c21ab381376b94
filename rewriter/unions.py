"""Set operations of DP queries: ``UNION [ALL]``, ``INTERSECT``, ``EXCEPT`` as post-processing.

``SELECT 'all', COUNT(*) FROM visits UNION ALL SELECT department, COUNT(*) FROM visits GROUP BY 1``
is answered as one release per branch — each branch rewritten on its own, exactly as if it were
sent alone, at an equal share ε/k, δ/k of the statement's budget (k private branches; basic
composition: the k releases together are (ε, δ)-DP) — followed by the set operation over the
branches' released rows, which is post-processing (Dwork–Roth Prop. 2.1) and runs in the data-free
post-processor. The whole statement is charged once, before any branch reads a row.

This module is pure: it splits the statement (:func:`split`) and builds the post-processing query
over the released rows (:func:`combine_sql`, over one table ``__dp_noisy`` whose column
``__dp_branch`` says which branch a row came from).

>>> from sqlglot import parse_one
>>> u = split(parse_one("SELECT 1 AS a FROM t UNION ALL (SELECT 2 FROM t ORDER BY 1) ORDER BY a LIMIT 5", read="postgres"))
>>> u.branches
('SELECT 1 AS a FROM t', 'SELECT 2 FROM t ORDER BY 1')
>>> combine_sql(u, ["a"])
'SELECT c0 AS "a" FROM __dp_noisy WHERE __dp_branch = 0 UNION ALL SELECT c0 AS "a" FROM __dp_noisy WHERE __dp_branch = 1 ORDER BY a LIMIT 5'
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from dpsql.errors import DatatypeMismatch, UndefinedColumn, UnsupportedQuery
from dpsql.rewriter.post_query import NOISY_TABLE

__all__ = ["BRANCH_COLUMN", "UnionQuery", "combine_sql", "output_type", "split"]

BRANCH_COLUMN = "__dp_branch"
MAX_BRANCHES = 8  # each branch is a release of its own: the statement's ε is split among them
_NUMERIC = ("int2", "int4", "int8", "float4", "float8", "numeric")


@dataclass(frozen=True)
class UnionQuery:
    """A set operation over ``branches`` (each a complete query, PostgreSQL text); ``tree`` is the
    statement with branch ``i`` replaced by the placeholder ``__dp_branch_i``."""

    branches: tuple[str, ...]
    tree: exp.Expression


def split(tree: exp.Expression) -> UnionQuery | None:
    """The branches of a top-level set operation, or None when ``tree`` is not one. Refuses (0A000)
    more than :data:`MAX_BRANCHES` branches and a WITH clause shared by the branches."""
    if not isinstance(tree, exp.SetOperation):
        return None
    if tree.args.get("with_"):
        raise UnsupportedQuery("a WITH clause over a UNION is not supported", hint="put the WITH inside each branch")
    tree = tree.copy()
    branches: list[str] = []

    def take(node: exp.Expression) -> exp.Expression:
        inner = node.this if isinstance(node, exp.Subquery) and not node.args.get("alias") else node
        if isinstance(inner, exp.SetOperation):
            for side in ("this", "expression"):
                inner.set(side, take(inner.args[side]))
            return node
        branches.append(inner.sql(dialect="postgres"))
        return exp.Placeholder(this=f"__dp_branch_{len(branches) - 1}")

    for side in ("this", "expression"):
        tree.set(side, take(tree.args[side]))
    if len(branches) > MAX_BRANCHES:
        raise UnsupportedQuery(
            f"a set operation of {len(branches)} queries is more than the limit of {MAX_BRANCHES}",
            hint="run the queries separately (each one is a release of its own)",
        )
    return UnionQuery(tuple(branches), tree)


def output_type(branch_types: list[tuple[str, ...]]) -> tuple[str, ...]:
    """The PostgreSQL type of each output column of the set operation, from each branch's types:
    equal types stay; numeric ones widen to ``float8`` (``int8``/``numeric`` to ``numeric`` when no
    float is involved); anything else is refused (42804), as PostgreSQL refuses it."""
    widths = {len(t) for t in branch_types}
    if len(widths) != 1:
        raise UnsupportedQuery("each query of a UNION, INTERSECT or EXCEPT must return the same number of columns")
    out: list[str] = []
    for column in zip(*branch_types, strict=True):
        kinds = set(column)
        if len(kinds) == 1:
            out.append(column[0])
        elif kinds <= set(_NUMERIC):
            out.append("float8" if kinds & {"float4", "float8"} else "numeric" if "numeric" in kinds else "int8")
        else:
            a, b = sorted(kinds)[:2]
            raise DatatypeMismatch(f"UNION types {a} and {b} cannot be matched")
    return tuple(out)


def combine_sql(u: UnionQuery, names: list[str]) -> str:
    """The set operation over the released rows, DuckDB SQL over ``__dp_noisy(__dp_branch, c0, …)``;
    the output columns are called ``names`` (the first branch's, as in PostgreSQL)."""
    def leaf(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder) and str(node.this).startswith("__dp_branch_"):
            i = int(str(node.this).rsplit("_", 1)[1])
            return (
                exp.select(*[exp.alias_(exp.column(f"c{j}"), n, quoted=True) for j, n in enumerate(names)])
                .from_(NOISY_TABLE)
                .where(exp.EQ(this=exp.column(BRANCH_COLUMN), expression=exp.Literal.number(i)))
            )
        return node

    order = u.tree.args.get("order")
    lowered = {n.lower() for n in names}
    for item in order.expressions if order is not None else []:
        key = item.this if isinstance(item, exp.Ordered) else item
        if isinstance(key, exp.Column) and not key.table and key.name.lower() in lowered:
            continue
        if isinstance(key, exp.Literal) and not key.is_string and key.name.isdigit() and 1 <= int(key.name) <= len(names):
            continue
        raise UndefinedColumn(
            f'column "{key.sql(dialect="postgres")}" does not exist in the result of the set operation',
            hint="ORDER BY of a UNION, INTERSECT or EXCEPT can name only its output columns: " + ", ".join(names),
        )
    combined = u.tree.copy().transform(leaf)
    return combined.sql(dialect="duckdb")
