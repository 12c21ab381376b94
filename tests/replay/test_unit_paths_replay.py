"""T1 sensitivity replay for keyed tables (issue 11 item 1, rewriter/unit_paths.py).

``prescriptions`` belong to the patient of their visit (``visit_id → visits.visit_id``), ``doses``
to the patient of their prescription's visit (``rx_id → prescriptions.rx_id → …``). Neighbouring
databases differ by **one whole unit**: its rows in ``patients`` and ``visits`` and every row
reached from them through the keys (its visits' prescriptions, their doses). For every shape —
the keyed table alone, the two-step path, explicit joins with the referenced table (INNER, LEFT,
``USING``, through a merged CTE, with ``patients`` too), a self-join on the key — the bounded SQL's
exact results on D and on D minus the unit (the heaviest first) differ by no more than the plan
declares (``replay_lib.check_neighbours``: L∞, L0, ‖Δ‖₁, ‖Δ‖₂, the key set, untouched groups).

Databases: generated ones (special values: NULL/NaN/±∞/huge doses and costs, undeclared and NULL
keys, visits of no patient, keys with no match) and an adversarial one whose heavy patient has
100 visits × 100 prescriptions × 3 doses (10⁴ prescriptions, 3·10⁴ doses: 10⁸ joined rows for a
self-join without the per-side caps). The test is deterministic (exact integers, no noise).

Negative control: the same replay on a database that breaks the declared uniqueness (one
visit_id on visits of two patients — what the start-up check refuses) is caught.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pytest
import replay_lib as R

from dpsql.policy import policy_from_dict
from dpsql.rewriter import rewrite
from dpsql.rewriter.plan import Rewrite
from dpsql.schema import build_catalog

POLICY: dict[str, Any] = {
    "server": {"auth": "trust"},
    "budget": {"epsilon": 10, "delta": 1e-6},
    "users": {"a": {}},
    "tables": {
        "patients": {"privacy_unit": "patient_id", "columns": {"region": {"values": ["n", "s"]}}},
        "visits": {
            "privacy_unit": "patient_id",
            "max_rows": 3,
            "max_groups": 2,
            "columns": {
                "visit_id": {"unique": True},
                "department": {"values": ["card", "onc", "surg"]},
                "cost": {"lower": 0, "upper": 100},
            },
        },
        "prescriptions": {
            "privacy_unit": {"via": "visit_id", "references": "visits.visit_id"},
            "max_rows": 2,
            "max_groups": 2,
            "columns": {"rx_id": {"unique": True}, "drug": {"values": ["a", "b", "c"]}, "route": {}, "dose": {"lower": -2, "upper": 10}},
        },
        "doses": {
            "privacy_unit": {"via": "rx_id", "references": "prescriptions.rx_id"},
            "max_rows": 3,
            "columns": {"amount": {"lower": 0, "upper": 5}},
        },
    },
}
COLUMNS = {
    "patients": [("patient_id", "BIGINT", "int8"), ("region", "VARCHAR", "text")],
    "visits": [
        ("visit_id", "BIGINT", "int8"),
        ("patient_id", "BIGINT", "int8"),
        ("department", "VARCHAR", "text"),
        ("cost", "DOUBLE", "float8"),
    ],
    "prescriptions": [
        ("rx_id", "BIGINT", "int8"),
        ("visit_id", "BIGINT", "int8"),
        ("drug", "VARCHAR", "text"),
        ("route", "VARCHAR", "text"),
        ("dose", "DOUBLE", "float8"),
    ],
    "doses": [("rx_id", "BIGINT", "int8"), ("amount", "INTEGER", "int4")],
}
CATALOG = build_catalog(
    policy_from_dict(POLICY, "/nonexistent/keyed-replay.toml"),
    {f"public.{t}": [(c, pg) for c, _, pg in cols] for t, cols in COLUMNS.items()},
)

SHAPES: dict[str, str] = {
    "rx_global": "SELECT COUNT(*), SUM(dose), AVG(dose) FROM prescriptions",
    "rx_by_drug": "SELECT drug, COUNT(*), SUM(dose), VAR_POP(dose) FROM prescriptions GROUP BY drug",
    "rx_private_keys": "SELECT route, COUNT(*), SUM(dose) FROM prescriptions GROUP BY route",
    "doses_two_step": "SELECT COUNT(*), SUM(amount) FROM doses WHERE amount > 0",
    "join_by_department": "SELECT v.department, COUNT(*), SUM(p.dose), SUM(v.cost) FROM prescriptions p "
    "JOIN visits v ON p.visit_id = v.visit_id GROUP BY v.department",
    "join_left_using": "SELECT p.drug, COUNT(*), SUM(v.cost) FROM visits v LEFT JOIN prescriptions p USING (visit_id) GROUP BY p.drug",
    "join_units": "SELECT p.drug, COUNT(DISTINCT v.patient_id) FROM visits v JOIN prescriptions p ON p.visit_id = v.visit_id "
    "GROUP BY p.drug",
    "join_cte": "WITH w AS (SELECT visit_id, department FROM visits WHERE cost > 10) SELECT w.department, SUM(p.dose) "
    "FROM prescriptions p JOIN w ON p.visit_id = w.visit_id GROUP BY w.department",
    "join_path_to_patients": "SELECT pt.region, COUNT(*), SUM(d.amount) FROM doses d JOIN prescriptions p ON d.rx_id = p.rx_id "
    "JOIN visits v ON v.visit_id = p.visit_id JOIN patients pt ON pt.patient_id = v.patient_id "
    "GROUP BY pt.region",
    "self_join_on_key": "SELECT a.drug, COUNT(*), SUM(b.dose) FROM prescriptions a JOIN prescriptions b ON a.visit_id = b.visit_id "
    "GROUP BY a.drug",
}


@dataclass
class KDB:
    """One database: rows per table (tuples in :data:`COLUMNS` order)."""

    name: str
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: {t: [] for t in COLUMNS})

    def units(self) -> list[int]:
        """The units, heaviest first (rows reached through the keys, then id)."""
        weight = {
            u: len(self.reached(u)[1]["prescriptions"]) + len(self.reached(u)[1]["visits"])
            for u in {r[0] for r in self.rows["patients"]} | {r[1] for r in self.rows["visits"] if r[1] is not None}
        }
        return sorted(weight, key=lambda u: (-weight[u], u))

    def reached(self, u: int) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, list[tuple[Any, ...]]]]:
        """(D minus unit u, u's rows only): u's patients and visits rows and every row reached from them by the keys."""
        visits = {r[0] for r in self.rows["visits"] if r[1] == u}
        rx = {r[0] for r in self.rows["prescriptions"] if r[1] in visits}
        mine = {
            "patients": lambda r: r[0] == u,
            "visits": lambda r: r[1] == u,
            "prescriptions": lambda r: r[1] in visits,
            "doses": lambda r: r[0] in rx,
        }
        minus = {t: [r for r in rows if not mine[t](r)] for t, rows in self.rows.items()}
        only = {t: [r for r in rows if mine[t](r)] for t, rows in self.rows.items()}
        return minus, only


DOSE_SPECIAL = (None, math.nan, math.inf, -math.inf, -0.0, 10.0, -2.0, 10.5, -2.5, 1e308, -1e308, 5e-324)
COST_SPECIAL = (None, math.nan, math.inf, 0.0, 100.0, 100.01, -1.0, 1e300)
DRUG_SPECIAL = (None, "z", "", "A")
ROUTE_SPECIAL = (None, "", "x" * 200, "h'q")


def generated(seed: int, patients: int) -> KDB:
    """A random database: 0–5 visits per patient (some of no patient), 0–4 prescriptions per visit
    (some with no matching visit), 0–3 doses per prescription, special values with probability ¼."""
    rng = random.Random(seed)
    db = KDB(f"gen{seed}")
    vid = rid = 0

    def pick(special: Sequence[Any], normal: Any) -> Any:
        return rng.choice(special) if rng.random() < 0.25 else normal

    for u in range(1, patients + 1):
        db.rows["patients"].append((u * 7919 % 10**6, rng.choice(["n", "s", None])))
    pids = [r[0] for r in db.rows["patients"]] + [None]
    for pid in pids:
        for _ in range(rng.randint(0, 5)):
            vid += 1
            db.rows["visits"].append(
                (vid, pid, pick((None, "x"), rng.choice(["card", "onc", "surg"])), pick(COST_SPECIAL, float(rng.randint(0, 120))))
            )
    for v in [*range(1, vid + 1), 10**9]:  # 10**9: no such visit
        for _ in range(rng.randint(0, 4)):
            rid += 1
            key = v if rng.random() > 0.05 else None
            drug, route = pick(DRUG_SPECIAL, rng.choice("abc")), pick(ROUTE_SPECIAL, rng.choice(["oral", "iv"]))
            db.rows["prescriptions"].append((rid, key, drug, route, pick(DOSE_SPECIAL, float(rng.randint(-3, 12)))))
    for r in [*range(1, rid + 1), 10**9]:
        for _ in range(rng.randint(0, 3)):
            db.rows["doses"].append((r, pick((None, -1, 6, 2**31 - 1), rng.randint(0, 6))))
    return db


def adversarial() -> KDB:
    """A heavy patient (100 visits × 100 prescriptions × 3 doses, every drug and department), a
    patient in every group with one row each, and light patients."""
    db = generated(101, 12)
    vid, rid = 10**6, 10**6
    heavy = 4242
    db.rows["patients"].append((heavy, "n"))
    for i in range(100):
        vid += 1
        db.rows["visits"].append((vid, heavy, ["card", "onc", "surg"][i % 3], 1000.0))
        for j in range(100):
            rid += 1
            db.rows["prescriptions"].append((rid, vid, "abc"[j % 3], ["oral", "iv", "im"][j % 3], 10.0 if j % 2 else -2.0))
            db.rows["doses"].extend((rid, 5) for _ in range(3))
    every = 5151
    db.rows["patients"].append((every, "s"))
    for d, drug, route in (("card", "a", "oral"), ("onc", "b", "iv"), ("surg", "c", "im")):
        vid += 1
        rid += 1
        db.rows["visits"].append((vid, every, d, 50.0))
        db.rows["prescriptions"].append((rid, vid, drug, route, 3.0))
        db.rows["doses"].append((rid, 2))
    return db


def shared_visit() -> KDB:
    """The negative control: visit 1 appears on visits of two patients (not unique), with three
    prescriptions on it."""
    db = KDB("shared_visit")
    db.rows["patients"] += [(1, "n"), (2, "s")]
    db.rows["visits"] += [(1, 1, "card", 5.0), (1, 2, "card", 5.0)]
    db.rows["prescriptions"] += [(i, 1, "a", "oral", 1.0) for i in range(1, 4)]
    return db


class Stack:
    """All variants of all databases in one DuckDB, each table a view on one variant at a time."""

    def __init__(self) -> None:
        self.con = duckdb.connect(":memory:", config={"threads": 2})
        self.next = 0
        for t, cols in COLUMNS.items():
            self.con.execute(f"CREATE TABLE {t}_stack (__rep INTEGER, {', '.join(f'{c} {d}' for c, d, _ in cols)})")

    def add(self, rows: dict[str, list[tuple[Any, ...]]]) -> int:
        rep = self.next
        self.next += 1
        for t, rs in rows.items():
            if rs:  # replay_lib's loader keeps NULL, NaN and ±0.0 exactly
                R._load(self.con, "__load", [(c, pg, d) for c, d, pg in COLUMNS[t]], rs, [rep] * len(rs))
                self.con.execute(f"INSERT INTO {t}_stack SELECT * FROM __load")
                self.con.execute("DROP TABLE __load")
        return rep

    def run(self, rw: Rewrite, rep: int, problems: list[str], where: str) -> R.Cells:
        for t in COLUMNS:
            self.con.execute(f"CREATE OR REPLACE VIEW main.{t} AS SELECT * EXCLUDE (__rep) FROM {t}_stack WHERE __rep = {rep}")
        assert rw.plan is not None
        cur = self.con.execute(R.keyed(rw.sql, rw.plan))
        return R.cells_of([d[0] for d in cur.description], cur.fetchall(), rw.plan, problems, where)


def _shapes(policy: dict[str, Any] | None = None) -> dict[str, Rewrite]:
    catalog = CATALOG
    if policy is not None:
        catalog = build_catalog(
            policy_from_dict(policy, "/nonexistent/keyed-replay.toml"),
            {f"public.{t}": [(c, pg) for c, _, pg in cols] for t, cols in COLUMNS.items()},
        )
    return {n: rewrite(sql, catalog) for n, sql in SHAPES.items()}


def _replay(dbs: Sequence[KDB], shapes: dict[str, Rewrite], max_removals: int) -> tuple[list[str], int, dict[str, Any]]:
    stack = Stack()
    problems: list[str] = []
    checks = 0
    deltas: dict[str, Any] = {}
    try:
        variants = []
        for db in dbs:
            full = stack.add(db.rows)
            removals = []
            for u in db.units()[:max_removals]:
                minus, only = db.reached(u)
                removals.append((u, stack.add(minus), stack.add(only)))
            variants.append((db, full, removals))
        for name, rw in shapes.items():
            assert rw.plan is not None
            for db, full, removals in variants:
                d_full = stack.run(rw, full, problems, f"{name}/{db.name}")
                for u, minus, only in removals:
                    where = f"{name}/{db.name}/without unit {u}"
                    d_minus = stack.run(rw, minus, problems, where)
                    problems += R.check_neighbours(rw.plan, d_full, d_minus, stack.run(rw, only, problems, where), where)
                    deltas[(name, db.name, u)] = (d_full, d_minus)
                    checks += 1
    finally:
        stack.con.close()
    return problems, checks, deltas


def _clean(problems: list[str]) -> None:
    if problems:
        pytest.fail(f"{len(problems)} sensitivity violations, e.g.:\n" + "\n".join(problems[:20]))


def test_keyed_shapes_are_bounded_by_the_keyed_tables_policy() -> None:
    shapes = _shapes()
    plan = shapes["rx_by_drug"].plan
    assert plan is not None and plan.max_groups == 2 and plan.stats[0].max_contribution == 2  # prescriptions' own
    plan = shapes["doses_two_step"].plan
    assert plan is not None and plan.stats[0].max_contribution == 3  # doses' own max_rows
    assert all(rw.plan is not None and rw.plan.private_join == name.startswith(("join", "self")) for name, rw in shapes.items())


def test_keyed_replay_on_the_adversarial_database() -> None:
    """The heavy fan-out patient first: every declared bound holds, and the heavy patient reaches
    the keyed table's own bound (its removal moves the global count by exactly max_rows = 2)."""
    db = adversarial()
    problems, checks, deltas = _replay([db], _shapes(), max_removals=8)
    _clean(problems)
    assert checks == 8 * len(SHAPES)
    assert db.units()[0] == 4242
    full, minus = deltas[("rx_global", db.name, 4242)]
    assert full[()][0] - minus[()][0] == 2
    full, minus = deltas[("doses_two_step", db.name, 4242)]
    assert full[()][0] - minus[()][0] == 3
    # an explicit join caps each side first (4 of the 10⁴ prescriptions, 6 of the 100 visits): the
    # kept rows rarely match, so the heavy patient moves a group by at most max(max_rows) = 3, often 0
    full, minus = deltas[("join_by_department", db.name, 4242)]
    assert max(abs(full.get(g, (0,))[0] - minus.get(g, (0,))[0]) for g in full) <= 3


@pytest.mark.parametrize("seed", range(6))
def test_keyed_replay_on_generated_databases(seed: int) -> None:
    problems, checks, _ = _replay([generated(seed, 5 + 7 * seed)], _shapes(), max_removals=6)
    _clean(problems)
    assert checks > 0


def test_negative_control_a_key_that_is_not_unique_is_caught() -> None:
    """With visit 1 on two patients' visits, each prescription on it belongs to both; removing
    patient 1 (and the rows reached from it) also removes patient 2's copies: the count moves by
    2·max_rows, twice its declared L∞. The start-up check refuses such data."""
    problems, _, _ = _replay([shared_visit()], {"rx_global": _shapes()["rx_global"]}, max_removals=2)
    assert any("more than L∞ = 2" in p for p in problems), problems


def test_negative_control_an_understated_bound_is_caught() -> None:
    """A plan that declares max_rows 1 for prescriptions while the SQL clamps to 2 is caught on the
    heavy patient (the replay checks the plan, not only the SQL)."""
    shapes = _shapes()
    lying = copy.deepcopy(shapes["rx_global"])
    assert lying.plan is not None
    stats = tuple(dataclasses.replace(s, max_contribution=max(1, s.max_contribution // 2)) for s in lying.plan.stats)
    lying = dataclasses.replace(lying, plan=dataclasses.replace(lying.plan, stats=stats))
    problems, _, _ = _replay([adversarial()], {"rx_global": lying}, max_removals=1)
    assert any("more than L∞" in p for p in problems)
