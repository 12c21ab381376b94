"""Helpers of the client-compatibility tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]


def missing(what: str) -> NoReturn:
    """Skip (locally) or fail (under CI, where .ci/run installs every client) for a missing client."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing; .ci/run should have installed it")
    pytest.skip(f"{what} is not installed here (run .ci/run's install steps to test it)")


def need_tool(name: str, path: str | None = None) -> str:
    """The path of an executable, or skip/fail."""
    found = path if path and Path(path).exists() else shutil.which(name)
    if not found:
        missing(name)
    return str(found)
