"""Replay (DESIGN §1): an identical private query answered again with its stored noisy answer, free.

Returning an answer already paid for is post-processing of that release, so it costs nothing.
"Identical" is decided by a key over everything that determines the release and nothing else:

    key = SHA-256(policy fingerprint, data version, scope, bounded SQL (+ constants, post-processing
                  and public-key SQL), release plan, ε, δ, cost)

where *scope* is the user (``[privacy] replay = "user"``, the default) or ``"*"`` (``"global"``:
answers are shared by all users — the global filter already covers every release). The key is a
function of the query text, the session's settings, who asked and the data version (file
identities, see :mod:`~dpsql.proxy.backends.data_version`), never of rows: whether a query
replays never depends on data.

The slot of a key lives in the ledger (:mod:`dpsql.accountant.replays`): the charge reserves it in
its own transaction; the released rows (after post-processing) are stored when they exist; an
identical query that finds the slot pending waits for it, at most until its own statement
deadline; a query that finds it free (none, expired, or abandoned by a dead owner) is charged
and takes it. The stored answer is replayed for ``replay_window`` after its charge; when the
data version is not pinned (an upstream PostgreSQL) for at most ``replay_ttl``.

What else decides whether an answer is there to replay is itself released information of the
same scope: an answer is kept only if its query succeeded (a failure after the charge drops the
slot, and the user saw that failure) and fits ``replay_size`` next to the scope's other stored
answers (their sizes follow from released rows). Under ``"user"`` that is the user's own
releases; under ``"global"`` it is every user's, which the global filter covers.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from dpsql.accountant.costs import Cost
from dpsql.accountant.ledger import Ledger, QueryGuarantee, Receipt
from dpsql.accountant.planner import NoisePlan
from dpsql.accountant.replays import ReplayReservation, owner_token, slot_state
from dpsql.errors import DPSQLError, QueryCanceled
from dpsql.policy import Policy
from dpsql.proxy.backends.base import Backend, query_canceled
from dpsql.proxy.replay_codec import Unencodable, decode, encode
from dpsql.rewriter.plan import Rewrite

log = logging.getLogger("dpsql.replay")

PENDING_GRACE = 10.0  # seconds a pending slot outlives its owner's statement timeout
_POLL_MIN, _POLL_MAX = 0.005, 0.1  # seconds between looks at a slot another process holds
CODEC_VERSION = 1


def policy_fingerprint(policy: Policy) -> str:
    """A hash of what in a policy shapes a release: the tables (bounds, values, units, limits) and
    the accounting mode. Budgets, users and server settings do not change an answer."""
    tables = sorted((k, repr(v)) for k, v in policy.tables.items())
    text = json.dumps([CODEC_VERSION, policy.privacy.accounting, tables, policy.limits.max_released_groups])
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ReplayTicket:
    """One query's replay slot: its key and scope, and how long an answer there stays valid."""

    key: str
    scope: str
    lifetime: float  # seconds a stored answer is replayed after its charge
    pending_for: float  # seconds a reservation stays live without an answer

    def reservation(self, now: float) -> ReplayReservation:
        """What the charge at ``now`` writes into the slot."""
        return ReplayReservation(self.key, self.scope, now + self.pending_for, now + self.lifetime, owner_token())


@dataclass(frozen=True)
class StoredAnswer:
    """A released answer read back from the ledger."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    notices: list[str]  # notices of the release besides its cost (e.g. truncation)
    epsilon: str
    delta: str
    charged_at: float

    def cost_text(self) -> str:
        """"ε=…, δ=… at <time> UTC": what the paying charge was."""
        when = _dt.datetime.fromtimestamp(self.charged_at, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"ε={self.epsilon}, δ={self.delta} at {when}"


class Replays:
    """The replay logic of one engine over its ledger (thread-safe)."""

    def __init__(self, policy: Policy, ledger: Ledger, backend: Backend) -> None:
        self.settings = policy.replay
        self.ledger = ledger
        self.backend = backend
        self.statement_timeout = policy.limits.statement_timeout
        self.fingerprint = policy_fingerprint(policy)
        self._changed = threading.Condition()  # notified when a slot of this process is stored or dropped

    @property
    def enabled(self) -> bool:
        """False under ``replay = "off"``."""
        return self.settings.mode != "off"

    def ticket(self, user: str, rw: Rewrite, noise: NoisePlan, post: str = "") -> ReplayTicket | None:
        """The slot of this query for ``user``, or None when replay is off, the query costs nothing
        (its answer follows from the policy: nothing to replay) or the data version cannot be read
        (a served file vanished: the query is charged as without replay). ``post`` names the
        session's post-processing settings (``dp.confidence``, ``dp.rounding``): the stored answer
        is post-processed, so another setting is another slot."""
        plan = rw.plan
        assert plan is not None
        return self.ticket_for(user, [rw.dialect, rw.sql, repr(plan), str(noise.epsilon), str(noise.delta), repr(noise.cost)],
                               noise.cost, post)

    def ticket_for(self, user: str, identity: list[str], cost: Cost, post: str = "") -> ReplayTicket | None:
        """The slot of a statement identified by ``identity`` (everything its answer depends on
        besides the data: bounded SQL, plans, ε, δ, costs — a set operation or staged release lists
        every release), for ``user``; None as for :meth:`ticket`."""
        if not self.enabled or (cost.amount == 0 and cost.delta == 0):
            return None
        try:
            version = self.backend.data_version()
        except OSError:
            log.warning("the served files cannot be identified now; the query is charged without replay")
            return None
        scope = user if self.settings.mode == "user" else "*"
        parts = [CODEC_VERSION, self.fingerprint, version.token, scope, *identity, *([post] if post else [])]
        key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
        lifetime = self.settings.window_seconds
        if not version.pinned:
            lifetime = min(lifetime, self.settings.source_ttl_seconds)
        return ReplayTicket(key, scope, lifetime, self.statement_timeout + PENDING_GRACE)

    def wait(self, ticket: ReplayTicket, deadline: float, cancelled: threading.Event) -> StoredAnswer | None:
        """The stored answer of ``ticket``'s slot; None when the slot is free (the caller charges).

        While another live query holds the slot pending, wait for it — until the answer is
        stored (returned), the slot is freed (None), the monotonic ``deadline`` passes
        (QueryCanceled 57014, nothing charged) or ``cancelled`` is set (57014)."""
        delay = _POLL_MIN
        while True:
            now = time.time()
            row = self.ledger.replay_lookup(ticket.key)
            state = slot_state(row, now)
            if state == "free":
                return None
            assert row is not None
            if state == "released":
                assert row.payload is not None
                answer = _answer(row.payload, row.charged_at)
                if answer is not None:
                    return answer
                return None  # unreadable: charge again, the charge replaces the slot
            if cancelled.is_set():
                raise query_canceled("cancel")
            left = deadline - time.monotonic()
            if left <= 0:
                raise QueryCanceled(
                    "canceling statement due to statement timeout",
                    hint="an identical query is still computing its answer; retry to get it at no charge",
                )
            with self._changed:
                self._changed.wait(max(0.0, min(left, row.pending_until - now, delay)))
            delay = min(delay * 2, _POLL_MAX)

    def store(self, ticket: ReplayTicket, receipt: Receipt, noise: NoisePlan | QueryGuarantee, result: Any) -> bool:
        """Store ``result`` (an engine Result) as the answer of ``receipt``'s reservation. Never
        raises: an answer that cannot be stored only means the next identical query is charged."""
        doc = {
            "columns": list(result.columns),
            "types": list(result.types),
            "rows": result.rows,
            "notices": list(result.notices[1:]),  # the first notice is the cost, restated on replay
            "epsilon": f"{float(noise.epsilon):g}",
            "delta": f"{float(noise.delta):.3g}",
        }
        try:
            payload = encode(doc)
        except (Unencodable, ValueError, OverflowError):
            log.info("an answer was not stored for replay: it holds a value type the replay store cannot keep")
            self.abandon(ticket, receipt)
            return False
        try:
            stored = self.ledger.replay_store(ticket.key, receipt.charge_id, payload, time.time(), self.settings.max_bytes)
        except DPSQLError as e:
            log.warning("an answer was not stored for replay: %s", e.message)
            return False
        finally:
            self._notify()
        return stored

    def abandon(self, ticket: ReplayTicket, receipt: Receipt) -> None:
        """Free ``receipt``'s reservation (its query failed after the charge); never raises."""
        try:
            self.ledger.replay_abandon(ticket.key, receipt.charge_id)
        except DPSQLError as e:
            log.warning("a replay reservation was not freed (it expires by itself): %s", e.message)
        finally:
            self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()


def _answer(payload: bytes, charged_at: float) -> StoredAnswer | None:
    try:
        doc = decode(payload)
        return StoredAnswer(
            columns=tuple(doc["columns"]),
            types=tuple(doc["types"]),
            rows=[tuple(r) for r in doc["rows"]],
            notices=[str(n) for n in doc["notices"]],
            epsilon=str(doc["epsilon"]),
            delta=str(doc["delta"]),
            charged_at=charged_at,
        )
    except (ValueError, KeyError, TypeError):
        log.warning("a stored replay answer could not be read; the query is charged again")
        return None
