"""Routing: how one statement is answered, decided once per statement text.

The wire layer answers transaction control, ``SET``/``SHOW``/``RESET`` of ordinary settings,
``DISCARD``, ``DEALLOCATE``, ``LISTEN``, ``CHECKPOINT`` and cursors itself; the engine answers
``SET/SHOW/RESET dp.*``, ``EXPLAIN`` and ``dpsql.budget``; statements the synthetic catalog
``handles`` go to it; everything else is a query for the engine session. The :class:`Route`
carries the engine's classification too, so no statement is classified twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dpsql.proxy.commands import Command, classify
from dpsql.proxy.wire.sqltext import command_words, identifier, tokens


@dataclass(frozen=True, slots=True)
class Route:
    """How one statement is answered: its classification, made once per statement text. ``kind`` is
    one of: empty, begin, commit, rollback, savepoint, release, rollback_to, set, reset, show,
    checkpoint, discard, deallocate, listen, unlisten, declare, fetch, close_cursor, engine_fast,
    engine_cmd, catalog, query. ``command`` is the engine's classification of the statement
    (:func:`~dpsql.proxy.commands.classify`) for the kinds the engine answers (engine_fast,
    engine_cmd, catalog, query); it is passed to :meth:`Session.execute`, which then does not
    classify again. ``arg`` is ``"default"`` for ``SET dp.x TO DEFAULT`` (a RESET with tag SET)."""

    kind: str
    sql: str
    arg: str = ""
    command: Command | None = None


_SET_DP_DEFAULT = re.compile(r"^\s*set\s+(?:session\s+|local\s+)?(dp\.[a-z_]+)\s*(?:=|\bto\b)\s*default\s*;?\s*$", re.I)


def _engine_fast(sql: str) -> Route:
    """A ``SET/SHOW/RESET dp.*`` for the engine; ``SET dp.x TO DEFAULT`` means ``RESET dp.x``."""
    m_default = _SET_DP_DEFAULT.match(sql)
    if m_default is not None:
        return Route("engine_fast", sql, "default", Command("reset", name=m_default.group(1).lower()))
    return Route("engine_fast", sql, command=classify(sql))


def route_statement(sql: str, catalog: Any) -> Route:
    """Classify one statement (no session state is read, so the answer can be cached by text)."""
    words = command_words(sql, 4)
    if not words:
        return Route("empty", sql)
    w0 = words[0]
    w1 = words[1] if len(words) > 1 else ""
    if w0 in ("begin", "start"):
        if w0 == "start" and w1 != "transaction":
            return Route("query", sql)
        return Route("begin", sql)
    if w0 in ("commit", "end"):
        return Route("query", sql) if w1 == "prepared" else Route("commit", sql)
    if w0 in ("rollback", "abort"):
        if w1 == "prepared":
            return Route("query", sql)
        rest = [w for w in words[1:] if w not in ("work", "transaction")]
        if rest and rest[0] == "to":
            toks = tokens(sql)
            name = toks[-1] if len(toks) > 2 else ""
            return Route("rollback_to", sql, identifier(name))
        return Route("rollback", sql)
    if w0 == "savepoint":
        toks = tokens(sql)
        return Route("savepoint", sql, identifier(toks[1]) if len(toks) > 1 else "")
    if w0 == "release":
        toks = tokens(sql)
        return Route("release", sql, identifier(toks[-1]) if len(toks) > 1 else "")
    if w0 in ("set", "show", "reset"):
        name_pos = 2 if w1 in ("session", "local") else 1
        name = words[name_pos] if len(words) > name_pos else ""
        if name.startswith("dp."):
            return _engine_fast(sql)
        return Route(w0, sql)
    if w0 == "checkpoint":
        return Route("checkpoint", sql)
    if w0 == "discard":
        return Route("discard", sql, w1)
    if w0 == "deallocate":
        toks = tokens(sql)
        return Route("deallocate", sql, identifier(toks[-1]) if len(toks) > 1 else "")
    if w0 in ("listen", "unlisten"):
        return Route(w0, sql)
    if w0 == "declare":
        return Route("declare", sql)
    if w0 in ("fetch", "move"):
        return Route("fetch", sql)
    if w0 == "close":
        toks = tokens(sql)
        return Route("close_cursor", sql, identifier(toks[-1]) if len(toks) > 1 else "")
    command = classify(sql)
    if command.kind in ("set", "reset", "show"):
        return _engine_fast(sql)
    if command.kind in ("explain", "budget"):
        return Route("engine_cmd", sql, command=command)
    if catalog is not None and catalog.handles(sql):
        return Route("catalog", sql, command=command)
    return Route("query", sql, command=command)
