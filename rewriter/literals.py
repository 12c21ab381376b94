"""Pass 1 (with parse): the errors PostgreSQL raises on constants, raised before anything runs (and so free).

PostgreSQL rejects some queries whatever the data: a negative ``LIMIT`` (2201W) or ``OFFSET``
(2201X), a ``LIMIT``/``OFFSET`` beyond ``bigint`` (22003) or that is not a number (22P02)
(:func:`check_row_counts`, run on every query right after parsing), and a division or modulo by
a constant zero (22012) in post-processing (:func:`check_divisors`, run by
:mod:`~dpsql.rewriter.post_query` on the query over noisy values, and on queries over public tables
only). dpsql decides these from the query text alone, so the refusal is the same on every
database and costs no budget. (A constant zero divisor inside a row-level expression over private
rows is :mod:`~dpsql.rewriter.totalize`'s: it makes the expression total.) Constant
``LIMIT``/``OFFSET`` values are normalised to the integer PostgreSQL would use (numeric values
round half away from zero, ``'5'`` is 5), so every engine applies the same count.

>>> from sqlglot import parse_one
>>> check_row_counts(parse_one("SELECT COUNT(*) FROM t LIMIT 2.5 OFFSET '1'", read="postgres")).sql("postgres")
'SELECT COUNT(*) FROM t LIMIT 3 OFFSET 1'
>>> check_row_counts(parse_one("SELECT COUNT(*) FROM t LIMIT -1", read="postgres"))
Traceback (most recent call last):
...
dpsql.errors.InvalidLimitValue: LIMIT must not be negative (hint: use LIMIT 0 for no rows or LIMIT ALL for every row)
>>> check_divisors(parse_one("SELECT __dp_a0 FROM __dp_noisy WHERE 1/(2-2) > 0", read="duckdb"))
Traceback (most recent call last):
...
dpsql.errors.DivisionByZero: division by zero (hint: the divisor (2 - 2) is zero whatever the data; no budget was spent)
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal
from typing import Final

from sqlglot import exp

from dpsql.errors import (
    DivisionByZero,
    InvalidLimitValue,
    InvalidOffsetValue,
    InvalidTextRepresentation,
    NumericValueOutOfRange,
    QuerySyntaxError,
)

INT8_MIN: Final = -(2**63)
INT8_MAX: Final = 2**63 - 1
_INT8_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")
_INTEGER_TYPES = (exp.DataType.Type.BIGINT, exp.DataType.Type.INT, exp.DataType.Type.SMALLINT)


class _Unknown:
    """Marker: the expression is not a constant this pass can evaluate."""


UNKNOWN: Final = _Unknown()
Value = Decimal | str | None | _Unknown  # a number, a string literal, NULL, or not a known constant


def check_row_counts(tree: exp.Expression) -> exp.Expression:
    """Refuse a LIMIT/OFFSET/FETCH count PostgreSQL refuses and normalise constant counts (see the
    module docstring); returns ``tree`` (changed in place). Depends on the text only."""
    for clause in list(tree.find_all(exp.Limit, exp.Offset, exp.Fetch)):
        _check_count(clause)
    return tree


def check_divisors(tree: exp.Expression) -> None:
    """22012 when any division or modulo in ``tree`` has a divisor that is zero whatever the data."""
    for node in tree.find_all(exp.Div, exp.IntDiv, exp.Mod):
        divisor = node.expression
        if _is_zero(constant_value(divisor)):
            if isinstance(divisor, exp.Literal):
                hint = "a division by the literal 0 always fails; no budget was spent"
            else:
                hint = f"the divisor {divisor.sql('postgres')} is zero whatever the data; no budget was spent"
            raise DivisionByZero("division by zero", hint=hint)


def constant_value(node: exp.Expression | None) -> Value:
    """The value of a constant expression made of literals, NULL, unary minus, + − ×, parentheses and
    casts to numeric types; UNKNOWN for anything else (columns, functions, parameters …)."""
    try:
        with decimal.localcontext() as ctx:
            ctx.prec = 80
            ctx.traps[decimal.Inexact] = False
            return _value(node)
    except (ArithmeticError, ValueError):
        return UNKNOWN


def _value(node: exp.Expression | None) -> Value:
    if isinstance(node, exp.Paren):
        return _value(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Literal):
        return str(node.this) if node.is_string else Decimal(str(node.this))
    if isinstance(node, exp.Neg):
        v = _value(node.this)
        return -v if isinstance(v, Decimal) else UNKNOWN
    if isinstance(node, exp.Add | exp.Sub | exp.Mul):
        a, b = _value(node.this), _value(node.expression)
        if not isinstance(a, Decimal) or not isinstance(b, Decimal):
            return UNKNOWN
        if isinstance(node, exp.Add):
            return a + b
        return a - b if isinstance(node, exp.Sub) else a * b
    if isinstance(node, exp.Cast) and node.to.is_type(*exp.DataType.NUMERIC_TYPES):
        v = _value(node.this)
        if isinstance(v, str):
            v = Decimal(v.strip())
        if isinstance(v, Decimal) and node.to.is_type(*_INTEGER_TYPES):
            return Decimal(_round(v))
        return v
    return UNKNOWN


def _is_zero(v: Value) -> bool:
    if isinstance(v, str):
        try:
            return Decimal(v.strip()) == 0
        except (ArithmeticError, ValueError):
            return False
    return isinstance(v, Decimal) and v == 0


def _round(v: Decimal) -> int:
    """numeric → bigint as PostgreSQL does: round half away from zero."""
    return int(v.to_integral_value(rounding=decimal.ROUND_HALF_UP))


def _check_count(clause: exp.Expression) -> None:
    what = "OFFSET" if isinstance(clause, exp.Offset) else "LIMIT"
    key = "count" if isinstance(clause, exp.Fetch) else "expression"
    node = clause.args.get(key)
    options = clause.args.get("limit_options")
    if isinstance(options, exp.LimitOptions) and options.args.get("percent"):
        raise QuerySyntaxError(f"syntax error: {what} … PERCENT is not PostgreSQL syntax", hint=f"give {what} a row count")
    v = constant_value(node)
    if v is None or v is UNKNOWN or node is None:
        return
    if isinstance(v, str):
        if not _INT8_TEXT.match(v):
            raise InvalidTextRepresentation(f'invalid input syntax for type bigint: "{v}"', hint=f"{what} takes a whole number of rows")
        n = int(v)
    else:
        assert isinstance(v, Decimal)
        if not v.is_finite():
            raise NumericValueOutOfRange("bigint out of range", hint=f"{what} takes at most {INT8_MAX}")
        n = _round(v)
    if not INT8_MIN <= n <= INT8_MAX:
        raise NumericValueOutOfRange("bigint out of range", hint=f"{what} takes at most {INT8_MAX}")
    if n < 0:
        if what == "OFFSET":
            raise InvalidOffsetValue("OFFSET must not be negative", hint="OFFSET is the number of rows to skip: 0 or more")
        raise InvalidLimitValue("LIMIT must not be negative", hint="use LIMIT 0 for no rows or LIMIT ALL for every row")
    if not (isinstance(node, exp.Literal) and not node.is_string and node.this == str(n)):
        clause.set(key, exp.Literal.number(n))
