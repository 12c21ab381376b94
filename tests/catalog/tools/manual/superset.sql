-- Superset 6.1 PostgreSQL engine spec (superset/db_engine_specs/postgres.py): databases, cancel-query support; its inspector queries are SQLAlchemy 1.4's (sqlalchemy14.sql)

-- @@ databases
SELECT datname FROM pg_database WHERE datistemplate = false;

-- @@ backend pid
SELECT pg_backend_pid()

-- @@ cancel query
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid='123456'

-- @@ schema
SELECT current_schema()
