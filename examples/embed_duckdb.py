"""Embedding example: the caller's own DuckDB, in-process.

    python -m dpsql.examples.embed_duckdb [DIR]

Writes the synthetic hospital data and a policy into DIR (default: a new temporary directory),
then answers queries through :mod:`dpsql.embed` on a DuckDB connection the application opened
itself: once with the one-call ``execute`` and once step by step (prepare → charge → run the
bounded SQL yourself → release). The policy has no ``[source]`` (the application owns the
engine) and no passwords (nothing is served); the budget ledger is a SQLite file in DIR.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import duckdb

from dpsql.embed import Pipeline, dbapi_runner, describe_duckdb
from dpsql.examples.hospital import generate
from dpsql.examples.hospital_policy import policy_toml


def write_policy(directory: Path) -> Path:
    """The demo policy without ``[source]``, ``[server]`` or passwords; the ledger beside it."""
    dropped = ("[source]", "[server]", "duckdb =", "listen =", "auth =")
    lines = [line for line in policy_toml({}).splitlines() if not line.startswith(dropped)]
    path = directory / "embed-policy.toml"
    path.write_text("\n".join(lines) + "\n[users.alice]\n[users.bob]\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the example; prints each answer with its notices and the budget left."""
    ap = argparse.ArgumentParser(prog="python -m dpsql.examples.embed_duckdb", description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", type=Path, help="where to write the data, policy and ledger")
    args = ap.parse_args(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="dpsql-embed-"))
    directory.mkdir(parents=True, exist_ok=True)
    generate(directory, patients=2000, visits=8000)
    policy_path = write_policy(directory)

    con = duckdb.connect(str(directory / "hospital.duckdb"), read_only=True)  # the application's own engine
    try:
        from dpsql.policy import load_policy

        policy = load_policy(policy_path)
        with Pipeline(policy, dialect="duckdb", schema=describe_duckdb(con, policy)) as pipe:
            session = pipe.session("alice")

            # 1. one call: constants and public keys are read first (free), then charge, run, release
            answer = session.execute("SELECT department, COUNT(*), AVG(cost) FROM visits GROUP BY department",
                                     dbapi_runner(con), epsilon=0.5)
            _show(answer.columns, answer.rows, answer.notices)

            # 2. step by step
            prepared = session.prepare("SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis", epsilon=0.5)
            print(f"-- ε={float(prepared.epsilon)}, δ={float(prepared.delta):g}; the ledger is charged {prepared.cost}")
            token = session.charge(prepared)  # durable in the ledger before any row is read
            cur = con.cursor()
            cur.execute(token.sql)  # the bounded SQL, unchanged
            columns = [d[0] for d in cur.description]
            rows = cur.fetchall()
            cur.close()
            answer = session.release(token, columns, rows)  # once: noisy, post-processed rows
            _show(answer.columns, answer.rows[:5], answer.notices)

            for b in session.budget():
                print(f"-- {b.scope}: spent ε={b.spent_epsilon:.3g}, remaining ε={b.remaining_epsilon}")
    finally:
        con.close()
    print(f"data, policy and ledger in {directory}")
    return 0


def _show(columns: Sequence[str], rows: Sequence[Sequence[object]], notices: Sequence[str]) -> None:
    print(" | ".join(columns))
    for r in rows:
        print(" | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in r))
    for n in notices:
        print(f"NOTICE: {n}")


if __name__ == "__main__":
    sys.exit(main())
