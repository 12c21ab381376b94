"""Rows that do not match the release plan are refused — before any noise is drawn, with a
message that quotes no value — and the charge stands; a token is released at most once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from embedlib import session_runner

from dpsql.embed import EmbedSession, Pipeline
from dpsql.errors import DPSQLError, ReleaseRefused
from dpsql.policy import load_policy
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.timing import TimingShield

SECRET = 987654321  # a value no message may quote
COUNT = "SELECT COUNT(*) FROM visits"
DECLARED = "SELECT department, COUNT(*), AVG(cost) FROM visits GROUP BY department"
SELECTION = "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis"
DATE_KEY = "SELECT date_trunc('month', visit_date) AS m, COUNT(*) FROM visits GROUP BY 1"


@pytest.fixture
def setup(write_policy: Callable[..., Path]) -> Iterator[tuple[Pipeline, Any]]:
    policy = load_policy(write_policy())
    backend = DuckDBBackend(policy)
    pipe = Pipeline(policy, schema=backend.describe(), shield=TimingShield(enabled=False))
    with backend.session() as caller:
        yield pipe, session_runner(caller)
    pipe.close()
    backend.close()


def _charged(pipe: Pipeline, run: Any, sql: str) -> tuple[EmbedSession, Any, list[str], list[tuple[Any, ...]]]:
    s = pipe.session("alice")
    q = s.prepare(sql)
    keys = list(run(q.public_keys_sql)[1]) if q.public_keys_sql else None
    token = s.charge(q, public_keys=keys)
    columns, rows = run(token.sql)
    return s, token, list(columns), [tuple(r) for r in rows]


def _refused(s: EmbedSession, token: Any, columns: Any, rows: Any, words: str) -> ReleaseRefused:
    spent = _user_spent(s)
    with pytest.raises(ReleaseRefused) as e:
        s.release(token, columns, rows)
    assert words in str(e.value), str(e.value)
    assert str(SECRET) not in str(e.value) and e.value.__cause__ is None and e.value.__context__ is None
    assert e.value.sqlstate == "22000"
    assert _user_spent(s) == spent > 0, "the charge stands, nothing more is charged"
    # the token is used up, refused or not
    with pytest.raises(ReleaseRefused, match="already released"):
        s.release(token, columns, rows)
    return e.value


def _user_spent(s: EmbedSession) -> Any:
    return next(b.spent_epsilon for b in s.budget() if b.scope == "user")


def test_extra_column(setup: tuple[Pipeline, Any]) -> None:
    s, token, columns, rows = _charged(*setup, DECLARED)
    _refused(s, token, [*columns, "secret"], [(*r, SECRET) for r in rows], "1 unexpected column")


def test_raw_rows_instead_of_bounded_sql(setup: tuple[Pipeline, Any]) -> None:
    pipe, run = setup
    s, token, _, _ = _charged(pipe, run, COUNT)
    columns, rows = run("SELECT patient_id, age FROM main.visits LIMIT 5")
    _refused(s, token, columns, rows, "missing statistic column(s) __dp_s0")


def test_missing_statistic(setup: tuple[Pipeline, Any]) -> None:
    s, token, columns, rows = _charged(*setup, DECLARED)
    _refused(s, token, columns[:-1], [r[:-1] for r in rows], "missing statistic column(s) __dp_s2")


def test_columns_out_of_order(setup: tuple[Pipeline, Any]) -> None:
    s, token, columns, rows = _charged(*setup, DECLARED)
    _refused(s, token, columns[::-1], [r[::-1] for r in rows], "out of order")


def test_upper_case_names_are_the_same_columns(setup: tuple[Pipeline, Any]) -> None:
    s, token, columns, rows = _charged(*setup, DECLARED)
    assert len(s.release(token, [c.upper() for c in columns], rows).rows) == 8


@pytest.mark.parametrize(("value", "what"), [
    (float(SECRET), "holds a float"),
    (str(SECRET), "holds a str"),
    (Decimal(SECRET) + Decimal("0.5"), "non-integral decimal"),
    (True, "holds a bool"),
    (None, "holds NULL"),
])
def test_statistic_of_the_wrong_type(setup: tuple[Pipeline, Any], value: Any, what: str) -> None:
    s, token, columns, _ = _charged(*setup, COUNT)
    _refused(s, token, columns, [(value,)], what)


def test_exact_integer_types_are_accepted(setup: tuple[Pipeline, Any]) -> None:
    import numpy as np

    for value in (Decimal(SECRET), np.int64(SECRET), SECRET):
        s, token, columns, _ = _charged(*setup, COUNT)
        assert len(s.release(token, columns, [(value,)]).rows) == 1


def test_negative_count(setup: tuple[Pipeline, Any]) -> None:
    s, token, columns, _ = _charged(*setup, COUNT)
    _refused(s, token, columns, [(-SECRET,)], "negative")


def test_key_of_the_wrong_type(setup: tuple[Pipeline, Any]) -> None:
    s, token, columns, rows = _charged(*setup, DATE_KEY)
    bad = [(str(SECRET), *r[1:]) for r in rows]
    _refused(s, token, columns, bad, "key column __dp_k0 holds a str, not a value of type timestamp")


def test_date_key_accepted_for_a_timestamp(setup: tuple[Pipeline, Any]) -> None:
    """Engines whose date_trunc of a DATE returns a DATE (Spark) are accepted: coerced on release."""
    s, token, columns, rows = _charged(*setup, DATE_KEY)
    dated = [(r[0].date() if isinstance(r[0], dt.datetime) else r[0], *r[1:]) for r in rows]
    assert s.release(token, columns, dated).rows


def test_too_many_rows_without_group_by(setup: tuple[Pipeline, Any]) -> None:
    s, token, columns, rows = _charged(*setup, COUNT)
    _refused(s, token, columns, rows * 2, "returns one row; got 2")


def test_too_many_groups_for_the_public_keys(setup: tuple[Pipeline, Any]) -> None:
    s, token, columns, rows = _charged(*setup, DECLARED)
    extra = [(f"x{i}", SECRET, SECRET, SECRET) for i in range(len(token.public_keys))]
    _refused(s, token, columns, rows + extra, "too many groups")


def test_group_outside_the_public_keys(setup: tuple[Pipeline, Any]) -> None:
    s, token, columns, rows = _charged(*setup, DECLARED)
    _refused(s, token, columns, [*rows[:-1], ("secret-department", SECRET, SECRET, SECRET)], "not one of the public keys")


def test_repeated_group_under_partition_selection(setup: tuple[Pipeline, Any]) -> None:
    """A repeated group would be noised and released twice: refused."""
    s, token, columns, rows = _charged(*setup, SELECTION)
    _refused(s, token, columns, [*rows, rows[0]], "repeats a group")


@pytest.mark.parametrize("rows", [[{"__dp_s0": SECRET}], ["abc"], [(SECRET, SECRET)], 5])
def test_malformed_rows(setup: tuple[Pipeline, Any], rows: Any) -> None:
    s, token, columns, _ = _charged(*setup, COUNT)
    with pytest.raises(ReleaseRefused) as e:
        s.release(token, columns, rows)
    assert str(SECRET) not in str(e.value)


def test_token_is_single_use(setup: tuple[Pipeline, Any]) -> None:
    import copy

    s, token, columns, rows = _charged(*setup, COUNT)
    assert len(s.release(token, columns, rows).rows) == 1
    for again in (token, copy.copy(token), copy.deepcopy(token)):
        with pytest.raises(ReleaseRefused, match="already released"):
            s.release(again, columns, rows)


def test_token_of_another_session_or_pipeline(setup: tuple[Pipeline, Any], write_policy: Callable[..., Path]) -> None:
    pipe, run = setup
    s, token, columns, rows = _charged(pipe, run, COUNT)
    with pytest.raises(ReleaseRefused, match="another session"):
        pipe.session("alice").release(token, columns, rows)
    schema = {t: [(c.name, c.pg_type) for c in info.columns] for t, info in pipe.catalog.tables.items()}
    other = Pipeline(load_policy(write_policy()), schema=schema)
    try:
        with pytest.raises(ReleaseRefused, match="not issued by this pipeline"):
            other.session("alice").release(token, columns, rows)
        with pytest.raises(ReleaseRefused, match="not prepared by this pipeline"):
            other.session("alice").charge(token.prepared)
    finally:
        other.close()
    assert s.release(token, columns, rows).rows  # neither attempt used it up


def test_public_keys_are_required_and_checked(setup: tuple[Pipeline, Any]) -> None:
    pipe, _ = setup
    s = pipe.session("alice")
    q = s.prepare(DECLARED)
    spent = _user_spent(s)
    with pytest.raises(ReleaseRefused, match="pass public_keys="):
        s.charge(q)
    with pytest.raises(ReleaseRefused, match="does not have 1 value"):
        s.charge(q, public_keys=[("a", "b")])
    with pytest.raises(ReleaseRefused, match="releases no public key set"):
        s.charge(s.prepare(SELECTION), public_keys=[("I10",)])
    assert _user_spent(s) == spent, "refused before the charge: free"


def test_errors_are_dpsql_errors_without_tracebacks_into_values(setup: tuple[Pipeline, Any]) -> None:
    """Whatever goes wrong inside the release (here an object whose int() explodes with the
    value in its message) comes out as a DPSQLError without the value or a chained cause."""

    class Evil(int):
        def __int__(self) -> int:
            raise ValueError(f"the secret is {SECRET}")

        def __index__(self) -> int:
            raise ValueError(f"the secret is {SECRET}")

    s, token, columns, _ = _charged(*setup, COUNT)
    with pytest.raises(DPSQLError) as e:
        s.release(token, columns, [(Evil(5),)])
    assert str(SECRET) not in str(e.value) and e.value.__cause__ is None and e.value.__context__ is None
