"""What every aggregate module shares: the classified spec, the grid, SQL helpers and the builder.

An aggregate module (see :mod:`dpsql.rewriter.aggregates`) receives a :class:`Builder` when the
bounded SQL is built. The builder owns the three layers' column lists: a module asks it for
row-level input columns (:meth:`Builder.input_column`, clamped to a :class:`Grid` when given one),
for per-(unit, group) partials that become noisy statistics (:meth:`Builder.stat`, with the
partial's clamp and its per-group sensitivity), and for the distinct-unit count
(:meth:`Builder.units`). Identical requests are shared between aggregates, so ``SUM(x)`` and
``AVG(x)`` in one query read ``x`` once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from sqlglot import exp

from dpsql.errors import NumericValueOutOfRange, PrivacyViolation, UnsupportedQuery
from dpsql.rewriter import guards
from dpsql.rewriter.bounds import Bounds, interval
from dpsql.rewriter.families import Families, type_family
from dpsql.rewriter.plan import QuantileStatistic, Statistic
from dpsql.rewriter.totalize import totalize

GRID_BITS = 24  # per-row values use at most 2^24 grid steps on each side of zero
MAX_INPUT_BOUND = 10**18  # an aggregate's input range must fit exact engine decimals (DECIMAL(38)) with its grid
UNITS_COLUMN = "__dp_units"

Value = int | float | None


@dataclass(frozen=True)
class AggregateSpec:
    """One distinct aggregate of the query, classified by its module's ``classify``."""

    kind: str  # a SPEC_KINDS entry of the module that classified it (count_star, sum, var_pop …)
    input: exp.Expression | None  # the row-level argument (None for COUNT(*) and COUNT(DISTINCT unit))
    label: str  # SQL of the aggregate as written (qualified), for EXPLAIN
    node: exp.Expression  # the aggregate node (for matching)
    params: tuple[object, ...] = ()  # literal parameters that tell two aggregates apart (a quantile's level)


@dataclass(frozen=True)
class ClassifyContext:
    """What a module's ``classify`` may look at besides the node: the private alias and unit column."""

    alias: str
    unit: str | None
    label: str
    condition: exp.Expression | None  # the FILTER (WHERE …) condition, already unwrapped

    def is_unit(self, node: exp.Expression) -> bool:
        """True when ``node`` is the privacy unit column of the private table."""
        return bool(self.unit) and isinstance(node, exp.Column) and node.table == self.alias and node.name == self.unit

    def filtered(self, value: exp.Expression) -> exp.Expression:
        """``value`` under the FILTER condition (``CASE WHEN cond THEN value END``), or ``value``."""
        if self.condition is None:
            return value
        return exp.Case(ifs=[exp.If(this=self.condition.copy(), true=value.copy())])


def check_row_level(node: exp.Expression) -> None:
    """Refuse an aggregate argument that itself aggregates."""
    if node.find(exp.AggFunc) is not None:
        raise UnsupportedQuery("nested aggregates are not supported", hint="aggregate once per expression")


def numeric_argument(node: exp.Expression, ctx: ClassifyContext, *, distinct_hint: str = "remove DISTINCT") -> exp.Expression:
    """The row-level argument of a one-argument numeric aggregate (SUM, AVG, VAR …), checked:
    present, not DISTINCT (0A000, naming the aggregate as written), no nested aggregate, not over
    the privacy unit (42501)."""
    name = node.sql_name()
    arg = node.this
    if isinstance(arg, exp.Distinct):
        raise UnsupportedQuery(
            f"{ctx.label} is not supported: DISTINCT is supported only in COUNT(DISTINCT x) and SUM(DISTINCT x)",
            hint=distinct_hint,
        )
    if arg is None:
        raise UnsupportedQuery(f"{name} needs an argument")
    check_row_level(arg)
    if any(ctx.is_unit(c) for c in arg.find_all(exp.Column)):
        raise PrivacyViolation(
            f"{name} over the privacy unit column is not allowed",
            hint="the privacy unit identifies individuals; aggregate another column",
        )
    return arg


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


# --- SQL helpers for partials -------------------------------------------------------------------


def least(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    """``LEAST(a, b)`` ignoring NULLs."""
    return exp.Least(this=a, expressions=[b], ignore_nulls=True)


def coalesce0(a: exp.Expression) -> exp.Expression:
    """``COALESCE(a, 0)``."""
    return exp.Coalesce(this=a, expressions=[exp.Literal.number(0)])


def int_literal(v: int) -> exp.Expression:
    """An integer literal (negative values as unary minus)."""
    return exp.Neg(this=exp.Literal.number(-v)) if v < 0 else exp.Literal.number(v)


def clamp_int(node: exp.Expression, lo: int, hi: int) -> exp.Expression:
    """``LEAST(GREATEST(node, lo), hi)``: the partial's clamp."""
    return least(exp.Greatest(this=node, expressions=[int_literal(lo)], ignore_nulls=True), int_literal(hi))


def scaled_to_kept_rows(total: exp.Expression, col: str, max_rows: int) -> exp.Expression:
    """A unit's sum scaled to the rows its count keeps: ``SUM(v) * LEAST(n, R) // n`` (0 when n = 0).

    For AVG and VAR the count partial is ``LEAST(n, R)``; scaling the centred sums by the same
    ``min(n, R)/n`` makes a unit with more than R rows contribute R rows at its own mean, so the
    ratio stays consistent. The result is a function of the unit's own rows, bounded by
    R·max|value| like the clamp (which is still applied).
    """
    n = exp.Count(this=exp.column(col))
    kept = least(n.copy(), exp.Literal.number(max_rows))
    scaled = exp.IntDiv(this=exp.Mul(this=total, expression=kept), expression=exp.Nullif(this=n, expression=exp.Literal.number(0)))
    return coalesce0(scaled)


def grid_expr(value: exp.Expression, g: Grid) -> exp.Expression:
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


def canonical_value(node: exp.Expression, dialect: str, families: Families) -> exp.Expression:
    """``node`` made total, in a form whose value (and text) depends on the row alone, for a value
    that is compared for equality with other rows' values (a group key, a COUNT(DISTINCT) value).

    Integer arithmetic that runs in DOUBLE (DuckDB, Spark) is cast back to BIGINT (NULL beyond
    it); -0.0 becomes 0.0 (one group printed as whichever row came first — possibly another
    unit's) and, on DuckDB, every NaN the positive one (NaN and -NaN are one group there but
    print differently).
    """
    total = totalize(node, dialect, families)
    fam = type_family(node, families)
    if dialect in ("duckdb", "spark") and not isinstance(node, exp.Column) and fam == "int":
        return guards.integer_cast(total, "int8")
    if fam == "float":
        total = exp.Add(this=exp.paren(total, copy=False), expression=exp.Literal.number("0.0"))
        if dialect == "duckdb":
            nan = exp.Cast(this=exp.Literal.string("NaN"), to=exp.DataType.build("DOUBLE"))
            total = exp.Case(ifs=[exp.If(this=exp.IsNan(this=total.copy()), true=nan)], default=total)
    return total


def pretty(node: exp.Expression) -> str:
    """The expression as PostgreSQL SQL without identifier quotes (for EXPLAIN and error messages)."""
    return node.sql("postgres", identify=False, normalize=False).replace('"', "")


def fmt(v: Fraction) -> str:
    """A short human form of a grid value or bound (``2^-11`` for powers of two below 1)."""
    if v.denominator == 1:
        return str(v.numerator)
    if v.numerator == 1 and v.denominator & (v.denominator - 1) == 0:
        return f"2^-{v.denominator.bit_length() - 1}"
    return f"{float(v):g}"


@dataclass(frozen=True)
class DistinctInput:
    """A row-level value whose distinct values per group are released (COUNT/SUM(DISTINCT …)).

    ``column`` is the ``__dp_rows`` column (NULL: no value). Each unit keeps at most ``per_unit``
    distinct non-NULL values in each of its kept groups, the first by MD5 of (unit id, value,
    salt); the group's statistic is the number (``n``) or the sum (``s``) of the distinct values
    kept by any unit.
    """

    column: str
    per_unit: int
    with_sum: bool = False


# --- the builder --------------------------------------------------------------------------------


@dataclass
class Builder:
    """The columns of the bounded SQL's layers, collected from the aggregate modules.

    ``row_cols`` are ``__dp_rows``' columns (privacy unit and keys first, then inputs);
    ``partials[i]`` is the per-(unit, group) partial of ``stats[i]`` (``__dp_p{i}``, summed per
    group into ``stats[i].column``). Every sensitivity recorded comes from the policy
    (``max_rows``, declared bounds), never from data.
    """

    dialect: str
    alias: str
    families: Families
    bounds: Bounds
    max_rows: int
    row_cols: list[exp.Expression]
    partials: list[exp.Expression] = field(default_factory=list)
    stats: list[Statistic] = field(default_factory=list)
    units_column: str | None = None
    total_shifts: list[int] = field(default_factory=list)  # per statistic: group total rounded to 2^shift
    time_bounds: dict[tuple[str, str], tuple[object, object]] = field(default_factory=dict)
    histogram_bins: list[tuple[exp.Expression, int]] = field(default_factory=list)  # (bin expression, candidates)
    quantiles: list[QuantileStatistic] = field(default_factory=list)
    # per-unit bounds (unit_lower, unit_upper) of the private table's columns, by column name
    unit_bounds: dict[str, tuple[Fraction, Fraction]] = field(default_factory=dict)
    max_contributions: int | None = None  # the L1 row cap (rows per unit across all groups), when set
    max_groups: int = 1  # the table's max_groups (groups a unit may keep)
    # per-column max_distinct (distinct values a unit keeps per group in COUNT/SUM(DISTINCT col)), by column name
    distinct_limits: dict[str, int] = field(default_factory=dict)
    # COUNT/SUM(DISTINCT …) inputs, and per statistic index computed from one: (input index, "n" | "s")
    distinct_inputs: list[DistinctInput] = field(default_factory=list)
    distinct_of: dict[int, tuple[int, str]] = field(default_factory=dict)
    _hist_index: dict[str, int] = field(default_factory=dict)
    _stat_index: dict[str, str] = field(default_factory=dict)
    _input_cols: dict[str, str] = field(default_factory=dict)
    _grids: dict[str, Grid] = field(default_factory=dict)

    def input_column(self, node: exp.Expression, *, grid: Grid | None) -> str:
        """The ``__dp_rows`` column holding ``node`` per row (made total; clamped to ``grid`` and
        mapped to its integers when given one)."""
        key = (f"g{grid.lower}:{grid.upper}:{grid.exponent}:" if grid else "x:") + node.sql()
        if key not in self._input_cols:
            name = f"__dp_{'g' if grid else 'x'}{len(self._input_cols)}"
            total = totalize(node, self.dialect, self.families)
            value = grid_expr(total, grid) if grid else total
            self.row_cols.append(exp.alias_(value, name, copy=False))
            self._input_cols[key] = name
        return self._input_cols[key]

    def value_column(self, node: exp.Expression) -> str:
        """The ``__dp_rows`` column ``__dp_v{n}`` holding ``node``'s value per row, made total and
        canonical (:func:`canonical_value`); the row cap hashes its full text, since its value
        (not only its NULL-ness) is read downstream."""
        key = "v:" + node.sql()
        if key not in self._input_cols:
            name = f"__dp_v{len(self._input_cols)}"
            self.row_cols.append(exp.alias_(canonical_value(node, self.dialect, self.families), name, copy=False))
            self._input_cols[key] = name
        return self._input_cols[key]

    def distinct_limit(self, node: exp.Expression) -> tuple[int, str]:
        """(k, where k comes from): the distinct values one unit keeps per group of ``node`` — the
        column's ``max_distinct`` when ``node`` is a bare private column that declares it (or that
        column under a FILTER), else ``max_rows``. A policy value, never a data value."""
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Case) and len(node.args.get("ifs") or []) == 1 and node.args.get("default") is None:
            node = node.args["ifs"][0].args.get("true")
        if isinstance(node, exp.Column) and node.table == self.alias and node.name in self.distinct_limits:
            return self.distinct_limits[node.name], f"max_distinct of {node.name}"
        return self.max_rows, "max_rows"

    def distinct_stat(
        self,
        column: str,
        measure: str,
        linf: int,
        description: str,
        *,
        per_unit: int | None = None,
        kind: str = "count",
        grid: Fraction = Fraction(1),
        l1: int | None = None,
    ) -> str:
        """A statistic over the distinct values of ``column`` kept per (unit, group), ≤ ``per_unit``
        (default ``max_rows``) per unit: their number (``measure`` "n") or their sum ("s",
        ``column`` then holds grid integers). It has no per-unit partial; ``contribution``
        computes it in its own CTEs. The caller's ``linf`` must bound ``per_unit`` values' worth of
        change per group."""
        k = per_unit if per_unit is not None else self.max_rows
        key = f"distinct:{measure}:{column}:{k}"
        if key in self._stat_index:
            return self._stat_index[key]
        j = next((i for i, d in enumerate(self.distinct_inputs) if (d.column, d.per_unit) == (column, k)), None)
        if j is None:
            j = len(self.distinct_inputs)
            self.distinct_inputs.append(DistinctInput(column, k, measure == "s"))
        elif measure == "s" and not self.distinct_inputs[j].with_sum:
            self.distinct_inputs[j] = DistinctInput(column, k, True)
        name = f"__dp_s{len(self.stats)}"
        self.distinct_of[len(self.stats)] = (j, measure)
        l1 = max(1, l1) if l1 is not None and self.max_contributions is not None else None
        self.stats.append(Statistic(name, kind, description, max(1, linf), grid, 1, l1))  # type: ignore[arg-type]
        self.total_shifts.append(0)
        self._stat_index[key] = name
        return name

    def stat(
        self,
        key: str,
        kind: str,
        partial: exp.Expression,
        linf: int,
        description: str,
        *,
        grid: Fraction = Fraction(1),
        weight: int = 1,
        total_shift: int = 0,
        l1: int | None = None,
        counts_rows: bool = False,
    ) -> str:
        """The statistic for ``key``, added when new: ``partial`` per (unit, group), which must be
        clamped so one unit changes the group's released total by at most ``linf`` integer units.

        With ``total_shift = k > 0`` the partials must be non-negative, and the released total is the
        group's exact sum rounded to a multiple of 2^k (``(T + 2^(k-1)) // 2^k``, in units of
        ``grid``): the rounding happens once per group, so its error is at most half a unit of the
        total. ``linf`` is then in the rounded units (a partial bound P gives ``P // 2^k + 1``).

        ``l1`` bounds the unit's change summed over all groups, in the same units, given the row
        cap ``max_contributions``; it is recorded only when that cap is on. ``counts_rows`` marks
        COUNT(*) over the kept rows (≥ 1 per kept (unit, group), see ``Statistic.counts_rows``).
        """
        if key not in self._stat_index:
            name = f"__dp_s{len(self.stats)}"
            self.partials.append(exp.alias_(partial, f"__dp_p{len(self.stats)}", copy=False))
            l1 = max(1, l1) if l1 is not None and self.max_contributions is not None else None
            self.stats.append(Statistic(name, kind, description, max(1, linf), grid, weight, l1, counts_rows))  # type: ignore[arg-type]
            self.total_shifts.append(total_shift)
            self._stat_index[key] = name
        return self._stat_index[key]

    def rows_l1(self, per_row: int) -> int | None:
        """The L1 bound of a statistic whose partial grows by at most ``per_row`` per kept row:
        ``max_contributions × per_row`` (None when no row cap is set)."""
        return None if self.max_contributions is None else self.max_contributions * per_row

    def unit_bounded_column(self, spec: AggregateSpec) -> tuple[str, Fraction, Fraction] | None:
        """(column, unit_lower, unit_upper) when ``spec.input`` is a bare private column with
        per-unit bounds (or that column under a FILTER: ``CASE WHEN cond THEN col END``)."""
        node = spec.input
        if isinstance(node, exp.Case) and len(node.args.get("ifs") or []) == 1 and node.args.get("default") is None:
            node = node.args["ifs"][0].args.get("true")
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Column) and node.table == self.alias and node.name in self.unit_bounds:
            lo, hi = self.unit_bounds[node.name]
            return node.name, lo, hi
        return None

    def unit_grid(self, spec: AggregateSpec, column: str, unit_lo: Fraction, unit_hi: Fraction) -> Grid:
        """The row grid of a per-unit-bounded input: rows clamped to the column's declared
        ``lower``/``upper`` or, without them, to ``[min(unit_lower, 0), max(unit_upper, 0)]`` (a
        derived row range that keeps the engine total and changes nothing when the rows lie in it,
        e.g. non-negative values under ``unit_lower ≥ 0``); its step puts the unit range on about
        2^GRID_BITS steps too, so per-unit totals stay far inside the samplers' range."""
        assert spec.input is not None
        rng = interval(spec.input, self.bounds)
        if rng.bounded:
            assert rng.lo is not None and rng.hi is not None
            lo, hi = rng.lo, rng.hi
        else:
            lo, hi = min(unit_lo, Fraction(0)), max(unit_hi, Fraction(0))
        fam = type_family(spec.input, self.families)
        integer = fam == "int" and all(v.denominator == 1 for v in (lo, hi, unit_lo, unit_hi))
        hull = make_grid(min(lo, unit_lo), max(hi, unit_hi), integer_input=integer)
        return Grid(lo, hi, hull.exponent, integer)

    def has_stat(self, key: str) -> str | None:
        """The statistic already made for ``key``, if any."""
        return self._stat_index.get(key)

    def count_stat(self, node: exp.Expression | None, label: str, col: str | None = None) -> str:
        """COUNT(*) (``node`` None) or COUNT(node) per (unit, group), clamped to ``max_rows``."""
        r = self.max_rows
        if node is None:
            partial = least(exp.Count(this=exp.Star()), exp.Literal.number(r))
            return self.stat(
                "count:*", "count", partial, r, f"COUNT(*): ≤ {r} rows per unit and group", l1=self.rows_l1(1), counts_rows=True
            )
        found = self.has_stat(f"count:{node.sql()}")
        if found:
            return found
        col = col or self.input_column(node, grid=None)
        partial = least(exp.Count(this=exp.column(col)), exp.Literal.number(r))
        return self.stat(
            f"count:{node.sql()}", "count", partial, r, f"COUNT({label}): ≤ {r} rows per unit and group", l1=self.rows_l1(1)
        )

    def histogram(self, key: str, bin_expr: exp.Expression, candidates: int) -> int:
        """The histogram (index) of the row-level candidate index ``bin_expr``, shared by every
        quantile of the same input and grid (``key``)."""
        if key not in self._hist_index:
            self._hist_index[key] = len(self.histogram_bins)
            self.histogram_bins.append((bin_expr, candidates))
        return self._hist_index[key]

    def quantile(self, q: QuantileStatistic) -> str:
        """Add a DP selection over a histogram; returns its column name."""
        for old in self.quantiles:
            if (old.histogram, old.target, old.alpha) == (q.histogram, q.target, q.alpha):
                return old.column
        self.quantiles.append(q)
        return q.column

    def units(self) -> str:
        """The distinct-unit count per kept group (one per unit: sensitivity 1), added last."""
        self.units_column = self.units_column or UNITS_COLUMN
        return self.units_column

    def grid_for(self, spec: AggregateSpec) -> Grid:
        """The clamp range and grid of ``spec.input``, by interval arithmetic over declared bounds.

        Raises PrivacyViolation (42501) when a column has no declared bounds and
        NumericValueOutOfRange when the range is beyond exact engine decimals.
        """
        assert spec.input is not None
        key = spec.input.sql()
        if key not in self._grids:
            rng = interval(spec.input, self.bounds)
            if not rng.bounded:
                cols = sorted({c.name for c in spec.input.find_all(exp.Column) if c.table == self.alias})
                names = ", ".join(cols) or spec.input.sql("postgres")
                unit_only = [c for c in cols if c in self.unit_bounds]
                if unit_only:
                    raise PrivacyViolation(
                        f"{spec.label} needs per-row bounds: {', '.join(unit_only)} declares only per-unit bounds "
                        "(unit_lower/unit_upper), which bound SUM(col) and AVG(col) of the bare column",
                        hint="declare lower and upper for the column in the policy, or clamp it in the query with "
                        "LEAST(GREATEST(col, low), high)",
                    )
                raise PrivacyViolation(
                    f"{spec.label} needs bounds: no lower/upper is declared for {names}",
                    hint="declare lower and upper for the column in the policy, or clamp it in the query with "
                    "LEAST(GREATEST(col, low), high)",
                )
            assert rng.lo is not None and rng.hi is not None
            if max(abs(rng.lo), abs(rng.hi)) > MAX_INPUT_BOUND:
                raise NumericValueOutOfRange(
                    f"{spec.label} would clamp its input to [{fmt(rng.lo)}, {fmt(rng.hi)}], beyond ±{MAX_INPUT_BOUND:.0e}",
                    hint="clamp the expression to a smaller range with LEAST(GREATEST(expr, low), high); no budget was spent",
                )
            fam = type_family(spec.input, self.families)
            integer = fam == "int" and rng.lo.denominator == 1 and rng.hi.denominator == 1
            self._grids[key] = make_grid(rng.lo, rng.hi, integer_input=integer)
        return self._grids[key]

