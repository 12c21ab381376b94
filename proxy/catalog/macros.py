"""DuckDB macros, defined once in the shadow, that stand in for PostgreSQL catalog functions.

The rewrite (:mod:`dpsql.proxy.catalog.rewrite`) renames each supported PostgreSQL function to its
``dpsql_*`` macro, so DuckDB's own functions of the same name are never called by mistake. Lookups
(``format_type``, ``quote_ident``, regclass output …) are Python UDFs instead (:mod:`.udfs`): a
macro with a correlated subquery cost ~3 ms per query, the UDF ~0.2 ms.
Functions whose answer would depend on data (relation sizes, statistics) are not macros: the
rewrite replaces them by constants.
"""

from __future__ import annotations

MACROS: tuple[str, ...] = (
    "CREATE MACRO dpsql_encoding_to_char(e) AS CASE e WHEN 6 THEN 'UTF8' WHEN 0 THEN 'SQL_ASCII' ELSE '' END",
    "CREATE MACRO dpsql_char_to_encoding(e) AS CASE upper(e) WHEN 'UTF8' THEN 6 WHEN 'SQL_ASCII' THEN 0 ELSE -1 END",
    "CREATE MACRO dpsql_quote_literal(s) AS CASE WHEN s IS NULL THEN NULL "
    "ELSE '''' || replace(CAST(s AS VARCHAR), '''', '''''') || '''' END",
    "CREATE MACRO dpsql_quote_nullable(s) AS coalesce(dpsql_quote_literal(s), 'NULL')",
    "CREATE MACRO dpsql_parse_ident(s) AS list_transform(regexp_extract_all(s, '\"(?:[^\"]|\"\")*\"|[^.]+'), "
    "lambda x: CASE WHEN starts_with(x, '\"') THEN replace(x[2:-2], '\"\"', '\"') ELSE lower(trim(x)) END)",
    "CREATE MACRO dpsql_array_upper(a, d) AS CASE WHEN a IS NULL OR len(a) = 0 OR d <> 1 THEN NULL ELSE len(a) END",
    "CREATE MACRO dpsql_array_lower(a, d) AS CASE WHEN a IS NULL OR len(a) = 0 OR d <> 1 THEN NULL ELSE 1 END",
    "CREATE MACRO dpsql_cardinality(a) AS CASE WHEN a IS NULL THEN NULL ELSE len(a) END",
    "CREATE MACRO dpsql_has_privilege(p) AS regexp_matches(upper(p), 'SELECT|USAGE|CONNECT|EXECUTE')",
    "CREATE MACRO dpsql_expandarray(a) AS unnest(list_transform(range(1, len(a) + 1), lambda i: {'x': a[i], 'n': CAST(i AS INTEGER)}))",
    "CREATE MACRO dpsql_size_pretty(b) AS CASE WHEN b IS NULL THEN NULL WHEN abs(b) < 10240 THEN b || ' bytes' "
    "WHEN abs(b) < 10485760 THEN round(b / 1024) || ' kB' WHEN abs(b) < 10737418240 THEN round(b / 1048576) || ' MB' "
    "ELSE round(b / 1073741824) || ' GB' END",
    "CREATE MACRO dpsql_string_to_array(s, d) AS CASE WHEN s IS NULL THEN NULL WHEN s = '' THEN [] ELSE string_split(s, d) END",
    "CREATE MACRO dpsql_array_to_string(a, d) AS array_to_string(list_filter(a, lambda x: x IS NOT NULL), d)",
)
