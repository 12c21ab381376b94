"""The scale-out recipe on one machine: several ``dpsql serve`` behind HAProxy, one PostgreSQL ledger.

    python examples/scale-out/local_trial.py --ledger-url postgresql://ledger@127.0.0.1/ledger [--instances 3]
        [--base-port 55351] [--lb-port 55350] [--dir DIR]

Writes the synthetic hospital data (a DuckDB file every instance opens read-only; in production
Spark or PostgreSQL holds the data), a policy whose ``[privacy.ledger] url`` is the shared
ledger, starts the instances on loopback (``auth = "trust"``, loopback only — production uses
SCRAM and TLS as in ``policy.toml``) and HAProxy from ``haproxy.cfg`` with their addresses, then
runs queries through the load balancer with psycopg and prints each instance's share and the one
budget they all charged. Stops everything at the end (or on Ctrl-C). Needs ``haproxy``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Trial:
    """The running processes of a trial and where they listen."""

    directory: Path
    policy: Path
    lb_port: int
    ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        """Stop HAProxy and every instance (each by its own process)."""
        for p in reversed(self.processes):
            if p.poll() is None:
                p.terminate()
        for p in self.processes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def policy_text(duckdb_file: Path, ledger_url: str, audit: Path) -> str:
    """The demo policy served from ``duckdb_file`` with the shared PostgreSQL ledger."""
    from dpsql.examples.hospital_policy import policy_toml

    dropped = ("[source]", "[server]", "duckdb =", "listen =", "auth =")
    lines = [line for line in policy_toml({}).splitlines() if not line.startswith(dropped)]
    head = [
        "[source]", f'duckdb = "{duckdb_file}"',
        "[server]", 'auth = "trust"', f'audit_log = "{audit}"',
    ]  # fmt: skip
    ledger = ["[privacy.ledger]", f'url = "{ledger_url}"']
    body = "\n".join(lines).replace("[budget]\n", "\n".join(ledger) + "\n\n[budget]\n", 1)
    return "\n".join(head) + "\n" + body + "\n[users.alice]\n[users.bob]\n"


def haproxy_config(lb_port: int, ports: Sequence[int], *, balance: str = "source") -> str:
    """``haproxy.cfg`` bound to loopback ``lb_port`` with one server line per instance port."""
    text = (HERE / "haproxy.cfg").read_text()
    text = text.replace("bind :6432", f"bind 127.0.0.1:{lb_port}").replace("balance source", f"balance {balance}")
    text = re.sub(r"^\s*server dpsql-.*\n", "", text, flags=re.M)
    return text + "".join(f"    server dpsql-{i} 127.0.0.1:{p}\n" for i, p in enumerate(ports))


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"the process for port {port} exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


@contextlib.contextmanager
def running(directory: Path, ledger_url: str, ports: Sequence[int], lb_port: int, *, balance: str = "source") -> Iterator[Trial]:
    """Start the instances and HAProxy; stop them on exit."""
    from dpsql.examples.hospital import generate

    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "hospital.duckdb").exists():
        generate(directory, patients=2000, visits=8000)
    trial = Trial(directory, directory / "scale-out-policy.toml", lb_port, list(ports))
    try:
        for i, port in enumerate(ports):
            policy = directory / f"instance-{i}.toml"  # the same policy; only the audit log differs per instance
            policy.write_text(policy_text(directory / "hospital.duckdb", ledger_url, directory / f"audit-{i}.jsonl"))
            log = (directory / f"instance-{i}.log").open("wb")
            trial.processes.append(subprocess.Popen(
                [sys.executable, "-m", "dpsql.proxy.cli", "serve", "--policy", str(policy), "--listen", f"127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        for port, process in zip(ports, trial.processes, strict=True):
            _wait_listening(port, process)
        cfg = directory / "haproxy-local.cfg"
        cfg.write_text(haproxy_config(lb_port, ports, balance=balance))
        trial.processes.append(subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                                stderr=(directory / "haproxy.log").open("wb")))
        _wait_listening(lb_port, trial.processes[-1])
        yield trial
    finally:
        trial.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trial and print what each instance answered and the shared budget."""
    import psycopg

    ap = argparse.ArgumentParser(prog="local_trial.py", description=__doc__.splitlines()[0])
    ap.add_argument("--ledger-url", required=True, help="postgresql:// URL of the shared ledger (role with CREATE there)")
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--base-port", type=int, default=55351)
    ap.add_argument("--lb-port", type=int, default=55350)
    ap.add_argument("--balance", default="source", help="HAProxy balance algorithm (roundrobin spreads one host's connections)")
    ap.add_argument("--dir", type=Path)
    args = ap.parse_args(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="dpsql-scale-out-"))
    ports = [args.base_port + i for i in range(args.instances)]
    with running(directory, args.ledger_url, ports, args.lb_port, balance=args.balance) as trial:
        for i in range(2 * args.instances):
            dsn = f"host=127.0.0.1 port={trial.lb_port} user=alice dbname=hospital"
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SET dp.epsilon = 0.1")
                (n,) = conn.execute(f"SELECT COUNT(*) FROM visits WHERE age > {20 + i}").fetchone()  # type: ignore[misc]
                spent = conn.execute("SELECT epsilon_spent FROM dpsql.budget WHERE scope = 'user'").fetchone()
                print(f"connection {i}: count ≈ {n}; alice has spent ε={spent[0] if spent else '?'} (all instances)")
    for i in range(args.instances):
        log = directory / f"audit-{i}.jsonl"
        lines = log.read_text().count("\n") if log.exists() else 0
        print(f"instance {i} (port {ports[i]}): {lines} audit line(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
