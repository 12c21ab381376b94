"""PostgreSQL builtin types: OIDs, names, SQL spellings and the DuckDB types that store them in the shadow.

All data comes from :mod:`dpsql.proxy.catalog.pg_snapshot` (a snapshot of a real server's ``pg_type``).

>>> type_oid("int4"), type_oid("integer"), type_oid("character varying"), type_oid("_text"), type_oid("text[]")
(23, 23, 1043, 1009, 1009)
>>> sql_name(1043), sql_name(1009), sql_name(1114)
('character varying', 'text[]', 'timestamp without time zone')
>>> duckdb_type("oid"), duckdb_type("_name"), duckdb_type("int2vector"), duckdb_type("char")
('UINTEGER', 'VARCHAR[]', 'SMALLINT[]', 'pg_char')
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from dpsql.proxy.catalog import pg_snapshot as snap

PG_CATALOG_OID = 11
PUBLIC_OID = 2200
PG_TOAST_OID = 99
INFORMATION_SCHEMA_OID = snap.INFORMATION_SCHEMA_OID
DEFAULT_COLLATION_OID = 100


@dataclass(frozen=True)
class PgType:
    """One builtin ``pg_type`` row (the columns dpsql needs by name; the full row is in the snapshot)."""

    oid: int
    name: str
    length: int
    byval: bool
    typtype: str
    category: str
    elem: int
    array: int
    collation: int
    align: str
    storage: str
    row: tuple[object, ...]


def _load() -> tuple[dict[int, PgType], dict[str, PgType]]:
    cols = snap.PG_TYPE_COLUMNS
    ix = {c: i for i, c in enumerate(cols)}
    by_oid: dict[int, PgType] = {}
    for r in snap.PG_TYPE_ROWS:
        t = PgType(
            oid=r[ix["oid"]], name=r[ix["typname"]], length=r[ix["typlen"]], byval=r[ix["typbyval"]], typtype=r[ix["typtype"]],
            category=r[ix["typcategory"]], elem=r[ix["typelem"]], array=r[ix["typarray"]], collation=r[ix["typcollation"]],
            align=r[ix["typalign"]], storage=r[ix["typstorage"]], row=tuple(r),
        )
        by_oid[t.oid] = t
    return by_oid, {t.name: t for t in by_oid.values()}


BY_OID, BY_NAME = _load()

# SQL-standard spellings (format_type without typmod) of the types PostgreSQL spells specially.
_SQL_NAMES = {
    "bool": "boolean", "int2": "smallint", "int4": "integer", "int8": "bigint", "float4": "real", "float8": "double precision",
    "bpchar": "character", "varchar": "character varying", "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone", "time": "time without time zone", "timetz": "time with time zone",
    "varbit": "bit varying", "char": '"char"',
}
# Names the parser accepts for a type (lower-case, single spaces) → pg_type.typname.
_ALIASES = {
    "integer": "int4", "int": "int4", "smallint": "int2", "bigint": "int8", "real": "float4", "double precision": "float8",
    "float": "float8", "boolean": "bool", "character varying": "varchar", "character": "bpchar", "char": "bpchar",
    '"char"': "char", "decimal": "numeric", "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
    "time without time zone": "time", "time with time zone": "timetz", "bit varying": "varbit", "serial": "int4",
    "bigserial": "int8", "smallserial": "int2", "dec": "numeric",
}


def canonical_name(name: str) -> str | None:
    """``pg_type.typname`` for a type name as SQL spells it (``integer``, ``pg_catalog.int4``, ``text[]``), or None."""
    n = " ".join(name.strip().lower().split())
    if n.startswith("pg_catalog."):
        n = n[len("pg_catalog."):]
    if n.endswith("[]"):
        base = canonical_name(n[:-2])
        if base is None:
            return None
        arr = BY_OID[BY_NAME[base].array] if BY_NAME[base].array else None
        return arr.name if arr else None
    if n.startswith('"') and n.endswith('"') and n != '"char"':
        n = n[1:-1]
    n = _ALIASES.get(n, n)
    return n if n in BY_NAME else None


def type_oid(name: str) -> int:
    """The real PostgreSQL OID of a builtin type name (``int4`` → 23, ``text`` → 25); 0 (unknown) if not builtin."""
    n = canonical_name(name)
    return BY_NAME[n].oid if n is not None else 0


def sql_name(oid: int) -> str | None:
    """``format_type(oid, NULL)``: the SQL spelling of a builtin type, ``[]`` appended for arrays; None if unknown."""
    t = BY_OID.get(oid)
    if t is None:
        return None
    if t.category == "A" and t.elem and t.length == -1:
        inner = sql_name(t.elem)
        return f"{inner}[]" if inner else None
    return _SQL_NAMES.get(t.name, t.name)


_TIME_NAMES = {"timestamp": ("timestamp", " without time zone"), "timestamptz": ("timestamp", " with time zone"),
               "time": ("time", " without time zone"), "timetz": ("time", " with time zone")}


def format_type(oid: int | None, typmod: int | None) -> str | None:
    """PostgreSQL's ``format_type(oid, typmod)`` for builtin types (``'???'`` for unknown OIDs, ``'-'`` for 0).

    >>> format_type(1043, 36), format_type(1700, 655366), format_type(1114, 3), format_type(1015, 36), format_type(1042, -1)
    ('character varying(32)', 'numeric(10,2)', 'timestamp(3) without time zone', 'character varying(32)[]', 'bpchar')
    """
    if oid is None:
        return None
    if oid == 0:
        return "-"
    t = BY_OID.get(oid)
    if t is None:
        return "???"
    suffix = ""
    if t.category == "A" and t.elem and t.length == -1:
        t, suffix = BY_OID.get(t.elem, t), "[]"
    mod = typmod is not None and typmod >= 0
    name = t.name
    if name == "bpchar":
        text = f"character({typmod - 4})" if mod else ("bpchar" if typmod is not None else "character")  # type: ignore[operator]
    elif name == "varchar":
        text = f"character varying({typmod - 4})" if mod else "character varying"  # type: ignore[operator]
    elif name == "numeric":
        text = f"numeric({(typmod - 4) >> 16},{(typmod - 4) & 0xFFFF})" if mod else "numeric"  # type: ignore[operator]
    elif name in _TIME_NAMES:
        base, zone = _TIME_NAMES[name]
        text = f"{base}({typmod}){zone}" if mod else f"{base}{zone}"
    elif name == "interval":
        text = f"interval({typmod & 0xFFFF})" if mod and (typmod & 0xFFFF) != 0xFFFF else "interval"  # type: ignore[operator]
    elif name in ("bit", "varbit"):
        base = "bit" if name == "bit" else "bit varying"
        text = f"{base}({typmod})" if mod else base
    else:
        text = _SQL_NAMES.get(name, name)
    return text + suffix


CHAR_TYPE = "pg_char"  # an ENUM of the single ASCII characters and '' (PostgreSQL's one-byte "char")
CHAR_VALUES = ("", *(chr(i) for i in range(32, 127)))

# PostgreSQL type name → DuckDB storage type in the shadow. Anything not listed is stored as text.
_DUCK = {
    "oid": "UINTEGER", "xid": "UINTEGER", "cid": "UINTEGER", "xid8": "UBIGINT", "int8": "BIGINT", "int4": "INTEGER",
    "int2": "SMALLINT", "char": CHAR_TYPE,
    "bool": "BOOLEAN", "float4": "FLOAT", "float8": "DOUBLE", "numeric": "DOUBLE", "timestamptz": "TIMESTAMPTZ",
    "timestamp": "TIMESTAMP", "date": "DATE", "interval": "INTERVAL", "bytea": "BLOB", "int2vector": "SMALLINT[]",
    "oidvector": "UINTEGER[]",
}


@cache
def duckdb_type(pg_type: str) -> str:
    """The DuckDB type that stores a PostgreSQL catalog column of type ``pg_type`` (``_oid`` → ``UINTEGER[]``).

    ``oid`` is DuckDB's UINTEGER and ``"char"`` the ENUM :data:`CHAR_TYPE`: both keep their identity through
    joins, CTEs and unions, so a result column of either type is reported as PostgreSQL reports it.
    """
    if pg_type.startswith("_"):
        return duckdb_type(pg_type[1:]).removesuffix("[]") + "[]"
    return _DUCK.get(pg_type, "VARCHAR")


# information_schema.columns facts per type: (numeric_precision, numeric_precision_radix, numeric_scale, datetime_precision)
_NUMERIC_FACTS = {
    "int2": (16, 2, 0, None), "int4": (32, 2, 0, None), "int8": (64, 2, 0, None), "float4": (24, 2, None, None),
    "float8": (53, 2, None, None), "numeric": (None, 10, None, None), "date": (None, None, None, 0),
    "timestamp": (None, None, None, 6), "timestamptz": (None, None, None, 6), "time": (None, None, None, 6),
    "timetz": (None, None, None, 6), "interval": (None, None, None, 6),
}


def numeric_facts(pg_type: str) -> tuple[int | None, int | None, int | None, int | None]:
    """(numeric_precision, numeric_precision_radix, numeric_scale, datetime_precision) as information_schema reports them."""
    return _NUMERIC_FACTS.get(pg_type, (None, None, None, None))


def information_schema_data_type(pg_type: str) -> str:
    """``information_schema.columns.data_type``: the SQL name, ``ARRAY`` for arrays, ``USER-DEFINED`` for unknown types."""
    t = BY_NAME.get(pg_type)
    if t is None:
        return "USER-DEFINED"
    if t.category == "A":
        return "ARRAY"
    name = _SQL_NAMES.get(t.name, t.name)
    return name if name != '"char"' else '"char"'
