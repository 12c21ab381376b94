"""Fixtures of the client-compatibility tests: one server with the synthetic catalog over a small
hospital data set, on an ephemeral loopback port. Its backend makes queries that contain
``wirelib.SLOW_MARKER`` block until canceled, so clients' cancel paths can be exercised."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

for _dir in (str(Path(__file__).parent), str(Path(__file__).parent.parent / "wire")):
    if _dir not in sys.path:
        sys.path.insert(0, _dir)

from wirelib import slow_engine, write_policy  # noqa: E402

from dpsql.examples.hospital import generate  # noqa: E402
from dpsql.proxy.server import Running, start_in_thread  # noqa: E402


@pytest.fixture(scope="session")
def compat_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compat-hospital")
    generate(out, patients=2000, visits=8000)
    return out / "hospital.duckdb"


@pytest.fixture(scope="session")
def compat_server(tmp_path_factory: pytest.TempPathFactory, compat_db: Path) -> Iterator[Running]:
    """The server with the synthetic catalog; DP queries cost ε = 0.1 from a budget of 1000."""
    policy = write_policy(tmp_path_factory.mktemp("compat-policy"), compat_db, limits={"max_connections": 100})
    running = start_in_thread(policy, listen="127.0.0.1:0", engine=slow_engine(policy, delay=30.0), catalog="auto")
    assert running.server.ctx.catalog is not None, "the synthetic catalog did not load"
    yield running
    running.stop()
