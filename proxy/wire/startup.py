"""Startup and authentication: SSL/GSS negotiation, the startup packet, SCRAM-SHA-256 (-PLUS)
or trust, the connection limits, and the session's start (ParameterStatus, BackendKeyData).

Every refusal here is FATAL and ends the connection; a wrong password and an unknown user look
alike (28P01), and failures feed the login throttle.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a connection is in its life: startup → sasl_first → sasl_final → ready → closed
    (trust authentication goes from startup straight to ready)."""

    STARTUP = "startup"  # awaiting SSLRequest, GSSENCRequest, CancelRequest or the startup packet
    SASL_FIRST = "sasl_first"  # awaiting the SASLInitialResponse
    SASL_FINAL = "sasl_final"  # awaiting the SASLResponse with the client's proof
    READY = "ready"  # authenticated: queries are answered
    CLOSED = "closed"  # the session and the backend id are released
