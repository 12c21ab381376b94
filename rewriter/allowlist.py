"""Pass 4 (``allowlist``): default-deny allowlist of syntax node types and functions (security.md R12, R13).

Every node of the parsed tree must be of an allowed type; a function must be in
:data:`~dpsql.rewriter.functions.SCALAR_FUNCTIONS` or be a supported aggregate. Constructs that let
one row see other rows (window functions, recursive CTEs, set operations, sampling, table functions)
are refused here, before anything else looks at the query. Subqueries in expressions (``IN (SELECT
…)``, ``EXISTS``, scalar subqueries) pass this pass; pass 6c (:mod:`~dpsql.rewriter.subqueries`)
admits them only over public tables or as semi-joins on the privacy unit.

>>> from dpsql.rewriter.parse import parse_statement
>>> check_allowed(parse_statement("SELECT COUNT(*) FROM visits WHERE age BETWEEN 20 AND 30")).sql()
'SELECT COUNT(*) FROM visits WHERE age BETWEEN 20 AND 30'
>>> check_allowed(parse_statement("SELECT SUM(cost) OVER () FROM visits"))
Traceback (most recent call last):
...
dpsql.errors.UnsupportedQuery: window functions are not supported (hint: aggregate with GROUP BY instead)
"""

from __future__ import annotations

from sqlglot import exp

from dpsql.errors import (
    DatatypeMismatch,
    InvalidParameterValue,
    NumericValueOutOfRange,
    PrivacyViolation,
    SubstringError,
    UndefinedFunction,
    UnsupportedQuery,
)
from dpsql.rewriter.aggregates import SUPPORTED_AGGREGATES
from dpsql.rewriter.bounds import literal_fraction
from dpsql.rewriter.functions import INT4_RANGE, RAW_VALUE_AGGREGATES, SCALAR_FUNCTIONS, function_rule
from dpsql.rewriter.intervals import interval_call
from dpsql.rewriter.normalize import display_name

_STRUCTURE: tuple[type[exp.Expression], ...] = (
    exp.Select,
    exp.From,
    exp.Join,
    exp.Where,
    exp.Group,
    exp.Having,
    exp.Order,
    exp.Ordered,
    exp.Limit,
    exp.Offset,
    exp.With,
    exp.CTE,
    exp.Subquery,
    exp.Table,
    exp.TableAlias,
    exp.Alias,
    exp.Column,
    exp.Identifier,
    exp.Star,
    exp.Distinct,
    exp.Filter,
    exp.Paren,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.DataType,
    exp.DataTypeParam,
    exp.Var,
    exp.Interval,
    exp.IntervalSpan,
    exp.Tuple,
    exp.Placeholder,
)

_OPERATORS: tuple[type[exp.Expression], ...] = (
    exp.Neg,
    exp.Not,
    exp.And,
    exp.Or,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.NullSafeEQ,
    exp.NullSafeNEQ,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Mod,
    exp.Case,
    exp.If,
    exp.Cast,
    exp.TryCast,
    exp.Escape,
    exp.Exists,  # its body is checked by pass 6c (rewriter.subqueries)
)

_ALLOWED = _STRUCTURE + _OPERATORS + tuple(SCALAR_FUNCTIONS) + SUPPORTED_AGGREGATES

_UNSUPPORTED: dict[type[exp.Expression], tuple[str, str]] = {
    exp.Window: ("window functions are not supported", "aggregate with GROUP BY instead"),
    exp.Union: ("UNION is not supported", "run the queries separately"),
    exp.Intersect: ("INTERSECT is not supported", "run the queries separately"),
    exp.Except: ("EXCEPT is not supported", "run the queries separately"),
    exp.Lateral: ("LATERAL is not supported", "rewrite without LATERAL"),
    exp.Unnest: ("UNNEST is not supported", "rewrite without arrays"),
    exp.Values: ("VALUES lists are not supported as tables", "use IN (...) with literals"),
    exp.RegexpLike: ("regular expressions are not supported", "use LIKE with a literal pattern"),
    exp.SimilarTo: ("SIMILAR TO is not supported", "use LIKE with a literal pattern"),
    exp.Rand: ("random() is not supported", "remove random() from the query"),
    exp.Cube: ("CUBE is not supported", "group by the columns and run one query per grouping"),
    exp.Rollup: ("ROLLUP is not supported", "group by the columns and run one query per grouping"),
    exp.GroupingSets: ("GROUPING SETS are not supported", "run one query per grouping"),
    exp.Pivot: ("PIVOT is not supported", "group by the pivot column instead"),
    exp.Array: ("arrays are not supported", "rewrite without arrays"),
    exp.Bracket: ("array subscripts are not supported", "rewrite without arrays"),
    exp.Lambda: ("lambdas are not supported", "rewrite without lambdas"),
}

_RAW_ACCESS: dict[type[exp.Expression], str] = {
    exp.TableSample: "TABLESAMPLE samples private rows before aggregation",
    exp.Into: "SELECT INTO writes data",
    exp.Lock: "FOR UPDATE/SHARE locks rows",
}


def check_allowed(tree: exp.Expression, *, private: bool = True) -> exp.Expression:
    """Return ``tree`` unchanged if every node is allowed; raise the matching SQLSTATE error otherwise.

    Guarantees (``private=True``, any query reading a private table): no window, recursion, set
    operation, table function, sampling, unknown function or non-literal pattern survives this
    pass; subqueries outside FROM/WITH only as expression subqueries, for pass 6c to check. A
    query over public tables only (``private=False``) may use any aggregate, window, subquery or
    set operation, but still no table function, unknown function or write.
    """
    with_ = tree.args.get("with_")
    if isinstance(with_, exp.With) and with_.args.get("recursive"):
        raise UnsupportedQuery("recursive CTEs are not supported", hint="rewrite the query without WITH RECURSIVE")
    for node in tree.walk():
        if private:
            _check_node(node)
        else:
            _check_public_node(node)
    return tree


_PUBLIC_EXTRA: tuple[type[exp.Expression], ...] = (
    exp.AggFunc,
    exp.Window,
    exp.WindowSpec,
    exp.Exists,
    exp.Union,
    exp.Intersect,
    exp.Except,
    exp.RegexpLike,
    exp.Array,
    exp.Bracket,
    exp.Cube,
    exp.Rollup,
    exp.GroupingSets,
    exp.RowNumber,
    exp.Values,
)


def _check_public_node(node: exp.Expression) -> None:
    """Checks for a query that reads public tables only: no table functions, writes or unknown functions."""
    cls = type(node)
    if interval_call(node) is not None:
        raise UnsupportedQuery(
            f"{node.name.upper()} bounds a differentially private aggregate; this query reads public tables only",
            hint="its values are exact: no interval is needed",
        )
    if cls in _RAW_ACCESS and cls is not exp.TableSample:
        raise PrivacyViolation(f"{_RAW_ACCESS[cls]}; dpsql is read-only", hint="remove it from the query")
    if isinstance(node, exp.Table):
        _check_table(node)
        return
    if isinstance(node, _PUBLIC_EXTRA) or cls in SCALAR_FUNCTIONS or cls in _ALLOWED:
        return
    if isinstance(node, exp.Func):
        raise UndefinedFunction(f"function {display_name(node)}() is not allowed by dpsql", hint="see docs/sql.md")
    raise UnsupportedQuery(f"{display_name(node)} syntax is not supported", hint="rewrite the query with plain SELECT syntax")


def _check_node(node: exp.Expression) -> None:
    cls = type(node)
    if interval_call(node) is not None:
        return  # DP_INTERVAL_LOW/HIGH: post-processing of released aggregates (positions checked by analyze)
    if cls in _RAW_ACCESS:
        raise PrivacyViolation(f"{_RAW_ACCESS[cls]}; dpsql releases only noisy aggregates", hint="remove it from the query")
    for bad, (msg, hint) in _UNSUPPORTED.items():
        if isinstance(node, bad):
            raise UnsupportedQuery(msg, hint=hint)
    if isinstance(node, exp.Table):
        _check_table(node)
    elif isinstance(node, exp.Select | exp.Subquery) and not _in_from_position(node) and not _expression_subquery(node):
        raise UnsupportedQuery(
            "subqueries are only supported in FROM, WITH and WHERE", hint="move the subquery into FROM (a derived table) or a CTE"
        )
    elif isinstance(node, exp.Like | exp.ILike):
        pattern = node.expression
        if isinstance(pattern, exp.Escape):
            pattern = pattern.this
        if not _is_literal(pattern):
            raise UnsupportedQuery("LIKE needs a literal pattern", hint="write the pattern as a string literal")
    elif isinstance(node, exp.Select) and node.args.get("distinct") is not None and node.args["distinct"].args.get("on"):
        raise PrivacyViolation("DISTINCT ON picks individual rows", hint="use GROUP BY with aggregates")
    elif isinstance(node, exp.Select) and node.parent is not None and not _in_expression_subquery(node):
        _check_inner_select(node)
    for name, reason in RAW_VALUE_AGGREGATES.items():
        if isinstance(node, name) and not isinstance(node, SUPPORTED_AGGREGATES):
            raise PrivacyViolation(
                f"{reason} would release a value of one individual",
                hint="use AVG, SUM or COUNT (with GROUP BY) for differentially private statistics",
            )
    if isinstance(node, exp.AggFunc) and not isinstance(node, SUPPORTED_AGGREGATES):
        raise UnsupportedQuery(
            f"aggregate {node.sql_name().upper()} is not supported",
            hint="use COUNT, SUM, AVG, VAR_POP, VAR_SAMP, STDDEV_POP or STDDEV_SAMP",
        )
    rule = function_rule(node)
    if rule is not None:
        for arg in rule.literal_args:
            value = node.args.get(arg)
            if value is not None and not _is_literal(value):
                raise UnsupportedQuery(
                    f"argument {arg!r} of {rule.name}() must be a literal", hint="write that argument as a constant"
                )
        for arg in rule.int_args:
            _check_int_arg(node, rule.name, arg)
        return
    if isinstance(node, exp.Func) and not isinstance(node, SUPPORTED_AGGREGATES) and cls not in _ALLOWED:
        raise UndefinedFunction(
            f"function {display_name(node)}() is not allowed by dpsql",
            hint="see the list of supported functions in the documentation (docs/sql.md)",
        )
    if cls not in _ALLOWED:
        raise UnsupportedQuery(f"{display_name(node)} syntax is not supported", hint="rewrite the query with plain SELECT syntax")


def _check_int_arg(node: exp.Expression, name: str, arg: str) -> None:
    """A literal integer argument (lengths, offsets, positions, decimals) must be an integer in
    int4 range, checked here so that the engine can never fail on it for some rows only."""
    value = node.args.get(arg)
    if value is None:
        return
    number = literal_fraction(value)
    if number is None or number.denominator != 1:
        raise DatatypeMismatch(f"argument {arg!r} of {name}() must be an integer literal", hint="write it as a whole number")
    lo, hi = INT4_RANGE
    if not lo <= number <= hi:
        raise NumericValueOutOfRange("integer out of range", hint=f"argument {arg!r} of {name}() must lie in [{lo}, {hi}]")
    if isinstance(node, exp.Substring) and arg == "length" and number < 0:
        raise SubstringError("negative substring length not allowed", hint="give a length of 0 or more")
    if isinstance(node, exp.SplitPart) and number == 0:
        raise InvalidParameterValue("field position must not be zero", hint="split_part counts fields from 1 (or from -1 at the end)")


def _check_inner_select(node: exp.Select) -> None:
    """A subquery or CTE may not pick, order or deduplicate rows before the outer aggregation (R13)."""
    for arg, what in (("limit", "LIMIT"), ("offset", "OFFSET"), ("order", "ORDER BY"), ("distinct", "DISTINCT")):
        if node.args.get(arg) is not None:
            raise PrivacyViolation(
                f"{what} inside a subquery would act on individual rows before aggregation",
                hint=f"apply {what} to the outer, aggregated query instead",
            )


def _check_table(node: exp.Table) -> None:
    inner = node.this
    if isinstance(inner, exp.Func) or not isinstance(inner, exp.Identifier):
        raise PrivacyViolation(
            "table functions (read_csv, read_parquet, generate_series …) are not allowed",
            hint="query the tables listed by \\dt",
        )
    if node.args.get("catalog") is not None:
        raise PrivacyViolation("cross-database references are not allowed", hint="use schema.table or table")


def _in_from_position(node: exp.Expression) -> bool:
    """True for a SELECT that is the query itself, a CTE body or a derived table in FROM/JOIN."""
    parent = node.parent
    if parent is None:
        return True
    if isinstance(node, exp.Select) and isinstance(parent, exp.Subquery | exp.CTE):
        return _in_from_position(parent) if isinstance(parent, exp.Subquery) else True
    if isinstance(node, exp.Subquery):
        return isinstance(parent, exp.From | exp.Join) or (isinstance(parent, exp.Subquery) and _in_from_position(parent))
    return False


def _expression_subquery(node: exp.Expression) -> bool:
    """True for the SELECT (or its parenthesis) of ``x IN (SELECT …)``, ``EXISTS (SELECT …)`` or a
    scalar subquery used as a value: pass 6c decides whether it is allowed."""
    if isinstance(node, exp.Select) and isinstance(node.parent, exp.Subquery):
        return _expression_subquery(node.parent)
    parent = node.parent
    if isinstance(node, exp.Select):
        return isinstance(parent, exp.Exists)
    return parent is not None and not isinstance(parent, exp.From | exp.Join | exp.Subquery | exp.CTE | exp.With)


def _in_expression_subquery(node: exp.Expression) -> bool:
    """True when ``node`` lies inside an expression subquery (:func:`_expression_subquery`); pass 6c
    checks those bodies (DISTINCT/ORDER BY/LIMIT are harmless over public rows, refused over private ones)."""
    while node.parent is not None:
        if isinstance(node, exp.Select | exp.Subquery) and _expression_subquery(node):
            return True
        node = node.parent
    return False


def _is_literal(node: exp.Expression | None) -> bool:
    while isinstance(node, exp.Paren | exp.Neg):
        node = node.this
    if isinstance(node, exp.Cast):
        return _is_literal(node.this)
    return isinstance(node, exp.Literal | exp.Null | exp.Boolean | exp.Var)
