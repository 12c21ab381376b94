"""The `dpsql` command line (DESIGN §4): query, explain, budget and check; exit status 0 on
success, 1 on a refused query, 2 on bad usage or a bad policy; errors on stderr in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

COUNT_BY_DEPT = "SELECT department, COUNT(*) FROM visits GROUP BY department"
DEPARTMENTS = ["cardiology", "emergency", "general medicine", "neurology", "obstetrics", "oncology", "orthopedics", "pediatrics"]


def dpsql(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dpsql.proxy.cli ARGS`` and capture its output."""
    return subprocess.run([sys.executable, "-m", "dpsql.proxy.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def policy(write_policy: Callable[..., Path]) -> Path:
    """A policy whose ledger already exists (so no "created a new ledger" warning on stderr)."""
    path = write_policy(epsilon=3.0)
    assert dpsql("budget", "--policy", str(path)).returncode == 0
    return path


def _one_error_line(done: subprocess.CompletedProcess[str], sqlstate: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"dpsql: ERROR {sqlstate}: "), lines[0]
    assert "Traceback" not in done.stderr
    return lines[0]


def test_query_prints_a_table_and_the_cost(policy: Path) -> None:
    """`dpsql query`: exit 0, a psql-like table on stdout (every declared department, even
    absent ones), the cost as a NOTICE on stderr."""
    done = dpsql("query", "--policy", str(policy), "--user", "alice", COUNT_BY_DEPT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["department", "count"]
    assert set(lines[1]) <= {"-", "+"}
    assert [r.split("|")[0].strip() for r in lines[2:-1]] == DEPARTMENTS
    assert lines[-1] == "(8 rows)"
    notices = done.stderr.strip().splitlines()
    assert len(notices) == 1 and notices[0].startswith("NOTICE: dpsql: this query spent ε=1"), done.stderr


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_query_formats(policy: Path, fmt: str) -> None:
    """--format csv / json print the same rows machine-readably."""
    done = dpsql("query", "--policy", str(policy), "--user", "alice", "--format", fmt, COUNT_BY_DEPT)
    assert done.returncode == 0, done.stderr
    if fmt == "csv":
        rows = [line.split(",") for line in done.stdout.strip().splitlines()]
        assert rows[0] == ["department", "count"] and [r[0] for r in rows[1:]] == DEPARTMENTS
    else:
        rows = [json.loads(line) for line in done.stdout.strip().splitlines()]
        assert [r["department"] for r in rows] == DEPARTMENTS and all(isinstance(r["count"], int) for r in rows)


@pytest.mark.parametrize(("sql", "sqlstate"), [
    ("SELECT age FROM visits", "42501"),
    ("SELECT COUNT(*) FROM nosuch", "42P01"),
    ("SELECT COUNT(*) FROM visits WHERE age > (SELECT AVG(age) FROM visits)", "0A000"),
    ("SELEC COUNT(*) FROM visits", "42601"),
])
def test_refused_query_exits_1_with_one_line(policy: Path, sql: str, sqlstate: str) -> None:
    """A refused query: exit 1, nothing on stdout, one line on stderr with the SQLSTATE and a hint;
    and it costs nothing."""
    done = dpsql("query", "--policy", str(policy), "--user", "alice", sql)
    assert done.returncode == 1 and done.stdout == ""
    _one_error_line(done, sqlstate)
    budget = dpsql("budget", "--policy", str(policy), "--user", "alice")
    assert budget.returncode == 0
    assert budget.stdout.splitlines()[2].split("|")[3].strip() == "0"  # epsilon_spent


def test_unknown_user_exits_1(policy: Path) -> None:
    """Only listed users may query (28000)."""
    done = dpsql("query", "--policy", str(policy), "--user", "mallory", "SELECT COUNT(*) FROM visits")
    assert done.returncode == 1
    _one_error_line(done, "28000")


def test_budget_exhaustion_exits_1_with_class_53(policy: Path) -> None:
    """With ε_B = 3, different ε = 2 queries are eventually refused: exit 1, SQLSTATE 53400, the
    message in ε and δ (an identical query would be a free replay)."""
    for i in range(100):
        done = dpsql("query", "--policy", str(policy), "--user", "alice", "--epsilon", "2", f"SELECT COUNT(*) FROM visits WHERE age >= {i}")
        if done.returncode != 0:
            break
    assert done.returncode == 1
    line = _one_error_line(done, "53400")
    assert "budget" in line and "this query costs ε=2 (δ=1e-07)" in line and "left at δ=1e-07" in line and "ρ" not in line


def test_setting_above_the_maximum_exits_1_with_22023(policy: Path) -> None:
    """--epsilon above max_epsilon_per_query is refused (22023), and costs nothing."""
    done = dpsql("query", "--policy", str(policy), "--user", "alice", "--epsilon", "5", "SELECT COUNT(*) FROM visits")
    assert done.returncode == 1
    _one_error_line(done, "22023")


def test_explain_prints_the_plan_and_spends_nothing(policy: Path) -> None:
    """`dpsql explain`: exit 0, the plan with cost and noise; the ledger is unchanged."""
    done = dpsql("explain", "--policy", str(policy), COUNT_BY_DEPT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("dpsql differentially private query (zcdp accounting)")
    assert "cost: ε = 1" in done.stdout and "95% error" in done.stdout and "__dp_rows" in done.stdout
    pg = dpsql("explain", "--policy", str(policy), "--dialect", "postgres", COUNT_BY_DEPT)
    assert pg.returncode == 0 and '"public"."visits"' in pg.stdout
    budget = dpsql("budget", "--policy", str(policy))
    assert all(line.split("|")[3].strip() == "0" for line in budget.stdout.splitlines()[2:-1])


def test_budget_shows_every_user(policy: Path) -> None:
    """`dpsql budget`: exit 0, one row per user with spent and remaining ε and δ; after one ε = 1
    query alice has spent about 1 (zCDP: the CKS20 conversion of one query's ρ)."""
    assert dpsql("query", "--policy", str(policy), "--user", "alice", "SELECT COUNT(*) FROM visits").returncode == 0
    done = dpsql("budget", "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    header = [c.strip() for c in done.stdout.splitlines()[0].split("|")]
    assert header[:6] == ["user", "scope", "accounting", "epsilon_spent", "delta_spent", "epsilon_remaining"]
    rows = {r.split("|")[0].strip(): [c.strip() for c in r.split("|")] for r in done.stdout.splitlines()[2:-1]}
    assert set(rows) == {"alice", "bob"}
    assert float(rows["alice"][3]) == pytest.approx(1.0, rel=0.05) and float(rows["bob"][3]) == 0
    assert float(rows["alice"][5]) < float(rows["bob"][5])
    one = dpsql("budget", "--policy", str(policy), "--user", "bob")
    assert one.returncode == 0 and len(one.stdout.splitlines()) == 4


def test_check_accepts_a_good_policy(policy: Path) -> None:
    """`dpsql check`: exit 0, a summary of tables and visible columns."""
    done = dpsql("check", "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    assert "policy OK" in done.stdout and "public.visits (private, unit patient_id)" in done.stdout


@pytest.mark.parametrize(("old", "new", "key"), [
    ("age = { lower = 0, upper = 100 }", "age = { lower = 130, upper = 100 }", "tables.visits.columns.age.lower"),
    ("max_rows = 5", "max_row = 5", "tables.visits.max_row"),
    ('privacy_unit = "patient_id"\nmax_groups', "max_groups", "tables.visits.privacy_unit"),
    ('accounting = "zcdp"', 'accounting = "rdp"', "privacy.accounting"),
    ("epsilon = 3.0", "epsilon = -3.0", "budget.epsilon"),
    ("cost = { lower = 0.0, upper = 5000.0 }", 'cost = { lower = 0.0, upper = "x" }', "tables.visits.columns.cost.upper"),
])
def test_bad_policy_exits_2_naming_the_key(policy: Path, tmp_path: Path, old: str, new: str, key: str) -> None:
    """A bad policy: `dpsql check` and `dpsql query` exit 2 with one line naming file and key."""
    text = policy.read_text()
    assert old in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(old, new, 1))
    for args in (("check",), ("query", "--user", "alice", "SELECT COUNT(*) FROM visits")):
        done = dpsql(args[0], "--policy", str(bad), *args[1:])
        assert done.returncode == 2, done.stderr
        line = _one_error_line(done, "F0000")
        assert f"{bad}: {key}:" in line


def test_usage_errors_exit_2(policy: Path) -> None:
    """Missing arguments or an unknown command: exit 2 with usage on stderr."""
    assert dpsql("query", "--user", "alice", "SELECT 1").returncode == 2
    assert dpsql("frobnicate").returncode == 2
    missing = dpsql("query", "--policy", str(policy.parent / "missing.toml"), "--user", "alice", "SELECT COUNT(*) FROM visits")
    assert missing.returncode == 2 and "missing.toml" in missing.stderr


def test_console_script(policy: Path) -> None:
    """The installed `dpsql` console script is the same CLI."""
    script = Path(sys.executable).parent / "dpsql"
    done = subprocess.run([str(script), "check", "--policy", str(policy)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "policy OK" in done.stdout


def test_b8_constant_projection_is_one_line_refusal(policy: Path) -> None:
    """`SELECT 1 FROM visits` must be refused like raw access (42501) on one line, not a traceback."""
    done = dpsql("query", "--policy", str(policy), "--user", "alice", "SELECT 1 FROM visits")
    assert done.returncode == 1
    _one_error_line(done, "42501")


def test_b11_huge_epsilon_is_one_line_refusal(policy: Path) -> None:
    """A huge --epsilon is refused (22023) on one line."""
    done = dpsql("query", "--policy", str(policy), "--user", "alice", "--epsilon", "1e999", "SELECT COUNT(*) FROM visits")
    assert done.returncode == 1
    _one_error_line(done, "22023")
