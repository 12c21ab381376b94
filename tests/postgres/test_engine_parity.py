"""The engine on both backends, same data, same assertions: DuckDB and PostgreSQL must give the
same plans and costs, the same exact bounded statistics (the key correctness check of the
PostgreSQL dialect), noisy answers within the same error bounds, and the same refusals; the
engine's query-path guarantees (charge before the data is read, engine text withheld, free
refusals and EXPLAIN) hold on PostgreSQL too.

Both engines serve the hospital data set of ``conftest`` (PostgreSQL's tables were COPYed from
the DuckDB file). Statistical checks use 6σ of the noise plan's own scale: a discrete Gaussian
exceeds it with probability < 2·10⁻⁹ per check; this file makes < 200 such checks (< 10⁻⁶).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import traceback
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from pgenv import PgEnv, policy_text, source_line
from sqlglot import exp

from dpsql.errors import DPSQLError
from dpsql.policy import load_policy
from dpsql.proxy.backends.base import Backend, BackendSession, ResultSet
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.backends.postgres import PostgresBackend
from dpsql.proxy.engine import Engine

pytestmark = pytest.mark.postgres

KINDS = ("duckdb", "postgres")
SIGMAS = 6

# Every supported shape over the hospital tables; the ids name the rows of the report.
QUERIES: dict[str, str] = {
    "count": "SELECT COUNT(*) FROM visits",
    "declared_keys_avg": "SELECT department, COUNT(*), AVG(cost) FROM visits GROUP BY department",
    "partition_selection": "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis",
    "public_join_sum": (
        "SELECT d.building, SUM(v.length_of_stay) FROM visits v JOIN departments d ON v.department_id = d.department_id "
        "GROUP BY d.building"
    ),
    # public relations: a derived table / CTE over the public departments, every key released (public groups)
    "public_relation_groups": (
        "SELECT g.building, COUNT(*), SUM(v.length_of_stay) FROM visits v RIGHT JOIN "
        "(SELECT DISTINCT department_id, building FROM departments) AS g ON v.department_id = g.department_id GROUP BY g.building"
    ),
    "public_relation_cte": (
        "WITH d AS (SELECT building, MIN(department_id) AS department_id FROM departments GROUP BY building) "
        "SELECT d.building, COUNT(*) FROM visits v JOIN d ON v.department_id = d.department_id GROUP BY d.building"
    ),
    "public_relation_values": (
        "SELECT g.k, COUNT(*) FROM visits v RIGHT JOIN (VALUES (1), (2), (99)) AS g(k) ON v.department_id = g.k GROUP BY g.k"
    ),
    "having_order_limit": "SELECT region, COUNT(*) AS n FROM patients GROUP BY region HAVING COUNT(*) > 10 ORDER BY n DESC LIMIT 3",
    "date_trunc_key": "SELECT date_trunc('month', visit_date) AS m, COUNT(*), SUM(cost) FROM visits GROUP BY 1",
    "extract_key": "SELECT extract(year FROM visit_date) AS y, AVG(age), STDDEV(cost) FROM visits GROUP BY 1",
    "variance_distinct_units": "SELECT sex, VAR_POP(cost), COUNT(DISTINCT patient_id) FROM visits GROUP BY sex",
    "filter_clause": "SELECT department_id, SUM(cost) FILTER (WHERE age > 50), COUNT(*) FROM visits GROUP BY department_id",
    "case_key_int_expression": (
        "SELECT CASE WHEN age < 18 THEN 'child' ELSE 'adult' END AS g, SUM(length_of_stay * 2 + 1) FROM visits GROUP BY 1"
    ),
    "float_expression_key": "SELECT ROUND(cost / 1000) AS r, COUNT(*) FROM visits GROUP BY 1",
    "integer_division_key": "SELECT age / 10 AS decade, COUNT(*) FROM visits GROUP BY 1",
    "where_mixed": (
        "SELECT COUNT(*), SUM(cost), AVG(length_of_stay) FROM visits WHERE age BETWEEN 30 AND 70 AND diagnosis LIKE 'I%' "
        "AND department IN ('cardiology', 'emergency') AND cost * 2 > 100"
    ),
    "cte_and_subquery": (
        "WITH v AS (SELECT patient_id, cost * 1.1 AS c, department FROM visits WHERE length_of_stay > 0) "
        "SELECT department, SUM(c), COUNT(*) FROM v GROUP BY department"
    ),
    "strings_and_dates": (
        "SELECT lower(sex) AS s, COUNT(*), SUM(age) FROM visits WHERE visit_date >= DATE '2023-01-01' AND length(diagnosis) = 3 "
        "AND upper(substring(diagnosis, 1, 1)) IN ('I', 'J', 'M') GROUP BY 1"
    ),
    "two_keys": "SELECT department, sex, COUNT(*), SUM(length_of_stay) FROM visits GROUP BY department, sex",
    "many_aggregates": (
        "SELECT COUNT(*), COUNT(cost), SUM(age), AVG(cost), VAR_SAMP(length_of_stay), COUNT(DISTINCT patient_id) FROM visits"
    ),
    "patients_years": "SELECT region, AVG(birth_year), SUM(birth_year - 1900) FROM patients GROUP BY region",
    "private_join_on_unit": "SELECT p.region, COUNT(*), SUM(v.length_of_stay) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1",
    # COUNT/SUM(DISTINCT x): the value order is MD5 over text casts on both engines (sex has 2 ≤ max_groups values: no ranking)
    "count_distinct_values": (
        "SELECT sex, COUNT(DISTINCT diagnosis), SUM(DISTINCT length_of_stay), COUNT(DISTINCT patient_id) FILTER (WHERE age > 60) "
        "FROM visits GROUP BY sex"
    ),
    "count_distinct_global": "SELECT COUNT(DISTINCT visit_date), APPROX_COUNT_DISTINCT(diagnosis), SUM(DISTINCT age) FROM visits",
    "private_self_join": (
        "SELECT a.sex, COUNT(*) FROM visits a JOIN visits b ON a.patient_id = b.patient_id AND a.visit_date < b.visit_date GROUP BY 1"
    ),
    # subqueries in WHERE (rewriter/subqueries.py): a public filter with NOT IN and a scalar, a semi-join on the unit
    "public_subquery_filters": (
        "SELECT sex, COUNT(*), SUM(cost) FROM visits v WHERE department NOT IN (SELECT name FROM departments WHERE floor > 2) "
        "AND age > (SELECT MIN(floor) FROM departments) AND EXISTS (SELECT FROM departments d WHERE d.department_id = "
        "v.department_id AND d.building <> 'C') GROUP BY sex"
    ),
    "semi_join_on_unit": (
        "SELECT sex, COUNT(*), AVG(age) FROM visits v WHERE patient_id IN (SELECT patient_id FROM patients WHERE birth_year < 1960) "
        "AND NOT EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = v.patient_id AND p.region = 'north') GROUP BY sex"
    ),
}

# Queries whose units may touch more groups than max_groups = 3: each engine keeps a different
# (equally valid, data-independent) subset of each unit's groups, because the rewriter ranks a
# unit's groups by HASH(key, salt) on DuckDB but by MD5(CAST(key AS TEXT) || salt) on PostgreSQL.
SELECTION_DIFFERS = {"declared_keys_avg", "partition_selection", "date_trunc_key", "filter_clause", "float_expression_key",
                     "cte_and_subquery", "two_keys"}

# Key columns whose PostgreSQL type differs from DuckDB's (and from the plan's declared type).
KEY_TYPE_DIFFERS = {
    "date_trunc_key": "date_trunc('month', date) is timestamptz on PostgreSQL (the plan says timestamp, DuckDB gives timestamp)",
    "float_expression_key": "ROUND(cost / 1000) is numeric on PostgreSQL (the rewriter casts to DECIMAL; plan and DuckDB say float8)",
    "extract_key": "extract(year FROM date) is int8 on DuckDB, numeric on PostgreSQL (the plan says numeric)",
    "integer_division_key": "age / 10 is DIV(CAST(age AS DECIMAL), 10), numeric, on PostgreSQL (the plan and DuckDB say int8)",
}

REFUSED = [
    "SELECT * FROM visits",
    "SELECT age FROM visits",
    "SELECT MAX(patient_id) FROM visits",  # MIN/MAX of the privacy unit stays refused (MAX(cost) is a DP extreme quantile)
    "SELECT SUM(visit_id) FROM visits",
    "SELECT COUNT(*) FROM nosuchtable",
    "SELECT COUNT(*) FROM visits WHERE",
    "SELECT COUNT(*) FROM visits WHERE age > (SELECT AVG(age) FROM visits)",
    "SELECT SUM(cost) OVER () FROM visits",
    "SELECT patient_id, COUNT(*) FROM visits GROUP BY patient_id",
    "SELECT COUNT(*) FROM visits v JOIN patients p ON v.age = p.birth_year",  # private join on another column than the unit
    "DELETE FROM visits",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT COUNT(*) FROM visits; SELECT 1",
]


def _write(tmp: Path, name: str, pg: PgEnv, kind: str, **options: Any) -> Path:
    path = tmp / f"{name}-{kind}.toml"
    path.write_text(policy_text(source_line(pg, kind), ledger=f'path = "{tmp / f"{name}-{kind}.sqlite"}"', **options))
    return path


@pytest.fixture(scope="module")
def engines(pg: PgEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Engine]]]:
    """``engines[policy][kind]``: policy "hospital" (max_groups = 3) and "wide" (max_groups = 40,
    more than any unit's groups in these queries, so that no unit loses a group and the bounded
    results must agree exactly); ample budgets."""
    tmp = tmp_path_factory.mktemp("parity")
    out: dict[str, dict[str, Engine]] = {}
    for name, groups in (("hospital", 3), ("wide", 40)):
        out[name] = {}
        for kind in KINDS:
            policy = load_policy(_write(tmp, name, pg, kind, max_groups=groups, epsilon=1e6, delta=1e-3))
            backend: Backend = DuckDBBackend(policy) if kind == "duckdb" else PostgresBackend(policy)
            out[name][kind] = Engine(policy, backend)
    yield out
    for by_kind in out.values():
        for e in by_kind.values():
            e.close()


def _norm_key(v: Any) -> Any:
    """Key values compared across engines: numbers as exact fractions, timestamps as naive UTC."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | Decimal):
        return Fraction(v)
    if isinstance(v, float):
        return Fraction(v)
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo is not None else v
    return v


def _exact_int(v: Any, where: str) -> int:
    if v is None:
        return 0
    if isinstance(v, Decimal):
        assert v == v.to_integral_value(), f"{where}: statistic {v} is not an integer"
        return int(v)
    assert isinstance(v, int) and not isinstance(v, bool), f"{where}: statistic {v!r} is not an exact integer (R17)"
    return v


def _bounded(engine: Engine, sql: str) -> tuple[dict[tuple[Any, ...], tuple[int, ...]], ResultSet]:
    """The bounded SQL's exact statistics on ``engine``'s backend: normalised key → integers."""
    rw = engine.rewrite(sql)
    assert rw.plan is not None
    with engine.backend.session() as b:
        rs = b.execute(rw.sql)
    idx = {c: i for i, c in enumerate(rs.columns)}
    cells: dict[tuple[Any, ...], tuple[int, ...]] = {}
    for r in rs.rows:
        key = tuple(_norm_key(r[idx[k.column]]) for k in rw.plan.keys)
        assert key not in cells, f"group {key} appears twice"
        cells[key] = tuple(_exact_int(r[idx[s.column]], f"{sql} / {s.column}") for s in rw.plan.stats)
    if not rw.plan.keys and not cells:
        cells[()] = (0,) * len(rw.plan.stats)
    return cells, rs


# --- plans and costs ---------------------------------------------------------------------------------


# How the bounded SQL is built may differ by engine: DuckDB files lock out writers, so a declared
# PRIMARY KEY on the unit lets DuckDB take the one-row path; PostgreSQL always takes the general one.
_STRATEGY_NOTES = ("one row per unit", "each unit keeps at most")


@pytest.mark.parametrize("name", QUERIES)
def test_plans_and_costs_are_identical(engines: dict[str, dict[str, Engine]], name: str) -> None:
    """The release plan (statistics, sensitivities, keys, outputs) and the noise plan (hence the
    charge) do not depend on the backend; only the engine SQL differs."""
    sql = QUERIES[name]
    plans = {}
    for kind, engine in engines["hospital"].items():
        rw, noise = engine.session("alice").plan(sql)
        assert rw.plan is not None and noise is not None and rw.dialect == kind
        engine_sql = {f.name: None for f in dataclasses.fields(rw.plan) if f.name.endswith("_sql") and f.name != "post_sql"}
        description = tuple(d for d in rw.plan.description if not d.startswith(_STRATEGY_NOTES))
        plans[kind] = (dataclasses.replace(rw.plan, description=description, **engine_sql), noise)  # SQL differs by dialect
    assert plans["duckdb"] == plans["postgres"]


# --- exact bounded statistics -----------------------------------------------------------------------


@pytest.mark.parametrize("name", QUERIES)
def test_exact_bounded_statistics_are_identical(engines: dict[str, dict[str, Engine]], name: str) -> None:
    """With max_groups large enough that no unit loses a group, the bounded SQL of each dialect
    computes exactly the same integer statistics for exactly the same groups."""
    duck, _ = _bounded(engines["wide"]["duckdb"], QUERIES[name])
    post, _ = _bounded(engines["wide"]["postgres"], QUERIES[name])
    assert duck == post


# Group selection under max_groups is NOT compared across engines: each unit's groups are ranked by
# HASH(keys, salt) on DuckDB and MD5(keys || salt) on PostgreSQL. Both depend only on the unit's own
# keys (DESIGN §1), which the T1 replay checks on both engines; a common hash would cost DuckDB an
# MD5 per (unit, group) row.


@pytest.mark.parametrize("name", QUERIES)
def test_released_key_types_are_identical(engines: dict[str, dict[str, Engine]], name: str) -> None:
    """The engines type some key expressions differently (date_trunc of a DATE is timestamptz on
    PostgreSQL, extract is numeric there and bigint on DuckDB); the engine converts released keys to
    the plan's declared type, so both backends release keys of the same Python types."""
    kinds: dict[str, list[tuple[str, ...]]] = {}
    for kind in KINDS:
        session = engines["wide"][kind].session("alice")
        rw, _ = session.plan(QUERIES[name])
        assert rw.plan is not None
        nkeys = len(rw.plan.keys)
        rows = session.execute(QUERIES[name]).rows
        kinds[kind] = sorted({tuple(type(v).__name__ for v in r[:nkeys] if v is not None) for r in rows})
    assert kinds["duckdb"] == kinds["postgres"]


# --- noisy answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["count", "declared_keys_avg", "public_join_sum", "two_keys", "patients_years", "where_mixed"])
def test_noisy_counts_and_sums_are_within_their_error_bounds(engines: dict[str, dict[str, Engine]], name: str, kind: str) -> None:
    """Each released COUNT/SUM is within 6σ of the exact bounded statistic (the same on both
    engines, by the test above), in released units."""
    engine = engines["wide"][kind]
    sql = QUERIES[name]
    session = engine.session("alice")
    rw, noise = session.plan(sql)
    assert rw.plan is not None and noise is not None
    exact, _ = _bounded(engine, sql)
    result = session.execute(sql)
    nkeys = len(rw.plan.keys)
    stat_index = {s.column: j for j, s in enumerate(rw.plan.stats)}
    checked = 0
    for row in result.rows:
        key = tuple(_norm_key(v) for v in row[:nkeys])
        cells = exact.get(key, (0,) * len(rw.plan.stats))
        for out_col, agg in zip(row[nkeys:], rw.plan.aggregates, strict=False):
            if agg.kind not in ("count", "sum"):
                continue
            (col,) = agg.stats
            stat = rw.plan.stats[stat_index[col]]
            if agg.kind == "sum" and agg.center:
                continue  # a centred sum adds center × a noisy count: its error is not this statistic's alone
            truth = Fraction(cells[stat_index[col]]) * stat.grid
            bound = SIGMAS * noise.stat(col).released_scale
            assert abs(Fraction(out_col) - truth) <= bound, (kind, key, agg.label, out_col, float(truth), float(bound))
            checked += 1
    assert checked > 0


# --- refusals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sql", REFUSED)
def test_refusals_are_identical(engines: dict[str, dict[str, Engine]], sql: str) -> None:
    """The same SQLSTATE and message on both backends, and nothing charged."""
    outcomes = {}
    for kind, engine in engines["hospital"].items():
        session = engine.session("alice")
        with pytest.raises(DPSQLError) as refused:
            session.execute(sql)
        outcomes[kind] = (refused.value.sqlstate, refused.value.message)
        assert all(s.spent_rho == 0 for s in session.budget())
    assert outcomes["duckdb"] == outcomes["postgres"]


def test_budget_runs_out_after_the_same_number_of_queries(pg: PgEnv, tmp_path: Path) -> None:
    """A budget admits the same number of queries on both backends, then refuses with 53400."""
    counts = {}
    for kind in KINDS:
        engine = Engine(policy := load_policy(_write(tmp_path, "budget", pg, kind, epsilon=3.0, replay="off")),
                        DuckDBBackend(policy) if kind == "duckdb" else PostgresBackend(policy))
        try:
            session = engine.session("alice")
            session.execute("SET dp.epsilon = 1.0")
            n = 0
            while True:
                try:
                    session.execute("SELECT department, COUNT(*) FROM visits GROUP BY department")
                except DPSQLError as e:
                    assert e.sqlstate == "53400"
                    break
                n += 1
                assert n < 100
            counts[kind] = n
        finally:
            engine.close()
    assert counts["duckdb"] == counts["postgres"] > 0


def test_public_queries_are_identical(engines: dict[str, dict[str, Engine]]) -> None:
    """A query over public tables only runs as is, free, with the same rows on both engines."""
    sql = "SELECT name, floor, building FROM departments WHERE floor > 0 ORDER BY department_id"
    results = {kind: e.session("alice").execute(sql) for kind, e in engines["hospital"].items()}
    assert results["duckdb"].rows == results["postgres"].rows and len(results["duckdb"].rows) > 3
    assert results["duckdb"].columns == results["postgres"].columns == ("name", "floor", "building")


def test_explain_is_identical_but_for_the_engine_sql(engines: dict[str, dict[str, Engine]]) -> None:
    for sql in QUERIES.values():
        texts = {}
        for kind, engine in engines["hospital"].items():
            session = engine.session("alice")
            rw, _ = session.plan(sql)
            lines = [r[0] for r in session.execute(f"EXPLAIN {sql}").rows]
            texts[kind] = [line.replace(rw.sql, "<bounded SQL>").replace(f"{kind} SQL:", "<engine> SQL:") for line in lines
                           if not line.strip().removeprefix("note: ").startswith(_STRATEGY_NOTES)]
        assert texts["duckdb"] == texts["postgres"], sql


# --- the query path on PostgreSQL ----------------------------------------------------------------------


class _Recording(BackendSession):
    def __init__(self, inner: BackendSession, events: list[tuple[str, str]], fail_on: Callable[[str], bool] | None) -> None:
        self.inner, self.events, self.fail_on = inner, events, fail_on

    def execute(self, sql: str, *, timeout: float | None = None) -> ResultSet:
        self.events.append(("execute", sql))
        if self.fail_on is not None and self.fail_on(sql):
            # a real PostgreSQL failure whose message quotes a private value
            sql = "SELECT CAST(diagnosis || '-secret' AS integer) AS x FROM public.visits"
        return self.inner.execute(sql, timeout=timeout)

    def cancel(self) -> None:
        self.inner.cancel()

    def close(self) -> None:
        self.inner.close()


class _RecordingBackend(Backend):
    def __init__(self, inner: Backend, events: list[tuple[str, str]], fail_on: Callable[[str], bool] | None = None) -> None:
        self.inner, self.events, self.fail_on, self.dialect = inner, events, fail_on, inner.dialect

    def describe(self) -> dict[str, list[tuple[str, str]]]:
        return self.inner.describe()

    def session(self) -> BackendSession:
        return _Recording(self.inner.session(), self.events, self.fail_on)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def recording(pg: PgEnv, tmp_path: Path) -> Iterator[Callable[..., tuple[Engine, list[tuple[str, str]]]]]:
    made: list[Engine] = []

    def make(fail_on: Callable[[str], bool] | None = None) -> tuple[Engine, list[tuple[str, str]]]:
        policy = load_policy(_write(tmp_path, f"rec{len(made)}", pg, "postgres"))
        events: list[tuple[str, str]] = []
        engine = Engine(policy, _RecordingBackend(PostgresBackend(policy), events, fail_on))
        charge = engine.ledger.charge

        def recording_charge(*args: Any, **kwargs: Any) -> Any:
            receipt = charge(*args, **kwargs)
            events.append(("charge", ""))
            return receipt

        engine.ledger.charge = recording_charge  # type: ignore[method-assign]
        made.append(engine)
        return engine, events

    yield make
    for e in made:
        e.close()


def _tables(sql: str) -> set[str]:
    return {t.name.lower() for t in sqlglot.parse_one(sql, read="postgres").find_all(exp.Table)}


@pytest.mark.parametrize("name", ["count", "declared_keys_avg", "partition_selection", "public_join_sum", "having_order_limit"])
def test_charge_commits_before_private_rows_are_read(recording: Callable[..., Any], name: str) -> None:
    """R22 on PostgreSQL: only public tables are read before the charge; the bounded SQL after it."""
    engine, events = recording()
    engine.session("alice").execute(QUERIES[name])
    kinds = [k for k, _ in events]
    assert kinds.count("charge") == 1
    at = kinds.index("charge")
    assert all(not _tables(sql) & {"visits", "patients"} for _, sql in events[:at])
    assert any(_tables(sql) & {"visits", "patients"} for k, sql in events[at + 1:] if k == "execute")


def test_postgres_error_text_never_reaches_the_client(recording: Callable[..., Any]) -> None:
    """R14 on PostgreSQL: "invalid input syntax for type integer: "J06-secret"" becomes the fixed
    XX000 message with nothing chained, and the charge stands."""
    engine, events = recording(fail_on=lambda sql: "__dp_rows" in sql)
    session = engine.session("alice")
    with pytest.raises(DPSQLError) as failed:
        session.execute("SELECT COUNT(*) FROM visits")
    err = failed.value
    text = "".join(traceback.format_exception(err))
    assert err.sqlstate == "XX000" and err.__cause__ is None and err.__context__ is None
    assert "-secret\"" not in text and "J06" not in text and "invalid input" not in text
    assert [k for k, _ in events].count("charge") == 1
    assert {s.scope: s.spent_rho for s in session.budget()}["user"] > 0


@pytest.mark.parametrize("sql", [
    QUERIES["semi_join_on_unit"],
    "SELECT COUNT(*) FROM visits WHERE patient_id NOT IN (SELECT patient_id FROM patients WHERE region = 'north')",
])
def test_private_subqueries_are_planned_as_semi_and_anti_joins(engines: dict[str, dict[str, Engine]], pg: PgEnv,
                                                               sql: str) -> None:
    """A semi-join on the unit reaches PostgreSQL as top-level EXISTS/NOT EXISTS conjuncts, which its
    planner turns into semi-/anti-joins (hash or merge): no SubPlan re-run per outer row, whose cost
    would grow with the private table (docs/privacy.md §2, "Subqueries")."""
    rw = engines["hospital"]["postgres"].rewrite(sql)
    plan = "\n".join(r[0] for r in pg.sql(f"EXPLAIN {rw.sql}"))
    assert ("Semi Join" in plan or "Anti Join" in plan) and "SubPlan" not in plan, plan
