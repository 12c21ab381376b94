"""Engine-level fixtures: the hospital example data (small), policies written per test with their
own ledger, and engines over a recording backend (see engine_lib)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dpsql.examples.hospital import generate
from dpsql.policy import load_policy
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.engine import Engine

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from engine_lib import PATIENTS, VISITS, Harness, Recorder, RecordingBackend, policy_text  # noqa: E402


@pytest.fixture(scope="session")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small hospital data set (3,000 patients, 12,000 visits); returns its directory."""
    out = tmp_path_factory.mktemp("hospital")
    generate(out, patients=PATIENTS, visits=VISITS)
    return out


@pytest.fixture
def write_policy(tmp_path: Path, hospital: Path) -> Callable[..., Path]:
    """Write a policy over the hospital data (own ledger in tmp_path) and return its path."""

    def write(name: str = "policy.toml", *, database: Path | None = None, **options: Any) -> Path:
        path = tmp_path / name
        ledger = tmp_path / f"{path.stem}-ledger.sqlite"
        path.write_text(policy_text(database or hospital / "hospital.duckdb", ledger, **options))
        return path

    return write


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
