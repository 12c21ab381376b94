"""A private, data-free DuckDB for post-processing: HAVING/ORDER BY/LIMIT over noisy values, and the
``dpsql.budget`` view.

It holds no table and can read no file: the only rows it sees are passed in as parameters (noisy
values, or budget figures), so nothing it computes can reveal an exact value.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import duckdb

from dpsql.errors import DPSQLError, ExecutionFailed

_CONFIG = {
    "threads": 1,
    "memory_limit": "256MB",
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "enable_external_access": False,
}


class PostProcessor:
    """Runs post-processing SQL over rows given as typed column lists (``UNNEST`` of parameters)."""

    def __init__(self) -> None:
        self._con = duckdb.connect(":memory:", config=dict(_CONFIG))
        self._con.execute("SET lock_configuration = true")
        self._local = threading.local()
        self._lock = threading.Lock()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self._con.cursor()
            self._local.cursor = cur
        return cur

    def run(
        self, table: str, columns: Sequence[tuple[str, str]], data: Sequence[Sequence[Any]], sql: str
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run ``sql`` (DuckDB dialect, one SELECT reading ``table``) over the given columns.

        ``columns`` are (name, DuckDB type) pairs and ``data`` one value list per column. Returns
        the result's column names and rows. Errors are DPSQLError with a message of dpsql's own
        (the values here are all noisy or public, but the engine's wording is not ours to show).
        """
        if columns:
            parts = ", ".join(f"UNNEST(?::{t}[]) AS {name}" for name, t in columns)
            source = f"SELECT {parts}"
        else:
            source = "SELECT 1 AS __dp_dummy"
        query = f"WITH {table} AS ({source}) {sql}"
        try:
            cur = self._cursor()
            rel = cur.execute(query, [list(col) for col in data])
            names = [d[0] for d in rel.description]
            return names, rel.fetchall()
        except DPSQLError:
            raise
        except duckdb.Error as e:
            raise ExecutionFailed(
                f"post-processing the noisy result failed ({type(e).__name__})",
                hint="check the expressions in the select list, HAVING and ORDER BY",
            ) from None

    def close(self) -> None:
        """Release the DuckDB connection."""
        self._con.close()
