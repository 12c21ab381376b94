"""Transactions: the status a connection reports in ReadyForQuery, and the transaction commands.

dpsql keeps no data of its own, so a transaction block scopes what the wire layer holds: settings
(``SET LOCAL``, and ``ROLLBACK`` undoing ``SET``), savepoints and cursors declared in it. A failed
block refuses every statement but ``COMMIT``, ``ROLLBACK`` and ``ROLLBACK TO SAVEPOINT`` (25P02) until it
ends, as PostgreSQL does.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from dpsql.errors import InFailedTransaction, InvalidSavepoint, NoActiveTransaction
from dpsql.proxy.engine import Result
from dpsql.proxy.wire.results import _tag_only
from dpsql.proxy.wire.routing import Route

if TYPE_CHECKING:
    from dpsql.proxy.session_info import SessionInfo
    from dpsql.proxy.wire.gucs import Gucs
    from dpsql.proxy.wire.portals import Cursor


class TransactionStatus(StrEnum):
    """The transaction status byte of ReadyForQuery."""

    IDLE = "I"  # not in a transaction block
    IN_BLOCK = "T"  # in a transaction block
    FAILED = "E"  # in a failed transaction block: commands are refused until it ends


_TXN_EXIT = frozenset({"commit", "rollback", "rollback_to"})


class TransactionMixin:
    """BEGIN, COMMIT, ROLLBACK, savepoints and the failed-block rule, for the connection."""

    txn: TransactionStatus
    txn_id: int
    savepoints: list[tuple[str, dict[str, str]]]
    gucs: Gucs | None
    info: SessionInfo | None
    cursors: dict[str, Cursor]
    cursor_txn: dict[str, int]

    def _check_aborted(self, route: Route) -> None:
        if self.txn == TransactionStatus.FAILED and route.kind not in _TXN_EXIT:
            raise InFailedTransaction("current transaction is aborted, commands ignored until end of transaction block")

    def _begin(self, route: Route) -> Result:
        if self.txn != TransactionStatus.IDLE:
            self._notice("there is already a transaction in progress", severity="WARNING", sqlstate="25001")
            return _tag_only("BEGIN")
        self.txn = TransactionStatus.IN_BLOCK
        self.txn_id += 1
        self.savepoints = []
        assert self.gucs is not None
        self.gucs.begin()
        return _tag_only("BEGIN")

    def _end_txn(self, commit: bool) -> None:
        assert self.gucs is not None
        if commit:
            self.gucs.commit()
        else:
            self.gucs.rollback()
        for name in list(self.cursors):
            created_here = self.cursor_txn.get(name) == self.txn_id
            if (commit and not self.cursors[name].hold) or (not commit and created_here):
                del self.cursors[name]
                self.cursor_txn.pop(name, None)
        self.txn = TransactionStatus.IDLE
        self.savepoints = []

    def _commit(self, route: Route) -> Result:
        if self.txn == TransactionStatus.IDLE:
            self._notice("there is no transaction in progress", severity="WARNING", sqlstate="25P01")
            return _tag_only("COMMIT")
        failed = self.txn == TransactionStatus.FAILED
        self._end_txn(commit=not failed)
        return _tag_only("ROLLBACK" if failed else "COMMIT")

    def _rollback(self, route: Route) -> Result:
        if self.txn == TransactionStatus.IDLE:
            self._notice("there is no transaction in progress", severity="WARNING", sqlstate="25P01")
            return _tag_only("ROLLBACK")
        self._end_txn(commit=False)
        return _tag_only("ROLLBACK")

    def _savepoint(self, route: Route) -> Result:
        if self.txn == TransactionStatus.IDLE:
            raise NoActiveTransaction("SAVEPOINT can only be used in transaction blocks")
        assert self.info is not None
        self.savepoints.append((route.arg, dict(self.info.settings)))
        return _tag_only("SAVEPOINT")

    def _find_savepoint(self, name: str, what: str) -> int:
        if self.txn == TransactionStatus.IDLE:
            raise NoActiveTransaction(f"{what} can only be used in transaction blocks")
        for i in range(len(self.savepoints) - 1, -1, -1):
            if self.savepoints[i][0] == name:
                return i
        raise InvalidSavepoint(f'savepoint "{name}" does not exist')

    def _release(self, route: Route) -> Result:
        i = self._find_savepoint(route.arg, "RELEASE SAVEPOINT")
        del self.savepoints[i:]
        return _tag_only("RELEASE")

    def _rollback_to(self, route: Route) -> Result:
        i = self._find_savepoint(route.arg, "ROLLBACK TO SAVEPOINT")
        assert self.info is not None
        snapshot = self.savepoints[i][1]
        self.info.settings.clear()
        self.info.settings.update(snapshot)
        del self.savepoints[i + 1 :]
        self.txn = TransactionStatus.IN_BLOCK
        return _tag_only("ROLLBACK")
