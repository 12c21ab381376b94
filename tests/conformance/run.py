"""Run the public conformance corpora against dpsql in process and classify every case.

Usage::

    python tests/conformance/run.py            # run, print per-case results and the summary
    python tests/conformance/run.py --update   # ... and record today's statuses in expected_status.json
    python tests/conformance/run.py --corpus zetasql -v

Statuses: PASS (answered and matches the corpus' expected answer; for a query the corpus requires
refused: refused), WRONG (answered, but not the expected answer — or answered what must be refused),
REFUSED (a DPSQLError; its SQLSTATE and message are recorded; ``CRASH`` if something else was raised),
NOT_EXPRESSIBLE (the translator found no plain-SQL form in dpsql's model; the reason is in the corpus).

A status regresses when its rank drops (PASS 2 > WRONG = REFUSED 1 > NOT_EXPRESSIBLE 0);
``test_conformance.py`` fails on any regression against ``expected_status.json``.

Huge ε: ZetaSQL's cases use ε = 1e20; the ledger records at most ~8e6 per budget, so each case gets
its own engine and ledger and runs at ε = 1e6 per query (noise on these tables is then far below
the tolerance: |Δ| ≤ 0.05 + 1% of the expected value, or the case's own tolerance if larger).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from dpsql.api import open_engine
from dpsql.errors import DPSQLError, PolicyError
from dpsql.policy import load_policy
from dpsql.rewriter.aggregates import normalize_aliases

HERE = Path(__file__).parent
STATUS_FILE = HERE / "expected_status.json"
ZETASQL_CASES = HERE / "zetasql_cases.json"
PUMS_CASES = HERE / "smartnoise_pums.json"
QRLEW_CASES = HERE / "qrlew_queries.json"
PUMS_DATA = Path("/work/shared/data/pums/PUMS_pid.csv")
RANK = {"PASS": 2, "WRONG": 1, "REFUSED": 1, "NOT_EXPRESSIBLE": 0}
ABS_TOL, REL_TOL = 0.02, 0.005
EPSILON = 4e6  # per query: each case runs as its own user, whose budget holds it
BUDGET_EPSILON = 5.2e6
MAX_DELTA = 1e-3
SIGMAS = 6  # noise slack in standard deviations (two-sided discrete-Gaussian tail beyond 6σ < 2e-9)
NO_GROUP_LIMIT = 10  # "max_groups_contributed = NULL": more groups than any unit has here


@dataclass
class Outcome:
    """One case's classification."""

    status: str
    sqlstate: str | None = None
    detail: str = ""
    rows: list[list[Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The part kept in expected_status.json."""
        out: dict[str, Any] = {"status": self.status}
        if self.sqlstate:
            out["sqlstate"] = self.sqlstate
        return out


# ---------------------------------------------------------------------------------------------
# policies


def privacy_section(ledger: Path, *, accounting: str = "zcdp", users: int = 1) -> str:
    """The [privacy]/[budget]/[users] part of every policy: a huge per-query ε; users c0, c1, …
    (one per case: each budget holds one query at ε = EPSILON)."""
    budget = BUDGET_EPSILON if accounting == "zcdp" else BUDGET_EPSILON / 2
    return "\n".join([
        "[server]", 'auth = "trust"',
        "[privacy]", f'accounting = "{accounting}"', f"default_epsilon = {EPSILON:g}", "default_delta = 1e-6",
        f"max_epsilon_per_query = {EPSILON:g}", f"max_delta_per_query = {MAX_DELTA:g}",
        'replay = "off"',
        "[privacy.ledger]", f'path = "{ledger}"',
        "[budget]", f"epsilon = {budget:g}", "delta = 0.1",
    ]) + "\n" + "".join(f"[users.c{i}]\n" for i in range(users))


_FEATURES: dict[str, bool] = {}


def policy_features(tmp: Path) -> dict[str, bool]:
    """Which optional policy keys today's loader accepts: ``unit_bounds`` (a column's
    ``unit_lower``/``unit_upper``, GoogleSQL's per-group bounds) and ``max_contributions`` (L1)."""
    if _FEATURES:
        return _FEATURES
    db = tmp / "probe.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t (u BIGINT, v DOUBLE)")
    con.close()
    probes = {
        "unit_bounds": "v = { lower = 0.0, upper = 1.0, unit_lower = 0.0, unit_upper = 2.0 }",
        "max_contributions": "v = { lower = 0.0, upper = 1.0 }",
    }
    for feature, column in probes.items():
        extra = "max_contributions = 2\n" if feature == "max_contributions" else ""
        path = tmp / f"probe-{feature}.toml"
        path.write_text(f'[source]\nduckdb = "{db}"\n' + privacy_section(tmp / "probe-ledger.sqlite")
                        + f'[tables.t]\nprivacy_unit = "u"\n{extra}[tables.t.columns]\n{column}\n')
        try:
            load_policy(path)
            _FEATURES[feature] = True
        except PolicyError:
            _FEATURES[feature] = False
    return _FEATURES


def toml_number(v: float, integer: bool) -> str:
    """``v`` as a TOML number of the column's kind."""
    if integer and float(v).is_integer():
        return str(int(v))
    return repr(float(v))


# ---------------------------------------------------------------------------------------------
# comparison


def tolerance(v: float, slack: float, tol: float = 0.0) -> float:
    """How far a released value may lie from the expected ``v``: the case's own tolerance, or
    ABS_TOL + REL_TOL·|v|, or SIGMAS noise standard deviations (``slack`` = SIGMAS·σ_max), whichever
    is largest."""
    return max(tol, ABS_TOL + REL_TOL * abs(v), slack)


def cell_matches(expected: Any, actual: Any, slack: float = 0.0) -> bool:
    """One expected cell (a value, or {"approx": v, "tol": t} / {"differs": v, "tol": t}) against
    a released value, within :func:`tolerance`."""
    if isinstance(expected, dict):
        v, tol = expected.get("approx", expected.get("differs")), expected.get("tol", 0.0)
        if not isinstance(actual, int | float) or isinstance(actual, bool):
            return False
        if "differs" in expected:  # at ε = 1e6 the noise alone satisfies this: a weak check
            return abs(actual - v) > tol
        return abs(actual - v) <= tolerance(v, slack, tol)
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return abs(float(actual) - expected) <= tolerance(expected, slack)
    return str(expected) == str(actual)


def row_matches(expected: list[Any], actual: tuple[Any, ...] | list[Any], slack: float = 0.0,
                ignore: frozenset[int] = frozenset()) -> bool:
    """All cells of one row match (columns in ``ignore`` are not compared)."""
    return len(expected) == len(actual) and all(
        i in ignore or cell_matches(e, a, slack) for i, (e, a) in enumerate(zip(expected, actual, strict=True)))


def rows_match(expected: list[list[Any]], actual: list[tuple[Any, ...]], ordered: bool, slack: float = 0.0) -> bool:
    """The released rows equal the expected rows (in order, if ``ordered``)."""
    if len(expected) != len(actual):
        return False
    if ordered:
        return all(row_matches(e, a, slack) for e, a in zip(expected, actual, strict=True))
    left = list(actual)
    for e in expected:
        hit = next((i for i, a in enumerate(left) if row_matches(e, a, slack)), None)
        if hit is None:
            return False
        left.pop(hit)
    return True


def plain(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as JSON-friendly lists (floats rounded for display)."""
    return [[round(v, 6) if isinstance(v, float) else v if isinstance(v, int | bool | str | None) else str(v) for v in r]
            for r in rows]


@contextmanager
def engine_for(policy_text: str, tmp: Path, name: str) -> Iterator[Any]:
    """An engine over ``policy_text`` (written to ``tmp/name.toml``), closed afterwards."""
    path = tmp / f"{name}.toml"
    path.write_text(policy_text)
    engine = open_engine(path)
    try:
        yield engine
    finally:
        engine.close()


@dataclass
class Answer:
    """The last statement's rows, or the refusal; and SIGMAS × the largest noise standard
    deviation (in value units) of its statistics, from the noise plan (read before it ran)."""

    rows: list[tuple[Any, ...]] | None
    refused: Outcome | None
    slack: float = 0.0


def noise_slack(session: Any, sql: str) -> float:
    """SIGMAS × max σ (value units) over the statistics ``sql`` releases (0 if it plans none)."""
    try:
        rw, noise = session.plan(sql)
    except DPSQLError:
        return 0.0
    if noise is None or rw.plan is None:
        return 0.0
    return SIGMAS * max((s.scale * float(s.grid) for s in noise.stats), default=0.0)


def run_statements(engine: Any, user: str, statements: list[str]) -> Answer:
    """Execute ``statements`` in one session of ``user``: the last one's rows, or a REFUSED outcome."""
    session = engine.session(user)
    slack = 0.0
    try:
        result = None
        for i, sql in enumerate(statements):
            if i == len(statements) - 1:
                slack = noise_slack(session, sql)
            result = session.execute(sql)
        assert result is not None
        return Answer(list(result.rows), None, slack)
    except DPSQLError as e:
        return Answer(None, Outcome("REFUSED", e.sqlstate, e.message))
    except Exception as e:  # a traceback is a product bug: record it, keep going
        return Answer(None, Outcome("REFUSED", "CRASH", f"{type(e).__name__}: {e}"))
    finally:
        session.close()


# ---------------------------------------------------------------------------------------------
# ZetaSQL


ZETASQL_REASONS = {
    # semantic reasons for answers that differ from GoogleSQL's, by case name (shown for WRONG)
    "differential_privacy_delta_eliminates_row":
        "GoogleSQL thresholds the single group of a query without GROUP BY (δ = 1e-220 removes it); dpsql always "
        "releases the one row of a scalar aggregate (no partition selection without GROUP BY), by design",
    "differential_privacy_delta_eliminates_row_for_avg":
        "as delta_eliminates_row: dpsql releases a scalar aggregate's row at any δ",
    "differential_privacy_min_privacy_units_per_group_is_one":
        "min_privacy_units_per_group raises dpsql's partition-selection threshold, never lowers it: the threshold "
        "from δ (3 units at ε = 1e6) still holds back groups of one or two units (GoogleSQL releases them at "
        "min_privacy_units_per_group = 1, ε = 1e20)",
    "differential_privacy_verify_non_randomness_of_percentile_cont_implicit_bounds":
        "GoogleSQL's DP percentile at huge ε returns an input value (−1.5, like PERCENTILE_DISC); dpsql's "
        "PERCENTILE_CONT interpolates (exact −0.8) and its DP quantile picks a grid candidate anywhere between "
        "the order statistics around the rank (all score alike)",
    "differential_privacy_verify_non_randomness_of_percentile_cont_implicit_bounds_2":
        "GoogleSQL returns an input value (2.5); dpsql's PERCENTILE_CONT interpolates (exact 2.4) and picks a "
        "grid candidate between the order statistics around the rank",
    "differential_privacy_verify_non_randomness_of_approx_quantiles_explicit_bounds":
        "PERCENTILE_DISC should return an input value (−1.5, as GoogleSQL's APPROX_QUANTILES does at huge ε); "
        "dpsql returns a grid candidate between −1.5 and −0.5",
    "differential_privacy_verify_non_randomness_of_approx_quantiles_explicit_bounds_2":
        "PERCENTILE_DISC should return an input value (2.5); dpsql returns a grid candidate between the "
        "order statistics around the rank",
    "differential_privacy_min_privacy_units_per_group_is_2":
        "min_privacy_units_per_group raises dpsql's threshold, never lowers it: the threshold from δ is 3 units "
        "even at ε = 1e6 (σ = 0.002, max_groups = 10), so the NULL group of 2 units is held back",
    "differential_privacy_min_privacy_units_per_group_is_3":
        "no min_privacy_units_per_group: dpsql's threshold (from δ) releases groups of ≥ 3 units at huge ε",
    "differential_privacy_min_privacy_units_per_group_and_explicit_laplace_thresholding":
        "no min_privacy_units_per_group: dpsql's threshold (from δ) releases groups of ≥ 3 units at huge ε",
    "differential_privacy_min_privacy_units_per_group_is_4":
        "no min_privacy_units_per_group: dpsql's threshold (from δ) releases groups of ≥ 3 units at huge ε",
    "differential_privacy_per_aggregation_epsilon":
        "groups of one unit are dropped by dpsql's δ-threshold (GoogleSQL keeps them at ε = 1e20 via its "
        "group_selection_epsilon); GoogleSQL's implicit VAR_POP bounds also differ from declared bounds",
    "differential_privacy_approx_bounds_on_no_data_returns_null":
        "GoogleSQL returns NULL for COUNT(*) of a public group without rows (its approximate bounds find no "
        "data); dpsql returns a noisy count (here at ε = 1)",
    "differential_privacy_avg_int64_implicit_bounds_multi_user_with_report_proto":
        "GoogleSQL clamps to implicit bounds it estimates from the data ([0.5, 4], its bounding_report says), which "
        "moves the mean to 1.633; dpsql's bounds are declared ([-5, 5]: nothing clamped), so it reports the mean, 2",
    "differential_privacy_avg_int64_implicit_bounds_multi_user_with_report_json":
        "as …_with_report_proto: GoogleSQL's data-estimated bounds [0.5, 4] clamp the values; dpsql reports the mean, 2",
    "differential_privacy_basic_var_pop_explicit_bounds_all_nulls":
        "GoogleSQL's VAR_POP of no values is the variance of {lower, upper}; dpsql's differs",
    "differential_privacy_basic_stddev_pop_explicit_bounds_all_nulls":
        "GoogleSQL's STDDEV_POP of no values is that of {lower, upper}; dpsql's differs",
}
IMPLICIT_BOUNDS_ERROR = ("GoogleSQL estimates implicit bounds from the data and fails on zero rows; dpsql's bounds are "
                         "declared in the policy (never estimated from data), so the empty input has an answer")
PER_GROUP_REASON = ("GoogleSQL's contribution_bounds_per_group clamp each unit's per-group total; without "
                    "unit_lower/unit_upper in the policy, dpsql clamps each row to them (up to max_rows rows)")


def zetasql_policy(case: dict[str, Any], tables: list[dict[str, Any]], db: Path, ledger: Path,
                   features: dict[str, bool]) -> tuple[str, list[str]]:
    """The policy for one translated case, and the notes on how its options were mapped."""
    notes: list[str] = []
    accounting = "basic" if case["delta"] == 0 else "zcdp"
    text = f'[source]\nduckdb = "{db}"\n' + privacy_section(ledger, accounting=accounting)
    max_groups = case["max_groups"] if case["max_groups"] is not None else NO_GROUP_LIMIT
    max_rows = case["max_rows"]
    l1 = case.get("max_contributions")
    if l1 is not None and not features["max_contributions"]:
        if re.search(r"\bGROUP\s+BY\b", case["sql"], re.I):
            notes.append("max_rows_contributed not expressible per group without max_contributions")
        else:
            max_rows = l1
            notes.append(f"max_rows_contributed = {l1} as max_rows = {l1} (same L1 bound for one group)")
    for t in tables:
        name = t["name"]
        if t["unit"] is None or name.startswith("unnest_"):
            text += f"[tables.{name}]\npublic = true\n"
            continue
        text += f'[tables.{name}]\nprivacy_unit = "{t["unit"]}"\nmax_groups = {max_groups}\nmax_rows = {max_rows}\n'
        if l1 is not None and features["max_contributions"]:
            text += f"max_contributions = {l1}\n"
        text += f"[tables.{name}.columns]\n"
        for cname, ctype in t["columns"]:
            if cname == t["unit"] or cname not in case["bounds"]:
                continue
            kind, lo, hi = case["bounds"][cname]
            integer = ctype == "INT64"
            if kind == "per_group" and features["unit_bounds"]:
                d_lo, d_hi = min(lo, -5), max(hi, 5)
                text += (f"{cname} = {{ lower = {toml_number(d_lo, integer)}, upper = {toml_number(d_hi, integer)}, "
                         f"unit_lower = {toml_number(lo, integer)}, unit_upper = {toml_number(hi, integer)} }}\n")
            else:
                if kind == "per_group":
                    notes.append(f"{cname}: per-group bounds ({lo:g}, {hi:g}) declared as per-row bounds")
                text += f"{cname} = {{ lower = {toml_number(lo, integer)}, upper = {toml_number(hi, integer)} }}\n"
    return text, notes


def build_zetasql_db(corpus: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The corpus' tables (plus the public tables standing for UNNEST arrays) in a DuckDB file."""
    tables = list(corpus["tables"])
    for arr in sorted({m for c in corpus["cases"] for m in re.findall(r"unnest_\w+", c.get("sql", ""))}):
        col, _, vals = arr[len("unnest_"):].rpartition("_")
        values = [vals]
        while col and re.fullmatch(r".*_\d+", col):  # unnest_x_1_2_3: column x, values 1, 2, 3
            col, _, v = col.rpartition("_")
            values.insert(0, v)
        tables.append({"name": arr, "unit": None, "columns": [[col, "INT64"]], "rows": [[int(v)] for v in values]})
    con = duckdb.connect(str(path))
    try:
        for t in tables:
            cols = ", ".join(f"{n} {'BIGINT' if ty == 'INT64' else 'DOUBLE'}" for n, ty in t["columns"])
            con.execute(f"CREATE TABLE {t['name']} ({cols})")
            con.executemany(f"INSERT INTO {t['name']} VALUES ({', '.join('?' for _ in t['columns'])})", t["rows"])
    finally:
        con.close()
    return tables


def zetasql_statements(case: dict[str, Any]) -> list[str]:
    """The session settings for the case's ε/δ, then its query (δ = 0: pure ε, no SET dp.delta)."""
    out = [f"SET dp.epsilon = {case['epsilon']:g}"]
    if case["delta"] > 0:
        out.append(f"SET dp.delta = {min(case['delta'], MAX_DELTA) if case['delta'] <= 1 else case['delta']:g}")
    return [*out, case["sql"]]


def googlesql_statement(case: dict[str, Any]) -> str:
    """A report case's own GoogleSQL text, sent unchanged but for ε and δ, which are capped as for
    the plain-SQL cases (the ledger's limits) and written into its OPTIONS."""
    delta = min(case["delta"], MAX_DELTA) if 0 < case["delta"] <= 1 else case["delta"]
    text = case.get("googlesql") or case["zetasql"].strip().rstrip(";")
    sql = re.sub(r"\bepsilon\s*=\s*[\d.e+-]+", f"epsilon={case['epsilon']:g}", text, count=1, flags=re.I)
    return re.sub(r"\bdelta\s*=\s*[\d.e+-]+", f"delta={delta:g}", sql, count=1, flags=re.I)


def report_values(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]] | str:
    """Each row with its last cell, GoogleSQL's JSON report, replaced by the reported value — or
    what is wrong with a report (not JSON, no value, an interval that misses the value, a
    confidence level other than 0.95)."""
    out = []
    for row in rows:
        try:
            report = json.loads(row[-1])["result"]
            value, ci = report["value"], report["noise_confidence_interval"]
        except (TypeError, ValueError, KeyError) as e:
            return f"not a GoogleSQL JSON report: {row[-1]!r} ({e})"
        if value is not None and not ci["lower_bound"] <= value <= ci["upper_bound"]:
            return f"the reported interval [{ci['lower_bound']}, {ci['upper_bound']}] misses the value {value}"
        if ci["confidence_level"] != 0.95:
            return f"confidence_level {ci['confidence_level']}, GoogleSQL's default is 0.95"
        out.append((*row[:-1], value))
    return out


def _needs_googlesql(case: dict[str, Any]) -> bool:
    """A case whose options have no plain-SQL form (min_privacy_units_per_group) is sent as its own
    GoogleSQL text."""
    return str(case.get("options", {}).get("min_privacy_units_per_group", "NULL")).upper() != "NULL"


def classify_zetasql(case: dict[str, Any], engine: Any, user: str, notes: list[str]) -> Outcome:
    """Run one translated ZetaSQL case on ``engine`` (built from its policy) and classify it. A
    report case (``googlesql``) is sent as GoogleSQL DP syntax; its JSON reports are checked and
    their values compared."""
    statements = [googlesql_statement(case)] if "googlesql" in case or _needs_googlesql(case) else zetasql_statements(case)
    answer = run_statements(engine, user, statements)
    rows, refused = answer.rows, answer.refused
    if "expected_error" in case:
        if refused is not None and refused.sqlstate != "CRASH":
            return Outcome("PASS", refused.sqlstate, f"refused as GoogleSQL does: {refused.detail}")
        if refused is not None:
            return refused
        reason = ZETASQL_REASONS.get(case["name"]) or (IMPLICIT_BOUNDS_ERROR if "approximate bounds" in case["expected_error"] else None)
        return Outcome("WRONG", detail=f"answered {plain(rows or [])}; GoogleSQL refuses: {case['expected_error']}"
                       + (f" — {reason}" if reason else ""))
    if refused is not None:
        return refused
    assert rows is not None
    if "googlesql" in case:
        values = report_values(rows)
        if isinstance(values, str):
            return Outcome("WRONG", detail=values, rows=plain(rows))
        rows = values
    if rows_match(case["expected_rows"], rows, case["ordered"], answer.slack):
        return Outcome("PASS", rows=plain(rows))
    reason = ZETASQL_REASONS.get(case["name"])
    if reason is None and any("per-group bounds" in n for n in notes):
        reason = PER_GROUP_REASON
    detail = f"expected {case['expected_rows']}, got {plain(rows)}" + (f" — {reason}" if reason else "")
    return Outcome("WRONG", detail=detail, rows=plain(rows))


def run_zetasql(tmp: Path) -> dict[str, Outcome]:
    """Every ZetaSQL case's outcome, by name. Cases with the same policy share an engine (opening
    one costs ~0.4 s), each case as its own user."""
    corpus = json.loads(ZETASQL_CASES.read_text())
    db = tmp / "zetasql.duckdb"
    tables = build_zetasql_db(corpus, db)
    features = policy_features(tmp)
    out: dict[str, Outcome] = {}
    groups: dict[str, list[tuple[dict[str, Any], list[str]]]] = {}
    for case in corpus["cases"]:
        if "not_expressible" in case:
            out[case["name"]] = Outcome("NOT_EXPRESSIBLE", detail=case["not_expressible"])
            continue
        text, notes = zetasql_policy(case, tables, db, Path("LEDGER"), features)
        groups.setdefault(text, []).append((case, notes))
    for g, (text, members) in enumerate(groups.items()):
        policy = text.replace('path = "LEDGER"', f'path = "{tmp / f"ledger-{g}.sqlite"}"')
        policy += "".join(f"[users.c{i}]\n" for i in range(1, len(members)))
        with engine_for(policy, tmp, f"zetasql-{g}") as engine:
            for i, (case, notes) in enumerate(members):
                out[case["name"]] = classify_zetasql(case, engine, f"c{i}", notes)
    return {c["name"]: out[c["name"]] for c in corpus["cases"]}


# ---------------------------------------------------------------------------------------------
# SmartNoise PUMS


PUMS_COLUMNS = [("age", "BIGINT"), ("sex", "VARCHAR"), ("educ", "VARCHAR"), ("race", "VARCHAR"),
                ("income", "BIGINT"), ("married", "VARCHAR"), ("pid", "BIGINT")]


def build_pums_db(path: Path) -> str:
    """PUMS.PUMS (SmartNoise's PUMS_pid.csv if present, else 1,000 synthetic rows of its schema) in
    a DuckDB file; returns which data was used."""
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE SCHEMA pums")
        cols = ", ".join(f"{n} {t}" for n, t in PUMS_COLUMNS)
        con.execute(f"CREATE TABLE pums.pums ({cols})")
        if PUMS_DATA.exists():
            casts = ", ".join(f"CAST({n} AS {t})" for n, t in PUMS_COLUMNS)
            con.execute(f"INSERT INTO pums.pums SELECT {casts} FROM read_csv_auto('{PUMS_DATA}')")
            return str(PUMS_DATA)
        rng = random.Random(20240611)
        rows = [(rng.randint(18, 95), str(rng.randint(0, 1)), str(rng.randint(1, 16)), str(rng.randint(1, 6)),
                 min(500000, int(rng.expovariate(1 / 30000))), str(rng.randint(0, 1)), pid) for pid in range(1, 1001)]
        con.executemany("INSERT INTO pums.pums VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return "synthetic (seed 20240611)"
    finally:
        con.close()


def pums_policy(db: Path, ledger: Path, users: int) -> str:
    """SmartNoise's PUMS_pid.yaml as a dpsql policy: pid is the unit, age and income bounded."""
    return (f'[source]\nduckdb = "{db}"\n' + privacy_section(ledger, users=users)
            + '[tables."pums.pums"]\nprivacy_unit = "pid"\nmax_groups = 1\nmax_rows = 1\n'
            + '[tables."pums.pums".columns]\nage = { lower = 0, upper = 100 }\nincome = { lower = 0, upper = 500000 }\n'
            + "sex = {}\neduc = {}\nrace = {}\nmarried = {}\n")


def exact_answer(sql: str, read: str, db: Path) -> tuple[list[tuple[Any, ...]], int | None]:
    """The exact answer of a query (in dialect ``read``) on DuckDB, without its TOP/LIMIT n, and n."""
    tree = sqlglot.parse_one(sql, read=read)
    normalize_aliases(tree)  # VAR, STD … in the meaning dpsql gives them (DuckDB lacks the names)
    limit = None
    if tree.args.get("limit") is not None:
        limit = int(tree.args["limit"].expression.name)
        tree.set("limit", None)
    tree = tree.transform(lambda n: exp.func(TSQL_AGGREGATES[n.name.upper()], *n.expressions)
                          if isinstance(n, exp.Anonymous) and n.name.upper() in TSQL_AGGREGATES else n)
    if db not in _EXACT:
        _EXACT[db] = duckdb.connect(str(db), read_only=True)
    return _EXACT[db].execute(tree.sql(dialect="duckdb")).fetchall(), limit


# T-SQL aggregate names sqlglot leaves as anonymous functions, with their T-SQL meaning
TSQL_AGGREGATES = {"VAR": "VAR_SAMP", "VARP": "VAR_POP", "STDEV": "STDDEV_SAMP", "STDEVP": "STDDEV_POP"}
_EXACT: dict[Path, duckdb.DuckDBPyConnection] = {}  # read-only connections for exact answers, closed by run_all


def classify_pums(case: dict[str, Any], db: Path, engine: Any, user: str) -> Outcome:
    """Run one SmartNoise query and classify it against its list (valid / must fail)."""
    answer = run_statements(engine, user, [f"SET dp.epsilon = {EPSILON:g}", case["sql"]])
    rows, refused = answer.rows, answer.refused
    if case["list"] == "fail" and case["must_refuse"]:
        if refused is not None and refused.sqlstate != "CRASH":
            return Outcome("PASS", refused.sqlstate, f"refused as required ({case['reason']}): {refused.detail}")
        if refused is not None:
            return refused
        return Outcome("WRONG", detail=f"answered {plain(rows or [])[:5]} but must refuse: {case['reason']}")
    if refused is not None:
        return refused
    return classify_released(case["sql"], "tsql", db, answer, frozenset(case.get("ignore_columns", [])))


def run_pums(tmp: Path) -> dict[str, Outcome]:
    """Every SmartNoise PUMS query's outcome, by id."""
    corpus = json.loads(PUMS_CASES.read_text())
    db = tmp / "smartnoise.duckdb"
    build_pums_db(db)
    out: dict[str, Outcome] = {}
    cases = corpus["cases"]
    with engine_for(pums_policy(db, tmp / "pums-ledger.sqlite", len(cases)), tmp, "pums") as engine:
        for i, case in enumerate(cases):
            out[case["id"]] = classify_pums(case, db, engine, f"c{i}")
    return out


# ---------------------------------------------------------------------------------------------
# Qrlew


QRLEW_TABLES = {  # Qrlew's test schema (src/io/mod.rs); every table private, "id" a row id where Qrlew has none
    "table_1": [("id", "BIGINT"), ("a", "DOUBLE"), ("b", "DOUBLE"), ("c", "DATE"), ("d", "BIGINT")],
    "table_2": [("id", "BIGINT"), ("x", "BIGINT"), ("y", "VARCHAR"), ("z", "VARCHAR")],
    "order_table": [("id", "BIGINT"), ("user_id", "BIGINT"), ("description", "VARCHAR"), ("date", "DATE")],
    "item_table": [("order_id", "BIGINT"), ("item", "VARCHAR"), ("price", "DOUBLE")],
}
QRLEW_SIZES = {"table_1": 1000, "table_2": 200, "order_table": 200, "item_table": 300}


def build_qrlew_db(path: Path) -> None:
    """Seeded synthetic rows of Qrlew's test schema (table_1 at 1,000 rows instead of 10, so that
    grouped answers survive partition selection)."""
    rng = random.Random(20241212)

    def date(lo: int, hi: int) -> str:
        return f"{rng.randint(lo, hi)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"

    def text() -> str:
        return "".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(3, 8)))

    gen = {
        "table_1": lambda i: (i, round(rng.uniform(0, 10), 2), None if rng.random() < 0.2 else round(rng.uniform(-1, 1), 2),
                              date(1981, 2023), rng.randint(0, 10)),
        "table_2": lambda i: (i, rng.randint(0, 100), None if rng.random() < 0.2 else text(), rng.choice(["Foo", "Bar"])),
        "order_table": lambda i: (rng.randint(0, 100), rng.randint(0, 101), text(), date(2021, 2023)),
        "item_table": lambda i: (rng.randint(0, 100), text(), round(rng.uniform(0, 50), 2)),
    }
    con = duckdb.connect(str(path))
    try:
        for name, cols in QRLEW_TABLES.items():
            con.execute(f"CREATE TABLE {name} ({', '.join(f'{c} {t}' for c, t in cols)})")
            csv_path = path.parent / f"{name}.csv"  # one bulk load: executemany inserts row by row
            with csv_path.open("w", newline="") as f:
                csv.writer(f).writerows(gen[name](i) for i in range(1, QRLEW_SIZES[name] + 1))
            types = ", ".join(f"'{c}': '{t}'" for c, t in cols)
            con.execute(f"INSERT INTO {name} SELECT * FROM read_csv('{csv_path}', header = false, "
                        f"columns = {{{types}}}, nullstr = '')")
    finally:
        con.close()


def qrlew_policy(db: Path, ledger: Path, users: int) -> str:
    """Qrlew's test schema as a policy: table_1/table_2 row-level (unit = row id), orders by user,
    items by order (Qrlew reaches items through orders to users: a key path dpsql cannot declare
    yet); bounds from Qrlew's declared intervals, z's two declared values public."""
    return (f'[source]\nduckdb = "{db}"\n' + privacy_section(ledger, users=users)
            + '[tables.table_1]\nprivacy_unit = "id"\nmax_groups = 1\nmax_rows = 1\n[tables.table_1.columns]\n'
            + "a = { lower = 0.0, upper = 10.0 }\nb = { lower = -1.0, upper = 1.0 }\nc = {}\nd = { lower = 0, upper = 10 }\n"
            + '[tables.table_2]\nprivacy_unit = "id"\nmax_groups = 1\nmax_rows = 1\n[tables.table_2.columns]\n'
            + 'x = { lower = 0, upper = 100 }\ny = {}\nz = { values = ["Foo", "Bar"] }\n'
            + '[tables.order_table]\nprivacy_unit = "user_id"\nmax_groups = 1\nmax_rows = 2\n[tables.order_table.columns]\n'
            + "id = { lower = 0, upper = 100 }\ndescription = {}\ndate = {}\n"
            + '[tables.item_table]\nprivacy_unit = "order_id"\nmax_groups = 1\nmax_rows = 3\n[tables.item_table.columns]\n'
            + "item = {}\nprice = { lower = 0.0, upper = 50.0 }\n")


def classify_released(sql: str, read: str, db: Path, answer: Answer, ignore: frozenset[int] = frozenset()) -> Outcome:
    """An answered query against its exact answer on DuckDB: every released row matches an exact
    row; a query without GROUP BY releases exactly the exact answer's rows; TOP/LIMIT is respected."""
    rows = answer.rows
    assert rows is not None
    try:
        truth, limit = exact_answer(sql, read, db)
    except duckdb.Error as e:
        return Outcome("WRONG", detail=f"answered {plain(rows[:3])}, but the exact reference fails on DuckDB: {e}")
    unmatched = [r for r in rows if not any(row_matches(list(t), r, answer.slack, ignore) for t in truth)]
    grouped = re.search(r"\b(GROUP\s+BY|DISTINCT)\b", sql, re.I) is not None
    if unmatched or (limit is not None and len(rows) > limit) or (not grouped and len(rows) != len(truth)):
        return Outcome("WRONG", detail=f"released rows not in the exact answer: {plain(unmatched)[:5]}", rows=plain(rows[:5]))
    held = len(rows) < len(truth) and limit is None
    kept = f"{len(rows)} of {len(truth)} rows" + (" (the rest held back by partition selection)" if held else "")
    return Outcome("PASS", detail=kept, rows=plain(rows[:5]))


def classify_qrlew(case: dict[str, Any], db: Path, engine: Any, user: str) -> Outcome:
    """A Qrlew query: one that releases rows of a private table must be refused; any other is
    answered and checked against the exact answer."""
    answer = run_statements(engine, user, [f"SET dp.epsilon = {EPSILON:g}", case["sql"]])
    if case["raw"]:
        if answer.refused is not None and answer.refused.sqlstate != "CRASH":
            return Outcome("PASS", answer.refused.sqlstate, f"refused as required (releases rows): {answer.refused.detail}")
        if answer.refused is not None:
            return answer.refused
        return Outcome("WRONG", detail=f"released rows of a private table: {plain(answer.rows or [])[:3]}")
    if answer.refused is not None:
        return answer.refused
    return classify_released(case["sql"], "postgres", db, answer)


def run_qrlew(tmp: Path) -> dict[str, Outcome]:
    """Every Qrlew integration query's outcome, by id."""
    corpus = json.loads(QRLEW_CASES.read_text())
    db = tmp / "qrlew.duckdb"
    build_qrlew_db(db)
    cases = corpus["cases"]
    out: dict[str, Outcome] = {}
    with engine_for(qrlew_policy(db, tmp / "qrlew-ledger.sqlite", len(cases)), tmp, "qrlew") as engine:
        for i, case in enumerate(cases):
            if "not_expressible" in case:
                out[case["id"]] = Outcome("NOT_EXPRESSIBLE", detail=case["not_expressible"])
            else:
                out[case["id"]] = classify_qrlew(case, db, engine, f"c{i}")
    return out


# ---------------------------------------------------------------------------------------------
# driver


CORPORA = {"zetasql": run_zetasql, "smartnoise_pums": run_pums, "qrlew": run_qrlew}


def run_all(corpora: list[str] | None = None) -> dict[str, dict[str, Outcome]]:
    """Outcomes of every case of the chosen corpora (all by default)."""
    logging.getLogger("dpsql.accountant.ledger").setLevel(logging.ERROR)  # "created a new ledger" per engine
    out = {}
    with tempfile.TemporaryDirectory(prefix="dpsql-conformance-") as d:
        for name in corpora or list(CORPORA):
            sub = Path(d) / name
            sub.mkdir()
            try:
                out[name] = CORPORA[name](sub)
            finally:
                for con in _EXACT.values():
                    con.close()
                _EXACT.clear()
    return out


def summary(results: dict[str, dict[str, Outcome]]) -> str:
    """Counts per corpus and status, and the largest refusal buckets (SQLSTATE + message)."""
    lines = []
    for corpus, outcomes in results.items():
        counts = Counter(o.status for o in outcomes.values())
        refused_ok = sum(o.status == "PASS" and o.sqlstate is not None for o in outcomes.values())
        lines.append(f"{corpus}: {len(outcomes)} cases — " + ", ".join(
            f"{s} {counts.get(s, 0)}" for s in ("PASS", "WRONG", "REFUSED", "NOT_EXPRESSIBLE"))
            + f" (PASS = {counts.get('PASS', 0) - refused_ok} answered + {refused_ok} refused as required)")
        buckets = Counter((o.sqlstate, re.sub(r"\d+(\.\d+)?", "N", o.detail)[:110])
                          for o in outcomes.values() if o.status == "REFUSED")
        for (state, msg), n in buckets.most_common(6):
            lines.append(f"  REFUSED ×{n}: {state} {msg}")
        ne = Counter(o.detail for o in outcomes.values() if o.status == "NOT_EXPRESSIBLE")
        for msg, n in ne.most_common(3):
            lines.append(f"  NOT_EXPRESSIBLE ×{n}: {msg[:110]}")
    return "\n".join(lines)


def regressions(results: dict[str, dict[str, Outcome]], expected: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Cases whose status rank dropped below the recorded one (or that disappeared)."""
    out = []
    for corpus, recorded in expected.items():
        if corpus not in results:
            continue
        for name, rec in recorded.items():
            got = results[corpus].get(name)
            if got is None:
                out.append(f"{corpus}/{name}: missing (recorded {rec['status']})")
            elif RANK[got.status] < RANK[rec["status"]]:
                out.append(f"{corpus}/{name}: {rec['status']} → {got.status} {got.sqlstate or ''} {got.detail[:200]}")
    return out


def load_expected() -> dict[str, dict[str, dict[str, Any]]]:
    """The recorded statuses (empty if none yet)."""
    return json.loads(STATUS_FILE.read_text()) if STATUS_FILE.exists() else {}


def write_expected(results: dict[str, dict[str, Outcome]]) -> None:
    """Record ``results`` (merged over the corpora not run) in expected_status.json."""
    data = load_expected()
    for corpus, outcomes in results.items():
        data[corpus] = {name: o.record() for name, o in outcomes.items()}
    STATUS_FILE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    """CLI: run, print, optionally record; exit 1 on a regression (unless --update)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--update", action="store_true", help="record today's statuses in expected_status.json")
    ap.add_argument("--corpus", action="append", choices=list(CORPORA), help="run only this corpus (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case, not only non-PASS ones")
    args = ap.parse_args(argv)
    results = run_all(args.corpus)
    for corpus, outcomes in results.items():
        for name, o in outcomes.items():
            if args.verbose or o.status != "PASS":
                print(f"{o.status:15} {corpus}/{name} {o.sqlstate or ''} {o.detail[:300]}")
    print(summary(results))
    if args.update:
        write_expected(results)
        print(f"recorded in {STATUS_FILE}")
        return 0
    bad = regressions(results, load_expected())
    for line in bad:
        print("REGRESSION", line)
    return 1 if bad else 0


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())
