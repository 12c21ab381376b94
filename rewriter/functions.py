"""The function allowlist: which scalar functions may appear in row-level expressions, and how safe they are.

Default-deny (security.md R12): a function not listed here is refused. Each entry says
- whether the function can raise an error on some input in DuckDB (then the rewriter wraps it in
  ``TRY(...)`` so no error can depend on private data, R14),
- how it behaves on PostgreSQL, which has no ``TRY``: ``total`` (never raises on values of its
  argument types), ``guard`` (made total by a CASE guard the rewriter adds), or ``refuse``,
- which arguments must be literals (patterns, units, lengths), so that a failure can only come from
  the query text and never from the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlglot import exp

PgMode = Literal["total", "guard", "refuse"]


@dataclass(frozen=True)
class FunctionRule:
    """What dpsql knows about one scalar function."""

    name: str
    duckdb_may_fail: bool
    postgres: PgMode
    literal_args: tuple[str, ...] = ()  # sqlglot arg names that must hold literals


def _r(name: str, may_fail: bool, pg: PgMode, *lits: str) -> FunctionRule:
    return FunctionRule(name, may_fail, pg, tuple(lits))


SCALAR_FUNCTIONS: dict[type[exp.Expression], FunctionRule] = {
    exp.Lower: _r("lower", False, "total"),
    exp.Upper: _r("upper", False, "total"),
    exp.Length: _r("length", False, "total"),
    exp.Trim: _r("trim", False, "total", "expression"),
    exp.Concat: _r("concat", False, "total"),
    exp.DPipe: _r("||", False, "total"),
    exp.Replace: _r("replace", False, "total", "expression", "replacement"),
    exp.Left: _r("left", True, "total", "expression"),
    exp.Right: _r("right", True, "total", "expression"),
    exp.Substring: _r("substring", True, "total", "start", "length"),
    exp.StrPosition: _r("strpos", False, "total", "substr"),
    exp.StartsWith: _r("starts_with", False, "total", "expression"),
    exp.SplitPart: _r("split_part", True, "total", "delimiter", "part_index"),
    exp.Reverse: _r("reverse", False, "total"),
    exp.MD5: _r("md5", False, "total"),
    exp.Coalesce: _r("coalesce", False, "total"),
    exp.Nullif: _r("nullif", False, "total"),
    exp.Greatest: _r("greatest", False, "total"),
    exp.Least: _r("least", False, "total"),
    exp.Abs: _r("abs", True, "total"),
    exp.Round: _r("round", True, "total", "decimals"),
    exp.Floor: _r("floor", True, "total", "decimals"),
    exp.Ceil: _r("ceil", True, "total", "decimals"),
    exp.Trunc: _r("trunc", True, "total", "decimals"),
    exp.Sign: _r("sign", False, "total"),
    exp.Sqrt: _r("sqrt", True, "guard"),
    exp.Ln: _r("ln", True, "guard"),
    exp.Log: _r("log", True, "guard"),
    exp.Exp: _r("exp", True, "guard"),
    exp.Pow: _r("power", True, "refuse"),
    exp.Extract: _r("extract", True, "total", "this"),
    exp.TimestampTrunc: _r("date_trunc", True, "total", "unit"),
    exp.DateTrunc: _r("date_trunc", True, "total", "unit"),
    exp.CurrentDate: _r("current_date", False, "total"),
    exp.CurrentTimestamp: _r("current_timestamp", False, "total"),
}

# Aggregates the rewriter understands (others are refused with a specific message).
SUPPORTED_AGGREGATES: tuple[type[exp.Expression], ...] = (
    exp.Count,
    exp.Sum,
    exp.Avg,
    exp.Variance,
    exp.VariancePop,
    exp.Stddev,
    exp.StddevPop,
    exp.StddevSamp,
)

# Aggregates refused because they would release a raw value of one individual.
RAW_VALUE_AGGREGATES: dict[type[exp.Expression], str] = {
    exp.Min: "MIN",
    exp.Max: "MAX",
    exp.ArgMax: "ARG_MAX",
    exp.ArgMin: "ARG_MIN",
    exp.First: "FIRST",
    exp.Last: "LAST",
    exp.AnyValue: "ANY_VALUE",
    exp.GroupConcat: "STRING_AGG",
    exp.ArrayAgg: "ARRAY_AGG",
    exp.Median: "MEDIAN",
    exp.Quantile: "QUANTILE",
    exp.PercentileCont: "PERCENTILE_CONT",
    exp.PercentileDisc: "PERCENTILE_DISC",
    exp.Mode: "MODE",
}

# Casts that can never fail on PostgreSQL, as (source type family, target type).
# Families: int, float, numeric, text, bool, date, timestamp. Anything else is refused on PostgreSQL.
PG_TOTAL_CASTS: frozenset[tuple[str, str]] = frozenset(
    {(src, "text") for src in ("int", "float", "numeric", "text", "bool", "date", "timestamp")}
    | {("int", t) for t in ("int8", "numeric", "float8")}
    | {("float", t) for t in ("numeric", "float8")}
    | {("numeric", t) for t in ("numeric",)}
    | {("date", t) for t in ("date", "timestamp", "timestamptz")}
    | {("timestamp", t) for t in ("date", "timestamp", "timestamptz")}
)
