"""Transactions: the status a connection reports in ReadyForQuery, and the transaction commands.

dpsql keeps no data of its own, so a transaction block scopes what the wire layer holds: settings
(``SET LOCAL``, and ``ROLLBACK`` undoing ``SET``), savepoints and cursors declared in it. A failed
block refuses every statement but ``COMMIT``/``ROLLBACK`` (25P02) until it ends, as PostgreSQL does.
"""

from __future__ import annotations

from enum import StrEnum


class TransactionStatus(StrEnum):
    """The transaction status byte of ReadyForQuery."""

    IDLE = "I"  # not in a transaction block
    IN_BLOCK = "T"  # in a transaction block
    FAILED = "E"  # in a failed transaction block: commands are refused until it ends
