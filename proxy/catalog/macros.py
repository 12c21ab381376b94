"""DuckDB macros, defined once in the shadow, that stand in for PostgreSQL catalog functions.

The rewrite (:mod:`dpsql.proxy.catalog.rewrite`) renames each supported PostgreSQL function to its
``dpsql_*`` macro, so DuckDB's own functions of the same name are never called by mistake.
Functions whose answer would depend on data (relation sizes, statistics) are not macros: the
rewrite replaces them by constants.
"""

from __future__ import annotations

_FORMAT_TYPE = """
CREATE MACRO dpsql_format_type(t, m) AS (CASE
  WHEN t IS NULL THEN NULL
  WHEN t = 0 THEN '-'
  ELSE coalesce((SELECT CASE
    WHEN f.kind = 'bpchar' AND m >= 0 THEN 'character(' || (m - 4) || ')' || f.arr
    WHEN f.kind = 'bpchar' AND m IS NOT NULL AND f.arr = '' THEN 'bpchar'
    WHEN f.kind = 'varchar' AND m >= 0 THEN 'character varying(' || (m - 4) || ')' || f.arr
    WHEN f.kind = 'numeric' AND m >= 0 THEN 'numeric(' || ((m - 4) >> 16) || ',' || ((m - 4) & 65535) || ')' || f.arr
    WHEN f.kind = 'timestamp' AND m >= 0 THEN 'timestamp(' || m || ') without time zone' || f.arr
    WHEN f.kind = 'timestamptz' AND m >= 0 THEN 'timestamp(' || m || ') with time zone' || f.arr
    WHEN f.kind = 'time' AND m >= 0 THEN 'time(' || m || ') without time zone' || f.arr
    WHEN f.kind = 'timetz' AND m >= 0 THEN 'time(' || m || ') with time zone' || f.arr
    WHEN f.kind = 'interval' AND m >= 0 AND (m & 65535) <> 65535 THEN 'interval(' || (m & 65535) || ')' || f.arr
    WHEN f.kind = 'bit' AND m >= 0 THEN 'bit(' || m || ')' || f.arr
    WHEN f.kind = 'varbit' AND m >= 0 THEN 'bit varying(' || m || ')' || f.arr
    ELSE f.base || f.arr END
  FROM dpsql_pg.dpsql_typefmt f WHERE f.oid = t), '???')
END)
"""

MACROS: tuple[str, ...] = (
    _FORMAT_TYPE,
    "CREATE MACRO dpsql_get_userbyid(r) AS "
    "coalesce((SELECT rolname FROM dpsql_pg.pg_roles WHERE oid = r), 'unknown (OID=' || r || ')')",
    "CREATE MACRO dpsql_encoding_to_char(e) AS CASE e WHEN 6 THEN 'UTF8' WHEN 0 THEN 'SQL_ASCII' ELSE '' END",
    "CREATE MACRO dpsql_char_to_encoding(e) AS CASE upper(e) WHEN 'UTF8' THEN 6 WHEN 'SQL_ASCII' THEN 0 ELSE -1 END",
    "CREATE MACRO dpsql_quote_ident(s) AS CASE WHEN s IS NULL THEN NULL "
    "WHEN regexp_full_match(s, '[a-z_][a-z0-9_$]*') AND NOT EXISTS "
    "(SELECT 1 FROM dpsql_pg.dpsql_keywords k WHERE k.word = s AND k.catcode <> 'U') THEN s "
    "ELSE '\"' || replace(s, '\"', '\"\"') || '\"' END",
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
    "CREATE MACRO dpsql_nspname(o) AS (SELECT nspname FROM dpsql_pg.pg_namespace WHERE oid = o)",
    "CREATE MACRO dpsql_rolname(o) AS (SELECT rolname FROM dpsql_pg.pg_roles WHERE oid = o)",
    "CREATE MACRO dpsql_regclass_out(o, sp) AS coalesce((SELECT CASE WHEN list_contains(sp, r.nspname) "
    "THEN dpsql_quote_ident(r.relname) ELSE dpsql_quote_ident(r.nspname) || '.' || dpsql_quote_ident(r.relname) END "
    "FROM dpsql_pg.dpsql_regclass r WHERE r.oid = o), CAST(o AS VARCHAR))",
    "CREATE MACRO dpsql_to_regtype(s) AS (SELECT min(oid) FROM dpsql_pg.pg_type WHERE typname = lower(trim(s)))",
    "CREATE MACRO dpsql_to_regclass(s) AS (SELECT min(oid) FROM dpsql_pg.dpsql_regclass "
    "WHERE relname = s OR nspname || '.' || relname = s)",
    "CREATE MACRO dpsql_to_regnamespace(s) AS (SELECT min(oid) FROM dpsql_pg.pg_namespace WHERE nspname = s)",
    "CREATE MACRO dpsql_size_pretty(b) AS CASE WHEN b IS NULL THEN NULL WHEN abs(b) < 10240 THEN b || ' bytes' "
    "WHEN abs(b) < 10485760 THEN round(b / 1024) || ' kB' WHEN abs(b) < 10737418240 THEN round(b / 1048576) || ' MB' "
    "ELSE round(b / 1073741824) || ' GB' END",
    "CREATE MACRO dpsql_string_to_array(s, d) AS CASE WHEN s IS NULL THEN NULL WHEN s = '' THEN [] ELSE string_split(s, d) END",
    "CREATE MACRO dpsql_array_to_string(a, d) AS array_to_string(list_filter(a, lambda x: x IS NOT NULL), d)",
)
