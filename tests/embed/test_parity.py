"""The embedding pipeline gives the same answers and charges as the server's engine (the path of
``dpsql query``) for every shape of the parity suite, on DuckDB with a SQLite ledger.

Noise is replaced by zero noise in both paths (``embedlib.zero_noise``: dpsql has no seeded
mode), so answers must agree exactly: any difference is a difference in rewriting, calibration,
key handling, ordering or post-processing. The noise plans (hence the charges) are compared as
objects, and the ledgers' spent sums after every query. Deterministic: no false failures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from embedlib import parity_queries, session_runner, zero_noise

from dpsql.embed import Pipeline
from dpsql.policy import load_policy
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.engine import Engine
from dpsql.proxy.timing import TimingShield

QUERIES = parity_queries()


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory, hospital: Path) -> Iterator[tuple[Engine, Pipeline]]:
    """An engine and a pipeline over the same policy text (separate SQLite ledgers) and the same
    schema; the pipeline's 'engine' is a session of the engine's DuckDB backend."""
    from embedlib import policy_text

    tmp = tmp_path_factory.mktemp("embed-parity")
    policies = []
    for name in ("engine", "embed"):
        p = tmp / f"{name}.toml"
        p.write_text(policy_text(f'duckdb = "{hospital}"', f'path = "{tmp / (name + ".sqlite")}"', epsilon=1e6, delta=1e-2))
        policies.append(load_policy(p))
    backend = DuckDBBackend(policies[0])
    engine = Engine(policies[0], backend, shield=TimingShield(enabled=False))
    pipe = Pipeline(policies[1], dialect="duckdb", schema=backend.describe(), unique_columns=backend.unique_columns(),
                    shield=TimingShield(enabled=False))
    yield engine, pipe
    pipe.close()
    engine.close()


def _spent(statuses: list) -> dict[str, tuple[Fraction, Fraction]]:
    """Exact spent (ρ under zcdp, else ε as reported) and δ of each filter."""
    return {s.scope: (s.spent_rho if s.spent_rho is not None else Fraction(s.spent_epsilon), s.spent_delta) for s in statuses}


def _charged(before: dict[str, tuple[Fraction, Fraction]], after: list) -> dict[str, tuple[Fraction, Fraction]]:
    """What one query added to each filter (exact)."""
    zero = (Fraction(0), Fraction(0))
    return {k: (v[0] - before.get(k, zero)[0], v[1] - before.get(k, zero)[1]) for k, v in _spent(after).items()}


@pytest.mark.parametrize("name", QUERIES)
@pytest.mark.parametrize("epsilon", ["1", "0.25"])
def test_same_answer_and_charge_as_the_engine(paths: tuple[Engine, Pipeline], name: str, epsilon: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    engine, pipe = paths
    zero_noise(monkeypatch)
    sql = QUERIES[name]
    es = engine.session("alice")
    es.execute(f"SET dp.epsilon = {epsilon}")
    ps = pipe.session("alice")
    ps.set("dp.epsilon", epsilon)
    before = (_spent(es.budget()), _spent(ps.budget()))
    with engine.backend.session() as caller:
        _, noise = es.plan(sql)
        prepared = ps.prepare(sql)
        assert prepared.noise == noise, "the noise plan (and so the charge) must be the engine's"
        assert prepared.sql == engine.rewrite(sql).sql
        expected = es.execute(sql)
        got = ps.execute(sql, session_runner(caller))
    assert got.columns == expected.columns and got.types == expected.types
    assert got.rows == expected.rows
    assert got.cost == expected.cost
    assert _charged(before[1], ps.budget()) == _charged(before[0], es.budget()), "the same charge in every filter"


@pytest.mark.parametrize("name", ["declared_keys_avg", "partition_selection", "having_order_limit", "public_join_sum"])
def test_step_by_step_equals_one_call(paths: tuple[Engine, Pipeline], name: str, monkeypatch: pytest.MonkeyPatch,
                                      write_policy: Callable[..., Path]) -> None:
    """prepare → charge(public_keys) → run → release gives what execute() gives."""
    _, pipe = paths
    zero_noise(monkeypatch)
    sql = QUERIES[name]
    s = pipe.session("bob")
    with paths[0].backend.session() as caller:
        run = session_runner(caller)
        one = s.execute(sql, run)
        q = s.prepare(sql)
        keys = list(run(q.public_keys_sql)[1]) if q.public_keys_sql else None
        token = s.charge(q, public_keys=keys)
        columns, rows = run(token.sql)
        assert tuple(c.lower() for c in columns) == token.expected_columns
        two = s.release(token, columns, rows)
    assert (two.columns, two.types, two.rows) == (one.columns, one.types, one.rows)
