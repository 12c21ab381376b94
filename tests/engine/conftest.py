"""Engine-level fixtures: the hospital example data (small), policies written per test with their
own ledger, and a backend wrapper that records what the engine executes and when it charges."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dpsql.examples.hospital import generate
from dpsql.policy import Policy, load_policy
from dpsql.proxy.backends.base import Backend, BackendSession, ResultSet
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.engine import Engine

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

PATIENTS, VISITS = 3000, 12000


@pytest.fixture(scope="session")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small hospital data set (3,000 patients, 12,000 visits); returns its directory."""
    out = tmp_path_factory.mktemp("hospital")
    generate(out, patients=PATIENTS, visits=VISITS)
    return out


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


@pytest.fixture
def write_policy(tmp_path: Path, hospital: Path) -> Callable[..., Path]:
    """Write a policy over the hospital data (own ledger in tmp_path) and return its path."""

    def write(name: str = "policy.toml", *, database: Path | None = None, **options: Any) -> Path:
        path = tmp_path / name
        ledger = tmp_path / f"{path.stem}-ledger.sqlite"
        path.write_text(policy_text(database or hospital / "hospital.duckdb", ledger, **options))
        return path

    return write


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


@pytest.fixture
def make_harness(write_policy: Callable[..., Path]) -> Iterator[Callable[..., Harness]]:
    """Build engines over recording backends; all are closed after the test."""
    made: list[Engine] = []

    def make(*, fail_on: Callable[[str], bool] | None = None, **options: Any) -> Harness:
        path = write_policy(f"policy{len(made)}.toml", **options)
        policy = load_policy(path)
        recorder = Recorder()
        engine = Engine(policy, RecordingBackend(DuckDBBackend(policy), recorder, fail_on))
        charge = engine.ledger.charge

        def recording_charge(*args: Any, **kwargs: Any) -> Any:
            receipt = charge(*args, **kwargs)  # the event is recorded once the charge has committed
            recorder.add("charge", str(args[4] if len(args) > 4 else ""))
            return receipt

        engine.ledger.charge = recording_charge  # type: ignore[method-assign]
        made.append(engine)
        return Harness(engine, recorder, policy)

    yield make
    for engine in made:
        engine.close()
