"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb in a temporary directory, start
on an ephemeral loopback port (unix socket in the same directory), stop and remove at the end.

PostgreSQL refuses to run as root, so when this process is root the server binaries run as the
``postgres`` OS user (``runuser -u postgres``) and the directory is chowned to it. Passwords are
random per cluster; authentication on TCP is SCRAM-SHA-256.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPERUSER = "postgres"


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None when not installed."""
    candidates: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=False)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates += [os.path.dirname(p) for p in filter(None, [shutil.which("initdb")])]
    for c in candidates:
        d = Path(c)
        if all((d / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _version_key(path: str) -> tuple[int, ...]:
    parts = Path(path).parent.name.split(".")
    return tuple(int(p) for p in parts if p.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running throwaway cluster. :meth:`dsn` builds connection URLs for its roles."""

    bindir: Path
    root: Path
    port: int = 0
    passwords: dict[str, str] = field(default_factory=dict)
    as_postgres: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def dsn(self, user: str = SUPERUSER, database: str = "postgres", **params: str) -> str:
        """A ``postgresql://`` URL for ``user`` over TCP loopback (``sslmode=disable``: local only)."""
        pw = self.passwords[user]
        query = "&".join(f"{k}={v}" for k, v in {"sslmode": "disable", **params}.items())
        return f"postgresql://{user}:{pw}@127.0.0.1:{self.port}/{database}?{query}"

    def _cmd(self, args: Sequence[str]) -> list[str]:
        return ["runuser", "-u", SUPERUSER, "--", *args] if self.as_postgres else list(args)

    def run(self, args: Sequence[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a server binary (as the ``postgres`` user when we are root)."""
        return subprocess.run(self._cmd([str(self.bindir / args[0]), *args[1:]]), capture_output=True, text=True, check=check,
                              timeout=timeout, cwd=self.root)

    def start(self, settings: dict[str, str] | None = None) -> None:
        """initdb and start on a free loopback port; raise RuntimeError with the server log on failure."""
        self.as_postgres = os.geteuid() == 0
        self.socket_dir.mkdir()
        pwfile = self.root / "pw"
        self.passwords[SUPERUSER] = secrets.token_hex(12)
        pwfile.write_text(self.passwords[SUPERUSER] + "\n")
        if self.as_postgres:
            ent = pwd.getpwnam(SUPERUSER)
            for p in (self.root, self.socket_dir, pwfile):
                os.chown(p, ent.pw_uid, ent.pw_gid)
        self.root.chmod(0o700)
        init = self.run(
            ["initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}", "--auth-local=scram-sha-256",
             "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"],
            check=False,
        )  # fmt: skip
        pwfile.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        opts = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "200",
            "shared_buffers": "256MB",
            "log_min_messages": "warning",
            **(settings or {}),
        }
        last = ""
        for _ in range(5):
            self.port = _free_port()
            o = " ".join(f"-c {k}={v}" for k, v in {"port": str(self.port), **opts}.items())
            res = self.run(["pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", o, "-w", "-t", "60", "start"],
                           check=False)
            if res.returncode == 0:
                return
            last = res.stdout + res.stderr + self.log()
        raise RuntimeError(f"PostgreSQL did not start:\n{last}")

    def log(self) -> str:
        """The server log so far (empty if none)."""
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def add_role(self, name: str, options: str = "LOGIN") -> str:
        """Record a random password for ``name``; return the SQL that creates the role."""
        pw = self.passwords[name] = secrets.token_hex(12)
        return f"CREATE ROLE {name} {options} PASSWORD '{pw}'"

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove the directory; idempotent."""
        if self.data.is_dir():
            self.run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60", "stop"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(settings: dict[str, str] | None = None) -> Cluster:
    """A started cluster in a fresh temporary directory (stop it with :meth:`Cluster.stop`)."""
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found")
    cluster = Cluster(bindir=bindir, root=Path(tempfile.mkdtemp(prefix="dpsql-pg-")))
    try:
        cluster.start(settings)
    except BaseException:
        cluster.stop()
        raise
    return cluster


# ------------------------------------------------------------------------------------ data loading

_DUCK_TO_PG = {
    "BIGINT": "int8",
    "INTEGER": "int4",
    "SMALLINT": "int2",
    "TINYINT": "int2",
    "DOUBLE": "float8",
    "FLOAT": "float4",
    "VARCHAR": "text",
    "BOOLEAN": "bool",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "HUGEINT": "numeric",
}


def pg_type_for_duckdb(duck_type: str) -> str:
    """The PostgreSQL column type for a DuckDB type name (DECIMAL(p,s) → numeric(p,s))."""
    t = duck_type.upper()
    if t.startswith("DECIMAL"):
        return "numeric" + t[len("DECIMAL"):]
    return _DUCK_TO_PG[t]


async def copy_duckdb_tables(conn: Any, duckdb_path: Path, tables: Iterable[str], *, schema: str = "public",
                             batch: int = 200_000) -> dict[str, int]:
    """Create each DuckDB table of ``duckdb_path`` in PostgreSQL (same columns, mapped types) and
    COPY its rows in (binary COPY through asyncpg); return the row counts. ``conn`` is an asyncpg
    connection with CREATE on ``schema``."""
    import duckdb

    counts: dict[str, int] = {}
    con = duckdb.connect(str(duckdb_path), read_only=True)
    try:
        for table in tables:
            cols = con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main' "
                "AND database_name = current_database() ORDER BY column_index",
                [table],
            ).fetchall()
            ddl = ", ".join(f'"{c}" {pg_type_for_duckdb(t)}' for c, t in cols)
            await conn.execute(f'CREATE TABLE "{schema}"."{table}" ({ddl})')
            cur = con.cursor()
            cur.execute(f'SELECT * FROM "{table}"')
            n = 0
            while rows := cur.fetchmany(batch):
                await conn.copy_records_to_table(table, schema_name=schema, records=rows, columns=[c for c, _ in cols])
                n += len(rows)
            cur.close()
            counts[table] = n
            await conn.execute(f'ANALYZE "{schema}"."{table}"')
    finally:
        con.close()
    return counts


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes; return its last value."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(interval)
