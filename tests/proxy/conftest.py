"""Fixtures for the execution backend tests: a small DuckDB source, Parquet/CSV files and policies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dpsql.policy import Policy, policy_from_dict
from dpsql.proxy.backends.duckdb import DuckDBBackend

SECRET = "abc"  # a private value that must never appear in an error


def _base_policy() -> dict[str, Any]:
    return {
        "server": {"auth": "trust"},
        "budget": {"epsilon": 10.0, "delta": 1e-6},
        "users": {"alice": {}},
    }


@pytest.fixture
def source_db(tmp_path: Path) -> Path:
    """A DuckDB file with a private table of many column types and a second schema."""
    path = tmp_path / "source.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        f"""
        CREATE TABLE visits AS SELECT
            range::BIGINT AS patient_id,
            (range % 90)::INTEGER AS age,
            range::SMALLINT AS small,
            range::TINYINT AS tiny,
            range::UTINYINT AS utiny,
            range::USMALLINT AS usmall,
            range::UINTEGER AS uint,
            range::UBIGINT AS ubig,
            (range * 1000000000000)::HUGEINT AS huge,
            (range * 1.5)::DOUBLE AS cost,
            range::FLOAT AS f4,
            (range / 7)::DECIMAL(10, 2) AS dec,
            '{SECRET}' AS s,
            (range % 2 = 0) AS flag,
            DATE '2024-01-01' + range::INTEGER AS d,
            TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (range) HOUR AS ts,
            TIMESTAMPTZ '2024-01-01 00:00:00+00' AS tstz,
            TIME '12:00:00' AS t,
            INTERVAL (range) DAY AS iv,
            'x'::BLOB AS b,
            uuid() AS u
        FROM range(100)
        """
    )
    con.execute("CREATE TABLE Hidden AS SELECT 1 AS x")
    con.execute("CREATE SCHEMA sales")
    con.execute('CREATE TABLE sales."Orders" AS SELECT range AS customer_id, range * 2.0 AS "Amount" FROM range(10)')
    con.close()
    return path


@pytest.fixture
def data_files(tmp_path: Path) -> dict[str, Path]:
    """A Parquet file and a CSV file holding small public/private tables."""
    parquet = tmp_path / "departments.parquet"
    csv = tmp_path / "labs.csv"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT range::INTEGER AS department_id, 'dept' || range AS name FROM range(8)) TO '{parquet}' (FORMAT parquet)")
    con.execute(
        f"COPY (SELECT range AS patient_id, range % 5 AS test, range * 0.5 AS value FROM range(50)) TO '{csv}' (FORMAT csv, HEADER)"
    )
    con.close()
    return {"parquet": parquet, "csv": csv}


@pytest.fixture
def make_policy(tmp_path: Path) -> Callable[..., Policy]:
    """Build a Policy from table sections (and optional extra top-level sections)."""

    def make(tables: dict[str, Any], **extra: Any) -> Policy:
        data = _base_policy() | {"tables": tables} | extra
        return policy_from_dict(data, tmp_path / "policy.toml")

    return make


@pytest.fixture
def policy(make_policy: Callable[..., Policy], source_db: Path, data_files: dict[str, Path]) -> Policy:
    """A policy over the source database plus a Parquet- and a CSV-mapped table."""
    return make_policy(
        {
            "visits": {
                "privacy_unit": "patient_id",
                "columns": {"age": {"lower": 0, "upper": 100}, "cost": {"lower": 0, "upper": 500}, "s": {}},
            },
            "sales.orders": {
                "privacy_unit": "customer_id",
                "columns": {"amount": {"lower": 0, "upper": 100}},
            },
            "departments": {"public": True, "file": str(data_files["parquet"])},
            "labs": {"privacy_unit": "patient_id", "file": str(data_files["csv"])},
        },
        source={"duckdb": str(source_db)},
    )


@pytest.fixture
def backend(policy: Policy) -> Iterator[DuckDBBackend]:
    """A DuckDBBackend over :func:`policy`, closed after the test."""
    b = DuckDBBackend(policy)
    yield b
    b.close()
