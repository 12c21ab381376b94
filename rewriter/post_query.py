"""Pass 11 (``post``): post-processing — the analyst's projection, HAVING, ORDER BY and LIMIT over noisy values.

These run after noise, on a small table ``__dp_noisy`` holding one row per released group: the keys
``__dp_k{i}`` and the noisy aggregates ``__dp_a{j}``. Post-processing of DP outputs is free
(Dwork–Roth Prop. 2.1), so HAVING, ORDER BY, LIMIT and arithmetic over aggregates (``SUM(a)/COUNT(*)``)
cost nothing extra and can never see an exact value. When the projection is just keys and
aggregates with no HAVING/ORDER/LIMIT, no query is needed (``output_map``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.schema import MappingSchema

from dpsql.errors import DPSQLError
from dpsql.rewriter import aggregates
from dpsql.rewriter.analyze import AGG_PREFIX, KEY_PREFIX, QueryShape
from dpsql.rewriter.intervals import HALF_WIDTH_PREFIX, INTERVAL_COLUMN, interval_bounds
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
    intervals = _interval_columns([*shape.projections, shape.having, shape.order])
    for name in intervals:
        j = int(_INTERVAL.fullmatch(name).group(1))  # type: ignore[union-attr]
        types.append((name, _PG_TO_DUCK[aggregate_pg_type(releases[j])]))
        pg_types[name] = aggregate_pg_type(releases[j])

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
    if not shape.distinct:
        types += _add_half_widths(q, outputs, releases)
    return Post(number_to_char_calls(q).sql(dialect="duckdb", comments=False), tuple(types), (), outputs)


POST_TO_CHAR = "__dp_to_char_number"  # registered by the post-processor (proxy/post_duckdb.py)


def number_to_char_calls(q: exp.Expression) -> exp.Expression:
    """``to_char(x, pattern)`` of numbers as the post-processor's own function, which prints what
    PostgreSQL prints (:mod:`dpsql.rewriter.number_format`): ``__dp_to_char_number(x::VARCHAR,
    pattern, typeof(x))`` — the value's text keeps exact decimals, its type says how to round."""

    def visit(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.NumberToStr):
            value = node.this
            return exp.Anonymous(
                this=POST_TO_CHAR,
                expressions=[
                    exp.cast(value.copy(), "VARCHAR", dialect="duckdb"),
                    node.args["format"],
                    exp.Anonymous(this="typeof", expressions=[value.copy()]),
                ],
            )
        return node

    return q.transform(visit)


_INTERVAL = re.compile(INTERVAL_COLUMN)
_FLOAT_OUTPUTS = ("float4", "float8", "numeric")


def _interval_columns(parts: list[exp.Expression | None]) -> list[str]:
    """The interval columns (``__dp_a{j}_lo_i{n}`` …) the post-processing parts read, in order."""
    seen: dict[str, None] = {}
    for part in parts:
        if part is None:
            continue
        for col in part.find_all(exp.Column):
            if not col.table and _INTERVAL.fullmatch(col.name):
                seen[col.name] = None
    return list(seen)


def _add_half_widths(q: exp.Select, outputs: tuple[OutputColumn, ...], releases: tuple[AggregateRelease, ...]) -> list[tuple[str, str]]:
    """Append one hidden projection per output: for a floating output over aggregates, the 95%
    half-width of its interval (the release rounds the output to it under ``dp.rounding = 'auto'``
    and drops these columns); NULL otherwise. Returns the interval columns they read."""
    extra: dict[str, str] = {}
    hidden: list[exp.Expression] = []
    for i, out in enumerate(outputs):
        node = q.expressions[i]
        inner = node.this if isinstance(node, exp.Alias) else node
        width: exp.Expression = exp.null()
        if out.pg_type in _FLOAT_OUTPUTS and any(
            c.name.startswith(AGG_PREFIX) and not c.table for c in inner.find_all(exp.Column)
        ):
            plain = inner.copy().transform(_as_aggregate)
            try:
                lo, hi = interval_bounds(plain, "r")
            except DPSQLError:
                lo = hi = None
            if lo is not None and hi is not None:
                # TRY: a bound may overflow where the value does not; rounding then just skips the row
                width = exp.Try(this=exp.Div(
                    this=exp.paren(exp.Sub(this=exp.cast(exp.paren(hi), "DOUBLE"), expression=exp.cast(exp.paren(lo), "DOUBLE"))),
                    expression=exp.Literal.number(2),
                ))
                for col in width.find_all(exp.Column):
                    m = _INTERVAL.fullmatch(col.name)
                    if m is not None:
                        extra[col.name] = _PG_TO_DUCK[aggregate_pg_type(releases[int(m.group(1))])]
        hidden.append(exp.alias_(width, f"{HALF_WIDTH_PREFIX}{_direction(inner)}{i}", quoted=True))
    if not extra:
        return []
    q.set("expressions", [*q.expressions, *hidden])
    return list(extra.items())


def _direction(node: exp.Expression) -> str:
    """How an output is rounded: ``lo`` (down) for a DP_INTERVAL_LOW bound, ``hi`` (up) for a
    DP_INTERVAL_HIGH bound — so rounding only widens an interval — else "" (to nearest)."""
    while isinstance(node, exp.Cast) and not node.meta:
        node = node.this
    side = node.meta.get("dp_interval_side") if node.meta else None
    return side if side in ("lo", "hi") else ""


def _as_aggregate(node: exp.Expression) -> exp.Expression:
    """A DP_INTERVAL_* bound read as its argument, an interval column as its aggregate (rounding
    measures the noise of what the interval bounds)."""
    inner = node.meta.get("dp_interval_of") if node.meta else None
    if isinstance(inner, str):
        return sqlglot.parse_one(inner, read="duckdb")
    if isinstance(node, exp.Column) and not node.table:
        m = _INTERVAL.fullmatch(node.name)
        if m is not None:
            return exp.column(f"{AGG_PREFIX}{m.group(1)}")
    return node


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
    if isinstance(inner, exp.NumberToStr):
        return "text"
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
