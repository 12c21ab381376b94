"""The docstring examples of every module of dpsql.proxy.catalog (tests/test_doctests.py does not list the subpackage)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import dpsql.proxy.catalog as package

MODULES = sorted(["dpsql.proxy.catalog", *(m.name for m in pkgutil.iter_modules(package.__path__, "dpsql.proxy.catalog."))])


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
