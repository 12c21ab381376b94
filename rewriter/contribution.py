"""Pass 7: contribution bounding — the bounded SQL and the statistics it returns (DESIGN §1).

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
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from sqlglot import exp

from dpsql.errors import LimitExceeded, NumericValueOutOfRange, PrivacyViolation
from dpsql.rewriter import guards
from dpsql.rewriter.analyze import AggregateSpec, QueryShape
from dpsql.rewriter.bounds import Bounds, interval
from dpsql.rewriter.plan import AggregateRelease, KeyColumn, Statistic
from dpsql.rewriter.totalize import Families, totalize, type_family
from dpsql.schema import TableInfo

GRID_BITS = 24  # per-row values use at most 2^24 grid steps on each side of zero
SQUARE_BITS = 12  # squared deviations (VAR, STDDEV) use at most 2^12 steps each side, so ≤ 2^24 squared
MAX_INPUT_BOUND = 10**18  # an aggregate's input range must fit exact engine decimals (DECIMAL(38)) with its grid


@dataclass(frozen=True)
class KeySource:
    """Where a group key's values come from when they are public."""

    values: tuple[object, ...] | None = None  # declared in the policy (`values = [...]`)
    table: TableInfo | None = None  # a public table's column
    column: str | None = None


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


@dataclass(frozen=True)
class Grid:
    """A fixed-point grid for one aggregate input: values clamped to [lower, upper], step 2^exponent."""

    lower: Fraction
    upper: Fraction
    exponent: int
    integer_input: bool

    @property
    def step(self) -> Fraction:
        """The value of one integer unit."""
        return Fraction(2) ** self.exponent

    @property
    def lo(self) -> int:
        """Smallest per-row integer."""
        return math.floor(self.lower / self.step)

    @property
    def hi(self) -> int:
        """Largest per-row integer."""
        return math.ceil(self.upper / self.step)

    @property
    def mid(self) -> int:
        """The centre used by centred sums (AVG, VAR)."""
        return (self.lo + self.hi) // 2


def make_grid(lower: Fraction, upper: Fraction, *, integer_input: bool) -> Grid:
    """The grid for a clamp range: about 2^24 steps for the largest magnitude; step 1 for small integers.

    >>> g = make_grid(Fraction(0), Fraction(5000), integer_input=False)
    >>> g.step, g.lo, g.hi
    (Fraction(1, 2048), 0, 10240000)
    >>> make_grid(Fraction(0), Fraction(100), integer_input=True).step
    Fraction(1, 1)
    """
    m = max(abs(lower), abs(upper))
    if m == 0:
        return Grid(lower, upper, 0, integer_input)
    e = m.numerator.bit_length() - m.denominator.bit_length()  # about log2(m)
    while Fraction(2) ** e < m:
        e += 1
    while Fraction(2) ** (e - 1) >= m:
        e -= 1
    exponent = e - GRID_BITS
    if integer_input:
        exponent = max(exponent, 0)
    return Grid(lower, upper, exponent, integer_input)


def decimal_literal(value: Fraction) -> exp.Expression:
    """An exact SQL numeric literal for a terminating decimal (negative values as unary minus)."""
    d = _exact_decimal(abs(value))
    text = format(d, "f")
    lit = exp.Literal.number(text)
    return exp.Neg(this=lit) if value < 0 else lit


def _exact_decimal(v: Fraction) -> Decimal:
    den = v.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        raise ValueError(f"{v} is not a terminating decimal")
    digits = max(twos, fives)
    return Decimal(v.numerator * (10**digits) // v.denominator) / Decimal(10**digits)


def build_bounded(shape: QueryShape, ctx: BoundingContext) -> Bounded:
    """Build the bounded query for ``shape``; see the module docstring for its guarantees."""
    tp = ctx.private.policy
    assert tp.privacy_unit is not None
    max_rows, max_groups = tp.max_rows, tp.max_groups
    alias = ctx.private_alias

    row_cols: list[exp.Expression] = [exp.alias_(exp.column(tp.privacy_unit, table=alias, quoted=True), "__dp_uid", copy=False)]
    key_cols: list[KeyColumn] = []
    filters: list[exp.Expression] = [exp.column(tp.privacy_unit, table=alias, quoted=True).is_(exp.null()).not_()]
    for i, key in enumerate(shape.keys):
        name = f"__dp_k{i}"
        total = totalize(key, ctx.dialect, ctx.families)
        if ctx.dialect in ("duckdb", "spark") and not isinstance(key, exp.Column) and type_family(key, ctx.families) == "int":
            total = guards.integer_cast(total, "int8")  # integer arithmetic ran in DOUBLE; NULL beyond BIGINT
        elif type_family(key, ctx.families) == "float":
            # -0.0 and 0.0 form one group, whose printed key would be whichever row came first —
            # possibly another unit's. Adding +0.0 maps -0.0 to 0.0 (IEEE 754), so the key text
            # no longer depends on other rows.
            total = exp.Add(this=exp.paren(total, copy=False), expression=exp.Literal.number("0.0"))
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

    partials: list[exp.Expression] = []
    stats: list[Statistic] = []
    stat_index: dict[str, str] = {}
    input_cols: dict[str, str] = {}
    grids: dict[str, Grid] = {}

    def input_column(node: exp.Expression, *, grid: Grid | None) -> str:
        key = ("g:" if grid else "x:") + node.sql()
        if key not in input_cols:
            name = f"__dp_{'g' if grid else 'x'}{len(input_cols)}"
            total = totalize(node, ctx.dialect, ctx.families)
            value = _grid_expr(total, grid) if grid else total
            row_cols.append(exp.alias_(value, name, copy=False))
            input_cols[key] = name
        return input_cols[key]

    def stat(
        key: str, kind: str, partial: exp.Expression, linf: int, description: str, *, grid: Fraction = Fraction(1), weight: int = 1
    ) -> str:
        if key not in stat_index:
            name = f"__dp_s{len(stats)}"
            partials.append(exp.alias_(partial, f"__dp_p{len(stats)}", copy=False))
            stats.append(Statistic(name, kind, description, max(1, linf), grid, weight))  # type: ignore[arg-type]
            stat_index[key] = name
        return stat_index[key]

    def count_stat(node: exp.Expression | None, label: str, col: str | None = None) -> str:
        if node is None:
            partial = _least(exp.Count(this=exp.Star()), exp.Literal.number(max_rows))
            return stat("count:*", "count", partial, max_rows, f"COUNT(*): ≤ {max_rows} rows per unit and group")
        if f"count:{node.sql()}" in stat_index:
            return stat_index[f"count:{node.sql()}"]
        col = col or input_column(node, grid=None)
        partial = _least(exp.Count(this=exp.column(col)), exp.Literal.number(max_rows))
        return stat(f"count:{node.sql()}", "count", partial, max_rows, f"COUNT({label}): ≤ {max_rows} rows per unit and group")

    def grid_for(spec: AggregateSpec) -> Grid:
        assert spec.input is not None
        key = spec.input.sql()
        if key not in grids:
            rng = interval(spec.input, ctx.bounds)
            if not rng.bounded:
                cols = sorted({c.name for c in spec.input.find_all(exp.Column) if c.table == alias})
                names = ", ".join(cols) or spec.input.sql("postgres")
                raise PrivacyViolation(
                    f"{spec.label} needs bounds: no lower/upper is declared for {names}",
                    hint="declare lower and upper for the column in the policy, or clamp it in the query with "
                    "LEAST(GREATEST(col, low), high)",
                )
            assert rng.lo is not None and rng.hi is not None
            if max(abs(rng.lo), abs(rng.hi)) > MAX_INPUT_BOUND:
                raise NumericValueOutOfRange(
                    f"{spec.label} would clamp its input to [{_fmt(rng.lo)}, {_fmt(rng.hi)}], beyond ±{MAX_INPUT_BOUND:.0e}",
                    hint="clamp the expression to a smaller range with LEAST(GREATEST(expr, low), high); no budget was spent",
                )
            fam = type_family(spec.input, ctx.families)
            grids[key] = make_grid(rng.lo, rng.hi, integer_input=(fam == "int" and rng.lo.denominator == 1 and rng.hi.denominator == 1))
        return grids[key]

    releases: list[AggregateRelease] = []
    units_column: str | None = None
    for spec in shape.aggregates:
        if spec.kind == "count_star" and max_rows == 1:
            # With one row per unit and group, a unit's clamped COUNT(*) partial is exactly 1 in
            # every group it keeps, so the bounded COUNT(*) *is* the distinct-unit count: one
            # statistic, and under partition selection the threshold's own noisy count.
            units_column = units_column or "__dp_units"
            releases.append(AggregateRelease("count", spec.label, ("__dp_units",), integer=True))
        elif spec.kind == "count_star":
            releases.append(AggregateRelease("count", spec.label, (count_stat(None, "*"),), integer=True))
        elif spec.kind == "count_col":
            assert spec.input is not None
            s = count_stat(spec.input, pretty(spec.input))
            releases.append(AggregateRelease("count", spec.label, (s,), integer=True))
        elif spec.kind == "count_units":
            units_column = units_column or "__dp_units"
            releases.append(AggregateRelease("count_units", spec.label, ("__dp_units",), integer=True))
        elif spec.kind == "sum":
            g = grid_for(spec)
            col = input_column(spec.input, grid=g)  # type: ignore[arg-type]
            lo, hi = max_rows * min(g.lo, 0), max_rows * max(g.hi, 0)
            partial = _clamp_int(_coalesce0(exp.Sum(this=exp.column(col))), lo, hi)
            desc = f"SUM({pretty(spec.input)}) clamped to [{_fmt(g.lower)}, {_fmt(g.upper)}] per row, grid {_fmt(g.step)}"  # type: ignore[union-attr]
            s = stat(f"sum:{col}", "sum", partial, max(abs(lo), abs(hi)), desc, grid=g.step)
            releases.append(
                AggregateRelease("sum", spec.label, (s,), g.lower, g.upper, integer=g.integer_input and g.exponent == 0)
            )
        else:  # avg, var_*, stddev_*
            g = grid_for(spec)
            col = input_column(spec.input, grid=g)  # type: ignore[arg-type]
            n = count_stat(spec.input, pretty(spec.input), col)  # type: ignore[arg-type]
            centred = exp.Sub(this=exp.column(col), expression=exp.Literal.number(g.mid))
            c_lo, c_hi = g.lo - g.mid, g.hi - g.mid
            lo, hi = max_rows * c_lo, max_rows * c_hi
            partial = _clamp_int(_scaled_to_kept_rows(exp.Sum(this=centred), col, max_rows), lo, hi)
            label = pretty(spec.input)  # type: ignore[arg-type]
            desc = f"SUM({label} - {_fmt(g.mid * g.step)}) clamped to [{_fmt(g.lower)}, {_fmt(g.upper)}] per row, grid {_fmt(g.step)}"
            s = stat(f"csum:{col}", "sum", partial, max(abs(lo), abs(hi)), desc, grid=g.step, weight=3)
            names = [n, s]
            if spec.kind != "avg":
                # Squares on a coarser grid (at most 2^SQUARE_BITS steps each side), so the sum of
                # squares and its noise stay far inside the sampler's integer range.
                shift = max(0, max(abs(c_lo), abs(c_hi)).bit_length() - SQUARE_BITS)
                coarse: exp.Expression = exp.paren(centred.copy())
                if shift:
                    coarse = exp.paren(exp.IntDiv(this=coarse, expression=exp.Literal.number(2**shift)))
                c_max = -(-max(abs(c_lo), abs(c_hi)) // 2**shift)
                sq = exp.Mul(this=coarse, expression=coarse.copy())
                sq_hi = max_rows * c_max * c_max
                sq_grid = (g.step * 2**shift) ** 2
                partial = _least(_scaled_to_kept_rows(exp.Sum(this=sq), col, max_rows), exp.Literal.number(sq_hi))
                desc = f"SUM(({label} - centre)^2) per row, grid {_fmt(sq_grid)}"
                names.append(stat(f"csumsq:{col}", "sum", partial, sq_hi, desc, grid=sq_grid, weight=3))
            releases.append(
                AggregateRelease(spec.kind, spec.label, tuple(names), g.lower, g.upper, center=g.mid * g.step)  # type: ignore[arg-type]
            )

    keys_public = all(src is not None for src in ctx.key_sources)
    if not keys_public and shape.keys:
        units_column = "__dp_units"

    rows = exp.select(*row_cols, copy=False)
    source = shape.select
    rows.set("from_", _total_from(source.args["from_"], ctx))
    rows.set("joins", [_total_join(j, ctx) for j in source.args.get("joins") or []])
    where = source.args.get("where")
    if where is not None:
        filters.insert(0, totalize(where.this, ctx.dialect, ctx.families))
    rows.set("where", exp.Where(this=exp.and_(*filters)))

    key_names = [k.column for k in key_cols]
    uid_keys = [exp.column("__dp_uid"), *(exp.column(k) for k in key_names)]
    if _one_row_per_unit(source, ctx):
        # The engine enforces one row per unit and nothing joins: every unit has exactly one
        # (unit, group) row, so the per-unit aggregation is the identity (a unit's COUNT is its one
        # row, its SUM that row's value) and it touches one group (≤ max_groups). The partials are
        # computed per row, with the same clamps, and no ranking is needed — same result, no
        # per-unit GROUP BY or window.
        per_unit = exp.select(*uid_keys, *(_row_level(p) for p in partials), copy=False).from_(exp.to_table("__dp_rows"), copy=False)
        ctx.notes.append("one row per unit (the engine enforces the privacy unit unique): bounds applied per row")
        return _finish(shape, ctx, key_cols, key_names, stats, releases, units_column, keys_public, rows, per_unit, None, max_groups)
    need_rank = bool(shape.keys) and not _few_public_keys(ctx, max_groups)
    # With several rows allowed per group, a unit keeps the groups where it has the most rows (up
    # to max_rows), ties broken by the salted hash: still a function of the unit's own rows only,
    # and it keeps more of the data than a hash order alone (less bounding bias).
    weigh = need_rank and max_rows > 1
    weight = [exp.alias_(_least(exp.Count(this=exp.Star()), exp.Literal.number(max_rows)), "__dp_w", copy=False)] if weigh else []
    per_unit = (
        exp.select(*uid_keys, *partials, *weight, copy=False)
        .from_(exp.to_table("__dp_rows"), copy=False)
        .group_by(*(c.copy() for c in uid_keys), copy=False)
    )

    ranked: exp.Select | None = None
    if need_rank:
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

    return _finish(shape, ctx, key_cols, key_names, stats, releases, units_column, keys_public, rows, per_unit, ranked, max_groups)


def _finish(
    shape: QueryShape,
    ctx: BoundingContext,
    key_cols: list[KeyColumn],
    key_names: list[str],
    stats: list[Statistic],
    releases: list[AggregateRelease],
    units_column: str | None,
    keys_public: bool,
    rows: exp.Select,
    per_unit: exp.Select,
    ranked: exp.Select | None,
    max_groups: int,
) -> Bounded:
    """The last layer: at most ``max_groups`` ranked groups per unit, then exact totals per group."""
    final_from = "__dp_ranked" if ranked is not None else "__dp_per_unit"
    finals: list[exp.Expression] = [exp.column(k) for k in key_names]
    for i, st in enumerate(stats):
        finals.append(exp.alias_(_coalesce0(exp.Sum(this=exp.column(f"__dp_p{i}"))), st.column, copy=False))
    if units_column:
        finals.append(exp.alias_(exp.Count(this=exp.Star()), units_column, copy=False))
    final = exp.select(*finals, copy=False).from_(exp.to_table(final_from), copy=False)
    if ranked is not None:
        final = final.where(exp.LTE(this=exp.column("__dp_rank"), expression=exp.Literal.number(max_groups)), copy=False)
    if key_names:
        final = final.group_by(*(exp.column(k) for k in key_names), copy=False)
    final = final.with_("__dp_rows", as_=rows, copy=False).with_("__dp_per_unit", as_=per_unit, copy=False)
    if ranked is not None:
        final = final.with_("__dp_ranked", as_=ranked, copy=False)

    all_stats = list(stats)
    if units_column:
        all_stats.append(Statistic(units_column, "units", "distinct units per group", 1, Fraction(1), 1))
    public_keys = _public_keys_query(shape, ctx, key_cols) if keys_public and shape.keys else None
    return Bounded(final, tuple(key_cols), tuple(all_stats), tuple(releases), units_column, keys_public, public_keys)


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


def _scaled_to_kept_rows(total: exp.Expression, col: str, max_rows: int) -> exp.Expression:
    """A unit's sum scaled to the rows its count keeps: ``SUM(v) * LEAST(n, R) // n`` (0 when n = 0).

    For AVG and VAR the count partial is ``LEAST(n, R)``; scaling the centred sums by the same
    ``min(n, R)/n`` makes a unit with more than R rows contribute R rows at its own mean, so the
    ratio stays consistent. The result is a function of the unit's own rows, bounded by
    R·max|value| like the clamp (which is still applied).
    """
    n = exp.Count(this=exp.column(col))
    kept = _least(n.copy(), exp.Literal.number(max_rows))
    scaled = exp.IntDiv(this=exp.Mul(this=total, expression=kept), expression=exp.Nullif(this=n, expression=exp.Literal.number(0)))
    return _coalesce0(scaled)


def _least(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return exp.Least(this=a, expressions=[b], ignore_nulls=True)


def _coalesce0(a: exp.Expression) -> exp.Expression:
    return exp.Coalesce(this=a, expressions=[exp.Literal.number(0)])


def _clamp_int(node: exp.Expression, lo: int, hi: int) -> exp.Expression:
    return _least(exp.Greatest(this=node, expressions=[_int_literal(lo)], ignore_nulls=True), _int_literal(hi))


def _int_literal(v: int) -> exp.Expression:
    return exp.Neg(this=exp.Literal.number(-v)) if v < 0 else exp.Literal.number(v)


def _grid_expr(value: exp.Expression, g: Grid) -> exp.Expression:
    """Clamp ``value`` to [lower, upper] (NULL stays NULL, NaN goes to upper) and map it to grid integers."""
    lower, upper = decimal_literal(g.lower), decimal_literal(g.upper)
    clamped = exp.Case(
        ifs=[
            exp.If(this=exp.LT(this=value.copy(), expression=lower.copy()), true=lower.copy()),
            exp.If(this=exp.GT(this=value.copy(), expression=upper.copy()), true=upper.copy()),
        ],
        default=value.copy(),
    )
    if g.integer_input and g.exponent == 0:
        if isinstance(value, exp.Column):
            return clamped
        # integer arithmetic may run in DOUBLE (see totalize); the clamped value is an exact integer
        return exp.Cast(this=clamped, to=exp.DataType.build("BIGINT"))
    scale = decimal_literal(Fraction(2) ** -g.exponent)
    scaled = exp.Mul(this=exp.paren(clamped), expression=scale)
    return exp.Cast(this=exp.Round(this=scaled), to=exp.DataType.build("BIGINT"))


def _total_from(from_: exp.From, ctx: BoundingContext) -> exp.From:
    return from_.copy()


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
    salt = exp.Literal.string(ctx.salt)
    if ctx.dialect == "duckdb":
        return exp.Anonymous(this="HASH", expressions=[*(exp.column(k) for k in key_names), salt])
    parts = [exp.Cast(this=exp.column(k), to=exp.DataType.build("TEXT")) for k in key_names]
    sep = exp.Literal.string("\x1f")
    return exp.Anonymous(this="MD5", expressions=[exp.Anonymous(this="CONCAT_WS", expressions=[sep, *parts, salt])])


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
    if col.table == ctx.private_alias:
        c = ctx.private.column(col.name)
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
        lit = decimal_literal(Fraction(str(v))) if isinstance(v, float) else _int_literal(v)
        if pg_type in ("float4", "float8"):  # typed like the column, so keys compare equal in Python too
            return exp.Cast(this=lit, to=exp.DataType.build("DOUBLE" if pg_type == "float8" else "REAL"))
        return lit
    lit = exp.Literal.string(str(v))
    if pg_type in ("date", "timestamp", "timestamptz"):
        return exp.Cast(this=lit, to=exp.DataType.build(pg_type.upper().replace("TIMESTAMPTZ", "TIMESTAMPTZ")))
    return lit


def _public_keys_query(shape: QueryShape, ctx: BoundingContext, keys: list[KeyColumn]) -> exp.Expression:
    parts: list[exp.Expression] = []
    total_static = 1
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
            tp = src.table.policy
            table = exp.Table(this=exp.to_identifier(tp.table, quoted=True), db=exp.to_identifier(tp.schema, quoted=True))
            sub = (
                exp.select(exp.alias_(exp.column(src.column, quoted=True), name))
                .distinct(copy=False)
                .from_(table, copy=False)
                .subquery(f"__dp_kv{i}", copy=False)
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


def pretty(node: exp.Expression) -> str:
    """The expression as PostgreSQL SQL without identifier quotes (for EXPLAIN and error messages)."""
    return node.sql("postgres", identify=False, normalize=False).replace('"', "")


def make_salt(sql_text: str) -> str:
    """A data-independent salt for the per-unit group selection order, derived from the query text."""
    return hashlib.sha256(sql_text.encode()).hexdigest()[:16]


def _fmt(v: Fraction) -> str:
    if v.denominator == 1:
        return str(v.numerator)
    if v.numerator == 1 and v.denominator & (v.denominator - 1) == 0:
        return f"2^-{v.denominator.bit_length() - 1}"
    return f"{float(v):g}"


def column_families(relations: Mapping[str, TableInfo]) -> dict[str, str]:
    """``alias.column`` → type family for every column of the given relations."""
    from dpsql.schema import FLOAT_TYPES, INTEGER_TYPES, TEXT_TYPES

    out: dict[str, str] = {}
    for alias, info in relations.items():
        for c in info.columns:
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
