"""Embedding example: a PostgreSQL the caller owns, through psycopg 3.

    python -m dpsql.examples.embed_psycopg --dsn postgresql://me@localhost/mydb [--load] [--ledger-url URL]

The application keeps its own connection (read-only, with a statement timeout) and runs the
bounded SQL dpsql gives it; dpsql charges the ledger before, and releases the rows after.
``--load`` first creates and fills the hospital tables (``public.visits``, ``patients``,
``departments``) in that database from the synthetic data set (needs CREATE on ``public``).
``--ledger-url`` puts the budget ledger in PostgreSQL (shared with any ``dpsql serve`` on the
same policy); default: a SQLite file in the working directory given by ``--dir``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import duckdb
import psycopg

from dpsql.embed import Pipeline, dbapi_runner, describe_duckdb, describe_postgres
from dpsql.examples.embed_duckdb import write_policy
from dpsql.examples.hospital import generate
from dpsql.examples.hospital_policy import TABLES
from dpsql.policy import load_policy


def load_hospital(dsn: str, directory: Path) -> None:
    """Create the hospital tables in the database at ``dsn`` and copy the synthetic rows in."""
    generate(directory, patients=2000, visits=8000)
    src = duckdb.connect(str(directory / "hospital.duckdb"), read_only=True)
    try:
        policy = load_policy(write_policy(directory))
        described = describe_duckdb(src, policy)
        with psycopg.connect(dsn) as dst, dst.cursor() as cur:
            for table in TABLES:
                columns = described[f"public.{table}"]
                cur.execute(f"DROP TABLE IF EXISTS public.{table}")
                cur.execute(f"CREATE TABLE public.{table} ({', '.join(f'{n} {t}' for n, t in columns)})")
                rows = src.execute(f"SELECT {', '.join(n for n, _ in columns)} FROM main.{table}").fetchall()
                with cur.copy(f"COPY public.{table} FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
    finally:
        src.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the example; prints each answer with its notices."""
    ap = argparse.ArgumentParser(prog="python -m dpsql.examples.embed_psycopg", description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True, help="postgresql:// URL of your database (holding the hospital tables)")
    ap.add_argument("--load", action="store_true", help="create and fill the hospital tables first")
    ap.add_argument("--ledger-url", help="postgresql:// URL for the budget ledger (default: SQLite in --dir)")
    ap.add_argument("--dir", type=Path, help="working directory for the policy (and the SQLite ledger)")
    args = ap.parse_args(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="dpsql-embed-pg-"))
    directory.mkdir(parents=True, exist_ok=True)
    if args.load:
        load_hospital(args.dsn, directory)
    policy_path = write_policy(directory)
    if args.ledger_url:
        policy_path.write_text(policy_path.read_text() + f'\n[privacy.ledger]\nurl = "{args.ledger_url}"\n')
    policy = load_policy(policy_path)

    # The application's connection: read-only and time-limited, like dpsql's own PostgreSQL backend.
    options = "-c default_transaction_read_only=on -c statement_timeout=30000 -c TimeZone=UTC"
    with psycopg.connect(args.dsn, autocommit=True, options=options) as conn, \
            Pipeline(policy, dialect="postgres", schema=describe_postgres(conn, policy)) as pipe:
        session = pipe.session("alice")
        run = dbapi_runner(conn)
        for sql in (
            "SELECT COUNT(*), AVG(age) FROM visits",
            "SELECT d.building, SUM(v.length_of_stay) FROM visits v JOIN departments d ON v.department_id = d.department_id "
            "GROUP BY d.building",
            "SELECT region, COUNT(*) AS n FROM patients GROUP BY region HAVING COUNT(*) > 10 ORDER BY n DESC LIMIT 3",
        ):
            answer = session.execute(sql, run, epsilon=0.5)
            print(" | ".join(answer.columns))
            for row in answer.rows:
                print(" | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row))
            for notice in answer.notices:
                print(f"NOTICE: {notice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
