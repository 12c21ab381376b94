"""The demo data set: a synthetic hospital (visits, patients, departments) and its policy.

``generate(out_dir)`` writes ``hospital.duckdb`` (or one Parquet file per table) and
``policy.toml`` into ``out_dir`` and returns the policy's path. The demo users are ``alice``
(password ``alice-demo``) and ``bob`` (password ``bob-demo``); the policy stores only their
SCRAM-SHA-256 verifiers. Run ``python -m dpsql.examples.hospital DIR`` to write it from a shell.

The default size (50,000 patients, 250,000 visits) takes about 0.3 s; :func:`scale` makes the
benchmark sizes (1M visits / 100k patients, 10M visits / 1M patients: about 8 s on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb

from dpsql.examples.hospital_data import create_tables
from dpsql.examples.hospital_policy import DATABASE_FILE, TABLES, Format, policy_toml
from dpsql.proxy.passwords import scram_verifier

DEMO_PASSWORDS: dict[str, str] = {"alice": "alice-demo", "bob": "bob-demo"}
POLICY_FILE = "policy.toml"
PRIVATE = 0o600  # data and verifiers are readable by their owner only


def generate(
    out_dir: Path,
    *,
    patients: int = 50_000,
    visits: int = 250_000,
    seed: int = 7,
    fmt: Format = "duckdb",
) -> Path:
    """Write the hospital data set and its policy into ``out_dir`` (created if needed); return
    the policy path.

    The data depends only on (patients, visits, seed) and the DuckDB version. Every patient
    has at least one visit when ``visits >= patients``. Files are written under temporary names
    and renamed into place (mode 0600), so a reader never sees a half-written database or policy.
    """
    if fmt not in ("duckdb", "parquet"):
        raise ValueError(f"fmt must be 'duckdb' or 'parquet', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "duckdb":
        _write_duckdb(out / DATABASE_FILE, patients=patients, visits=visits, seed=seed)
    else:
        _write_parquet(out, patients=patients, visits=visits, seed=seed)
    verifiers = {user: scram_verifier(pw) for user, pw in DEMO_PASSWORDS.items()}
    note = "Demo logins (for this demo only): " + ", ".join(f"{u} / {p}" for u, p in DEMO_PASSWORDS.items())
    policy = out / POLICY_FILE
    _write_atomically(policy, policy_toml(verifiers, fmt=fmt, note=note).encode("utf-8"))
    return policy


def scale(out_dir: Path, rows: int, *, seed: int = 7, fmt: Format = "duckdb") -> Path:
    """The benchmark variant: ``rows`` visits over ``rows // 10`` patients (1M → 100k patients,
    10M → 1M patients), with the same distributions and policy as :func:`generate`."""
    return generate(out_dir, patients=max(1, rows // 10), visits=rows, seed=seed, fmt=fmt)


def _write_duckdb(path: Path, *, patients: int, visits: int, seed: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    _remove(tmp, Path(str(tmp) + ".wal"))
    con = duckdb.connect(str(tmp))
    try:
        create_tables(con, patients=patients, visits=visits, seed=seed)
        # One row per patient, declared: dpsql then bounds patients queries row by row (no
        # per-unit GROUP BY). The keys are the ones a real schema would declare.
        con.execute("ALTER TABLE patients ADD PRIMARY KEY (patient_id)")
        con.execute("ALTER TABLE departments ADD PRIMARY KEY (department_id)")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    _remove(Path(str(path) + ".wal"))
    tmp.chmod(PRIVATE)
    os.replace(tmp, path)


def _write_parquet(out: Path, *, patients: int, visits: int, seed: int) -> None:
    con = duckdb.connect()
    try:
        create_tables(con, patients=patients, visits=visits, seed=seed)
        for table in TABLES:
            target = out / f"{table}.parquet"
            tmp = target.with_name(target.name + ".tmp")
            literal = "'" + str(tmp).replace("'", "''") + "'"
            con.execute(f"COPY {table} TO {literal} (FORMAT parquet, COMPRESSION zstd)")
            tmp.chmod(PRIVATE)
            os.replace(tmp, target)
    finally:
        con.close()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(PRIVATE)
    os.replace(tmp, path)


def _remove(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dpsql.examples.hospital DIR``: write the data set and print how to use it."""
    ap = argparse.ArgumentParser(prog="python -m dpsql.examples.hospital", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path, help="directory to write into (created if needed)")
    ap.add_argument("--patients", type=int, default=50_000)
    ap.add_argument("--visits", type=int, default=250_000)
    ap.add_argument("--scale", type=int, metavar="ROWS", help="benchmark size: ROWS visits, ROWS/10 patients")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--format", choices=("duckdb", "parquet"), default="duckdb")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.scale is not None:
        policy = scale(args.out_dir, args.scale, seed=args.seed, fmt=args.format)
    else:
        policy = generate(args.out_dir, patients=args.patients, visits=args.visits, seed=args.seed, fmt=args.format)
    print(f"wrote {policy.parent} in {time.perf_counter() - t0:.2f} s; policy: {policy}")
    for user, password in DEMO_PASSWORDS.items():
        print(f"  user {user!r}, password {password!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
