"""The Prometheus endpoint (``[server] metrics_listen``): counts, charges and latencies, nothing else.

Every series is computed from what the engine did — statements by kind and SQLSTATE, the ε and ρ
each user was charged, replays, statement durations — never from private rows or from released
values. User names are the policy's. Metrics live in a registry of their own per engine (no
process-global state), served by ``prometheus_client``'s threaded HTTP server.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """One engine's metrics."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.statements = Counter("dpsql_statements", "Statements answered by the engine, by kind, outcome class and SQLSTATE",
                                  ["kind", "outcome", "sqlstate"], registry=r)
        self.refusals = Counter("dpsql_refusals", "Statements refused or failed, by SQLSTATE", ["sqlstate"], registry=r)
        self.charged = Counter("dpsql_charged_queries", "Private queries charged to the ledger, per user", ["user"], registry=r)
        self.epsilon = Counter("dpsql_epsilon_charged",
                               "Sum of the stated ε (dp.epsilon) of the private queries charged, per user; under zcdp the "
                               "ledger composes their ρ, which is less than this sum", ["user"], registry=r)
        self.rho = Counter("dpsql_rho_charged", "Sum of the zCDP ρ charged, per user (zcdp accounting)", ["user"], registry=r)
        self.delta = Counter("dpsql_delta_charged", "Sum of the partition-selection δ charged, per user", ["user"], registry=r)
        self.replays = Counter("dpsql_replays", "Private queries answered with a stored answer, free, per user", ["user"], registry=r)
        self.latency = Histogram("dpsql_statement_duration_seconds", "Wall-clock time to answer a statement, by kind", ["kind"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self._http: Any = None
        self._thread: threading.Thread | None = None

    def observe(self, *, kind: str, outcome: str, sqlstate: str, latency: float, user: str, charge: tuple[float, float | None, float]
                | None, replayed: bool) -> None:
        """Count one statement. ``charge`` is (stated ε, ρ or None, δ charged) when it was charged."""
        self.statements.labels(kind, outcome, sqlstate).inc()
        if sqlstate != "00000":
            self.refusals.labels(sqlstate).inc()
        self.latency.labels(kind).observe(latency)
        if charge is not None:
            eps, rho, delta = charge
            self.charged.labels(user).inc()
            self.epsilon.labels(user).inc(eps)
            if rho is not None:
                self.rho.labels(user).inc(rho)
            self.delta.labels(user).inc(delta)
        if replayed:
            self.replays.labels(user).inc()

    def text(self) -> bytes:
        """The exposition text (what the endpoint serves)."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int, *, tls_cert: Path | None = None, tls_key: Path | None = None) -> tuple[str, int]:
        """Start the HTTP endpoint on a daemon thread (HTTPS when a certificate is given); return
        the bound (host, port) — port 0 picks a free one."""
        httpd, thread = start_http_server(port, addr=host, registry=self.registry,
                                          certfile=str(tls_cert) if tls_cert else None, keyfile=str(tls_key) if tls_key else None,
                                          tls_min_version=ssl.TLSVersion.TLSv1_2 if tls_cert else None)
        self._http, self._thread = httpd, thread
        bound = httpd.server_address
        return str(bound[0]), int(bound[1])

    def stop(self) -> None:
        """Stop the HTTP endpoint, if started; idempotent."""
        httpd, self._http = self._http, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
