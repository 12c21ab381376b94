"""Drive a real Apache Superset (its own venv: SQLAlchemy 1.4) against a running dpsql.

Run by tests/compat/test_superset.py with the Superset venv's python:
``driver.py URI STATE_DIR`` → prints one JSON object: the database, dataset and dashboard it made
(or reused), and per chart of the dashboard its HTTP status, row counts, errors and the SQL sent.
Superset's metadata lives in STATE_DIR (SQLite, made on first use). Everything goes through
Superset's own REST API (``/api/v1/...``), in-process through Flask's test client, so the SQL that
reaches dpsql is exactly what Superset generates for these charts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def _prepare(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    config = state / "superset_config.py"
    config.write_text(
        'SECRET_KEY = "dpsql-compat-test-secret-0123456789abcdef"\n'
        f'SQLALCHEMY_DATABASE_URI = "sqlite:///{state / "superset.db"}"\n'
        "WTF_CSRF_ENABLED = False\n"
        'DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}\n'  # Superset's default: every load asks the database
    )
    os.environ["SUPERSET_CONFIG_PATH"] = str(config)
    if not (state / "ready").exists():
        superset = str(Path(sys.executable).parent / "superset")
        for args in (["db", "upgrade"], ["fab", "create-admin", "--username", "admin", "--firstname", "a", "--lastname", "b",
                                          "--email", "admin@example.com", "--password", "admin"], ["init"]):
            subprocess.run([superset, *args], check=True, capture_output=True, env=os.environ)
        (state / "ready").write_text("ok")


def main() -> int:
    uri, state = sys.argv[1], Path(sys.argv[2])
    _prepare(state)
    from superset.app import create_app

    app = create_app()
    out: dict[str, Any] = {}
    with app.app_context():
        client = app.test_client()
        client.post("/login/", data={"username": "admin", "password": "admin"})  # the session cookie: the current user
        login = client.post("/api/v1/security/login", json={"username": "admin", "password": "admin", "provider": "db"})
        headers = {"Authorization": f"Bearer {login.json['access_token']}"}

        def call(method: str, path: str, body: Any = None) -> Any:
            r = client.open(path, method=method, json=body, headers=headers)
            return r.status_code, r.json

        # one database entry and one dataset, made on the first run and pointed at this run's server after
        status, listing = call("GET", "/api/v1/database/?q=(page_size:100)")
        existing = [d["id"] for d in (listing or {}).get("result", []) if d["database_name"] == "dpsql"]
        if existing:
            status, db = call("PUT", f"/api/v1/database/{existing[0]}", {"sqlalchemy_uri": uri})
            db = {"id": existing[0]} if status == 200 else db
        else:
            status, db = call("POST", "/api/v1/database/", {"database_name": "dpsql", "sqlalchemy_uri": uri,
                                                              "expose_in_sqllab": True})
        out["database"] = status
        if status not in (200, 201):
            out["database_error"] = db
            print("DPSQL-RESULT " + json.dumps(out, default=str))
            return 1
        status, listing = call("GET", "/api/v1/dataset/?q=(page_size:100)")
        found = [d["id"] for d in (listing or {}).get("result", []) if d["table_name"] == "visits"]
        if found:
            status, ds = 201, {"id": found[0]}
            call("PUT", f"/api/v1/dataset/{found[0]}/refresh")
        else:
            status, ds = call("POST", "/api/v1/dataset/", {"database": db["id"], "schema": "public", "table_name": "visits"})
        out["dataset"] = status
        if status != 201:
            out["dataset_error"] = ds
            print("DPSQL-RESULT " + json.dumps(out, default=str))
            return 1
        ds_id = ds["id"]
        status, cols = call("GET", f"/api/v1/dataset/{ds_id}")
        out["temporal_columns"] = sorted(c["column_name"] for c in cols["result"]["columns"] if c.get("is_dttm"))
        time_filter = {"col": "visit_date", "op": "TEMPORAL_RANGE", "val": "2023-01-01 : 2024-01-01"}
        charts = {
            "big_number": [{"metrics": ["count"], "row_limit": 50000}],
            "bar_by_department": [{"columns": ["department"], "metrics": ["count"], "filters": [time_filter],
                                   "orderby": [["count", False]], "row_limit": 100}],
            "monthly_line_series_limit": [{
                "columns": [{"columnType": "BASE_AXIS", "sqlExpression": "visit_date", "label": "visit_date",
                             "timeGrain": "P1M", "expressionType": "SQL"}, "diagnosis"],
                "metrics": ["count"], "series_columns": ["diagnosis"], "series_limit": 5, "series_limit_metric": "count",
                "orderby": [["count", False]], "filters": [time_filter], "row_limit": 10000}],
            "paginated_table": [
                {"columns": ["diagnosis"], "metrics": [{"expressionType": "SQL", "sqlExpression": "AVG(cost)", "label": "AVG(cost)"}],
                 "orderby": [[{"expressionType": "SQL", "sqlExpression": "AVG(cost)", "label": "AVG(cost)"}, False]],
                 "row_limit": 10, "row_offset": 0},
                {"columns": ["diagnosis"], "metrics": [{"expressionType": "SQL", "sqlExpression": "AVG(cost)", "label": "AVG(cost)"}],
                 "is_rowcount": True, "row_limit": 1000}],
        }
        status, dash = call("POST", "/api/v1/dashboard/", {"dashboard_title": f"dpsql {os.getpid()}", "published": True})
        out["dashboard"] = status
        chart_ids = {}
        for name, queries in charts.items():
            context = {"datasource": {"id": ds_id, "type": "table"}, "queries": queries, "result_format": "json",
                       "result_type": "full", "force": False}
            status, chart = call("POST", "/api/v1/chart/", {
                "slice_name": name, "viz_type": "table", "datasource_id": ds_id, "datasource_type": "table",
                "query_context": json.dumps(context), "params": json.dumps({"viz_type": "table"}),
                "dashboards": [dash["id"]] if out["dashboard"] == 201 else []})
            chart_ids[name] = chart.get("id") if status == 201 else None
        results = {}
        for name, pk in chart_ids.items():  # what a dashboard load asks: each saved chart's data
            status, body = call("GET", f"/api/v1/chart/{pk}/data/?format=json&type=full")
            parts = (body or {}).get("result") or []
            results[name] = {"http": status, "rows": [p.get("rowcount") for p in parts],
                             "errors": [p.get("error") for p in parts if p.get("error")] or (body or {}).get("message"),
                             "query": [p.get("query") for p in parts][:1]}
        out["load"] = results
        out["chart_ids"] = chart_ids
    print("DPSQL-RESULT " + json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
