"""PostgreSQL's output column names (``FigureColname``) for select-list expressions.

DuckDB names an unaliased expression by its text; PostgreSQL names it by the function, column or
type involved, else ``?column?``. The rewrite aliases every projection with the name PostgreSQL
would give it, so clients see the same column names.

>>> import sqlglot
>>> q = sqlglot.parse_one("SELECT c.relname, pg_catalog.format_type(a, b), 1, 'x'::text, count(*), "
...                       "(SELECT d.adsrc FROM d), CASE WHEN x THEN 1 END, true, x IS NULL, 'a'::regclass::oid, "
...                       "CASE WHEN x THEN '' ELSE c.reloftype::regtype::text END", read="postgres")
>>> [pg_column_name(e) for e in q.expressions]
['relname', 'format_type', '?column?', 'text', 'count', 'adsrc', 'case', '?column?', '?column?', 'oid', 'reloftype']
"""

from __future__ import annotations

from sqlglot import exp

from dpsql.proxy.catalog.pgtypes import canonical_name

# sqlglot function classes whose PostgreSQL name differs from sqlglot's first SQL name.
_FUNC_NAMES: dict[type[exp.Expression], str] = {
    exp.CurrentVersion: "version", exp.CurrentSchema: "current_schema", exp.CurrentSchemas: "current_schemas",
    exp.CurrentDatabase: "current_database", exp.CurrentCatalog: "current_catalog", exp.CurrentUser: "current_user",
    exp.SessionUser: "session_user", exp.ArrayToString: "array_to_string", exp.StringToArray: "string_to_array",
    exp.ArraySize: "array_length", exp.ExplodingGenerateSeries: "generate_series", exp.Explode: "unnest",
    exp.GroupConcat: "string_agg", exp.ArrayAgg: "array_agg", exp.CurrentTimestamp: "now", exp.Trim: "btrim",
    exp.StrPosition: "position", exp.LogicalAnd: "bool_and", exp.LogicalOr: "bool_or", exp.TimeToStr: "to_char",
    exp.JSONArrayAgg: "json_agg", exp.Length: "length", exp.Rand: "random", exp.Pow: "power", exp.Mod: "mod",
    exp.Format: "format", exp.TimestampTrunc: "date_trunc", exp.ArrayConcat: "array_cat", exp.ArrayAppend: "array_append",
    exp.ArrayRemove: "array_remove", exp.ArrayPosition: "array_position",
}


def pg_column_name(e: exp.Expression) -> str | None:
    """The name PostgreSQL gives select-list item ``e``; None for ``*`` (names come from the relation)."""
    if isinstance(e, exp.Alias):
        ident = e.args.get("alias")
        return ident.name if isinstance(ident, exp.Identifier) and ident.quoted else e.alias.lower()
    if isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star)):
        return None
    return _figure(e)[0] or "?column?"


_NAMELESS = (exp.Binary, exp.Unary, exp.Predicate, exp.Connector, exp.Not, exp.Boolean, exp.Literal, exp.Null)


def _figure(e: exp.Expression) -> tuple[str | None, int]:
    """(name, strength) like PostgreSQL's FigureColnameInternal: 2 = column/function, 1 = type or ``case``, 0 = none."""
    if isinstance(e, exp.Column):
        return (e.name if e.this.quoted else e.name.lower()), 2
    if isinstance(e, exp.Paren):
        return _figure(e.this)
    if isinstance(e, exp.Dot):
        if isinstance(e.expression, exp.Func):  # schema.function(...)
            return _figure(e.expression)
        return (e.expression.name, 2) if isinstance(e.expression, exp.Identifier) else _figure(e.expression)
    if isinstance(e, exp.Bracket):
        return _figure(e.this)
    if isinstance(e, exp.Cast):
        name, strength = _figure(e.this)
        return (name, strength) if strength > 1 else (_type_name(e.to), 1)
    if isinstance(e, exp.Collate):
        return _figure(e.this)
    if isinstance(e, exp.Case):
        default = e.args.get("default")
        name, strength = _figure(default) if default is not None else (None, 0)
        return (name, strength) if strength > 1 else ("case", 1)
    if isinstance(e, exp.Exists):
        return "exists", 2
    if isinstance(e, exp.Array):
        return "array", 2
    if isinstance(e, exp.Tuple):
        return "row", 2
    if isinstance(e, exp.Subquery):
        inner = e.this
        if isinstance(inner, exp.Select) and inner.expressions:
            return pg_column_name(inner.expressions[0]), 2
        return None, 0
    if isinstance(e, exp.Window):
        return _figure(e.this)
    if isinstance(e, _NAMELESS):
        return None, 0
    if isinstance(e, exp.Anonymous):
        return str(e.this).lower(), 2
    if isinstance(e, exp.Func):
        if type(e) in _FUNC_NAMES:
            return _FUNC_NAMES[type(e)], 2
        names = type(e).sql_names()
        return (names[0].lower(), 2) if names else (None, 0)
    return None, 0


def _type_name(t: exp.Expression) -> str | None:
    """The last component of a cast's type name, normalised like PostgreSQL (``integer`` → ``int4``)."""
    if isinstance(t, exp.ObjectIdentifier):
        return t.name.lower()
    if isinstance(t, exp.DataType):
        if t.this == exp.DataType.Type.USERDEFINED:
            kind = t.args.get("kind")
            name = kind.expression.name if isinstance(kind, exp.Dot) else (kind.name if kind is not None else "")
            return name
        if t.this == exp.DataType.Type.ARRAY:
            return _type_name(t.expressions[0]) if t.expressions else None
        sql = t.sql(dialect="postgres").lower().split("(")[0]
        return canonical_name(sql) or sql
    return None
