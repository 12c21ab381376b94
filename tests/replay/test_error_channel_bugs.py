"""Known error-channel bugs found by the T7 fuzz (test_error_channel.py), one minimal case each.

Each test states what must hold; the product currently violates it, so it is a strict xfail that
will start failing (XPASS) when the bug is fixed — then remove the marker. What must hold for a
query that reaches the engine: the bounded SQL runs without error on a database and on its
neighbour (one unit more), so that success/failure reveals nothing (R14). Refusing the query at
rewrite (any SQLSTATE but XX000) is an acceptable fix too: the rewriter never sees data.

The neighbours are T7's: a database with and without the poison unit 4242 (replay_lib.poison_unit).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import duckdb
import pytest
import replay_lib as R

from dpsql.errors import DPSQLError
from dpsql.policy import policy_from_dict
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.backends.empty_schema import EmptyShadow
from dpsql.proxy.engine import Engine

PAIRS = (("empty", "poison"), ("ordinary", "ordinary+poison"))


@cache
def _connections() -> dict[str, duckdb.DuckDBPyConnection]:
    return {name: R.connect_db(db) for name, db in R.poison_databases().items()}


def _outcomes(sql: str) -> dict[str, str]:
    """{"refused": sqlstate} at rewrite, else the outcome ("ok" or the DuckDB exception class) on
    each of T7's databases (empty, poison unit alone, ordinary, ordinary + poison unit)."""
    try:
        rw = R.rewrite(sql, R.catalog())
    except DPSQLError as e:
        return {"refused": e.sqlstate}
    out = {}
    for name, con in _connections().items():
        try:
            con.execute(rw.sql).fetchall()
            out[name] = "ok"
        except duckdb.Error as e:
            out[name] = type(e).__name__
    return out


def _assert_total(sql: str) -> None:
    result = _outcomes(sql)
    if "refused" in result:
        assert result["refused"] != "XX000", f"refused with an internal error: {sql}"
        return
    assert set(result.values()) == {"ok"}, f"{sql}: {result}"


def _xfail(bug: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=bug)


B1 = "B1: a text value where a boolean is expected is cast by DuckDB at run time (totalize checks only comparisons)"
B2 = "B2: NULLIF(text, number) compares with a run-time cast of the text (not covered by check_comparisons)"
B3 = "B3: simple CASE <text> WHEN <number> compares with a run-time cast (not covered by check_comparisons)"
B4 = "B4: literal-only expressions that fail are evaluated per row: they fail iff some row reaches them"
B5 = "B5: DuckDB's TRY does not catch errors of a subexpression that occurs twice inside it (common subexpressions)"
B6 = "B6: a DATE column compared with a TIMESTAMP expression is cast at run time; fails beyond year 294247"
B7 = "B7: ill-typed expressions pass the rewriter and fail in DuckDB's binder on every database, after the charge"


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM t WHERE uid = 4242 AND h",
    "SELECT COUNT(*) FROM t WHERE NOT h",
    "SELECT COUNT(*) FROM t WHERE h IS TRUE",
    "SELECT SUM(CASE WHEN h THEN 1 ELSE 0 END) FROM t",
    "SELECT COUNT(*) FILTER (WHERE h) FROM t",
])
def test_b1_text_in_boolean_context(sql: str) -> None:
    """PostgreSQL refuses `WHERE h` for a text h (42804); DuckDB casts each value and fails on
    'abc' with "Could not convert string 'abc' to BOOL": the error reveals one unit's value."""
    _assert_total(sql)


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM t WHERE COALESCE('h1', 'h1')",
    "SELECT COUNT(*) FROM t WHERE uid = 4242 AND GREATEST('a', 'b')",
    "SELECT COUNT(*) FROM t WHERE NULLIF('a', 'b')",
    "SELECT COUNT(*) FROM t WHERE uid = 4242 AND 'h1'",
    "SELECT COUNT(*) FILTER (WHERE COALESCE(h, 'x')) FROM t",
])
def test_b8_text_literals_in_boolean_context(sql: str) -> None:
    """COALESCE/GREATEST/NULLIF of text literals are text in PostgreSQL (42804 in a WHERE); a bare
    literal is read as a boolean at parse time (22P02 for 'h1'). DuckDB cast them per row: the
    conversion error fired only when some row reached the condition."""
    _assert_total(sql)


@pytest.mark.parametrize("sql", ["SELECT COUNT(*) FROM t WHERE NULLIF(h, 0) IS NULL", "SELECT COUNT(*) FROM t WHERE NULLIF(a, h) IS NULL"])
def test_b2_nullif_text_and_number(sql: str) -> None:
    """NULLIF(h, 0) makes DuckDB cast h to INTEGER per row ("Could not convert string 'abc'")."""
    _assert_total(sql)


def test_b3_simple_case_text_subject() -> None:
    """CASE h WHEN 1 … compares h = 1 with a run-time cast of h."""
    _assert_total("SELECT COUNT(*) FROM t WHERE CASE h WHEN 1 THEN TRUE ELSE FALSE END")


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM t WHERE uid = 4242 AND h LIKE 'a\\' ESCAPE '\\'",
    "SELECT COUNT(*) FROM t WHERE uid = 4242 AND h LIKE 'a' ESCAPE 'ab'",
    "SELECT COUNT(*) FROM t WHERE uid = 4242 AND substring(h, 9223372036854775807, 1) = 'a'",
    "SELECT COUNT(*) FROM t WHERE uid = 4242 AND d > 'abc'",
    "SELECT COUNT(*) FROM t WHERE uid = 4242 AND CAST('abc' AS DATE) IS NULL",
    "SELECT CAST(2147483647 AS SMALLINT) AS s, COUNT(*) FROM t WHERE uid = 4242 GROUP BY 1",
])
def test_b4_failing_literals_reveal_whether_a_row_matches(sql: str) -> None:
    """The error depends only on the query text but fires only if a row reaches the expression,
    so `WHERE uid = 4242 AND <failing literal>` fails iff unit 42 exists: exact membership, no noise.
    (totalize leaves casts of literals as CAST on purpose, and does not validate LIKE escapes,
    substring offsets or string literals compared with dates.)"""
    _assert_total(sql)


@pytest.mark.parametrize("sql", [
    "SELECT a * 2 + a * 2 > 0 AS z, COUNT(*) FROM t GROUP BY 1",
    "SELECT COUNT(a * 2 + a * 2) FROM t",
    "SELECT SUM(LEAST(GREATEST((a - 1) * (a - 1), 0), 9)) FROM t",
    "SELECT SUM(LEAST(GREATEST(10 / abs(a), 0), 1)) FROM t",
    "SELECT COUNT(*) FILTER (WHERE 10 / abs(a) = 0) FROM t",
    "SELECT (d + 7) - (d + 7) AS z, COUNT(*) FROM t GROUP BY 1",
])
def test_b5_try_does_not_cover_repeated_subexpressions(sql: str) -> None:
    """The rewriter wraps only the outermost risky node in TRY(…) (and a / b becomes
    TRY(a // NULLIF(b, 0)), which repeats b). In a projection (GROUP BY key, aggregate input,
    FILTER) DuckDB computes a repeated subexpression once, outside the TRY, so its overflow
    escapes: TRY(a*2 + a*2) fails for a = −2^63 while TRY(TRY(a*2) + TRY(a*2)) does not.
    Wrapping every risky node in its own TRY fixes it."""
    _assert_total(sql)


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM t WHERE d < CURRENT_TIMESTAMP",
    "SELECT COUNT(*) FROM t WHERE date_trunc('month', d) = d",
    "SELECT COUNT(*) FROM t WHERE d < d + INTERVAL '30 days'",
])
def test_b6_date_column_cast_to_timestamp(sql: str) -> None:
    """DuckDB casts the DATE column to TIMESTAMP for the comparison; a date beyond the timestamp
    range fails with "Type INT32 with value 5881580-07-10 can't be cast …" (the value is quoted)."""
    _assert_total(sql)


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM t WHERE d + a > DATE '2023-01-01'",  # a BIGINT day offset: guarded to ±10,000 years
    "SELECT COUNT(*) FROM t WHERE d + k * 400 > DATE '2023-01-01'",
    "SELECT COUNT(*) FROM t WHERE d - INTERVAL '9000 years' < DATE '2023-01-01'",
    "SELECT COUNT(*) FROM t WHERE date_trunc('month', d) > DATE '2023-01-01'",
    "SELECT COUNT(*) FROM t WHERE (d - DATE '2020-01-01') > 3",
])
def test_date_arithmetic_is_total(sql: str) -> None:
    """Date arithmetic runs without TRY: operands guarded to years 1–9999, offsets to ±10,000 years."""
    _assert_total(sql)


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM t WHERE sign(h) > 0",
    "SELECT COUNT(*) FROM t WHERE upper(a) = 'X'",
    "SELECT COUNT(*) FROM t WHERE GREATEST(a, h) = 'x'",
    "SELECT COUNT(*) FROM t WHERE COALESCE(k, h) = 1",
])
def test_b7_ill_typed_expressions_are_refused_before_the_charge(sql: str) -> None:
    """These fail in DuckDB's binder on every database. They must be refused before the charge:
    by the rewriter (42883/42804, as PostgreSQL does) or by the engine's bind check on an empty copy
    of the schema (``Backend.validate``, which the engine calls before charging)."""
    try:
        rw = R.rewrite(sql, R.catalog())
    except DPSQLError as e:
        assert e.sqlstate in ("42883", "42804"), (sql, e.sqlstate, e)
        return
    described = {q: [(c.name, c.pg_type) for c in t.columns] for q, t in R.catalog().tables.items()}
    shadow = EmptyShadow(described)
    try:
        with pytest.raises(DPSQLError) as refused:
            shadow.check(rw.sql)
    finally:
        shadow.close()
    assert refused.value.sqlstate == "42804"


@pytest.mark.parametrize("sql", ["SELECT 1 FROM t", "SELECT 'a' AS z FROM t", "SELECT DATE '1970-01-01' FROM t"])
def test_b8_constant_projection_is_refused_not_a_crash(sql: str) -> None:
    """One output row per private row would release the exact row count: 42501 expected. The
    rewriter raises sqlglot's SchemaError ("Table  must have at least one column") instead, which
    is no DPSQLError: `dpsql query` prints a traceback."""
    with pytest.raises(DPSQLError) as refused:
        R.rewrite(sql, R.catalog())
    assert refused.value.sqlstate == "42501"


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM t WHERE g IS NOT NULL",
    "SELECT COUNT(*) FILTER (WHERE h IS NOT NULL) FROM t",
    "SELECT (h IS NOT NULL) AS has_h, COUNT(*) FROM t GROUP BY 1",
])
def test_b9_is_not_null_passes_the_fixed_point_check(sql: str) -> None:
    """Every query with IS NOT NULL is refused with XX000 "the rewritten SQL is not a fixed point"
    (emit.py: generate → parse → generate differs)."""
    rw = R.rewrite(sql, R.catalog())
    assert rw.plan is not None


def test_b4_membership_through_the_engine(tmp_path: Path) -> None:
    """End to end through Engine/Session: the answer (and the charge) must not depend on whether
    unit 4242 exists. It used to be "ok" without it and XX000 with it, charged either way."""
    sql = "SELECT COUNT(*) FROM t WHERE uid = 4242 AND h LIKE 'a\\' ESCAPE '\\'"
    dbs = R.poison_databases()
    outcomes = []
    for label in PAIRS[1]:
        path = tmp_path / f"{label}.duckdb"
        con = R.connect_db(dbs[label])
        try:
            con.execute(f"ATTACH '{path}' AS out")
            for name in ("t", "e", "p"):
                con.execute(f"CREATE TABLE out.main.{name} AS SELECT * FROM main.{name}")
            con.execute("DETACH out")
        finally:
            con.close()
        ledger = {"ledger": {"path": str(tmp_path / f"{label}.sqlite")}}
        pol = policy_from_dict(R.POLICY | {"source": {"duckdb": str(path)}, "privacy": R.POLICY["privacy"] | ledger}, tmp_path / "p.toml")
        engine = Engine(pol, DuckDBBackend(pol))
        try:
            session = engine.session("alice")
            try:
                session.execute(sql)
                outcomes.append(("ok", session.budget()[1].spent_rho))
            except DPSQLError as e:
                outcomes.append((e.sqlstate, session.budget()[1].spent_rho))
        finally:
            engine.close()
    # Same outcome and same charge on both neighbours: refused for free (the pattern is invalid
    # whatever the data), never "ok here, XX000 there".
    assert outcomes[0] == outcomes[1], outcomes
