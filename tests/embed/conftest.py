"""Embedding-API fixtures: the hospital data (small) and policies without passwords."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dpsql.examples.hospital import generate

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from embedlib import policy_text  # noqa: E402


@pytest.fixture(scope="session")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small hospital data set (2,000 patients, 8,000 visits); returns its DuckDB file."""
    out = tmp_path_factory.mktemp("embed-hospital")
    generate(out, patients=2000, visits=8000)
    return out / "hospital.duckdb"


@pytest.fixture
def write_policy(tmp_path: Path, hospital: Path) -> Callable[..., Path]:
    """Write a policy over the hospital DuckDB file with its own SQLite ledger; returns its path."""
    count = [0]

    def write(name: str | None = None, **options: Any) -> Path:
        count[0] += 1
        stem = name or f"policy{count[0]}"
        path = tmp_path / f"{stem}.toml"
        path.write_text(policy_text(f'duckdb = "{hospital}"', f'path = "{tmp_path / (stem + "-ledger.sqlite")}"', **options))
        return path

    return write
