"""The candidate-group phase of partition selection: raw candidate groups are never converted in
Python before the threshold — only the released groups' keys are coerced and their statistics
read — so the phase's per-candidate work is OpenDP's one vector draw (the rest is inside the
timing shield: test_timing_audit.test_candidate_group_phase)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest
from sidechannel_lib import make_database, write_policy

import dpsql.proxy.release as release_module
from dpsql.api import open_engine
from dpsql.proxy.engine import Engine
from dpsql.proxy.timing import TimingShield


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    d = tmp_path_factory.mktemp("candidates")
    e = open_engine(write_policy(d, make_database(d / "t.duckdb", with_target=True, units=3000)))
    e.shield = TimingShield(enabled=False)
    yield e
    e.close()


@pytest.fixture
def coerced(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    real = release_module.coerce

    def counting(value: Any, pg_type: str) -> Any:
        calls.append(value)
        return real(value, pg_type)

    monkeypatch.setattr(release_module, "coerce", counting)
    return calls


def test_unreleased_candidates_are_never_coerced(engine: Engine, coerced: list[Any]) -> None:
    s = engine.session("alice")
    r = s.execute("SELECT note, COUNT(*) FROM payments GROUP BY note")  # ~3,000 one-unit candidates
    assert r.rows == [] and coerced == []


def test_released_groups_are_coerced_once_each(engine: Engine, coerced: list[Any]) -> None:
    s = engine.session("alice")
    s.settings.epsilon = Fraction(2)
    r = s.execute("SELECT city, COUNT(*) FROM payments GROUP BY city")  # 12 cities of 250 units, + Rareville
    assert 0 < len(r.rows) <= 13
    assert len(coerced) == len(r.rows)
    assert all(isinstance(c, str) for c in coerced)
