"""Several threads (the wire server's pool) share one catalog: answers stay per-session and correct."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from conftest import DATABASE

from dpsql.proxy.catalog import SyntheticCatalog
from dpsql.proxy.session_info import SessionInfo

QUERIES = [
    ("SELECT current_user, current_setting('application_name'), pg_backend_pid()", None),
    ("SELECT c.relname FROM pg_class c WHERE pg_table_is_visible(c.oid) ORDER BY 1", None),
    ("SELECT typname FROM pg_type WHERE oid = $1", ["23"]),
    ("SELECT usename, pid FROM pg_stat_activity", None),
    ("select version()", None),
]


def test_threads_get_their_own_session_values(catalog: SyntheticCatalog) -> None:
    def worker(i: int) -> list[str]:
        user = ("alice", "bob")[i % 2]
        info = SessionInfo(user=user, database=DATABASE, backend_pid=1000 + i)
        info.settings["application_name"] = f"app{i}"
        if i % 3 == 0:
            info.settings["search_path"] = "sales"
        errors = []
        for _ in range(40):
            r = catalog.execute(QUERIES[0][0], info)
            if r.rows != [(user, f"app{i}", 1000 + i)]:
                errors.append(f"identity {r.rows}")
            tables = [row[0] for row in catalog.execute(QUERIES[1][0], info).rows]
            if tables != (["orders"] if i % 3 == 0 else ["departments", "pg_events", "visits"]):
                errors.append(f"visible {tables}")
            if catalog.execute(QUERIES[2][0], info, QUERIES[2][1]).rows != [("int4",)]:
                errors.append("param")
            if catalog.execute(QUERIES[3][0], info).rows != [(user, 1000 + i)]:
                errors.append("activity")
            catalog.execute(QUERIES[4][0], info)
        return errors

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(worker, range(12)))
    assert results == [[] for _ in range(12)]
