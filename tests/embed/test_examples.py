"""The embedding examples run (DuckDB here; psycopg in tests/postgres/test_embed.py) and the
Spark sketch is valid code that imports without pyspark."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


def test_duckdb_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dpsql.examples.embed_duckdb import main

    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "department | count | avg" in out and "diagnosis | count" in out
    assert out.count("NOTICE: dpsql: this query spent ε=0.5") == 2
    assert (tmp_path / "dpsql-ledger.sqlite").exists()


def test_spark_sketch_imports_without_pyspark() -> None:
    module = importlib.import_module("dpsql.examples.embed_spark")
    assert callable(module.main) and callable(module.spark_runner) and callable(module.describe_spark)
