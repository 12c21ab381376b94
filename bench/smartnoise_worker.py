"""The SmartNoise SQL side of ``bench/compare_smartnoise.py``; runs in ``bench/.venv-smartnoise``.

It is a subprocess that reads one JSON request per line on stdin and writes one JSON reply per line
on the stdout it was started with (anything SmartNoise or its dependencies print goes to stderr).
It imports nothing from dpsql: the two systems never share a process, an interpreter or packages.

Requests (``op``):

* ``open`` — register a data source ``id``: ``{"csv": path}`` (SmartNoise's pandas reader, which
  copies the frame into an in-memory SQLite database) or ``{"duckdb": path}`` (SmartNoise's
  PostgreSQL-dialect reader over a DuckDB connection, see :class:`DuckDBConnection`), with the
  SmartNoise metadata as a dict (``metadata``) or a YAML file (``metadata_file``), its table keys
  overridden by ``options`` and its one table renamed to ``table_name`` if given. The pandas reader
  can also load a DuckDB table (``{"duckdb_table": [path, table]}``). Replies with the load time
  and the metadata used.
* ``cost`` — the mechanisms SmartNoise would use for ``sql`` at per-statistic ``epsilon`` and
  ``delta``: their count, the sum of their (ε, δ), and SmartNoise's own odometer reading.
* ``run`` — execute ``sql`` ``runs`` times with ``Privacy(epsilon, delta)``; ``noise: false``
  replaces every mechanism's release by the identity (the exact *bounded* answer: same rewrite,
  clamping and per-id sampling, no noise; dimension censoring is switched off for it). Replies with
  the result rows of each run (first row: column names) and each run's wall time.
* ``compose`` — the per-query ε SmartNoise's odometer allows for ``k`` queries within a total budget.
* ``time`` — wall times of ``reader.execute(sql)`` (end to end) and of the parse + rewrite alone
  (``PrivateReader._rewrite``, which also builds and calibrates the mechanisms).

Per-query options that SmartNoise reads from the metadata (``censor_dims``, ``clamp_counts``,
``max_ids``, ...) are applied by copying the source's metadata dict and overriding the table's
keys with ``options``.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import json
import math
import os
import re
import sys
import time
import traceback
import warnings
from typing import Any

_PROTO = os.fdopen(os.dup(1), "w", buffering=1)  # replies; fd 1 itself goes to stderr below
os.dup2(2, 1)
sys.stdout = sys.stderr
warnings.filterwarnings("ignore")


_WINDOW = re.compile(r"ROW_NUMBER \( \) OVER \( PARTITION BY (.+?) ORDER BY RANDOM \( \) \)")


def duckdb_sql(sql: str) -> str:
    """SmartNoise's SQL made acceptable to DuckDB, which refuses a volatile window ORDER BY
    (``ROW_NUMBER() OVER (PARTITION BY id ORDER BY RANDOM())``, its per-id reservoir sample): the
    random sort key is drawn one level down, as a column of the subquery the window reads.

    >>> print(duckdb_sql("SELECT *, ROW_NUMBER ( ) OVER ( PARTITION BY pid ORDER BY RANDOM ( ) ) AS row_num "
    ...                  "FROM ( SELECT pid AS pid FROM t ) AS clamped"))
    SELECT *, ROW_NUMBER() OVER (PARTITION BY pid ORDER BY __sn_random) AS row_num FROM (SELECT *, RANDOM() AS __sn_random \
FROM ( SELECT pid AS pid FROM t ) AS clamped) AS clamped
    """
    m = _WINDOW.search(sql)
    if m is None:
        return sql
    start = sql.index("FROM (", m.end())
    depth, i = 0, start + len("FROM ")
    while True:
        depth += {"(": 1, ")": -1}.get(sql[i], 0)
        i += 1
        if depth == 0:
            break
    alias = re.match(r" AS (\w+)", sql[i:])
    if alias is None:
        raise ValueError("unexpected SmartNoise SQL shape")
    end = i + alias.end()
    inner = sql[start + len("FROM ") : i]
    return (
        sql[: m.start()]
        + f"ROW_NUMBER() OVER (PARTITION BY {m.group(1)} ORDER BY __sn_random)"
        + sql[m.end() : start]
        + f"FROM (SELECT *, RANDOM() AS __sn_random FROM {inner} AS {alias.group(1)}) AS {alias.group(1)}"
        + sql[end:]
    )


class _Cursor:
    """The slice of a DB-API cursor that snsql's PostgresReader uses, over a DuckDB cursor."""

    def __init__(self, con: Any) -> None:
        self._con = con
        self.description: Any = None
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str) -> None:
        cur = self._con.execute(duckdb_sql(sql))
        self.description = cur.description
        self._rows = cur.fetchall() if cur.description is not None else []

    def __iter__(self) -> Any:
        return iter(self._rows)


class DuckDBConnection:
    """A DuckDB connection shaped like psycopg2's for snsql's PostgresReader (``cursor()``,
    ``commit()``, ``rollback()``). SmartNoise has no DuckDB reader; its PostgreSQL dialect (CASE
    clamps, COUNT(DISTINCT), ROW_NUMBER over RANDOM() once :func:`duckdb_sql` has moved the random
    key into a subquery) runs on DuckDB, and the benchmark checks that the exact (noise-off) answers
    match those of the pandas reader on PUMS."""

    def __init__(self, path: str, threads: int) -> None:
        import duckdb

        self._con = duckdb.connect(path, read_only=True, config={"threads": threads})

    def cursor(self) -> _Cursor:
        return _Cursor(self._con)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


SOURCES: dict[str, tuple[Any, dict[str, Any]]] = {}


def _metadata(meta: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with every table's keys overridden by ``options``. With ``row_privacy: True`` the
    id column loses ``private_id`` (SmartNoise refuses both at once): each row is one person,
    which is what a unique id means."""
    out = copy.deepcopy(meta)
    for collection in out.values():
        for schema in collection.values():
            for table in schema.values():
                table.update(options)
                if options.get("row_privacy"):
                    for col in table.values():
                        if isinstance(col, dict):
                            col.pop("private_id", None)
    return out


def _privacy(epsilon: float, delta: float, mechanism: str) -> Any:
    from snsql import Privacy
    from snsql.sql.privacy import Mechanism, Mechanisms, Stat

    mechs = Mechanisms()
    if mechanism == "gaussian":
        for stat in (Stat.count, Stat.sum_int, Stat.sum_large_int, Stat.sum_float, Stat.threshold):
            mechs.map[stat] = Mechanism.gaussian
    return Privacy(epsilon=epsilon, delta=delta, mechanisms=mechs)


def _reader(req: dict[str, Any]) -> Any:
    from snsql.sql.private_reader import PrivateReader

    base, meta = SOURCES[req["source"]]
    privacy = _privacy(req["epsilon"], req["delta"], req.get("mechanism", "laplace"))
    return PrivateReader(base, _metadata(meta, req.get("options", {})), privacy=privacy)


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    if hasattr(v, "item"):  # numpy scalar
        return _plain(v.item())
    return str(v)


def op_open(req: dict[str, Any]) -> dict[str, Any]:
    from snsql.sql.reader.pandas import PandasReader
    from snsql.sql.reader.postgres import PostgresReader

    t0 = time.perf_counter()
    meta = req.get("metadata")
    if meta is None:
        import yaml

        with open(req["metadata_file"], encoding="utf-8") as f:
            meta = yaml.safe_load(f)
    meta = _metadata(meta, req.get("options", {}))
    if req.get("table_name"):
        (collection, schemas), = meta.items()
        (spec,) = [t for tables in schemas.values() for t in tables.values()]
        schema, table = req["table_name"].split(".")
        meta = {collection: {schema: {table: spec}}}
    if "csv" in req or "duckdb_table" in req:
        import pandas as pd

        if "csv" in req:
            df = pd.read_csv(req["csv"])
        else:
            import duckdb

            path, table = req["duckdb_table"]
            con = duckdb.connect(path, read_only=True, config={"threads": int(req.get("threads", 2))})
            df = con.execute(f"SELECT * FROM {table}").df()
            con.close()
        reader = PandasReader(df, meta)
        kind = "pandas (in-memory SQLite)"
    else:
        reader = PostgresReader(conn=DuckDBConnection(req["duckdb"], int(req.get("threads", 2))))
        kind = "DuckDB through the PostgreSQL reader"
    SOURCES[req["id"]] = (reader, meta)
    return {"seconds": time.perf_counter() - t0, "reader": kind, "metadata": meta}


def op_cost(req: dict[str, Any]) -> dict[str, Any]:
    reader = _reader(req)
    costs = [c for c in reader._get_mechanism_costs(req["sql"]) if c]
    eps_sum = float(sum(c[0] for c in costs))
    delta_sum = float(sum(c[1] for c in costs))
    odo = reader.get_privacy_cost(req["sql"])
    return {"mechanisms": len(costs), "epsilon_sum": eps_sum, "delta_sum": delta_sum, "odometer": [float(odo[0]), float(odo[1])]}


def _identity_release(self: Any, vals: Any) -> Any:
    return [float(v) for v in vals]


def op_run(req: dict[str, Any]) -> dict[str, Any]:
    from snsql.sql._mechanisms.gaussian import Gaussian
    from snsql.sql._mechanisms.laplace import Laplace

    noise = req.get("noise", True)
    if not noise:
        req = {**req, "options": {**req.get("options", {}), "censor_dims": False}}
    reader = _reader(req)
    saved = (Laplace.release, Gaussian.release)
    if not noise:
        Laplace.release = Gaussian.release = _identity_release  # type: ignore[method-assign]
    results: list[Any] = []
    seconds: list[float] = []
    try:
        for _ in range(int(req.get("runs", 1))):
            t0 = time.perf_counter()
            try:
                rows = reader.execute(req["sql"])
                results.append([[_plain(v) for v in r] for r in rows])
            except Exception as e:  # recorded, not fatal: the table shows it
                results.append({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]})
            seconds.append(time.perf_counter() - t0)
    finally:
        Laplace.release, Gaussian.release = saved  # type: ignore[method-assign]
    return {"results": results, "seconds": seconds}


def op_time(req: dict[str, Any]) -> dict[str, Any]:
    reader = _reader(req)
    sql = req["sql"]
    out: dict[str, Any] = {}
    try:
        reader.execute(sql)  # warm-up
        e2e = []
        for _ in range(int(req.get("repeat", 5))):
            t0 = time.perf_counter()
            reader.execute(sql)
            e2e.append(time.perf_counter() - t0)
        out["e2e"] = e2e
        rw = []
        for _ in range(int(req.get("rewrite_repeat", 20))):
            t0 = time.perf_counter()
            reader._rewrite(sql)
            rw.append(time.perf_counter() - t0)
        out["rewrite"] = rw
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    return out


def op_compose(req: dict[str, Any]) -> dict[str, Any]:
    """The largest per-query ε such that SmartNoise's own odometer (OdometerHeterogeneous: Kairouz et
    al.'s heterogeneous composition, with tolerance δ/2) reports at most (epsilon, delta) for ``k``
    pure-ε queries of one mechanism each."""
    from snsql import Privacy
    from snsql.sql.odometer import OdometerHeterogeneous

    k, eps_b, delta_b = int(req["k"]), float(req["epsilon"]), float(req["delta"])

    def spent(eps_q: float) -> tuple[float, float]:
        odo = OdometerHeterogeneous(Privacy(epsilon=eps_q, delta=delta_b))
        for _ in range(k):
            odo.spend(Privacy(epsilon=eps_q, delta=0.0))
        e, d = odo.spent
        return float(e), float(d)

    lo, hi = 0.0, eps_b
    for _ in range(60):
        mid = (lo + hi) / 2
        e, d = spent(mid)
        if e <= eps_b and d <= delta_b:
            lo = mid
        else:
            hi = mid
    return {"epsilon_per_query": lo, "spent": list(spent(lo))}


def op_version(req: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import version

    out = {}
    for pkg in ("smartnoise-sql", "opendp", "pandas", "SQLAlchemy", "duckdb"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = None
    import sqlite3

    out["sqlite"] = sqlite3.sqlite_version
    out["python"] = sys.version.split()[0]
    return out


OPS = {"open": op_open, "cost": op_cost, "run": op_run, "time": op_time, "compose": op_compose, "version": op_version}


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            reply = {"ok": True, **OPS[req["op"]](req)}
        except Exception as e:
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
        _PROTO.write(json.dumps(reply) + "\n")
        _PROTO.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
