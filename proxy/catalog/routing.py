"""Deciding whether one statement is for the synthetic catalog (``SyntheticCatalog.handles``).

A cheap lexical check on the lower-cased text rejects ordinary DP queries without parsing; only
statements that mention ``pg_``, ``information_schema``, a probe function or a ``::reg`` cast, or
that are a ``SELECT`` without ``FROM``, are parsed and classified by the relations they read.

>>> r = Router({"public.visits", "public.pg_events"})
>>> [r.classify(s) for s in ("SELECT count(*) FROM visits", "SELECT * FROM pg_class", "SELECT * FROM pg_events",
...                          "SELECT version()", "SELECT 1", "SELECT * FROM dpsql.budget", "SHOW search_path")]
[False, True, False, True, True, False, False]
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlglot import exp

from dpsql.errors import DPSQLError
from dpsql.proxy.catalog.rewrite import BLOCKED_FUNCTIONS, FORBIDDEN_RELATIONS, PG_RELATIONS, parse

HINT = re.compile(
    r"pg_|information_schema|version\s*\(|current_|session_user|\buser\b|set_config|has_\w+_privilege|to_reg|format_type"
    r"|::\s*\"?(?:pg_catalog\s*\.\s*)?reg|\bregclass\b|quote_ident|parse_ident|txid_|inet_(?:client|server)"
)
SELECT_NO_FROM = re.compile(r"^\s*(?:\(\s*)*select\b(?!.*\bfrom\b)", re.S)
_KEYS = ("pg_", "information_schema", "version", "current_", "session_user", "user", "set_config", "privilege", "to_reg",
         "format_type", "reg", "quote_ident", "parse_ident", "txid_", "inet_")


class Router:
    """Classifies statements against one policy's table names (qualified, lower-case)."""

    def __init__(self, tables: Iterable[str]) -> None:
        self.tables = frozenset(tables)

    @staticmethod
    def maybe(low: str) -> bool:
        """The lexical pre-check on lower-cased text: False means certainly not a catalog statement."""
        if any(k in low for k in _KEYS) and HINT.search(low) is not None:
            return True
        return "select" in low[:64] and SELECT_NO_FROM.match(low) is not None

    def classify(self, sql: str) -> bool:
        """True if the statement reads only the catalog (or nothing): parse and inspect its relations."""
        return self.route(sql)[0]

    def route(self, sql: str) -> tuple[bool, exp.Expression | None]:
        """The decision and, when the statement was parsed, its tree (for the rewrite to reuse)."""
        low = sql.lower()
        if not self.maybe(low):
            return False, None
        try:
            tree = parse(sql)
        except DPSQLError:
            return "pg_catalog" in low or "information_schema" in low, None
        return self.classify_tree(tree), tree

    def classify_tree(self, tree: exp.Expression) -> bool:
        """True if ``tree`` is a query whose relations are all catalog relations, CTEs or catalog table functions."""
        if not isinstance(tree, exp.Query):
            return False
        ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
        for t in tree.find_all(exp.Table):
            schema = t.db.lower() if t.db else ""
            if isinstance(t.this, exp.Func):
                name = str(t.this.this).lower() if isinstance(t.this, exp.Anonymous) else _generator_name(t.this)
                if BLOCKED_FUNCTIONS.match(name):
                    return False  # DuckDB's file readers and internals are nobody's catalog
                continue
            name = t.name if t.this.quoted else t.name.lower()
            if schema in ("pg_catalog", "information_schema") or (schema == "" and name in ctes):
                continue
            if schema == "" and (name in PG_RELATIONS or name in FORBIDDEN_RELATIONS):
                continue  # pg_catalog is searched before the search path
            if schema == "" and name.startswith("pg_") and f"public.{name}" not in self.tables:
                continue  # an unknown pg_* name: the catalog answers that it does not exist
            return False  # a policy table, dpsql.budget or an unknown relation: not the catalog's
        return True


def _generator_name(fn: exp.Func) -> str:
    if isinstance(fn, exp.ExplodingGenerateSeries):
        return "generate_series"
    if isinstance(fn, exp.Explode):
        return "unnest"
    return type(fn).__name__.lower()
