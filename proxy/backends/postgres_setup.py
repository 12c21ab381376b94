"""Checking an upstream PostgreSQL before :class:`~dpsql.proxy.backends.postgres.PostgresBackend`
serves it (security.md R27, R28), and reading the policy tables' columns from the catalog.

At start-up, on one connection of the upstream role, :func:`inspect_upstream` refuses to serve
(PolicyError naming the policy key) when:

* the role is a superuser, or may bypass row-level security;
* a policy table is missing, is file-mapped (only the DuckDB backend reads files), or the role
  lacks USAGE on its schema or SELECT on it;
* the role can write a policy table (INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES or TRIGGER);
* the role, or every role (``PUBLIC``), may CREATE objects in a schema of the pinned search path
  or of a policy table: a function planted there could shadow a built-in one
  (the CVE-2018-1058 class).

It warns (logger ``dpsql.backend``) when the role's ``default_transaction_read_only`` is off;
every statement runs in a read-only transaction regardless. Only catalog metadata is read,
never a row of a policy table.
"""

from __future__ import annotations

import logging
from typing import Any

from dpsql.errors import PolicyError
from dpsql.policy import Policy

_log = logging.getLogger("dpsql.backend")

#: the search path every statement runs with (SET LOCAL), pg_catalog first
SEARCH_PATH = ("pg_catalog", "public")

_WRITE_PRIVILEGES = "INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"


async def inspect_upstream(conn: Any, policy: Policy) -> dict[str, list[tuple[str, str]]]:
    """Check the upstream role and the policy tables (see the module docstring) and return each
    table's ``(column, pg_type)`` list in source order, keyed like ``policy.tables``.

    ``conn`` is an asyncpg connection of the upstream role. Raises PolicyError."""
    fname = str(policy.file)
    role = await conn.fetchrow(
        "SELECT current_user AS name, r.rolsuper, r.rolbypassrls, current_database() AS db, "
        "current_setting('default_transaction_read_only') AS ro "
        "FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
    )
    who = role["name"]
    if role["rolsuper"] or role["rolbypassrls"]:
        what = "a superuser" if role["rolsuper"] else "allowed to bypass row-level security"
        raise PolicyError(fname, "source.postgres", f"the upstream role {who!r} is {what}; dpsql needs a role that can only "
                          "SELECT the policy tables (see README: Upstream PostgreSQL)")
    if role["ro"] != "on":
        _log.warning("upstream role %r has default_transaction_read_only = off; dpsql runs every statement READ ONLY anyway, "
                     "but set ALTER ROLE %s SET default_transaction_read_only = on", who, who)

    schemas = set(SEARCH_PATH)
    described: dict[str, list[tuple[str, str]]] = {}
    for qname, tp in policy.tables.items():
        key = f"tables.{tp.name}"
        if tp.file is not None:
            raise PolicyError(fname, f"{key}.file", "file-mapped tables are served only by the DuckDB backend; "
                              "load the file into the upstream PostgreSQL instead")
        schemas.add(tp.schema)
        rel = await conn.fetchrow(
            "SELECT c.oid, c.relkind, has_schema_privilege(n.oid, 'USAGE') AS usage, "
            "has_table_privilege(c.oid, 'SELECT') AS can_select, "
            f"has_table_privilege(c.oid, '{_WRITE_PRIVILEGES}') AS can_write "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'v', 'm', 'p', 'f')",
            tp.schema,
            tp.table,
        )
        if rel is None:
            raise PolicyError(fname, key, f"table {tp.qualified} is not in the PostgreSQL database {role['db']!r}")
        if not rel["usage"]:
            raise PolicyError(fname, key, f"the upstream role {who!r} lacks USAGE on schema {tp.schema!r}")
        if not rel["can_select"]:
            raise PolicyError(fname, key, f"the upstream role {who!r} lacks SELECT on {tp.qualified}")
        if rel["can_write"]:
            raise PolicyError(fname, key, f"the upstream role {who!r} can write to {tp.qualified}; dpsql needs a role with "
                              "SELECT only (REVOKE ALL, then GRANT SELECT)")
        described[qname] = await _columns(conn, rel["oid"], tp.qualified)

    for schema in sorted(schemas):
        row = await conn.fetchrow(
            "SELECT has_schema_privilege(oid, 'CREATE') AS mine, has_schema_privilege('public', oid, 'CREATE') AS everyone "
            "FROM pg_catalog.pg_namespace WHERE nspname = $1",
            schema,
        )
        if row is None:
            continue  # a search-path schema that does not exist cannot hold planted objects
        if row["mine"] or row["everyone"]:
            grantee = f"the upstream role {who!r}" if row["mine"] else "every role (PUBLIC)"
            raise PolicyError(fname, "source.postgres", f"{grantee} may CREATE objects in schema {schema!r}, so a planted "
                              f"function could shadow a built-in one (CVE-2018-1058); run REVOKE CREATE ON SCHEMA {schema} "
                              "FROM PUBLIC (and from the role)")
    return described


async def _columns(conn: Any, oid: int, qualified: str) -> list[tuple[str, str]]:
    """Columns of one relation in attribute order with PostgreSQL type names (domains → base type)."""
    rows = await conn.fetch(
        "SELECT a.attname, CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END AS typname "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype "
        "WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        oid,
    )
    out: list[tuple[str, str]] = []
    for name, typname in rows:
        if name != name.lower():
            # the rewriter quotes lower-case names; a mixed-case column cannot be referenced
            _log.warning("column %r of %s is not lower-case and is not served", name, qualified)
            continue
        out.append((name, typname))
    return out
