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
) -> Path:
    """A policy over the hospital data with users alice and bob and its own ledger; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    lines = [
        "[source]",
        f'duckdb = "{database}"',
        "[server]",
        'listen = "127.0.0.1:0"',
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
