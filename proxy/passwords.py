"""SCRAM-SHA-256 password verifiers in PostgreSQL's format (what ``[users.NAME] password`` holds).

A verifier is ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` with base64 fields,
exactly as PostgreSQL stores it in ``pg_authid.rolpassword``; it lets the server check a SCRAM
login without ever knowing the password. The keys are computed by ``scramp`` (RFC 5802/7677,
password normalised with SASLprep as PostgreSQL and libpq do).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from dataclasses import dataclass

import scramp

MECHANISM = "SCRAM-SHA-256"
MIN_ITERATIONS = 4096  # PostgreSQL's default and scramp's minimum
SALT_BYTES = 16  # PostgreSQL's SCRAM_DEFAULT_SALT_LEN

_VERIFIER = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")


@dataclass(frozen=True)
class ScramVerifier:
    """The parts of a SCRAM-SHA-256 verifier, decoded."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def __str__(self) -> str:
        return f"{MECHANISM}${self.iterations}:{_b64(self.salt)}${_b64(self.stored_key)}:{_b64(self.server_key)}"


def scram_verifier(password: str, iterations: int = MIN_ITERATIONS, *, salt: bytes | None = None) -> str:
    """A PostgreSQL SCRAM-SHA-256 verifier for ``password`` with a fresh random 16-byte salt.

    ``salt`` may be given (at least 12 bytes) for reproducible output. Raises ValueError when
    ``iterations`` is below 4096 or the password is one SASLprep rejects (e.g. it holds
    control characters).
    """
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"SCRAM iteration count must be at least {MIN_ITERATIONS}, got {iterations}")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    try:
        salt_out, stored_key, server_key, count = scramp.ScramMechanism(MECHANISM).make_auth_info(
            password, iteration_count=iterations, salt=salt
        )
    except scramp.ScramException as e:
        raise ValueError(f"cannot make a SCRAM verifier: {e.args[0] if e.args else e}") from None
    return str(ScramVerifier(count, salt_out, stored_key, server_key))


def parse_verifier(text: str) -> ScramVerifier:
    """Decode a verifier string; ValueError if it is not PostgreSQL's SCRAM-SHA-256 format."""
    m = _VERIFIER.match(text.strip())
    if m is None:
        raise ValueError("not a SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iter>:<salt>$<key>:<key>)")
    try:
        salt, stored, server = (base64.b64decode(m.group(i), validate=True) for i in (2, 3, 4))
    except (binascii.Error, ValueError):
        raise ValueError("a SCRAM-SHA-256 verifier field is not valid base64") from None
    if len(stored) != 32 or len(server) != 32:
        raise ValueError("SCRAM-SHA-256 keys must be 32 bytes")
    return ScramVerifier(int(m.group(1)), salt, stored, server)


def check_password(password: str, verifier: str) -> bool:
    """True when ``password`` matches ``verifier``; compares in constant time, never raises
    for a wrong password (ValueError only for a malformed verifier)."""
    v = parse_verifier(verifier)
    try:
        _, stored, server, _ = scramp.ScramMechanism(MECHANISM).make_auth_info(password, iteration_count=v.iterations, salt=v.salt)
    except scramp.ScramException:
        return False
    return hmac.compare_digest(stored, v.stored_key) & hmac.compare_digest(server, v.server_key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
