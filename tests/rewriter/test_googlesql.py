"""GoogleSQL's DP syntax (``SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (…)``, named aggregate
arguments) read as plain SQL and options: exact translations, and clear refusals before any charge."""

from __future__ import annotations

from fractions import Fraction

import pytest

from dpsql.errors import DPSQLError
from dpsql.rewriter.googlesql import translate


def test_plain_sql_is_left_alone() -> None:
    assert translate("SELECT COUNT(*) FROM t WHERE s = 'WITH DIFFERENTIAL_PRIVACY => x'") is None
    assert translate("SELECT 1 -- WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon = 1)") is None


def test_options_become_statement_settings_and_bounds() -> None:
    g = translate(
        "SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon = 1.5, delta = 1e-6, max_groups_contributed = 2,\n"
        "  privacy_unit_column = patient_id, group_selection_strategy = PUBLIC_GROUPS)\n"
        "  department, COUNT(*) FROM visits GROUP BY department"
    )
    assert g is not None
    assert g.sql == "SELECT department, COUNT(*) FROM visits GROUP BY department"
    assert (g.epsilon, g.delta, g.max_groups, g.max_rows) == (Fraction(3, 2), Fraction(1, 10**6), 2, None)
    assert g.privacy_unit_column == "patient_id" and g.public_groups and not g.report


def test_anonymization_spelling_and_kappa() -> None:
    g = translate("SELECT WITH ANONYMIZATION OPTIONS (epsilon = 1, kappa = 1) COUNT(*) FROM t")
    assert g is not None and g.max_groups == 1 and g.sql == "SELECT COUNT(*) FROM t"


def test_max_rows_contributed_is_the_l1_row_cap() -> None:
    g = translate("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon = 1, max_rows_contributed = 3) COUNT(*) FROM t")
    assert g is not None and (g.max_groups, g.max_rows, g.max_contributions) == (None, None, 3)
    g2 = translate("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(max_groups_contributed=2, max_rows_contributed=3) COUNT(*) FROM t")
    assert g2 is not None and (g2.max_groups, g2.max_contributions) == (2, 3)


def test_named_arguments() -> None:
    g = translate(
        "SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(epsilon=1) ABS(PERCENTILE_CONT(x, 0.4, contribution_bounds_per_row => (1, 3))"
        " - 1.5), COUNT(*, contribution_bounds_per_group => (0, 2)), AVG(y + 1, contribution_bounds_per_row => (-2, 2.5)) FROM t"
    )
    assert g is not None
    assert g.sql == ("SELECT ABS(PERCENTILE_CONT(LEAST(GREATEST((x), 1), 3), 0.4) - 1.5), COUNT(*), "
                     "AVG(LEAST(GREATEST((y + 1), -2), 2.5)) FROM t")
    assert g.max_rows == 2


def test_min_privacy_units_per_group_is_read() -> None:
    g = translate("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(min_privacy_units_per_group=5) k, COUNT(*) FROM t GROUP BY k")
    assert g is not None and g.min_units == 5 and g.sql == "SELECT k, COUNT(*) FROM t GROUP BY k"
    g = translate("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(min_privacy_units_per_group=NULL) COUNT(*) FROM t")
    assert g is not None and g.min_units is None


def test_json_report_is_post_processing_of_the_value_and_its_interval() -> None:
    g = translate("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(epsilon=1) SUM(x, report_format => 'JSON') AS r FROM t")
    assert g is not None and g.report and g.confidence == Fraction(95, 100)
    assert "DP_INTERVAL_LOW(SUM(x))" in g.sql and "DP_INTERVAL_HIGH(SUM(x))" in g.sql and g.sql.endswith(" AS r FROM t")


@pytest.mark.parametrize(
    ("sql", "sqlstate", "words"),
    [
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(epsilon=1, foo=2) COUNT(*) FROM t", "22023", "unknown differential privacy option foo"),
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(epsilon=abc) COUNT(*) FROM t", "22023", "must be a number"),
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(epsilon=1, epsilon=2) COUNT(*) FROM t", "22023", "given twice"),
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(epsilon=1, max_groups_contributed=0) COUNT(*) FROM t", "22023", "positive integer"),
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(epsilon 1) COUNT(*) FROM t", "42601", "expected epsilon = value"),
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(epsilon=1 COUNT(*) FROM t", "42601", "syntax error"),
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(min_privacy_units_per_group=0) COUNT(*) FROM t", "22023",
         "min_privacy_units_per_group must be a positive integer"),
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(group_selection_strategy=MAGIC) COUNT(*) FROM t", "22023", "MAGIC"),
        ("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(min_privacy_units_per_group=2, group_selection_strategy=PUBLIC_GROUPS) "
         "COUNT(*) FROM t", "22023", "must not be given with group_selection_strategy = PUBLIC_GROUPS"),
        ("SELECT MEDIAN(x, contribution_bounds_per_group => (0, 10)) FROM t", "0A000", "contribution_bounds_per_group on MEDIAN"),
        ("SELECT SUM(x + 1, contribution_bounds_per_group => (0, 10)) FROM t", "0A000", "needs a bare column"),
        ("SELECT SUM(x, contribution_bounds_per_group => (0, 10)), AVG(x, contribution_bounds_per_group => (0, 5)) FROM t",
         "0A000", "two different contribution_bounds_per_group"),
        ("SELECT SUM(x, contribution_bounds_per_row => (10, 0)) FROM t", "22023", "above the upper bound"),
        ("SELECT SUM(x, contribution_bounds_per_row => (a, 1)) FROM t", "22023", "two number literals"),
        ("SELECT SUM(x, contribution_bounds_per_row => 5) FROM t", "22023", "(lower, upper)"),
        ("SELECT COUNT(*, contribution_bounds_per_row => (0, 1)) FROM t", "22023", "needs an argument to clamp"),
        ("SELECT COUNT(*, contribution_bounds_per_group => (1, 2)) FROM t", "22023", "(0, k)"),
        ("SELECT SUM(x, report_format => 'PROTO') FROM t", "0A000", "report_format PROTO"),
        ("SELECT SUM(x, weird => 1) FROM t", "22023", "unknown argument weird"),
    ],
)
def test_bad_options_are_refused_with_their_sqlstate(sql: str, sqlstate: str, words: str) -> None:
    with pytest.raises(DPSQLError) as err:
        translate(sql)
    assert err.value.sqlstate == sqlstate
    assert words in err.value.message


def test_per_group_bounds_on_sums_are_the_statements_unit_bounds() -> None:
    g = translate("SELECT SUM(t.x, contribution_bounds_per_group => (0, 10)), AVG(x, contribution_bounds_per_group => (0, 10)) FROM t")
    assert g is not None and g.sql == "SELECT SUM(t.x), AVG(x) FROM t"
    assert g.unit_bounds == {"x": (Fraction(0), Fraction(10))}
