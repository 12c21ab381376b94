"""Run the before/after examples in every module's docstrings (the rewriter passes in particular)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = (
    "dpsql", "dpsql.rewriter", "dpsql.rewriter.aggregates", "dpsql.accountant",
    "dpsql.proxy", "dpsql.proxy.backends", "dpsql.proxy.catalog", "dpsql.proxy.wire",
)


def _modules() -> list[str]:
    names = set(PACKAGES)
    for pkg in PACKAGES:
        module = importlib.import_module(pkg)
        for info in pkgutil.iter_modules(module.__path__, f"{pkg}."):
            if not info.ispkg:
                names.add(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


def test_rewriter_passes_have_examples() -> None:
    for name in ("parse", "allowlist", "bind", "flatten", "unit_paths", "analyze", "totalize", "bounds", "emit", "contribution"):
        module = importlib.import_module(f"dpsql.rewriter.{name}")
        tests = doctest.DocTestFinder().find(module)
        assert sum(len(t.examples) for t in tests) > 0, f"dpsql.rewriter.{name} has no doctest example"
