"""Recognising the session commands the engine answers itself (DESIGN §3).

``SET/RESET/SHOW dp.*``, ``EXPLAIN <query>`` and queries over the ``dpsql.budget`` view are
answered by the engine; every other statement is a query for the rewriter. The wire server
handles the generic session commands (``SET search_path``, ``BEGIN`` …) before this.

>>> classify("SET dp.epsilon = 0.5;").kind, classify("set dp.epsilon to '0.5'").value
('set', '0.5')
>>> classify("EXPLAIN SELECT COUNT(*) FROM t").query
'SELECT COUNT(*) FROM t'
>>> classify("SELECT * FROM dpsql.budget").kind
'budget'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from dpsql.errors import UnsupportedQuery

_SET = re.compile(r"^set\s+(?:session\s+|local\s+)?(dp\.[a-z_]+)\s*(?:=|\bto\b)\s*(.+?)\s*$", re.I | re.S)
_RESET = re.compile(r"^reset\s+(dp\.[a-z_]+)\s*$", re.I)
_SHOW = re.compile(r"^show\s+(dp\.[a-z_]+)\s*$", re.I)
_EXPLAIN = re.compile(
    r"^explain\b\s*(\((?P<opts>[^)]*)\))?\s*(?P<flags>(?:(?:analy[sz]e|verbose|costs|buffers)\s+)*)(?P<query>.*)$", re.I | re.S
)
_BUDGET = re.compile(r"\bdpsql\s*\.\s*\"?budget\b", re.I)
_COMMENT = re.compile(r"^\s*(--[^\n]*\n|/\*.*?\*/)\s*", re.S)


@dataclass(frozen=True)
class Command:
    """A classified statement."""

    kind: Literal["set", "reset", "show", "explain", "budget", "query"]
    query: str = ""
    name: str = ""
    value: str = ""


def strip_statement(sql: str) -> str:
    """The statement without leading comments, surrounding blanks and trailing semicolons."""
    text = sql
    while True:
        m = _COMMENT.match(text)
        if not m:
            break
        text = text[m.end():]
    return text.strip().rstrip(";").strip()


def classify(sql: str) -> Command:
    """Classify one statement (see the module docstring)."""
    text = strip_statement(sql)
    if m := _SET.match(text):
        return Command("set", name=m.group(1).lower(), value=m.group(2).strip().strip("'\""))
    if m := _RESET.match(text):
        return Command("reset", name=m.group(1).lower())
    if m := _SHOW.match(text):
        return Command("show", name=m.group(1).lower())
    if m := _EXPLAIN.match(text):
        opts = (m.group("opts") or "") + " " + (m.group("flags") or "")
        if re.search(r"\banaly[sz]e\b(?!\s+(false|off|0)\b)", opts, re.I):
            raise UnsupportedQuery(
                "EXPLAIN ANALYZE would run the query; dpsql's EXPLAIN shows the plan, cost and noise without reading data",
                hint="use EXPLAIN without ANALYZE",
            )
        return Command("explain", query=m.group("query").strip())
    if _BUDGET.search(text):
        return Command("budget", query=text)
    return Command("query", query=text)


def rebound(command: Command, sql: str) -> Command:
    """``command`` for ``sql``, the statement it classified with its ``$n`` parameters substituted.
    The kind is kept — a parameter value never changes what a statement is (a ``'dpsql.budget'``
    value does not turn a query into a budget query) — and only the text the engine runs is taken
    from ``sql``."""
    if command.kind in ("query", "budget"):
        return Command(command.kind, query=strip_statement(sql))
    if command.kind == "explain" and (m := _EXPLAIN.match(strip_statement(sql))):
        return Command("explain", query=m.group("query").strip())
    return command
