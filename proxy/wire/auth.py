"""Authentication: SCRAM-SHA-256 (and -PLUS over TLS) server exchanges and the login throttle.

The server never sees a password: it checks the client's proof against the verifier stored in
the policy (``StoredKey``/``ServerKey``), with ``scramp`` doing the RFC 5802/7677 message work.
A user the policy doesn't list gets a complete exchange against a made-up verifier (a salt
derived from the user name under a per-server key, random keys), so that the reply and its
timing do not tell whether the user exists; it always fails. ``md5`` and cleartext passwords are
never offered. ``scramp`` makes verifiers (:mod:`dpsql.proxy.passwords`) and computes the
RFC 5929 channel-binding hash.

:class:`LoginThrottle` refuses a (user, address) pair after 5 failures within 60 seconds (R26).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import scramp

from dpsql.proxy.passwords import MIN_ITERATIONS, ScramVerifier, parse_verifier

SCRAM = "SCRAM-SHA-256"
SCRAM_PLUS = "SCRAM-SHA-256-PLUS"


class AuthError(Exception):
    """The exchange failed (bad proof, malformed message, unknown user); the client gets 28P01."""


@dataclass(frozen=True)
class ChannelBinding:
    """``tls-server-end-point`` data: the hash of the server certificate (RFC 5929)."""

    data: bytes

    @classmethod
    def from_certificate(cls, cert_der: bytes) -> ChannelBinding:
        """The binding for a DER certificate, hashed per RFC 5929 (SHA-256 for MD5/SHA-1 signatures)."""
        return cls(scramp.core.CBindData.from_der(cert_der).data)

    @classmethod
    def from_pem_file(cls, path: str) -> ChannelBinding:
        """The binding for the first certificate of a PEM file."""
        with open(path, encoding="ascii") as f:
            pem = f.read()
        return cls.from_certificate(ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN CERTIFICATE-----") :]))


class Verifiers:
    """The policy's parsed SCRAM verifiers, plus made-up ones for unknown users."""

    def __init__(self, users: Mapping[str, str | None]) -> None:
        self._known: dict[str, ScramVerifier] = {}
        for name, text in users.items():
            if text:
                self._known[name] = parse_verifier(text)
        self._key = secrets.token_bytes(32)

    def known(self, user: str) -> bool:
        """True when ``user`` has a verifier."""
        return user in self._known

    def get(self, user: str) -> ScramVerifier:
        """The user's verifier, or a made-up one that matches no password."""
        v = self._known.get(user)
        if v is not None:
            return v
        digest = hmac.new(self._key, user.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        return ScramVerifier(MIN_ITERATIONS, digest[:16], secrets.token_bytes(32), secrets.token_bytes(32))


class ScramExchange:
    """One server-side SCRAM-SHA-256(-PLUS) exchange (RFC 5802/7677, as PostgreSQL runs it).

    Feed it the client's SASLInitialResponse, then its SASLResponse; :meth:`final` raises
    :class:`AuthError` unless the proof matches ``verifier`` and ``valid`` is True (False for
    unknown users, whose exchange is run to the end all the same). The username inside the SCRAM
    message is ignored, as PostgreSQL does (libpq sends an empty one; the startup packet names
    the user), which is why this is not ``scramp``'s server: scramp rejects empty attributes.
    Proofs and channel-binding data are compared in constant time.
    """

    def __init__(self, verifier: ScramVerifier, *, valid: bool, binding: ChannelBinding | None = None) -> None:
        self.verifier = verifier
        self.valid = valid
        self.binding = binding
        self._cbind_input: bytes | None = None
        self._first_bare = ""
        self._server_first = ""
        self._nonce = ""

    @staticmethod
    def mechanisms(binding: ChannelBinding | None) -> list[str]:
        """The mechanisms to offer: -PLUS first when the connection is TLS."""
        return [SCRAM_PLUS, SCRAM] if binding is not None else [SCRAM]

    def first(self, mechanism: str, client_first: bytes) -> bytes:
        """Handle client-first; return server-first. AuthError for a bad mechanism, flag or message."""
        if mechanism not in self.mechanisms(self.binding):
            raise AuthError("unsupported SASL mechanism")
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthError("malformed SCRAM message") from None
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise AuthError("malformed SCRAM message")
        flag, authzid, bare = parts
        if authzid:
            raise AuthError("client uses authorization identity, which is not supported")
        if flag == "n":
            if mechanism == SCRAM_PLUS:
                raise AuthError("channel binding is required by SCRAM-SHA-256-PLUS")
            cbind = b""
        elif flag == "y":
            if self.binding is not None:
                raise AuthError("SCRAM channel binding negotiation error (downgrade)")
            cbind = b""
        elif flag == "p=tls-server-end-point":
            if mechanism != SCRAM_PLUS or self.binding is None:
                raise AuthError("channel binding requested without SCRAM-SHA-256-PLUS")
            cbind = self.binding.data
        else:
            raise AuthError("unsupported SCRAM channel-binding flag")
        attrs = bare.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise AuthError("malformed SCRAM client-first-bare")
        if any(a.startswith("m=") for a in attrs[2:]):
            raise AuthError("SCRAM extensions are not supported")
        cnonce = attrs[1][2:]
        if not cnonce or any(not (0x21 <= ord(c) <= 0x7E) or c == "," for c in cnonce):
            raise AuthError("invalid SCRAM client nonce")
        self._cbind_input = (flag + "," + authzid + ",").encode("ascii") + cbind
        self._first_bare = bare
        v = self.verifier
        self._nonce = cnonce + base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        self._server_first = f"r={self._nonce},s={base64.b64encode(v.salt).decode('ascii')},i={v.iterations}"
        return self._server_first.encode("ascii")

    def final(self, client_final: bytes) -> bytes:
        """Check client-final; return server-final (``v=`` server signature). AuthError on failure."""
        if self._cbind_input is None:
            raise AuthError("SCRAM exchange out of order")
        try:
            text = client_final.decode("ascii")
        except UnicodeDecodeError:
            raise AuthError("malformed SCRAM message") from None
        head, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise AuthError("malformed SCRAM client-final message")
        attrs = head.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
            raise AuthError("malformed SCRAM client-final message")
        try:
            cbind = base64.b64decode(attrs[0][2:], validate=True)
            proof = base64.b64decode(proof_b64, validate=True)
        except (binascii.Error, ValueError):
            raise AuthError("malformed SCRAM client-final message") from None
        cbind_ok = hmac.compare_digest(cbind, self._cbind_input)
        nonce_ok = hmac.compare_digest(attrs[1][2:].encode("ascii"), self._nonce.encode("ascii"))
        v = self.verifier
        auth_message = f"{self._first_bare},{self._server_first},{head}".encode()
        signature = hmac.new(v.stored_key, auth_message, hashlib.sha256).digest()
        if len(proof) != len(signature):
            proof = bytes(len(signature))
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        proof_ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), v.stored_key)
        if not (cbind_ok & nonce_ok & proof_ok & self.valid):
            raise AuthError("SCRAM proof rejected")
        server_signature = hmac.new(v.server_key, auth_message, hashlib.sha256).digest()
        return b"v=" + base64.b64encode(server_signature)


def parse_sasl_initial(data: bytes) -> tuple[str, bytes]:
    """SASLInitialResponse body → (mechanism, client-first bytes). AuthError when malformed."""
    end = data.find(b"\0")
    if end < 0 or len(data) < end + 5:
        raise AuthError("malformed SASLInitialResponse")
    mechanism = data[:end].decode("ascii", "replace")
    (n,) = struct.unpack_from("!i", data, end + 1)
    rest = data[end + 5 :]
    if n == -1:
        rest = b""
    elif n != len(rest):
        raise AuthError("malformed SASLInitialResponse")
    return mechanism, rest


class LoginThrottle:
    """Failed logins per (user, address): :meth:`locked` once ``limit`` failures fall within
    ``window`` seconds. Thread-safe; memory stays bounded by pruning old entries."""

    def __init__(self, limit: int = 5, window: float = 60.0, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def locked(self, user: str, address: str, now: float | None = None) -> bool:
        """True when the pair has ``limit`` or more failures in the last ``window`` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._failures.get((user, address))
            if q is None:
                return False
            while q and q[0] <= now - self.window:
                q.popleft()
            if not q:
                del self._failures[(user, address)]
                return False
            return len(q) >= self.limit

    def failure(self, user: str, address: str, now: float | None = None) -> None:
        """Record one failed login."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) >= self.max_keys:
                self._prune(now)
            q = self._failures.setdefault((user, address), deque(maxlen=self.limit * 4))
            q.append(now)

    def success(self, user: str, address: str) -> None:
        """A successful login clears the pair's failures."""
        with self._lock:
            self._failures.pop((user, address), None)

    def _prune(self, now: float) -> None:
        cutoff = now - self.window
        for key in [k for k, q in self._failures.items() if not q or q[-1] <= cutoff]:
            del self._failures[key]
        while len(self._failures) >= self.max_keys:
            self._failures.pop(next(iter(self._failures)))
