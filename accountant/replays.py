"""Replay slots in the ledger: a stored noisy answer, keyed by the query, reserved by its charge.

A replay slot is one row of the ledger's ``replay`` table. Its life:

1. **pending** — written by :meth:`~dpsql.accountant.ledger.Ledger.charge` in the *same
   transaction* as the charge that pays for the answer (so a slot exists only for a paid query),
   owned by that charge (``charge_id``) and by the process running it (``owner``);
2. **released** — the owner stores the answer it released (post-processed rows) once it has it;
   until ``expires_at`` the answer is replayed to every identical query at no charge;
3. gone — the owner drops it when its query failed after the charge; expired rows are pruned.

A pending slot whose owner died (kill -9 between the charge and the store) never turns into a
free answer: it holds no answer, and once it is *abandoned* — its ``pending_until`` deadline has
passed, or its owner is a process on this host that no longer exists — the next identical query
is charged and takes the slot over. Whether a slot is live depends on the clock and on processes,
never on data.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache
from typing import Literal

SlotState = Literal["free", "pending", "released"]


@dataclass(frozen=True)
class ReplayRow:
    """One stored replay slot, as the ledger holds it."""

    key: str
    scope: str  # the user who paid, or "*" when answers are shared by all users
    charge_id: int
    state: Literal["pending", "released"]
    charged_at: float
    pending_until: float  # a pending slot is abandoned after this time
    expires_at: float  # a released answer is replayed until this time
    owner: str  # the process that holds a pending slot (see owner_token)
    payload: bytes | None = None  # the stored answer (released slots only)


@dataclass(frozen=True)
class ReplayReservation:
    """What a charge writes into the replay slot it reserves (in its own transaction)."""

    key: str
    scope: str
    pending_until: float
    expires_at: float
    owner: str


class ReplaySlotTaken(Exception):
    """Raised by ``Ledger.charge(replay=…)`` instead of charging: the slot holds an answer, or
    another live query has reserved it. Nothing was written."""

    def __init__(self, row: ReplayRow) -> None:
        super().__init__("replay slot taken")
        self.row = row


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: fields follow the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


@cache
def _host() -> str:
    return socket.gethostname()


def owner_token() -> str:
    """This process, as ``host/pid/start-time`` (the start time tells a reused pid apart)."""
    pid = os.getpid()
    return f"{_host()}/{pid}/{_start_time(pid) or '?'}"


def owner_alive(token: str) -> bool | None:
    """Whether the process named by ``token`` still runs: True/False on this host (Linux),
    None when it cannot be known (another host, or no ``/proc``)."""
    host, _, rest = token.partition("/")
    pid_s, _, started = rest.partition("/")
    if host != _host() or not pid_s.isdigit() or started == "?":
        return None
    pid = int(pid_s)
    if pid == os.getpid():
        return True
    now = _start_time(pid)
    if now is None:
        return False if os.path.isdir("/proc/self") else None
    return now == started


def slot_state(row: ReplayRow | None, now: float) -> SlotState:
    """``released`` (an answer to replay), ``pending`` (a live query will store one) or ``free``
    (nothing usable: missing, expired or abandoned — the next identical query is charged)."""
    if row is None or now >= row.expires_at:
        return "free"
    if row.state == "released":
        return "released" if row.payload is not None else "free"
    if now >= row.pending_until or owner_alive(row.owner) is False:
        return "free"
    return "pending"
