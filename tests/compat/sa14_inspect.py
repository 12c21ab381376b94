"""Run under SQLAlchemy 1.4 + psycopg2 (Superset's stack): ``python sa14_inspect.py URL``.

Does what Superset does when a database is added and browsed (engine-spec probes, inspector
calls, a query) and prints one JSON line with what it saw."""

from __future__ import annotations

import json
import sys

import sqlalchemy as sa


def main(url: str) -> None:
    engine = sa.create_engine(url)
    insp = sa.inspect(engine)
    out: dict[str, object] = {"version": sa.__version__}
    out["schemas"] = insp.get_schema_names()
    out["tables"] = insp.get_table_names(schema="public")
    out["views"] = insp.get_view_names(schema="public")
    out["columns"] = [c["name"] for c in insp.get_columns("visits", schema="public")]
    out["pk"] = insp.get_pk_constraint("visits", schema="public")["constrained_columns"]
    out["fks"] = insp.get_foreign_keys("visits", schema="public")
    out["indexes"] = insp.get_indexes("visits", schema="public")
    with engine.connect() as conn:
        # superset/db_engine_specs/postgres.py
        out["databases"] = [r[0] for r in conn.execute(sa.text("SELECT datname FROM pg_database WHERE datistemplate = false"))]
        conn.execute(sa.text('set search_path = "public"'))
        out["pid"] = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        rows = conn.execute(sa.text("SELECT department, COUNT(*) AS n FROM visits GROUP BY department")).fetchall()
        out["rows"] = len(rows)
    engine.dispose()
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
