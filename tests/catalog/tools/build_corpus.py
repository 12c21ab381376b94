"""Dev tool: (re)build ``tests/catalog/corpus/*.sql`` from a PostgreSQL statement log and hand-rendered client SQL.

Not run by the test suite. Steps used for the stored corpus (PostgreSQL 15.18, psql 15.18, SQLAlchemy 2.1.9 and 1.4.54
with psycopg2 2.9 / psycopg 3.3, pgjdbc 42.5.5, asyncpg 0.32):

1. a scratch cluster with ``log_statement = 'all'`` and ``log_line_prefix = '%m [%p] %a: '``; database ``dpdb`` holds
   ``visits(patient_id int8, age int4, cost float8, department text, visit_date date)``, ``departments``,
   ``sales.orders``; database ``fulldb`` holds ``fullt``/``dep`` with keys, indexes, checks, comments, statistics.
2. each client runs with its own ``application_name`` (psql commands, psql tab completion through a pty, SQLAlchemy
   inspector, pgjdbc DatabaseMetaData…).
3. ``python build_corpus.py LOG DSN_DPDB DSN_FULLDB OUTDIR`` extracts the catalog statements per client, adds the
   statements of clients that can't run here (Metabase, Grafana, DBeaver, Tableau/psqlODBC, Superset: taken from their
   public sources and issue threads), replaces the OIDs and names of the capture tables by ``{{oid:schema.table}}``
   placeholders and the test policy's names, runs every statement on the real server and records the column names and
   types it returned (``-- columns:``). Hand-rendered statements live in ``tools/manual/*.sql``.

Statement files: ``-- @@ <name>`` starts a statement; ``-- params: [json]`` gives its parameters; ``-- columns:``
lists ``name:type`` as PostgreSQL returned them. Everything until the next ``-- @@`` is the SQL.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import psycopg2  # dev environment only

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \w+ \[\d+\] (?P<app>[^:]*): (?P<level>[A-Z]+):  (?P<rest>.*)$")
SKIP = re.compile(r"^\s*(begin|commit|rollback|show|set|savepoint|release|select 1::int4|select 'sad'|select patient_id|"
                  r"select customer_id|select '\[1,2\)')", re.I)

CLIENT_FILES = {  # application_name prefix -> corpus file and description
    "psql": ("psql15.sql", "psql 15.18 backslash commands (server_version 15 branches, same as 16)"),
    "psql_tab": ("psql15_tab_complete.sql", "psql 15.18 tab completion (driven through a pty: tables, schemas, columns, settings)"),
    "sa2_psycopg2": ("sqlalchemy2_psycopg2.sql", "SQLAlchemy 2.1.9 inspector + psycopg2 (client-side literals)"),
    "sa2_psycopg": ("sqlalchemy2_psycopg3.sql", "SQLAlchemy 2.1.9 inspector + psycopg 3 (server-side $n parameters)"),
    "sa14_psycopg2": ("sqlalchemy14.sql", "SQLAlchemy 1.4.54 inspector + psycopg2 (Superset's stack)"),
    "pgjdbc": ("pgjdbc.sql", "pgjdbc 42.5.5 DatabaseMetaData and ResultSetMetaData (DBeaver, Metabase, Tableau-JDBC)"),
    "asyncpg": ("asyncpg.sql", "asyncpg 0.32 (jit probe, INTRO_LOOKUP_TYPES type introspection)"),
}

MANUAL_DIR = Path(__file__).parent / "manual"  # statements of clients that cannot run here, from their public sources


def parse_manual(path: Path) -> tuple[str, list[tuple[str, str, list | None]]]:
    """A manual statement file: its description (first comment line) and its (name, sql, params)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    desc = lines[0].removeprefix("-- ")
    stmts: list[tuple[str, str, list | None]] = []
    name, params, body = None, None, []
    for line in [*lines[1:], "-- @@ <end>"]:
        if line.startswith("-- @@ "):
            if name is not None:
                stmts.append((name, "\n".join(body).strip(), params))
            name, params, body = line[6:].strip(), None, []
        elif name is not None and not body and line.startswith("-- params: "):
            params = json.loads(line[len("-- params: "):])
        elif name is not None:
            body.append(line)
    return desc, stmts


def parse_log(path: Path) -> list[dict]:
    """Statements of a log_statement=all log: [{app, sql, params}]."""
    out: list[dict] = []
    cur = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = LOG_LINE.match(line)
        if m:
            cur = None
            rest = m.group("rest")
            if m.group("level") == "LOG":
                mm = re.match(r"^(statement|execute [^:]+): (.*)$", rest)
                if mm:
                    cur = {"app": m.group("app"), "sql": mm.group(2), "params": None}
                    out.append(cur)
            elif m.group("level") == "DETAIL" and rest.startswith("parameters: ") and out:
                params = re.findall(r"\$(\d+) = (NULL|'(?:[^']|'')*')", rest[len("parameters: "):])
                out[-1]["params"] = [None if v == "NULL" else v[1:-1].replace("''", "'") for _, v in params]
        elif cur is not None:
            cur["sql"] += "\n" + (line[1:] if line.startswith("\t") else line)
    return out


def oid_map(dsn: str) -> dict[str, str]:
    """OID (text) -> qualified name of the capture tables."""
    con = psycopg2.connect(dsn)
    cur = con.cursor()
    cur.execute("SELECT c.oid::text, n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('public', 'sales') AND c.relkind = 'r'")
    return dict(cur.fetchall())


RENAME = {"public.fullt": "public.visits", "public.dep": "public.departments", "public.child": "public.departments"}


def placeholders(text: str, oids: dict[str, str]) -> str:
    """Replace capture-table OIDs by {{oid:...}} and the fulldb table names by the test policy's."""
    for oid, name in oids.items():
        text = re.sub(rf"(?<![0-9]){oid}(?![0-9])", "{{oid:" + RENAME.get(name, name) + "}}", text)
    text = re.sub(r"\^\(fullt\)\$", "^(visits)$", text)
    return re.sub(r"\^\(dep\)\$", "^(departments)$", text)


def resolve(text: str, oids: dict[str, str]) -> str:
    """The inverse of placeholders() for running on the capture server (dpdb)."""
    inv = {name: oid for oid, name in oids.items()}
    return re.sub(r"\{\{oid:([a-z_.]+)\}\}", lambda m: inv[m.group(1)], text)


def describe(cur, sql: str, params: list | None) -> str:
    """``name:type, ...`` of the statement's result on the real server."""
    q = re.sub(r"\$(\d+)", r"%(p\1)s", sql.replace("%", "%%")) if params else sql
    cur.execute("BEGIN")
    try:
        cur.execute(q, {f"p{i + 1}": v for i, v in enumerate(params)} if params else None)
        desc = cur.description or []
        types = {}
        if desc:
            cur2 = cur.connection.cursor()
            cur2.execute("SELECT oid::int, typname::text FROM pg_type WHERE oid = ANY(%s)", ([d.type_code for d in desc],))
            types = dict(cur2.fetchall())
        return ", ".join(f"{json.dumps(d.name)}:{types[d.type_code]}" for d in desc)
    finally:
        cur.execute("ROLLBACK")


def main(log: str, dsn: str, dsn_full: str, outdir: str) -> None:
    out = Path(outdir)
    oids = oid_map(dsn) | oid_map(dsn_full)
    dp_oids = oid_map(dsn)
    con = psycopg2.connect(dsn)
    con.autocommit = True
    cur = con.cursor()
    files: dict[str, tuple[str, list[tuple[str, str, list | None]]]] = {}
    counters: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    for st in parse_log(Path(log)):
        app = st["app"]
        key = next((k for k in sorted(CLIENT_FILES, key=len, reverse=True) if app.startswith(k)), None)
        if key is None or app == "psql" or SKIP.match(st["sql"]) or not st["sql"].strip():  # bare "psql": the setup session
            continue
        fname, desc = CLIENT_FILES[key]
        sql = placeholders(st["sql"].strip(), oids)
        params = [placeholders(p, oids) if p is not None else None for p in st["params"]] if st["params"] else None
        if (fname, sql + json.dumps(params)) in seen:
            continue
        seen.add((fname, sql + json.dumps(params)))
        label = app[len(key):].strip("_").replace("_", " ") or key
        counters[fname] = counters.get(fname, 0) + 1
        files.setdefault(fname, (desc, []))[1].append((f"{label} #{counters[fname]}", sql, params))
    for path in sorted(MANUAL_DIR.glob("*.sql")):
        files[path.name] = parse_manual(path)
    for fname, (desc, stmts) in files.items():
        lines = [f"-- {desc}", "-- Generated by tests/catalog/tools/build_corpus.py; `-- columns:` is what PostgreSQL 15 returned.", ""]
        for name, sql, params in stmts:
            real = resolve(sql, dp_oids)
            real_params = [resolve(p, dp_oids) if p is not None else None for p in params] if params else None
            cols = describe(cur, real, real_params)
            lines.append(f"-- @@ {name}")
            if params is not None:
                lines.append(f"-- params: {json.dumps(params)}")
            lines.append(f"-- columns: {cols}")
            lines.append(sql.rstrip())
            lines.append("")
        (out / fname).write_text("\n".join(lines), encoding="utf-8")
        print(fname, len(stmts))


if __name__ == "__main__":
    main(*sys.argv[1:5])
