"""Policy loading and validation (DESIGN §2): every problem names the file, the key and what is wrong."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from dpsql.errors import PolicyError
from dpsql.policy import load_policy, parse_duration, policy_from_dict

GOOD = """
[source]
duckdb = "data/hospital.duckdb"

[server]
listen = "127.0.0.1:6432"
auth = "scram-sha-256"

[privacy]
accounting = "zcdp"
default_epsilon = 1.0
default_delta = 1e-7
max_epsilon_per_query = 2.0

[budget]
epsilon = 10.0
delta = 1e-6
window = "7d"
session_epsilon = 3.0
[budget.global]
epsilon = 40.0
delta = 1e-5

[users.alice]
password = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=:YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="
epsilon = 20.0

[tables.visits]
privacy_unit = "patient_id"
max_groups = 1
max_rows = 1
[tables.visits.columns]
age = { lower = 0, upper = 120 }
cost = { lower = 0.0, upper = 5000.0 }
department = { values = ["cardiology", "oncology", "orthopedics"] }

[tables.departments]
public = true
file = "data/departments.parquet"

[privacy.ledger]
path = "state/ledger.sqlite"
"""


def test_design_example_loads(tmp_path: Path) -> None:
    p = tmp_path / "policy.toml"
    p.write_text(GOOD)
    pol = load_policy(p)
    assert pol.source.duckdb == tmp_path / "data/hospital.duckdb"
    assert pol.privacy.accounting == "zcdp"
    assert pol.privacy.default_delta == Fraction(1, 10**7)
    assert pol.budget.window_seconds == 7 * 86400
    assert pol.global_budget is not None and pol.global_budget.epsilon == 40
    alice = pol.user("alice")
    assert alice is not None and alice.budget.epsilon == 20 and alice.budget.delta == Fraction(1, 10**6)
    assert alice.session_epsilon == 3
    visits = pol.table("visits")
    assert visits is not None and visits.privacy_unit == "patient_id" and not visits.public
    assert visits.columns["cost"].upper == 5000 and visits.columns["department"].values == ("cardiology", "oncology", "orthopedics")
    assert pol.table("public.departments") is not None and pol.table("departments").file == tmp_path / "data/departments.parquet"
    assert pol.ledger_path == tmp_path / "state/ledger.sqlite"


def _base() -> dict:
    return {
        "server": {"auth": "trust"},
        "budget": {"epsilon": 10, "delta": 1e-6},
        "users": {"a": {}},
        "tables": {"t": {"privacy_unit": "uid", "columns": {"x": {"lower": 0, "upper": 1}}}},
    }


BAD = [
    (lambda d: d["tables"]["t"].pop("privacy_unit"), "tables.t.privacy_unit", "required"),
    (lambda d: d["tables"]["t"]["columns"]["x"].update(lower=5), "tables.t.columns.x.lower", "above upper"),
    (lambda d: d["tables"]["t"]["columns"]["x"].pop("upper"), "tables.t.columns.x.upper", "together"),
    (lambda d: d["tables"]["t"].update(max_groups=0), "tables.t.max_groups", "at least 1"),
    (lambda d: d["tables"]["t"].update(max_rows="3"), "tables.t.max_rows", "integer"),
    (lambda d: d["tables"]["t"].update(privacy_unti="uid"), "tables.t.privacy_unti", "unknown key"),
    (lambda d: d["tables"]["t"].update(public=True), "tables.t.privacy_unit", "public table"),
    (lambda d: d["tables"]["t"]["columns"]["x"].update(values=[]), "tables.t.columns.x.values", "non-empty"),
    (lambda d: d["tables"]["t"]["columns"].update(y={"values": ["a", "a"]}), "tables.t.columns.y.values", "twice"),
    (lambda d: d["tables"]["t"]["columns"].update(y={"values": ["a", 1]}), "tables.t.columns.y.values", "one kind"),
    (lambda d: d["tables"]["t"].update(file="x.txt"), "tables.t.file", ".parquet or .csv"),
    (lambda d: d["budget"].pop("epsilon"), "budget.epsilon", "required"),
    (lambda d: d["budget"].update(epsilon=-1), "budget.epsilon", "greater than 0"),
    (lambda d: d["budget"].update(delta=0.5), "budget.delta", "at most"),
    (lambda d: d["budget"].update(window="weekly"), "budget.window", "duration"),
    (lambda d: d.pop("budget"), "budget", "required"),
    (lambda d: d.update(users={}), "users", "at least one user"),
    (lambda d: d["users"].update(b={"password": "md5abc"}), "users.b.password", "SCRAM-SHA-256"),
    (lambda d: d.update(server={"auth": "trust", "listen": "0.0.0.0:6432"}), "server.auth", "loopback"),
    (lambda d: d.update(server={"listen": "0.0.0.0:6432", "auth": "scram-sha-256"}) or d["users"]["a"].update(
        password="SCRAM-SHA-256$4096:c2FsdA==$YWJj:YWJj"), "server.listen", "tls_cert"),
    (lambda d: d.update(server={"auth": "kerberos"}), "server.auth", "one of"),
    (lambda d: d.update(privacy={"accounting": "rdp"}), "privacy.accounting", "one of"),
    (lambda d: d.update(privacy={"default_epsilon": 3, "max_epsilon_per_query": 2}), "privacy.default_epsilon", "exceeds"),
    (lambda d: d.update(privacy={"default_epsilon": 0.005}), "privacy.default_epsilon", "below min_epsilon_per_query (0.01)"),
    (lambda d: d.update(privacy={"default_epsilon": 0.5, "min_epsilon_per_query": 0.6}), "privacy.default_epsilon",
     "below min_epsilon_per_query (0.6)"),
    (lambda d: d.update(privacy={"default_delta": 1e-13}), "privacy.default_delta", "below min_delta_per_query (1e-12)"),
    (lambda d: d.update(privacy={"default_delta": 1e-5, "max_delta_per_query": 1e-6}), "privacy.default_delta",
     "exceeds max_delta_per_query (1e-06)"),
    (lambda d: d.update(privacy={"min_epsilon_per_query": 3}), "privacy.min_epsilon_per_query", "exceeds max_epsilon_per_query"),
    (lambda d: d.update(privacy={"min_epsilon_per_query": 0}), "privacy.min_epsilon_per_query", "greater than 0"),
    (lambda d: d.update(privacy={"min_delta_per_query": 1e-3}), "privacy.min_delta_per_query", "exceeds max_delta_per_query"),
    (lambda d: d.update(privacy={"min_delta_per_query": 0.0}), "privacy.min_delta_per_query", "greater than 0"),
    (lambda d: d.update(limits={"max_connections": 8, "max_connections_per_user": 9}), "limits.max_connections_per_user",
     "exceeds max_connections (8)"),
    (lambda d: d.update(limits={"max_connections_per_user": 0}), "limits.max_connections_per_user", "at least 1"),
    (lambda d: d["budget"].update(epsilon=1e9), "budget.epsilon", "more than the budget ledger can hold"),
    (lambda d: d["budget"].update(session_epsilon=1e8), "budget.session_epsilon", "more than the budget ledger can hold"),
    (lambda d: d["budget"].update({"global": {"epsilon": 1e7, "delta": 1e-5}}), "budget.global.epsilon",
     "more than the budget ledger can hold"),
    (lambda d: d["users"]["a"].update(epsilon=2e7), "users.a.epsilon", "more than the budget ledger can hold"),
    (lambda d: d.update(privacy={"accounting": "basic"}) or d["budget"].update(epsilon=9.3e6), "budget.epsilon",
     "the largest epsilon it accepts at delta = 1e-06 is 9.22e+06"),
    (lambda d: d.update(privacy={"max_epsilon_per_query": 1e7, "default_epsilon": 1}), "privacy.max_epsilon_per_query",
     "more than the budget ledger can record for one query"),
    (lambda d: d.update(privacy={"ledger": {"path": "a", "url": "postgresql://x"}}), "privacy.ledger.url", "not both"),
    (lambda d: d.update(source={"duckdb": "a.duckdb", "postgres": "postgresql://x"}), "source.postgres", "not both"),
    (lambda d: d.update(limits={"statement_timeout": "soon"}), "limits.statement_timeout", "duration"),
    (lambda d: d.update(extra={}), "extra", "unknown key"),
]


@pytest.mark.parametrize(("mutate", "key", "problem"), BAD)
def test_bad_policy_names_file_key_problem(mutate, key: str, problem: str) -> None:
    d = _base()
    mutate(d)
    with pytest.raises(PolicyError) as info:
        policy_from_dict(d, "/etc/dpsql/policy.toml")
    err = info.value
    assert err.sqlstate == "F0000"
    assert err.file == "/etc/dpsql/policy.toml"
    assert err.key == key, str(err)
    assert problem in err.problem, str(err)
    assert str(err).startswith(f"/etc/dpsql/policy.toml: {key}: ")


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[budget\nepsilon = 1")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(bad)


def test_durations() -> None:
    assert parse_duration("7d") == 604800
    assert parse_duration("12h") == 43200
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        parse_duration("7 days")


def test_floats_are_exact_fractions() -> None:
    d = _base()
    d["tables"]["t"]["columns"]["x"] = {"lower": 0.1, "upper": 0.3}
    pol = policy_from_dict(d)
    col = pol.table("t").columns["x"]  # type: ignore[union-attr]
    assert col.lower == Fraction(1, 10) and col.upper == Fraction(3, 10)


def test_per_query_floors_and_connection_cap_defaults() -> None:
    """DESIGN §2: min_epsilon_per_query defaults to 0.01 and min_delta_per_query to 1e-12
    (docs/privacy.md argues both); max_connections_per_user defaults to max(1, max_connections // 4)."""
    pol = policy_from_dict(_base())
    assert pol.privacy.min_epsilon_per_query == Fraction(1, 100)
    assert pol.privacy.min_delta_per_query == Fraction(1, 10**12)
    assert pol.limits.connections_per_user == 16
    for total, per_user in ((3, 1), (8, 2), (250, 62)):
        d = _base()
        d["limits"] = {"max_connections": total}
        assert policy_from_dict(d).limits.connections_per_user == per_user
    d = _base()
    d["limits"] = {"max_connections": 8, "max_connections_per_user": 8}
    d["privacy"] = {"min_epsilon_per_query": 0.5, "min_delta_per_query": 1e-9, "default_delta": 1e-9}
    pol = policy_from_dict(d)
    assert pol.limits.connections_per_user == 8
    assert pol.privacy.min_epsilon_per_query == Fraction(1, 2) and pol.privacy.min_delta_per_query == Fraction(1, 10**9)


def test_largest_budget_the_ledger_holds_is_accepted() -> None:
    """A budget is accepted exactly up to what the 64-bit ledger sums can hold beside one maximal
    charge: the largest value the error message names loads, 1% more does not."""
    from dpsql.accountant.capacity import LEDGER_MAX, largest_budget_epsilon, max_query_charge
    from dpsql.accountant.filters import budget_filter

    for accounting in ("zcdp", "basic"):
        d = _base()
        d["privacy"] = {"accounting": accounting}
        top = largest_budget_epsilon(policy_from_dict(d).privacy, Fraction(1, 10**6))
        assert 9e6 < top < 9.3e6
        d["budget"]["epsilon"] = float(top)
        pol = policy_from_dict(d)
        limit = budget_filter("user", accounting, pol.budget).main
        assert limit is not None and limit + max_query_charge(pol.privacy).main <= LEDGER_MAX
        d["budget"]["epsilon"] = float(top) * 1.01
        with pytest.raises(PolicyError, match="more than the budget ledger can hold"):
            policy_from_dict(d)
