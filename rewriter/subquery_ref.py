"""The stand-in for an expression subquery between pass 6c (``subqueries``) and pass 10 (``contribution``).

Pass 6c checks each ``IN (SELECT …)``, ``EXISTS (…)`` and scalar subquery and replaces it by a
reference (an ``exp.Anonymous`` call ``__dp_subquery(i, <outer columns>)``; sqlglot's compiled
node classes cannot be subclassed), so that passes 7–10 see only the outer query's row-level
expressions: the reference carries the outer columns the body reads (so the private sides keep
them) and the type family of its value (so ``typecheck`` compares the operands of ``x IN (…)`` and
``x > (…)``). Pass 10 puts the checked, totalized bodies back (:func:`dpsql.rewriter.subqueries.restore`).

>>> from sqlglot import exp
>>> ref = make_ref(0, [exp.column("d", table="v")], "text")
>>> ref.sql(), ref_family(ref), ref_index(ref)
('__DP_SUBQUERY(0, v.d)', 'text', 0)
"""

from __future__ import annotations

from sqlglot import exp

NAME = "__dp_subquery"


def make_ref(index: int, columns: list[exp.Expression], family: str) -> exp.Anonymous:
    """A reference to subquery ``index`` reading the outer ``columns``, of type family ``family``."""
    ref = exp.Anonymous(this=NAME, expressions=[exp.Literal.number(index), *(c.copy() for c in columns)])
    ref.meta["family"] = family
    return ref


def is_ref(node: exp.Expression) -> bool:
    """True for a reference made by :func:`make_ref`."""
    return isinstance(node, exp.Anonymous) and node.name == NAME


def ref_index(node: exp.Expression) -> int:
    """The subquery's position in the statement's list of subqueries."""
    return int(node.expressions[0].name)


def ref_family(node: exp.Expression) -> str | None:
    """The type family of a reference (None for any other node)."""
    return str(node.meta.get("family", "unknown")) if is_ref(node) else None
