"""Cursors: ``DECLARE … CURSOR``, ``FETCH``/``MOVE`` and ``CLOSE``.

A cursor's query runs once, when it is declared (that is when its DP cost is charged and its
NOTICE sent); FETCH and MOVE page through the materialised rows. Cursors without ``WITH HOLD``
live in a transaction block and end with it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from dpsql.errors import DuplicateCursor, InvalidCursorName, LimitExceeded, NoActiveTransaction, QuerySyntaxError
from dpsql.proxy.engine import Result
from dpsql.proxy.wire.driver import Request
from dpsql.proxy.wire.portals import Cursor, FetchCommand, fetch_rows, parse_declare, parse_fetch
from dpsql.proxy.wire.results import _FetchResult, _tag_only
from dpsql.proxy.wire.routing import Route
from dpsql.proxy.wire.transaction import TransactionStatus

MAX_CURSORS = 100  # open cursors per connection (each holds its materialised rows)


class CursorMixin:
    """The cursor commands of the connection."""

    txn: TransactionStatus
    txn_id: int
    cursors: dict[str, Cursor]
    cursor_txn: dict[str, int]

    def _declare(self, route: Route) -> Generator[Request, Any, Result]:
        cmd = parse_declare(route.sql)
        if self.txn == TransactionStatus.IDLE and not cmd.hold:
            raise NoActiveTransaction("DECLARE CURSOR can only be used in transaction blocks")
        if cmd.name in self.cursors:
            raise DuplicateCursor(f'cursor "{cmd.name}" already exists')
        if len(self.cursors) >= MAX_CURSORS:
            raise LimitExceeded(f"too many open cursors (at most {MAX_CURSORS} per connection)", hint="CLOSE cursors you no longer use")
        inner = self._route(cmd.query)
        if inner.kind not in ("query", "catalog", "engine_cmd", "show"):
            raise QuerySyntaxError("DECLARE CURSOR must be followed by a query")
        result = yield from self._run(inner, ())
        self.cursors[cmd.name] = Cursor(cmd.name, result, cmd.binary, cmd.hold, rows=list(result.rows))
        self.cursor_txn[cmd.name] = self.txn_id
        # A cursor's notices (the DP cost) are reported when it is declared: that is when it ran.
        self._send_notices(result)
        return _tag_only("DECLARE CURSOR")

    def _cursor(self, name: str) -> Cursor:
        cursor = self.cursors.get(name)
        if cursor is None:
            raise InvalidCursorName(f'cursor "{name}" does not exist')
        return cursor

    def _fetch(self, route: Route) -> Result:
        cmd: FetchCommand = parse_fetch(route.sql)
        cursor = self._cursor(cmd.cursor)
        rows = fetch_rows(cursor, cmd)
        if cmd.move:
            return _tag_only(f"MOVE {len(rows)}")
        r = _FetchResult(cursor.result.columns, cursor.result.types, rows, command=f"FETCH {len(rows)}")
        r.binary = cursor.binary
        return r

    def _close_cursor(self, route: Route) -> Result:
        if route.arg == "all":
            self.cursors.clear()
            self.cursor_txn.clear()
        else:
            self._cursor(route.arg)
            del self.cursors[route.arg]
            self.cursor_txn.pop(route.arg, None)
        return _tag_only("CLOSE CURSOR")
