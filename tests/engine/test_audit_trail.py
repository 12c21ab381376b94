"""The operators' trail (security.md R32, issue 12): the hash-chained audit log, `dpsql audit verify`,
the start-up check, and that neither the log nor the metrics hold a value computed from private rows."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from dpsql.api import open_engine
from dpsql.errors import AuditLogUnavailable, DPSQLError
from dpsql.proxy.audit import verify_chain

STATEMENTS = [
    "SELECT department, COUNT(*) FROM visits GROUP BY department",
    "SELECT diagnosis, AVG(cost), SUM(cost) FROM visits GROUP BY diagnosis",
    "SELECT COUNT(*), SUM(cost), AVG(cost), COUNT(DISTINCT patient_id) FROM visits",
    "SELECT COUNT(*) FROM visits",  # then again: a replay
    "SELECT COUNT(*) FROM visits",
    "SELECT * FROM visits",  # refused, 42501
    "SET dp.epsilon = 0.5",
    "EXPLAIN SELECT COUNT(*) FROM visits",
    "SELECT * FROM dpsql.budget",
    "SELECT * FROM departments",
]


def _audit(policy: Path) -> Path:
    return policy.parent / "dpsql-audit.jsonl"


def _run(policy: Path, statements: list[str] = STATEMENTS, user: str = "alice") -> str:
    """Run ``statements`` in one session; return the metrics text."""
    engine = open_engine(policy)
    try:
        s = engine.session(user)
        for sql in statements:
            with contextlib.suppress(DPSQLError):
                s.execute(sql)
        return engine.trail.metrics.text().decode()
    finally:
        engine.close()


def _dpsql(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dpsql.proxy.cli", *args], capture_output=True, text=True, timeout=120)


def test_one_chained_line_per_statement(write_policy: Callable[..., Path]) -> None:
    policy = write_policy()
    _run(policy)
    lines = _audit(policy).read_text().splitlines()
    assert len(lines) == len(STATEMENTS)
    recs = [json.loads(line) for line in lines]
    assert [r["seq"] for r in recs] == list(range(1, len(STATEMENTS) + 1))
    first = recs[0]
    assert set(first) >= {"prev", "ts", "user", "session", "peer", "tls", "auth", "kind", "sql_hash", "query_hash", "mechanisms",
                          "charge", "replayed", "remaining", "outcome", "sqlstate", "latency_ms"}
    assert first["kind"] == "private" and first["outcome"] == "ok" and first["charge"]["accounting"] == "zcdp"
    assert first["charge"]["epsilon"] == 1.0 and first["mechanisms"] == ["discrete_gaussian"]
    assert first["remaining"]["epsilon"] > 0
    assert recs[3]["charge"] is not None and not recs[3]["replayed"]
    assert recs[4]["charge"] is None and recs[4]["replayed"] and recs[4]["query_hash"] == recs[3]["query_hash"]
    assert (recs[5]["outcome"], recs[5]["sqlstate"], recs[5]["charge"]) == ("refused", "42501", None)
    assert [r["kind"] for r in recs[6:]] == ["set", "explain", "budget", "public"]
    assert verify_chain(_audit(policy)).ok
    ok = _dpsql("audit", "verify", "--policy", str(policy))
    assert ok.returncode == 0 and f"{len(STATEMENTS)} line(s), hash chain intact" in ok.stdout
    assert _dpsql("audit", "verify", str(_audit(policy))).returncode == 0


def _tamper_change(lines: list[str]) -> list[str]:
    rec = json.loads(lines[1])
    rec["latency_ms"] = 0.5
    return [lines[0], json.dumps(rec, separators=(",", ":")), *lines[2:]]


@pytest.mark.parametrize(
    ("tamper", "bad_line"),
    [
        (_tamper_change, 3),  # line 2 changed: line 3 no longer chains to it
        (lambda ls: [ls[0], *ls[2:]], 2),  # line 2 removed
        (lambda ls: [ls[0], ls[1], ls[1], *ls[2:]], 3),  # a line inserted (a copy of line 2)
        (lambda ls: [ls[1], *ls[1:]], 1),  # a forged first line
    ],
    ids=["changed", "removed", "inserted", "forged-first"],
)
def test_a_tampered_log_is_detected_and_refused(write_policy: Callable[..., Path], tamper: Callable[[list[str]], list[str]],
                                                 bad_line: int) -> None:
    """`dpsql audit verify` exits 1 naming the first line that does not chain; an engine does not start
    on the log (58000, the line named), and `dpsql query` exits 1 the same way."""
    policy = write_policy()
    _run(policy, STATEMENTS[:4])
    log = _audit(policy)
    log.write_text("\n".join(tamper(log.read_text().splitlines())) + "\n")
    report = verify_chain(log)
    assert not report.ok and report.bad_line == bad_line
    done = _dpsql("audit", "verify", str(log))
    assert done.returncode == 1 and f"broken at line {bad_line}" in done.stderr and done.stderr.count("\n") == 1
    with pytest.raises(AuditLogUnavailable) as e:
        open_engine(policy)
    assert e.value.sqlstate == "58000" and f"line {bad_line}" in e.value.message
    q = _dpsql("query", "--policy", str(policy), "--user", "alice", "SELECT COUNT(*) FROM visits")
    assert q.returncode == 1 and "58000" in q.stderr and f"line {bad_line}" in q.stderr


def test_an_incomplete_last_line_is_detected(write_policy: Callable[..., Path]) -> None:
    policy = write_policy()
    _run(policy, STATEMENTS[:2])
    log = _audit(policy)
    log.write_bytes(log.read_bytes()[:-5])
    report = verify_chain(log)
    assert report.bad_line == 2 and "incomplete" in (report.problem or "")


def test_verify_usage_errors_exit_2(tmp_path: Path, write_policy: Callable[..., Path]) -> None:
    assert _dpsql("audit", "verify").returncode == 2
    assert _dpsql("audit", "verify", str(tmp_path / "missing.jsonl")).returncode == 2
    policy = write_policy(extra="")
    off = policy.read_text().replace('auth = "trust"', 'auth = "trust"\naudit_log = false')
    policy.write_text(off)
    assert _dpsql("audit", "verify", "--policy", str(policy)).returncode == 2
    _run(policy, STATEMENTS[:1])
    assert not _audit(policy).exists()  # the log is off


def test_concurrent_writers_keep_one_chain(write_policy: Callable[..., Path]) -> None:
    """8 threads of one engine and a second process append at the same time: one intact chain with
    every statement in it."""
    policy = write_policy()
    sqls = [f"SELECT COUNT(*) FROM visits WHERE age >= {i}" for i in range(5)]
    other = subprocess.Popen([sys.executable, "-c", (
        "import sys; from dpsql.api import open_engine\n"
        "e = open_engine(sys.argv[1]); s = e.session('bob')\n"
        "[s.execute(f'SELECT COUNT(*) FROM visits WHERE age < {i}') for i in range(10)]\n"
        "e.close()"), str(policy)], stderr=subprocess.PIPE, text=True)  # fmt: skip
    engine = open_engine(policy)
    try:
        def go() -> None:
            s = engine.session("alice")
            for q in sqls:
                s.execute(q)

        threads = [threading.Thread(target=go) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        engine.close()
    assert other.wait(120) == 0, other.stderr.read() if other.stderr else ""
    report = verify_chain(_audit(policy))
    assert report.ok, report.message()
    assert report.lines == 8 * 5 + 10


# --- nothing computed from private rows ------------------------------------------------------------------

def _exact_aggregates(database: Path) -> tuple[set[int], list[float]]:
    """Exact (pre-noise) aggregates of the hospital data for the queries above: integers ≥ 100 and
    non-integral floats."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows: list[tuple[object, ...]] = []
        for q in ("SELECT COUNT(*), SUM(cost), AVG(cost), COUNT(DISTINCT patient_id) FROM visits",
                  "SELECT COUNT(*), SUM(cost), AVG(cost) FROM visits GROUP BY department",
                  "SELECT COUNT(*), SUM(cost), AVG(cost) FROM visits GROUP BY diagnosis"):
            rows += con.execute(q).fetchall()
    finally:
        con.close()
    ints: set[int] = set()
    floats: list[float] = []
    for r in rows:
        for v in r:
            f = float(v)  # type: ignore[arg-type]
            if f.is_integer():
                if f >= 100:
                    ints.add(int(f))
                    floats.append(f)  # SUM(cost) may be integral: also as a float
            else:
                floats.append(f)
    return ints, floats


_HEX = re.compile(r"\b[0-9a-f]{16,}\b")
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
_NUM = re.compile(r"(?<![\w.])-?\d+(\.\d+)?([eE][-+]?\d+)?(?![\w.])")


def _leaks(text: str, ints: set[int], floats: list[float]) -> list[str]:
    """Numbers in ``text`` equal to an exact aggregate: integer tokens against the integers, decimal
    tokens against the floats (relative 1e-9). Hashes, ids and timestamps are removed first, so a
    digit run inside a hex hash cannot match by chance."""
    clean = _TS.sub(" ", _HEX.sub(" ", text))
    found = []
    for m in _NUM.finditer(clean):
        tok = m.group(0)
        if m.group(1) is None and m.group(2) is None:
            if int(tok) in ints:
                found.append(tok)
        else:
            v = float(tok)
            if any(abs(v - f) <= 1e-9 * max(1.0, abs(f)) for f in floats):
                found.append(tok)
    return found


def test_log_and_metrics_hold_no_private_value(write_policy: Callable[..., Path], hospital: Path) -> None:
    """Scan the audit log and the metrics text for every exact aggregate the queries computed
    before noise (totals, per department, per diagnosis): none appears. Negative control: the same
    scan finds an exact value planted in the text, so it can fail."""
    ints, floats = _exact_aggregates(hospital / "hospital.duckdb")
    assert len(ints) >= 10 and len(floats) >= 10
    policy = write_policy()
    metrics = _run(policy)
    log = _audit(policy).read_text()
    assert "dpsql_statements_total" in metrics and "dpsql_epsilon_charged_total" in metrics
    assert _leaks(log, ints, floats) == []
    assert _leaks(metrics, ints, floats) == []
    some_int, some_float = sorted(ints)[len(ints) // 2], floats[0]
    assert _leaks(log + f'{{"n":{some_int}}}', ints, floats) == [str(some_int)]
    assert _leaks(metrics + f"\nleak {some_float!r}\n", ints, floats) == [repr(some_float)]
