"""A real Apache Superset 6.1 against dpsql: a database, a dataset, and a dashboard of four charts
(a big number, a bar chart with a time-range filter, a monthly line with a series limit, a
server-paginated table); every chart's data comes back through Superset's ``/api/v1/chart/data``,
and reloading the dashboard charges nothing (replay).

Superset pins SQLAlchemy 1.4, so it lives in its own venv outside the checkout
(``~/.cache/dpsql-superset-venv``, made once per machine by ``.ci/run``); it drives dpsql from
``tests/compat/superset/driver.py`` in a subprocess. Skipped only when that venv is missing and CI
is unset."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from wirelib import DATABASE, PASSWORDS, write_policy

from dpsql.proxy.server import Running, start_in_thread

VENV = Path(os.environ.get("DPSQL_SUPERSET_VENV", Path.home() / ".cache" / "dpsql-superset-venv"))
PYTHON = VENV / "bin" / "python"
DRIVER = Path(__file__).parent / "superset" / "driver.py"

if not PYTHON.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"CI is set but the Superset venv {VENV} is missing (.ci/run makes it)")
    pytest.skip(f"no Superset venv at {VENV} (.ci/run makes it)", allow_module_level=True)


@pytest.fixture(scope="module")
def superset_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server of its own over demo-sized data (a monthly series of the top diagnoses needs enough
    patients per month for partition selection); Superset cannot SET dp.epsilon, so the account's
    default is the dashboard's ε."""
    from dpsql.examples.hospital import generate

    data = tmp_path_factory.mktemp("superset-data")
    generate(data, patients=50_000, visits=250_000)
    policy = write_policy(tmp_path_factory.mktemp("superset-policy"), data / "hospital.duckdb", default_epsilon=2.0,
                          limits={"max_connections": 100})
    running = start_in_thread(policy, listen="127.0.0.1:0", catalog="auto")
    yield running
    running.stop()


def _drive(server: Running) -> dict[str, Any]:
    uri = f"postgresql+psycopg2://bob:{PASSWORDS['bob']}@{server.host}:{server.port}/{DATABASE}"
    done = subprocess.run([str(PYTHON), str(DRIVER), uri, str(VENV / "dpsql-state")], capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("DPSQL-RESULT ")]
    assert lines, f"the driver printed no result (exit {done.returncode}): {done.stderr[-3000:]}"
    return json.loads(lines[-1][len("DPSQL-RESULT "):])


def _user_rho(server: Running) -> float:
    import psycopg
    from wirelib import dsn

    with psycopg.connect(dsn(server.host, server.port, user="bob"), autocommit=True) as conn:
        return float(conn.execute("SELECT rho_spent FROM dpsql.budget WHERE scope = 'user'").fetchone()[0])  # type: ignore[index]


def test_superset_dashboard_answers_and_reloads_free(superset_server: Running) -> None:
    first = _drive(superset_server)
    assert first["database"] in (200, 201) and first["dataset"] == 201 and first["dashboard"] == 201
    assert first["temporal_columns"] == ["visit_date"]  # the catalog says visit_date is a DATE
    for name, chart in first["load"].items():
        assert chart["http"] == 200 and not chart["errors"], (name, chart)
        assert chart["rows"] and all(n is not None and n > 0 for n in chart["rows"]), (name, chart)
    sent = " ".join(q for chart in first["load"].values() for q in chart["query"])
    assert "TO_DATE('2023-01-01', 'YYYY-MM-DD')" in sent  # the time-range filter, as Superset writes it
    assert "AS series_limit ON" in sent  # the series limit: a staged release
    spent = _user_rho(superset_server)
    assert spent > 0
    again = _drive(superset_server)  # the same dashboard loaded again: every chart replayed
    assert all(c["http"] == 200 and not c["errors"] for c in again["load"].values()), again["load"]
    assert _user_rho(superset_server) == pytest.approx(spent)
