"""Checking a Spark Connect session before :class:`~dpsql.proxy.backends.spark.SparkBackend` serves
it (the lock-down, failing closed), and mapping the policy tables to session views.

At start-up :func:`lock_down` refuses to serve (PolicyError naming the setting) when:

* ``spark.sql.runSQLOnFiles`` is not ``false`` on the server: with it, ``SELECT … FROM
  text.`/etc/hostname``` reads any file the cluster can (dpsql's SQL never names a file, and
  :func:`dpsql.rewriter.spark.verify` checks that, but the cluster must not allow it either);
* ``spark.sql.parser.escapedStringLiterals`` is not ``false``: the emitter writes string literals
  with backslash escapes;
* ``spark.sql.ansi.enabled`` or ``spark.sql.session.timeZone`` cannot be pinned on the session to
  what the emitter expects (the policy's ``[source] spark_ansi``, and UTC: ``date_trunc`` and
  ``extract`` on timestamps must not depend on the server's zone);
* a function the emitted SQL calls is shadowed by a temporary or persistent function (a UDF);
* a policy table is missing, unreadable, or a catalog VIEW (a view's definition may call
  ``reflect``/``java_method``/UDFs or read files, which dpsql could not see).

``reflect``, ``java_method`` and UDFs cannot be switched off in Spark; they are kept out by
construction: the rewriter emits only the functions of the Spark column of
:mod:`~dpsql.rewriter.functions`, and every statement is verified against that list before it is
sent. Only metadata is read (settings, the catalog, Parquet footers), never a row.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from dpsql.errors import PolicyError
from dpsql.policy import Policy, TablePolicy
from dpsql.rewriter.functions import SCALAR_FUNCTIONS
from dpsql.rewriter.spark import SPARK_NAMED_FUNCTIONS, view_name

_log = logging.getLogger("dpsql.backend")

#: settings that must have exactly this value on the server (dpsql does not change them)
REQUIRED = {
    "spark.sql.runSQLOnFiles": "false",
    "spark.sql.parser.escapedStringLiterals": "false",
}

#: the aggregate and structural functions the bounded SQL calls besides the scalar allowlist
_EMITTED = {"count", "sum", "avg", "min", "max", "least", "greatest", "coalesce", "nullif", "row_number", "round", "md5",
            "concat_ws", "chr", "bround", "datediff", "try_cast", "cast", "floor", "dense_rank", "unix_micros"}


def pinned(policy: Policy) -> dict[str, str]:
    """The session settings dpsql sets itself, and checks that they hold."""
    return {"spark.sql.ansi.enabled": "true" if policy.source.spark_ansi else "false", "spark.sql.session.timeZone": "UTC"}


def lock_down(spark: Any, policy: Policy) -> None:
    """Check and pin the session's settings (see the module docstring); raise PolicyError naming the
    setting when one is wrong."""
    fname = str(policy.file)
    for key, want in REQUIRED.items():
        got = _conf(spark, key)
        if (got or "").strip().lower() != want:
            raise PolicyError(fname, "source.spark", f"the Spark Connect server has {key}={got if got is not None else '(unset)'}; "
                              f"dpsql needs {key}={want} (set it in the server's spark-defaults.conf or --conf; see README: Spark)")
    for key, want in pinned(policy).items():
        with contextlib.suppress(Exception):  # the server's refusal text is not needed, the setting is named
            spark.conf.set(key, want)
        got = _conf(spark, key)
        if (got or "").strip().lower() != want.lower():
            raise PolicyError(fname, "source.spark", f"dpsql could not set {key}={want} on its Spark session (it is {got!r}); "
                              "allow the setting to be changed per session, or set it on the server")
    _check_functions(spark, fname)


def _conf(spark: Any, key: str) -> str | None:
    try:
        v = spark.conf.get(key)
    except Exception:  # an unknown key reads as unset
        return None
    return None if v is None else str(v)


def _check_functions(spark: Any, fname: str) -> None:
    names = {r.name.lower() for r in SCALAR_FUNCTIONS.values() if r.spark != "refuse"} | {n.lower() for n in SPARK_NAMED_FUNCTIONS}
    names |= _EMITTED
    try:
        functions = spark.catalog.listFunctions()
    except Exception as e:
        raise PolicyError(fname, "source.spark", f"cannot list the Spark session's functions ({type(e).__name__})") from None
    seen: set[str] = set()
    for f in functions:
        cls = str(getattr(f, "className", "") or "")
        builtin = not getattr(f, "namespace", None) and (not cls or cls.startswith("org.apache.spark.sql.catalyst."))
        # a temporary function registered under a built-in's name is listed twice (Spark 4 lists
        # the built-in's description for both, and resolves the built-in first; dpsql refuses anyway)
        twice = f.name.lower() in seen
        seen.add(f.name.lower())
        if f.name.lower() in names and (not builtin or twice):
            raise PolicyError(fname, "source.spark", f"the Spark session has a user-defined function {f.name!r} ({cls or 'no class'}) "
                              "that shadows a built-in function dpsql emits; drop it, or serve dpsql from a catalog without it")


def source_of(tp: TablePolicy) -> tuple[str, str]:
    """``("table", name)`` or ``("parquet", path)``: what the policy table reads on Spark. A table
    without ``spark_table``/``spark_path``/``file`` is the catalog table of its own name."""
    if tp.spark_path is not None:
        return "parquet", tp.spark_path
    if tp.file is not None:
        return "parquet", str(tp.file.resolve())
    if tp.spark_table is not None:
        return "table", tp.spark_table
    return "table", tp.table if tp.schema == "public" else f"{tp.schema}.{tp.table}"


def create_views(spark: Any, policy: Policy) -> dict[str, list[tuple[str, str, str]]]:
    """Create one session temporary view per policy table (:func:`~dpsql.rewriter.spark.view_name`)
    over its catalog table or Parquet path, and return ``qualified name → [(column, spark type, pg
    type)]`` from the views' schemas (metadata only). Raises PolicyError naming the table."""
    from dpsql.proxy.backends.spark_types import pg_type_of

    fname = str(policy.file)
    out: dict[str, list[tuple[str, str, str]]] = {}
    for qname, tp in policy.tables.items():
        key = f"tables.{tp.name}"
        kind, where = source_of(tp)
        try:
            if kind == "table":
                info = spark.catalog.getTable(where)
                if str(getattr(info, "tableType", "")).upper() == "VIEW":
                    raise PolicyError(fname, key, f"{where} is a Spark VIEW; dpsql reads tables only (a view's definition could call "
                                      "functions or read files dpsql cannot check)")
                df = spark.table(where)
            else:
                df = spark.read.parquet(where)
            df.createOrReplaceTempView(view_name(tp.schema, tp.table))
            schema = df.schema
        except PolicyError:
            raise
        except Exception as e:  # Spark's text names the path or table, not data
            what = "the catalog table" if kind == "table" else "the Parquet path"
            raise PolicyError(fname, key, f"cannot read {what} {where!r} on Spark ({_first_line(e)})") from None
        cols: list[tuple[str, str, str]] = []
        for field in schema.fields:
            if field.name != field.name.lower():
                _log.warning("column %r of %s is not lower-case and is not served", field.name, qname)
                continue
            cols.append((field.name, field.dataType.simpleString(), pg_type_of(field.dataType)))
        out[qname] = cols
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__
