"""Statement parameters (``$1``, ``$2`` …): type inference for ParameterDescription, and binding
of Bind values into the parsed tree before the rewriter sees the query (R31).

Binding never pastes text: the statement is parsed with sqlglot (PostgreSQL dialect), each
``$n`` node is replaced by a typed literal node built from the decoded value, and SQL is
generated from the tree. A parameter value therefore cannot change the statement's structure.

Inference follows what PostgreSQL would report for the common shapes: an explicit cast
(``$1::date``, ``CAST($1 AS int8)``) gives its type; a comparison, ``IN`` or ``BETWEEN`` with a
column of known type gives the column's type; ``LIMIT``/``OFFSET`` give ``int8``; anything else
is ``text``. A type OID the client sent in Parse always wins.

>>> bind_sql("SELECT COUNT(*) FROM visits WHERE age > $1 AND sex = $2", [30, "F"])
"SELECT COUNT(*) FROM visits WHERE age > 30 AND sex = 'F'"
>>> bind_sql("SELECT $1", ["it's; DROP TABLE x"])
"SELECT 'it''s; DROP TABLE x'"
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from dpsql.cache import BoundedCache
from dpsql.errors import CharacterNotInRepertoire, QuerySyntaxError, UndefinedParameter
from dpsql.proxy.wire import types as pgt
from dpsql.proxy.wire.sqltext import lex
from dpsql.schema import Catalog

INT8_OID = 20
TEXT_OID = 25

_CAST_AFTER = re.compile(
    r"\s*::\s*((?:pg_catalog\.)?(?:timestamp(?:\s*\(\d+\))?\s+with(?:out)?\s+time\s+zone|time\s+with(?:out)?\s+time\s+zone|"
    r"double\s+precision|character\s+varying|\"char\"|[A-Za-z_][A-Za-z0-9_]*)(?:\s*\([^)]*\))?(?:\s*\[\])?)",
    re.I,
)
_CAST_FUNC = re.compile(
    r"cast\s*\(\s*\$(\d+)\s+as\s+((?:pg_catalog\.)?(?:timestamp\s+with(?:out)?\s+time\s+zone|double\s+precision|"
    r"character\s+varying|[A-Za-z_][A-Za-z0-9_]*)(?:\s*\([^)]*\))?(?:\s*\[\])?)\s*\)",
    re.I,
)


def _cast_types(sql: str) -> dict[int, int]:
    """Parameter types given by explicit casts in the text."""
    out: dict[int, int] = {}
    for _start, end, n in lex(sql).placeholders:
        m = _CAST_AFTER.match(sql, end)
        if m is not None and n not in out:
            out[n] = pgt.type_by_name(m.group(1)).oid
    for m in _CAST_FUNC.finditer(sql):
        out.setdefault(int(m.group(1)), pgt.type_by_name(m.group(2)).oid)
    return out


_TREE_CACHE = 512
_TREES: BoundedCache[str, exp.Expression | None] = BoundedCache(_TREE_CACHE)


def _parse(sql: str) -> exp.Expression | None:
    """The (cached, never mutated) sqlglot tree of one statement, or None if sqlglot cannot parse it."""
    hit, tree = _TREES.lookup(sql)
    if hit:
        return tree
    try:
        tree: exp.Expression | None = sqlglot.parse_one(_spaced(sql), read="postgres")
    except (ParseError, TokenError, ValueError, RecursionError):
        tree = None
    _TREES.put(sql, tree)
    return tree


def _spaced(sql: str) -> str:
    """``sql`` with blanks around each ``$n`` (sqlglot's tokenizer misreads ``$1,$2`` as a dollar quote)."""
    holders = lex(sql).placeholders
    if not holders:
        return sql
    parts: list[str] = []
    pos = 0
    for start, end, _n in holders:
        parts.append(sql[pos:start])
        parts.append(f" {sql[start:end]} ")
        pos = end
    parts.append(sql[pos:])
    return "".join(parts)


def _param_number(node: exp.Expression) -> int | None:
    if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        try:
            return int(node.this.this)
        except ValueError:
            return None
    return None


def _column_types(tree: exp.Expression, schema: Catalog | None) -> dict[str, dict[str, str]]:
    """alias or table name → {column: pg_type} for the policy tables the statement reads."""
    out: dict[str, dict[str, str]] = {}
    if schema is None:
        return out
    for table in tree.find_all(exp.Table):
        name = table.name
        db = table.db
        info = schema.table(f"{db}.{name}" if db else name)
        if info is None:
            continue
        cols = {c.name: c.pg_type for c in info.columns}
        out[(table.alias or name).lower()] = cols
        out.setdefault(name.lower(), cols)
    return out


def _expr_type(node: exp.Expression | None, tables: dict[str, dict[str, str]]) -> str | None:
    """The PostgreSQL type of a simple expression (column, cast, literal), or None."""
    while isinstance(node, exp.Paren):
        node = node.this
    if node is None:
        return None
    if isinstance(node, exp.Column):
        col = node.name.lower()
        qual = node.table.lower()
        if qual:
            return tables.get(qual, {}).get(col)
        found = {cols[col] for cols in tables.values() if col in cols}
        return found.pop() if len(found) == 1 else None
    if isinstance(node, exp.Cast):
        return node.to.sql("postgres")
    if isinstance(node, exp.Literal):
        if node.is_string:
            return None
        return "int4" if re.fullmatch(r"-?\d+", node.this) else "numeric"
    return None


_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.NullSafeEQ,
                exp.NullSafeNEQ)


def _context_type(param: exp.Expression, tables: dict[str, dict[str, str]]) -> str | None:
    node: exp.Expression = param
    parent = node.parent
    while isinstance(parent, exp.Paren):
        node, parent = parent, parent.parent
    if parent is None:
        return None
    if isinstance(parent, exp.Cast):
        return parent.to.sql("postgres")
    if isinstance(parent, exp.Limit | exp.Offset | exp.Fetch):
        return "int8"
    if isinstance(parent, _COMPARISONS):
        other = parent.expression if parent.this is node else parent.this
        return _expr_type(other, tables)
    if isinstance(parent, exp.In) and node is not parent.this:
        return _expr_type(parent.this, tables)
    if isinstance(parent, exp.Between) and node is not parent.this:
        return _expr_type(parent.this, tables)
    if isinstance(parent, exp.Like | exp.ILike):
        return "text"
    return None


def infer_param_types(sql: str, given: Sequence[int], schema: Catalog | None = None) -> tuple[int, ...]:
    """The type OID of each ``$n`` of ``sql`` (count = highest n, at least ``len(given)``).

    Non-zero OIDs in ``given`` are kept; the rest are inferred (see the module docstring) or text.
    """
    lexed = lex(sql)
    count = max(len(given), max((h[2] for h in lexed.placeholders), default=0))
    oids = [given[i] if i < len(given) else 0 for i in range(count)]
    if all(oids):
        return tuple(oids)
    casts = _cast_types(sql)
    for n, oid in casts.items():
        if 0 < n <= count and oids[n - 1] == 0:
            oids[n - 1] = oid
    if not all(oids):
        tree = _parse(sql)
        if tree is not None:
            tables = _column_types(tree, schema)
            for p in tree.find_all(exp.Parameter):
                n = _param_number(p)
                if n is None or not 0 < n <= count or oids[n - 1]:
                    continue
                t = _context_type(p, tables)
                if t is not None:
                    oids[n - 1] = pgt.type_by_name(t).oid
    return tuple(o if o else TEXT_OID for o in oids)


# ---------------------------------------------------------------------------------------------
# Binding


def _cast(text: str, type_name: str) -> exp.Expression:
    return exp.cast(exp.Literal.string(text), to=exp.DataType.build(type_name, dialect="postgres"))


_SQL_TYPE = {
    "int2": "SMALLINT",
    "int4": "INT",
    "int8": "BIGINT",
    "float4": "REAL",
    "float8": "DOUBLE PRECISION",
    "numeric": "NUMERIC",
    "bool": "BOOLEAN",
    "date": "DATE",
    "time": "TIME",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    "interval": "INTERVAL",
    "uuid": "UUID",
    "bytea": "BYTEA",
    "json": "JSON",
    "jsonb": "JSONB",
}


def literal(value: Any, oid: int = TEXT_OID) -> exp.Expression:
    """A typed sqlglot literal for one decoded parameter value."""
    t = pgt.type_by_oid(oid)
    tname = t.name if t is not None else "text"
    if value is None:
        sql_type = _SQL_TYPE.get(tname)
        return exp.Null() if sql_type is None else exp.cast(exp.Null(), to=exp.DataType.build(sql_type, dialect="postgres"))
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return exp.Literal.number(repr(value))
        return _cast(pgt.format_float8(value), "DOUBLE PRECISION")
    if isinstance(value, Decimal):
        if value.is_finite():
            return exp.Literal.number(format(value, "f"))
        return _cast(pgt.format_numeric(value), "NUMERIC")
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return _cast(pgt.format_timestamptz(value), "TIMESTAMPTZ")
        return _cast(pgt.format_timestamp(value), "TIMESTAMP")
    if isinstance(value, dt.date):
        return _cast(pgt.format_date(value), "DATE")
    if isinstance(value, dt.time):
        return _cast(pgt.format_time(value), "TIME")
    if isinstance(value, dt.timedelta):
        return _cast(pgt.format_interval(value), "INTERVAL")
    if isinstance(value, uuid.UUID):
        return _cast(str(value), "UUID")
    if isinstance(value, bytes | bytearray | memoryview):
        return _cast(pgt.format_bytea(value), "BYTEA")
    if isinstance(value, list | tuple):
        elem = t.elem if t is not None and t.elem else TEXT_OID
        return exp.Array(expressions=[literal(v, elem) for v in value])
    text = str(value)
    if "\0" in text:
        raise CharacterNotInRepertoire('invalid byte sequence for encoding "UTF8": 0x00')
    sql_type = _SQL_TYPE.get(tname)
    if sql_type is not None and tname not in ("text", "varchar", "bpchar", "name"):
        return _cast(text, sql_type)
    return exp.Literal.string(text)


def bind_sql(sql: str, values: Sequence[Any], oids: Sequence[int] = ()) -> str:
    """``sql`` with each ``$n`` replaced by a typed literal of ``values[n-1]``, regenerated by sqlglot.

    Raises 42601 if the statement does not parse, 08P01 if a ``$n`` has no value.
    """
    if not lex(sql).placeholders:
        return sql
    tree = _parse(sql)
    if tree is None:
        raise QuerySyntaxError("syntax error in a statement with parameters", hint="check the SQL near the $n placeholders")
    copy = tree.copy()
    for p in list(copy.find_all(exp.Parameter)):
        n = _param_number(p)
        if n is None:
            continue
        if not 0 < n <= len(values):
            raise UndefinedParameter(f"there is no parameter ${n}")
        p.replace(literal(values[n - 1], oids[n - 1] if n - 1 < len(oids) else TEXT_OID))
    return copy.sql(dialect="postgres")


def syntax_position(sql: str) -> int | None:
    """The 1-based character position of the first syntax error in ``sql`` (for ErrorResponse's P
    field, which psql turns into ``LINE 1: … ^``), or None when sqlglot finds none or cannot say."""
    try:
        sqlglot.parse_one(sql, read="postgres")
    except ParseError as e:
        err = e.errors[0] if e.errors else {}
        line, col, highlight = err.get("line"), err.get("col"), err.get("highlight") or ""
        if not isinstance(line, int) or not isinstance(col, int) or line < 1:
            return None
        lines = sql.split("\n")
        start = sum(len(text) + 1 for text in lines[: line - 1]) + col - len(highlight)
        return start + 1 if 0 <= start < len(sql) else None
    except (TokenError, ValueError, RecursionError):
        return None
    return None


def dummy_value(oid: int) -> Any:
    """A harmless value of type ``oid``, used to plan a statement for Describe before Bind."""
    t = pgt.type_by_oid(oid)
    name = t.name if t is not None else "text"
    if t is not None and t.elem:
        return []
    return {
        "bool": True,
        "int2": 1,
        "int4": 1,
        "int8": 1,
        "oid": 1,
        "float4": 1.0,
        "float8": 1.0,
        "numeric": Decimal(1),
        "date": dt.date(2000, 1, 1),
        "time": dt.time(0, 0),
        "timestamp": dt.datetime(2000, 1, 1),
        "timestamptz": dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        "interval": dt.timedelta(0),
        "uuid": uuid.UUID(int=0),
        "bytea": b"",
    }.get(name, "")
