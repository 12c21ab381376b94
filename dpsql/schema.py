"""The visible schema: policy tables and columns with their PostgreSQL types.

A backend reports the columns and types of each policy table (schema is public metadata; no
row is read). :func:`build_catalog` intersects that with the policy: only the privacy unit and
the columns the policy declares are visible for private tables (all columns for a public table
that lists none), and it checks that the policy fits the data source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from sqlglot.schema import MappingSchema

from dpsql.errors import PolicyError
from dpsql.policy import Policy, TablePolicy

# PostgreSQL type names (pg_type.typname) that dpsql knows how to show and to bound.
INTEGER_TYPES = frozenset({"int2", "int4", "int8"})
FLOAT_TYPES = frozenset({"float4", "float8", "numeric"})
NUMERIC_TYPES = INTEGER_TYPES | FLOAT_TYPES
TEXT_TYPES = frozenset({"text", "varchar", "bpchar"})
TEMPORAL_TYPES = frozenset({"date", "timestamp", "timestamptz", "time", "interval"})


@dataclass(frozen=True)
class ColumnInfo:
    """A visible column: its name and PostgreSQL type name (``int8``, ``float8``, ``text`` …)."""

    name: str
    pg_type: str


@dataclass(frozen=True)
class TableInfo:
    """A visible table: its policy and its visible columns in source order."""

    policy: TablePolicy
    columns: tuple[ColumnInfo, ...]
    unit_unique: bool = False  # the engine enforces one row per privacy unit (PK/UNIQUE on it)
    unit_column: ColumnInfo | None = None  # a keyed table's reserved unit column (never visible; joined in)

    def column(self, name: str) -> ColumnInfo | None:
        """The visible column called ``name`` (lower-case), or None."""
        for c in self.columns:
            if c.name == name:
                return c
        return None


@dataclass(frozen=True)
class Catalog:
    """All visible tables, keyed by qualified ``schema.table`` (lower-case)."""

    policy: Policy
    tables: Mapping[str, TableInfo]

    def table(self, name: str) -> TableInfo | None:
        """The visible table called ``name`` (``t`` or ``schema.t``), or None."""
        key = name.lower()
        if "." not in key:
            key = f"public.{key}"
        return self.tables.get(key)

    @cached_property
    def mapping_schema(self) -> MappingSchema:
        """The visible schema as a sqlglot MappingSchema (PostgreSQL dialect), built once."""
        return MappingSchema(self.sqlglot_schema(), dialect="postgres", normalize=True)

    def sqlglot_schema(self) -> dict[str, dict[str, dict[str, str]]]:
        """A nested mapping ``{schema: {table: {column: type}}}`` for sqlglot's MappingSchema."""
        out: dict[str, dict[str, dict[str, str]]] = {}
        for t in self.tables.values():
            out.setdefault(t.policy.schema, {})[t.policy.table] = {c.name: _SQLGLOT_TYPE.get(c.pg_type, "TEXT") for c in t.columns}
        return out


_SQLGLOT_TYPE = {
    "int2": "SMALLINT",
    "int4": "INT",
    "int8": "BIGINT",
    "float4": "REAL",
    "float8": "DOUBLE",
    "numeric": "DECIMAL",
    "text": "TEXT",
    "varchar": "VARCHAR",
    "bpchar": "CHAR",
    "bool": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    "time": "TIME",
    "interval": "INTERVAL",
    "bytea": "VARBINARY",
    "uuid": "UUID",
    "json": "JSON",
    "jsonb": "JSONB",
}


def build_catalog(
    policy: Policy,
    described: Mapping[str, Sequence[tuple[str, str]]],
    unique: Mapping[str, frozenset[str]] | None = None,
) -> Catalog:
    """Intersect the policy with the source's columns; PolicyError if the two don't fit.

    ``described`` maps each policy table's qualified name to its ``(column, pg_type)`` list as
    the data source reports it (names lower-case). ``unique`` (optional, from
    ``Backend.unique_columns``) names the columns the engine enforces to be unique; a private
    table whose privacy unit is one of them is marked ``unit_unique`` (one row per unit).
    """
    tables: dict[str, TableInfo] = {}
    fname = str(policy.file)
    for qname, tp in policy.tables.items():
        cols = described.get(qname)
        key = f"tables.{tp.name}"
        if cols is None:
            raise PolicyError(fname, key, f"table {qname} is not in the data source")
        types = {n.lower(): t for n, t in cols}
        for cname, cp in tp.columns.items():
            if cname not in types:
                what = ("privacy_unit" if cname == tp.privacy_unit else
                        "privacy_unit.via" if tp.unit_reference is not None and cname == tp.unit_reference[0] else
                        f"columns.{cname}")
                raise PolicyError(fname, f"{key}.{what}", f"column {cname!r} is not in table {qname}")
            ptype = types[cname]
            if cp.bounded and ptype not in NUMERIC_TYPES:
                raise PolicyError(fname, f"{key}.columns.{cname}", f"has bounds but its type is {ptype}, not numeric")
            if cp.values is not None:
                want_text = ptype in TEXT_TYPES
                have_text = all(isinstance(v, str) for v in cp.values)
                if ptype == "bool":
                    ok = all(isinstance(v, bool) for v in cp.values)
                elif want_text or ptype in TEMPORAL_TYPES:
                    ok = have_text
                else:
                    ok = ptype in NUMERIC_TYPES and all(isinstance(v, int | float) and not isinstance(v, bool) for v in cp.values)
                if not ok:
                    raise PolicyError(fname, f"{key}.columns.{cname}.values", f"do not match the column type {ptype}")
        if tp.columns_declared:
            visible = tuple(ColumnInfo(n.lower(), t) for n, t in cols if n.lower() in tp.columns)
        else:
            visible = tuple(ColumnInfo(n.lower(), t) for n, t in cols)
        unit_unique = bool(tp.privacy_unit) and tp.privacy_unit in (unique or {}).get(qname, frozenset())
        unit_column = _keyed_unit_column(policy, tp, described) if tp.keyed else None
        tables[qname] = TableInfo(policy=tp, columns=visible, unit_unique=unit_unique, unit_column=unit_column)
    return Catalog(policy=policy, tables=tables)


def _family(pg_type: str) -> str:
    return ("int" if pg_type in INTEGER_TYPES else "number" if pg_type in FLOAT_TYPES else
            "text" if pg_type in TEXT_TYPES else pg_type)


def _keyed_unit_column(policy: Policy, tp: TablePolicy, described: Mapping[str, Sequence[tuple[str, str]]]) -> ColumnInfo:
    """The reserved unit column of keyed table ``tp`` with the type of the unit column its path ends
    at; PolicyError when a step's key column and referenced column are of different kinds (an
    equality join between them would not bind, or would compare by a cast)."""
    from dpsql.policy import KEYED_UNIT

    key = f"tables.{tp.name}.privacy_unit"
    here = {n.lower(): t for n, t in described.get(tp.qualified, ())}
    for step in tp.unit_path:
        there = {n.lower(): t for n, t in described.get(step.table, ())}
        a, b = here.get(step.via), there.get(step.column)
        if a is not None and b is not None and _family(a) != _family(b):
            raise PolicyError(str(policy.file), key, f"the key column {step.via} ({a}) and {step.table}.{step.column} ({b}) "
                              "are of different types")
        here = there
    root = here.get(tp.unit_root or "", "text")
    return ColumnInfo(KEYED_UNIT, root)
