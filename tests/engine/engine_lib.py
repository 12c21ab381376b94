"""Helpers for the engine tests: policies over the hospital data, and a backend wrapper that
records what the engine executes and when it charges (imported by conftest.py and the tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dpsql.policy import Policy
from dpsql.proxy.backends.base import Backend, BackendSession, ResultSet
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.engine import Engine

PATIENTS, VISITS = 3000, 12000


def policy_text(
    database: Path,
    ledger: Path,
    *,
    accounting: str = "zcdp",
    epsilon: float = 10.0,
    delta: float = 1e-6,
    session_epsilon: float | None = None,
    global_epsilon: float | None = None,
    default_epsilon: float = 1.0,
    default_delta: float = 1e-7,
    max_epsilon: float = 2.0,
    tables: str | None = None,
    extra: str = "",
    extra_privacy: str = "",
) -> str:
    """A complete policy (hospital tables unless ``tables`` is given) as TOML text."""
    head = [
        "[source]",
        f'duckdb = "{database}"',
        "[server]",
        'auth = "trust"',
        "[privacy]",
        f'accounting = "{accounting}"',
        f"default_epsilon = {default_epsilon}",
        f"default_delta = {default_delta}",
        f"max_epsilon_per_query = {max_epsilon}",
        extra_privacy,
        "[privacy.ledger]",
        f'path = "{ledger}"',
        "[budget]",
        f"epsilon = {epsilon}",
        f"delta = {delta}",
    ]
    if session_epsilon is not None:
        head.append(f"session_epsilon = {session_epsilon}")
    if global_epsilon is not None:
        head += ["[budget.global]", f"epsilon = {global_epsilon}", f"delta = {delta * 10}"]
    head += ["[users.alice]", "[users.bob]"]
    return "\n".join(head) + "\n" + (tables if tables is not None else HOSPITAL_TABLES) + "\n" + extra


HOSPITAL_TABLES = """
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


@dataclass
class Event:
    """One thing the engine did: ("execute", sql) on the backend or ("charge", query hash)."""

    kind: str
    detail: str


@dataclass
class Recorder:
    """Everything a RecordingBackend and a wrapped ledger saw, in order."""

    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, detail: str) -> None:
        with self.lock:
            self.events.append(Event(kind, detail))

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def executed(self) -> list[str]:
        return [e.detail for e in self.events if e.kind == "execute"]


class RecordingSession(BackendSession):
    """A backend session that records each statement before running it."""

    def __init__(self, inner: BackendSession, recorder: Recorder, fail_on: Callable[[str], bool] | None) -> None:
        self.inner = inner
        self.recorder = recorder
        self.fail_on = fail_on

    def execute(self, sql: str, *, timeout: float | None = None) -> ResultSet:
        self.recorder.add("execute", sql)
        if self.fail_on is not None and self.fail_on(sql):
            sql = "SELECT CAST('secret-value-abc' AS INTEGER) AS x"  # a real engine error quoting a value
        return self.inner.execute(sql, timeout=timeout)

    def cancel(self) -> None:
        self.inner.cancel()

    def close(self) -> None:
        self.inner.close()


class RecordingBackend(Backend):
    """A DuckDBBackend whose sessions record (and optionally sabotage) what they execute."""

    def __init__(self, inner: DuckDBBackend, recorder: Recorder, fail_on: Callable[[str], bool] | None = None) -> None:
        self.inner = inner
        self.recorder = recorder
        self.fail_on = fail_on
        self.dialect = inner.dialect

    def describe(self) -> dict[str, list[tuple[str, str]]]:
        return self.inner.describe()

    def session(self) -> BackendSession:
        return RecordingSession(self.inner.session(), self.recorder, self.fail_on)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Harness:
    """An engine over a recording backend whose ledger charges are recorded too."""

    engine: Engine
    recorder: Recorder
    policy: Policy


