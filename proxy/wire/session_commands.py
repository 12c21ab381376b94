"""The session commands the wire layer answers itself: ``SET``/``SHOW``/``RESET`` of ordinary
settings (``dp.*`` ones go to the engine), ``DISCARD``, ``DEALLOCATE``, ``LISTEN``/``UNLISTEN``
(accepted, never notified) and ``CHECKPOINT`` (refused: dpsql has no storage of its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dpsql.errors import ActiveTransaction, InvalidStatementName, PrivacyViolation, QuerySyntaxError
from dpsql.proxy.engine import Result
from dpsql.proxy.wire.gucs import Gucs, parse_set
from dpsql.proxy.wire.portals import Cursor, Portal, PreparedStatement
from dpsql.proxy.wire.results import _tag_only
from dpsql.proxy.wire.routing import Route
from dpsql.proxy.wire.sqltext import identifier, tokens
from dpsql.proxy.wire.transaction import TransactionStatus

if TYPE_CHECKING:
    from dpsql.proxy.engine import Session


class SessionCommandsMixin:
    """The wire layer's own session commands, for the connection."""

    user: str
    txn: TransactionStatus
    gucs: Gucs | None
    session: Session | None
    statements: dict[str, PreparedStatement]
    portals: dict[str, Portal]
    cursors: dict[str, Cursor]
    cursor_txn: dict[str, int]

    def _checkpoint(self, route: Route) -> Result:
        raise PrivacyViolation(
            "must be superuser or have privileges of pg_checkpoint to do CHECKPOINT",
            hint="dpsql answers read-only queries; it has no storage of its own to checkpoint",
        )

    def _set(self, route: Route) -> Result:
        assert self.gucs is not None
        cmd = parse_set(route.sql, self.user)
        if cmd.name is not None:
            if cmd.local and self.txn == TransactionStatus.IDLE:
                self._notice("SET LOCAL can only be used in transaction blocks", severity="WARNING", sqlstate="25P01")
            self.gucs.set(cmd.name, cmd.value, local=cmd.local, in_transaction=self.txn != TransactionStatus.IDLE)
        return _tag_only("SET")

    def _reset(self, route: Route) -> Result:
        assert self.gucs is not None and self.session is not None
        toks = [t.lower() for t in tokens(route.sql)[1:]]
        if toks == ["all"]:
            self.gucs.reset("all")
            for name in ("dp.epsilon", "dp.delta"):
                self.session.execute(f"RESET {name}")
        elif toks[:2] == ["time", "zone"]:
            self.gucs.reset("timezone")
        elif toks in (["role"], ["session", "authorization"]):
            pass
        elif len(toks) == 1:
            self.gucs.reset(identifier(tokens(route.sql)[1]))
        else:
            raise QuerySyntaxError("syntax error in RESET")
        return _tag_only("RESET")

    def _show(self, route: Route) -> Result:
        assert self.gucs is not None
        toks = tokens(route.sql)[1:]
        low = [t.lower() for t in toks]
        if low == ["all"]:
            return Result(("name", "setting", "description"), ("text", "text", "text"), list(self.gucs.show_all()), command="SHOW")
        if low[:2] == ["time", "zone"]:
            name = "timezone"
        elif low[:3] == ["transaction", "isolation", "level"]:
            name = "transaction_isolation"
        elif low[:2] == ["session", "authorization"]:
            name = "session_authorization"
        elif len(toks) == 1:
            name = identifier(toks[0])
        else:
            raise QuerySyntaxError("syntax error in SHOW")
        shown, value = self.gucs.show(name)
        return Result((shown,), ("text",), [(value,)], command="SHOW")

    def _discard(self, route: Route) -> Result:
        what = route.arg or ""
        if what == "all":
            if self.txn != TransactionStatus.IDLE:
                raise ActiveTransaction("DISCARD ALL cannot run inside a transaction block")
            self.statements = {k: v for k, v in self.statements.items() if k == ""}
            self.portals = {}
            self.cursors = {}
            self.cursor_txn = {}
            self._reset(Route("reset", "RESET ALL"))
            return _tag_only("DISCARD ALL")
        if what in ("plans", "sequences", "temp", "temporary"):
            return _tag_only(f"DISCARD {'TEMP' if what.startswith('temp') else what.upper()}")
        raise QuerySyntaxError("syntax error in DISCARD")

    def _deallocate(self, route: Route) -> Result:
        name = route.arg
        if name == "all":
            self.statements = {k: v for k, v in self.statements.items() if k == ""}
            return _tag_only("DEALLOCATE ALL")
        if name not in self.statements:
            raise InvalidStatementName(f'prepared statement "{name}" does not exist')
        del self.statements[name]
        return _tag_only("DEALLOCATE")

    def _listen(self, route: Route) -> Result:
        return _tag_only(route.kind.upper())
