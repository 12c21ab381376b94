"""Quantiles and MIN/MAX in SQL: the calls analysts write, the public candidate grid, and the
bounded histogram query the DP selection reads (:mod:`dpsql.accountant.quantiles`).

Spellings (PostgreSQL and DuckDB), after sqlglot's parse in the PostgreSQL dialect:

* ``PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY x [DESC])``, ``PERCENTILE_DISC(q) …`` (DESC asks
  for the 1 − q quantile);
* ``MEDIAN(x)``; DuckDB's ``QUANTILE_CONT(x, q)``, ``QUANTILE_DISC(x, q)``, ``QUANTILE(x, q)``
  and ``APPROX_QUANTILE(x, q)``;
* ``MIN(x)``, ``MAX(x)`` of a bounded numeric, date or timestamp column or expression.

``q`` must be a numeric literal in [0, 1] (6 decimal digits at most); several calls per query are
fine (each is its own DP selection, one histogram per input shared by all its levels). An array of
levels is refused (one call per level).

**The grid** (:func:`grid_for`) is public: numeric inputs use the interval of their declared
bounds, dates the days and timestamps the seconds since the declared lower bound (an integral
grid). **The histogram query** (:func:`histogram_query`) reads the same rows as the bounded
query (FROM/JOIN/WHERE made total, the same group keys and key filters) and then:

1. maps each row's value to its candidate index with :func:`bin_expression` — clamped to the
   bounds, nearest candidate, NULL stays NULL (dropped), NaN goes to the top; comparisons and
   arithmetic on values already inside the bounds only, so it cannot raise on any value;
2. keeps at most ``max_rows`` values per (unit, group), chosen by a salted hash of the unit, the
   value's candidate and the query (a function of the unit's own rows);
3. keeps at most ``max_groups`` groups per unit (its fullest groups first, ties by a salted hash
   of its own keys, then the keys);
4. returns one row per (group, candidate) with the exact count of kept values.

So one unit changes at most ``max_groups`` groups' histograms, each by at most ``max_rows``
values — the sensitivity :func:`dpsql.accountant.quantiles.score_sensitivity` assumes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from sqlglot import exp

from dpsql.errors import InvalidParameterValue, UnsupportedQuery
from dpsql.rewriter.quantile_grid import QuantileGrid, alpha_fraction

QuantileKind = Literal["cont", "disc", "min", "max"]
ValueKind = Literal["int", "float", "date", "timestamp"]

BIN_COLUMN = "__dp_bin"
COUNT_COLUMN = "__dp_n"
_EPOCH_KINDS = ("date", "timestamp")
EXTREME_NOTE = "a DP estimate near the {which}; it may lie inside the data"


@dataclass(frozen=True)
class QuantileCall:
    """One quantile-like aggregate: its kind, row-level input and level (None for MIN/MAX)."""

    kind: QuantileKind
    input: exp.Expression
    alpha: Fraction | None


def _level(node: exp.Expression | None, name: str) -> Fraction:
    if isinstance(node, exp.Array):
        raise UnsupportedQuery(f"{name} with an array of levels is not supported", hint=f"write one {name}(q) per level")
    neg = False
    if isinstance(node, exp.Neg):
        neg, node = True, node.this
    if not isinstance(node, exp.Literal) or node.is_string:
        raise UnsupportedQuery(f"the level of {name} must be a numeric literal", hint="e.g. 0.5 for the median")
    try:
        a = alpha_fraction(("-" if neg else "") + node.this)
    except ValueError as e:
        raise InvalidParameterValue(f"{name}: {e}", hint="use a level between 0 and 1 with at most 6 decimals") from None
    return a


def quantile_call(node: exp.Expression) -> QuantileCall | None:
    """The quantile call ``node`` spells, or None when it is no quantile-like aggregate.

    >>> from sqlglot import parse_one
    >>> c = quantile_call(parse_one("SELECT PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY t.x DESC) FROM t").selects[0])
    >>> c.kind, c.input.sql(), c.alpha
    ('cont', 't.x', Fraction(1, 10))
    >>> quantile_call(parse_one("SELECT QUANTILE_DISC(t.x, 0.25) FROM t").selects[0]).alpha
    Fraction(1, 4)
    >>> quantile_call(parse_one("SELECT MEDIAN(t.x) FROM t").selects[0]).kind
    'cont'
    """
    if isinstance(node, exp.WithinGroup):
        inner, order = node.this, node.expression
        if not isinstance(inner, exp.PercentileCont | exp.PercentileDisc):
            return None
        name = "PERCENTILE_CONT" if isinstance(inner, exp.PercentileCont) else "PERCENTILE_DISC"
        terms = order.expressions if isinstance(order, exp.Order) else []
        if len(terms) != 1:
            raise UnsupportedQuery(f"{name} needs WITHIN GROUP (ORDER BY one expression)")
        term = terms[0]
        value = term.this if isinstance(term, exp.Ordered) else term
        a = _level(inner.this, name)
        if isinstance(term, exp.Ordered) and term.args.get("desc"):
            a = 1 - a
        return QuantileCall("cont" if name == "PERCENTILE_CONT" else "disc", value, a)
    if isinstance(node, exp.Median):
        return QuantileCall("cont", node.this, Fraction(1, 2))
    if isinstance(node, exp.PercentileCont | exp.PercentileDisc) and node.expression is not None:
        name = "QUANTILE_CONT" if isinstance(node, exp.PercentileCont) else "QUANTILE_DISC"
        return QuantileCall("cont" if name == "QUANTILE_CONT" else "disc", node.this, _level(node.expression, name))
    if isinstance(node, exp.ApproxQuantile):
        return QuantileCall("cont", node.this, _level(node.args.get("quantile"), "APPROX_QUANTILE"))
    if isinstance(node, exp.Quantile):  # DuckDB's QUANTILE is QUANTILE_DISC
        return QuantileCall("disc", node.this, _level(node.args.get("quantile"), "QUANTILE"))
    if isinstance(node, exp.Anonymous) and str(node.name).upper() in ("QUANTILE_CONT", "QUANTILE_DISC"):
        name = str(node.name).upper()
        if len(node.expressions) != 2:
            raise UnsupportedQuery(f"{name} takes (expression, level)")
        kind: QuantileKind = "cont" if name == "QUANTILE_CONT" else "disc"
        return QuantileCall(kind, node.expressions[0], _level(node.expressions[1], name))
    if isinstance(node, exp.Min | exp.Max):
        if node.expressions:
            raise UnsupportedQuery(f"{node.sql_name()} takes one argument")
        return QuantileCall("min" if isinstance(node, exp.Min) else "max", node.this, None)
    return None


# ---------------------------------------------------------------------------------------------
# grid and value encoding


@dataclass(frozen=True)
class ValueGrid:
    """The public candidate grid of one quantile input and how its candidates decode.

    ``grid`` is over encoded values: the value itself (numbers), days (dates) or seconds
    (timestamps) since ``origin``, the declared lower bound."""

    grid: QuantileGrid
    value_kind: ValueKind
    origin: dt.date | dt.datetime | None = None

    def decode(self, index: int) -> int | float | dt.date | dt.datetime:
        """The released value of candidate ``index`` (post-processing of a public index)."""
        c = self.grid.candidate(index)
        if self.value_kind == "date":
            assert isinstance(self.origin, dt.date)
            return self.origin + dt.timedelta(days=int(c))
        if self.value_kind == "timestamp":
            assert isinstance(self.origin, dt.datetime)
            return self.origin + dt.timedelta(seconds=int(c))
        if self.value_kind == "int" and c.denominator == 1:
            return int(c)
        return float(c)

    @property
    def pg_type(self) -> str:
        """PostgreSQL type of a released DISC/MIN/MAX value (CONT over numbers is float8)."""
        return {"int": "int8", "float": "float8", "date": "date", "timestamp": "timestamp"}[self.value_kind]

    def describe(self) -> str:
        """The grid in words, for EXPLAIN."""
        step = self.grid.step
        if self.value_kind == "date":
            return f"{self.grid.size} candidate dates from {self.origin}, every {step} day(s)"
        if self.value_kind == "timestamp":
            return f"{self.grid.size} candidate timestamps from {self.origin}, every {step} second(s)"
        return f"{self.grid.size} candidates from {_num(self.grid.lower)} to {_num(self.grid.upper)}, step {_num(step)}"


def _num(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{float(v):g}"


def numeric_grid(lower: Fraction, upper: Fraction, *, integral: bool) -> ValueGrid:
    """The grid for a numeric input with clamp range [lower, upper] (from declared bounds)."""
    return ValueGrid(QuantileGrid.from_bounds(lower, upper, integral=integral), "int" if integral else "float")


def time_grid(lower: dt.date, upper: dt.date) -> ValueGrid:
    """The grid for a date (days) or timestamp (seconds) input with declared bounds."""
    if isinstance(lower, dt.datetime):
        assert isinstance(upper, dt.datetime)
        span = int((upper - lower).total_seconds())
        return ValueGrid(QuantileGrid.from_bounds(0, span, integral=True), "timestamp", lower)
    span = (upper - lower).days
    return ValueGrid(QuantileGrid.from_bounds(0, span, integral=True), "date", lower)


def _time_literal(v: dt.date) -> exp.Expression:
    if isinstance(v, dt.datetime):
        return exp.Cast(this=exp.Literal.string(v.isoformat(sep=" ")), to=exp.DataType.build("TIMESTAMP"))
    return exp.Cast(this=exp.Literal.string(v.isoformat()), to=exp.DataType.build("DATE"))


def _dec(v: Fraction) -> exp.Expression:
    from dpsql.rewriter.aggregates.base import decimal_literal

    return decimal_literal(v)


def bin_expression(value: exp.Expression, vg: ValueGrid, dialect: str = "duckdb", family: str | None = None) -> exp.Expression:
    """The candidate index (BIGINT in 0…k−1) of a total row-level ``value``, NULL when it is NULL.

    Values at or below the first candidate map to 0, at or above the last to k−1 (NaN too: all
    three engines order NaN above every number), others to the nearest candidate; the arithmetic
    only ever sees values strictly inside the grid, so it cannot raise.

    On Spark (``dialect="spark"``, ``family`` the input's type family) the index is computed with
    DuckDB's arithmetic, step by step, so both engines bin every value alike: the offset from the
    lower bound exact in the input's own type (integers as ``DECIMAL(38, 0)``: no overflow; dates
    by ``DATEDIFF``, timestamps by ``UNIX_MICROS`` differences — Spark's ``date - date`` is an
    interval), then one rounding to DOUBLE, divided by the step as a DOUBLE, plus 0.5, ``FLOOR``
    (Spark's FLOOR of a DOUBLE is a BIGINT and saturates, it never raises under ANSI on or off),
    capped at k−1. Even outside the CASE guard no step can raise: decimal offsets of values in the
    bounds fit, and DOUBLE arithmetic is IEEE.

    >>> from sqlglot import parse_one
    >>> vg = numeric_grid(Fraction(0), Fraction(100), integral=True)
    >>> print(bin_expression(parse_one("t.x"), vg).sql("duckdb", pretty=True))
    CASE
      WHEN t.x IS NULL
      THEN NULL
      WHEN t.x <= 0
      THEN 0
      WHEN t.x >= 100
      THEN 100
      ELSE LEAST(CAST(FLOOR((
        t.x - 0
      ) / 1 + 0.5) AS BIGINT), 100)
    END
    """
    g = vg.grid
    last = exp.Literal.number(g.size - 1)
    if dialect == "spark":
        return _spark_bin(value, vg, family)
    if vg.value_kind in _EPOCH_KINDS:
        assert vg.origin is not None
        lo = _time_literal(vg.origin)
        hi_value = (
            vg.origin + dt.timedelta(days=int(g.upper))
            if vg.value_kind == "date"
            else vg.origin + dt.timedelta(seconds=int(g.upper))
        )
        hi = _time_literal(hi_value)
        diff: exp.Expression = exp.Sub(this=value.copy(), expression=lo.copy())
        if vg.value_kind == "timestamp":
            diff = exp.Extract(this=exp.var("EPOCH"), expression=exp.paren(diff, copy=False))
        offset = exp.paren(diff, copy=False)
    else:
        lo, hi = _dec(g.lower), _dec(g.upper)
        offset = exp.paren(exp.Sub(this=value.copy(), expression=lo.copy()), copy=False)
    scaled = exp.Add(this=exp.Div(this=offset, expression=_dec(g.step)), expression=exp.Literal.number("0.5"))
    index = exp.Cast(this=exp.Floor(this=scaled), to=exp.DataType.build("BIGINT"))
    inside = exp.Least(this=index, expressions=[last.copy()], ignore_nulls=True)
    return exp.Case(
        ifs=[
            exp.If(this=exp.Is(this=value.copy(), expression=exp.Null()), true=exp.Null()),
            exp.If(this=exp.LTE(this=value.copy(), expression=lo.copy()), true=exp.Literal.number(0)),
            exp.If(this=exp.GTE(this=value.copy(), expression=hi.copy()), true=last.copy()),
        ],
        default=inside,
    )


def _double(e: exp.Expression) -> exp.Expression:
    return exp.Cast(this=e, to=exp.DataType.build("DOUBLE"))


def _spark_bin(value: exp.Expression, vg: ValueGrid, family: str | None) -> exp.Expression:
    """:func:`bin_expression` on Spark (see there)."""
    g = vg.grid
    last = exp.Literal.number(g.size - 1)
    offset: exp.Expression
    if vg.value_kind in _EPOCH_KINDS:
        assert vg.origin is not None
        lo = _time_literal(vg.origin)
        if vg.value_kind == "date":
            hi = _time_literal(vg.origin + dt.timedelta(days=int(g.upper)))
            offset = _double(exp.Anonymous(this="DATEDIFF", expressions=[value.copy(), lo.copy()]))
        else:
            hi = _time_literal(vg.origin + dt.timedelta(seconds=int(g.upper)))
            micros = exp.Sub(this=exp.Anonymous(this="UNIX_MICROS", expressions=[value.copy()]),
                             expression=exp.Anonymous(this="UNIX_MICROS", expressions=[lo.copy()]))
            offset = exp.Div(this=_double(micros), expression=_double(exp.Literal.number(1_000_000)))
    else:
        lo, hi = _dec(g.lower), _dec(g.upper)
        if family == "int":
            exact = exp.Cast(this=value.copy(), to=exp.DataType.build("DECIMAL(38, 0)"))
            offset = _double(exp.Sub(this=exact, expression=lo.copy()))
        elif family == "float":
            offset = exp.paren(exp.Sub(this=_double(value.copy()), expression=_double(lo.copy())), copy=False)
        else:
            offset = _double(exp.Sub(this=value.copy(), expression=lo.copy()))
    scaled = exp.Add(this=exp.Div(this=offset, expression=_double(_dec(g.step))), expression=_double(exp.Literal.number("0.5")))
    index = exp.Cast(this=exp.Floor(this=scaled), to=exp.DataType.build("BIGINT"))
    inside = exp.Least(this=index, expressions=[last.copy()], ignore_nulls=True)
    return exp.Case(
        ifs=[
            exp.If(this=exp.Is(this=value.copy(), expression=exp.Null()), true=exp.Null()),
            exp.If(this=exp.LTE(this=value.copy(), expression=lo.copy()), true=exp.Literal.number(0)),
            exp.If(this=exp.GTE(this=value.copy(), expression=hi.copy()), true=last.copy()),
        ],
        default=inside,
    )


# ---------------------------------------------------------------------------------------------
# the histogram query


def _hash(parts: list[exp.Expression], salt: str, dialect: str) -> exp.Expression:
    s = exp.Literal.string(salt)
    if dialect == "duckdb":
        return exp.Anonymous(this="HASH", expressions=[*parts, s])
    texts = [exp.Cast(this=p, to=exp.DataType.build("TEXT")) for p in parts]
    return exp.Anonymous(this="MD5", expressions=[exp.Anonymous(this="CONCAT_WS", expressions=[exp.Literal.string("\x1f"), *texts, s])])


def histogram_query(
    rows: exp.Select,
    key_names: list[str],
    *,
    max_rows: int,
    max_groups: int,
    rank_groups: bool,
    salt: str,
    dialect: str,
) -> exp.Select:
    """The bounded histogram over ``rows`` — a SELECT with columns ``__dp_uid``, the keys and
    ``__dp_bin`` (see the module docstring for the four steps and the guarantee).

    Returns one row per (group, candidate) with a non-zero count: key columns, ``__dp_bin``,
    ``__dp_n``. ``rank_groups`` False means no unit can reach more than ``max_groups`` groups
    (no keys, or fewer declared key values than ``max_groups``).
    """
    uid = exp.column("__dp_uid")
    keys = [exp.column(k) for k in key_names]
    bin_ = exp.column(BIN_COLUMN)
    value_hash = _hash([uid.copy(), bin_.copy()], salt + ":v", dialect)
    value_order = exp.Order(expressions=[exp.Ordered(this=value_hash), exp.Ordered(this=bin_.copy())])
    vrank = exp.Window(this=exp.RowNumber(), partition_by=[uid.copy(), *(k.copy() for k in keys)], order=value_order)
    vals = (
        exp.select(exp.Star(), exp.alias_(vrank, "__dp_vrank", copy=False), copy=False)
        .from_(exp.to_table("__dp_hrows"), copy=False)
        .where(exp.Is(this=bin_.copy(), expression=exp.Null()).not_(), copy=False)
    )
    kept = exp.select(exp.Star(), copy=False).from_(exp.to_table("__dp_hvals"), copy=False).where(
        exp.LTE(this=exp.column("__dp_vrank"), expression=exp.Literal.number(max_rows)), copy=False
    )
    final_from = "__dp_hkept"
    ctes: list[tuple[str, exp.Expression]] = [("__dp_hrows", rows), ("__dp_hvals", vals), ("__dp_hkept", kept)]
    if rank_groups and keys:
        weight = exp.Window(this=exp.Count(this=exp.Star()), partition_by=[uid.copy(), *(k.copy() for k in keys)])
        capped = exp.Least(this=weight, expressions=[exp.Literal.number(max_rows)], ignore_nulls=True)
        weighted = exp.select(exp.Star(), exp.alias_(capped, "__dp_w", copy=False), copy=False).from_(
            exp.to_table("__dp_hkept"), copy=False
        )
        grank = exp.Window(
            this=exp.Anonymous(this="DENSE_RANK"),
            partition_by=[uid.copy()],
            order=exp.Order(
                expressions=[
                    exp.Ordered(this=exp.column("__dp_w"), desc=True),
                    exp.Ordered(this=_hash([k.copy() for k in keys], salt + ":g", dialect)),
                    *(exp.Ordered(this=k.copy()) for k in keys),
                ]
            ),
        )
        ranked = exp.select(exp.Star(), exp.alias_(grank, "__dp_grank", copy=False), copy=False).from_(
            exp.to_table("__dp_hweighted"), copy=False
        )
        ctes += [("__dp_hweighted", weighted), ("__dp_hranked", ranked)]
        final_from = "__dp_hranked"
    final = exp.select(*(k.copy() for k in keys), bin_.copy(), exp.alias_(exp.Count(this=exp.Star()), COUNT_COLUMN, copy=False), copy=False)
    final = final.from_(exp.to_table(final_from), copy=False)
    if final_from == "__dp_hranked":
        final = final.where(exp.LTE(this=exp.column("__dp_grank"), expression=exp.Literal.number(max_groups)), copy=False)
    final = final.group_by(*(k.copy() for k in keys), bin_.copy(), copy=False)
    for name, q in ctes:
        final = final.with_(name, as_=q, copy=False)
    return final
