"""SQLAlchemy against the server: the 2.x inspector (psycopg 3 and psycopg2 dialects), pandas.read_sql,
and the 1.4 inspector that Superset pins (run in its own virtualenv, ``.venv-sa14``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from compatlib import REPO, missing
from wirelib import DATABASE, PASSWORDS

from dpsql.proxy.server import Running

SA14_VENV = Path(os.environ.get("DPSQL_SA14_VENV", REPO / ".venv-sa14"))
SA14_SCRIPT = Path(__file__).with_name("sa14_inspect.py")


def _url(server: Running, driver: str) -> str:
    return f"postgresql+{driver}://alice:{PASSWORDS['alice']}@{server.host}:{server.port}/{DATABASE}"


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sqlalchemy2_inspector(compat_server: Running, driver: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(_url(compat_server, driver))
    try:
        insp = sa.inspect(engine)
        assert "public" in insp.get_schema_names()
        assert sorted(insp.get_table_names()) == ["departments", "patients", "visits"]
        cols = {c["name"]: c for c in insp.get_columns("visits")}
        assert set(cols) >= {"patient_id", "visit_date", "age", "cost", "department"}
        assert isinstance(cols["age"]["type"], sa.Integer) and isinstance(cols["cost"]["type"], sa.Float)
        assert isinstance(cols["visit_date"]["type"], sa.Date)
        assert insp.get_pk_constraint("visits")["constrained_columns"] == []
        assert insp.get_foreign_keys("visits") == []
        assert insp.get_indexes("visits") == []
        assert insp.get_view_names() == []
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT department, AVG(cost) AS mean FROM visits WHERE age > :a GROUP BY department"),
                                {"a": 20}).all()
            assert len(rows) == 8
            table = sa.Table("visits", sa.MetaData(), autoload_with=conn)
            q = sa.select(table.c.sex, sa.func.count().label("n")).group_by(table.c.sex)
            assert len(conn.execute(q).all()) == 2
    finally:
        engine.dispose()


def test_pandas_read_sql(compat_server: Running) -> None:
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(_url(compat_server, "psycopg"))
    try:
        df = pd.read_sql("SELECT department, COUNT(*) AS n, AVG(age) AS mean_age FROM visits GROUP BY department", engine)
        assert list(df.columns) == ["department", "n", "mean_age"] and len(df) == 8
        df = pd.read_sql_query(sa.text("SELECT name, floor FROM departments WHERE floor >= :f"), engine, params={"f": 1})
        assert len(df) > 0
    finally:
        engine.dispose()


def _sa14_python() -> Path:
    """The SQLAlchemy 1.4 virtualenv's python, built once if it is missing."""
    python = SA14_VENV / "bin" / "python"
    if python.exists():
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(SA14_VENV)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "sqlalchemy>=1.4,<2", "psycopg2-binary"], check=True,
                       capture_output=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as e:
        missing(f"a SQLAlchemy 1.4 virtualenv at {SA14_VENV} (could not build it: {e})")
    return python


def test_sqlalchemy14_inspector_as_superset_uses_it(compat_server: Running) -> None:
    python = _sa14_python()
    r = subprocess.run([str(python), str(SA14_SCRIPT), _url(compat_server, "psycopg2")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["version"].startswith("1.4")
    assert sorted(out["tables"]) == ["departments", "patients", "visits"]
    assert {"patient_id", "age", "cost"} <= set(out["columns"])
    assert out["pk"] == [] and out["fks"] == [] and out["indexes"] == []
    assert out["schemas"] and "public" in out["schemas"]
    assert out["databases"] == [DATABASE]
    assert out["rows"] == 8
