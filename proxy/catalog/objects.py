"""The objects a synthetic catalog shows, with their OIDs: schemas, tables and columns, roles, the database.

Built from the policy's :class:`~dpsql.schema.Catalog` only (names and PostgreSQL types of the
visible columns); nothing here is read from data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dpsql.proxy.catalog import pg_snapshot as snap
from dpsql.proxy.catalog.oids import BOOTSTRAP_ROLE_OID, assign_oids, stable_oid
from dpsql.proxy.catalog.pgtypes import INFORMATION_SCHEMA_OID, PG_CATALOG_OID, PG_TOAST_OID, PUBLIC_OID, type_oid
from dpsql.schema import Catalog

OWNER = "dpsql"  # the role that owns every object (PostgreSQL's bootstrap superuser has OID 10)
SYSTEM_SCHEMAS = {"pg_catalog": PG_CATALOG_OID, "pg_toast": PG_TOAST_OID, "information_schema": INFORMATION_SCHEMA_OID}


@dataclass(frozen=True)
class ColumnObj:
    """A visible column: name, attnum (from 1), PostgreSQL type name and OID."""

    name: str
    attnum: int
    pg_type: str
    type_oid: int


@dataclass(frozen=True)
class TableObj:
    """A policy table as the catalog shows it."""

    oid: int
    schema: str
    name: str
    columns: tuple[ColumnObj, ...]

    @property
    def qualified(self) -> str:
        """``schema.name``."""
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Objects:
    """Everything the shadow catalog describes, with stable OIDs."""

    database: str
    database_oid: int
    schemas: dict[str, int]
    tables: dict[str, TableObj]
    roles: dict[str, int]
    system_relations: dict[str, int]  # "pg_catalog.pg_class" -> 1259 (PostgreSQL's real OIDs)

    def schema_name(self, oid: int) -> str | None:
        """The schema with this OID, or None."""
        return next((n for n, o in self.schemas.items() if o == oid), None)


def build_objects(catalog: Catalog, database: str, users: Sequence[str]) -> Objects:
    """Assign OIDs to the policy's schemas, tables and users (deterministic for the same policy)."""
    system = {f"{nsp}.{rel}": oid for nsp, rel, oid, _kind in snap.SYSTEM_RELATIONS}
    taken = set(system.values()) | set(SYSTEM_SCHEMAS.values()) | {PUBLIC_OID, BOOTSTRAP_ROLE_OID}
    user_schemas = sorted({t.policy.schema for t in catalog.tables.values()} - {"public"} - set(SYSTEM_SCHEMAS))
    users = [u for u in users if u != OWNER]
    oids = assign_oids(
        [("schema", s) for s in user_schemas]
        + [("table", q) for q in catalog.tables]
        + [("role", u) for u in users]
        + [("database", database)],
        taken,
    )
    schemas = dict(SYSTEM_SCHEMAS) | {"public": PUBLIC_OID} | {s: oids["schema", s] for s in user_schemas}
    tables: dict[str, TableObj] = {}
    for q, info in sorted(catalog.tables.items()):
        cols = tuple(ColumnObj(c.name, i + 1, c.pg_type, type_oid(c.pg_type)) for i, c in enumerate(info.columns))
        tables[q] = TableObj(oids["table", q], info.policy.schema, info.policy.table, cols)
    roles = {OWNER: BOOTSTRAP_ROLE_OID} | {u: oids["role", u] for u in sorted(users)}
    return Objects(database, oids["database", database], schemas, tables, roles, system)


def stable_table_oid(qualified: str) -> int:
    """The OID a table would get without collision probing (for documentation and tests)."""
    return stable_oid("table", qualified)
