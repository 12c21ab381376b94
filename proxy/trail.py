"""The operators' trail of one engine: what each statement did, to the audit log and the metrics.

A :class:`Trail` is filled in by the session while it answers one statement — only with things
that are not computed from private rows: the statement kind, the ledger's query hash, the
mechanisms of the noise plan, the charge receipt, whether the answer was replayed, and the
user's remaining budget after the charge. :meth:`OperatorsTrail.record` turns it into one audit
line (:mod:`~dpsql.proxy.audit`) and metric updates (:mod:`~dpsql.proxy.metrics`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dpsql.accountant.filters import BudgetStatus
from dpsql.accountant.ledger import Receipt
from dpsql.accountant.planner import NoisePlan
from dpsql.policy import Policy
from dpsql.proxy.audit import AuditLog, outcome_class, sql_hash, utc_now
from dpsql.proxy.metrics import Metrics

if TYPE_CHECKING:
    from dpsql.proxy.engine import Session

log = logging.getLogger("dpsql.audit")


@dataclass(frozen=True)
class ClientInfo:
    """Who is at the other end of a session: peer address, TLS, authentication method."""

    peer: str = "in-process"
    tls: bool = False
    auth: str = "in-process"


@dataclass
class Trail:
    """What one statement did (no values from private rows)."""

    kind: str = "other"
    query_hash: str | None = None
    noise: NoisePlan | None = None
    receipt: Receipt | None = None
    replayed: bool = False
    remaining: BudgetStatus | None = None

    def mechanisms(self) -> list[str]:
        """The noise plan's mechanisms (one per noised statistic, then partition selection)."""
        if self.noise is None:
            return []
        names = [s.mechanism for s in self.noise.stats if not s.from_selection]
        if self.noise.selection is not None:
            names.append(self.noise.selection.mechanism)
        return names


def _charge_fields(t: Trail) -> dict[str, Any] | None:
    r, n = t.receipt, t.noise
    if r is None:
        return None
    out: dict[str, Any] = {"charge_id": r.charge_id, "accounting": r.cost.accounting,
                           "rho" if r.cost.accounting == "zcdp" else "epsilon_charged": str(r.cost.amount),
                           "delta_charged": str(r.cost.delta)}
    if n is not None:
        free = r.cost.amount == 0 and r.cost.delta == 0  # the answer follows from the policy: no guarantee spent
        out["epsilon"] = 0.0 if free else float(n.epsilon)
        out["delta"] = 0.0 if free else float(n.delta)
    return out


def _remaining_fields(s: BudgetStatus | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"epsilon": s.remaining_epsilon, "delta": None if s.remaining_delta is None else float(s.remaining_delta),
            "rho": None if s.remaining_rho is None else str(s.remaining_rho)}


class OperatorsTrail:
    """The audit log (when the policy keeps one) and the metrics of one engine."""

    def __init__(self, policy: Policy) -> None:
        path = policy.audit_path
        self.audit: AuditLog | None = AuditLog.open(path) if path is not None else None
        self.metrics = Metrics()

    def record(self, session: Session, sql: str, trail: Trail, sqlstate: str, latency: float) -> None:
        """Write the audit line and count the metrics of one answered statement. Raises
        AuditLogUnavailable when the line cannot be written."""
        outcome = outcome_class(sqlstate)
        r, n = trail.receipt, trail.noise
        charge = None
        if r is not None and (r.cost.amount > 0 or r.cost.delta > 0):
            rho = float(r.cost.amount) if r.cost.accounting == "zcdp" else None
            charge = (float(n.epsilon) if n is not None else float(r.cost.amount), rho, float(r.cost.delta))
        self.metrics.observe(kind=trail.kind, outcome=outcome, sqlstate=sqlstate, latency=latency, user=session.user,
                             charge=charge, replayed=trail.replayed)
        if self.audit is None:
            return
        client = session.client
        self.audit.append({
            "ts": utc_now(),
            "user": session.user,
            "session": session.id,
            "peer": client.peer,
            "tls": client.tls,
            "auth": client.auth,
            "kind": trail.kind,
            "sql_hash": sql_hash(sql),
            "query_hash": trail.query_hash,
            "mechanisms": trail.mechanisms(),
            "charge": _charge_fields(trail),
            "replayed": trail.replayed,
            "remaining": _remaining_fields(trail.remaining),
            "outcome": outcome,
            "sqlstate": sqlstate,
            "latency_ms": round(latency * 1000, 3),
        })

    def close(self) -> None:
        """Close the audit log and stop the metrics endpoint."""
        self.metrics.stop()
        if self.audit is not None:
            self.audit.close()
