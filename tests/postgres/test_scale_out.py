"""The scale-out recipe (examples/scale-out): several ``dpsql serve`` behind HAProxy (its
``haproxy.cfg``, TCP mode), one PostgreSQL ledger. Connections through the load balancer reach
every instance (round-robin here; the recipe's ``balance source`` keeps one client on one
instance), and every instance charges the one shared budget. Skipped without ``haproxy``
(``apt-get install haproxy``). Deterministic."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from pgenv import PgEnv

pytestmark = pytest.mark.postgres
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scale-out"


def _trial_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scale_out_local_trial", EXAMPLE / "local_trial.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_haproxy_config_is_valid(tmp_path: Path) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed")
    trial = _trial_module()
    for cfg in ((EXAMPLE / "haproxy.cfg").read_text(), trial.haproxy_config(6432, [5001, 5002], balance="source")):
        path = tmp_path / "h.cfg"
        path.write_text(cfg)
        done = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_instances_behind_haproxy_share_one_budget(pg: PgEnv, tmp_path: Path) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    trial = _trial_module()
    name = f"scale_{os.getpid()}_{random.randrange(10**9)}"
    pg.sql(f"CREATE DATABASE {name} OWNER ledger", database="postgres")
    ledger_url = pg.ledger_dsn.replace("/ledger?", f"/{name}?")
    *ports, lb = _free_ports(4)
    spent = []
    with trial.running(tmp_path, ledger_url, ports, lb, balance="roundrobin") as t:
        for i in range(6):
            with psycopg.connect(f"host=127.0.0.1 port={t.lb_port} user=alice dbname=hospital", autocommit=True) as conn:
                conn.execute("SET dp.epsilon = 0.1")
                conn.execute(f"SELECT COUNT(*) FROM visits WHERE age > {20 + i}").fetchone()
                row = conn.execute("SELECT epsilon_spent FROM dpsql.budget WHERE scope = 'user'").fetchone()
                assert row is not None
                spent.append(row[0])
    assert spent == sorted(spent) and len(set(spent)) == 6, "each answer sees every earlier charge, whichever instance made it"
    charged = []
    for i in range(3):
        lines = [json.loads(x) for x in (tmp_path / f"audit-{i}.jsonl").read_text().splitlines()]
        charged.append(sum(1 for x in lines if x.get("kind") == "private"))
    assert charged == [2, 2, 2], f"round-robin spreads the six connections: {charged}"
    rows = pg.sql("SELECT COUNT(*) FROM dpsql_ledger.charges", database=name)
    assert rows[0][0] == 6
