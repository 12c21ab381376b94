"""Execution backends: DuckDB (embedded) and PostgreSQL (upstream)."""
