"""dpsql vs SmartNoise SQL: accuracy and speed on the same data, at the same (ε, δ), in one run.

Run it through ``bench/compare_smartnoise.sh`` (which builds SmartNoise's own virtualenv,
``bench/.venv-smartnoise``, on first use) or directly, once that venv exists:

    .venv/bin/python bench/compare_smartnoise.py [--quick] [--runs 200] [--only accuracy|speed]

The dpsql side runs here, in the repo's venv, through the in-process API (``dpsql.api.connect``)
with throwaway policies (budget ε = 1e6, ledgers under ``bench/out/ledgers/``). The SmartNoise side
runs in ``bench/smartnoise_worker.py`` under SmartNoise's venv; this script sends it JSON requests
(data source, SQL, ε, δ, options) and gets the result rows back. Both sides read the same data.

**Accuracy.** Each query runs ``--runs`` times per ε ∈ {0.1, 1, 10} (δ = 1e-5) on dpsql under
``zcdp`` (its default: discrete Gaussian calibrated so the query alone is (ε, δ)-DP), dpsql under
``basic`` (pure ε, discrete Laplace) and SmartNoise (its default mechanisms: Laplace, and a
Laplace threshold on the key count with δ when it censors dimensions). Errors are against the exact
answer of the same SQL on the full data (plain DuckDB); each system's *bounded* answer (its own
rewrite with the noise switched off) separates bounding bias from noise. See
``docs/benchmarks.md`` ("dpsql vs SmartNoise SQL") for how the privacy semantics are matched.

**Speed.** Per-query latency on PUMS_pid (1,000 rows) and PUMS_pid replicated to 1M and 10M rows
with fresh person ids: the plain query on DuckDB (the floor), dpsql's parse + rewrite alone, dpsql
end to end in-process (rewrite and calibration caches cleared before each run, and warm), dpsql
over the PostgreSQL wire (psycopg 3 against ``dpsql serve`` started here), SmartNoise's parse +
rewrite alone and SmartNoise end to end on each reader it can use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

OUT = bl.OUT / "smartnoise"
SN_PYTHON = bl.BENCH / ".venv-smartnoise" / "bin" / "python"
WORKER = bl.BENCH / "smartnoise_worker.py"
PUMS_DIR = Path(os.environ.get("DPSQL_PUMS_DIR", str(bl.ROOT.parent / "shared" / "data" / "pums")))
EPSILONS = (0.1, 1.0, 10.0)
DELTA = 1e-5
USER = "bench"
PASSWORD = "bench-password"
HOSPITAL_MAX_ROWS = 5  # dpsql max_rows (max_groups = 1) ↔ SmartNoise max_ids for visits

PUMS_COLUMNS = {
    "age": {"lower": 0, "upper": 100},
    "income": {"lower": 0, "upper": 500000},
    "sex": {"values": [0, 1]},
    "married": {"values": [0, 1]},
    "educ": {},
    "race": {},
}


# ---------------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Query:
    """One accuracy query: the same SQL text runs on both systems and, as plain SQL, on DuckDB."""

    label: str
    data: str  # "pums" (row-level), "pums_pid" (person id) or "hospital"
    sql: str
    keys: tuple[str, ...] = ()
    selection: bool = False  # grouping keys without declared values: dpsql partition selection ↔ SmartNoise censor_dims
    truth_sql: str | None = None  # exact values for every group (the query without HAVING/ORDER BY/LIMIT)

    @property
    def kind(self) -> str:
        if not self.keys:
            return "no GROUP BY"
        return "selection" if self.selection else "public keys"


QUERIES: tuple[Query, ...] = (
    Query("COUNT(*)", "pums", "SELECT COUNT(*) AS n FROM PUMS.PUMS"),
    Query("COUNT by sex", "pums", "SELECT sex, COUNT(*) AS n FROM PUMS.PUMS GROUP BY sex", ("sex",)),
    Query("COUNT by sex, married", "pums", "SELECT sex, married, COUNT(*) AS n FROM PUMS.PUMS GROUP BY sex, married", ("sex", "married")),
    Query("SUM(income)", "pums", "SELECT SUM(income) AS total FROM PUMS.PUMS"),
    Query("AVG(age)", "pums", "SELECT AVG(age) AS mean_age FROM PUMS.PUMS"),
    Query("AVG(income) by married", "pums", "SELECT married, AVG(income) AS mean_income FROM PUMS.PUMS GROUP BY married", ("married",)),
    Query("COUNT WHERE age > 60", "pums", "SELECT COUNT(*) AS n FROM PUMS.PUMS WHERE age > 60"),
    Query(
        "SUM(income) WHERE sex, age",
        "pums",
        "SELECT SUM(income) AS total FROM PUMS.PUMS WHERE sex = 1 AND age BETWEEN 30 AND 50",
    ),
    Query("COUNT by race (selection)", "pums", "SELECT race, COUNT(*) AS n FROM PUMS.PUMS GROUP BY race", ("race",), True),
    Query(
        "HAVING COUNT(*) > 50",
        "pums",
        "SELECT educ, COUNT(*) AS n FROM PUMS.PUMS GROUP BY educ HAVING COUNT(*) > 50",
        ("educ",),
        True,
        "SELECT educ, COUNT(*) AS n FROM PUMS.PUMS GROUP BY educ",
    ),
    Query(
        "ORDER BY n DESC LIMIT 5",
        "pums",
        "SELECT educ, COUNT(*) AS n FROM PUMS.PUMS GROUP BY educ ORDER BY n DESC LIMIT 5",
        ("educ",),
        True,
        "SELECT educ, COUNT(*) AS n FROM PUMS.PUMS GROUP BY educ",
    ),
    Query("AVG(age) by educ (selection)", "pums", "SELECT educ, AVG(age) AS mean_age FROM PUMS.PUMS GROUP BY educ", ("educ",), True),
    Query("COUNT(DISTINCT pid)", "pums_pid", "SELECT COUNT(DISTINCT pid) AS n FROM PUMS.PUMS_pid"),
    Query(
        "COUNT(DISTINCT pid) by married",
        "pums_pid",
        "SELECT married, COUNT(DISTINCT pid) AS n FROM PUMS.PUMS_pid GROUP BY married",
        ("married",),
    ),
    Query(
        "COUNT(DISTINCT pid) by race (sel.)",
        "pums_pid",
        "SELECT race, COUNT(DISTINCT pid) AS n FROM PUMS.PUMS_pid GROUP BY race",
        ("race",),
        True,
    ),
    # COUNT(DISTINCT x) of a non-unit column (issue 10 §2): dpsql keeps ≤ max_rows distinct values per unit and
    # group; SmartNoise SQL 1.0.10 answers it too.
    Query("COUNT(DISTINCT educ)", "pums_pid", "SELECT COUNT(DISTINCT educ) AS n FROM PUMS.PUMS_pid"),
    Query(
        "COUNT(DISTINCT diagnosis) by department",
        "hospital",
        "SELECT department, COUNT(DISTINCT diagnosis) AS n FROM visits GROUP BY department",
        ("department",),
    ),
    # Quantiles and MIN/MAX (issue 10 §2): SmartNoise SQL 1.0.10 parses PERCENTILE_CONT/DISC, MIN and MAX but has no
    # rewrite for them ("We don't know how to rewrite aggregate function"), and no MEDIAN: its cells report that
    # failure. The quantile comparison at equal loss is against OpenDP (bench/compare_quantiles.py).
    Query("MEDIAN(income)", "pums_pid", "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY income) AS m FROM PUMS.PUMS_pid"),
    Query("MAX(age)", "pums_pid", "SELECT MAX(age) AS m FROM PUMS.PUMS_pid"),
    Query("visits COUNT(*)", "hospital", "SELECT COUNT(*) AS n FROM visits"),
    Query("patients COUNT(DISTINCT)", "hospital", "SELECT COUNT(DISTINCT patient_id) AS n FROM visits"),
    Query("visits by department", "hospital", "SELECT department, COUNT(*) AS n FROM visits GROUP BY department", ("department",)),
    Query(
        "AVG(cost) by department",
        "hospital",
        "SELECT department, AVG(cost) AS mean_cost FROM visits GROUP BY department",
        ("department",),
    ),
    Query(
        "visits by diagnosis (selection)",
        "hospital",
        "SELECT diagnosis, COUNT(*) AS n FROM visits GROUP BY diagnosis",
        ("diagnosis",),
        True,
    ),
    Query("SUM(cost) WHERE age >= 65", "hospital", "SELECT SUM(cost) AS total FROM visits WHERE age >= 65"),
    # The same L1 bound (5 visits per patient) split the other way: ≤ 1 visit in each of ≤ 5 departments.
    Query("visits by department [5×1 ↔ 5]", "hospital51", "SELECT department, COUNT(*) AS n FROM visits GROUP BY department",
          ("department",)),
    Query("AVG(cost) by department [5×1 ↔ 5]", "hospital51",
          "SELECT department, AVG(cost) AS mean_cost FROM visits GROUP BY department", ("department",)),
    Query("visits by diagnosis [5×1 ↔ 5]", "hospital51", "SELECT diagnosis, COUNT(*) AS n FROM visits GROUP BY diagnosis",
          ("diagnosis",), True),
    # The demo policy's own bounds (3 groups × 5 rows) against SmartNoise at the same L1 sensitivity (max_ids = 15).
    Query("visits by department [3×5 ↔ 15]", "hospital15", "SELECT department, COUNT(*) AS n FROM visits GROUP BY department",
          ("department",)),
    Query("AVG(cost) by department [3×5 ↔ 15]", "hospital15",
          "SELECT department, AVG(cost) AS mean_cost FROM visits GROUP BY department", ("department",)),
    Query("visits by diagnosis [3×5 ↔ 15]", "hospital15", "SELECT diagnosis, COUNT(*) AS n FROM visits GROUP BY diagnosis",
          ("diagnosis",), True),
)

SPEED_QUERIES: tuple[tuple[str, str], ...] = (
    ("COUNT(*)", "SELECT COUNT(*) AS n FROM PUMS.PUMS_pid"),
    ("COUNT by sex", "SELECT sex, COUNT(*) AS n FROM PUMS.PUMS_pid GROUP BY sex"),
    ("AVG(income) by married", "SELECT married, AVG(income) AS mean_income FROM PUMS.PUMS_pid GROUP BY married"),
    ("SUM(income) WHERE", "SELECT SUM(income) AS total FROM PUMS.PUMS_pid WHERE sex = 1 AND age BETWEEN 30 AND 50"),
    ("COUNT by educ (selection)", "SELECT educ, COUNT(*) AS n FROM PUMS.PUMS_pid GROUP BY educ"),
    ("COUNT(DISTINCT pid)", "SELECT COUNT(DISTINCT pid) AS n FROM PUMS.PUMS_pid"),
)


# ------------------------------------------------------------------------------------ data + policy


def _duckdb_literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def pums_db(rows: int | None = None, *, pk: bool = True) -> Path:
    """DuckDB copy of PUMS: schema ``pums`` with ``pums`` (PUMS.csv + a row id ``rid``) and
    ``pums_pid`` (PUMS_pid.csv). With ``rows``: only ``pums_pid``, PUMS_pid replicated to ``rows``
    rows, copy i of person p getting the fresh id i·1000 + p (so every row is its own person).
    With ``pk`` (the default) ``rid`` and ``pid`` are declared PRIMARY KEY."""
    import duckdb

    suffix = "_pk" if pk else ""
    path = OUT / (f"pums_data{suffix}.duckdb" if rows is None else f"pums_{rows}{suffix}.duckdb")
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + "_tmp.duckdb")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        con.execute("CREATE SCHEMA pums")
        pid_csv = _duckdb_literal(PUMS_DIR / "PUMS_pid.csv")
        if rows is None:
            con.execute(
                "CREATE TABLE pums.pums AS SELECT CAST(row_number() OVER () AS BIGINT) AS rid, * "
                f"FROM read_csv({_duckdb_literal(PUMS_DIR / 'PUMS.csv')}, parallel = false)"
            )
            con.execute(f"CREATE TABLE pums.pums_pid AS SELECT * FROM read_csv({pid_csv}, parallel = false)")
        else:
            n = con.execute(f"SELECT COUNT(*) FROM read_csv({pid_csv})").fetchone()[0]
            copies = math.ceil(rows / n)
            con.execute(
                "CREATE TABLE pums.pums_pid AS SELECT age, sex, educ, race, income, married, "
                f"CAST(i * {n} + pid AS BIGINT) AS pid FROM read_csv({pid_csv}, parallel = false), range({copies}) r(i) "
                f"ORDER BY i, pid LIMIT {rows}"
            )
        # The ids are unique by construction; declaring it lets dpsql skip the per-unit GROUP BY
        # (one row per unit). SmartNoise's counterpart is row_privacy (see run_speed).
        if pk:
            con.execute("ALTER TABLE pums.pums_pid ADD PRIMARY KEY (pid)")
            if rows is None:
                con.execute("ALTER TABLE pums.pums ADD PRIMARY KEY (rid)")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, path)
    return path


def hospital_db() -> Path:
    """The demo hospital data set (``dpsql demo``'s: 50,000 patients, 250,000 visits)."""
    from dpsql.examples.hospital import generate

    directory = OUT / "hospital"
    if not (directory / "hospital.duckdb").exists():
        with bl._quiet_fds():
            generate(directory)
    return directory / "hospital.duckdb"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(type(v))


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer for policies: nested dicts become [sections], a ``columns`` table's
    entries inline tables."""
    lines: list[str] = []
    subs: list[tuple[str, dict[str, Any]]] = []
    for k, v in data.items():
        if isinstance(v, dict) and not prefix.endswith("columns"):
            subs.append((k, v))
        else:
            lines.append(f"{json.dumps(k)} = {_toml_value(v)}")
    out = ""
    if prefix and (lines or not subs):
        out += f"[{prefix}]\n"
    out += "".join(f"{line}\n" for line in lines)
    for k, v in subs:
        out += "\n" + to_toml(v, f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k))
    return out


_ledgers: list[Path] = []


def write_policy(name: str, duckdb_path: Path, tables: dict[str, Any], accounting: str) -> Path:
    """A dpsql policy file under bench/out/smartnoise/: the given tables, budget ε = 1e6, no
    session/global cap, a fresh ledger under bench/out/ledgers/, no rate limit, one user."""
    from dpsql.proxy.passwords import scram_verifier

    ledgers = bl.OUT / "ledgers"
    ledgers.mkdir(parents=True, exist_ok=True)
    ledger = ledgers / f"smartnoise-{name}-{accounting}-{os.getpid()}-{time.time_ns()}.sqlite"
    _ledgers.append(ledger)
    data = {
        "source": {"duckdb": str(duckdb_path)},
        "server": {"listen": "127.0.0.1:0", "auth": "scram-sha-256"},
        "privacy": {
            "accounting": accounting,
            "default_epsilon": 1.0,
            "default_delta": DELTA,
            "max_epsilon_per_query": 100.0,
            "max_delta_per_query": 1e-3,
            "ledger": {"path": str(ledger)},
            "replay": "off",
        },
        "budget": {"epsilon": 1e6, "delta": 0.1},
        "users": {USER: {"password": _VERIFIER.setdefault(USER, scram_verifier(PASSWORD))}},
        "tables": tables,
        "limits": {"queries_per_minute": 10**9, "threads": 2, "statement_timeout": "600s"},
    }
    path = OUT / f"policy-{name}-{accounting}.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    return path


_VERIFIER: dict[str, str] = {}


def pums_tables(*, pid_only: bool = False) -> dict[str, Any]:
    one = {"max_groups": 1, "max_rows": 1, "columns": PUMS_COLUMNS}
    tables = {"pums.pums_pid": {"privacy_unit": "pid", **one}}
    if not pid_only:
        tables["pums.pums"] = {"privacy_unit": "rid", **one}
    return tables


def hospital_tables(db: Path, max_groups: int = 1, max_rows: int = HOSPITAL_MAX_ROWS) -> dict[str, Any]:
    """The demo policy's tables with visits bounded to ``max_groups`` × ``max_rows``."""
    demo = tomllib.loads((db.parent / "policy.toml").read_text("utf-8"))
    tables = demo["tables"]
    tables["visits"]["max_groups"] = max_groups
    tables["visits"]["max_rows"] = max_rows
    return tables


def sn_hospital_metadata(max_ids: int = HOSPITAL_MAX_ROWS) -> dict[str, Any]:
    """SmartNoise metadata for the hospital visits table, written to match the dpsql policy."""
    demo = tomllib.loads((hospital_db().parent / "policy.toml").read_text("utf-8"))
    cols = demo["tables"]["visits"]["columns"]
    table: dict[str, Any] = {
        "max_ids": max_ids,
        "sample_max_ids": True,
        "censor_dims": True,
        "clamp_counts": True,
        "rows": 250000,
        "patient_id": {"type": "int", "private_id": True},
    }
    for name, spec in cols.items():
        if "lower" in spec:
            kind = "float" if isinstance(spec["lower"], float) else "int"
            table[name] = {"type": kind, "lower": spec["lower"], "upper": spec["upper"]}
        elif name != "visit_date":
            table[name] = {"type": "string"}
    return {"": {"public": {"visits": table}}}


# ------------------------------------------------------------------------------------- SmartNoise


class SmartNoise:
    """The SmartNoise worker subprocess (JSON lines over its stdin/stdout)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [str(SN_PYTHON), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(OUT / "smartnoise-worker.log", "a"),  # noqa: SIM115
            text=True,
            cwd=str(bl.ROOT),
        )

    def call(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the SmartNoise worker died; see {OUT / 'smartnoise-worker.log'}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"SmartNoise worker: {reply.get('error')}")
        return reply

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


# --------------------------------------------------------------------------------------- helpers

Key = tuple[str, ...]
Answer = dict[Key, dict[str, float]]


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _key_part(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def answer(columns: Sequence[str], rows: Sequence[Sequence[Any]], keys: Sequence[str]) -> Answer:
    """Rows as {key tuple: {value column: number}}; keys compared as text (SmartNoise returns
    declared-string columns as text, dpsql and DuckDB as numbers)."""
    cols = [c.lower() for c in columns]
    kidx = [cols.index(k) for k in keys]
    vidx = [i for i in range(len(cols)) if i not in kidx]
    out: Answer = {}
    for r in rows:
        out[tuple(_key_part(r[i]) for i in kidx)] = {cols[i]: _num(r[i]) for i in vidx}  # type: ignore[misc]
    return out


median = bl.median


def median_ci(xs: Sequence[float]) -> tuple[float, float]:
    """An approximate 95% confidence interval of the median: the order statistics n/2 ± 0.98·√n
    (distribution-free; treats the pooled cells as independent draws)."""
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan")
    s = sorted(xs)
    half = 0.98 * math.sqrt(n)
    return s[max(0, math.floor(n / 2 - half) - 1)], s[min(n - 1, math.ceil(n / 2 + half) - 1)]


def fnum(v: float) -> str:
    """A number with 3 significant digits, thousands separators for large ones."""
    if v != v:
        return "-"
    a = abs(v)
    if a >= 1e4:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}"
    if a == 0:
        return "0"
    return f"{v:.2g}"


def fpct(v: float) -> str:
    if v != v:
        return "-"
    p = v * 100
    if p >= 100:
        return f"{p:,.0f}%"
    if p >= 1:
        return f"{p:.3g}%"
    return f"{p:.2g}%"


@dataclass
class Cell:
    """Errors of one system on one query at one ε, pooled over runs and released groups."""

    abs_errors: list[float] = field(default_factory=list)
    rel_errors: list[float] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)  # |noisy − bounded|
    released_share: list[float] = field(default_factory=list)
    spurious: int = 0
    failures: int = 0
    failure: str = ""
    runs: int = 0
    seconds: list[float] = field(default_factory=list)

    def add(self, got: Answer, truth_all: Answer, truth_keys: set[Key], bounded: Answer | None) -> None:
        self.runs += 1
        released = set(got)
        if truth_keys:
            self.released_share.append(len(released & truth_keys) / len(truth_keys))
        self.spurious += len(released - set(truth_all))
        for key, vals in got.items():
            exact = truth_all.get(key)
            if exact is None:
                continue
            for col, v in vals.items():
                t = exact.get(col)
                if v is None or t is None:
                    continue
                self.abs_errors.append(abs(v - t))
                if t != 0:
                    self.rel_errors.append(abs(v - t) / abs(t))
                b = (bounded or {}).get(key, {}).get(col)
                if b is not None:
                    self.noise.append(abs(v - b))

    def fail(self, message: str) -> None:
        self.runs += 1
        self.failures += 1
        self.failure = self.failure or message

    @property
    def med_abs(self) -> float:
        return median(self.abs_errors)

    @property
    def med_rel(self) -> float:
        return median(self.rel_errors)

    def summary(self) -> dict[str, Any]:
        lo, hi = median_ci(self.abs_errors)
        return {
            "median_abs_error": self.med_abs,
            "median_abs_error_ci95": [lo, hi],
            "mean_abs_error": statistics.mean(self.abs_errors) if self.abs_errors else float("nan"),
            "cells": len(self.abs_errors),
            "median_rel_error": self.med_rel,
            "median_noise_vs_bounded": median(self.noise),
            "released_share": statistics.mean(self.released_share) if self.released_share else None,
            "spurious_groups": self.spurious,
            "runs": self.runs,
            "failures": self.failures,
            "failure": self.failure,
            "median_seconds": median(self.seconds),
        }


def bias(bounded: Answer | None, truth_all: Answer, truth_keys: set[Key]) -> tuple[float, float]:
    """Median over the true groups of |bounded − exact| and of that relative to |exact|."""
    if bounded is None:
        return float("nan"), float("nan")
    abs_e: list[float] = []
    rel_e: list[float] = []
    for key in truth_keys:
        for col, t in truth_all[key].items():
            b = bounded.get(key, {}).get(col)
            if t is None:
                continue
            if b is None:  # the bounded answer lacks the group: all of it is missing
                b = 0.0
            abs_e.append(abs(b - t))
            if t != 0:
                rel_e.append(abs(b - t) / abs(t))
    return median(abs_e), median(rel_e)


@contextlib.contextmanager
def noise_off() -> Iterator[None]:
    """dpsql with the noise step replaced by the identity: every group of the bounded SQL is kept
    with its exact bounded totals; post-processing (AVG, HAVING, ORDER BY, LIMIT) runs as usual."""
    import dpsql.proxy.release as rel
    from dpsql.accountant.noise import Released

    def exact_release(noise_plan: Any, exact: Any, units: Any = None, groups: int = 1, **_: Any) -> Released:
        cols = [s.column for s in noise_plan.stats if not s.from_selection]
        if cols:
            n = len(exact[cols[0]])
        elif units is not None or noise_plan.units_column is not None:
            n = len(units if units is not None else exact[noise_plan.units_column])
        else:  # quantiles only: one cell per public key (or the one scalar row)
            n = groups
        values: dict[str, list[int]] = {}
        for s in noise_plan.stats:
            if s.from_selection and s.column in exact:  # a thresholded COUNT(*) (construction b): its own value
                values[s.column] = [int(x) for x in exact[s.column]]
            elif s.from_selection:
                src = units if units is not None else exact[noise_plan.units_column]
                values[s.column] = [int(x) for x in src]
            else:
                values[s.column] = [int(x) for x in exact[s.column]]
        return Released(tuple(range(n)), values)

    saved = rel.release
    rel.release = exact_release  # type: ignore[assignment]
    try:
        yield
    finally:
        rel.release = saved


# -------------------------------------------------------------------------------------- accuracy


@dataclass
class Setup:
    pums: Path
    hospital: Path
    policies: dict[tuple[str, str], Path]  # (policy family, accounting) → policy file
    sn: SmartNoise
    sn_sources: dict[str, str] = field(default_factory=dict)  # query data → SmartNoise source id
    sn_info: dict[str, Any] = field(default_factory=dict)


def setup(sn: SmartNoise) -> Setup:
    pums = pums_db()
    hospital = hospital_db()
    policies = {}
    for accounting in ("zcdp", "basic"):
        policies[("pums", accounting)] = write_policy("pums", pums, pums_tables(), accounting)
        policies[("hospital", accounting)] = write_policy("hospital", hospital, hospital_tables(hospital), accounting)
        policies[("hospital51", accounting)] = write_policy("hospital51", hospital, hospital_tables(hospital, 5, 1), accounting)
        policies[("hospital15", accounting)] = write_policy("hospital15", hospital, hospital_tables(hospital, 3, 5), accounting)
    s = Setup(pums, hospital, policies, sn)
    info = sn.call(op="version")
    s.sn_info["versions"] = {k: v for k, v in info.items() if k != "ok"}
    r = sn.call(op="open", id="pums", csv=str(PUMS_DIR / "PUMS.csv"), metadata_file=str(PUMS_DIR / "PUMS.yaml"),
                options={"clamp_counts": True})
    s.sn_info["pums"] = r
    r = sn.call(op="open", id="pums_pid", csv=str(PUMS_DIR / "PUMS_pid.csv"), metadata_file=str(PUMS_DIR / "PUMS_pid.yaml"),
                options={"clamp_counts": True}, table_name="PUMS.PUMS_pid")
    s.sn_info["pums_pid"] = r
    r = sn.call(op="open", id="hospital", duckdb=str(hospital), metadata=sn_hospital_metadata(), threads=2)
    s.sn_info["hospital"] = r
    r = sn.call(op="open", id="hospital15", duckdb=str(hospital), metadata=sn_hospital_metadata(15), threads=2)
    s.sn_info["hospital15"] = r
    s.sn_sources = {"pums": "pums", "pums_pid": "pums_pid", "hospital": "hospital", "hospital51": "hospital",
                    "hospital15": "hospital15"}
    return s


def truth(q: Query, s: Setup) -> tuple[Answer, set[Key]]:
    """Exact answers on the full data: every group's values, and the set of groups the exact query returns."""
    import duckdb

    db = s.hospital if q.data.startswith("hospital") else s.pums
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(q.truth_sql or q.sql)
        all_ = answer([d[0] for d in cur.description], cur.fetchall(), q.keys)
        cur = con.execute(q.sql)
        keys = set(answer([d[0] for d in cur.description], cur.fetchall(), q.keys))
    finally:
        con.close()
    return all_, keys


def _family(q: Query) -> str:
    return q.data if q.data.startswith("hospital") else "pums"


def sn_options(q: Query) -> dict[str, Any]:
    return {"censor_dims": q.selection, "clamp_counts": True}


def run_accuracy(s: Setup, runs: int, epsilons: Sequence[float], queries: Sequence[Query]) -> dict[str, Any]:
    import dpsql.api as dp
    from dpsql.errors import DPSQLError

    results: dict[str, Any] = {"runs": runs, "delta": DELTA, "epsilons": list(epsilons), "queries": []}
    connections = {key: dp.connect(path, user=USER) for key, path in s.policies.items()}
    try:
        for qi, q in enumerate(queries, 1):
            t_q = time.perf_counter()
            truth_all, truth_keys = truth(q, s)
            # bounded answers (noise off)
            conn = connections[(_family(q), "zcdp")]
            conn.execute("SET dp.epsilon = 1")
            conn.execute(f"SET dp.delta = {DELTA!r}")
            with noise_off():
                r = conn.execute(q.sql)
            dp_bounded = answer(r.columns, r.rows, q.keys)
            snb = s.sn.call(op="run", source=s.sn_sources[q.data], sql=q.sql, epsilon=1.0, delta=DELTA, runs=1,
                            noise=False, options=sn_options(q))["results"][0]
            sn_bounded = None if isinstance(snb, dict) else answer(snb[0], snb[1:], q.keys)
            entry: dict[str, Any] = {
                "label": q.label,
                "data": q.data,
                "sql": q.sql,
                "kind": q.kind,
                "truth_median": median([v for k in truth_keys for v in truth_all[k].values() if v is not None]),
                "true_groups": len(truth_keys),
                "bias": {"dpsql": bias(dp_bounded, truth_all, truth_keys), "smartnoise": bias(sn_bounded, truth_all, truth_keys)},
                "sn_bounded_error": snb.get("error") if isinstance(snb, dict) else None,
                "cells": {},
                "costs": {},
            }
            for eps in epsilons:
                cells: dict[str, Cell] = {}
                for accounting in ("zcdp", "basic"):
                    conn = connections[(_family(q), accounting)]
                    conn.execute(f"SET dp.epsilon = {eps!r}")
                    conn.execute(f"SET dp.delta = {DELTA!r}")
                    cell = Cell()
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        try:
                            r = conn.execute(q.sql)
                        except DPSQLError as e:
                            cell.fail(f"{e.sqlstate}: {e}")
                            continue
                        cell.seconds.append(time.perf_counter() - t0)
                        cell.add(answer(r.columns, r.rows, q.keys), truth_all, truth_keys, dp_bounded)
                        if r.cost is not None:
                            entry["costs"][f"dpsql {accounting} ε={eps:g}"] = [float(r.cost.amount), float(r.cost.delta)]
                    cells[f"dpsql {accounting}"] = cell
                # SmartNoise: its ε is per mechanism; give each ε/m so the query totals ε.
                src = s.sn_sources[q.data]
                if entry["sn_bounded_error"] is not None:  # SmartNoise cannot answer it (e.g. no rewrite for MAX)
                    cell = Cell()
                    for _ in range(runs):
                        cell.fail(entry["sn_bounded_error"])
                    cells["smartnoise"] = cell
                    entry["cells"][f"{eps:g}"] = {name: c.summary() for name, c in cells.items()}
                    continue
                cost = s.sn.call(op="cost", source=src, sql=q.sql, epsilon=1.0, delta=DELTA, options=sn_options(q))
                m = max(1, cost["mechanisms"])
                per = eps / m
                check = s.sn.call(op="cost", source=src, sql=q.sql, epsilon=per, delta=DELTA, options=sn_options(q))
                entry["costs"][f"smartnoise ε={eps:g}"] = {
                    "mechanisms": m,
                    "epsilon_per_mechanism": per,
                    "epsilon_sum": check["epsilon_sum"],
                    "delta_used": DELTA if q.selection else 0.0,
                    "odometer": check["odometer"],
                }
                cell = Cell()
                reply = s.sn.call(op="run", source=src, sql=q.sql, epsilon=per, delta=DELTA, runs=runs, options=sn_options(q))
                for res, sec in zip(reply["results"], reply["seconds"], strict=True):
                    if isinstance(res, dict):
                        cell.fail(res["error"])
                        continue
                    cell.seconds.append(sec)
                    cell.add(answer(res[0], res[1:], q.keys), truth_all, truth_keys, sn_bounded)
                cells["smartnoise"] = cell
                entry["cells"][f"{eps:g}"] = {name: c.summary() for name, c in cells.items()}
            results["queries"].append(entry)
            print(f"  [{qi}/{len(queries)}] {q.label}: {time.perf_counter() - t_q:.1f} s", flush=True)
    finally:
        for c in connections.values():
            c.close()
    return results


def _err(c: dict[str, Any]) -> str:
    if c["failures"] == c["runs"]:
        return f"ERR ({c['failure'][:40]})"
    out = f"{fnum(c['median_abs_error'])} ({fpct(c['median_rel_error'])})"
    if c["failures"]:
        out += f" [{c['failures']} failed]"
    return out


def _le(a: dict[str, Any], b: dict[str, Any]) -> str:
    """PASS when dpsql's median absolute error is ≤ SmartNoise's; a MISS whose medians' 95%
    intervals overlap is marked ``MISS≈`` (not distinguishable at this number of runs)."""
    if b["failures"] == b["runs"]:
        return "SN fails"
    if a["failures"] == a["runs"]:
        return "MISS (fails)"
    x, y = a["median_abs_error"], b["median_abs_error"]
    if x != x or y != y:
        return "-"
    if x <= y * (1 + 1e-9) or x <= 1e-9:
        return "PASS"
    (alo, _), (_, bhi) = a["median_abs_error_ci95"], b["median_abs_error_ci95"]
    return "MISS≈" if alo <= bhi else "MISS"


def _share(c: dict[str, Any]) -> str:
    s = c["released_share"]
    if s is None:
        return "-"
    return f"{s * 100:.0f}%" + (f" [{c['cells']} cells]" if c["cells"] < 100 else "")


def print_accuracy(res: dict[str, Any]) -> list[tuple[str, bool, str]]:
    targets: list[tuple[str, bool, str]] = []
    for eps in res["epsilons"]:
        rows = []
        for e in res["queries"]:
            c = e["cells"][f"{eps:g}"]
            z, b, sn = c["dpsql zcdp"], c["dpsql basic"], c["smartnoise"]
            shares = f"{_share(z)}/{_share(b)}/{_share(sn)}" if e["kind"] == "selection" else "-"
            rows.append([e["label"], e["data"], fnum(e["truth_median"]), _err(z), _err(b), _err(sn), _le(z, sn), _le(b, sn), shares])
            for mode, cell in (("zcdp", z), ("basic", b)):
                v = _le(cell, sn)
                if v in ("PASS", "MISS", "MISS≈", "MISS (fails)"):
                    detail = f"{fnum(cell['median_abs_error'])} vs SN {fnum(sn['median_abs_error'])}"
                    if v == "MISS≈":
                        detail += " (95% intervals of the medians overlap)"
                    targets.append((f"{e['label']} ε={eps:g} dpsql {mode} ≤ SmartNoise", v == "PASS", detail))
        bl.table(
            f"Accuracy at ε = {eps:g}, δ = {DELTA:g}: median absolute error (median relative error) "
            f"over {res['runs']} runs × released groups",
            ["query", "data", "true value", "dpsql zcdp", "dpsql basic", "SmartNoise", "zcdp ≤ SN", "basic ≤ SN", "released z/b/SN"],
            rows,
            align="llrrrrlll",
        )
    rows = []
    for e in res["queries"]:
        bd, bs = e["bias"]["dpsql"], e["bias"]["smartnoise"]
        noise = [e["cells"][f"{eps:g}"]["dpsql zcdp"]["median_noise_vs_bounded"] for eps in res["epsilons"]]
        noise_b = [e["cells"][f"{eps:g}"]["dpsql basic"]["median_noise_vs_bounded"] for eps in res["epsilons"]]
        noise_sn = [e["cells"][f"{eps:g}"]["smartnoise"]["median_noise_vs_bounded"] for eps in res["epsilons"]]
        rows.append(
            [
                e["label"],
                f"{fnum(bd[0])} ({fpct(bd[1])})",
                " / ".join(fnum(x) for x in noise),
                " / ".join(fnum(x) for x in noise_b),
                f"{fnum(bs[0])} ({fpct(bs[1])})",
                " / ".join(fnum(x) for x in noise_sn),
                where_from(bd[0], noise),
            ]
        )
    eps_txt = " / ".join(f"{e:g}" for e in res["epsilons"])
    bl.table(
        "Where the error comes from: bounding bias = |bounded − exact| (noise off, median over true groups); "
        f"noise = median |noisy − bounded| at ε = {eps_txt}",
        ["query", "dpsql bias", "dpsql zcdp noise", "dpsql basic noise", "SN bias", "SN noise", "dpsql: dominant part"],
        rows,
        align="lrrrrrl",
    )
    rows = []
    for e in res["queries"]:
        sn = e["costs"].get("smartnoise ε=1", {})
        z = e["costs"].get("dpsql zcdp ε=1")
        b = e["costs"].get("dpsql basic ε=1")
        rows.append(
            [
                e["label"],
                e["kind"],
                f"ρ={z[0]:.4g}, δ_sel={z[1]:.2g}" if z else "-",
                f"ε={b[0]:.4g}, δ_sel={b[1]:.2g}" if b else "-",
                f"{sn.get('mechanisms', '-')} × ε={sn.get('epsilon_per_mechanism', float('nan')):.3g}, δ={sn.get('delta_used', 0):.2g}",
                f"({sn['odometer'][0]:.3g}, {sn['odometer'][1]:.2g})" if sn else "-",
            ]
        )
    bl.table(
        "What each system charged at ε = 1, δ = 1e-5 (the query's stated guarantee is (1, 1e-5) on every side)",
        ["query", "keys", "dpsql zcdp charge", "dpsql basic charge", "SmartNoise mechanisms", "SN odometer (ε, δ)"],
        rows,
    )
    return targets


def where_from(bias_abs: float, noise: Sequence[float]) -> str:
    """A one-line reading: from which ε on the bias outweighs the noise."""
    if bias_abs != bias_abs:
        return "-"
    if bias_abs == 0:
        return "noise only (no bias)"
    eps = [f"{e:g}" for e in EPSILONS[: len(noise)]]
    above = [e for e, n in zip(eps, noise, strict=False) if n == n and bias_abs > n]
    if not above:
        return "noise at every ε"
    if len(above) == len(noise):
        return "bias at every ε"
    return f"bias from ε = {above[0]}"


# ----------------------------------------------------------------------------------- composition

COMPOSE_K = (1, 10, 100, 1000)
COMPOSE_BUDGETS = ((1.0, 1e-5), (10.0, 1e-5))


def run_composition(sn: SmartNoise) -> dict[str, Any]:
    """Analytic, no data: k COUNT queries (sensitivity 1) sharing one budget (ε_B, δ_B). dpsql
    zcdp: ρ_B = rho_for_epsilon(ε_B, δ_B/10) (the ledger's own limit) split evenly, discrete
    Gaussian σ; dpsql basic: ε_B/k each, discrete Laplace; SmartNoise: the largest per-query ε its
    odometer admits, Laplace. Reported: the median |noise| of one count (0.674σ, or ln 2 · scale)."""
    from dpsql.accountant.calibration import gaussian_sigma, laplace_scale, rho_for_epsilon

    rows = []
    for eps_b, delta_b in COMPOSE_BUDGETS:
        rho_b = rho_for_epsilon(eps_b, delta_b / 10)
        for k in COMPOSE_K:
            sigma = gaussian_sigma(1, 1, rho_b / k)
            b = laplace_scale(1, 1, eps_b / k)
            sn_eps = sn.call(op="compose", k=k, epsilon=eps_b, delta=delta_b)["epsilon_per_query"]
            rows.append(
                {
                    "budget": [eps_b, delta_b],
                    "k": k,
                    "dpsql zcdp": 0.6745 * sigma,
                    "dpsql basic": math.log(2) * b,
                    "smartnoise": math.log(2) / sn_eps if sn_eps > 0 else float("inf"),
                    "smartnoise epsilon per query": sn_eps,
                }
            )
    return {"rows": rows}


def print_composition(res: dict[str, Any]) -> None:
    rows = []
    for r in res["rows"]:
        low = min(r[n] for n in ("dpsql zcdp", "dpsql basic", "smartnoise"))
        best = ", ".join(n for n in ("dpsql zcdp", "dpsql basic", "smartnoise") if r[n] <= low * 1.01)
        rows.append(
            [
                f"({r['budget'][0]:g}, {r['budget'][1]:g})",
                r["k"],
                fnum(r["dpsql zcdp"]),
                fnum(r["dpsql basic"]),
                f"{fnum(r['smartnoise'])} (ε={r['smartnoise epsilon per query']:.3g})",
                best.replace("smartnoise", "SmartNoise"),
            ]
        )
    bl.table(
        "Composition (analytic): median |noise| of one COUNT when k queries share one budget (ε_B, δ_B)",
        ["budget", "k", "dpsql zcdp", "dpsql basic", "SmartNoise (its odometer)", "least noise"],
        rows,
        align="lrrrrl",
    )


# ----------------------------------------------------------------------------------------- speed


def _timed(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> list[float]:
    return bl.timeit(fn, repeat=repeat, warmup=warmup)


@contextlib.contextmanager
def dpsql_server(policy: Path) -> Iterator[tuple[int, str]]:
    """``dpsql serve --policy policy --listen 127.0.0.1:0`` as a subprocess; yields (port, database)."""
    exe = Path(sys.executable).parent / "dpsql"
    cmd = [str(exe), "serve", "--policy", str(policy), "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(bl.ROOT))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"listening on \[?([^\]\s]+?)\]?:(\d+) \(database \"([^\"]+)\"", line)
        if not m:
            raise RuntimeError(f"dpsql serve did not start: {line!r}")
        yield int(m.group(2)), m.group(3)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def speed_query(label: str, sql: str, repeat: int, con: Any, conn: Any, conn_general: Any, wire: Any, sn: SmartNoise,
                sources: dict[str, str | None]) -> dict[str, Any]:
    """Latencies of one query on one data size: plain DuckDB, dpsql (rewrite alone, in-process with
    and without its caches, over the wire) and SmartNoise (parse + rewrite alone, end to end on
    each of its readers in ``sources``)."""
    from dpsql.rewriter import rewrite

    engine = conn.engine
    row: dict[str, Any] = {"query": label, "sql": sql}
    row["plain"] = _timed(lambda: con.execute(sql).fetchall(), repeat)
    row["dpsql rewrite"] = _timed(lambda: rewrite(sql, engine.catalog, dialect="duckdb"), max(20, repeat), warmup=3)

    def uncached() -> Any:
        engine._rewrites.clear()
        engine._noise.clear()
        engine._validated.clear()
        return conn.execute(sql)

    row["dpsql e2e"] = _timed(uncached, repeat)
    row["dpsql e2e cached"] = _timed(lambda: conn.execute(sql), repeat)

    def uncached_general() -> Any:  # the same data without the PRIMARY KEY: the general bounded SQL
        e = conn_general.engine
        e._rewrites.clear()
        e._noise.clear()
        e._validated.clear()
        return conn_general.execute(sql)

    row["dpsql e2e general"] = _timed(uncached_general, repeat)
    row["dpsql wire"] = _timed(lambda: wire.execute(sql).fetchall(), repeat)
    for kind, src in sources.items():
        if src is None:
            continue
        t = sn.call(op="time", source=src, sql=sql, epsilon=1.0, delta=DELTA, repeat=repeat, rewrite_repeat=max(10, min(20, repeat)),
                    options={"censor_dims": "educ" in sql, "clamp_counts": True})
        if "error" in t:
            row[f"sn {kind}"] = t["error"]
        else:
            row[f"sn {kind}"] = t["e2e"]
            row["sn rewrite"] = t["rewrite"]
    return row


def reader_check(sn: SmartNoise, duck: str, pandas: str) -> list[str]:
    """SmartNoise's exact (noise-off) answers on its pandas reader and on DuckDB, per speed query:
    the per-id sampling keeps one row of each pid either way, so they must be equal."""
    out = []
    for label, sql in SPEED_QUERIES:
        opts = {"censor_dims": False, "clamp_counts": True}
        a = sn.call(op="run", source=duck, sql=sql, epsilon=1.0, delta=DELTA, runs=1, noise=False, options=opts)["results"][0]
        b = sn.call(op="run", source=pandas, sql=sql, epsilon=1.0, delta=DELTA, runs=1, noise=False, options=opts)["results"][0]
        if isinstance(a, dict) or isinstance(b, dict):
            out.append(f"{label}: error {a if isinstance(a, dict) else b}")
            continue
        keys = [c for c in a[0] if c.lower() in ("sex", "married", "educ")]
        same = answer(a[0], a[1:], keys) == answer(b[0], b[1:], keys)
        out.append(f"{label}: {'identical' if same else 'DIFFERENT'}")
    return out


def run_speed(sn: SmartNoise, sizes: Sequence[int | None], repeat_for: Callable[[int], int], pandas_max: int) -> dict[str, Any]:
    import duckdb
    import psycopg

    import dpsql.api as dp

    results: dict[str, Any] = {"sizes": []}
    for size in sizes:
        db = pums_db(size)
        con = duckdb.connect(str(db), read_only=True)
        nrows = con.execute("SELECT COUNT(*) FROM pums.pums_pid").fetchone()[0]
        repeat = repeat_for(nrows)
        label = f"{nrows:,} rows"
        print(f"\n[speed: {label}, {repeat} timed runs per cell]", flush=True)
        policy = write_policy(f"speed-{nrows}", db, pums_tables(pid_only=size is not None) if size else pums_tables(), "zcdp")
        src_duck = f"duck-{nrows}"
        opened = {"duckdb": sn.call(op="open", id=src_duck, duckdb=str(db), metadata_file=str(PUMS_DIR / "PUMS_pid.yaml"),
                                    table_name="PUMS.PUMS_pid", options={"clamp_counts": True}, threads=2)}
        src_row = f"duckrow-{nrows}"  # SmartNoise told that each row is one person (its counterpart of the PRIMARY KEY)
        opened["duckdb row_privacy"] = sn.call(op="open", id=src_row, duckdb=str(db), metadata_file=str(PUMS_DIR / "PUMS_pid.yaml"),
                                               table_name="PUMS.PUMS_pid", options={"clamp_counts": True, "row_privacy": True},
                                               threads=2)
        general_db = pums_db(size, pk=False)
        general_policy = write_policy(f"speed-{nrows}-general", general_db,
                                      pums_tables(pid_only=size is not None) if size else pums_tables(), "zcdp")
        src_pandas = None
        if nrows <= pandas_max:
            src_pandas = f"pandas-{nrows}"
            opened["pandas"] = sn.call(op="open", id=src_pandas, duckdb_table=[str(db), "pums.pums_pid"],
                                       metadata_file=str(PUMS_DIR / "PUMS_pid.yaml"), table_name="PUMS.PUMS_pid",
                                       options={"clamp_counts": True})
        size_entry: dict[str, Any] = {"rows": nrows, "repeat": repeat, "queries": [],
                                      "sn_load_seconds": {k: v["seconds"] for k, v in opened.items()}}
        conn = dp.connect(policy, user=USER)
        conn_general = dp.connect(general_policy, user=USER)
        for c in (conn, conn_general):
            c.execute("SET dp.epsilon = 1")
            c.execute(f"SET dp.delta = {DELTA!r}")
        try:
            with dpsql_server(policy) as (port, dbname):
                wire = psycopg.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname=dbname, autocommit=True)
                wire.execute("SET dp.epsilon = 1")
                wire.execute(f"SET dp.delta = {DELTA!r}")
                if src_pandas is not None and size is None:
                    size_entry["reader_check"] = reader_check(sn, src_duck, src_pandas)
                for label_q, sql in SPEED_QUERIES:
                    row = speed_query(label_q, sql, repeat, con, conn, conn_general, wire, sn,
                                      {"duckdb": src_duck, "duckdb row_privacy": src_row, "pandas": src_pandas})
                    size_entry["queries"].append(row)
                    print(f"  {label_q}: dpsql {bl.ms(median(row['dpsql e2e']))} ms", flush=True)
                wire.close()
        finally:
            conn.close()
            conn_general.close()
            con.close()
        results["sizes"].append(size_entry)
    return results


SN_KINDS = ("duckdb", "duckdb row_privacy", "pandas")


def _mt(v: Any) -> str:
    if isinstance(v, str):
        return "ERR"
    if not v:
        return "-"
    return bl.ms(median(v))


def print_speed(res: dict[str, Any]) -> list[tuple[str, bool, str]]:
    targets: list[tuple[str, bool, str]] = []
    for s in res["sizes"]:
        rows = []
        for q in s["queries"]:
            d = median(q["dpsql e2e"])
            ratios = []
            for kind in SN_KINDS:
                v = q.get(f"sn {kind}")
                ratios.append(f"{median(v) / d:.1f}×" if isinstance(v, list) and v else "-")
            rows.append(
                [
                    q["query"],
                    _mt(q["plain"]),
                    _mt(q["dpsql rewrite"]),
                    _mt(q["dpsql e2e"]),
                    _mt(q.get("dpsql e2e general")),
                    _mt(q["dpsql e2e cached"]),
                    _mt(q["dpsql wire"]),
                    _mt(q.get("sn rewrite")),
                    *(_mt(q.get(f"sn {kind}")) for kind in SN_KINDS),
                    *ratios,
                ]
            )
            if 900_000 <= s["rows"] <= 1_100_000:
                for kind in SN_KINDS:
                    v = q.get(f"sn {kind}")
                    if isinstance(v, list) and v:
                        r = median(v) / d
                        targets.append((f"1M rows {q['query']}: SmartNoise ({kind}) / dpsql end to end ≥ 10×", r >= 10, f"{r:.1f}×"))
        if s.get("reader_check"):
            print("\nSmartNoise exact (noise-off) answers, DuckDB vs pandas reader: " + "; ".join(s["reader_check"]))
        bl.table(
            f"Latency, median ms, PUMS_pid at {s['rows']:,} rows ({s['repeat']} runs; SmartNoise load: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in s["sn_load_seconds"].items())
            + ")",
            ["query", "plain DuckDB", "dpsql rewrite", "dpsql e2e", "dpsql e2e, id not unique", "dpsql cached", "dpsql wire",
             "SN rewrite", "SN e2e DuckDB", "SN e2e DuckDB row_privacy", "SN e2e pandas",
             *(f"SN {k} ÷ dpsql" for k in ("DuckDB", "DuckDB row", "pandas"))],
            rows,
        )
    return targets


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 runs per accuracy cell, speed on PUMS and 1M rows only")
    ap.add_argument("--runs", type=int, default=None, help="runs per accuracy cell (default 200; 20 with --quick)")
    ap.add_argument("--only", choices=("accuracy", "composition", "speed"), help="run one part only")
    ap.add_argument("--queries", help="regular expression: accuracy queries whose label matches")
    ap.add_argument("--sizes", default=None,
                    help="speed data sizes beyond PUMS_pid itself, comma-separated, or 'none' "
                    "(default 1000000,10000000; 1000000 with --quick)")
    ap.add_argument("--pandas-max", type=int, default=1_000_000, help="largest size SmartNoise's pandas reader is timed on")
    args = ap.parse_args(argv)
    runs = args.runs or (20 if args.quick else 200)
    sizes_txt = args.sizes or ("1000000" if args.quick else "1000000,10000000")
    sizes: list[int | None] = [None, *(int(x) for x in sizes_txt.split(",") if x and x != "none")]

    import logging

    logging.getLogger("dpsql.accountant.ledger").setLevel(logging.ERROR)  # "created a new, empty … ledger" is expected
    if not SN_PYTHON.exists():
        print(f"compare_smartnoise: {SN_PYTHON} is missing; run bench/compare_smartnoise.sh, which creates it", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    bl.header(f"dpsql vs SmartNoise SQL — accuracy ({runs} runs per cell, δ = {DELTA:g}) and speed")
    print(bl.machine())
    t_start = time.perf_counter()
    sn = SmartNoise()
    out: dict[str, Any] = {"machine": bl.machine()}
    targets: list[tuple[str, bool, str]] = []
    try:
        s = setup(sn)
        out["smartnoise"] = s.sn_info["versions"]
        print("SmartNoise side: " + ", ".join(f"{k} {v}" for k, v in s.sn_info["versions"].items()))
        if args.only in (None, "accuracy"):
            queries = [q for q in QUERIES if not args.queries or re.search(args.queries, q.label)]
            systems = "(dpsql zcdp, dpsql basic, SmartNoise)"
            print(f"\n[accuracy: {len(queries)} queries × {len(EPSILONS)} ε × {runs} runs × {systems}]", flush=True)
            acc = run_accuracy(s, runs, EPSILONS, queries)
            out["accuracy"] = acc
            targets += print_accuracy(acc)
        if args.only in (None, "composition"):
            comp = run_composition(sn)
            out["composition"] = comp
            print_composition(comp)
        if args.only in (None, "speed"):
            speed = run_speed(sn, sizes, lambda n: 20 if n <= 10_000 else (5 if n <= 2_000_000 else 3), args.pandas_max)
            out["speed"] = speed
            targets += print_speed(speed)
    finally:
        sn.close()
        for ledger in _ledgers:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{ledger}{suffix}").unlink()
    result_file = OUT / ("results.json" if args.only is None else f"results-{args.only}.json")
    result_file.write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
    for name, ok, detail in targets:
        bl.target_line(ok, f"{name}: {detail}")
    print(f"\n[{time.perf_counter() - t_start:.0f} s; raw numbers in {result_file.relative_to(bl.ROOT)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
