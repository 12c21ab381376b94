"""Shared helpers of the PostgreSQL tests (a module name of its own: several test directories
put their ``conftest`` on ``sys.path``, so ``from conftest import …`` would be ambiguous)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pgcluster


@dataclass
class PgEnv:
    """The running cluster, the hospital data on both engines, and connection URLs."""

    cluster: pgcluster.Cluster
    hospital: Path  # directory holding hospital.duckdb (the same rows as PostgreSQL's)

    @property
    def duckdb_path(self) -> Path:
        return self.hospital / "hospital.duckdb"

    @property
    def reader_dsn(self) -> str:
        return self.cluster.dsn("reader", "hospital")

    @property
    def admin_dsn(self) -> str:
        return self.cluster.dsn(pgcluster.SUPERUSER, "hospital")

    @property
    def ledger_dsn(self) -> str:
        return self.cluster.dsn("ledger", "ledger")

    def sql(self, *statements: str, database: str = "hospital") -> list[Any]:
        """Run statements as the superuser; return the last one's rows."""

        async def go() -> list[Any]:
            conn = await asyncpg.connect(self.cluster.dsn(pgcluster.SUPERUSER, database))
            try:
                rows: list[Any] = []
                for s in statements:
                    rows = await conn.fetch(s)
                return rows
            finally:
                await conn.close()

        return asyncio.run(go())


HOSPITAL_TABLES = """
[tables.visits]
privacy_unit = "patient_id"
max_groups = {max_groups}
max_rows = 5
[tables.visits.columns]
visit_date = {{}}
department_id = {{ values = [1, 2, 3, 4, 5, 6, 7, 8] }}
department = {{ values = ["emergency", "general medicine", "cardiology", "orthopedics", "pediatrics", "oncology", "neurology",
                         "obstetrics"] }}
diagnosis = {{}}
age = {{ lower = 0, upper = 100 }}
sex = {{ values = ["F", "M"] }}
cost = {{ lower = 0.0, upper = 5000.0 }}
length_of_stay = {{ lower = 0, upper = 30 }}
[tables.patients]
privacy_unit = "patient_id"
[tables.patients.columns]
birth_year = {{ lower = 1920, upper = 2025 }}
region = {{ values = ["central", "north", "south", "east", "west", "riverside", "harbor", "lakeside", "hills", "uplands"] }}
[tables.departments]
public = true
"""


def policy_text(
    source: str,
    *,
    ledger: str,
    epsilon: float = 10.0,
    delta: float = 1e-6,
    accounting: str = "zcdp",
    max_groups: int = 3,
    global_epsilon: float | None = None,
    extra: str = "",
    replay: str | None = None,
    privacy_extra: str = "",
) -> str:
    """A policy over the hospital tables. ``source`` and ``ledger`` are TOML lines
    (``duckdb = "…"`` / ``postgres = "…"``; ``path = "…"`` / ``url = "…"``)."""
    lines = [
        "[source]", source,
        "[server]", 'auth = "trust"',
        "[privacy]", f'accounting = "{accounting}"', "default_epsilon = 1.0", "default_delta = 1e-7", "max_epsilon_per_query = 2.0",
        *([f'replay = "{replay}"'] if replay is not None else []), *([privacy_extra] if privacy_extra else []),
        "[privacy.ledger]", ledger,
        "[budget]", f"epsilon = {epsilon}", f"delta = {delta}",
    ]  # fmt: skip
    if global_epsilon is not None:
        lines += ["[budget.global]", f"epsilon = {global_epsilon}", f"delta = {delta * 10}"]
    lines += ["[users.alice]", "[users.bob]"]
    return "\n".join(lines) + "\n" + HOSPITAL_TABLES.format(max_groups=max_groups) + "\n" + extra


def source_line(pg: PgEnv, kind: str) -> str:
    """The ``[source]`` line serving the hospital data on ``kind`` ("duckdb" or "postgres")."""
    return f'duckdb = "{pg.duckdb_path}"' if kind == "duckdb" else f'postgres = "{pg.reader_dsn}"'
