"""Pass 11 (``post``): post-processing — the analyst's projection, HAVING, ORDER BY and LIMIT over noisy values.

These run after noise, on a small table ``__dp_noisy`` holding one row per released group: the keys
``__dp_k{i}`` and the noisy aggregates ``__dp_a{j}``. Post-processing of DP outputs is free
(Dwork–Roth Prop. 2.1), so HAVING, ORDER BY, LIMIT and arithmetic over aggregates (``SUM(a)/COUNT(*)``)
cost nothing extra and can never see an exact value. When the projection is just keys and
aggregates with no HAVING/ORDER/LIMIT, no query is needed (``output_map``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.schema import MappingSchema

from dpsql.rewriter import aggregates
from dpsql.rewriter.analyze import AGG_PREFIX, KEY_PREFIX, QueryShape
from dpsql.rewriter.literals import check_divisors
from dpsql.rewriter.plan import AggregateRelease, KeyColumn, OutputColumn

NOISY_TABLE = "__dp_noisy"

_PG_TO_DUCK = {
    "int2": "SMALLINT",
    "int4": "INTEGER",
    "int8": "BIGINT",
    "float4": "FLOAT",
    "float8": "DOUBLE",
    "numeric": "DOUBLE",
    "text": "VARCHAR",
    "varchar": "VARCHAR",
    "bpchar": "VARCHAR",
    "bool": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    "time": "TIME",
    "interval": "INTERVAL",
}


@dataclass(frozen=True)
class Post:
    """The post-processing part of a release plan."""

    sql: str | None
    types: tuple[tuple[str, str], ...]
    output_map: tuple[tuple[Literal["key", "agg"], int], ...]
    outputs: tuple[OutputColumn, ...]


def aggregate_pg_type(release: AggregateRelease) -> str:
    """The PostgreSQL type of a released aggregate: int8 for counts and integer sums, else float8."""
    return str(aggregates.module_for_release(release.kind).pg_type(release))


def build_post(shape: QueryShape, keys: tuple[KeyColumn, ...], releases: tuple[AggregateRelease, ...], names: list[str]) -> Post:
    """The post-processing query (DuckDB dialect) and the result's column names and types."""
    types = [(k.column, _PG_TO_DUCK.get(k.pg_type, "VARCHAR")) for k in keys]
    types += [(f"{AGG_PREFIX}{j}", _PG_TO_DUCK[aggregate_pg_type(r)]) for j, r in enumerate(releases)]
    pg_types = {k.column: k.pg_type for k in keys} | {f"{AGG_PREFIX}{j}": aggregate_pg_type(r) for j, r in enumerate(releases)}

    simple: list[tuple[Literal["key", "agg"], int]] = []
    for p in shape.projections:
        inner = p.this if isinstance(p, exp.Alias) else p
        if isinstance(inner, exp.Column) and not inner.table and inner.name.startswith(KEY_PREFIX):
            simple.append(("key", int(inner.name[len(KEY_PREFIX):])))
        elif isinstance(inner, exp.Column) and not inner.table and inner.name.startswith(AGG_PREFIX):
            simple.append(("agg", int(inner.name[len(AGG_PREFIX):])))
        else:
            break
    trivial = (
        len(simple) == len(shape.projections)
        and shape.having is None
        and shape.order is None
        and shape.limit is None
        and shape.offset is None
        and not shape.distinct
    )
    if trivial:
        outputs = tuple(
            OutputColumn(name, pg_types[f"{KEY_PREFIX if kind == 'key' else AGG_PREFIX}{i}"])
            for name, (kind, i) in zip(names, simple, strict=True)
        )
        return Post(None, tuple(types), tuple(simple), outputs)

    projections = [
        exp.alias_(p.this if isinstance(p, exp.Alias) else p, name, quoted=True)
        for p, name in zip(shape.projections, names, strict=True)
    ]
    q = exp.select(*projections).from_(NOISY_TABLE, copy=False)
    if shape.distinct:
        q = q.distinct(copy=False)
    if shape.having is not None:
        q = q.where(shape.having, copy=False)
    if shape.order is not None:
        q.set("order", shape.order)
    elif keys and not shape.distinct:
        q = q.order_by(*[exp.column(k.column) for k in keys], copy=False)
    if shape.limit is not None:
        q.set("limit", shape.limit)
    if shape.offset is not None:
        q.set("offset", shape.offset)
    schema = MappingSchema({NOISY_TABLE: dict(types)}, dialect="duckdb")
    typed = q.copy()
    for col in typed.find_all(exp.Column):
        if col.name.startswith((KEY_PREFIX, AGG_PREFIX)) and not col.table:
            col.set("table", exp.to_identifier(NOISY_TABLE))
    annotated = annotate_types(typed, schema=schema, dialect="duckdb")
    outputs = tuple(
        OutputColumn(name, _projection_type(p, pg_types)) for p, name in zip(annotated.expressions, names, strict=True)
    )
    _conform_integers(q, outputs, pg_types)
    check_divisors(q)
    return Post(q.sql(dialect="duckdb", comments=False), tuple(types), (), outputs)


_INTEGER_CASTS = {"int2": "SMALLINT", "int4": "INTEGER", "int8": "BIGINT"}


def _conform_integers(q: exp.Select, outputs: tuple[OutputColumn, ...], known: dict[str, str]) -> None:
    """Cast each integer-typed output to its declared type, so every value fits the column the
    client is told about: an Infinity, NaN or out-of-range value becomes an error (22003) instead of
    a float in an ``int8`` column. (The post-processor divides integers as PostgreSQL does, so for
    the SQL PostgreSQL accepts the cast changes no value.)"""
    for i, out in enumerate(outputs):
        target = _INTEGER_CASTS.get(out.pg_type)
        alias = q.expressions[i]
        inner = alias.this if isinstance(alias, exp.Alias) else alias
        if target is None or (isinstance(inner, exp.Column) and known.get(inner.name) == out.pg_type):
            continue
        alias.set("this", exp.cast(inner, target, dialect="duckdb"))


def _projection_type(p: exp.Expression, known: dict[str, str]) -> str:
    inner = p.this if isinstance(p, exp.Alias) else p
    if isinstance(inner, exp.Column) and inner.name in known:
        return known[inner.name]
    if isinstance(inner, exp.Sub) and all(
        side.type is not None and side.type.is_type(exp.DataType.Type.DATE) for side in (inner.this, inner.expression)
    ):
        return "int4"  # date − date is a number of days (sqlglot types it DATE), e.g. MAX(d) − MIN(d)
    return _pg_type(p.type)


def _pg_type(dt: exp.DataType | None) -> str:
    if dt is None:
        return "text"
    t = exp.DataType.Type
    table = [
        ((t.TINYINT, t.SMALLINT), "int2"),
        ((t.INT,), "int4"),
        ((t.BIGINT, t.UINT, t.UBIGINT, t.INT128, t.UINT128), "int8"),
        ((t.DOUBLE, t.FLOAT), "float8"),
        ((t.DECIMAL, t.BIGDECIMAL), "numeric"),
        ((t.BOOLEAN,), "bool"),
        ((t.DATE,), "date"),
        ((t.TIMESTAMP, t.DATETIME), "timestamp"),
        ((t.TIMESTAMPTZ,), "timestamptz"),
        ((t.INTERVAL,), "interval"),
    ]
    for kinds, name in table:
        if dt.is_type(*kinds):
            return name
    if dt.is_type(*exp.DataType.TEXT_TYPES):
        return "text"
    return "float8" if dt.is_type(exp.DataType.Type.UNKNOWN) else "text"
