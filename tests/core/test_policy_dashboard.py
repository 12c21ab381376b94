"""Policy keys for BI-tool use (issue 12): replay, per-user defaults, queued admission, audit log, metrics."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from dpsql.errors import PolicyError
from dpsql.policy import parse_size, policy_from_dict
from dpsql.proxy.settings import DPSettings


def _base(**sections: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "server": {"auth": "trust"},
        "budget": {"epsilon": 10, "delta": 1e-6, "session_epsilon": 3},
        "users": {"a": {}, "svc": {"default_epsilon": 0.25}},
        "tables": {"t": {"privacy_unit": "uid", "columns": {"x": {"lower": 0, "upper": 1}}}},
    }
    for k, v in sections.items():
        d.setdefault(k, {}).update(v)
    return d


def test_defaults() -> None:
    p = policy_from_dict(_base(), "/srv/dpsql/policy.toml")
    assert p.replay.mode == "user" and p.replay.window_seconds == 7 * 86400 and p.replay.source_ttl_seconds == 3600
    assert p.replay.max_bytes == 64 * 2**20
    assert p.limits.concurrent_queries_per_user == 4
    assert p.audit_path == Path("/srv/dpsql/dpsql-audit.jsonl")
    assert p.server.metrics_host is None


def test_keys_are_read() -> None:
    p = policy_from_dict(_base(
        privacy={"replay": "global", "replay_window": "1d", "replay_ttl": "5m", "replay_size": "2MiB"},
        limits={"concurrent_queries_per_user": 2},
        server={"audit_log": "logs/audit.jsonl", "metrics_listen": "127.0.0.1:0"},
    ), "/srv/dpsql/policy.toml")
    assert (p.replay.mode, p.replay.window_seconds, p.replay.source_ttl_seconds, p.replay.max_bytes) == ("global", 86400, 300, 2 * 2**20)
    assert p.limits.concurrent_queries_per_user == 2
    assert p.audit_path == Path("/srv/dpsql/logs/audit.jsonl")
    assert (p.server.metrics_host, p.server.metrics_port) == ("127.0.0.1", 0)
    assert policy_from_dict(_base(server={"audit_log": False})).audit_path is None


def test_per_user_default_epsilon() -> None:
    """A service account's queries use its own default ε; RESET goes back to it; others keep the policy's."""
    p = policy_from_dict(_base())
    assert p.default_epsilon_for("svc") == Fraction(1, 4) and p.default_epsilon_for("a") == 1
    s = DPSettings(p, "svc")
    assert s.epsilon == Fraction(1, 4)
    s.set("dp.epsilon", "0.5")
    s.reset("dp.epsilon")
    assert s.epsilon == Fraction(1, 4)
    assert DPSettings(p, "a").epsilon == 1


BAD = [
    ({"privacy": {"replay": "always"}}, "privacy.replay", "one of"),
    ({"privacy": {"replay_window": "forever"}}, "privacy.replay_window", "duration"),
    ({"privacy": {"replay_ttl": "0s"}}, "privacy.replay_ttl", "longer than zero"),
    ({"privacy": {"replay_size": "lots"}}, "privacy.replay_size", "size"),
    ({"privacy": {"replay_size": "10B"}}, "privacy.replay_size", "at least"),
    ({"limits": {"concurrent_queries_per_user": 0}}, "limits.concurrent_queries_per_user", "at least 1"),
    ({"server": {"audit_log": 3}}, "server.audit_log", "path or false"),
    ({"server": {"metrics_listen": "9187"}}, "server.metrics_listen", "HOST:PORT"),
    ({"server": {"metrics_listen": "0.0.0.0:9187"}}, "server.metrics_listen", "tls_cert"),
    ({"users": {"svc": {"default_epsilon": 5}}}, "users.svc.default_epsilon", "max_epsilon_per_query"),
    ({"users": {"svc": {"default_epsilon": 1.5, "session_epsilon": 1}}}, "users.svc.default_epsilon", "session_epsilon"),
    ({"users": {"svc": {"default_epsilon": -1}}}, "users.svc.default_epsilon", "greater than 0"),
]


@pytest.mark.parametrize(("sections", "key", "problem"), BAD)
def test_bad_values_name_the_key(sections: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy_from_dict(_base(**sections), "/etc/dpsql/policy.toml")
    assert info.value.key == key and problem in info.value.problem, str(info.value)


def test_sizes() -> None:
    assert parse_size("64MB") == 64 * 10**6 and parse_size("1 GiB") == 2**30 and parse_size("512kib") == 512 * 1024
    with pytest.raises(ValueError):
        parse_size("64 potatoes")
