"""The Apache Spark execution backend, through Spark Connect (``pip install 'dpsql[spark]'``).

:class:`SparkBackend` opens one Spark Connect session (``SparkSession.builder.remote(url)``; the
URL's parameters — ``;use_ssl=true``, ``;token=…``, ``;user_id=…`` — are Spark Connect's own and
passed through), locks it down (:mod:`~dpsql.proxy.backends.spark_setup`: fails closed, naming the
setting) and maps every policy table to a session temporary view over its catalog table or
Parquet path. The rewriter's ``spark`` dialect emits SQL over those views only.

Each :meth:`SparkBackendSession.execute` runs exactly one statement as one Spark job under a fresh
tag (``addTag`` is per thread, so the statement runs on a worker thread of the backend):

* the SQL is first checked by :func:`dpsql.rewriter.spark.verify` — only the backend's views, only
  functions dpsql emits (no ``reflect``, ``java_method``, UDFs or file relations) — then sent;
* Spark has no server-side statement timeout: at the deadline the backend calls
  ``interruptTag(tag)`` (a cancel does the same at once), repeated every 0.25 s until the statement
  has returned *and* the server lists no operation under the tag any more (an interrupt that
  arrives before the server has registered the job stops nothing; ``interruptTag`` answers with
  the operations it interrupted), and the caller gets 57014 whether or not the job has stopped yet
  (it waits at most :func:`~dpsql.proxy.backends.postgres.stop_wait`);
* an interrupt cancels the job in Spark's scheduler at once, but Spark stops a *task* only at its
  next kill check, made when an operator pulls from its input (per scan batch, per shuffle row) —
  not inside a nested-loop join's inner loop or while an aggregate emits its buffered rows. A
  bounded dpsql query does linear work per input row, so its tasks stop within one batch; a task
  that does not (a cross join with a large public table) runs on until it finishes on a local
  server. On a cluster set ``spark.task.reaper.enabled=true`` and ``spark.task.reaper.killTimeout``
  so that executors whose killed tasks do not stop are replaced (README: Spark);
* results come back as Arrow: DECIMAL sums as exact :class:`decimal.Decimal`, types mapped to
  PostgreSQL's (:mod:`~dpsql.proxy.backends.spark_types`).

Engine errors never escape: every Spark/gRPC exception becomes one of the fixed errors of
:mod:`~dpsql.proxy.backends.base`, raised outside the ``except`` block; pyspark's own error
logger (which prints the server's message, possibly quoting values) is silenced. Spark enforces
no unique keys, so :meth:`unique_columns` reports none (no one-row-per-unit fast path).
:meth:`validate` analyses the statement (``DataFrame.schema``: an AnalyzePlan request, no job).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import secrets
import threading
import time
import warnings
import weakref
from typing import Any
from urllib.parse import urlsplit

from dpsql.errors import DatatypeMismatch, DPSQLError, PolicyError
from dpsql.policy import Policy
from dpsql.proxy.backends.base import (
    Backend,
    BackendSession,
    CancelReason,
    ResultSet,
    execution_failed,
    out_of_memory,
    query_canceled,
    session_closed,
)
from dpsql.proxy.backends.data_version import DataVersion, unpinned
from dpsql.proxy.backends.postgres import client_wait, stop_wait
from dpsql.rewriter.spark import verify, view_name

_log = logging.getLogger("dpsql.backend")

#: a stopped statement's interrupt is repeated this often, for at most this long (until it returns)
_INTERRUPT_EVERY, _INTERRUPT_FOR = 0.25, 120.0

#: pyspark loggers that print server error texts (which can quote private values)
_NOISY_LOGGERS = ("SQLQueryContextLogger", "pyspark", "py4j")


def spark_summary(url: str) -> str:
    """``host:port`` of a Spark Connect URL, without its parameters (a token must not be printed)."""
    parts = urlsplit(url.split(";", 1)[0])
    return parts.netloc or "?"


def _import_pyspark(fname: str) -> Any:
    # pyspark warns about pandas versions when it is imported and when a session starts
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyspark(\..*)?$")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pyspark.sql import SparkSession
    except ImportError as e:
        raise PolicyError(fname, "source.spark", f"the Spark backend needs pyspark's Spark Connect client ({e.name or e}); "
                          "install it with pip install 'dpsql[spark]'") from None
    for name in _NOISY_LOGGERS:
        lg = logging.getLogger(name)
        lg.setLevel(logging.CRITICAL + 1)
        lg.propagate = False
    return SparkSession


class SparkBackend(Backend):
    """The policy's tables on a Spark Connect server, as session views over catalog tables or Parquet.

    ``url`` is ``sc://host:port[/;param=value…]``; None means the policy's ``[source] spark``.
    Raises PolicyError (naming the policy key or the Spark setting) when pyspark is missing, the
    server cannot be reached, a lock-down check fails or a table cannot be read.
    """

    dialect = "spark"

    def __init__(self, policy: Policy, url: str | None = None, *, workers: int | None = None) -> None:
        self._fname = str(policy.file)
        url = url or policy.source.spark
        if not url:
            raise PolicyError(self._fname, "source.spark", "no Spark Connect URL is configured (set [source] spark = \"sc://host:port\")")
        session_cls = _import_pyspark(self._fname)
        self._where = spark_summary(url)
        self._timeout = policy.limits.statement_timeout
        self._lock = threading.Lock()
        self._closed = False
        self._sessions: weakref.WeakSet[SparkBackendSession] = weakref.WeakSet()
        try:
            self._spark = session_cls.builder.remote(url).create()
        except Exception as e:  # connection-level failures hold no data
            raise PolicyError(self._fname, "source.spark", f"cannot connect to the Spark Connect server {self._where} "
                              f"({type(e).__name__})") from None
        try:
            from dpsql.proxy.backends.spark_setup import create_views, lock_down

            lock_down(self._spark, policy)
            described = create_views(self._spark, policy)
        except PolicyError:
            self._stop()
            raise
        except Exception as e:
            self._stop()
            raise PolicyError(self._fname, "source.spark",
                              f"cannot use the Spark Connect server {self._where} ({type(e).__name__})") from None
        self._described = {k: [(c, pg) for c, _, pg in cols] for k, cols in described.items()}
        self._views = frozenset(view_name(tp.schema, tp.table) for tp in policy.tables.values())
        size = max(2, workers if workers is not None else policy.limits.max_connections)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix="dpsql-spark")

    # -- Backend ----------------------------------------------------------------------------------

    def describe(self) -> dict[str, list[tuple[str, str]]]:
        """Columns and PostgreSQL types of every policy table, from the views' schemas at start-up."""
        return {k: list(v) for k, v in self._described.items()}

    def unique_columns(self) -> dict[str, frozenset[str]]:
        """None: Spark enforces no PRIMARY KEY or UNIQUE constraint."""
        return {}

    def data_version(self) -> DataVersion:
        """The Spark Connect server (not pinned: tables and files can change while dpsql serves)."""
        return unpinned(f"spark|{self._where}")

    @property
    def views(self) -> frozenset[str]:
        """The session views standing for the policy tables (the only relations the SQL may read)."""
        return self._views

    def validate(self, sql: str) -> None:
        """Verify ``sql`` against the Spark allowlist, then analyse it on the server without running
        a job (``DataFrame.schema``); raise DatatypeMismatch (42804) when Spark's analyzer rejects it.

        Analysis reads only the catalog and Parquet footers, so a failure depends on the query text
        alone; only the first line of the analyzer's message is shown."""
        verify(sql, self._views)
        if self._closed:
            raise session_closed()
        message: str | None = None
        failed = False
        fut = self._pool.submit(self._analyse, sql)
        try:
            fut.result(max(2 * self._timeout, 60.0) if math.isfinite(self._timeout) else None)  # analysis only: no data
        except concurrent.futures.TimeoutError:
            failed = True
        except Exception as e:
            if type(e).__name__ in ("AnalysisException", "ParseException"):
                message = _first_line(e)
            else:
                failed = True
        if message is not None:
            raise DatatypeMismatch(f"the query does not type-check on Spark: {message}",
                                   hint="check the types of the values compared or combined (no budget was spent)")
        if failed:
            raise execution_failed()

    def _analyse(self, sql: str) -> None:
        self._spark.sql(sql).schema  # noqa: B018 — an AnalyzePlan request

    def session(self) -> SparkBackendSession:
        """A new execution handle (statements of different handles run concurrently)."""
        with self._lock:
            if self._closed:
                raise session_closed()
            s = SparkBackendSession(self)
            self._sessions.add(s)
        return s

    def close(self) -> None:
        """Interrupt every statement, release the Spark Connect session and the worker threads; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for s in list(self._sessions):
            s.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._stop()

    def _stop(self) -> None:
        with contextlib.suppress(Exception):
            self._spark.interruptAll()
        with contextlib.suppress(Exception):
            self._spark.stop()

    # -- on a worker thread -----------------------------------------------------------------------------

    def _run(self, sql: str, tag: str, started: threading.Event) -> ResultSet:
        from dpsql.proxy.backends.spark_types import arrow_pg_type, column_values

        self._spark.addTag(tag)
        started.set()
        try:
            table = self._spark.sql(sql).toArrow()
        finally:
            with contextlib.suppress(Exception):
                self._spark.removeTag(tag)
        types = tuple(arrow_pg_type(f.type) for f in table.schema)
        columns = [column_values(table.column(i), t) for i, t in enumerate(types)]
        return ResultSet(columns=tuple(table.schema.names), types=types, rows=list(zip(*columns, strict=True)))

    def _interrupt(self, tag: str) -> list[str] | None:
        """Interrupt the operations under ``tag``; the ids the server interrupted, None on an error."""
        try:
            ids = self._spark.interruptTag(tag)
        except Exception:
            return None
        return [str(i) for i in ids or ()]


class SparkBackendSession(BackendSession):
    """One statement at a time, as one tagged Spark job, with a timeout and a thread-safe cancel."""

    def __init__(self, backend: SparkBackend) -> None:
        self._backend = backend
        self._exec_lock = threading.Lock()
        self._state = threading.Lock()
        self._tag: str | None = None
        self._fut: concurrent.futures.Future[ResultSet] | None = None
        self._reason: CancelReason | None = None
        self._closed = False

    def execute(self, sql: str, *, timeout: float | None = None) -> ResultSet:
        """Run exactly one verified SELECT; see :meth:`BackendSession.execute` for the errors.

        ``timeout`` must be positive; ``math.inf`` disables it, None means the policy's
        ``statement_timeout``. At the timeout the job is interrupted by its tag."""
        limit = self._backend._timeout if timeout is None else timeout
        if not limit > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        verify(sql, self._backend.views)
        with self._exec_lock:
            tag = f"dpsql-{secrets.token_hex(8)}"
            started = threading.Event()
            with self._state:
                if self._closed or self._backend._closed:
                    raise session_closed()
                self._tag, self._reason = tag, None
                try:
                    fut = self._backend._pool.submit(self._backend._run, sql, tag, started)
                except RuntimeError:
                    raise session_closed() from None
                self._fut = fut
            timer: threading.Timer | None = None
            if math.isfinite(limit):
                timer = threading.Timer(limit, self._stop, args=(tag, "timeout"))
                timer.daemon = True
                timer.start()
            failure: str | None = None
            result: ResultSet | None = None
            try:
                result = fut.result(client_wait(limit) if math.isfinite(limit) else None)
            except concurrent.futures.TimeoutError:  # the interrupt did not stop the job in time
                self._stop(tag, "timeout")
                failure = "timeout"
            except Exception as e:  # Spark/gRPC errors: only their class is read
                failure = _failure_kind(e)
            finally:
                if timer is not None:
                    timer.cancel()
                with self._state:
                    reason, self._tag, self._fut = self._reason, None, None
            if reason is not None and failure is not None and not fut.done():
                with contextlib.suppress(Exception):
                    fut.result(stop_wait(limit) if math.isfinite(limit) else 10.0)
        if reason is not None and (failure is not None or result is None):
            raise query_canceled(reason)
        if failure is not None:
            raise _error_for(failure)
        assert result is not None
        return result

    def _stop(self, tag: str, reason: CancelReason) -> None:
        with self._state:
            if self._tag != tag:
                return
            first = self._reason is None
            self._reason = self._reason or reason
            fut = self._fut
        self._backend._interrupt(tag)
        if first and fut is not None:
            # An interrupt that reaches the server before the job is registered there stops
            # nothing: repeat it until the statement has returned.
            threading.Thread(target=self._keep_interrupting, args=(tag, fut), daemon=True, name="dpsql-spark-interrupt").start()

    def _keep_interrupting(self, tag: str, fut: concurrent.futures.Future[ResultSet]) -> None:
        """Repeat the interrupt until the statement has returned and the server interrupted nothing
        more under the tag (the operation is gone there), for at most ``_INTERRUPT_FOR`` s."""
        deadline = time.monotonic() + _INTERRUPT_FOR
        while time.monotonic() < deadline:
            with contextlib.suppress(BaseException):
                fut.result(_INTERRUPT_EVERY)
            if self._backend._closed:
                return
            ids = self._backend._interrupt(tag)
            if fut.done() and ids == []:
                return
            if not fut.done():
                continue
            time.sleep(_INTERRUPT_EVERY)

    def cancel(self) -> None:
        """Interrupt the running statement (reported as canceled by user request); thread-safe."""
        with self._state:
            tag = self._tag
        if tag is not None:
            self._stop(tag, "cancel")

    def close(self) -> None:
        """Interrupt any running statement, wait for execute() to return and release the handle; idempotent."""
        with self._state:
            self._closed = True
            tag = self._tag
        if tag is not None:
            self._stop(tag, "cancel")
        with self._exec_lock:
            pass


def _failure_kind(e: BaseException) -> str:
    """What kind of failure a Spark exception is, from its class and error class only (never its text)."""
    cls = ""
    with contextlib.suppress(Exception):
        get = getattr(e, "getCondition", None) or getattr(e, "getErrorClass", None)
        cls = str(get() or "") if get is not None else ""
    _log.debug("spark statement failed: %s %s", type(e).__name__, cls)
    if "CANCEL" in cls.upper() or "INTERRUPT" in cls.upper():
        return "cancel"
    if "MEMORY" in cls.upper() or type(e).__name__ in ("MemoryError",):
        return "memory"
    return "failed"


def _error_for(failure: str) -> DPSQLError:
    if failure in ("cancel", "timeout"):
        return query_canceled("timeout" if failure == "timeout" else "cancel")
    if failure == "memory":
        return out_of_memory()
    return execution_failed()


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:500] if lines else type(e).__name__
