"""Embedding dpsql in an application that runs the bounded SQL on its own engine.

>>> from dpsql.embed import Pipeline, dbapi_runner                     # doctest: +SKIP
>>> with Pipeline("policy.toml", dialect="postgres", schema=schema) as pipe:  # doctest: +SKIP
...     s = pipe.session("alice")
...     answer = s.execute("SELECT department, COUNT(*) FROM visits GROUP BY department", dbapi_runner(conn))

Or step by step: ``q = s.prepare(sql)`` (free) → ``token = s.charge(q, public_keys=…)`` (durable)
→ run ``token.sql`` yourself → ``s.release(token, columns, rows)`` (once). See docs/embedding.md.
"""

from dpsql.embed.pipeline import EmbedSession, Pipeline, Runner, catalog_for
from dpsql.embed.runners import dbapi_runner
from dpsql.embed.schema import describe_duckdb, describe_postgres
from dpsql.embed.types import PreparedQuery, Release, ReleaseToken

__all__ = [
    "EmbedSession",
    "Pipeline",
    "PreparedQuery",
    "Release",
    "ReleaseToken",
    "Runner",
    "catalog_for",
    "dbapi_runner",
    "describe_duckdb",
    "describe_postgres",
]
