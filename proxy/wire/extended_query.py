"""Extended query: Parse, Bind, Describe, Execute and Close of prepared statements and portals.

Parse routes the statement and infers its parameter types; Bind decodes the parameter values;
Describe plans and never executes a DP query or charges; Execute runs a portal's statement at
most once however many row-limited Executes page through its result. After an error the
connection skips messages until Sync (see :meth:`~dpsql.proxy.wire.connection.Connection.handle`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from dpsql.errors import (
    DPSQLError,
    DuplicateCursor,
    DuplicatePreparedStatement,
    InvalidCursorName,
    InvalidStatementName,
    LimitExceeded,
    ProtocolViolation,
    QuerySyntaxError,
)
from dpsql.proxy.wire import messages as m
from dpsql.proxy.wire import params as params_mod
from dpsql.proxy.wire import types as pgt
from dpsql.proxy.wire.driver import Handler, Offload, Request
from dpsql.proxy.wire.params import bind_sql, dummy_value, infer_param_types
from dpsql.proxy.wire.portals import Described, Portal, PreparedStatement, parse_fetch
from dpsql.proxy.wire.results import _EMPTY, _returns_rows
from dpsql.proxy.wire.routing import Route
from dpsql.proxy.wire.sqltext import check_length, command_words, lex

if TYPE_CHECKING:
    from dpsql.proxy.engine import Session
    from dpsql.proxy.session_info import SessionInfo
    from dpsql.proxy.wire.connection import ServerContext
    from dpsql.proxy.wire.gucs import Gucs

MAX_STATEMENTS = 10_000  # named prepared statements (and portals) per connection


class ExtendedQueryMixin:
    """The extended-query protocol of the connection."""

    ctx: ServerContext
    out: bytearray
    info: SessionInfo | None
    gucs: Gucs | None
    session: Session | None
    statements: dict[str, PreparedStatement]
    portals: dict[str, Portal]
    _error_context: tuple[str, int] | None

    def _parse(self, msg: m.Parse) -> None:
        if msg.name and msg.name in self.statements:
            raise DuplicatePreparedStatement(f'prepared statement "{msg.name}" already exists')
        if msg.name and len(self.statements) >= MAX_STATEMENTS:
            raise LimitExceeded(f"too many prepared statements (at most {MAX_STATEMENTS} per connection)",
                             hint="DEALLOCATE or Close statements you no longer use")
        check_length(msg.sql, self.ctx.max_statement_bytes)
        stmts = lex(msg.sql).statements
        if len(stmts) > 1:
            raise QuerySyntaxError("cannot insert multiple commands into a prepared statement")
        sql = stmts[0] if stmts else ""
        route = self._route(sql) if sql else Route("empty", "")
        self._check_aborted(route)
        if lex(msg.sql).placeholders or msg.param_oids:
            schema = self.ctx.engine.catalog if route.kind == "query" else None
            oids = infer_param_types(sql, msg.param_oids, schema)
            if route.kind == "catalog":
                oids = self._catalog_param_types(sql, msg.param_oids, oids)
        else:
            oids = ()
        self.statements[msg.name] = PreparedStatement(sql, route, oids)
        self.out += m.PARSE_COMPLETE

    def _catalog_param_types(self, sql: str, given: Sequence[int], inferred: tuple[int, ...]) -> tuple[int, ...]:
        """Parameter types of a catalog statement: the client's, else explicit casts, else the catalog's view."""
        try:
            names = self.ctx.catalog.parameter_types(sql)
        except Exception:
            return inferred
        casts = {i for i, oid in enumerate(inferred) if oid != params_mod.TEXT_OID}
        out = list(inferred)
        for i, name in enumerate(names[: len(out)]):
            if (i >= len(given) or not given[i]) and i not in casts:
                out[i] = pgt.type_by_name(name).oid
        return tuple(out)

    def _bind(self, msg: m.Bind) -> None:
        stmt = self.statements.get(msg.statement)
        if stmt is None:
            raise InvalidStatementName(f'prepared statement "{msg.statement}" does not exist')
        if msg.portal and msg.portal in self.portals:
            raise DuplicateCursor(f'portal "{msg.portal}" already exists')
        if msg.portal and len(self.portals) >= MAX_STATEMENTS:
            raise LimitExceeded(f"too many open portals (at most {MAX_STATEMENTS} per connection)", hint="Close portals")
        self._check_aborted(stmt.route)
        n = len(stmt.param_oids)
        if len(msg.params) != n:
            raise ProtocolViolation(
                f'bind message supplies {len(msg.params)} parameters, but prepared statement "{msg.statement}" requires {n}',
            )
        fmts = msg.param_formats
        if len(fmts) not in (0, 1, n):
            raise ProtocolViolation(f"bind message has {len(fmts)} parameter formats but {n} parameters")
        values: list[Any] = []
        tz = self._output_ctx().timezone
        for i, (raw, oid) in enumerate(zip(msg.params, stmt.param_oids, strict=True)):
            fmt = fmts[0] if len(fmts) == 1 else (fmts[i] if fmts else 0)
            try:
                values.append(pgt.decode_param(raw, oid, fmt, tz))
            except DPSQLError as e:
                if e.sqlstate == "22P03":
                    e.message = f"incorrect binary data format in bind parameter {i + 1}"
                raise
        self.portals[msg.portal] = Portal(stmt, tuple(values), msg.result_formats)
        self.out += m.BIND_COMPLETE

    def _describe(self, msg: m.Describe) -> Handler:
        if msg.kind == "S":
            stmt = self.statements.get(msg.name)
            if stmt is None:
                raise InvalidStatementName(f'prepared statement "{msg.name}" does not exist')
            self.out += m.encode_parameter_description(stmt.param_oids)
            if not stmt.describe_done:
                params = tuple(dummy_value(o) for o in stmt.param_oids)
                stmt.described = yield from self._describe_route(stmt.route, params, stmt.param_oids)
                stmt.describe_done = stmt.route.kind not in ("fetch", "engine_cmd")
            self._send_description(stmt.described, ())
            return
        portal = self.portals.get(msg.name)
        if portal is None:
            raise InvalidCursorName(f'portal "{msg.name}" does not exist')
        if portal.described is None:
            if portal.result is not None:
                r = portal.result
                portal.described = Described(r.columns, r.types) if _returns_rows(r) else None
            elif portal.statement.describe_done and not portal.params:
                portal.described = portal.statement.described
            else:
                portal.described = yield from self._describe_route(portal.statement.route, portal.params, portal.statement.param_oids)
        self._send_description(portal.described, portal.result_formats)

    def _describe_route(self, route: Route, params: tuple[Any, ...], oids: Sequence[int]) -> Generator[Request, Any, Described | None]:
        """Names and types of ``route``'s result without running a DP query or charging."""
        kind = route.kind
        info = self.info
        assert info is not None and self.session is not None and self.gucs is not None
        if kind == "query":
            sql = bind_sql(route.sql, params, oids) if params else route.sql
            session = self.session
            rw, _noise = yield Offload(lambda: session.plan(sql))
            return Described(tuple(o.name for o in rw.outputs), tuple(o.pg_type for o in rw.outputs))
        if kind == "catalog":
            names, types = self.ctx.catalog.describe(route.sql, info)
            return Described(tuple(names), tuple(types)) if names else None
        if kind == "engine_cmd":
            command = route.command
            if command is not None and command.kind == "explain":
                return Described(("QUERY PLAN",), ("text",))
            session = self.session
            r = yield Offload(lambda: session.execute(route.sql, command))  # the budget view: free, reads the ledger only
            return Described(r.columns, r.types)
        if kind == "engine_fast":
            words = command_words(route.sql, 3)
            if words and words[0] == "show":
                name = words[-1]
                return Described((name,), ("text",))
            return None
        if kind == "show":
            result = self._show(route)
            return Described(result.columns, result.types)
        if kind == "fetch":
            cmd = parse_fetch(route.sql)
            if cmd.move:
                return None
            cursor = self._cursor(cmd.cursor)
            return Described(cursor.result.columns, cursor.result.types)
        return None

    def _execute(self, msg: m.Execute) -> Handler:
        portal = self.portals.get(msg.portal)
        if portal is None:
            raise InvalidCursorName(f'portal "{msg.portal}" does not exist')
        route = portal.statement.route
        self._error_context = (route.sql, 0) if not portal.params else None
        if portal.result is None:
            if portal.done:
                self.out += m.encode_command_complete("SELECT 0")
                return
            self._check_aborted(route)
            result = yield from self._run(route, portal.params, portal.statement.param_oids)
            if result is _EMPTY:
                self.out += m.EMPTY_QUERY
                portal.done = True
                return
            if not _returns_rows(result):
                self._send_notices(result)
                self.out += m.encode_command_complete(result.tag)
                portal.done = True
                return
            portal.result = result
            self._send_notices(result)
        result = portal.result
        formats = portal.result_formats
        if getattr(result, "binary", False) and not formats:
            formats = (1,)
        limit = msg.max_rows
        start = portal.position
        rows = result.rows
        end = len(rows) if limit <= 0 else min(len(rows), start + limit)
        # Encode with the types the client was told (Describe of the portal or statement) when it asked.
        described = portal.described or portal.statement.described
        types = described.types if described is not None and len(described.types) == len(result.columns) else result.types
        yield from self._send_rows(rows, start, end, types, formats, len(result.columns))
        portal.position = end
        if end < len(rows):
            self.out += m.PORTAL_SUSPENDED
            return
        tag = result.tag if start == 0 else f"{result.command} {end - start}" if result.command == "SELECT" else result.tag
        self.out += m.encode_command_complete(tag)
        portal.result = None
        portal.done = True

    def _close(self, msg: m.Close) -> None:
        if msg.kind == "S":
            self.statements.pop(msg.name, None)
        else:
            self.portals.pop(msg.name, None)
        self.out += m.CLOSE_COMPLETE
