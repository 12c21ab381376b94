"""PostgreSQL test fixtures: one throwaway cluster per test session, loaded with the hospital data.

The cluster (see ``pgcluster``) holds:

* database ``hospital`` with ``visits``, ``patients`` and ``departments`` COPYed from the same
  DuckDB file the DuckDB backend serves, owned by the superuser; ``REVOKE CREATE ON SCHEMA
  public FROM PUBLIC`` (the CVE-2018-1058 mitigation dpsql checks for);
* role ``reader`` with exactly the GRANTs the README documents: CONNECT on the database, USAGE
  on ``public``, SELECT on the three tables, ``default_transaction_read_only = on``;
* role ``ledger`` with CREATE on database ``ledger`` (for PostgreSQL budget ledgers).

Without PostgreSQL server binaries the tests skip, unless ``CI`` is set: then they fail, since
``.ci/run`` installs PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import pgcluster  # noqa: E402

from dpsql.examples.hospital import generate  # noqa: E402

PATIENTS, VISITS = 3000, 12000
TABLES = ("visits", "patients", "departments")


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


def _require_postgres() -> None:
    problem = None
    if pgcluster.find_bindir() is None:
        problem = "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found (pg_config --bindir, /usr/lib/postgresql/*/bin)"
    elif os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(pgcluster.SUPERUSER)
        except KeyError:
            problem = "running as root but there is no 'postgres' OS user to run the server as"
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem}; CI is set, so this is an error: .ci/run installs postgresql")
    pytest.skip(f"{problem}; install postgresql (apt-get install postgresql) to run the PostgreSQL tests")


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgEnv]:
    """A started cluster with the hospital data and the reader/ledger roles (stopped at the end)."""
    _require_postgres()
    hospital = tmp_path_factory.mktemp("pg-hospital")
    generate(hospital, patients=PATIENTS, visits=VISITS)
    cluster = pgcluster.start_cluster()
    try:
        env = PgEnv(cluster, hospital)

        async def setup() -> None:
            conn = await asyncpg.connect(cluster.dsn())
            try:
                await conn.execute(cluster.add_role("reader"))
                await conn.execute(cluster.add_role("ledger"))
                await conn.execute("CREATE DATABASE hospital")
                await conn.execute("CREATE DATABASE ledger")
                await conn.execute("GRANT CONNECT, CREATE ON DATABASE ledger TO ledger")
            finally:
                await conn.close()
            conn = await asyncpg.connect(cluster.dsn(pgcluster.SUPERUSER, "hospital"))
            try:
                await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
                await pgcluster.copy_duckdb_tables(conn, env.duckdb_path, TABLES)
                await conn.execute(
                    "GRANT CONNECT ON DATABASE hospital TO reader; GRANT USAGE ON SCHEMA public TO reader; "
                    "GRANT SELECT ON public.visits, public.patients, public.departments TO reader; "
                    "ALTER ROLE reader SET default_transaction_read_only = on"
                )
            finally:
                await conn.close()
            conn = await asyncpg.connect(cluster.dsn(pgcluster.SUPERUSER, "ledger"))
            try:
                await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            finally:
                await conn.close()

        asyncio.run(setup())
        yield env
    finally:
        cluster.stop()


@pytest.fixture
def ledger_schema() -> str:
    """A fresh schema name for one test's PostgreSQL ledger."""
    return f"ledger_{secrets.token_hex(6)}"


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
) -> str:
    """A policy over the hospital tables. ``source`` and ``ledger`` are TOML lines
    (``duckdb = "…"`` / ``postgres = "…"``; ``path = "…"`` / ``url = "…"``)."""
    lines = [
        "[source]", source,
        "[server]", 'auth = "trust"',
        "[privacy]", f'accounting = "{accounting}"', "default_epsilon = 1.0", "default_delta = 1e-7", "max_epsilon_per_query = 2.0",
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
