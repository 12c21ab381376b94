"""Pass 12 (``emit``): emit SQL for the target engine and check that it is a fixed point of parse → generate (R11).

The client's text is never forwarded: only SQL regenerated from the rewritten tree runs, without
comments. Re-parsing the emitted text with the engine's dialect must give back a tree that emits
the same text; anything else (a parser differential) refuses the query.

>>> from sqlglot import parse_one
>>> emit(parse_one("SELECT COUNT(*) /* hi */ FROM t"), "duckdb")
'SELECT COUNT(*) FROM t'
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError

from dpsql.errors import DPSQLError


class RewriteInvariantError(DPSQLError):
    """The rewriter produced SQL that does not survive a round trip; the query is refused (XX000)."""

    sqlstate = "XX000"


def emit(tree: exp.Expression, dialect: str) -> str:
    """SQL text for ``dialect``; guaranteed to be a fixed point: it re-parses into a tree that
    generates the same text. Only that text is ever executed.

    sqlglot may normalise a construct on its first round trip (``x IS NOT NULL`` is generated from
    one tree shape and re-parsed as ``NOT x IS NULL``), so up to two round trips are taken; if the
    text still changes, the query is refused. ``tree`` is consumed (generation may transform it).
    """
    engine = Dialect.get_or_raise(dialect)
    text = engine.generate(tree, copy=False, comments=False)
    for _ in range(2):
        try:
            again = sqlglot.parse_one(text, read=dialect)
        except ParseError:
            raise RewriteInvariantError("internal error: the rewritten SQL does not parse; the query was refused") from None
        regenerated = engine.generate(again, copy=False, comments=False)
        if regenerated == text:
            return text
        text = regenerated
    raise RewriteInvariantError("internal error: the rewritten SQL is not a fixed point; the query was refused")
