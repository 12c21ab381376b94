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
from pathlib import Path

import asyncpg
import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import pgcluster  # noqa: E402
from pgenv import PgEnv  # noqa: E402

from dpsql.examples.hospital import generate  # noqa: E402

PATIENTS, VISITS = 3000, 12000
TABLES = ("visits", "patients", "departments")


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
                # the same keys the DuckDB file declares (examples/hospital.py); dpsql does not
                # trust them on PostgreSQL (see test_unique_indexes_are_not_trusted_on_postgres)
                await conn.execute(
                    "ALTER TABLE public.patients ADD PRIMARY KEY (patient_id); "
                    "ALTER TABLE public.departments ADD PRIMARY KEY (department_id)"
                )
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


