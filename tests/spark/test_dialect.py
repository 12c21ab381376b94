"""The Spark dialect of the rewriter, without a server: what the emitted SQL says (exact sums,
TRY_CAST kept, no TRY, guarded division and casts, the MD5 tie-break, re-escaped LIKE patterns,
DATEDIFF, LOG(10, x)), that it passes the allowlist check, and the Spark-only refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

_REPLAY = str(Path(__file__).parent.parent / "replay")
if _REPLAY not in sys.path:
    sys.path.insert(0, _REPLAY)

import replay_lib as R  # noqa: E402

from dpsql.errors import DPSQLError  # noqa: E402
from dpsql.rewriter import rewrite  # noqa: E402
from dpsql.rewriter.spark import verify, view_name  # noqa: E402

VIEWS = {view_name("public", t) for t in ("t", "e", "p")}


def _spark(sql: str) -> str:
    rw = rewrite(sql, R.catalog(), dialect="spark")
    assert rw.plan is not None
    assert verify(rw.sql, VIEWS) == rw.sql
    return rw.sql


def test_sums_are_exact_decimals() -> None:
    sql = _spark("SELECT g, SUM(a), AVG(x), VAR_POP(y), COUNT(*) FROM t GROUP BY g")
    tree = sqlglot.parse_one(sql, read="spark")
    sums = list(tree.find_all(exp.Sum))
    assert sums and all(isinstance(s.this, exp.Cast) and s.this.to.sql("spark") == "DECIMAL(38, 0)" for s in sums)


def test_casts_from_text_stay_try_casts_and_nothing_is_wrapped_in_try() -> None:
    sql = _spark("SELECT COUNT(CAST(h AS INT)), COUNT(CAST(g AS DATE)), COUNT(CAST(h AS DOUBLE)) FROM t")
    assert sql.count("TRY_CAST(") == 3 and "TRY(" not in sql.replace("TRY_CAST(", "")


def test_numeric_to_integer_casts_round_inside_a_range_guard() -> None:
    sql = _spark("SELECT COUNT(CAST(x AS BIGINT)), COUNT(CAST(x AS SMALLINT)) FROM t")
    assert "CAST(BROUND(`t`.`x`) AS BIGINT)" in sql and "CAST(BROUND(`t`.`x`) AS SMALLINT)" in sql
    assert "`t`.`x` > -9223372036854775808.5 AND `t`.`x` < 9223372036854775807.5" in sql


def test_division_is_guarded_and_integer_division_truncates() -> None:
    sql = _spark("SELECT (a / k) AS q, COUNT(*) FROM t WHERE x / y > 1 AND k % a = 0 GROUP BY 1")
    assert "NULLIF(CAST(`t`.`k` AS DOUBLE), 0)" in sql and "NULLIF(`t`.`y`, 0)" in sql
    assert "% 1" in sql and " DIV " not in sql.split("__dp_per_unit AS")[0]


def test_tie_break_is_postgres_md5_form() -> None:
    sql = _spark("SELECT h, COUNT(*) FROM t GROUP BY h")
    assert "MD5(CONCAT_WS(CHR(31), CAST(__dp_uid AS STRING), COALESCE('+' || CAST(__dp_k0 AS STRING), '-'), '" in sql
    assert "HASH(" not in sql


@pytest.mark.parametrize(("pattern", "spark"), [
    ("'a%'", "'a%'"),
    ("'%\\%'", "'%\\\\%'"),  # PostgreSQL: any text, then a literal %
    ("'a\\b%'", "'ab%'"),  # PostgreSQL: \b is a literal b; Spark would reject the escape
    ("'c:\\\\d'", "'c:\\\\\\\\d'"),  # a literal backslash
])
def test_like_patterns_are_re_escaped(pattern: str, spark: str) -> None:
    sql = _spark(f"SELECT COUNT(*) FROM t WHERE h LIKE {pattern}")
    assert f"LIKE {spark}" in sql, sql


def test_date_difference_and_log() -> None:
    sql = _spark("SELECT COUNT(*) FROM t WHERE (d - DATE '2020-01-01') > 3 AND log(x) > 0 AND ln(y) > 0")
    assert "DATEDIFF(" in sql and "LOG(10, " in sql


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM t WHERE floor(x) > 1",
    "SELECT COUNT(*) FROM t WHERE split_part(h, '-', 1) = 'a'",
    "SELECT COUNT(*) FROM t WHERE extract(dow FROM d) = 1",
    "SELECT COUNT(*) FROM t WHERE substring(h, 0, 2) = 'a'",
    "SELECT COUNT(*) FROM t WHERE left(h, -1) = 'a'",
])
def test_refused_on_spark_only(sql: str) -> None:
    rewrite(sql, R.catalog(), dialect="duckdb")  # fine on DuckDB
    with pytest.raises(DPSQLError) as e:
        rewrite(sql, R.catalog(), dialect="spark")
    assert e.value.sqlstate in ("0A000", "42883")


def test_every_replay_shape_passes_the_allowlist_check() -> None:
    checked = 0
    for shape in R.SHAPES.values():
        try:
            rw = rewrite(shape, R.catalog(), dialect="spark")
        except DPSQLError:
            continue
        checked += 1
        verify(rw.sql, VIEWS)
        if rw.plan is not None and rw.plan.public_keys_sql:
            verify(rw.plan.public_keys_sql, VIEWS)
    assert checked >= len(R.SHAPES) * 3 // 4, checked


@pytest.mark.parametrize("sql", [
    "SELECT MEDIAN(x), MIN(a), MAX(y) FROM t",
    "SELECT g, PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY x) FROM t GROUP BY g",
    "SELECT h, PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY a DESC), MAX(x * 2 + a) FROM t GROUP BY h",
])
def test_quantile_histograms_pass_the_allowlist_check(sql: str) -> None:
    """Quantiles and MIN/MAX are answered on Spark: each histogram query passes verify, and its bin
    index is FLOOR over DOUBLE arithmetic (Spark's FLOOR of a DOUBLE is a saturating BIGINT), with
    integer offsets exact in DECIMAL(38, 0) — never FLOOR of a DECIMAL (whose cast could overflow)."""
    rw = rewrite(sql, R.catalog(), dialect="spark")
    assert rw.plan is not None and rw.plan.histograms
    for h in rw.plan.histograms:
        assert verify(h.sql, VIEWS) == h.sql
        tree = sqlglot.parse_one(h.sql, read="spark")
        floors = list(tree.find_all(exp.Floor))
        assert floors
        for f in floors:
            add = f.this
            assert isinstance(add, exp.Add) and isinstance(add.expression, exp.Cast) and add.expression.to.sql("spark") == "DOUBLE"
            div = add.this
            assert isinstance(div, exp.Div) and isinstance(div.expression, exp.Cast) and div.expression.to.sql("spark") == "DOUBLE"
