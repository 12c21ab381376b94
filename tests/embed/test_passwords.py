"""Passwords belong to serving: in-process use (dpsql.api.connect, dpsql query, the embedding
pipeline) loads a policy whose users have none, under the default ``[server] auth`` (scram);
``dpsql serve`` refuses to start with it, naming the user."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dpsql.api import connect
from dpsql.errors import PolicyError
from dpsql.policy import load_policy
from dpsql.proxy.cli import main


def test_connect_in_process_without_passwords(write_policy: Callable[..., Path]) -> None:
    path = write_policy()
    assert load_policy(path).server.auth == "scram-sha-256"
    with connect(path, user="alice") as c:
        r = c.execute("SELECT COUNT(*) FROM visits")
    assert r.columns == ("count",) and r.cost is not None


def test_dpsql_query_without_passwords(write_policy: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--policy", str(write_policy()), "--user", "alice", "SELECT COUNT(*) FROM visits"]) == 0


def test_serve_requires_a_password_per_user(write_policy: Callable[..., Path]) -> None:
    from dpsql.proxy.server import build_server

    path = write_policy()
    with pytest.raises(PolicyError) as e:
        build_server(path)
    assert e.value.key == "users.alice.password" and "dpsql passwd" in str(e.value)


def test_serve_with_trust_needs_no_password(write_policy: Callable[..., Path]) -> None:
    from dpsql.proxy.server import build_server

    server = build_server(write_policy(server='[server]\nauth = "trust"'))
    server.engine.close()


def test_check_notes_missing_passwords(write_policy: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--policy", str(write_policy())]) == 0
    out = capsys.readouterr().out
    assert "policy OK" in out and "alice, bob have no password: `dpsql serve` needs one per user" in out
