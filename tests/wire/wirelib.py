"""Shared helpers of the wire and compatibility tests: the hospital policy with SCRAM users and a
large budget, and servers started in-process on an ephemeral loopback port."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from dpsql.proxy.passwords import scram_verifier

PASSWORDS = {"alice": "alice-demo", "bob": "bob-demo"}
DATABASE = "hospital"

TABLES = """
[tables.visits]
privacy_unit = "patient_id"
max_groups = 3
max_rows = 5
[tables.visits.columns]
visit_date = {}
department_id = { values = [1, 2, 3, 4, 5, 6, 7, 8] }
department = { values = ["emergency", "general medicine", "cardiology", "orthopedics", "pediatrics", "oncology", "neurology",
                         "obstetrics"] }
diagnosis = {}
age = { lower = 0, upper = 100 }
sex = { values = ["F", "M"] }
cost = { lower = 0.0, upper = 5000.0 }
length_of_stay = { lower = 0, upper = 30 }
[tables.patients]
privacy_unit = "patient_id"
[tables.patients.columns]
birth_year = { lower = 1920, upper = 2025 }
region = { values = ["central", "north", "south", "east", "west", "riverside", "harbor", "lakeside", "hills", "uplands"] }
[tables.departments]
public = true
"""


@functools.cache
def verifier(user: str) -> str:
    """A SCRAM verifier of the user's test password (computed once per run)."""
    return scram_verifier(PASSWORDS[user])


def write_policy(
    directory: Path,
    database: Path,
    *,
    name: str = "policy.toml",
    auth: str = "scram-sha-256",
    epsilon: float = 1000.0,
    default_epsilon: float = 0.1,
    limits: dict[str, Any] | None = None,
    server_extra: str = "",
    listen: str = "127.0.0.1:0",
) -> Path:
    """A policy over the hospital data with users alice and bob and its own ledger; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    lines = [
        "[source]",
        f'duckdb = "{database}"',
        "[server]",
        f'listen = "{listen}"',
        f'auth = "{auth}"',
        server_extra,
        "[privacy]",
        'accounting = "zcdp"',
        f"default_epsilon = {default_epsilon}",
        "default_delta = 1e-9",
        "max_epsilon_per_query = 2.0",
        "[privacy.ledger]",
        f'path = "{directory / (path.stem + "-ledger.sqlite")}"',
        "[budget]",
        f"epsilon = {epsilon}",
        "delta = 1e-3",
    ]
    limits = {"queries_per_minute": 100_000, **(limits or {})}
    if limits:
        lines.append("[limits]")
        for k, v in limits.items():
            lines.append(f"{k} = {v!r}".replace("'", '"'))
    for user in PASSWORDS:
        lines.append(f"[users.{user}]")
        if auth == "scram-sha-256":
            lines.append(f'password = "{verifier(user)}"')
    path.write_text("\n".join(lines) + "\n" + TABLES)
    return path


def dsn(host: str, port: int, user: str = "alice", **extra: Any) -> str:
    """A libpq keyword DSN for the test server."""
    parts = [f"host={host}", f"port={port}", f"user={user}", f"dbname={DATABASE}", f"password={PASSWORDS[user]}"]
    parts += [f"{k}={v}" for k, v in extra.items()]
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# A backend with a deliberately slow statement, to test cancel, timeouts and crashes mid-query.

SLOW_MARKER = "4242.5"  # a DP query whose WHERE holds this literal blocks in the backend
SLOW_QUERY = f"SELECT COUNT(*) FROM visits WHERE cost > {SLOW_MARKER}"


def slow_backend(inner: Any, *, delay: float = 60.0, started_file: Path | None = None) -> Any:
    """Wrap ``inner`` so that statements containing SLOW_MARKER wait up to ``delay`` seconds (or
    until canceled: 57014 "canceling statement due to user request"); others run normally."""
    import threading

    from dpsql.proxy.backends.base import Backend, BackendSession, ResultSet, query_canceled

    class SlowSession(BackendSession):
        def __init__(self, s: BackendSession) -> None:
            self.inner = s
            self.event = threading.Event()

        def execute(self, sql: str, *, timeout: float | None = None) -> ResultSet:
            if SLOW_MARKER in sql:
                self.event.clear()
                if started_file is not None:
                    started_file.write_text("started")
                limit = delay if timeout is None else min(delay, timeout)
                if self.event.wait(limit):
                    raise query_canceled("cancel")
                if timeout is not None and timeout <= delay:
                    raise query_canceled("timeout")
            return self.inner.execute(sql, timeout=timeout)

        def cancel(self) -> None:
            self.event.set()
            self.inner.cancel()

        def close(self) -> None:
            self.event.set()
            self.inner.close()

    class SlowBackend(Backend):
        dialect = inner.dialect

        def describe(self) -> dict[str, list[tuple[str, str]]]:
            return inner.describe()  # type: ignore[no-any-return]

        def session(self) -> BackendSession:
            return SlowSession(inner.session())

        def close(self) -> None:
            inner.close()

    return SlowBackend()


def slow_engine(policy_path: Path, **kwargs: Any) -> Any:
    """An Engine over the policy's DuckDB data whose SLOW_MARKER statements block."""
    from dpsql.policy import load_policy
    from dpsql.proxy.backends.duckdb import DuckDBBackend
    from dpsql.proxy.engine import Engine

    policy = load_policy(policy_path)
    return Engine(policy, slow_backend(DuckDBBackend(policy), **kwargs))


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed RSA certificate for 127.0.0.1/localhost (SHA-256); returns (cert, key) PEM paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path
