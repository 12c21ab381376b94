"""Pass 1b: PostgreSQL surface syntax → the canonical nodes the later passes know.

BI tools and psql users write PostgreSQL spellings that mean something simpler. This pass rewrites
them into nodes the allowlist, the type checker and :mod:`~dpsql.rewriter.totalize` already reason
about, so no later pass needs to know the spelling — and refuses, naming what the user wrote, the
forms that cannot be made total:

- string literals: ``E'…'`` (escapes decoded by the parser), ``$$…$$`` / ``$tag$…$tag$`` and
  ``U&'…'`` (``\\XXXX`` / ``\\+XXXXXX`` decoded here) become plain string literals;
- ``x op ANY(ARRAY[…])`` / ``x op ANY('{…}')`` / ``x op ALL(…)`` over a *literal* array become
  ``x op a1 OR x op a2 …`` (``AND`` for ALL) — PostgreSQL's own three-valued semantics: an empty
  array gives false for ANY and true for ALL; ``= ANY`` becomes ``IN``;
- an ORDER BY inside an order-insensitive aggregate (``count(city ORDER BY city)``) is dropped;
- ``width_bucket(x, lo, hi, n)`` with literal ``lo``, ``hi``, ``n`` becomes the equivalent CASE of
  comparisons and arithmetic (total on every engine: no engine function, no NaN error);
- ``make_date(y, m, d)`` with literal arguments becomes a DATE literal (an invalid date is a
  22008 error before the charge);
- ``to_char(ts, 'pattern')`` keeps sqlglot's node with a checked strftime format that prints the same
  text as PostgreSQL (see :data:`TO_CHAR_PATTERNS`); ``age(…)`` stays a named call (both are
  range-guarded by totalize like date arithmetic).

>>> from sqlglot import parse_one
>>> normalize(parse_one("SELECT COUNT(*) FROM t WHERE t.k = ANY('{a,b}') AND t.d < make_date(2024, 2, 29)", read="postgres")).sql()
"SELECT COUNT(*) FROM t WHERE t.k IN ('a', 'b') AND t.d < CAST('2024-02-29' AS DATE)"
>>> normalize(parse_one("SELECT width_bucket(t.x, 0, 100, 10) FROM t", read="postgres")).sql()
'SELECT CASE WHEN t.x < 0 THEN 0 WHEN t.x >= 100 THEN 11 WHEN t.x >= 0 THEN CAST(FLOOR((t.x - 0) * 10 / 100) AS INT) + 1 END FROM t'
"""

from __future__ import annotations

import datetime as _dt
import re
from fractions import Fraction

from sqlglot import exp

from dpsql.errors import (
    DataException,
    DatetimeFieldOverflow,
    InvalidArgumentForWidthBucket,
    InvalidParameterValue,
    UndefinedFunction,
    UnsupportedQuery,
)
from dpsql.rewriter.number_format import is_number_pattern

__all__ = ["DISPLAY_NAMES", "display_name", "normalize", "to_char_format", "to_char_pattern", "to_char_source"]


# What the user wrote, for sqlglot nodes whose class name is not the SQL they came from.
DISPLAY_NAMES: dict[type[exp.Expression], str] = {
    exp.StrToDate: "to_date",
    exp.StrToTime: "to_timestamp",
    exp.UnixToTime: "to_timestamp",
    exp.TimeToStr: "to_char",
    exp.NumberToStr: "to_char",
    exp.WithinGroup: "WITHIN GROUP",
    exp.Any: "ANY",
    exp.Extract: "extract",
    exp.TimestampTrunc: "date_trunc",
    exp.DateTrunc: "date_trunc",
    exp.WidthBucket: "width_bucket",
    exp.GroupConcat: "string_agg",
    exp.ArrayAgg: "array_agg",
    exp.RegexpLike: "~",
    exp.Pow: "power",
    exp.StrPosition: "strpos",
}


def display_name(node: exp.Expression) -> str:
    """The name of ``node``'s function or construct as a PostgreSQL user would write it."""
    known = DISPLAY_NAMES.get(type(node))
    if known is not None:
        return known
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        # sqlglot derives default names from class names, splitting acronyms letter by letter
        # (JSONObject → J_S_O_N_OBJECT): join such runs back into the word the user wrote.
        return re.sub(r"(?<![A-Za-z0-9])(?:[A-Z]_)+[A-Z](?![A-Za-z0-9])", lambda m: m.group(0).replace("_", ""), node.sql_name()).lower()
    return type(node).__name__


# Aggregates whose value does not depend on the order of their input.
_ORDER_FREE = (exp.Count, exp.Sum, exp.Avg, exp.Variance, exp.VariancePop, exp.Stddev, exp.StddevPop, exp.StddevSamp,
               exp.Min, exp.Max)


def normalize(tree: exp.Expression) -> exp.Expression:
    """``tree`` with the PostgreSQL spellings above replaced by canonical nodes (in place).

    Guarantees: no ByteString/RawString/UnicodeString literal, no ANY/ALL over a literal array, no
    ORDER BY inside an order-insensitive aggregate, no width_bucket/make_date/age call is left in
    the spelling it came in. Raises UnsupportedQuery (0A000) naming the construct for ANY/ALL over
    a non-literal array and width_bucket/make_date with non-literal bounds, and 22008/2201G/22023
    for invalid literal arguments, as PostgreSQL would."""
    return tree.transform(_visit, copy=False)


def _visit(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.TimeToStr):
        return _to_char(node)
    if isinstance(node, exp.ByteString | exp.RawString):
        return exp.Literal.string(str(node.this))
    if isinstance(node, exp.UnicodeString):
        return exp.Literal.string(_unicode(str(node.this), node.args.get("escape")))
    if (isinstance(node, exp.Binary) and isinstance(node.expression, exp.Any)) or _is_all(node):
        return _quantified(node)
    if isinstance(node, _ORDER_FREE) and isinstance(node.this, exp.Order):
        node.set("this", node.this.this)
        return node
    if isinstance(node, exp.WidthBucket):
        return _width_bucket(node)
    if isinstance(node, exp.Anonymous):
        name = str(node.name).lower()
        if name == "make_date":
            return _make_date(node)
        if name == "age" and not 1 <= len(node.expressions) <= 2:
            raise UndefinedFunction(f"function age() with {len(node.expressions)} arguments does not exist",
                                    hint="age(timestamp) or age(timestamp, timestamp)")
    return node


# ----------------------------------------------------------------------------------------- strings

_UNICODE = re.compile(r"\\(\\|\+[0-9A-Fa-f]{6}|[0-9A-Fa-f]{4})")


def _unicode(text: str, escape: object) -> str:
    if escape is not None and escape is not False:
        raise UnsupportedQuery("U&'…' with a UESCAPE character is not supported", hint="write the characters directly")

    def char(m: re.Match[str]) -> str:
        code = m.group(1)
        if code == "\\":
            return "\\"
        value = int(code.lstrip("+"), 16)
        if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF or value == 0:
            raise InvalidParameterValue("invalid Unicode escape value", hint="use a code point between U+0001 and U+10FFFF")
        return chr(value)

    decoded = _UNICODE.sub(char, text)
    if "\\" in _UNICODE.sub("", text):
        raise UnsupportedQuery("invalid Unicode escape in U&'…'", hint="write \\XXXX or \\+XXXXXX (hex digits)")
    return decoded


# --------------------------------------------------------------------------------------- ANY / ALL

_QUANTIFIED_OPS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def _is_all(node: exp.Expression) -> bool:
    rhs = node.args.get("expression")
    return isinstance(node, exp.Binary) and isinstance(rhs, exp.Anonymous) and str(rhs.name).upper() == "ALL"


def _quantified(node: exp.Expression) -> exp.Expression:
    rhs = node.args["expression"]
    is_any = isinstance(rhs, exp.Any)
    word = "ANY" if is_any else "ALL"
    if not isinstance(node, _QUANTIFIED_OPS):
        raise UnsupportedQuery(f"{node.key.upper()} {word}(…) is not supported", hint="compare with =, <>, <, <=, > or >=")
    inner = rhs.this if is_any else (rhs.expressions[0] if len(rhs.expressions) == 1 else None)
    while isinstance(inner, exp.Paren):
        inner = inner.this
    items = _array_items(inner)
    if items is None:
        raise UnsupportedQuery(
            f"{word}(…) is supported only over a literal array (ARRAY[…] or '{{…}}')",
            hint="list the values: x IN ('a', 'b'), or x = ANY(ARRAY['a', 'b'])",
        )
    left = node.this
    if is_any and isinstance(node, exp.EQ) and items:
        return exp.In(this=left, expressions=items)
    if not is_any and isinstance(node, exp.NEQ) and items:
        return exp.Not(this=exp.In(this=left, expressions=items))
    if not items:
        return exp.Boolean(this=not is_any)
    parts = [type(node)(this=left.copy(), expression=item) for item in items]
    combined = exp.or_(*parts) if is_any else exp.and_(*parts)
    return exp.Paren(this=combined)


def _array_items(node: exp.Expression | None) -> list[exp.Expression] | None:
    """The elements of ARRAY[lit, …] or of a '{…}' array literal, or None if not literal."""
    if isinstance(node, exp.Array):
        out: list[exp.Expression] = []
        for e in node.expressions:
            if not isinstance(e, exp.Literal | exp.Null | exp.Boolean | exp.Neg | exp.Cast):
                return None
            out.append(e)
        return out
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.to.is_type(exp.DataType.Type.ARRAY):
        return _array_items(node.this)
    if isinstance(node, exp.Literal) and node.is_string:
        parsed = parse_array_literal(str(node.this))
        return [exp.Null() if v is None else exp.Literal.string(v) for v in parsed]
    return None


def parse_array_literal(text: str) -> list[str | None]:
    """The elements of a one-dimensional PostgreSQL array literal ``'{a,"b c",NULL}'`` as text
    (NULL unquoted is None). Raises InvalidTextRepresentation-like DataException on malformed input."""
    s = text.strip()
    if len(s) < 2 or s[0] != "{" or s[-1] != "}":
        raise DataException(f'malformed array literal: "{text}"', hint='write it as \'{a,b}\'')
    body = s[1:-1]
    items: list[str | None] = []
    i, n = 0, len(body)
    if not body.strip():
        return items
    while i <= n:
        while i < n and body[i] == " ":
            i += 1
        if i < n and body[i] == '"':
            i += 1
            buf: list[str] = []
            while i < n and body[i] != '"':
                if body[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(body[i])
                i += 1
            if i >= n:
                raise DataException(f'malformed array literal: "{text}"', hint="close the quoted element")
            i += 1
            items.append("".join(buf))
            while i < n and body[i] == " ":
                i += 1
        else:
            j = i
            while j < n and body[j] != ",":
                if body[j] in '{}"':
                    raise DataException(f'malformed array literal: "{text}"', hint="only one-dimensional arrays are supported")
                j += 1
            word = body[i:j].strip()
            if not word:
                raise DataException(f'malformed array literal: "{text}"', hint="an element is empty; quote it as \"\"")
            items.append(None if word.upper() == "NULL" else word)
            i = j
        if i < n and body[i] != ",":
            raise DataException(f'malformed array literal: "{text}"', hint="separate elements with commas")
        i += 1
    return items


# ---------------------------------------------------------------------------------- width_bucket


def _literal_number(node: exp.Expression | None) -> Fraction | None:
    from dpsql.rewriter.bounds import literal_fraction

    return literal_fraction(node) if node is not None else None


def _width_bucket(node: exp.WidthBucket) -> exp.Expression:
    lo, hi, n = (_literal_number(node.args.get(k)) for k in ("min_value", "max_value", "num_buckets"))
    if lo is None or hi is None or n is None:
        raise UnsupportedQuery(
            "width_bucket() is supported only with literal bounds and bucket count",
            hint="write width_bucket(col, 0, 100, 10) with constants",
        )
    if n.denominator != 1 or n <= 0 or n > 2**31 - 2:
        raise InvalidArgumentForWidthBucket("count must be greater than zero", hint="width_bucket's fourth argument counts buckets")
    if lo == hi:
        raise InvalidArgumentForWidthBucket("lower bound cannot equal upper bound", hint="give width_bucket two different bounds")
    x = node.this
    operand = x if isinstance(x, exp.Column | exp.Literal | exp.Func | exp.Paren) else exp.Paren(this=x)
    lo_sql, hi_sql, n_sql = (node.args[k] for k in ("min_value", "max_value", "num_buckets"))
    count = int(n)
    if lo < hi:
        below = exp.LT(this=x.copy(), expression=lo_sql.copy())
        above = exp.GTE(this=x.copy(), expression=hi_sql.copy())
        inside = exp.GTE(this=x.copy(), expression=lo_sql.copy())
        offset = exp.Sub(this=operand.copy(), expression=lo_sql.copy())
        span = exp.Literal.number(str(hi - lo)) if (hi - lo).denominator == 1 else exp.Paren(
            this=exp.Sub(this=hi_sql.copy(), expression=lo_sql.copy()))
    else:  # reversed bounds: buckets count down from lo
        below = exp.GT(this=x.copy(), expression=lo_sql.copy())
        above = exp.LTE(this=x.copy(), expression=hi_sql.copy())
        inside = exp.LTE(this=x.copy(), expression=lo_sql.copy())
        offset = exp.Sub(this=lo_sql.copy(), expression=operand.copy())
        span = exp.Literal.number(str(lo - hi)) if (lo - hi).denominator == 1 else exp.Paren(
            this=exp.Sub(this=lo_sql.copy(), expression=hi_sql.copy()))
    scaled = exp.Div(this=exp.Mul(this=exp.Paren(this=offset), expression=n_sql.copy()), expression=span)
    bucket = exp.Add(this=exp.Cast(this=exp.Floor(this=scaled), to=exp.DataType.build("INT")), expression=exp.Literal.number(1))
    return exp.Case(ifs=[
        exp.If(this=below, true=exp.Literal.number(0)),
        exp.If(this=above, true=exp.Literal.number(count + 1)),
        exp.If(this=inside, true=bucket),
    ])


# --------------------------------------------------------------------------------------- to_char

# PostgreSQL to_char pattern → (DuckDB strftime directive, most bytes printed), for the patterns that
# print the same text on both engines (the ones Superset, Metabase, Grafana and Tableau send) on
# dates inside the safe domain (years 1–9999). Longest first.
TO_CHAR_PATTERNS: tuple[tuple[str, str, int], ...] = (
    ("YYYY", "%Y", 4), ("IYYY", "%G", 4), ("HH24", "%H", 2), ("HH12", "%I", 2), ("DDD", "%j", 3), ("Mon", "%b", 3),
    ("Dy", "%a", 3), ("YY", "%y", 2), ("MM", "%m", 2), ("DD", "%d", 2), ("HH", "%I", 2), ("MI", "%M", 2),
    ("SS", "%S", 2), ("MS", "%g", 3), ("US", "%f", 6), ("IW", "%V", 2), ("AM", "%p", 2), ("PM", "%p", 2),
)
_TO_PG = {directive: token for token, directive, _ in reversed(TO_CHAR_PATTERNS)}
MAX_TO_CHAR_BYTES = 64  # what to_char may print: the row-cost model's size of a date printed as text


def to_char_source(node: exp.TimeToStr) -> str:
    """The pattern as the user wrote it (sqlglot stores it translated to strftime)."""
    from sqlglot.dialects.postgres import Postgres
    from sqlglot.time import format_time

    fmt = node.args.get("format")
    if not isinstance(fmt, exp.Literal) or not fmt.is_string:
        raise UnsupportedQuery("to_char() needs a constant format string", hint="write the pattern as a literal, e.g. 'YYYY-MM'")
    return format_time(str(fmt.this), Postgres.INVERSE_TIME_MAPPING, Postgres.INVERSE_TIME_TRIE) or ""


def to_char_format(pattern: str) -> str:
    """The DuckDB strftime format that prints what PostgreSQL's ``to_char(ts, pattern)`` prints.
    Raises UnsupportedQuery naming the pattern for anything outside :data:`TO_CHAR_PATTERNS`
    (text months and days are blank-padded by PostgreSQL only, FM/TH/Q/… have no strftime twin)
    and for a pattern that could print more than :data:`MAX_TO_CHAR_BYTES`."""
    out: list[str] = []
    size = 0
    i = 0
    while i < len(pattern):
        if pattern[i] == '"':
            j = pattern.find('"', i + 1)
            if j < 0:
                raise UnsupportedQuery(f"to_char() pattern '{pattern}' has an unterminated quote")
            text = pattern[i + 1:j]
            if "\\" in text:
                raise UnsupportedQuery(f"to_char() pattern '{pattern}': backslashes in quoted text are not supported")
            out.append(text.replace("%", "%%"))
            size += len(text.encode())
            i = j + 1
            continue
        for token, directive, width in TO_CHAR_PATTERNS:
            if pattern.startswith(token, i):
                out.append(directive)
                size += width
                i += len(token)
                break
        else:
            ch = pattern[i]
            if ch.isalpha() or ch == "\\" or not ch.isascii() or not ch.isprintable():
                raise UnsupportedQuery(
                    f"to_char() pattern '{pattern}' is not supported (at '{pattern[i:]}')",
                    hint="use YYYY, MM, DD, HH24, HH12, MI, SS, MS, US, DDD, IW, IYYY, Mon, Dy, AM and separators",
                )
            out.append("%%" if ch == "%" else ch)
            size += 1
            i += 1
    if size > MAX_TO_CHAR_BYTES:
        raise UnsupportedQuery(f"to_char() pattern '{pattern}' is too long", hint=f"it may print at most {MAX_TO_CHAR_BYTES} bytes")
    return "".join(out)


def to_char_pattern(duckdb_format: str) -> str:
    """The PostgreSQL pattern of a format made by :func:`to_char_format` (literal text quoted)."""
    out: list[str] = []
    text: list[str] = []
    i = 0
    while i < len(duckdb_format):
        if duckdb_format[i] == "%" and duckdb_format[i:i + 2] != "%%":
            if text:
                out.append(_pg_literal("".join(text)))
                text = []
            out.append(_TO_PG[duckdb_format[i:i + 2]])
            i += 2
            continue
        text.append("%" if duckdb_format[i] == "%" else duckdb_format[i])
        i += 2 if duckdb_format[i] == "%" else 1
    if text:
        out.append(_pg_literal("".join(text)))
    return "".join(out)


def _pg_literal(text: str) -> str:
    return text if all(not c.isalpha() for c in text) else f'"{text}"'


def postgres_to_char(tree: exp.Expression) -> exp.Expression:
    """``tree`` with every checked ``to_char`` spelled as PostgreSQL's own call (sqlglot's
    strftime → PostgreSQL translation does not know every directive dpsql allows)."""
    def visit(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.TimeToStr):
            pattern = to_char_pattern(str(node.args["format"].this))
            return exp.Anonymous(this="TO_CHAR", expressions=[node.this, exp.Literal.string(pattern)])
        if isinstance(node, exp.NumberToStr):
            return exp.Anonymous(this="TO_CHAR", expressions=[node.this, node.args["format"]])
        return node

    return tree.transform(visit, copy=False)


def _to_char(node: exp.TimeToStr) -> exp.Expression:
    pattern = to_char_source(node)
    if is_number_pattern(pattern):  # to_char(number, '999,990.00'): over released values only (post_query)
        return exp.NumberToStr(this=node.this, format=exp.Literal.string(pattern))
    if re.fullmatch(r"(?i)[90,.GDSMIPRLVEFTHB ]*[90][90,.GDSMIPRLVEFTHB ]*", pattern):
        raise UnsupportedQuery(
            f"to_char() number pattern '{pattern}' is not supported",
            hint="use FM, 9, 0, the separators , and G, and a decimal point . or D (e.g. 'FM999,999.00')",
        )
    node.set("format", exp.Literal.string(to_char_format(pattern)))
    return node


# ------------------------------------------------------------------------------------- make_date


def _make_date(node: exp.Anonymous) -> exp.Expression:
    if len(node.expressions) != 3:
        raise UnsupportedQuery("make_date() takes three arguments (year, month, day)")
    parts = [_literal_number(a) for a in node.expressions]
    if any(p is None or p.denominator != 1 for p in parts):
        raise UnsupportedQuery(
            "make_date() is supported only with literal year, month and day",
            hint="write the date as a literal, e.g. DATE '2024-01-01'; make_date of column values can fail on some rows",
        )
    y, m, d = (int(p) for p in parts if p is not None)
    try:
        value = _dt.date(y, m, d)
    except ValueError:
        raise DatetimeFieldOverflow(f"date field value out of range: {y}-{m:02d}-{d:02d}",
                                    hint="give a valid year (1–9999), month and day") from None
    return exp.Cast(this=exp.Literal.string(value.isoformat()), to=exp.DataType.build("DATE"))
