"""Shared helpers of the Spark tests (a module name of its own, like ``pgenv``)."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sparkserver

_PG = str(Path(__file__).parent.parent / "postgres")
if _PG not in sys.path:
    sys.path.insert(0, _PG)

from pgenv import policy_text  # noqa: E402  (the hospital policy the PostgreSQL parity suite uses)


@dataclass
class SparkEnv:
    """The running server and the hospital data (DuckDB file and Parquet files side by side)."""

    server: sparkserver.Server
    hospital: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def duckdb_path(self) -> Path:
        return self.hospital / "hospital.duckdb"

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A plain pyspark Spark Connect session on the server (for setting up and probing)."""
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyspark(\..*)?$")
        from pyspark.sql import SparkSession

        s = SparkSession.builder.remote(self.url).create()
        try:
            yield s
        finally:
            with contextlib.suppress(Exception):
                s.stop()


def source_line(env: SparkEnv, kind: str, *, ansi: bool = True) -> str:
    """The ``[source]`` lines serving the hospital data on ``kind`` ("duckdb" or "spark")."""
    if kind == "duckdb":
        return f'duckdb = "{env.duckdb_path}"'
    return f'spark = "{env.url}"' + ("" if ansi else "\nspark_ansi = false")


def write_policy(tmp: Path, name: str, env: SparkEnv, kind: str, *, ansi: bool = True, **options: Any) -> Path:
    """A hospital policy file for ``kind`` with its own SQLite ledger (options as pgenv.policy_text)."""
    path = tmp / f"{name}-{kind}{'' if ansi else '-noansi'}.toml"
    ledger = f'path = "{tmp / (path.stem + ".sqlite")}"'
    if "statement_timeout" not in options.get("extra", ""):
        # the first jobs of a cold local-mode server (JIT, codegen) can take long on a busy machine
        options["extra"] = options.get("extra", "") + '\n[limits]\nstatement_timeout = "300s"\n'
    path.write_text(policy_text(source_line(env, kind, ansi=ansi), ledger=ledger, **options))
    return path
