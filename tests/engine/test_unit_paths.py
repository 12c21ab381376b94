"""Keyed tables end to end on DuckDB (issue 11 item 1): prescriptions belong to the patient of their
visit, doses to the patient of their prescription's visit. At a huge ε the answers equal the
exact bounded values computed here by hand in SQL (per unit: the rows reached through the keys,
clamped by the keyed table's own ``max_rows`` and bounds); rows whose key has no match, or whose
visit has no patient, belong to no one and count nowhere. A referenced key that is not unique in
the data stops the engine at start-up.

Noise: at ε = 10⁵ (zCDP, δ = 10⁻⁷) a count's σ is below 10⁻³ (its discrete Gaussian is 0 except
with probability < 10⁻¹⁰⁰⁰) and a sum's σ below 3·10⁻³ in value units; sums are compared within
0.05 (> 15σ: a false failure with probability < 10⁻⁵⁰ per comparison).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from engine_lib import Harness, policy_text

from dpsql.errors import PolicyError
from dpsql.policy import load_policy
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.engine import Engine

HEAVY = 999  # 10 visits in cardiology, 50 prescriptions of drug 'a' on each, 4 doses on each prescription
TABLES = """
[tables.patients]
privacy_unit = "patient_id"
[tables.patients.columns]
region = { values = ["n", "s"] }
[tables.visits]
privacy_unit = "patient_id"
max_groups = 2
max_rows = 5
[tables.visits.columns]
visit_id = { unique = true }
department = { values = ["cardiology", "oncology", "surgery"] }
cost = { lower = 0, upper = 100 }
[tables.prescriptions]
privacy_unit = { via = "visit_id", references = "visits.visit_id" }
max_groups = 2
max_rows = 3
[tables.prescriptions.columns]
rx_id = { unique = true }
drug = { values = ["a", "b", "c"] }
dose = { lower = 0, upper = 10 }
[tables.doses]
privacy_unit = { via = "rx_id", references = "prescriptions.rx_id" }
max_rows = 4
[tables.doses.columns]
amount = { lower = 0, upper = 2 }
"""


def _write_data(path: Path, *, duplicate_visit: bool = False) -> None:
    rng = random.Random(11)
    patients, visits, rx, doses = [], [], [], []
    vid = rid = 0
    for pid in range(1, 201):
        patients.append((pid, "ns"[pid % 2]))
        depts = rng.sample(["cardiology", "oncology", "surgery"], 2)
        drugs = rng.sample("abc", 2)
        n_rx = 0
        for _ in range(rng.randint(0, 4)):
            vid += 1
            visits.append((vid, pid, rng.choice(depts), rng.randint(-20, 130)))
            for _ in range(rng.randint(0, 1) if n_rx < 6 else 0):
                rid += 1
                n_rx += 1
                rx.append((rid, vid, rng.choice(drugs), rng.randint(-3, 14)))
                doses.extend((rid, rng.randint(0, 3)) for _ in range(rng.randint(0, 2)))
    patients.append((HEAVY, "n"))
    for _ in range(10):
        vid += 1
        visits.append((vid, HEAVY, "cardiology", 50))
        for _ in range(50):
            rid += 1
            rx.append((rid, vid, "a", 7))
            doses.extend((rid, 1) for _ in range(4))
    visits.append((vid + 1, None, "oncology", 10))  # a visit of no one
    rx.append((rid + 1, vid + 1, "b", 5))  # … so its prescription belongs to no one
    rx.append((rid + 2, 10**9, "c", 5))  # a key with no match: no one's
    if duplicate_visit:
        visits.append((1, 2, "surgery", 1))
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE patients (patient_id BIGINT, region VARCHAR)")
    con.execute("CREATE TABLE visits (visit_id BIGINT, patient_id BIGINT, department VARCHAR, cost INTEGER)")
    con.execute("CREATE TABLE prescriptions (rx_id BIGINT, visit_id BIGINT, drug VARCHAR, dose INTEGER, note VARCHAR)")
    con.execute("CREATE TABLE doses (rx_id BIGINT, amount INTEGER)")
    _insert(con, "patients", patients)
    _insert(con, "visits", visits)
    _insert(con, "prescriptions", [(*r, "private note") for r in rx])
    _insert(con, "doses", doses)
    con.close()


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    """One INSERT of literal rows (executemany is row by row in DuckDB)."""

    def lit(v: object) -> str:
        return "NULL" if v is None else f"'{v}'" if isinstance(v, str) else str(v)

    con.execute(f"INSERT INTO {table} VALUES " + ", ".join("(" + ", ".join(lit(v) for v in r) + ")" for r in rows))


@pytest.fixture(scope="module")
def keyed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keyed") / "keyed.duckdb"
    _write_data(path)
    return path


def _exact(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# rows reached through the keys, with their unit (a NULL unit or no match: no one's)
RX = "(SELECT p.*, v.patient_id AS u FROM prescriptions p JOIN visits v ON p.visit_id = v.visit_id WHERE v.patient_id IS NOT NULL)"
DOSES = f"(SELECT d.*, r.u FROM doses d JOIN {RX} r ON d.rx_id = r.rx_id)"


@pytest.fixture
def session(make_harness: Callable[..., Harness], keyed_db: Path):  # type: ignore[no-untyped-def]
    h = make_harness(database=keyed_db, tables=TABLES, max_epsilon=1e6, epsilon=1e6, replay="off")
    s = h.engine.session("alice")
    s.execute("SET dp.epsilon = 100000")
    return s


def test_counts_and_sums_equal_the_bounded_values(session, keyed_db: Path) -> None:  # type: ignore[no-untyped-def]
    ((n, total),) = session.execute("SELECT COUNT(*), SUM(dose) FROM prescriptions").rows
    ((want_n, want_total),) = _exact(
        keyed_db,
        f"SELECT SUM(LEAST(n, 3)), SUM(LEAST(GREATEST(s, 0), 30)) FROM "
        f"(SELECT u, COUNT(*) AS n, SUM(LEAST(GREATEST(dose, 0), 10)) AS s FROM {RX} GROUP BY u)",
    )
    assert n == want_n and abs(total - want_total) < 0.05
    assert want_n < _exact(keyed_db, "SELECT COUNT(*) FROM prescriptions")[0][0] - 400  # the heavy patient is capped


def test_grouped_by_a_declared_key(session, keyed_db: Path) -> None:  # type: ignore[no-untyped-def]
    rows = session.execute("SELECT drug, COUNT(*), SUM(dose) FROM prescriptions GROUP BY drug ORDER BY drug").rows
    # every patient has ≤ 6 prescriptions over ≤ 2 drugs except the heavy one (one drug): max_groups never binds
    want = _exact(
        keyed_db,
        f"SELECT drug, SUM(LEAST(n, 3)), SUM(LEAST(GREATEST(s, 0), 30)) FROM (SELECT u, drug, COUNT(*) AS n, "
        f"SUM(LEAST(GREATEST(dose, 0), 10)) AS s FROM {RX} GROUP BY u, drug) GROUP BY drug ORDER BY drug",
    )
    assert _exact(keyed_db, f"SELECT MAX(k) FROM (SELECT u, COUNT(DISTINCT drug) AS k FROM {RX} GROUP BY u)")[0][0] <= 2
    assert [r[0] for r in rows] == [w[0] for w in want]
    for got, exp_ in zip(rows, want, strict=True):
        assert got[1] == exp_[1] and abs(got[2] - exp_[2]) < 0.05


def test_two_step_path(session, keyed_db: Path) -> None:  # type: ignore[no-untyped-def]
    ((n, total),) = session.execute("SELECT COUNT(*), SUM(amount) FROM doses").rows
    ((want_n, want_total),) = _exact(
        keyed_db,
        f"SELECT SUM(LEAST(n, 4)), SUM(LEAST(s, 8)) FROM (SELECT u, COUNT(*) AS n, SUM(LEAST(amount, 2)) AS s FROM {DOSES} GROUP BY u)",
    )
    assert n == want_n and abs(total - want_total) < 0.05


def test_explicit_join_with_the_referenced_table(session, keyed_db: Path) -> None:  # type: ignore[no-untyped-def]
    sql = (
        "SELECT v.department, COUNT(*), SUM(p.dose) FROM prescriptions p JOIN visits v ON p.visit_id = v.visit_id "
        "GROUP BY v.department ORDER BY v.department"
    )
    rows = session.execute(sql).rows
    # joined constants: max_rows max(3, 5) = 5, max_groups 2. Light patients: ≤ 6 prescriptions and ≤ 4
    # visits, so the per-side caps (6 and 10 rows per unit) keep all their rows. The heavy patient:
    # all 10 visits kept, 6 of its 500 prescriptions kept before the join → 6 joined rows → 5.
    want = _exact(
        keyed_db,
        f"SELECT department, SUM(LEAST(n, 5)), SUM(LEAST(GREATEST(s, 0), 50)) FROM "
        f"(SELECT u, department, CASE WHEN u = {HEAVY} THEN 6 ELSE COUNT(*) END AS n, "
        f"CASE WHEN u = {HEAVY} THEN 42 ELSE SUM(LEAST(GREATEST(dose, 0), 10)) END AS s "
        f"FROM {RX} r JOIN visits v USING (visit_id) GROUP BY u, department) "
        "GROUP BY department ORDER BY department",
    )
    assert [r[0] for r in rows] == [w[0] for w in want]
    for got, exp_ in zip(rows, want, strict=True):
        assert got[1] == exp_[1] and abs(got[2] - exp_[2]) < 0.05


def test_explain_names_the_key_path(session) -> None:  # type: ignore[no-untyped-def]
    text = "\n".join(session.explain("SELECT COUNT(*) FROM prescriptions"))
    assert "patient_id (through visit_id → public.visits.visit_id)" in text


def test_a_referenced_key_that_is_not_unique_stops_the_start(tmp_path: Path) -> None:
    db = tmp_path / "dup.duckdb"
    _write_data(db, duplicate_visit=True)
    path = tmp_path / "policy.toml"
    path.write_text(policy_text(db, tmp_path / "ledger.sqlite", tables=TABLES))
    policy = load_policy(path)
    backend = DuckDBBackend(policy)
    try:
        with pytest.raises(PolicyError) as e:
            Engine(policy, backend)
    finally:
        backend.close()
    assert e.value.key == "tables.visits.columns.visit_id.unique"
    assert "more than one row" in e.value.problem and "several units" in e.value.problem


def test_dpsql_check_runs_the_key_check(tmp_path: Path, keyed_db: Path) -> None:
    """`dpsql check`: the keyed tables are listed with their key path; a non-unique referenced key exits 2 naming it."""
    import subprocess
    import sys

    def check(db: Path, name: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / f"{name}.toml"
        path.write_text(policy_text(db, tmp_path / f"{name}.sqlite", tables=TABLES))
        cmd = [sys.executable, "-m", "dpsql.proxy.cli", "check", "--policy", str(path)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    good = check(keyed_db, "good")
    assert good.returncode == 0, good.stderr
    assert "public.prescriptions (private, unit patient_id (through visit_id → public.visits.visit_id))" in good.stdout
    dup = tmp_path / "dup.duckdb"
    _write_data(dup, duplicate_visit=True)
    bad = check(dup, "bad")
    assert bad.returncode == 2 and "tables.visits.columns.visit_id.unique" in bad.stderr, bad.stderr
