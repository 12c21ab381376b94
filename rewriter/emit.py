"""Pass 9: emit SQL for the target engine and check that it is a fixed point of parse → generate (R11).

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
    """SQL text for ``dialect``; guaranteed to re-parse into a tree that generates the same text.

    ``tree`` is consumed (generation may transform it in place); pass a copy if you keep it.
    """
    engine = Dialect.get_or_raise(dialect)
    text = engine.generate(tree, copy=False, comments=False)
    try:
        again = sqlglot.parse_one(text, read=dialect)
    except ParseError:
        raise RewriteInvariantError("internal error: the rewritten SQL does not parse; the query was refused") from None
    if engine.generate(again, copy=False, comments=False) != text:
        raise RewriteInvariantError("internal error: the rewritten SQL is not a fixed point; the query was refused")
    return text
