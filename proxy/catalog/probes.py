"""Canned answers for the hottest probes, looked up before any parse.

Clients send the same few statements on every connection (``SELECT 1``, ``select version()``,
SQLAlchemy's ``select current_schema()`` and hstore probe, psqlODBC's large-object type probe,
Grafana's version and TimescaleDB probes). Each is keyed by its normalised text (lower case,
whitespace collapsed, trailing ``;`` removed) and answered from :class:`SessionInfo`. The answers
equal what the general path returns (tests compare them).

>>> normalize("  SELECT   1 ;")
'select 1'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dpsql.proxy.catalog import session_values as sv
from dpsql.proxy.catalog.objects import Objects
from dpsql.proxy.catalog.render import VERSION
from dpsql.proxy.session_info import SessionInfo

Rows = Callable[[SessionInfo, Objects], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class Probe:
    """A canned answer: column names, PostgreSQL types and a function of the session giving the rows."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: Rows


def normalize(sql: str) -> str:
    """Lower-case, collapse whitespace, drop trailing semicolons."""
    return " ".join(sql.lower().split()).rstrip("; ").strip()


def probe(sql: str) -> Probe | None:
    """The canned answer for ``sql``, if it is one of the probes (cheap for long statements)."""
    return PROBES.get(normalize(sql)) if len(sql) <= MAX_PROBE_LENGTH else None


def _version_num(info: SessionInfo, _: Objects) -> list[tuple[Any, ...]]:
    return [(int(sv.setting(info, "server_version_num") or "0") // 100,)]


_NONE: Rows = lambda info, ob: []  # noqa: E731

PROBES: dict[str, Probe] = {
    "select 1": Probe(("?column?",), ("int4",), lambda info, ob: [(1,)]),
    "select version()": Probe(("version",), ("text",), lambda info, ob: [(VERSION,)]),
    "select pg_catalog.version()": Probe(("version",), ("text",), lambda info, ob: [(VERSION,)]),
    "select current_schema()": Probe(("current_schema",), ("name",), lambda info, ob: [(sv.current_schema(info, ob),)]),
    "select current_schema(),session_user": Probe(("current_schema", "session_user"), ("name", "name"),
                                                  lambda info, ob: [(sv.current_schema(info, ob), info.user)]),
    "select current_schema(), session_user": Probe(("current_schema", "session_user"), ("name", "name"),
                                                   lambda info, ob: [(sv.current_schema(info, ob), info.user)]),
    "select current_database()": Probe(("current_database",), ("name",), lambda info, ob: [(info.database,)]),
    "select current_user": Probe(("current_user",), ("name",), lambda info, ob: [(info.user,)]),
    "select session_user": Probe(("session_user",), ("name",), lambda info, ob: [(info.user,)]),
    "select pg_backend_pid()": Probe(("pg_backend_pid",), ("int4",), lambda info, ob: [(info.backend_pid,)]),
    "select pg_client_encoding()": Probe(("pg_client_encoding",), ("name",),
                                         lambda info, ob: [(sv.setting(info, "client_encoding"),)]),
    # SQLAlchemy (psycopg2) hstore probe: no hstore type here.
    "select t.oid, typarray from pg_type t join pg_namespace ns on typnamespace = ns.oid where typname = 'hstore'":
        Probe(("oid", "typarray"), ("oid", "oid"), _NONE),
    # psqlODBC (Tableau) large-object type probe.
    "select oid, typbasetype from pg_type where typname = 'lo'": Probe(("oid", "typbasetype"), ("oid", "oid"), _NONE),
    # Grafana data source probes.
    "select current_setting('server_version_num')::int/100 as version": Probe(("version",), ("int4",), _version_num),
    "select extversion from pg_extension where extname = 'timescaledb'": Probe(("extversion",), ("text",), _NONE),
    # Superset's database list.
    "select datname from pg_database where datistemplate = false": Probe(("datname",), ("name",),
                                                                        lambda info, ob: [(ob.database,)]),
}
MAX_PROBE_LENGTH = 2 * max(len(k) for k in PROBES)  # room for extra whitespace
