"""Pass 10 (``contribution``): contribution bounding — the bounded SQL and the statistics it returns (DESIGN §1).

The bounded query has three layers:

1. ``__dp_rows``: the analyst's FROM/JOIN/WHERE (made total), one row per input row, with the
   privacy unit, the group keys and each aggregate input (clamped to its public range and put on a
   fixed-point grid: an exact integer);
2. ``__dp_per_unit``: one row per (unit, group) with each partial clamped — counts to ``max_rows``,
   sums to ``max_rows·[min(L,0), max(U,0)]``;
3. at most ``max_groups`` groups per unit (the unit's groups with the most rows, up to ``max_rows``,
   first; ties in a deterministic salted hash order over the unit's own keys),
   then one row per group with exact integer totals (``HUGEINT`` in DuckDB, ``numeric`` in PostgreSQL).

So one unit changes each statistic of each of at most ``max_groups`` groups by at most the
statistic's ``max_contribution``, whatever the data — the sensitivities come from the policy alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from sqlglot import exp

from dpsql.errors import LimitExceeded
from dpsql.rewriter import aggregates, distinct_sql
from dpsql.rewriter.aggregates.base import (
    GRID_BITS,
    MAX_INPUT_BOUND,
    Builder,
    Grid,
    canonical_value,
    coalesce0,
    decimal_literal,
    int_literal,
    least,
    make_grid,
    pretty,
)
from dpsql.rewriter.aggregates.variance import SQUARE_BITS
from dpsql.rewriter.analyze import QueryShape
from dpsql.rewriter.bounds import Bounds
from dpsql.rewriter.plan import AggregateRelease, KeyColumn, QuantileStatistic, Statistic
from dpsql.rewriter.quantile_sql import BIN_COLUMN, histogram_query
from dpsql.rewriter.totalize import Families, totalize, type_family
from dpsql.schema import TableInfo

__all__ = [
    "GRID_BITS",
    "MAX_INPUT_BOUND",
    "SQUARE_BITS",
    "Bounded",
    "BoundingContext",
    "Grid",
    "KeySource",
    "build_bounded",
    "column_families",
    "decimal_literal",
    "make_grid",
    "make_salt",
    "pretty",
]


@dataclass(frozen=True)
class KeySource:
    """Where a group key's values come from when they are public."""

    values: tuple[object, ...] | None = None  # declared in the policy (`values = [...]`)
    table: TableInfo | None = None  # a public table's column
    column: str | None = None
    alias: str | None = None  # the public table's alias in the query: keys of one alias come from one row


@dataclass
class BoundingContext:
    """Everything the bounding pass needs besides the query shape."""

    dialect: str
    private: TableInfo
    private_alias: str
    families: Families
    bounds: Bounds
    key_sources: list[KeySource | None]  # per key; None = not public
    salt: str
    max_released_groups: int = 10_000
    notes: list[str] = field(default_factory=list)
    time_bounds: dict[tuple[str, str], tuple[object, object]] = field(default_factory=dict)  # date/timestamp columns
    unit: exp.Expression | None = None  # the row's unit when private tables join (rewriter.joins); else the table's
    joined: Mapping[str, TableInfo] = field(default_factory=dict)  # alias → private table, every side of such a join


@dataclass
class Bounded:
    """The result of the bounding pass."""

    query: exp.Select
    keys: tuple[KeyColumn, ...]
    stats: tuple[Statistic, ...]
    aggregates: tuple[AggregateRelease, ...]
    units_column: str | None
    keys_public: bool
    public_keys_query: exp.Expression | None
    quantiles: tuple[QuantileStatistic, ...] = ()
    histograms: tuple[tuple[exp.Expression, int], ...] = ()  # (bounded histogram query, candidates)
    max_contributions: int | None = None  # the L1 row cap applied in ``__dp_capped``


def build_bounded(shape: QueryShape, ctx: BoundingContext) -> Bounded:
    """Build the bounded query for ``shape``; see the module docstring for its guarantees.

    Each aggregate's module (:mod:`dpsql.rewriter.aggregates`) adds its row-level inputs,
    clamped partials and statistics to one :class:`~dpsql.rewriter.aggregates.base.Builder`;
    this function wraps them in the three layers.
    """
    tp = ctx.private.policy
    assert tp.privacy_unit is not None
    unit = ctx.unit.copy() if ctx.unit is not None else exp.column(tp.privacy_unit, table=ctx.private_alias, quoted=True)
    b = Builder(
        dialect=ctx.dialect,
        alias=ctx.private_alias,
        families=ctx.families,
        bounds=ctx.bounds,
        max_rows=tp.max_rows,
        row_cols=[exp.alias_(unit.copy(), "__dp_uid", copy=False)],
        time_bounds=dict(ctx.time_bounds),
        unit_bounds={
            c.name: (c.unit_lower, c.unit_upper)
            for c in tp.columns.values()
            if c.unit_lower is not None and c.unit_upper is not None
        },
        max_contributions=tp.max_contributions,
        max_groups=tp.max_groups,
        distinct_limits={c.name: c.max_distinct for c in tp.columns.values() if c.max_distinct is not None},
    )
    filters: list[exp.Expression] = [unit.is_(exp.null()).not_()]
    key_cols = _key_columns(shape, ctx, b.row_cols, filters)
    releases = [aggregates.module_for_spec(spec.kind).bound(spec, b) for spec in shape.aggregates]
    keys_public = all(src is not None for src in ctx.key_sources)
    if not keys_public and shape.keys:
        b.units()  # partition selection thresholds the distinct-unit count

    rows = _rows_query(shape.select, ctx, b.row_cols, filters)
    key_names = [k.column for k in key_cols]
    capped = None
    # The cap binds only when a unit's kept rows could exceed it: without GROUP BY a unit adds at
    # most max_rows rows to its one group, so with max_rows ≤ k the cap changes no sensitivity
    # (Δ₁ = min(L∞, k·c) = L∞) and is left out — it costs two window sorts over every row.
    # (Per-unit sum bounds count all of a unit's rows, so there the cap keeps its meaning: k rows.)
    cap_binds = bool(shape.keys) or tp.max_rows > (tp.max_contributions or 0) or bool(b.unit_bounds)
    if tp.max_contributions is not None and cap_binds and not _one_row_per_unit(shape.select, ctx):
        capped = _capped_rows(ctx, b, rows, key_names, tp.max_contributions)
    per_unit, ranked = _per_unit_query(shape, ctx, b, key_names, "__dp_capped" if capped is not None else "__dp_rows")
    final = _final_query(b, key_names, rows, per_unit, ranked, tp.max_groups, capped, ctx.salt)
    all_stats = list(b.stats)
    if b.units_column:
        all_stats.append(Statistic(b.units_column, "units", "distinct units per group", 1, Fraction(1), 1))
    public_keys = _public_keys_query(shape, ctx, key_cols) if keys_public and shape.keys else None
    histograms = _histogram_queries(shape, ctx, b, rows, key_names)
    return Bounded(
        final, tuple(key_cols), tuple(all_stats), tuple(releases), b.units_column, keys_public, public_keys,
        tuple(b.quantiles), histograms, tp.max_contributions,
    )


def _capped_rows(
    ctx: BoundingContext, b: Builder, rows: exp.Select, key_names: list[str], k: int
) -> list[tuple[str, exp.Select]]:
    """The CTEs ending in ``__dp_capped``: at most ``k`` rows per unit across all groups (``max_contributions``).

    Which rows a unit keeps is a function of its own rows, the query text's salt and nothing else:
    rows are ordered first by whether they are beyond ``max_rows`` in their group (rows the count
    clamp would not use go last), then by the unit's own group order (MD5 of its id, the keys and
    the salt, as for ``max_groups``), then by an MD5 of the row's content (id, keys, grid inputs, the
    NULL-ness of counted inputs — every column the later layers read). Rows that tie are equal in
    all of those, so which of them is kept changes nothing downstream.

    Only units with more than ``k`` rows are hashed and ranked (``__dp_unitrows`` counts each
    unit's rows; a unit with ≤ k rows keeps them all whatever their order), so the two window
    sorts run over the heavy units' rows instead of every row; the result is the same row set.
    (``__dp_rows`` already dropped rows whose unit is NULL, so the ``IN`` tests never meet one.)
    """
    sep = exp.Literal.string("\x1f")
    names = [e.alias_or_name for e in rows.expressions]
    parts: list[exp.Expression] = []
    for n in names:
        col = exp.column(n)
        if n.startswith("__dp_x"):  # read only by COUNT(x): its NULL-ness is all that matters
            parts.append(exp.Case(ifs=[exp.If(this=col.is_(exp.null()), true=exp.Literal.string("n"))], default=exp.Literal.string("v")))
        else:
            text = exp.DPipe(this=exp.Literal.string("+"), expression=exp.Cast(this=col, to=exp.DataType.build("TEXT")))
            parts.append(exp.Coalesce(this=text, expressions=[exp.Literal.string("-")]))
    parts.append(exp.Literal.string(ctx.salt))
    row_hash = exp.Anonymous(this="MD5", expressions=[exp.Anonymous(this="CONCAT_WS", expressions=[sep, *parts])])
    in_group = exp.Window(
        this=exp.RowNumber(),
        partition_by=[exp.column("__dp_uid"), *(exp.column(k_) for k_ in key_names)],
        order=exp.Order(expressions=[exp.Ordered(this=row_hash.copy())]),
    )
    unit_rows = (
        exp.select(exp.column("__dp_uid"), exp.alias_(exp.Count(this=exp.Star()), "__dp_un", copy=False), copy=False)
        .from_(exp.to_table("__dp_rows"), copy=False)
        .group_by(exp.column("__dp_uid"), copy=False)
    )

    def units_with(op: type[exp.LTE] | type[exp.GT]) -> exp.In:
        units = exp.select(exp.column("__dp_uid"), copy=False).from_(exp.to_table("__dp_unitrows"), copy=False).where(
            op(this=exp.column("__dp_un"), expression=exp.Literal.number(k)), copy=False
        )
        return exp.In(this=exp.column("__dp_uid"), query=exp.Subquery(this=units))

    numbered = (
        exp.select(
            exp.Star(), exp.alias_(row_hash, "__dp_rh", copy=False), exp.alias_(in_group, "__dp_rig", copy=False), copy=False
        )
        .from_(exp.to_table("__dp_rows"), copy=False)
        .where(units_with(exp.GT), copy=False)
    )
    beyond = exp.Case(
        ifs=[exp.If(this=exp.GT(this=exp.column("__dp_rig"), expression=exp.Literal.number(b.max_rows)), true=exp.Literal.number(1))],
        default=exp.Literal.number(0),
    )
    order = [exp.Ordered(this=beyond)]
    if key_names:
        order.append(exp.Ordered(this=_hash_order(key_names, ctx)))
    order.append(exp.Ordered(this=exp.column("__dp_rh")))
    overall = exp.Window(this=exp.RowNumber(), partition_by=[exp.column("__dp_uid")], order=exp.Order(expressions=order))
    ranked = exp.select(exp.Star(), exp.alias_(overall, "__dp_rn", copy=False), copy=False).from_(
        exp.to_table("__dp_numbered"), copy=False
    )
    light = exp.select(*(exp.column(n) for n in names), copy=False).from_(exp.to_table("__dp_rows"), copy=False).where(
        units_with(exp.LTE), copy=False
    )
    heavy = exp.select(*(exp.column(n) for n in names), copy=False).from_(exp.to_table("__dp_rowrank"), copy=False).where(
        exp.LTE(this=exp.column("__dp_rn"), expression=exp.Literal.number(k)), copy=False
    )
    capped = exp.union(light, heavy, distinct=False, copy=False)
    ctx.notes.append(
        f"each unit keeps at most {k} row(s) across all groups (max_contributions), chosen by a hash of its own rows"
    )
    return [("__dp_unitrows", unit_rows), ("__dp_numbered", numbered), ("__dp_rowrank", ranked), ("__dp_capped", capped)]


def _histogram_queries(
    shape: QueryShape, ctx: BoundingContext, b: Builder, rows: exp.Select, key_names: list[str]
) -> tuple[tuple[exp.Expression, int], ...]:
    """The bounded histogram query of each quantile input (``quantile_sql.histogram_query``), over
    the same rows, keys and key filters as ``__dp_rows``."""
    if not b.histogram_bins:
        return ()
    tp = ctx.private.policy
    head = rows.expressions[: 1 + len(key_names)]  # __dp_uid, then the keys
    out = []
    for bin_expr, candidates in b.histogram_bins:
        h_rows = rows.copy()
        h_rows.set("expressions", [e.copy() for e in head] + [exp.alias_(bin_expr.copy(), BIN_COLUMN, copy=False)])
        q = histogram_query(
            h_rows,
            key_names,
            max_rows=tp.max_rows,
            max_groups=tp.max_groups,
            rank_groups=bool(shape.keys) and not _few_public_keys(ctx, tp.max_groups),
            salt=ctx.salt,
            dialect=ctx.dialect,
        )
        out.append((q, candidates))
    return tuple(out)


def _key_columns(
    shape: QueryShape, ctx: BoundingContext, row_cols: list[exp.Expression], filters: list[exp.Expression]
) -> list[KeyColumn]:
    """Add each group key to the row layer (made total) and its declared values to ``filters``."""
    key_cols: list[KeyColumn] = []
    for i, key in enumerate(shape.keys):
        name = f"__dp_k{i}"
        total = canonical_value(key, ctx.dialect, ctx.families)  # -0.0 → 0.0, one NaN, integer casts
        row_cols.append(exp.alias_(total, name, copy=False))
        src = ctx.key_sources[i]
        key_cols.append(
            KeyColumn(
                column=name,
                label=pretty(key),
                pg_type=_key_pg_type(key, ctx),
                public_values=src.values if src is not None and src.values is not None else None,
            )
        )
        if src is not None and src.values is not None:
            filters.append(exp.In(this=total.copy(), expressions=[_value_literal(v, key, ctx) for v in src.values]))
    return key_cols


def _rows_query(
    source: exp.Select, ctx: BoundingContext, row_cols: list[exp.Expression], filters: list[exp.Expression]
) -> exp.Select:
    """Layer 1, ``__dp_rows``: the analyst's FROM/JOIN/WHERE (made total), one row per input row."""
    rows = exp.select(*row_cols, copy=False)
    rows.set("from_", source.args["from_"].copy())
    rows.set("joins", [_total_join(j, ctx) for j in source.args.get("joins") or []])
    where = source.args.get("where")
    if where is not None:
        filters.insert(0, totalize(where.this, ctx.dialect, ctx.families))
    rows.set("where", exp.Where(this=exp.and_(*filters)))
    return rows


def _per_unit_query(
    shape: QueryShape, ctx: BoundingContext, b: Builder, key_names: list[str], source: str = "__dp_rows"
) -> tuple[exp.Select, exp.Select | None]:
    """Layer 2, ``__dp_per_unit`` (one row per unit and group, partials clamped), and the ranking
    ``__dp_ranked`` that keeps ≤ ``max_groups`` groups per unit (None when no unit can exceed it)."""
    max_rows, max_groups = b.max_rows, ctx.private.policy.max_groups
    uid_keys = [exp.column("__dp_uid"), *(exp.column(k) for k in key_names)]
    if _one_row_per_unit(shape.select, ctx):
        # The engine enforces one row per unit and nothing joins: every unit has exactly one
        # (unit, group) row, so the per-unit aggregation is the identity (a unit's COUNT is its one
        # row, its SUM that row's value) and it touches one group (≤ max_groups). The partials are
        # computed per row, with the same clamps, and no ranking is needed — same result, no
        # per-unit GROUP BY or window.
        per_unit = exp.select(*uid_keys, *(_row_level(p) for p in b.partials), copy=False).from_(
            exp.to_table("__dp_rows"), copy=False
        )
        ctx.notes.append("one row per unit (the engine enforces the privacy unit unique): bounds applied per row")
        return per_unit, None
    need_rank = bool(shape.keys) and not _few_public_keys(ctx, max_groups)
    # With several rows allowed per group, a unit keeps the groups where it has the most rows (up
    # to max_rows), ties broken by the salted hash: still a function of the unit's own rows only,
    # and it keeps more of the data than a hash order alone (less bounding bias).
    weigh = need_rank and max_rows > 1
    weight = [exp.alias_(least(exp.Count(this=exp.Star()), exp.Literal.number(max_rows)), "__dp_w", copy=False)] if weigh else []
    per_unit = (
        exp.select(*uid_keys, *b.partials, *weight, copy=False)
        .from_(exp.to_table(source), copy=False)
        .group_by(*(c.copy() for c in uid_keys), copy=False)
    )
    if not need_rank:
        return per_unit, None
    order = _hash_order(key_names, ctx)
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=[exp.column("__dp_uid")],
        order=exp.Order(
            expressions=[*([exp.Ordered(this=exp.column("__dp_w"), desc=True)] if weigh else []), exp.Ordered(this=order)]
        ),
    )
    ranked = exp.select(exp.Star(), exp.alias_(rank, "__dp_rank", copy=False), copy=False).from_(
        exp.to_table("__dp_per_unit"), copy=False
    )
    how = "its fullest groups first, ties by a hash of its own keys" if weigh else "by a hash of its own keys"
    ctx.notes.append(f"each unit keeps at most {max_groups} group(s), chosen {how}")
    return per_unit, ranked


def _final_query(
    b: Builder,
    key_names: list[str],
    rows: exp.Select,
    per_unit: exp.Select,
    ranked: exp.Select | None,
    max_groups: int,
    capped: list[tuple[str, exp.Select]] | None = None,
    salt: str = "",
) -> exp.Select:
    """Layer 3: at most ``max_groups`` ranked groups per unit, then exact totals per group (with
    the COUNT/SUM(DISTINCT) chains of :mod:`~dpsql.rewriter.distinct_sql` merged in)."""
    final_from = "__dp_ranked" if ranked is not None else "__dp_per_unit"
    finals: list[exp.Expression] = [exp.column(k) for k in key_names]
    for i, st in enumerate(b.stats):
        if i in b.distinct_of:
            continue
        total = coalesce0(exp.Sum(this=exp.column(f"__dp_p{i}")))
        shift = b.total_shifts[i]
        if shift:  # non-negative totals rounded once per group (see Builder.stat)
            half = exp.Add(this=total, expression=exp.Literal.number(2 ** (shift - 1)))
            total = exp.IntDiv(this=exp.paren(half, copy=False), expression=exp.Literal.number(2**shift))
        finals.append(exp.alias_(total, st.column, copy=False))
    if b.units_column:
        finals.append(exp.alias_(exp.Count(this=exp.Star()), b.units_column, copy=False))
    distinct = bool(b.distinct_inputs)
    if not finals and not distinct:  # only DP selections (quantiles, MIN/MAX) and no group keys: nothing to read here
        return exp.select(exp.alias_(exp.Literal.number(1), "__dp_none", copy=False), copy=False)
    main: exp.Select | None = None
    if len(finals) > len(key_names) or not distinct:
        main = exp.select(*finals, copy=False).from_(exp.to_table(final_from), copy=False)
        if ranked is not None:
            main = main.where(exp.LTE(this=exp.column("__dp_rank"), expression=exp.Literal.number(max_groups)), copy=False)
        if key_names:
            main = main.group_by(*(exp.column(k) for k in key_names), copy=False)
    tail: list[tuple[str, exp.Query]] = []
    if distinct:
        source = "__dp_capped" if capped else "__dp_rows"
        tail = list(distinct_sql.distinct_ctes(b, key_names, source, ranked is not None, max_groups, salt))
        merge_ctes, final = distinct_sql.merged(b, key_names, main)
        tail += merge_ctes
    else:
        assert main is not None
        final = main
    final = final.with_("__dp_rows", as_=rows, copy=False)
    for name, cte in capped or ():
        final = final.with_(name, as_=cte, copy=False)
    final = final.with_("__dp_per_unit", as_=per_unit, copy=False)
    if ranked is not None:
        final = final.with_("__dp_ranked", as_=ranked, copy=False)
    for name, cte in tail:
        final = final.with_(name, as_=cte, copy=False)
    return final


def _one_row_per_unit(source: exp.Select, ctx: BoundingContext) -> bool:
    """True when the engine enforces one row per unit in the private table and the query reads it
    alone (no join could repeat a row)."""
    from_ = source.args.get("from_")
    return (
        ctx.private.unit_unique
        and not source.args.get("joins")
        and from_ is not None
        and isinstance(from_.this, exp.Table)
    )


def _row_level(partial: exp.Expression) -> exp.Expression:
    """A per-(unit, group) partial for a group holding exactly one row: ``COUNT(*)`` → 1,
    ``COUNT(x)`` → ``x IS NOT NULL`` as 0/1, ``SUM(x)`` → ``x`` (the clamps around them stay)."""

    def one(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Count):
            arg = node.this
            if isinstance(arg, exp.Star):
                return exp.Literal.number(1)
            return exp.Case(
                ifs=[exp.If(this=arg.copy().is_(exp.null()), true=exp.Literal.number(0))], default=exp.Literal.number(1)
            )
        if isinstance(node, exp.Sum):
            return exp.paren(node.this.copy(), copy=False)
        return node

    return partial.copy().transform(one, copy=False)


def _total_join(join: exp.Join, ctx: BoundingContext) -> exp.Join:
    j = join.copy()
    on = j.args.get("on")
    if on is not None:
        j.set("on", totalize(on, ctx.dialect, ctx.families))
    return j


def _few_public_keys(ctx: BoundingContext, max_groups: int) -> bool:
    """True when keys are declared values whose product is ≤ max_groups (no unit can exceed it)."""
    total = 1
    for src in ctx.key_sources:
        if src is None or src.values is None:
            return False
        total *= len(src.values)
    return total <= max_groups


def _hash_order(key_names: list[str], ctx: BoundingContext) -> exp.Expression:
    """The tie-break order of one unit's groups: MD5 of (the unit's id, the group's keys, the salt).

    The unit's id is hashed with the keys, so each unit ranks the groups in its own order (without
    it every unit would keep the same groups: with ``max_groups = 3`` over 5 keys, the last two
    groups would lose every unit). Still a function of the unit's own rows and the query text.
    The same expression on DuckDB and PostgreSQL (``MD5(CONCAT_WS(…))`` of text casts, a NULL key
    as its own marker), so both engines keep the same groups for integer, text and date keys.
    """
    sep = exp.Literal.string("\x1f")
    parts: list[exp.Expression] = [exp.Cast(this=exp.column("__dp_uid"), to=exp.DataType.build("TEXT"))]
    for k in key_names:
        text = exp.DPipe(this=exp.Literal.string("+"), expression=exp.Cast(this=exp.column(k), to=exp.DataType.build("TEXT")))
        parts.append(exp.Coalesce(this=text, expressions=[exp.Literal.string("-")]))
    parts.append(exp.Literal.string(ctx.salt))
    return exp.Anonymous(this="MD5", expressions=[exp.Anonymous(this="CONCAT_WS", expressions=[sep, *parts])])


def _key_pg_type(key: exp.Expression, ctx: BoundingContext) -> str:
    if isinstance(key, exp.Column):
        info = _column_type(key, ctx)
        if info:
            return info
    fam = type_family(key, ctx.families)
    return {
        "int": "int8",
        "float": "float8",
        "numeric": "numeric",
        "text": "text",
        "bool": "bool",
        "date": "date",
        "timestamp": "timestamp",
        "interval": "interval",
    }.get(fam, "text")


def _column_type(col: exp.Column, ctx: BoundingContext) -> str | None:
    if col.table == ctx.private_alias or col.table in ctx.joined:
        c = ctx.joined.get(col.table, ctx.private).column(col.name)
        return c.pg_type if c else None
    for src in ctx.key_sources:
        if src is not None and src.table is not None and src.column == col.name:
            c = src.table.column(col.name)
            return c.pg_type if c else None
    return None


def _value_literal(v: object, key: exp.Expression, ctx: BoundingContext) -> exp.Expression:
    if isinstance(v, bool):
        return exp.Boolean(this=v)
    pg_type = _key_pg_type(key, ctx)
    if isinstance(v, int | float):
        lit = decimal_literal(Fraction(str(v))) if isinstance(v, float) else int_literal(v)
        if pg_type in ("float4", "float8"):  # typed like the column, so keys compare equal in Python too
            return exp.Cast(this=lit, to=exp.DataType.build("DOUBLE" if pg_type == "float8" else "REAL"))
        return lit
    lit = exp.Literal.string(str(v))
    if pg_type in ("date", "timestamp", "timestamptz"):
        return exp.Cast(this=lit, to=exp.DataType.build(pg_type.upper().replace("TIMESTAMPTZ", "TIMESTAMPTZ")))
    return lit


def _public_keys_query(shape: QueryShape, ctx: BoundingContext, keys: list[KeyColumn]) -> exp.Expression:
    """SQL over public data listing every key tuple to release: declared value lists, and per public
    table (alias) the DISTINCT tuples of its key columns — columns of one table come from one row, so
    their tuples are the table's own, never the cross product of each column's values (which made
    ``GROUP BY s_suppkey, s_name, s_address`` of n suppliers n³ groups); sources cross-joined."""
    parts: list[exp.Expression] = []
    total_static = 1
    by_alias: dict[str, tuple[KeySource, list[tuple[str, str]]]] = {}
    for i, (key, src) in enumerate(zip(shape.keys, ctx.key_sources, strict=True)):
        assert src is not None
        name = f"__dp_k{i}"
        if src.values is not None:
            total_static *= len(src.values)
            values = exp.Values(
                expressions=[exp.Tuple(expressions=[_value_literal(v, key, ctx)]) for v in src.values],
                alias=exp.TableAlias(this=exp.to_identifier(f"__dp_kv{i}"), columns=[exp.to_identifier(name)]),
            )
            parts.append(values)
        else:
            assert src.table is not None and src.column is not None
            group = src.alias if src.alias is not None else f"#{i}"
            by_alias.setdefault(group, (src, []))[1].append((src.column, name))
    for j, (src, columns) in enumerate(by_alias.values()):
        assert src.table is not None
        tp = src.table.policy
        table = exp.Table(this=exp.to_identifier(tp.table, quoted=True), db=exp.to_identifier(tp.schema, quoted=True))
        sub = (
            exp.select(*[exp.alias_(exp.column(column, quoted=True), name) for column, name in columns])
            .distinct(copy=False)
            .from_(table, copy=False)
            .subquery(f"__dp_kt{j}", copy=False)
        )
        parts.append(sub)
    if total_static > ctx.max_released_groups:
        raise LimitExceeded(
            f"the query would release {total_static} groups, more than the limit of {ctx.max_released_groups}",
            hint="group by fewer columns or filter the groups",
        )
    q = exp.select(*[exp.column(k.column) for k in keys]).from_(parts[0], copy=False)
    for p in parts[1:]:
        q = q.join(p, join_type="CROSS", copy=False)
    return q


def make_salt(sql_text: str) -> str:
    """A data-independent salt for the per-unit group selection order, derived from the query text.

    >>> make_salt("SELECT COUNT(*) FROM t")
    '7473ab403f2a8e90'
    """
    return hashlib.sha256(sql_text.encode()).hexdigest()[:16]


def column_families(relations: Mapping[str, TableInfo]) -> dict[str, str]:
    """``alias.column`` → type family for every column of the given relations (a keyed table's
    reserved unit column included: :mod:`~dpsql.rewriter.unit_paths`)."""
    from dpsql.schema import FLOAT_TYPES, INTEGER_TYPES, TEXT_TYPES

    out: dict[str, str] = {}
    for alias, info in relations.items():
        for c in (*info.columns, *((info.unit_column,) if info.unit_column is not None else ())):
            t = c.pg_type
            fam = (
                "int" if t in INTEGER_TYPES else
                "float" if t in ("float4", "float8") else
                "numeric" if t in FLOAT_TYPES else
                "text" if t in TEXT_TYPES else
                "timestamp" if t in ("timestamp", "timestamptz") else
                t if t in ("bool", "date", "interval") else "unknown"
            )
            out[f"{alias}.{c.name}"] = fam
    return out
