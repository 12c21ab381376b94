"""The function allowlist: which scalar functions may appear in row-level expressions, and what each costs.

Default-deny (security.md R12): a function not listed here is refused. For each function and
engine this table says how the rewriter makes it **total** — so that neither an error nor an
engine slow path can depend on private values (R14, DESIGN §1 "side channels"):

- ``total``: never raises and takes no exceptional path on any value of its argument types, once
  its literal arguments passed the checks listed here (the rewriter refuses out-of-range literals
  before the charge);
- ``guard``: made total by a ``CASE WHEN <domain check> THEN f(x) END`` the rewriter adds (NULL
  outside the domain), on every engine, so engines agree;
- ``refuse``: refused on that engine (0A000), with the function's name.

No row-level expression over private data is ever wrapped in DuckDB's ``TRY(...)``: after an
error inside TRY DuckDB re-runs the whole vector row by row (~4 µs a row, ~9 ms for one failing
row of a 2,048-row vector), which made one person's rows visible in the query's timing.
``TRY_CAST`` stays for casts from text (a failing value costs ~0.05–0.1 µs more than a valid one,
no re-run); numeric→integer and date→timestamp casts get range guards instead, so they never fail.

**Per-row cost model.** Every allowed function costs O(1) on numbers, dates and timestamps, and
O(n) in the bytes of its text input (LIKE with a literal pattern of length m: O(n·m)). Regular
expressions are not allowed (DuckDB uses RE2, which is linear-time; PostgreSQL's engine
backtracks, so a regex would be DuckDB-only). What can still grow is the size of text values;
:mod:`~dpsql.rewriter.rowcost` bounds it from the query text: with L the longest text value a row
holds, every row-level text value has at most ``MAX_TEXT_GROWTH``·L + ``MAX_TEXT_CONSTANT`` bytes,
the text work per row is at most ``MAX_TEXT_WORK``·L bytes processed, and expressions nest at most
``MAX_EXPRESSION_DEPTH`` deep. ``TextSize`` says how each function's output relates to its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from sqlglot import exp

Mode = Literal["total", "guard", "refuse"]
TextSize = Literal[
    "none",  # output is not text (numbers, booleans, dates): its size is constant
    "fixed",  # text of a fixed size whatever the input (md5: 32 characters)
    "same",  # at most the size of its first argument (trim, left, substring, reverse …)
    "case",  # lower/upper: a case mapping may lengthen UTF-8 text, at most 2×
    "sum",  # concat, ||: the sum of its arguments' sizes
    "replace",  # replace(s, from, to): |s|·max(1, |to|/|from|)
]

MAX_TEXT_GROWTH = 16  # a row-level text value is at most 16× the longest input text value …
MAX_TEXT_CONSTANT = 4096  # … plus 4 KiB of literal text
MAX_TEXT_WORK = 64  # bytes processed by the text functions of one row, in units of the longest input value
MAX_EXPRESSION_DEPTH = 32  # nesting of operators and functions in one row-level expression
INT4_RANGE = (-(2**31) + 1, 2**31 - 1)  # literal integer arguments (PostgreSQL's int4, inside DuckDB's limits)


@dataclass(frozen=True)
class FunctionRule:
    """What dpsql knows about one scalar function: per-engine totality, literal arguments, text size."""

    name: str
    duckdb: Mode
    postgres: Mode
    literal_args: tuple[str, ...] = ()  # sqlglot arg names that must hold literals
    int_args: tuple[str, ...] = ()  # of those, the ones that must be integers within INT4_RANGE
    text_size: TextSize = "none"
    spark: Mode = "refuse"  # Spark (ANSI on or off); set in SPARK_MODES below — unlisted functions are refused

    def mode(self, dialect: str) -> Mode:
        """How this function is made total on ``dialect`` ("duckdb", "postgres" or "spark")."""
        return self.duckdb if dialect == "duckdb" else self.postgres if dialect == "postgres" else self.spark


def _r(name: str, duckdb: Mode, pg: Mode, lits: tuple[str, ...] = (), ints: tuple[str, ...] = (),
       size: TextSize = "none") -> FunctionRule:
    return FunctionRule(name, duckdb, pg, lits, ints, size)


SCALAR_FUNCTIONS: dict[type[exp.Expression], FunctionRule] = {
    exp.Lower: _r("lower", "total", "total", size="case"),
    exp.Upper: _r("upper", "total", "total", size="case"),
    exp.Length: _r("length", "total", "total"),
    exp.Trim: _r("trim", "total", "total", ("expression",), size="same"),
    exp.Concat: _r("concat", "total", "total", size="sum"),
    exp.DPipe: _r("||", "total", "total", size="sum"),
    exp.Replace: _r("replace", "total", "total", ("expression", "replacement"), size="replace"),
    exp.Left: _r("left", "total", "total", ("expression",), ("expression",), size="same"),
    exp.Right: _r("right", "total", "total", ("expression",), ("expression",), size="same"),
    exp.Substring: _r("substring", "total", "total", ("start", "length"), ("start", "length"), size="same"),
    exp.StrPosition: _r("strpos", "total", "total", ("substr",)),
    exp.StartsWith: _r("starts_with", "total", "total", ("expression",)),
    exp.SplitPart: _r("split_part", "total", "total", ("delimiter", "part_index"), ("part_index",), size="same"),
    exp.Reverse: _r("reverse", "total", "total", size="same"),
    exp.MD5: _r("md5", "total", "total", size="fixed"),
    exp.Coalesce: _r("coalesce", "total", "total"),
    exp.Nullif: _r("nullif", "total", "total"),
    exp.Greatest: _r("greatest", "total", "total"),
    exp.Least: _r("least", "total", "total"),
    exp.Abs: _r("abs", "total", "total"),  # computed in DOUBLE on DuckDB (abs(-2^63) would overflow)
    exp.Round: _r("round", "total", "total", ("decimals",), ("decimals",)),
    exp.Floor: _r("floor", "total", "total", ("decimals",), ("decimals",)),
    exp.Ceil: _r("ceil", "total", "total", ("decimals",), ("decimals",)),
    exp.Trunc: _r("trunc", "total", "total", ("decimals",), ("decimals",)),
    exp.Sign: _r("sign", "total", "total"),
    exp.Pi: _r("pi", "total", "total"),
    exp.Sqrt: _r("sqrt", "guard", "guard"),
    exp.Ln: _r("ln", "guard", "guard"),
    exp.Log: _r("log", "guard", "guard"),
    exp.Exp: _r("exp", "guard", "guard"),
    exp.Pow: _r("power", "total", "refuse"),  # DuckDB: inf/NaN, never an error; PostgreSQL raises on overflow
    exp.Extract: _r("extract", "total", "total", ("this",)),
    exp.TimestampTrunc: _r("date_trunc", "guard", "guard", ("unit",)),
    exp.DateTrunc: _r("date_trunc", "guard", "guard", ("unit",)),
    exp.CurrentDate: _r("current_date", "total", "total"),
    exp.CurrentTimestamp: _r("current_timestamp", "total", "total"),
    # BI tools' date functions (normalize.py maps PostgreSQL's spellings onto these nodes).
    # to_date/to_timestamp parse text, which can fail: literal arguments only (a constant, so it is
    # evaluated before the charge); to_char/age are guarded to the safe date domain.
    exp.StrToDate: _r("to_date", "total", "total", ("this", "format")),
    exp.StrToTime: _r("to_timestamp", "total", "total", ("this", "format")),
    exp.UnixToTime: _r("to_timestamp", "total", "total", ("this",)),
    exp.TimeToStr: _r("to_char", "guard", "guard", ("format",)),  # pattern checked by normalize: ≤ 64 bytes out
    # to_char of a number: only over released values (post-processing; totalize refuses it on private
    # rows), formatted by rewriter/number_format.py in the post-processor
    exp.NumberToStr: _r("to_char", "total", "total", ("format",)),
}

# The aggregates the rewriter understands are the registry's: dpsql.rewriter.aggregates.SUPPORTED_AGGREGATES.

# The Spark column of the table above (Spark 4, with spark.sql.ansi.enabled on or off: no function
# listed here raises on any value once totalize has rewritten it). Default-deny: a function missing
# here is refused on Spark. How each differs from PostgreSQL, and what totalize does about it:
# concat skips NULLs (sqlglot's COALESCE), log(x) is emitted as LOG(10, x), abs of an exact value
# runs in DOUBLE, substring/left/right take only literal positions that mean the same on both
# (start ≥ 1, lengths ≥ 0), extract takes only fields with PostgreSQL's meaning, LIKE patterns are
# re-escaped (Spark rejects a backslash before an ordinary character). Refused: floor/ceil/trunc
# (BIGINT results on Spark, not DOUBLE), split_part (errors on some part indexes).
SPARK_MODES: dict[type[exp.Expression], Mode] = {
    exp.Lower: "total",
    exp.Upper: "total",
    exp.Length: "total",
    exp.Trim: "total",
    exp.Concat: "total",
    exp.DPipe: "total",
    exp.Replace: "total",
    exp.Left: "total",
    exp.Right: "total",
    exp.Substring: "total",
    exp.StrPosition: "total",
    exp.StartsWith: "total",
    exp.Reverse: "total",
    exp.MD5: "total",
    exp.Coalesce: "total",
    exp.Nullif: "total",
    exp.Greatest: "total",
    exp.Least: "total",
    exp.Abs: "total",
    exp.Round: "total",
    exp.Sign: "total",
    exp.Pi: "total",
    exp.Sqrt: "guard",
    exp.Ln: "guard",
    exp.Log: "guard",
    exp.Exp: "guard",
    exp.Pow: "total",  # Math.pow: inf/NaN, never an error
    exp.Extract: "total",
    exp.TimestampTrunc: "guard",
    exp.DateTrunc: "guard",
    exp.CurrentDate: "total",
    exp.CurrentTimestamp: "total",
}
for _fn, _mode in SPARK_MODES.items():
    if _fn in SCALAR_FUNCTIONS:
        SCALAR_FUNCTIONS[_fn] = replace(SCALAR_FUNCTIONS[_fn], spark=_mode)

# EXTRACT fields whose values are the same on Spark as on PostgreSQL (Spark's DOW counts from 1).
SPARK_EXTRACT_FIELDS = frozenset({"year", "quarter", "month", "week", "day", "doy", "hour", "minute"})

# Functions sqlglot keeps as named calls (exp.Anonymous), by lower-case name.
NAMED_FUNCTIONS: dict[str, FunctionRule] = {
    "age": _r("age", "guard", "guard"),
}


def function_rule(node: exp.Expression) -> FunctionRule | None:
    """The rule of a scalar function node (by class, or by name for a named call), else None."""
    if isinstance(node, exp.Anonymous):
        return NAMED_FUNCTIONS.get(str(node.name).lower())
    return SCALAR_FUNCTIONS.get(type(node))

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
# Families: int, float, numeric, text, bool, date, timestamp. Numeric → integer and date → timestamp
# casts get a range guard (see totalize); anything else is refused on PostgreSQL.
PG_TOTAL_CASTS: frozenset[tuple[str, str]] = frozenset(
    {(src, "text") for src in ("int", "float", "numeric", "text", "bool", "date", "timestamp")}
    | {("int", t) for t in ("int8", "numeric", "float8")}
    | {("float", t) for t in ("numeric", "float8")}
    | {("numeric", t) for t in ("numeric",)}
    | {("date", t) for t in ("date",)}
    | {("timestamp", t) for t in ("date", "timestamp", "timestamptz")}
)

# Integer cast targets and their ranges (a numeric value outside becomes NULL instead of an error).
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "int2": (-(2**15), 2**15 - 1),
    "int4": (-(2**31), 2**31 - 1),
    "int8": (-(2**63), 2**63 - 1),
}

# The date/timestamp domain of row-level date arithmetic and date_trunc on every engine: values
# outside it (and ±infinity) give NULL. Spark's DATE/TIMESTAMP range; well inside DuckDB's and PostgreSQL's.
SAFE_DATE_RANGE = ("0001-01-01", "9999-12-31")
SAFE_TIMESTAMP_RANGE = ("0001-01-01 00:00:00", "9999-12-31 23:59:59.999999")
MAX_INTERVAL_DAYS = 3_660_000  # |interval| ≤ 10,000 years in row-level date arithmetic
MAX_DAY_OFFSET = 3_660_000  # |n| in date ± n (days)
