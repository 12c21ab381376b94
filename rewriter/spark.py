"""The Spark dialect's last steps: exact sums, the portable tie-break, physical names, and the
check of the emitted SQL against the allowlist before it is sent (security.md R12).

Row-level expressions are made total for Spark by :mod:`~dpsql.rewriter.totalize`
(``dialect="spark"``); what is left is the shape of the bounded query:

* **exact sums**: Spark's ``SUM(BIGINT)`` is BIGINT (it wraps with ANSI off, raises with it on),
  where DuckDB widens to HUGEINT and PostgreSQL to numeric. Every ``SUM`` of the bounded query
  sums grid integers, so :func:`lower_bounded` sums them as ``DECIMAL(38, 0)``: exact far beyond
  any total a policy allows (10^38 > units × max_contribution);
* **the tie-break** ``MD5(CONCAT_WS(chr(31), CAST(k AS STRING), …, salt))`` is PostgreSQL's form
  (Spark's ``HASH`` is 32-bit Murmur3), with ``CHR(31)`` for the separator literal;
* **physical names**: each policy table is a session temporary view (``dpsql_<n>_<schema>_<table>``,
  see :func:`view_name`) that :class:`~dpsql.proxy.backends.spark.SparkBackend` creates over the
  catalog table or Parquet path the policy names, so the SQL never names a file or catalog itself.

:func:`verify` re-parses the SQL about to be sent and refuses it unless every table is one of
the backend's views (or a CTE of the statement) and every function is one dpsql emits on Spark:
no ``reflect``/``java_method``, no UDF, no file-reading relation (``text.`/etc/hostname```) can
reach the engine even if a rewriter bug let one through.

>>> from sqlglot import parse_one
>>> lower_bounded(parse_one("SELECT SUM(x) FROM t")).sql("spark")
'SELECT SUM(CAST(x AS DECIMAL(38, 0))) FROM t'
>>> view_name("public", "visits")
'dpsql_6_public_visits'
>>> verify("SELECT reflect('java.lang.System', 'exit', '0') FROM dpsql_6_public_visits", {"dpsql_6_public_visits"})
Traceback (most recent call last):
...
dpsql.rewriter.emit.RewriteInvariantError: internal error: the Spark SQL calls reflect(), which dpsql does not emit; the query was refused
"""

from __future__ import annotations

from collections.abc import Collection

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from dpsql.rewriter.emit import RewriteInvariantError
from dpsql.rewriter.functions import SCALAR_FUNCTIONS

#: functions the rewriter writes by name on Spark (tie-break hash, rounding casts, date differences,
#: the histogram bins of quantiles: timestamp offsets)
SPARK_NAMED_FUNCTIONS = frozenset({"MD5", "CONCAT_WS", "CHR", "BROUND", "DATEDIFF", "UNIX_MICROS"})

#: nodes only dpsql's own SQL contains — the quantile histogram's bin index (FLOOR of a DOUBLE, a
#: saturating BIGINT on Spark) and group ranking (DENSE_RANK) — allowed here although an analyst's
#: FLOOR stays refused on Spark by the rewriter's allowlist (its BIGINT result differs from
#: PostgreSQL's DOUBLE)
_EMITTED_ONLY: tuple[type[exp.Expression], ...] = (exp.Floor, exp.DenseRank, exp.UnixMicros)

_EXACT = exp.DataType.build("DECIMAL(38, 0)")
_STRING = exp.DataType.build("STRING", dialect="spark")


def view_name(schema: str, table: str) -> str:
    """The session temporary view that stands for the policy table ``schema.table`` on Spark
    (unambiguous: the schema's length is part of the name)."""
    return f"dpsql_{len(schema)}_{schema}_{table}"


def physical_names(tree: exp.Expression) -> exp.Expression:
    """Replace every ``schema.table`` of the policy by its view (CTE references are unqualified and stay)."""
    for table in list(tree.find_all(exp.Table)):
        db = table.args.get("db")
        if isinstance(db, exp.Identifier):
            table.set("this", exp.to_identifier(view_name(db.this, table.name)))
            table.set("db", None)
            table.set("catalog", None)
    return tree


def lower_bounded(tree: exp.Expression) -> exp.Expression:
    """The bounded query with every SUM exact (DECIMAL(38, 0)), every TRY_CAST written as such,
    and the hash separator as CHR(31)."""
    for node in list(tree.find_all(exp.Sum)):
        arg = node.this
        if not (isinstance(arg, exp.Cast) and arg.to == _EXACT):
            node.set("this", exp.Cast(this=arg, to=_EXACT.copy()))
    for node in list(tree.find_all(exp.Concat)):
        # PostgreSQL's concat() skips NULLs: sqlglot writes it for Spark as CONCAT(COALESCE(arg, ''), …), and under
        # ANSI a non-text arg makes that COALESCE cast '' to the arg's type — an error exactly when the arg is NULL
        # (a data-dependent error). Every non-literal argument is therefore made text first (total on Spark).
        for arg in list(node.expressions):
            if not (isinstance(arg, exp.Literal) and arg.is_string) and not (isinstance(arg, exp.Cast) and arg.to == _STRING):
                arg.replace(exp.Cast(this=arg.copy(), to=_STRING.copy()))
    for node in list(tree.find_all(exp.TryCast)):
        node.set("safe", True)  # without it sqlglot writes a TryCast as CAST for Spark (which raises under ANSI)
    for node in list(tree.find_all(exp.Anonymous)):
        if node.name.upper() == "CONCAT_WS" and node.expressions:
            sep = node.expressions[0]
            if isinstance(sep, exp.Literal) and sep.is_string and sep.this == "\x1f":
                node.expressions[0].replace(exp.Anonymous(this="CHR", expressions=[exp.Literal.number(31)]))
    return tree


_STRUCTURE: tuple[type[exp.Expression], ...] = (
    exp.Select, exp.From, exp.Join, exp.Where, exp.Group, exp.Having, exp.Order, exp.Ordered, exp.Limit, exp.Offset,
    exp.With, exp.CTE, exp.Subquery, exp.Table, exp.TableAlias, exp.Alias, exp.Column, exp.Identifier, exp.Star,
    exp.Distinct, exp.Filter, exp.Paren, exp.Literal, exp.Boolean, exp.Null, exp.DataType, exp.DataTypeParam, exp.Var,
    exp.Interval, exp.Tuple, exp.Window, exp.WindowSpec, exp.RowNumber, exp.Union, exp.Intersect, exp.Except,
    exp.Neg, exp.Not, exp.And, exp.Or, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ,
    exp.NullSafeNEQ, exp.Is, exp.In, exp.Between, exp.Like, exp.ILike, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv,
    exp.Mod, exp.Case, exp.If, exp.Cast, exp.TryCast, exp.Escape, exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max,
    exp.Variance, exp.VariancePop, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Anonymous,
    exp.Exists,  # subqueries in WHERE (rewriter/subqueries.py)
    # how sqlglot reads back what the Spark dialect writes by name (SPARK_NAMED_FUNCTIONS)
    exp.ConcatWs, exp.Chr, exp.DateDiff, exp.TsOrDsToDate, exp.Values,
)  # fmt: skip


def verify(sql: str, views: Collection[str]) -> str:
    """Return ``sql`` if, parsed as Spark SQL, it reads only ``views`` (and its own CTEs) and calls
    only functions dpsql emits on Spark; raise RewriteInvariantError (XX000) otherwise. Pure."""
    try:
        trees = sqlglot.parse(sql, read="spark")
    except SqlglotError:
        raise RewriteInvariantError("internal error: the Spark SQL does not parse; the query was refused") from None
    if len(trees) != 1 or not isinstance(trees[0], exp.Query):
        raise RewriteInvariantError("internal error: the Spark SQL is not one query; the query was refused")
    tree = trees[0]
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    allowed_views = set(views)
    for node in tree.walk():
        if isinstance(node, exp.Table):
            if node.args.get("db") is not None or node.args.get("catalog") is not None or not isinstance(node.this, exp.Identifier) \
                    or (node.name not in ctes and node.name not in allowed_views):
                raise RewriteInvariantError(f"internal error: the Spark SQL reads {node.sql('spark')}, which is not a table of the "
                                            "policy; the query was refused")
            continue
        if isinstance(node, exp.Anonymous):
            if node.name.upper() not in SPARK_NAMED_FUNCTIONS:
                raise RewriteInvariantError(f"internal error: the Spark SQL calls {node.name.lower()}(), which dpsql does not emit; "
                                            "the query was refused")
            continue
        if isinstance(node, _EMITTED_ONLY):
            continue
        rule = SCALAR_FUNCTIONS.get(type(node))
        if rule is not None:
            if rule.spark == "refuse":
                raise RewriteInvariantError(f"internal error: the Spark SQL calls {rule.name}(), which is refused on Spark; "
                                            "the query was refused")
            continue
        if not isinstance(node, _STRUCTURE):
            what = node.sql_name() if isinstance(node, exp.Func) else type(node).__name__
            raise RewriteInvariantError(f"internal error: the Spark SQL contains {what}, which dpsql does not emit; the query was refused")
    return sql
