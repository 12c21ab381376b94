"""Other dialects' spellings: answered when dpsql can, else refused with a message that names what the
user wrote (never a sqlglot class name) and says what to write instead."""

from __future__ import annotations

import pytest

from dpsql.errors import DPSQLError
from dpsql.rewriter import rewrite
from dpsql.schema import Catalog


def test_pi_is_a_bounded_constant(catalog: Catalog) -> None:
    rw = rewrite("SELECT SUM(age * pi()), AVG(cost / PI()) FROM visits", catalog)
    assert rw.plan is not None and len(rw.plan.stats) >= 2


@pytest.mark.parametrize(
    ("sql", "sqlstate", "words"),
    [
        ("SELECT json_object('a', COUNT(*)) FROM visits", "42883", "function json_object()"),
        ("SELECT TOP 5 COUNT(*) FROM visits", "42601", "write LIMIT 5"),
    ],
)
def test_foreign_spellings_are_named_as_written(catalog: Catalog, sql: str, sqlstate: str, words: str) -> None:
    with pytest.raises(DPSQLError) as err:
        rewrite(sql, catalog)
    assert err.value.sqlstate == sqlstate
    assert words in str(err.value)


def test_star_schemas_join_many_public_dimensions(catalog: Catalog) -> None:
    """The join limit counts private joins: a fact table with five dimension joins is answered."""
    joins = " ".join(f"JOIN departments d{i} ON v.department_id = d{i}.department_id" for i in range(5))
    rw = rewrite(f"SELECT d0.name, COUNT(*) FROM visits v {joins} GROUP BY d0.name", catalog)
    assert rw.plan is not None
    joins = " ".join(f"JOIN departments d{i} ON v.department_id = d{i}.department_id" for i in range(13))
    with pytest.raises(DPSQLError) as err:
        rewrite(f"SELECT COUNT(*) FROM visits v {joins}", catalog)
    assert err.value.sqlstate == "0A000" and "13 public tables" in str(err.value)
