-- Connection probes sent by many clients (SQLAlchemy, psqlODBC, node-postgres users, pgbench)

-- @@ select 1
SELECT 1

-- @@ select 1 lower
select 1;

-- @@ version
select version()

-- @@ pg_catalog.version
select pg_catalog.version()

-- @@ current_schema
select current_schema()

-- @@ current_schemas
select current_schemas(true), current_schemas(false)

-- @@ current_database
select current_database()

-- @@ users
select current_user, session_user, user

-- @@ setting
select current_setting('server_version'), current_setting('server_version_num')

-- @@ setting missing_ok
select current_setting('no.such_setting', true)

-- @@ set_config
select set_config('application_name', 'probe', false)

-- @@ backend pid
select pg_backend_pid()

-- @@ privileges
select has_table_privilege('public.visits', 'select'), has_schema_privilege('public', 'usage'), has_database_privilege(current_database(), 'connect')

-- @@ to_regtype
select to_regtype('integer'), to_regtype('hstore')

-- @@ format_type
select format_type(23, NULL), format_type(1043, 36), format_type(1700, 655366), format_type(1114, 6)

-- @@ regclass
select 'pg_class'::regclass::oid, 'public.visits'::regclass::oid, 'visits'::regclass

-- @@ regtype
select 'int4'::regtype::oid, 23::regtype, 'character varying'::regtype::oid

-- @@ regnamespace
select 'pg_catalog'::regnamespace::oid, 2200::regnamespace

-- @@ literals
select 1, 'a', 2.5, true, null

-- @@ in recovery
select pg_is_in_recovery(), pg_postmaster_start_time() is not null, txid_current() > 0

-- @@ keywords count
select count(*) > 400 from pg_get_keywords()

-- @@ encoding
select pg_encoding_to_char(6), pg_client_encoding()

-- @@ quote/parse ident
select quote_ident('a b'), quote_ident('ab'), parse_ident('sales."Orders"')
