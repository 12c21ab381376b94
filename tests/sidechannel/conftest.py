"""Fixtures of the side-channel audit: twin servers over databases with and without the target
unit, and switches that only tests have (the timing shield off, unsafe rewrites injected)."""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from sidechannel_lib import Twin, twin_servers  # noqa: E402


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twin]:
    """Twin servers (with / without the target unit) on ephemeral loopback ports."""
    with twin_servers(tmp_path_factory.mktemp("twin")) as t:
        yield t


TRY_MARKER = "try-amplifier:"
_MARKED = re.compile(r"'try-amplifier:([A-Za-z]+)'")


def try_probe(city: str = "Rareville") -> str:
    """The SQL of the TRY-amplifier control whose failing rows are those of ``city``."""
    return f"SELECT COUNT(*) FROM payments WHERE code <> '{TRY_MARKER}{city}'"


def _try_amplifier(city: str, terms: int = 60) -> str:
    """A DuckDB row expression that runs ``terms`` TRY()s which fail on ``city``'s rows only:
    the TRY slow path this control reintroduces (the product must never emit it)."""
    term = ("(CASE WHEN TRY(\"payments\".\"paid_on\" + TRY((CASE WHEN \"payments\".\"city\" = '" + city + "' "
            "THEN 2000000000 + {i} ELSE 1 END) * INTERVAL '1' DAY)) IS NULL THEN 1 ELSE 0 END)")
    return "CAST(" + " + ".join(term.format(i=i) for i in range(terms)) + " AS VARCHAR)"


@pytest.fixture
def try_amplifier(twin: Twin, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Patch both engines' rewrite so that a :func:`try_probe`'s bounded SQL compares each row's
    code with a TRY amplifier (tests only; undone after the test); returns :func:`try_probe`."""
    for engine in twin.engines():
        original: Callable[[str], Any] = engine.rewrite

        def rewrite(sql: str, original: Callable[[str], Any] = original) -> Any:
            rw = original(sql)
            m = _MARKED.search(rw.sql)
            if m is None:
                return rw
            return dataclasses.replace(rw, sql=rw.sql.replace(m.group(0), _try_amplifier(m.group(1))))

        monkeypatch.setattr(engine, "rewrite", rewrite)
    return try_probe


@pytest.fixture
def growth_limit_off(twin: Twin, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Disable the rewriter's per-row text bounds — growth, literal text, text work (tests only).
    The twins' rewrite caches are emptied before and after, so no rewrite accepted without the
    bounds outlives the test."""
    import dpsql.rewriter.functions as functions

    for name in ("MAX_TEXT_GROWTH", "MAX_TEXT_CONSTANT", "MAX_TEXT_WORK"):
        monkeypatch.setattr(functions, name, 10**15, raising=False)
    for engine in twin.engines():
        engine._rewrites.clear()
    yield
    for engine in twin.engines():
        engine._rewrites.clear()
