"""Simple query: one Query message, possibly several statements, answered in order until one fails.

A string may hold any number of statements the wire layer or the catalog answers but at most one
differentially private query: a string with more is refused before any statement runs (working
that out rewrites, which reads no data). Each statement gets its own result; the first error
ends the string and is followed by ReadyForQuery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dpsql.errors import DPSQLError, UnsupportedQuery
from dpsql.proxy.wire import messages as m
from dpsql.proxy.wire.driver import Drain, Handler, Offload
from dpsql.proxy.wire.portals import Portal, PreparedStatement, parse_declare
from dpsql.proxy.wire.results import _EMPTY, OUT_HIGH_WATER
from dpsql.proxy.wire.sqltext import check_length, lex

if TYPE_CHECKING:
    from dpsql.proxy.wire.connection import ServerContext


class SimpleQueryMixin:
    """The simple-query protocol of the connection."""

    ctx: ServerContext
    out: bytearray
    statements: dict[str, PreparedStatement]
    portals: dict[str, Portal]
    _error_context: tuple[str, int] | None

    def _simple_query(self, sql: str) -> Handler:
        self.statements.pop("", None)
        self.portals.pop("", None)
        try:
            check_length(sql, self.ctx.max_statement_bytes)
            stmts = lex(sql).statements
        except DPSQLError as e:
            self._error(e)
            self._ready()
            return
        if not stmts:
            self.out += m.EMPTY_QUERY
            self._ready()
            return
        candidates = self._query_statements(stmts) if len(stmts) > 1 else []
        if len(candidates) > 1:  # rewriting is pure but not instant: off the event loop
            private = yield Offload(lambda: self._private_statements(candidates))
            if len(private) > 1:
                self._error(UnsupportedQuery(
                    f"this query string holds {len(private)} differentially private queries; dpsql runs at most one "
                    "per simple-query message, and ran none of the statements",
                    hint="send each private query in its own message (one psql -c or driver call per query); SET, SHOW, "
                    "EXPLAIN and catalog statements may share a string with one query",
                ))
                self._ready()
                return
        search_from = 0
        for stmt in stmts:
            offset = sql.find(stmt, search_from)
            search_from = max(offset, 0) + len(stmt)
            self._error_context = (stmt, max(offset, 0))
            try:
                route = self._route(stmt)
                result = yield from self._run(route, ())
                if result is _EMPTY:
                    self.out += m.EMPTY_QUERY
                    continue
                binary = route.kind == "fetch" and result.command.startswith("FETCH") and getattr(result, "binary", False)
                yield from self._send_result(result, (1,) if binary else (), describe=True)
                if len(self.out) > OUT_HIGH_WATER:
                    yield Drain()
            except Exception as e:
                self._error(e)
                break
        self._ready()

    def _query_statements(self, stmts: Sequence[str]) -> list[str]:
        """The statements routed to the engine as queries or cursors (cheap: routing is cached)."""
        out = []
        for stmt in stmts:
            try:
                if self._route(stmt).kind in ("query", "declare"):
                    out.append(stmt)
            except Exception:  # it fails the same way when its turn comes
                continue
        return out

    def _private_statements(self, stmts: Sequence[str]) -> list[str]:
        """The statements of a multi-statement string that would be charged: queries (or cursors
        over queries) that read a private table. Reads no data (the rewrite is pure and cached); a
        statement that does not rewrite is not counted, as it will fail on its own when it runs."""
        out = []
        for stmt in stmts:
            try:
                route = self._route(stmt)
                if route.kind == "declare":
                    route = self._route(parse_declare(route.sql).query)
                if route.kind != "query":
                    continue
                command = route.command
                if command is not None and command.kind == "query" and self.ctx.engine.rewrite(command.query).plan is not None:
                    out.append(stmt)
            except Exception:  # it fails the same way when its turn comes
                continue
        return out
