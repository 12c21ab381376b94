"""Fixtures of the wire tests: a small hospital data set, a policy with SCRAM users, and a server
running in-process on an ephemeral loopback port (without the synthetic catalog, so these tests
exercise the protocol layer alone)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from wirelib import write_policy  # noqa: E402

from dpsql.examples.hospital import generate  # noqa: E402
from dpsql.proxy.server import Running, start_in_thread  # noqa: E402


@pytest.fixture(scope="session")
def hospital_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small hospital DuckDB file (2,000 patients, 8,000 visits)."""
    out = tmp_path_factory.mktemp("wire-hospital")
    generate(out, patients=2000, visits=8000)
    return out / "hospital.duckdb"


@pytest.fixture(scope="session")
def wire_policy(tmp_path_factory: pytest.TempPathFactory, hospital_db: Path) -> Path:
    limits = {"max_connections": 250, "max_connections_per_user": 125}
    return write_policy(tmp_path_factory.mktemp("wire-policy"), hospital_db, limits=limits)


@pytest.fixture(scope="session")
def server(wire_policy: Path) -> Iterator[Running]:
    """A server over the hospital data (no synthetic catalog), shared by the module's tests."""
    running = start_in_thread(wire_policy, listen="127.0.0.1:0", catalog=None)
    yield running
    running.stop()
