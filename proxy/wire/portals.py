"""Prepared statements, portals and SQL cursors of one connection.

A :class:`Portal` holds the bound parameters and, once executed, the materialised result; later
Executes (row limits, PortalSuspended) page through those rows, so a DP query runs — and is
charged — once however the client fetches it. :class:`Cursor` does the same for
``DECLARE … CURSOR`` / ``FETCH`` (the ODBC/Tableau sequence).

>>> parse_fetch('fetch 100 in "SQL_CUR0x1"')
FetchCommand(move=False, kind='forward', count=100, cursor='SQL_CUR0x1')
>>> parse_declare('DECLARE c BINARY NO SCROLL CURSOR WITH HOLD FOR SELECT 1')
DeclareCommand(name='c', binary=True, hold=True, query='SELECT 1')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dpsql.errors import QuerySyntaxError
from dpsql.proxy.wire.sqltext import identifier, strip_leading, tokens


@dataclass
class Described:
    """Column names and PostgreSQL type names of a statement's result (None: no rows)."""

    names: tuple[str, ...]
    types: tuple[str, ...]


@dataclass
class PreparedStatement:
    """A parsed statement: its SQL, route and parameter types; Describe output cached once known."""

    sql: str
    route: Any  # connection.Route
    param_oids: tuple[int, ...]
    described: Described | None = None
    describe_done: bool = False


@dataclass
class Portal:
    """A bound statement, and its rows once executed."""

    statement: PreparedStatement
    params: tuple[Any, ...]
    result_formats: tuple[int, ...]
    result: Any = None  # engine.Result once executed
    position: int = 0
    done: bool = False
    described: Described | None = None


@dataclass
class Cursor:
    """A SQL cursor (DECLARE): materialised rows and a position."""

    name: str
    result: Any  # engine.Result
    binary: bool
    hold: bool
    position: int = 0
    rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class DeclareCommand:
    """``DECLARE name [BINARY] [[NO] SCROLL] [INSENSITIVE] CURSOR [WITH[OUT] HOLD] FOR query``."""

    name: str
    binary: bool
    hold: bool
    query: str


_DECLARE = re.compile(
    r"declare\s+(\"(?:[^\"]|\"\")+\"|[A-Za-z_][A-Za-z0-9_$]*)\s+((?:(?:binary|insensitive|asensitive|no\s+scroll|scroll)\s+)*)"
    r"cursor\s+(?:(with|without)\s+hold\s+)?for\s+(.*)$",
    re.I | re.S,
)


def parse_declare(sql: str) -> DeclareCommand:
    """Parse DECLARE; 42601 when malformed."""
    m = _DECLARE.match(strip_leading(sql).strip().rstrip(";"))
    if m is None:
        raise QuerySyntaxError("syntax error in DECLARE CURSOR", hint="DECLARE name [BINARY] CURSOR [WITH HOLD] FOR query")
    opts = m.group(2).lower()
    return DeclareCommand(identifier(m.group(1)), "binary" in opts, (m.group(3) or "").lower() == "with", m.group(4).strip())


@dataclass(frozen=True)
class FetchCommand:
    """``FETCH``/``MOVE``: ``kind`` is forward/backward (``count`` rows, None = ALL), absolute or
    relative (one row at ``count``)."""

    move: bool
    kind: str
    count: int | None
    cursor: str


def parse_fetch(sql: str) -> FetchCommand:
    """Parse FETCH or MOVE with PostgreSQL's directions; 42601 when malformed."""
    toks = tokens(strip_leading(sql))
    move = bool(toks) and toks[0].lower() == "move"
    what = "MOVE" if move else "FETCH"
    if len(toks) < 2:
        raise QuerySyntaxError(f"syntax error in {what}", hint=f"{what} [FORWARD] n|ALL FROM cursor")
    name_tok = toks[-1]
    words = [t.lower() for t in toks[1:-1]]
    if words and words[-1] in ("from", "in"):
        words = words[:-1]

    def number(i: int) -> int:
        try:
            return int(words[i])
        except (IndexError, ValueError):
            raise QuerySyntaxError(f"syntax error in {what}") from None

    simple = {
        (): ("forward", 1), ("next",): ("forward", 1), ("prior",): ("backward", 1), ("first",): ("absolute", 1),
        ("last",): ("absolute", -1), ("all",): ("forward", None), ("forward",): ("forward", 1),
        ("forward", "all"): ("forward", None), ("backward",): ("backward", 1), ("backward", "all"): ("backward", None),
    }
    key = tuple(words)
    if key in simple:
        kind, count = simple[key]
    elif len(words) == 2 and words[0] in ("absolute", "relative", "forward", "backward"):
        kind, count = words[0], number(1)
    elif len(words) == 1:
        kind, count = "forward", number(0)
    else:
        raise QuerySyntaxError(f"syntax error in {what}")
    if kind in ("forward", "backward") and count is not None and count < 0:
        kind, count = ("backward" if kind == "forward" else "forward"), -count
    return FetchCommand(move, kind, count, identifier(name_tok))


def fetch_rows(cursor: Cursor, cmd: FetchCommand) -> list[tuple[Any, ...]]:
    """Move ``cursor`` per ``cmd`` and return the rows fetched, with PostgreSQL's positions
    (0 is before the first row, 1..n on a row, n+1 after the last)."""
    rows = cursor.rows
    n = len(rows)
    p = cursor.position
    if cmd.kind in ("absolute", "relative"):
        assert cmd.count is not None
        target = (cmd.count if cmd.count >= 0 else n + 1 + cmd.count) if cmd.kind == "absolute" else p + cmd.count
        cursor.position = min(max(target, 0), n + 1)
        return [rows[cursor.position - 1]] if 1 <= cursor.position <= n else []
    if cmd.kind == "forward":
        count = n + 1 if cmd.count is None else cmd.count
        if count == 0:
            return [rows[p - 1]] if 1 <= p <= n else []
        end = p + count
        out = rows[p : min(end, n)] if p < n else []
        cursor.position = end if end <= n else n + 1
        return out
    count = n + 1 if cmd.count is None else cmd.count
    if count == 0:
        return [rows[p - 1]] if 1 <= p <= n else []
    low = p - count
    out = [rows[k - 1] for k in range(min(p - 1, n), max(low, 1) - 1, -1)]
    cursor.position = low if low >= 1 else 0
    return out
