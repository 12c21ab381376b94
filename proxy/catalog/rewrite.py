"""Rewrite one PostgreSQL catalog query (a sqlglot AST) into DuckDB SQL over the shadow.

* ``pg_catalog.X`` / bare ``pg_X`` / ``information_schema.X`` → the shadow tables (:mod:`.shadow`);
  any other relation is refused (42P01): a catalog answer never reads the user's data.
* ``::regclass``/``::regtype``/``::regnamespace``/``::regrole``/``::regproc`` and ``::oid`` casts
  become OID lookups, or names where PostgreSQL would print the value (a projection, ``::text``).
* ``OPERATOR(pg_catalog.~)`` and friends become plain operators; ``COLLATE`` is dropped;
  ``pg_catalog.`` is stripped from functions, which map to the ``dpsql_*`` macros, to constants
  (relation sizes and statistics are always unknown), or to session values.
* Every projection is aliased with the name PostgreSQL gives it (:mod:`.names`).

Values that depend on the session (user, settings, search path, parameters) are left as tokens:
quoted markers that :mod:`.render` replaces with literals for each execution, so the rewritten
text can be cached by statement.

>>> from dpsql.proxy.catalog.objects import Objects
>>> ob = Objects("db", 1, {"pg_catalog": 11, "public": 2200}, {}, {"dpsql": 10}, {"pg_catalog.pg_class": 1259})
>>> t = rewrite("SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' "
...             "COLLATE pg_catalog.default", ob, "tok")
>>> t.sql
'SELECT c.relname AS "relname" FROM dpsql_pg."pg_class" AS c WHERE REGEXP_MATCHES(c.relname, \\'^(t)$\\')'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from dpsql.errors import (
    InvalidParameterValue,
    InvalidSchemaName,
    InvalidTextRepresentation,
    PrivacyViolation,
    QuerySyntaxError,
    UndefinedFunction,
    UndefinedObject,
    UndefinedTable,
    UnsupportedQuery,
)
from dpsql.proxy.catalog import pg_snapshot as snap
from dpsql.proxy.catalog.names import pg_column_name
from dpsql.proxy.catalog.objects import Objects
from dpsql.proxy.catalog.pgtypes import BY_NAME, canonical_name
from dpsql.proxy.catalog.synthetic_catalog import DYNAMIC, IS_SCHEMA, PG_SCHEMA

PG_RELATIONS = frozenset(q.split(".", 1)[1] for q in snap.RELATION_COLUMNS if q.startswith("pg_catalog."))
IS_RELATIONS = frozenset(q.split(".", 1)[1] for q in snap.RELATION_COLUMNS if q.startswith("information_schema."))
FORBIDDEN_RELATIONS = frozenset({"pg_authid", "pg_shadow", "pg_user_mapping", "pg_hba_file_rules", "pg_ident_file_mappings",
                                 "pg_file_settings", "pg_config", "pg_largeobject", "pg_backend_memory_contexts",
                                 "pg_shmem_allocations"})
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
START_TIME_SQL = "CAST('{}' AS TIMESTAMPTZ)"


@dataclass(frozen=True)
class Token:
    """A value filled in at execution: ``kind`` (``user``, ``setting``, ``param`` …) and its argument."""

    kind: str
    arg: Any = None


@dataclass(frozen=True)
class Template:
    """Rewritten DuckDB SQL with token markers, and the tokens in marker order."""

    sql: str
    tokens: tuple[Token, ...]
    sources: tuple[str, ...] | None = None  # per output column: the catalog column or function it shows, if known


class CatalogSyntaxError(QuerySyntaxError):
    """The statement does not parse (42601)."""


def parse(sql: str) -> exp.Expression:
    """Parse exactly one PostgreSQL statement; QuerySyntaxError (42601) otherwise."""
    text = _prepare(sql)
    try:
        trees = [t for t in sqlglot.parse(text, read="postgres") if t is not None]
    except (ParseError, TokenError) as e:
        raise CatalogSyntaxError(f"syntax error in catalog query: {_first_line(str(e))}") from None
    if len(trees) != 1:
        raise CatalogSyntaxError("expected exactly one statement")
    return trees[0]


def rewrite(sql: str | exp.Expression, objects: Objects, marker: str) -> Template:
    """The DuckDB template of one catalog SELECT (see the module docstring); DPSQLError if it can't be answered."""
    tree = parse(sql) if isinstance(sql, str) else sql
    if not isinstance(tree, exp.Query):
        raise UnsupportedQuery("only SELECT statements can read the catalog", hint="the catalog is read-only")
    rw = _Rewriter(objects, marker, _cte_names(tree))
    sources = _sources(tree)
    tree = rw.walk(tree.copy(), "")
    return Template(tree.sql(dialect="duckdb"), tuple(rw.tokens), sources)


def _sources(tree: exp.Expression) -> tuple[str, ...] | None:
    """For each output column, the name of the column or function its expression shows (to type it); None with ``*``."""
    first = tree
    while isinstance(first, exp.SetOperation):
        first = first.this
    if not isinstance(first, exp.Select):
        return None
    out = []
    for e in first.expressions:
        inner = e.this if isinstance(e, exp.Alias) else e
        name = pg_column_name(inner)
        if name is None:
            return None
        out.append(name)
    return tuple(out)


# ------------------------------------------------------------------------------------- lexical fixes

_ALIAS_KEYWORDS = {TokenType.SELECT, TokenType.INSERT, TokenType.UPDATE, TokenType.DELETE, TokenType.TABLE, TokenType.SCHEMA,
                   TokenType.FROM, TokenType.WHERE, TokenType.ORDER_BY, TokenType.GROUP_BY, TokenType.LIMIT, TokenType.USING}
_ARRAY_TYPE_FIX = {"oid": "bigint", "xid": "bigint", "name": "text", "regtype": "bigint", "regclass": "bigint", "regproc": "text",
                   "regnamespace": "bigint", "regrole": "bigint", '"char"': "text", "char": "text"}
_NEEDS_FIX = re.compile(r"\[\s*\]|\bas\s+(select|insert|update|delete|table|schema|from|where|order|group|limit|using)\b"
                        r"|\bselect\s+from\b", re.I)


def _prepare(sql: str) -> str:
    """Quote keyword aliases (``AS select``), map ``::oid[]``-style array types sqlglot can't parse, and
    give ``EXISTS (SELECT FROM …)`` (an empty select list, which only EXISTS ignores) a constant one."""
    if not _NEEDS_FIX.search(sql):
        return sql
    try:
        tokens = sqlglot.Dialect.get_or_raise("postgres").tokenize(sql)
    except TokenError:
        return sql
    edits: list[tuple[int, int, str]] = []
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else None
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if (tok.token_type == TokenType.SELECT and nxt is not None and nxt.token_type == TokenType.FROM and i >= 2
                and prev is not None and prev.token_type == TokenType.L_PAREN and tokens[i - 2].token_type == TokenType.EXISTS):
            edits.append((tok.start, tok.end, f"{tok.text} 1"))
        elif prev is not None and prev.token_type == TokenType.ALIAS and tok.token_type in _ALIAS_KEYWORDS:
            edits.append((tok.start, tok.end, f'"{tok.text.lower()}"'))
        elif (nxt is not None and nxt.token_type == TokenType.L_BRACKET and i + 2 < len(tokens)
              and tokens[i + 2].token_type == TokenType.R_BRACKET and prev is not None
              and prev.token_type in (TokenType.DCOLON, TokenType.ALIAS)):
            fixed = _ARRAY_TYPE_FIX.get(sql[tok.start:tok.end + 1].lower())
            if fixed:
                edits.append((tok.start, tok.end, fixed))
    for start, end, text in reversed(edits):
        sql = sql[:start] + text + sql[end + 1:]
    return sql


def _first_line(msg: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", msg).splitlines()[0] if msg else "invalid syntax"


def _cte_names(tree: exp.Expression) -> frozenset[str]:
    return frozenset(cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE))


# --------------------------------------------------------------------------------------- rewriter

_NULL_TEXT = frozenset({
    "pg_get_indexdef", "pg_get_constraintdef", "pg_get_triggerdef", "pg_get_viewdef", "pg_get_ruledef", "pg_get_partkeydef",
    "pg_get_statisticsobjdef", "pg_get_statisticsobjdef_columns", "pg_get_statisticsobjdef_expressions", "pg_get_serial_sequence",
    "pg_get_function_result", "pg_get_function_arguments", "pg_get_function_identity_arguments", "pg_get_functiondef",
    "pg_get_partition_constraintdef", "obj_description", "col_description", "shobj_description", "pg_relation_filepath",
    "pg_get_function_sqlbody", "pg_describe_object",
})
# Sizes and scan counts would be computed from data: always unknown (R19).
_NULL_BIGINT = frozenset({
    "pg_total_relation_size", "pg_relation_size", "pg_table_size", "pg_indexes_size", "pg_database_size", "pg_column_size",
    "pg_relation_filenode", "pg_sequence_last_value", "pg_tablespace_size",
})
_FALSE = frozenset({"pg_relation_is_publishable", "pg_is_in_recovery", "pg_terminate_backend", "pg_cancel_backend",
                    "pg_is_other_temp_schema", "pg_is_wal_replay_paused"})
_TRUE = frozenset({"pg_type_is_visible", "pg_function_is_visible", "pg_collation_is_visible", "pg_opclass_is_visible",
                   "pg_conversion_is_visible", "pg_operator_is_visible", "pg_opfamily_is_visible", "pg_ts_config_is_visible",
                   "pg_has_role"})
_NULL_ANY = frozenset({"inet_client_addr", "inet_server_addr", "inet_client_port", "inet_server_port"})
_RENAME = {  # PostgreSQL function -> shadow macro (same arguments)
    "format_type": "dpsql_format_type", "pg_get_userbyid": "dpsql_get_userbyid", "pg_encoding_to_char": "dpsql_encoding_to_char",
    "pg_char_to_encoding": "dpsql_char_to_encoding", "quote_ident": "dpsql_quote_ident", "quote_literal": "dpsql_quote_literal",
    "quote_nullable": "dpsql_quote_nullable", "array_upper": "dpsql_array_upper", "array_lower": "dpsql_array_lower",
    "array_length": "dpsql_array_upper", "cardinality": "dpsql_cardinality", "_pg_expandarray": "dpsql_expandarray",
    "pg_size_pretty": "dpsql_size_pretty", "json_build_object": "json_object", "string_to_array": "dpsql_string_to_array",
}
BLOCKED_FUNCTIONS = re.compile(r"^(duckdb_|pragma_|read_|glob$|getenv$|getvariable$|query$|query_table$|sniff_csv$|parquet_|iceberg_|"
                      r"delta_|http|s3|load_|install_|checkpoint$|force_checkpoint$|which_secret$)")
_TEXTY = (exp.DPipe, exp.Concat, exp.Lower, exp.Upper, exp.Trim, exp.Replace, exp.Substring)
_INT_TYPES = {exp.DataType.Type.INT, exp.DataType.Type.BIGINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.TINYINT}
_TEXT_TYPES = {exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR, exp.DataType.Type.NAME, exp.DataType.Type.CHAR,
               exp.DataType.Type.NCHAR, exp.DataType.Type.NVARCHAR}
_OPERATORS: dict[str, Callable[[exp.Expression, exp.Expression], exp.Expression]] = {
    "~": lambda a, b: exp.RegexpLike(this=a, expression=b),
    "!~": lambda a, b: exp.not_(exp.RegexpLike(this=a, expression=b)),
    "~*": lambda a, b: exp.RegexpILike(this=a, expression=b),
    "!~*": lambda a, b: exp.not_(exp.RegexpILike(this=a, expression=b)),
    "~~": lambda a, b: exp.Like(this=a, expression=b),
    "!~~": lambda a, b: exp.not_(exp.Like(this=a, expression=b)),
    "~~*": lambda a, b: exp.ILike(this=a, expression=b),
    "!~~*": lambda a, b: exp.not_(exp.ILike(this=a, expression=b)),
    "=": lambda a, b: exp.EQ(this=a, expression=b),
    "<>": lambda a, b: exp.NEQ(this=a, expression=b),
    "!=": lambda a, b: exp.NEQ(this=a, expression=b),
    "<": lambda a, b: exp.LT(this=a, expression=b),
    ">": lambda a, b: exp.GT(this=a, expression=b),
    "<=": lambda a, b: exp.LTE(this=a, expression=b),
    ">=": lambda a, b: exp.GTE(this=a, expression=b),
    "||": lambda a, b: exp.DPipe(this=a, expression=b),
    "+": lambda a, b: exp.Add(this=a, expression=b),
    "-": lambda a, b: exp.Sub(this=a, expression=b),
    "*": lambda a, b: exp.Mul(this=a, expression=b),
    "/": lambda a, b: exp.Div(this=a, expression=b),
}
_REG_TYPES = frozenset({"regclass", "regtype", "regnamespace", "regrole", "regproc", "regprocedure", "regoper", "regoperator",
                        "regconfig", "regdictionary", "regcollation"})


def _fn(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


OID = "UINTEGER"  # how the shadow stores PostgreSQL's oid (see pgtypes.duckdb_type)


def _oid(value: int) -> exp.Cast:
    return _cast(exp.Literal.number(value), OID)


def _cast(e: exp.Expression, to: str) -> exp.Cast:
    return exp.Cast(this=e, to=exp.DataType.build(to, dialect="duckdb"))


@dataclass
class _Rewriter:
    objects: Objects
    marker: str
    ctes: frozenset[str]
    tokens: list[Token] = field(default_factory=list)

    # ---------------------------------------------------------------------------------- plumbing

    def token(self, kind: str, arg: Any = None) -> exp.Literal:
        """A marker literal that :mod:`.render` replaces with this token's value."""
        self.tokens.append(Token(kind, arg))
        return exp.Literal.string(f"{self.marker}_{len(self.tokens) - 1}")

    def relation_token(self, kind: str, arg: Any = None) -> exp.Identifier:
        """A marker identifier that :mod:`.render` replaces with a relation (a subquery)."""
        self.tokens.append(Token(kind, arg))
        return exp.to_identifier(f"{self.marker}_{len(self.tokens) - 1}", quoted=True)

    def _literal_or_param(self, e: exp.Expression) -> tuple[str, Any] | None:
        """("lit", text) for a string literal, ("param", n) for ``$n``, else None."""
        lit = _str_literal(e, self)
        if lit is not None:
            return ("lit", lit)
        inner = e.this if isinstance(e, exp.Cast) else e
        if self.is_token(inner) and self.tokens[self._token_index(inner)].kind == "param":
            return ("param", self.tokens[self._token_index(inner)].arg)
        return None

    def _token_index(self, e: exp.Literal) -> int:
        return int(e.this[len(self.marker) + 1:])

    def is_token(self, e: exp.Expression) -> bool:
        """True if ``e`` is one of this rewrite's value markers."""
        return isinstance(e, exp.Literal) and e.is_string and e.this.startswith(f"{self.marker}_")

    def walk(self, node: exp.Expression, ctx: str) -> exp.Expression:
        """Rewrite ``node``'s children (post-order), then ``node``; ``ctx`` says how a parent uses the value."""
        if isinstance(node, exp.Select):
            _name_projections(node)
        for key, value in list(node.args.items()):
            if isinstance(node, exp.Table) and key == "this" and isinstance(value, exp.Func):
                self.walk_args(value)  # a table function: its arguments are rewritten, the call by table()
            elif isinstance(value, exp.Expression):
                node.set(key, self.walk(value, self._child_ctx(node, key, value)))
            elif isinstance(value, list):
                node.set(key, [self.walk(v, self._child_ctx(node, key, v)) if isinstance(v, exp.Expression) else v for v in value])
        return self.node(node, ctx)

    def walk_args(self, fn: exp.Expression) -> None:
        """Rewrite the arguments of a table function in place."""
        for key, value in list(fn.args.items()):
            if isinstance(value, exp.Expression):
                fn.set(key, self.walk(value, ""))
            elif isinstance(value, list):
                fn.set(key, [self.walk(v, "") if isinstance(v, exp.Expression) else v for v in value])

    @staticmethod
    def _child_ctx(parent: exp.Expression, key: str, child: exp.Expression) -> str:
        if isinstance(parent, exp.Cast) and key == "this":
            to = parent.to
            if isinstance(to, exp.DataType) and to.this in _TEXT_TYPES:
                return "text"
            if _type_key(to) in ("text", "varchar", "name", "bpchar"):
                return "text"
            return "cast"
        if isinstance(parent, exp.Select) and key == "expressions":
            return "proj"
        if isinstance(parent, exp.Alias) and isinstance(parent.parent, exp.Select) and key == "this":
            return "proj"
        if isinstance(parent, exp.Order | exp.Ordered) or (isinstance(parent, exp.Select) and key == "order"):
            return "proj"
        return ""

    def node(self, node: exp.Expression, ctx: str) -> exp.Expression:
        """Rewrite one node whose children are already rewritten."""
        if isinstance(node, exp.Table):
            return self.table(node)
        if isinstance(node, exp.Column):
            return self.column(node)
        if isinstance(node, exp.Cast | exp.TryCast):
            return self.cast(node, ctx)
        if isinstance(node, exp.Operator):
            op = str(node.args.get("operator", "")).split(".")[-1].strip()
            build = _OPERATORS.get(op)
            if build is None:
                raise UndefinedFunction(f"operator does not exist: {op}")
            return build(node.this, node.expression)
        if isinstance(node, exp.Collate):
            return node.this
        if isinstance(node, exp.Like | exp.ILike) and not isinstance(node.parent, exp.Escape):
            return exp.Escape(this=node, expression=exp.Literal.string("\\"))  # PostgreSQL's default LIKE escape
        if isinstance(node, exp.ByteString):
            return exp.Literal.string(node.this)
        if isinstance(node, exp.Placeholder | exp.Parameter):
            return self.param(node)
        if isinstance(node, exp.Any):
            return self.any_array(node)
        if isinstance(node, exp.Div):
            return self.div(node)
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) and node.this.name.lower() in SYSTEM_SCHEMAS:
            return node.expression  # pg_catalog.f(...) -> f(...), already rewritten
        if isinstance(node, exp.Func):
            return self.func(node, ctx)
        return node

    # ---------------------------------------------------------------------------------- relations

    def table(self, node: exp.Table) -> exp.Expression:
        """Map a relation to its shadow table (or a session relation); refuse anything else."""
        schema = node.db.lower() if node.db else ""
        if node.args.get("catalog"):
            node.set("catalog", None)  # database.schema.table: one database only
        if isinstance(node.this, exp.Func | exp.Anonymous):
            return self.table_function(node, schema)
        name = node.name if node.this.quoted else node.name.lower()
        if schema in ("", "pg_catalog") and name in PG_RELATIONS and not (schema == "" and name in self.ctes):
            if name in DYNAMIC:
                return _retarget(node, self.relation_token("relation", name), None, name)
            return _retarget(node, exp.to_identifier(name, quoted=True), PG_SCHEMA, name)
        if schema == "information_schema" and name in IS_RELATIONS:
            return _retarget(node, exp.to_identifier(name, quoted=True), IS_SCHEMA, name)
        if schema == "" and name in self.ctes:
            return node
        if name in FORBIDDEN_RELATIONS and schema in ("", "pg_catalog"):
            raise PrivacyViolation(f"permission denied for table {name}")
        shown = f"{schema}.{name}" if schema else name
        raise UndefinedTable(f'relation "{shown}" does not exist')

    def table_function(self, node: exp.Table, schema: str) -> exp.Expression:
        """Map a function in FROM: set-returning functions DuckDB has, catalog ones, or a one-row scalar."""
        fn = node.this
        name = _func_name(fn)
        alias = node.args.get("alias")
        if schema not in ("", "pg_catalog", "information_schema") or BLOCKED_FUNCTIONS.match(name):
            raise UndefinedFunction(f"function {f'{schema}.' if schema else ''}{name}() does not exist")
        node.set("db", None)
        if name in ("generate_series", "unnest", "generate_subscripts"):
            if isinstance(fn, exp.ExplodingGenerateSeries):
                node.set("this", _fn("generate_series", *[a for a in (fn.args.get("start"), fn.args.get("end"),
                                                                        fn.args.get("step")) if a is not None]))
            if alias is not None and not alias.columns:  # PostgreSQL names the single column after the alias
                alias.set("columns", [exp.to_identifier(alias.name, quoted=True)])
            return node
        if name == "pg_get_keywords":
            return _retarget(node, exp.to_identifier("dpsql_keywords"), PG_SCHEMA, "pg_get_keywords")
        args = list(fn.expressions) if isinstance(fn, exp.Anonymous) else []
        if name in ("pg_partition_ancestors", "pg_partition_tree") and args:
            cols = [_cast(args[0], OID).as_("relid")]
            if name == "pg_partition_tree":
                cols += [_cast(exp.null(), OID).as_("parentrelid"), exp.true().as_("isleaf"), exp.Literal.number(0).as_("level")]
            if node.args.get("ordinality"):
                cols.append(exp.Literal.number(1).as_("ordinality"))
            return _keep_joins(node, exp.Subquery(this=exp.select(*cols), alias=alias or _alias(name)))
        if name == "_pg_expandarray" and args:
            inner = exp.select(_fn("dpsql_expandarray", args[0]).as_("s")).subquery("e")
            sub = exp.select(exp.column("x", table="s").as_("x"), exp.column("n", table="s").as_("n")).from_(inner)
            return _keep_joins(node, exp.Subquery(this=sub, alias=alias or _alias("_pg_expandarray")))
        # A scalar function in FROM is a one-row relation whose column is named after the alias (or the function).
        value = self.func(fn)
        col = alias.columns[0].name if alias is not None and alias.columns else (alias.name if alias is not None else name)
        return _keep_joins(node, exp.Subquery(this=exp.select(exp.alias_(value, col, quoted=True)),
                                              alias=exp.TableAlias(this=exp.to_identifier(alias.name if alias else name))))

    def column(self, node: exp.Column) -> exp.Expression:
        """Drop ``pg_catalog.``/``information_schema.`` qualifiers; ``user`` and ``current_role`` are the session user."""
        db = node.args.get("db")
        if db is not None and db.name.lower() in SYSTEM_SCHEMAS:
            node.set("db", None)
            node.set("catalog", None)
        if not node.table and not node.this.quoted and node.name.lower() in ("user", "current_role"):
            return self.token("user")
        return node

    # ---------------------------------------------------------------------------------- casts

    def cast(self, node: exp.Cast, ctx: str) -> exp.Expression:
        """Map PostgreSQL-only cast targets (reg*, oid, name, "char", vectors, array literals) to DuckDB."""
        key = _type_key(node.to)
        this = node.this
        if key in _REG_TYPES:
            return self.reg_cast(key, this, ctx)
        if key in ("oid", "xid", "cid"):
            return _cast(this, OID)
        if key in ("name", '"char"', "char", "pg_node_tree", "text", "aclitem", "pg_lsn", "inet", "cidr"):
            return _cast(this, "VARCHAR")
        if key in ("int2vector",):
            return _cast(this, "SMALLINT[]")
        if key in ("oidvector",):
            return _cast(this, OID + "[]")
        if isinstance(node.to, exp.DataType) and node.to.this == exp.DataType.Type.ARRAY and self.is_token(this):
            i = int(this.this[len(self.marker) + 1:])
            if self.tokens[i].kind == "param":
                self.tokens[i] = Token("param_array", self.tokens[i].arg)
            return node
        if isinstance(node.to, exp.DataType) and node.to.this == exp.DataType.Type.ARRAY and isinstance(this, exp.Literal) \
                and this.is_string and not self.is_token(this):
            items = _pg_array_items(this.this)
            if items is None:
                raise InvalidTextRepresentation(f'malformed array literal: "{this.this}"')
            node.set("this", exp.Array(expressions=[exp.null() if v is None else exp.Literal.string(v) for v in items]))
            return node
        if isinstance(node.to, exp.DataType) and node.to.this == exp.DataType.Type.USERDEFINED:
            resolved = canonical_name(key) if key else None
            if resolved is None:
                raise UndefinedObject(f'type "{key}" does not exist')
            from dpsql.proxy.catalog.pgtypes import duckdb_type

            return _cast(this, duckdb_type(resolved))
        return node

    def reg_cast(self, kind: str, this: exp.Expression, ctx: str) -> exp.Expression:
        """``x::regclass`` and friends: an OID (lookup for names), or the name where PostgreSQL would print it."""
        literal = this.this if isinstance(this, exp.Literal) and this.is_string and not self.is_token(this) else None
        as_text = ctx in ("text", "proj")
        if kind in ("regproc", "regprocedure", "regoper", "regoperator", "regconfig", "regdictionary", "regcollation"):
            if literal is not None:
                name = literal.split("(")[0].strip()
                return exp.Literal.string(name.removeprefix("pg_catalog."))
            return this
        if kind == "regclass":
            if literal is not None and literal.strip().isdigit():
                oid: exp.Expression = _oid(int(literal))
            elif literal is not None:
                oid = self.token("regclass", literal)
            elif self._texty(this):
                oid = _fn("dpsql_to_regclass", this)
            else:
                oid = _cast(this, OID)
            return _fn("dpsql_regclass_out", oid, self.token("search_path_list")) if as_text else oid
        if kind == "regtype":
            if literal is not None:
                resolved = canonical_name(literal)
                if resolved is None:
                    raise UndefinedObject(f'type "{literal}" does not exist')
                oid = _oid(BY_NAME[resolved].oid)
            elif self._texty(this):
                oid = _fn("dpsql_to_regtype", this)
            else:
                oid = _cast(this, OID)
            return _fn("dpsql_format_type", oid, exp.null()) if as_text else oid
        if kind == "regnamespace":
            if literal is not None:
                n = literal[1:-1] if literal.startswith('"') else literal.lower()
                if n not in self.objects.schemas:
                    raise InvalidSchemaName(f'schema "{n}" does not exist')
                oid = _oid(self.objects.schemas[n])
            elif self._texty(this):
                oid = _fn("dpsql_to_regnamespace", this)
            else:
                oid = _cast(this, OID)
            return _fn("dpsql_nspname", oid) if as_text else oid
        # regrole
        if literal is not None:
            if literal not in self.objects.roles:
                raise UndefinedObject(f'role "{literal}" does not exist')
            oid = _oid(self.objects.roles[literal])
        else:
            oid = _cast(this, OID)
        return _fn("dpsql_rolname", oid) if as_text else oid

    def _texty(self, e: exp.Expression) -> bool:
        if self.is_token(e):
            return True
        if isinstance(e, exp.Cast):
            return isinstance(e.to, exp.DataType) and e.to.this in _TEXT_TYPES
        if isinstance(e, exp.Anonymous):
            return str(e.this).lower() in ("dpsql_quote_ident", "format", "concat")
        return isinstance(e, _TEXTY)

    # ---------------------------------------------------------------------------------- values

    def any_array(self, node: exp.Any) -> exp.Expression:
        """``= ANY($1)`` with a text[] parameter (pgcli sends the array as text, ``'{r,p}'``) and
        ``= ANY('{r,p,""}')``: the operand is an array, so a string is read as an array literal."""
        inner = node.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if self.is_token(inner):
            i = self._token_index(inner)
            if self.tokens[i].kind == "param":
                self.tokens[i] = Token("param_array", self.tokens[i].arg)
            return node
        if isinstance(inner, exp.Literal) and inner.is_string:
            items = _pg_array_items(inner.this)
            if items is None:
                raise InvalidTextRepresentation(f'malformed array literal: "{inner.this}"')
            node.set("this", exp.Array(expressions=[exp.null() if v is None else exp.Literal.string(v) for v in items]))
        return node

    def param(self, node: exp.Expression) -> exp.Expression:
        """``$n`` → a parameter token."""
        name = node.name if isinstance(node, exp.Placeholder) else node.this.name if isinstance(node.this, exp.Expression) else ""
        if not str(name).isdigit():
            raise UnsupportedQuery("only $1, $2 … parameters are supported in catalog queries")
        return self.token("param", int(name))

    @staticmethod
    def div(node: exp.Div) -> exp.Expression:
        """Integer division when both operands are integers, as in PostgreSQL."""
        if _is_int(node.this) and _is_int(node.expression):
            return exp.IntDiv(this=node.this, expression=node.expression)
        return node

    # ---------------------------------------------------------------------------------- functions

    def func(self, node: exp.Func, ctx: str = "") -> exp.Expression:
        """Map a PostgreSQL function to a macro, a UDF, a constant, a session token, or leave DuckDB's own."""
        if isinstance(node, exp.TimeToStr):  # to_char: the same text as PostgreSQL, or refused naming the pattern
            from dpsql.rewriter.normalize import to_char_format, to_char_source

            node.set("format", exp.Literal.string(to_char_format(to_char_source(node))))
            return node
        if isinstance(node, exp.CurrentVersion):
            return self.token("version")
        if isinstance(node, exp.CurrentSchema):
            return self.token("current_schema")
        if isinstance(node, exp.CurrentSchemas):
            return self.token("current_schemas", _bool_arg(node.this, True))
        if isinstance(node, exp.CurrentDatabase | exp.CurrentCatalog):
            return self.token("database")
        if isinstance(node, exp.CurrentUser | exp.SessionUser):
            return self.token("user")
        if isinstance(node, exp.StringToArray):
            return _fn("dpsql_string_to_array", node.this, node.expression)
        if isinstance(node, exp.ArraySize):
            return _fn("dpsql_array_upper", node.this, node.expression or exp.Literal.number(1))
        if isinstance(node, exp.ArrayToString) and not node.args.get("null"):
            return _fn("dpsql_array_to_string", node.this, node.expression)
        if isinstance(node, exp.Format):
            return self.format(node)
        if not isinstance(node, exp.Anonymous):
            return node
        name = str(node.this).lower()
        args = list(node.expressions)
        if name in _RENAME:
            return _fn(_RENAME[name], *args)
        if name in _NULL_TEXT:
            return exp.cast(exp.null(), "VARCHAR")
        if name in _NULL_BIGINT:
            return exp.cast(exp.null(), "BIGINT")
        if name.startswith("pg_stat_get_"):
            return exp.cast(exp.Literal.number(0), "BIGINT")
        if name in _FALSE:
            return exp.false()
        if name in _TRUE:
            return exp.true()
        if name in _NULL_ANY:
            return exp.null()
        if name.startswith("has_") and name.endswith("_privilege") and args:
            return _fn("dpsql_has_privilege", args[-1])
        if name == "pg_get_expr" and args:
            return _cast(args[0], "VARCHAR")
        if name == "pg_table_is_visible" and args:
            return _fn("list_contains", self.token("visible_tables"), args[0])
        if name == "current_setting" and args:
            missing_ok = _bool_arg(args[1], False) if len(args) > 1 else False
            lit = _str_literal(args[0], self)
            if lit is not None:
                return self.token("setting_ok" if missing_ok else "setting", lit)
            inner = args[0].this if isinstance(args[0], exp.Cast) else args[0]
            if self.is_token(inner) and self.tokens[self._token_index(inner)].kind == "param":
                return self.token("setting_param", (self.tokens[self._token_index(inner)].arg, missing_ok))
            raise UnsupportedQuery("current_setting() needs a literal or parameter setting name here")
        if name == "set_config" and len(args) == 3:
            n, v = self._literal_or_param(args[0]), self._literal_or_param(args[1])
            if n is None or v is None:
                raise UnsupportedQuery("set_config() needs literal or parameter arguments here")
            return self.token("set_config", (n, v))
        if name == "pg_backend_pid":
            return self.token("pid")
        if name in ("version",):
            return self.token("version")
        if name in ("getpgusername",):
            return self.token("user")
        if name == "pg_client_encoding":
            return self.token("setting", "client_encoding")
        if name in ("pg_postmaster_start_time", "pg_conf_load_time"):
            return self.token("start_time")
        if name in ("txid_current", "pg_current_xact_id", "txid_current_if_assigned"):
            return self.token("xid")
        if name == "to_regtype" and args:
            lit = _str_literal(args[0], self)
            if lit is not None:
                resolved = canonical_name(lit)
                oid = _oid(BY_NAME[resolved].oid) if resolved else _cast(exp.null(), OID)
            else:
                oid = _fn("dpsql_to_regtype", args[0])
            return _fn("dpsql_format_type", oid, exp.null()) if ctx in ("text", "proj") else oid
        if name == "to_regclass" and args:
            lit = _str_literal(args[0], self)
            oid = self.token("regclass_ok", lit) if lit is not None else _fn("dpsql_to_regclass", args[0])
            return _fn("dpsql_regclass_out", oid, self.token("search_path_list")) if ctx in ("text", "proj") else oid
        if name == "to_regnamespace" and args:
            return _fn("dpsql_to_regnamespace", args[0])
        if name == "parse_ident" and args:
            return _fn("dpsql_parse_ident", args[0])
        if name in ("pg_partition_ancestors", "pg_partition_root") and args:
            return _cast(args[0], OID)
        if name == "pg_tablespace_location":
            return exp.Literal.string("")
        if name == "pg_get_keywords":
            raise UnsupportedQuery("pg_get_keywords() is supported in FROM only")
        if BLOCKED_FUNCTIONS.match(name):
            raise UndefinedFunction(f"function {name}() does not exist")
        return node

    def format(self, node: exp.Format) -> exp.Expression:
        """``format('%I.%I', a, b)`` with a literal format string → a concatenation."""
        fmt = _str_literal(node.this, self)
        if fmt is None:
            raise UnsupportedQuery("format() needs a literal format string here")
        args = list(node.expressions)
        pos = 0
        out: list[exp.Expression] = []
        last = 0
        for m in re.finditer(r"%(?:(\d+)\$)?-?[0-9]*([sIL%])", fmt):
            if m.start() > last:
                out.append(exp.Literal.string(fmt[last:m.start()]))
            last = m.end()
            kind = m.group(2)
            if kind == "%":
                out.append(exp.Literal.string("%"))
                continue
            idx = int(m.group(1)) - 1 if m.group(1) else pos
            pos = idx + 1
            if idx >= len(args):
                raise InvalidParameterValue("too few arguments for format()")
            arg = _cast(args[idx].copy(), "VARCHAR")
            if kind == "s":
                out.append(exp.Coalesce(this=arg, expressions=[exp.Literal.string("")]))
            elif kind == "I":
                out.append(_fn("dpsql_quote_ident", arg))
            else:
                out.append(_fn("dpsql_quote_nullable", arg))
        if last < len(fmt):
            out.append(exp.Literal.string(fmt[last:]))
        if not out:
            return exp.Literal.string("")
        result = out[0]
        for piece in out[1:]:
            result = exp.DPipe(this=result, expression=piece, safe=True)
        return exp.Paren(this=result)


# ------------------------------------------------------------------------------------------ helpers


def _name_projections(select: exp.Select) -> None:
    """Alias every projection with PostgreSQL's name for it (unquoted aliases fold to lower case)."""
    items = []
    for e in select.expressions:
        name = pg_column_name(e)
        if name is None:
            items.append(e)
        else:
            inner = e.this if isinstance(e, exp.Alias) else e
            items.append(exp.Alias(this=inner, alias=exp.to_identifier(name, quoted=True)))
    select.set("expressions", items)


def _retarget(node: exp.Table, this: exp.Identifier, schema: str | None, name: str) -> exp.Table:
    """Point a table reference at a shadow relation, keeping its alias (or aliasing it by its old name) and joins."""
    node.set("this", this)
    node.set("db", exp.to_identifier(schema) if schema else None)
    if not node.args.get("alias"):
        node.set("alias", _alias(name))
    return node


def _keep_joins(old: exp.Table, new: exp.Subquery) -> exp.Subquery:
    if old.args.get("joins"):
        new.set("joins", old.args["joins"])
    return new


def _alias(name: str) -> exp.TableAlias:
    return exp.TableAlias(this=exp.to_identifier(name, quoted=True))


def _func_name(fn: exp.Expression) -> str:
    if isinstance(fn, exp.Anonymous):
        return str(fn.this).lower()
    if isinstance(fn, exp.ExplodingGenerateSeries):
        return "generate_series"
    if isinstance(fn, exp.Explode):
        return "unnest"
    names = type(fn).sql_names()
    return names[0].lower() if names else type(fn).__name__.lower()


def _type_key(t: exp.Expression | None) -> str:
    """A lower-case key for a cast target: ``regclass``, ``oid``, ``int2vector``, ``text`` …"""
    if isinstance(t, exp.ObjectIdentifier):
        return t.name.lower()
    if isinstance(t, exp.DataType):
        if t.this == exp.DataType.Type.USERDEFINED:
            kind = t.args.get("kind")
            ident = kind.expression if isinstance(kind, exp.Dot) else kind
            if isinstance(ident, exp.Identifier):
                return f'"{ident.name}"' if ident.quoted and ident.name == "char" else ident.name.lower()
            return ""
        if t.this in (exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR):
            return "text"
        if t.this == exp.DataType.Type.NAME:
            return "name"
    return ""


def _is_int(e: exp.Expression) -> bool:
    if isinstance(e, exp.Literal):
        return not e.is_string and re.fullmatch(r"-?\d+", e.this) is not None
    if isinstance(e, exp.Cast):
        return isinstance(e.to, exp.DataType) and e.to.this in _INT_TYPES
    if isinstance(e, exp.Paren):
        return _is_int(e.this)
    return False


def _bool_arg(e: exp.Expression | None, default: bool) -> bool:
    if isinstance(e, exp.Boolean):
        return bool(e.this)
    if isinstance(e, exp.Literal) and e.is_string:
        return e.this.lower() in ("t", "true", "on", "1", "yes")
    return default


def _str_literal(e: exp.Expression, rw: _Rewriter) -> str | None:
    if isinstance(e, exp.Cast):
        e = e.this
    if isinstance(e, exp.Literal) and e.is_string and not rw.is_token(e):
        return e.this
    return None


def _pg_array_items(text: str) -> list[str | None] | None:
    """The elements of a one-dimensional PostgreSQL array literal (``'{a,"b c",NULL}'``), or None if malformed."""
    s = text.strip()
    if not (s.startswith("{") and s.endswith("}")):
        return None
    body = s[1:-1]
    items: list[str | None] = []
    i = 0
    if not body.strip():
        return items
    while i <= len(body):
        while i < len(body) and body[i].isspace():
            i += 1
        if i < len(body) and body[i] == '"':
            j, buf = i + 1, []
            while j < len(body) and body[j] != '"':
                if body[j] == "\\" and j + 1 < len(body):
                    j += 1
                buf.append(body[j])
                j += 1
            items.append("".join(buf))
            i = j + 1
            while i < len(body) and body[i] != ",":
                i += 1
        else:
            j = body.find(",", i)
            j = len(body) if j < 0 else j
            raw = body[i:j].strip()
            items.append(None if raw.upper() == "NULL" else raw)
            i = j
        i += 1
    return items
