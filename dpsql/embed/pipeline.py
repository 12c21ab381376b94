"""The embedding pipeline: dpsql's guarantees for queries that run on the caller's own engine.

::

    prepare (rewrite + calibrate; free) → charge (durable, atomic, before any private row is read)
        → the caller runs the bounded SQL on its engine → release (shape checked, noise,
        post-processing) → noisy rows

The steps and their guarantees are those of the server's query path (``dpsql.proxy.engine``),
with the same functions: :func:`dpsql.rewriter.rewrite`, :func:`dpsql.accountant.planner.calibrate`,
:meth:`dpsql.accountant.ledger.Ledger.charge`, and the release step of :mod:`dpsql.embed.release`.
What differs, because dpsql does not run the SQL (docs/embedding.md): the caller is trusted to run
the token's bounded SQL unchanged on the data the policy describes, the row shape is checked
instead (:mod:`dpsql.embed.shape`), and nothing is replayed (every release is charged).

One :class:`Pipeline` per policy and dialect (it owns the ledger connection and the
post-processing DuckDB; thread-safe); one :class:`EmbedSession` per analyst session (its budget
filter is the policy's session filter).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from dpsql.accountant.filters import BudgetStatus, ScopeLimits, limits_for
from dpsql.accountant.ledger import Ledger, QueryGuarantee, open_ledger
from dpsql.accountant.planner import calibrate
from dpsql.embed.release import release_cells, validate_post
from dpsql.embed.shape import check_rows, normalise_public_keys
from dpsql.embed.types import PreparedQuery, Release, ReleaseToken
from dpsql.errors import (
    DataException,
    DPSQLError,
    ExecutionFailed,
    InvalidAuthorization,
    LimitExceeded,
    PolicyError,
    ReleaseRefused,
    UnsupportedQuery,
)
from dpsql.policy import Policy, load_policy
from dpsql.proxy.post_duckdb import PostProcessor
from dpsql.proxy.settings import DPSettings
from dpsql.proxy.timing import Deadline, TimingShield, shape_of
from dpsql.rewriter import DIALECTS, rewrite
from dpsql.rewriter.subqueries import check_counts
from dpsql.schema import Catalog, build_catalog

#: runs one SQL statement on the caller's engine and returns (column names, rows)
Runner = Callable[[str], tuple[Sequence[str], Iterable[Sequence[Any]]]]
Schema = Mapping[str, Sequence[tuple[str, str]]]


@dataclass
class _Pending:
    """An unreleased token: the session that charged it and its timing-shield deadline."""

    session_id: str
    deadline: Deadline | None


def catalog_for(policy: Policy, schema: Schema | None, unique: Mapping[str, frozenset[str]] | None = None) -> Catalog:
    """The visible catalog of ``policy`` over ``schema`` (policy table → ``(column, pg_type)``
    list). Without ``schema`` the policy's own data source is opened to read its metadata (no
    rows). PolicyError when the schema lacks a policy table or contradicts the policy."""
    if schema is None:
        if not (policy.source.duckdb or policy.source.postgres or any(t.file for t in policy.tables.values())):
            raise PolicyError(str(policy.file), "source",
                              "has no data source to read the schema from: pass schema= (policy table → [(column, pg_type)])")
        from dpsql.api import open_backend

        backend = open_backend(policy)
        try:
            schema, unique = backend.describe(), backend.unique_columns()
        finally:
            backend.close()
    try:
        return build_catalog(policy, schema, dict(unique) if unique is not None else None)
    except KeyError as e:
        raise PolicyError(str(policy.file), "tables", f"schema lacks {e}") from None


class Pipeline:
    """The embedding pipeline for one policy and one SQL dialect.

    ``schema`` maps each policy table (``public.visits``) to its ``(column, pg_type)`` list as
    your engine has it (see :mod:`dpsql.embed.schema`); ``unique_columns`` declares one-column
    unique keys only when your engine enforces them for the whole life of the pipeline (they let
    the rewriter take the one-row-per-unit path; omit them when unsure). ``ledger`` overrides the
    policy's ``[privacy.ledger]`` (SQLite file, or PostgreSQL shared with ``dpsql serve``
    instances). ``shield`` replaces the timing shield (tests pass ``TimingShield(enabled=False)``).
    """

    def __init__(
        self,
        policy: str | Path | Policy,
        *,
        dialect: str = "duckdb",
        schema: Schema | None = None,
        unique_columns: Mapping[str, frozenset[str]] | None = None,
        ledger: Ledger | None = None,
        shield: TimingShield | None = None,
    ) -> None:
        if dialect not in DIALECTS:
            raise UnsupportedQuery(f"dialect {dialect!r} is not supported", hint=f"use one of {', '.join(DIALECTS)}")
        self.policy = policy if isinstance(policy, Policy) else load_policy(policy)
        self.dialect = dialect
        self.catalog = catalog_for(self.policy, schema, unique_columns)
        self.id = secrets.token_hex(16)
        self._own_ledger = ledger is None
        self.ledger = ledger if ledger is not None else open_ledger(self.policy)
        self.post = PostProcessor()
        self.shield = shield if shield is not None else TimingShield(cap=self.policy.limits.statement_timeout)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._closed = False

    def session(self, user: str) -> EmbedSession:
        """A new session for ``user`` (InvalidAuthorization 28000 if the policy lists no such user).
        No password: authentication is the embedding application's job."""
        if self.policy.user(user) is None:
            raise InvalidAuthorization(f'role "{user}" is not in the policy', hint="ask the operator to add the user to the policy")
        return EmbedSession(self, user)

    def close(self) -> None:
        """Close the ledger (if the pipeline opened it) and the post-processor. Unreleased tokens
        can no longer be released; their charges stand."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending.clear()
        try:
            if self._own_ledger:
                self.ledger.close()
        finally:
            self.post.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ---------------------------------------------------------------------------------- tokens

    def _register(self, token_id: str, pending: _Pending) -> None:
        with self._lock:
            if self._closed:
                raise ExecutionFailed("the pipeline is closed")
            self._pending[token_id] = pending

    def _take(self, token: ReleaseToken, session_id: str) -> _Pending:
        """Remove ``token`` from the unreleased set (so it can never be released again), or refuse."""
        with self._lock:
            pending = self._pending.get(token.id) if isinstance(token, ReleaseToken) else None
            if pending is None:
                raise ReleaseRefused("this release token was already released, or was not issued by this pipeline",
                                     hint="a charge is released at most once; charge the query again for a new answer")
            if pending.session_id != session_id:
                raise ReleaseRefused("this release token belongs to another session", hint="release it from the session that charged it")
            del self._pending[token.id]
            return pending

    def _forget(self, token_id: str) -> None:
        with self._lock:
            self._pending.pop(token_id, None)


class EmbedSession:
    """One analyst session of a :class:`Pipeline`: its (ε, δ) settings, filters and query path.

    Not thread-safe (one statement at a time, like a connection); open one per concurrent caller.
    """

    def __init__(self, pipeline: Pipeline, user: str) -> None:
        self.pipeline = pipeline
        self.user = user
        self.id = uuid.uuid4().hex
        self.settings = DPSettings(pipeline.policy, user)

    # ---------------------------------------------------------------------------- settings

    def set(self, name: str, value: str | float | Fraction) -> None:
        """``SET dp.epsilon | dp.delta | dp.session_epsilon``, validated against the policy as on
        the server (22023 for a value outside the per-query range, 42704 for an unknown name)."""
        self.settings.set(name, str(value))

    def limits(self) -> ScopeLimits:
        """The session, user and global filters that apply to this session's charges."""
        return limits_for(self.pipeline.policy, self.user, self.settings.session_epsilon)

    def budget(self) -> list[BudgetStatus]:
        """Spent and remaining budget of each filter, now (reads only the ledger)."""
        return self.pipeline.ledger.status(self.user, self.id, self.limits(), time.time())

    # ------------------------------------------------------------------------------ steps

    def prepare(self, sql: str, *, epsilon: float | Fraction | str | None = None,
                delta: float | Fraction | str | None = None) -> PreparedQuery:
        """Rewrite ``sql`` for the pipeline's dialect and calibrate it at (ε, δ) — the session's
        settings unless given here (validated like ``SET dp.epsilon``). Reads no data, spends
        nothing; a refused query raises its DPSQLError (42501, 0A000, 42601 …) here, free. The
        cost depends on the query text and the policy only."""
        settings = self.settings
        if epsilon is not None or delta is not None:
            settings = DPSettings(self.pipeline.policy, self.user)
            settings.epsilon, settings.delta = self.settings.epsilon, self.settings.delta
            if epsilon is not None:
                settings.set("dp.epsilon", str(epsilon))
            if delta is not None:
                settings.set("dp.delta", str(delta))
        rw = rewrite(sql, self.pipeline.catalog, dialect=self.pipeline.dialect)
        noise = None
        if rw.plan is not None:
            noise = calibrate(rw.plan, settings.epsilon, settings.delta, self.pipeline.policy.privacy.accounting)
            validate_post(rw.plan, self.pipeline.post)
        return PreparedQuery(sql, self.pipeline.dialect, rw, noise, settings.epsilon, settings.delta, pipeline_id=self.pipeline.id)

    def charge(self, prepared: PreparedQuery, *, public_keys: Iterable[Sequence[Any]] | None = None) -> ReleaseToken:
        """Charge ``prepared.cost`` to this session, its user and the global filter — atomically
        (one ledger transaction excludes every other writer, in any process) and durably (the
        commit is on disk before this returns) — and return the single-use release token. Run
        the bounded SQL only after this returns. BudgetExhausted (53400) when a filter would be
        overspent (nothing is written).

        ``public_keys``: the rows of ``prepared.public_keys_sql`` when it is set (public data
        only); a set larger than the policy's ``max_released_groups`` is refused here, free."""
        pipe = self.pipeline
        if not isinstance(prepared, PreparedQuery) or prepared.pipeline_id != pipe.id:
            raise ReleaseRefused("this query was not prepared by this pipeline", hint="prepare it with this pipeline's sessions")
        plan, noise = prepared.plan, prepared.noise
        if plan is None or noise is None:
            raise UnsupportedQuery("the query reads public tables only: there is nothing to charge or noise",
                                   hint="run PreparedQuery.sql on your engine as is")
        keys = normalise_public_keys(plan, public_keys)
        if keys is not None and len(keys) > plan.max_released_groups:
            raise LimitExceeded(
                f"the query would release {len(keys)} groups, more than the limit of {plan.max_released_groups}",
                hint="group by fewer columns or filter the groups",
            )
        query_hash = hashlib.sha256(prepared.sql.encode()).hexdigest()[:32]
        guarantee = QueryGuarantee(noise.epsilon, noise.delta, noise.conversion_delta)
        receipt = pipe.ledger.charge(self.user, self.id, noise.cost, self.limits(), time.time(), query_hash, guarantee=guarantee)
        # ---- charged: from here on nothing is refunded. The answer's time is fixed now, from
        # public information only (the shape's earlier answers), like the server's.
        deadline = pipe.shield.begin(shape_of(prepared.sql), time.perf_counter())
        token = ReleaseToken(prepared, receipt, tuple(keys) if keys is not None else None, secrets.token_hex(16))
        pipe._register(token.id, _Pending(self.id, deadline))
        weakref.finalize(token, pipe._forget, token.id)
        return token

    def release(self, token: ReleaseToken, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Release:
        """Release the rows the caller's engine returned for ``token.sql``: the shape is checked
        against the plan (:mod:`dpsql.embed.shape`), then noise and post-processing as on the
        server. Returns only noisy, post-processed values. The token is used up by this call
        whatever happens (a second call raises ReleaseRefused); the charge stands either way.
        The answer, result or error, is returned at the timing shield's deadline fixed by the
        charge. Errors carry no value of the rows."""
        pending = self.pipeline._take(token, self.id)
        prepared = token.prepared
        plan, noise = prepared.plan, prepared.noise
        assert plan is not None and noise is not None
        outcome: Release | DPSQLError
        try:
            cells = check_rows(plan, columns, rows, token.public_keys)
            out_rows, notices = release_cells(plan, noise, cells, self.pipeline.post, self.settings)
            outcome = Release(
                tuple(o.name for o in plan.outputs),
                tuple(o.pg_type for o in plan.outputs),
                out_rows,
                notices=(self._cost_notice(prepared), *notices),
                cost=noise.cost,
                charge_id=token.charge_id,
            )
        except DPSQLError as e:
            outcome = e
        except Exception:  # never a traceback or message that could quote a row
            outcome = ExecutionFailed("releasing the rows failed", hint="the charge for this query stands")
        if pending.deadline is not None:
            pending.deadline.wait()
        if isinstance(outcome, DPSQLError):
            raise outcome.with_traceback(None) from None
        return outcome

    def abandon(self, token: ReleaseToken) -> None:
        """Give up ``token`` without releasing (e.g. the engine failed): it can no longer be
        released, and its charge stands. Waits for its timing-shield deadline, as a failure would."""
        pending = self.pipeline._take(token, self.id)
        if pending.deadline is not None:
            pending.deadline.wait()

    # ------------------------------------------------------------------------- one call

    def execute(self, sql: str, run: Runner, *, epsilon: float | Fraction | str | None = None,
                delta: float | Fraction | str | None = None) -> Release:
        """The whole pipeline in one call, ``run`` executing SQL on the caller's engine (see
        :func:`dpsql.embed.runners.dbapi_runner`): prepare; a public-only query runs as is; else
        the query's constants are evaluated and its public keys read (public data only, before
        the charge: a failure there is free), then charge, run the bounded SQL, release. A failure
        of ``run`` after the charge raises ExecutionFailed without the engine's text; the charge
        stands."""
        prepared = self.prepare(sql, epsilon=epsilon, delta=delta)
        if prepared.public_only:
            columns, rows = run(prepared.sql)
            names = tuple(o.name for o in prepared.outputs)
            materialised = [tuple(r) for r in rows]
            if len(names) != len(columns):
                names = tuple(columns)
            types = tuple(o.pg_type for o in prepared.outputs) if len(prepared.outputs) == len(names) else ("text",) * len(names)
            return Release(names, types, materialised)
        if prepared.constants_sql is not None:
            try:
                run(prepared.constants_sql)
            except Exception:
                raise DataException(
                    "a constant in the query cannot be evaluated (for example an invalid date literal or an out-of-range cast)",
                    hint="fix the literal; no budget was spent",
                ) from None
        if prepared.subquery_check_sql is not None:
            try:
                counts = list(run(prepared.subquery_check_sql)[1])
            except Exception:
                raise ExecutionFailed("counting the rows of a scalar subquery failed", hint="no budget was spent") from None
            check_counts(counts)
        keys = None
        if prepared.public_keys_sql is not None:
            try:
                keys = list(run(prepared.public_keys_sql)[1])
            except Exception:
                raise ExecutionFailed("reading the public group keys failed", hint="no budget was spent") from None
        token = self.charge(prepared, public_keys=keys)
        try:
            columns, rows = run(token.sql)
            materialised = list(rows)
        except Exception:
            self.abandon(token)
            raise ExecutionFailed("running the bounded query on your engine failed",
                                  hint="the charge for this query stands; check the engine, then retry") from None
        return self.release(token, columns, materialised)

    # ---------------------------------------------------------------------------- notices

    def _cost_notice(self, prepared: PreparedQuery) -> str:
        cost = prepared.cost
        if cost is not None and cost.amount == 0 and cost.delta == 0:
            text = "dpsql: this query spent nothing (its answer follows from the policy alone)"
        else:
            text = f"dpsql: this query spent ε={float(prepared.epsilon):g}, δ={float(prepared.delta):.3g}"
        try:
            user = {s.scope: s for s in self.budget()}.get("user")
        except DPSQLError:
            user = None
        if user is not None and user.remaining_epsilon is not None:
            text += f"; remaining for {self.user}: ε={user.remaining_epsilon:.4g}"
            if user.remaining_delta is not None:
                text += f", δ={float(user.remaining_delta):.3g}"
        return text
