"""Shared helpers of the embedding-API tests (a module name of its own, like ``pgenv``)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dpsql.accountant import mechanisms
from dpsql.accountant import noise as noise_module
from dpsql.proxy.backends.base import BackendSession

TESTS = Path(__file__).resolve().parent.parent

HOSPITAL_TABLES = """
[tables.visits]
privacy_unit = "patient_id"
max_groups = {max_groups}
max_rows = 5
[tables.visits.columns]
visit_date = {{}}
department_id = {{ values = [1, 2, 3, 4, 5, 6, 7, 8] }}
department = {{ values = ["emergency", "general medicine", "cardiology", "orthopedics", "pediatrics", "oncology", "neurology",
                         "obstetrics"] }}
diagnosis = {{}}
age = {{ lower = 0, upper = 100 }}
sex = {{ values = ["F", "M"] }}
cost = {{ lower = 0.0, upper = 5000.0 }}
length_of_stay = {{ lower = 0, upper = 30 }}
[tables.patients]
privacy_unit = "patient_id"
[tables.patients.columns]
birth_year = {{ lower = 1920, upper = 2025 }}
region = {{ values = ["central", "north", "south", "east", "west", "riverside", "harbor", "lakeside", "hills", "uplands"] }}
[tables.departments]
public = true
"""


def policy_text(source: str, ledger: str, *, epsilon: float = 1000.0, delta: float = 1e-3, max_groups: int = 3,
                server: str = "", users: str = "[users.alice]\n[users.bob]\n", privacy: str = "") -> str:
    """A policy over the hospital tables; ``source``/``ledger`` are TOML lines. No passwords: the
    default ``[server] auth`` is scram, which in-process use must not need."""
    return "\n".join([
        "[source]", source, server,
        "[privacy]", "default_epsilon = 1.0", "default_delta = 1e-7", "max_epsilon_per_query = 2.0", privacy,
        "[privacy.ledger]", ledger,
        "[budget]", f"epsilon = {epsilon}", f"delta = {delta}",
        users,
    ]) + HOSPITAL_TABLES.format(max_groups=max_groups)  # fmt: skip


def parity_queries() -> dict[str, str]:
    """The query shapes of the DuckDB/PostgreSQL parity suite (tests/postgres/test_engine_parity.py)."""
    return dict(_load("test_engine_parity_shapes", TESTS / "postgres" / "test_engine_parity.py").QUERIES)


def _load(name: str, path: Path) -> ModuleType:
    here = str(path.parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _exact_threshold_release(self: Any, counts: dict[int, int]) -> dict[int, int]:
    """The threshold mechanism without noise: keeps groups with ≥ threshold units (exact counts)."""
    return {i: c for i, c in counts.items() if c >= self.threshold}


def zero_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the samplers (and the threshold mechanism's noise) by zero noise, in this test only:
    dpsql has no seeded mode, so this is how two paths are compared bit for bit."""
    monkeypatch.setattr(noise_module, "_sampler", lambda s: (lambda n: [0] * n))
    for threshold in (mechanisms.GaussianThreshold, mechanisms.LaplaceThreshold):
        monkeypatch.setattr(threshold, "release", _exact_threshold_release)


def session_runner(session: BackendSession) -> Any:
    """A runner over a dpsql backend session (the caller's engine, in these tests)."""

    def run(sql: str) -> tuple[Sequence[str], list[tuple[Any, ...]]]:
        rs = session.execute(sql)
        return rs.columns, rs.rows

    return run
