"""Type families of row-level expressions: the coarse types the rewriter reasons with.

dpsql decides the type of every row-level expression itself (never the engine's implicit casts or
constant folding): int, float, numeric, text, bool, date, timestamp, interval, ``literal`` (an
untyped string literal whose type the context decides) or unknown.

>>> from sqlglot import parse_one
>>> type_family(parse_one("t.a + 1.5"), {"t.a": "int"})
'numeric'
>>> type_family(parse_one("t.d - t.d"), {"t.d": "date"})
'int'
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp

from dpsql.rewriter.subquery_ref import ref_family

Families = Mapping[str, str]  # "alias.column" -> family (int, float, numeric, text, bool, date, timestamp …)

NUMERIC_FAMILIES = frozenset({"int", "float", "numeric"})
TEMPORAL_FAMILIES = frozenset({"date", "timestamp"})


def type_family(node: exp.Expression, columns: Families) -> str:
    """A coarse type family of an expression: int, float, numeric, text, bool, date, timestamp, interval or unknown."""
    if isinstance(node, exp.Paren):
        return type_family(node.this, columns)
    if isinstance(node, exp.Column):
        return columns.get(f"{node.table}.{node.name}", "unknown")
    if isinstance(node, exp.Literal):
        if node.is_string:
            return "literal"
        return "int" if node.is_int else "numeric"
    if isinstance(node, exp.Null):
        return "unknown"
    if isinstance(node, exp.Interval):
        return "interval"
    if isinstance(node, exp.Boolean):
        return "bool"
    if isinstance(node, exp.Cast | exp.TryCast):
        return datatype_family(node.to)
    if isinstance(node, exp.Neg):
        return type_family(node.this, columns)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Mod):
        a, b = type_family(node.this, columns), type_family(node.expression, columns)
        if a in TEMPORAL_FAMILIES or b in TEMPORAL_FAMILIES:
            if isinstance(node, exp.Sub) and a in TEMPORAL_FAMILIES and b in TEMPORAL_FAMILIES:
                return "int" if a == b == "date" else "interval"
            return "timestamp" if "timestamp" in (a, b) or "interval" in (a, b) else "date"
        if "interval" in (a, b):
            return "interval"
        return widen(a, b)
    if isinstance(node, exp.Div):
        a, b = type_family(node.this, columns), type_family(node.expression, columns)
        return "int" if a == b == "int" else widen(a, b) if {a, b} <= NUMERIC_FAMILIES else "float"
    if isinstance(node, exp.IntDiv):
        return "int"
    if isinstance(node, exp.Lower | exp.Upper | exp.Trim | exp.Concat | exp.DPipe | exp.Replace | exp.Left | exp.Right):
        return "text"
    if isinstance(node, exp.Substring | exp.SplitPart | exp.Reverse | exp.MD5):
        return "text"
    if isinstance(node, exp.Length | exp.StrPosition | exp.Sign):
        return "int"
    if isinstance(node, exp.Extract):
        return "numeric"
    if isinstance(node, exp.TimestampTrunc | exp.DateTrunc):
        return "timestamp"
    if isinstance(node, exp.CurrentDate | exp.StrToDate):
        return "date"
    if isinstance(node, exp.StrToTime | exp.UnixToTime):
        return "timestamp"
    if isinstance(node, exp.TimeToStr | exp.NumberToStr):
        return "text"
    if isinstance(node, exp.Anonymous) and (family := ref_family(node)) is not None:
        return family  # a subquery's value (rewriter.subqueries)
    if isinstance(node, exp.Anonymous) and str(node.name).lower() == "age":
        return "interval"
    if isinstance(node, exp.CurrentTimestamp):
        return "timestamp"
    if isinstance(node, exp.Round | exp.Floor | exp.Ceil | exp.Trunc | exp.Abs):
        return type_family(node.this, columns)
    if isinstance(node, exp.Sqrt | exp.Ln | exp.Log | exp.Exp | exp.Pow | exp.Pi):
        return "float"
    if isinstance(node, exp.Coalesce | exp.Greatest | exp.Least):
        fams = {type_family(a, columns) for a in [node.this, *node.expressions]} - {"unknown"}
        if fams == {"literal"}:
            return "text"  # PostgreSQL resolves arguments that are all unknown-type literals to text
        fams -= {"literal"}
        return widen(*fams) if fams and fams <= NUMERIC_FAMILIES else (fams.pop() if len(fams) == 1 else "unknown")
    if isinstance(node, exp.Nullif):
        fam = type_family(node.this, columns)
        return "text" if fam == "literal" else fam
    if isinstance(node, exp.Case):
        fams = {type_family(i.args["true"], columns) for i in node.args.get("ifs") or []}
        if node.args.get("default") is not None:
            fams.add(type_family(node.args["default"], columns))
        fams -= {"unknown"}
        if fams == {"literal"}:
            return "text"
        fams -= {"literal"}
        return widen(*fams) if fams and fams <= NUMERIC_FAMILIES else (fams.pop() if len(fams) == 1 else "unknown")
    if isinstance(node, exp.Predicate | exp.Connector | exp.Not | exp.Is | exp.In | exp.Between | exp.StartsWith):
        return "bool"
    if isinstance(node, exp.Try):
        return type_family(node.this, columns)
    return "unknown"


def widen(*fams: str) -> str:
    """The family of a value mixing ``fams``: int ⊂ numeric ⊂ float; anything else is unknown."""
    s = set(fams)
    if s <= {"int"}:
        return "int"
    if "float" in s:
        return "float"
    if s <= NUMERIC_FAMILIES | {"literal"}:
        return "numeric"
    return "unknown"


def datatype_family(dt: exp.DataType) -> str:
    """The family of a SQL data type (unknown for types dpsql does not reason about)."""
    if dt.is_type(*exp.DataType.INTEGER_TYPES):
        return "int"
    if dt.is_type(exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT):
        return "float"
    if dt.is_type(exp.DataType.Type.DECIMAL, exp.DataType.Type.BIGDECIMAL):
        return "numeric"
    if dt.is_type(*exp.DataType.TEXT_TYPES):
        return "text"
    if dt.is_type(exp.DataType.Type.BOOLEAN):
        return "bool"
    if dt.is_type(exp.DataType.Type.DATE):
        return "date"
    if dt.is_type(exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.DATETIME):
        return "timestamp"
    if dt.is_type(exp.DataType.Type.INTERVAL):
        return "interval"
    return "unknown"


