"""The query engine: policy + backend + ledger, and per-connection sessions that answer SQL.

One :class:`Engine` serves a policy; each connection (or embedding caller) opens a
:class:`Session` for one user. A private query goes: rewrite (pure) → calibrate (pure) →
public key set (public data only) → **charge the ledger, durably** → run the bounded SQL →
noise → post-processing. Nothing computed from private rows is returned, logged or put in an
error before noise: engine errors are replaced by fixed messages, and the charge stands whatever
happens after it (R22).

Replay (:mod:`~dpsql.proxy.replay`): an identical private query is answered with the stored
answer of the query that paid for it, at no charge; the charge reserves the replay slot in the
ledger in its own transaction. Admission (:mod:`~dpsql.proxy.admission`) queues a user's private
queries beyond their concurrency slots until the statement's deadline. Every statement a session
answers leaves one line in the audit log and counts in the metrics (:mod:`~dpsql.proxy.trail`).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from dpsql.accountant.costs import Cost
from dpsql.accountant.filters import BudgetStatus, ScopeLimits, limits_for
from dpsql.accountant.ledger import Ledger, QueryGuarantee, Receipt, open_ledger
from dpsql.accountant.planner import NoisePlan, calibrate
from dpsql.accountant.replays import ReplaySlotTaken
from dpsql.accountant.units import from_atto, from_pico
from dpsql.cache import BoundedCache
from dpsql.errors import DataException, DPSQLError, InvalidAuthorization, LimitExceeded, QueryCanceled, UnsupportedQuery
from dpsql.policy import Policy
from dpsql.proxy import release as release_step
from dpsql.proxy.admission import Admission
from dpsql.proxy.backends.base import Backend, BackendSession, query_canceled
from dpsql.proxy.coerce import coerce
from dpsql.proxy.post_duckdb import PostProcessor
from dpsql.proxy.replay import Replays, ReplayTicket, StoredAnswer
from dpsql.proxy.settings import DPSettings
from dpsql.proxy.timing import Canceled, Deadline, TimingShield, shape_of
from dpsql.proxy.trail import ClientInfo, OperatorsTrail, Trail
from dpsql.proxy.unit_keys import check_unit_keys
from dpsql.rewriter import googlesql, rewrite, stages, unions
from dpsql.rewriter.estimates import aggregate_values, output_rows
from dpsql.rewriter.googlesql import GoogleDP
from dpsql.rewriter.parse import parse_statement
from dpsql.rewriter.plan import ReleasePlan, Rewrite
from dpsql.rewriter.post_query import NOISY_TABLE
from dpsql.rewriter.stages import Staged
from dpsql.rewriter.subqueries import check_counts
from dpsql.rewriter.unions import UnionQuery
from dpsql.schema import Catalog, build_catalog

if TYPE_CHECKING:
    from dpsql.proxy.commands import Command

_REWRITE_CACHE_SIZE = 2048


@dataclass
class Result:
    """What a statement returns: columns with PostgreSQL types, rows, notices and a command tag."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    command: str = "SELECT"
    notices: list[str] = field(default_factory=list)
    cost: Cost | None = None

    @property
    def tag(self) -> str:
        """The PostgreSQL command tag, e.g. ``SELECT 3``."""
        return f"SELECT {len(self.rows)}" if self.command == "SELECT" else self.command


def _validation_key(rw: Rewrite) -> tuple[str, str | None, str | None, tuple[str, ...]]:
    assert rw.plan is not None
    return (rw.sql, rw.plan.constants_sql, rw.plan.post_sql, tuple(h.sql for h in rw.plan.histograms))


def _stand_in(pg_type: str, i: int) -> object:
    """The i-th stand-in key of ``pg_type`` for costing stage 2 of a staged release before stage 1 runs."""
    if pg_type in ("int2", "int4", "int8"):
        return i
    if pg_type in ("text", "varchar", "bpchar"):
        return f"__dp_stand_in_{i}"
    raise UnsupportedQuery(f"a staged release on keys of type {pg_type} is not supported",
                           hint="stage keys must be text or integer columns")


def _timing_text(rw: Rewrite) -> str:
    """The SQL whose masked form is the statement's timing shape: the bounded SQL and its
    histogram queries (quantiles), which run inside the same deadline."""
    if rw.plan is None or not rw.plan.histograms:
        return rw.sql
    return ";\n".join([rw.sql, *(h.sql for h in rw.plan.histograms)])


class Engine:
    """A policy served over one backend and one ledger. Thread-safe; share it between sessions."""

    def __init__(self, policy: Policy, backend: Backend, ledger: Ledger | None = None, *,
                 shield: TimingShield | None = None) -> None:
        """``shield`` replaces the whole-statement timing shield (tests and benchmarks pass
        ``TimingShield(enabled=False)`` to measure without it; production keeps the default)."""
        self.policy = policy
        self.backend = backend
        self.catalog: Catalog = build_catalog(policy, backend.describe(), backend.unique_columns())
        check_unit_keys(policy, backend)  # a key path's referenced column is unique in the data, or no start
        self.ledger = ledger if ledger is not None else open_ledger(policy)
        self.post = PostProcessor()
        self.admission = Admission(policy.limits.queries_per_minute, policy.limits.concurrent_queries_per_user)
        self.replays = Replays(policy, self.ledger, backend)
        try:
            self.trail = OperatorsTrail(policy)  # verifies the audit log's chain: no start on a broken one
        except BaseException:
            self.ledger.close()
            self.post.close()
            raise
        self._rewrites: BoundedCache[tuple[str, str], Rewrite] = BoundedCache(_REWRITE_CACHE_SIZE)
        self._noise: BoundedCache[tuple[str, Fraction, Fraction], NoisePlan] = BoundedCache(_REWRITE_CACHE_SIZE)
        self._validated: BoundedCache[tuple[str, str | None, str | None], bool] = BoundedCache(_REWRITE_CACHE_SIZE)
        self._shapes: BoundedCache[str, str] = BoundedCache(_REWRITE_CACHE_SIZE)
        self._google: BoundedCache[str, GoogleDP | None] = BoundedCache(_REWRITE_CACHE_SIZE)
        self._multi: BoundedCache[str, tuple[UnionQuery | None, Staged | None]] = BoundedCache(_REWRITE_CACHE_SIZE)
        self.shield = shield if shield is not None else TimingShield(cap=policy.limits.statement_timeout)

    def session(self, user: str, client: ClientInfo | None = None) -> Session:
        """A new session for ``user``; PermissionError-style DPSQLError if the policy doesn't list them.
        ``client`` (peer, TLS, auth method) is what the audit log records for its statements."""
        if self.policy.user(user) is None:
            raise InvalidAuthorization(f'role "{user}" is not allowed to connect', hint="ask the operator to add the user to the policy")
        return Session(self, user, client)

    def rewrite(self, sql: str) -> Rewrite:
        """The (cached) rewrite of ``sql`` for this backend's dialect; pure, so safe to cache by text."""
        dialect = self.backend.dialect
        return self._rewrites.get_or_compute((sql, dialect), lambda: self._rewrite(sql, dialect))

    def union(self, sql: str) -> UnionQuery | None:
        """``sql`` split into the branches of its top-level UNION/INTERSECT/EXCEPT (cached), or None."""
        return self._releases(sql)[0]

    def staged(self, sql: str) -> Staged | None:
        """``sql`` split into a staged release (a DP subquery choosing the keys of an outer DP query), cached."""
        return self._releases(sql)[1]

    def _releases(self, sql: str) -> tuple[UnionQuery | None, Staged | None]:
        """The multi-release forms of ``sql`` (a set operation, a staged release), from one parse."""
        def split() -> tuple[UnionQuery | None, Staged | None]:
            if self.google(sql) is not None:
                return None, None  # GoogleSQL options apply to one query: the rewrite refuses the rest
            limits = self.policy.limits
            try:
                tree = parse_statement(sql, max_bytes=limits.max_statement_bytes, max_nodes=limits.max_ast_nodes)
            except DPSQLError:
                return None, None  # the rewrite reports it
            u = unions.split(tree)
            if u is not None:
                return u, None
            return None, stages.split(tree, lambda name: (t := self.catalog.table(name)) is not None and not t.policy.public)

        return self._multi.get_or_compute(sql, split)

    def google(self, sql: str) -> GoogleDP | None:
        """GoogleSQL's DP syntax in ``sql`` read as plain SQL and options (cached), or None."""
        return self._google.get_or_compute(sql, lambda: googlesql.translate(sql))

    def _rewrite(self, sql: str, dialect: str) -> Rewrite:
        g = self.google(sql)
        if g is None:
            return rewrite(sql, self.catalog, dialect=dialect)
        rw = rewrite(g.sql, googlesql.tightened(self.catalog, g), dialect=dialect)
        if rw.plan is not None:
            googlesql.check(self.catalog, g, rw.plan.tables)
            if g.public_groups and rw.plan.keys and not rw.plan.keys_public:
                raise UnsupportedQuery(
                    "group_selection_strategy = PUBLIC_GROUPS, but a group key has no public value set",
                    hint="declare the key's values in the policy or join a public table, or leave the option out",
                )
            if g.min_units is not None:
                if not rw.plan.partition_selection:
                    raise UnsupportedQuery(
                        "min_privacy_units_per_group applies to groups found by partition selection, and this query has none",
                        hint="leave the option out: without GROUP BY, or with public group keys, every group is released",
                    )
                rw = replace(rw, plan=replace(rw.plan, min_units=g.min_units))
        return rw

    def calibrate(
        self, sql: str, plan: ReleasePlan, epsilon: Fraction, delta: Fraction, preference: str = "auto"
    ) -> NoisePlan:
        """The (cached) noise plan of ``sql``'s release plan at (ε, δ) and the partition-selection
        ``preference`` (``dp.partition_selection``); pure, so safe to cache."""
        accounting = self.policy.privacy.accounting
        return self._noise.get_or_compute(
            (sql, epsilon, delta, preference), lambda: calibrate(plan, epsilon, delta, accounting, preference)
        )

    def shape(self, rw: Rewrite) -> str:
        """The (cached) timing shape of a rewrite: its bounded SQL with literals masked."""
        text = _timing_text(rw)
        return self._shapes.get_or_compute(text, lambda: shape_of(text))

    def validated(self, rw: Rewrite) -> bool:
        """True when this exact bounded SQL (with its constants and post-processing queries) has
        passed :meth:`Session._validate` before. The checks read no data and depend only on these
        texts and the schema, so a pass stays a pass for the engine's lifetime."""
        return self._validated.lookup(_validation_key(rw))[0]

    def mark_validated(self, rw: Rewrite) -> None:
        """Remember that ``rw`` passed validation (bounded like the rewrite cache)."""
        self._validated.put(_validation_key(rw), True)

    def close(self) -> None:
        """Close the backend, the ledger and the post-processor."""
        try:
            self.backend.close()
        finally:
            self.ledger.close()
            self.post.close()
            self.trail.close()


class Session:
    """One user's connection: DP settings, a backend session and the query path. Not thread-safe."""

    def __init__(self, engine: Engine, user: str, client: ClientInfo | None = None) -> None:
        self.engine = engine
        self.user = user
        self.id = uuid.uuid4().hex
        self.settings = DPSettings(engine.policy, user)
        self.client = client or ClientInfo()
        self.trail = Trail()
        self._backend: BackendSession | None = None
        self._answer_at: Deadline | None = None  # the timing shield's deadline of the charged statement running now
        self._client_canceled = False
        self._ticket: ReplayTicket | None = None  # the replay slot the running statement's charge reserves
        self._canceled = threading.Event()  # set by cancel(): ends a wait for admission or a replay
        self._deadline = 0.0  # monotonic time at which the running statement's waits give up

    # ----------------------------------------------------------------------------------------- API

    def execute(self, sql: str, command: Command | None = None) -> Result:
        """Answer one statement: a DP query, a query over public tables, EXPLAIN, a ``dp.*`` setting
        or the ``dpsql.budget`` view. Raises DPSQLError (with SQLSTATE) on refusal or failure.
        Every statement leaves one audit line (AuditLogUnavailable if it cannot be written).
        ``command`` is ``sql``'s classification when the caller made it already (the wire server
        classifies each statement once, when it routes it); without it ``sql`` is classified here."""
        self.trail = Trail()
        self._canceled.clear()
        started = time.perf_counter()
        self._deadline = time.monotonic() + self.engine.policy.limits.statement_timeout
        sqlstate = "00000"
        try:
            return self._execute(sql, command)
        except DPSQLError as e:
            sqlstate = e.sqlstate
            raise
        except BaseException:
            sqlstate = "XX000"
            raise
        finally:
            self.engine.trail.record(self, sql, self.trail, sqlstate, time.perf_counter() - started)

    def _execute_classified(self, command: Command) -> Result:
        self.trail.kind = command.kind
        if command.kind == "set":
            self.settings.set(command.name, command.value)
            return Result((), (), [], command="SET")
        if command.kind == "reset":
            self.settings.reset(command.name)
            return Result((), (), [], command="RESET")
        if command.kind == "show":
            name, value = self.settings.show(command.name)
            return Result((name,), ("text",), [(value,)], command="SHOW")
        if command.kind == "explain" and command.bias:
            return self.explain_bias(command.query)
        if command.kind == "explain":

            lines = self.explain(command.query)
            return Result(("QUERY PLAN",), ("text",), [(line,) for line in lines], command="EXPLAIN")
        if command.kind == "budget":
            return self.budget_query(command.query)
        return self.query(command.query)

    def _execute(self, sql: str, command: Command | None) -> Result:
        from dpsql.proxy.commands import classify

        if command is None:
            command = classify(sql)
        g = self.engine.google(command.query) if command.kind in ("query", "explain") and command.query else None
        if g is None:
            return self._execute_classified(command)
        session_settings = self.settings
        self.settings = session_settings.for_statement(g.epsilon, g.delta, g.confidence)
        try:
            return self._execute_classified(command)
        finally:
            self.settings = session_settings

    def plan(self, sql: str) -> tuple[Rewrite, NoisePlan | None]:
        """Rewrite and calibrate ``sql`` at the session's (ε, δ); reads no data, spends nothing."""
        rw = self.engine.rewrite(sql)
        if rw.plan is None:
            return rw, None
        g = self.engine.google(sql)
        settings = self.settings.for_statement(g.epsilon, g.delta, g.confidence) if g is not None else self.settings
        return rw, self.engine.calibrate(sql, rw.plan, settings.epsilon, settings.delta, settings.partition_selection)

    def limits(self) -> ScopeLimits:
        """The session, user and global filters that apply to this session's queries."""
        return limits_for(self.engine.policy, self.user, self.settings.session_epsilon)

    def budget(self) -> list[BudgetStatus]:
        """Spent and remaining budget of each filter, now."""
        return self.engine.ledger.status(self.user, self.id, self.limits(), time.time())

    def close(self) -> None:
        """Release the backend session (a running statement is canceled)."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def cancel(self) -> None:
        """Cancel the running statement, if any (thread-safe), at once — also while it waits for
        admission, a replay, or its timing deadline. Its charge stands."""
        self._canceled.set()
        answer_at = self._answer_at
        if answer_at is not None:
            self._client_canceled = True
            answer_at.cancel()
        backend = self._backend
        if backend is not None:
            backend.cancel()

    # ---------------------------------------------------------------------------------- internals

    @property
    def backend(self) -> BackendSession:
        if self._backend is None:
            self._backend = self.engine.backend.session()
        return self._backend

    def query(self, sql: str) -> Result:
        """Run a SELECT: over public tables as is, over private tables with DP. A private query,
        once charged, is answered (result or error) at its timing shield's deadline, measured
        from the charge (:mod:`dpsql.proxy.timing`)."""
        u = self.engine.union(sql)
        if u is not None:
            return self._union(u)
        staged = self.engine.staged(sql)
        if staged is not None:
            return self._staged(staged)
        rw, noise = self.plan(sql)
        if rw.plan is None:
            self.trail.kind = "public"
            rs = self.backend.execute(rw.sql, timeout=self.engine.policy.limits.statement_timeout)
            names = tuple(o.name for o in rw.outputs) if len(rw.outputs) == len(rs.columns) else rs.columns
            return Result(names, rs.types, rs.rows)
        assert noise is not None
        if not rw.plan.stats and not rw.plan.quantiles and rw.plan.keys_public:
            return self._free(rw, rw.plan)
        self.trail.kind, self.trail.noise = "private", noise
        self.trail.query_hash = hashlib.sha256(_timing_text(rw).encode()).hexdigest()[:32]
        with self.engine.admission.admit(self.user, wait=max(0.0, self._deadline - time.monotonic()), cancelled=self._canceled):
            return self._replayable(sql, rw, rw.plan, noise)

    def _free(self, rw: Rewrite, plan: ReleasePlan) -> Result:
        """A query whose answer the policy fixes (group keys with declared values or from public
        tables, no aggregate): answered from the public key set alone — no charge, nothing in the
        ledger, no private row read — with a NOTICE that says so."""
        self.trail.kind = "free"
        limits = self.engine.policy.limits
        rows: list[tuple[Any, ...]] = []
        if plan.public_keys_sql is not None:
            rows = self.backend.execute(plan.public_keys_sql, timeout=limits.statement_timeout).rows
        key_types = [k.pg_type for k in plan.keys]
        coerced = dict.fromkeys(tuple(coerce(v, t) for v, t in zip(r, key_types, strict=True)) for r in rows)
        keys = sorted(coerced, key=release_step._sort_key)
        if len(keys) > plan.max_released_groups:
            raise LimitExceeded(
                f"the query would release {len(keys)} groups, more than the limit of {plan.max_released_groups}",
                hint="group by fewer columns or filter the groups",
            )
        self._validate(rw, plan)
        values = aggregate_values(plan, {}, len(keys))
        if plan.post_sql is None:
            out_rows = output_rows(plan, keys, values)
        else:
            data: list[Sequence[Any]] = [[k[i] for k in keys] for i in range(len(plan.keys))]
            data += values
            _, out_rows = self.engine.post.run(NOISY_TABLE, plan.post_types, data, plan.post_sql)
        notice = "dpsql: this query spent nothing and read no private row (its answer follows from the policy alone)"
        notice += self._remaining_text()
        return Result(tuple(o.name for o in plan.outputs), tuple(o.pg_type for o in plan.outputs), out_rows, notices=[notice])

    def _replayable(self, sql: str, rw: Rewrite, plan: ReleasePlan, noise: NoisePlan) -> Result:
        """:meth:`_private` with replay: a stored answer if there is one (free), else the query,
        charged with the replay slot reserved in the charge's transaction, its answer stored."""
        ticket = self.engine.replays.ticket(self.user, rw, noise, self.settings.post_key())
        return self._with_replay(ticket, noise, lambda: self._private(sql, rw, plan, noise))

    def _with_replay(self, ticket: ReplayTicket | None, noise: NoisePlan | QueryGuarantee, run: Callable[[], Result]) -> Result:
        """``run()`` (which charges, reserving ``ticket``'s slot in the charge's transaction) with
        replay: the stored answer when there is one, else ``run()``'s answer, stored."""
        replays = self.engine.replays
        if ticket is None:
            return run()
        while True:
            stored = replays.wait(ticket, self._deadline, self._canceled)
            if stored is not None:
                return self._replayed(stored)
            self._ticket = ticket
            try:
                result = run()
            except ReplaySlotTaken:
                continue  # an identical query reserved the slot first: wait for its answer
            except BaseException:
                if self.trail.receipt is not None:
                    replays.abandon(ticket, self.trail.receipt)
                raise
            finally:
                self._ticket = None
            assert self.trail.receipt is not None
            replays.store(ticket, self.trail.receipt, noise, result)
            return result

    def _replayed(self, stored: StoredAnswer) -> Result:
        """The stored answer, with a notice that says nothing was charged."""
        self.trail.replayed = True
        notice = f"dpsql: replayed, no budget spent (the stored answer of an identical query charged {stored.cost_text()})"
        return Result(stored.columns, stored.types, stored.rows, notices=[notice + self._remaining_text(), *stored.notices])

    def _charge(self, noise: NoisePlan, query_hash: str) -> Receipt:
        """Charge ``noise.cost`` (reserving the replay slot of the running statement, if any)."""
        return self._charge_cost(noise.cost, QueryGuarantee(noise.epsilon, noise.delta, noise.conversion_delta), query_hash)

    def _charge_cost(self, cost: Cost, guarantee: QueryGuarantee, query_hash: str) -> Receipt:
        """Charge ``cost`` atomically to every filter of this session (reserving the replay slot of
        the running statement, if any); BudgetExhausted (53400) when any filter would overspend."""
        ticket = self._ticket
        now = time.time()
        receipt = self.engine.ledger.charge(self.user, self.id, cost, self.limits(), now, query_hash, guarantee=guarantee,
                                            replay=ticket.reservation(now) if ticket is not None else None)
        self.trail.receipt = receipt
        return receipt

    def _private(self, sql: str, rw: Rewrite, plan: ReleasePlan, noise: NoisePlan) -> Result:
        public_keys = self._public_keys(plan)
        self._validate(rw, plan)
        query_hash = hashlib.sha256(_timing_text(rw).encode()).hexdigest()[:32]
        self._charge(noise, query_hash)
        # ---- from here on, the charge stands whatever happens, and the answer (result or error)
        # leaves at the deadline the timing shield fixes now, before any private row is read.
        # Everything before this point depends on the query text, the policy and the ledger only.
        return self._shielded(self.engine.shape(rw), lambda: self._charged(rw, plan, noise, public_keys))

    def _public_keys(self, plan: ReleasePlan) -> list[tuple[Any, ...]] | None:
        """The public key tuples ``plan`` releases (public data only: read before the charge, and an
        oversized key set refused for free), or None when its keys go through partition selection."""
        if not (plan.keys_public and plan.public_keys_sql is not None):
            return None
        keys_rs = self.backend.execute(plan.public_keys_sql, timeout=self.engine.policy.limits.statement_timeout)
        public_keys = list(dict.fromkeys(tuple(r) for r in keys_rs.rows))
        if len(public_keys) > plan.max_released_groups:
            raise LimitExceeded(
                f"the query would release {len(public_keys)} groups, more than the limit of {plan.max_released_groups}",
                hint="group by fewer columns or filter the groups",
            )
        return public_keys

    def _union_plans(self, u: UnionQuery) -> tuple[list[Rewrite], dict[int, NoisePlan], Fraction, Fraction]:
        """Each branch's rewrite, and the noise plan of each charged branch at an equal share of the
        statement's (ε, δ); reads no data."""
        rws = [self.engine.rewrite(b) for b in u.branches]
        charged = [i for i, rw in enumerate(rws) if rw.plan is not None and (rw.plan.stats or rw.plan.quantiles
                                                                              or not rw.plan.keys_public)]
        k = max(1, len(charged))
        eps, delta = self.settings.epsilon / k, self.settings.delta / k
        noises = {i: self.engine.calibrate(u.branches[i], rws[i].plan, eps, delta, self.settings.partition_selection)
                  for i in charged}  # type: ignore[arg-type]
        return rws, noises, eps, delta

    def explain(self, sql: str) -> list[str]:
        """EXPLAIN's lines for ``sql`` at the session's settings: plan, cost, noise; reads no private row."""
        from dpsql.proxy.explain import explain_rows

        u = self.engine.union(sql)
        if u is not None:
            return self._explain_union(u)
        staged = self.engine.staged(sql)
        if staged is not None:
            return self._explain_staged(staged)
        rw, noise = self.plan(sql)
        return explain_rows(rw, noise, self.engine.policy)

    def _staged_plans(self, st: Staged) -> tuple[Rewrite, NoisePlan, Rewrite, NoisePlan, list[int], Fraction, Fraction]:
        """Stage 1's rewrite and noise, stage 2's on a stand-in key set of the largest size stage 1
        can release (its cost bounds the real one's), the key columns' positions in stage 1's
        output, and each stage's (ε, δ): half the statement's. Reads no data."""
        rw1 = self.engine.rewrite(st.stage1)
        if rw1.plan is None:  # pragma: no cover - split picks subqueries over a private table
            raise UnsupportedQuery("the staged subquery reads no private table")
        names = [o.name.lower() for o in rw1.plan.outputs]
        positions = []
        for key in st.key_names:
            if key not in names:
                raise UnsupportedQuery(f'the subquery has no output column "{key}"', hint="its columns are " + ", ".join(names))
            positions.append(names.index(key))
        eps, delta = self.settings.epsilon / 2, self.settings.delta / 2
        noise1 = self.engine.calibrate(st.stage1, rw1.plan, eps, delta, self.settings.partition_selection)
        size = min(st.limit if st.limit is not None else rw1.plan.max_released_groups, rw1.plan.max_released_groups)
        stand_in = [tuple(_stand_in(rw1.plan.outputs[p].pg_type, i) for p in positions) for i in range(max(1, size))]
        sql2 = stages.stage2_sql(st, stand_in)
        rw2 = rewrite(sql2, stages.declared(self.engine.catalog, st, stand_in), dialect=self.engine.backend.dialect)
        if rw2.plan is None:
            raise UnsupportedQuery("the outer query of a staged release reads no private table")
        noise2 = calibrate(rw2.plan, eps, delta, self.engine.policy.privacy.accounting, self.settings.partition_selection)
        return rw1, noise1, rw2, noise2, positions, eps, delta

    def _explain_staged(self, st: Staged) -> list[str]:
        from dpsql.proxy.explain import explain_rows

        rw1, noise1, rw2, noise2, _, eps, delta = self._staged_plans(st)
        lines = [f"dpsql staged release: 2 DP releases, each at ε = {float(eps):g}, δ = {float(delta):.3g} (the statement's "
                 "ε and δ split equally), both charged before any row is read; stage 2 keeps the keys stage 1 releases"]
        lines.append(f"stage 1 (chooses the keys): {st.stage1}")
        lines += ["  " + line for line in explain_rows(rw1, noise1, self.engine.policy)]
        lines.append(f"stage 2 (over stage 1's keys, at most {st.limit or rw1.plan.max_released_groups}; shown with stand-ins):")  # type: ignore[union-attr]
        lines += ["  " + line for line in explain_rows(rw2, noise2, self.engine.policy)]
        return lines

    def _staged(self, st: Staged) -> Result:
        """A staged release: stage 1 released as if sent alone, its keys restricting stage 2 (declared
        as the key column's public values for it); both charged at once, before any row is read,
        each at half the statement's (ε, δ). Replayed like any private query."""
        rw1, noise1, rw2p, noise2p, positions, eps, delta = self._staged_plans(st)
        assert rw1.plan is not None and rw2p.plan is not None
        public_keys1 = self._public_keys(rw1.plan)
        self._validate(rw1, rw1.plan)
        self._validate(rw2p, rw2p.plan)
        cost, guarantee = self._composed([noise1, noise2p], eps, delta)
        timing = _timing_text(rw1) + "\n" + _timing_text(rw2p)
        query_hash = hashlib.sha256(timing.encode()).hexdigest()[:32]
        self.trail.kind, self.trail.noise, self.trail.query_hash = "private", noise1, query_hash
        identity = ["staged", st.outer.sql(dialect="postgres")]
        for rw, n in ((rw1, noise1), (rw2p, noise2p)):
            identity += [rw.dialect, rw.sql, repr(rw.plan), str(eps), str(delta), repr(n.cost)]
        ticket = self.engine.replays.ticket_for(self.user, identity, cost, self.settings.post_key())
        with self.engine.admission.admit(self.user, wait=max(0.0, self._deadline - time.monotonic()), cancelled=self._canceled):
            return self._with_replay(ticket, guarantee, lambda: self._staged_charged(
                st, rw1, noise1, rw2p, noise2p, positions, public_keys1, cost, guarantee, eps, delta, query_hash, timing))

    def _staged_charged(self, st: Staged, rw1: Rewrite, noise1: NoisePlan, rw2p: Rewrite, noise2p: NoisePlan,
                        positions: list[int], public_keys1: list[tuple[Any, ...]] | None, cost: Cost,
                        guarantee: QueryGuarantee, eps: Fraction, delta: Fraction, query_hash: str, timing: str) -> Result:
        assert rw1.plan is not None and rw2p.plan is not None
        accounting = self.engine.policy.privacy.accounting
        outputs = rw2p.plan.outputs
        self._charge_cost(cost, guarantee, query_hash)
        spent = (f"dpsql: this query spent ε={float(guarantee.epsilon):g}, δ={float(guarantee.delta):.3g} in a staged release "
                 f"(2 releases, ε={float(eps):g} each)" + self._recorded_text())

        def work() -> Result:
            first = self._charged(rw1, rw1.plan, noise1, public_keys1)  # type: ignore[arg-type]
            keys = list(dict.fromkeys(tuple(row[p] for p in positions) for row in first.rows))
            keys = [k for k in keys if all(v is not None for v in k)]
            names, types = tuple(o.name for o in outputs), tuple(o.pg_type for o in outputs)
            if not keys:  # stage 1 released no key: the inner join keeps no group
                return Result(names, types, [], notices=[spent + self._remaining_text()], cost=cost)
            sql2 = stages.stage2_sql(st, keys)
            rw2 = rewrite(sql2, stages.declared(self.engine.catalog, st, keys), dialect=self.engine.backend.dialect)
            assert rw2.plan is not None
            noise2 = calibrate(rw2.plan, eps, delta, accounting, self.settings.partition_selection)
            if noise2.cost.amount > noise2p.cost.amount or noise2.cost.delta > noise2p.cost.delta:
                raise AssertionError("stage 2 would cost more than it was charged")  # cannot happen: fewer keys, same ε
            second = self._charged(rw2, rw2.plan, noise2, self._public_keys(rw2.plan))
            extra = [n for r in (first, second) for n in r.notices if not n.startswith("dpsql: this query spent")]
            return Result(second.columns, second.types, second.rows, notices=[spent + self._remaining_text(), *extra],
                          cost=cost)

        return self._shielded(shape_of(timing), work)

    def _composed(self, noises: list[NoisePlan], eps: Fraction, delta: Fraction) -> tuple[Cost, QueryGuarantee]:
        """The one charge of several releases, each at (ε, δ) = (``eps``, ``delta``): the sum of their
        costs, stated as (k·ε, k·δ) (basic composition; the ledger's own sum is tighter under zcdp)."""
        cost = Cost(self.engine.policy.privacy.accounting, sum((n.cost.amount for n in noises), Fraction(0)),
                    sum((n.cost.delta for n in noises), Fraction(0)))
        conversion = [n.conversion_delta for n in noises if n.conversion_delta is not None]
        k = len(noises)
        return cost, QueryGuarantee(eps * k, delta * k, sum(conversion, Fraction(0)) if conversion else None)

    def _explain_union(self, u: UnionQuery) -> list[str]:
        from dpsql.proxy.explain import explain_rows

        rws, noises, eps, delta = self._union_plans(u)
        lines = [f"dpsql set operation of {len(rws)} queries: {len(noises)} DP release(s), each at ε = {float(eps):g}, "
                 f"δ = {float(delta):.3g} (the statement's ε and δ split equally); the set operation runs over the "
                 "released rows (post-processing, free)"]
        for i, rw in enumerate(rws):
            lines.append(f"branch {i + 1}: {u.branches[i]}")
            lines += ["  " + line for line in explain_rows(rw, noises.get(i), self.engine.policy)]
        return lines

    def _union(self, u: UnionQuery) -> Result:
        """A set operation of queries: every private branch released as if sent alone at ε/k, δ/k,
        all charged at once (one ledger transaction) before any private row is read, and the set
        operation run over the released rows by the data-free post-processor. Replayed like any private query."""
        from dpsql.proxy.union_release import combine, validate

        rws, noises, eps, delta = self._union_plans(u)
        limits = self.engine.policy.limits
        answered: dict[int, Result] = {}  # public and free branches: their answers need no private row
        public_keys: dict[int, list[tuple[Any, ...]] | None] = {}
        for i, rw in enumerate(rws):
            if rw.plan is None:
                rs = self.backend.execute(rw.sql, timeout=limits.statement_timeout)
                answered[i] = Result(rs.columns, rs.types, rs.rows)
            elif i not in noises:
                answered[i] = self._free(rw, rw.plan)
            else:
                public_keys[i] = self._public_keys(rw.plan)
                self._validate(rw, rw.plan)
        types = unions.output_type([tuple(o.pg_type for o in rw.plan.outputs) if rw.plan is not None else answered[i].types
                                    for i, rw in enumerate(rws)])
        first = rws[0]
        names = [o.name for o in first.plan.outputs] if first.plan is not None else list(answered[0].columns)
        post_sql = unions.combine_sql(u, names)
        validate(self.engine.post, post_sql, types)
        if not noises:
            self.trail.kind = "public"
            return combine(self.engine.post, post_sql, names, types, [answered[i] for i in range(len(rws))], notices=[])
        cost, guarantee = self._composed(list(noises.values()), eps, delta)
        timing = "\n".join(_timing_text(rws[i]) for i in sorted(noises))
        query_hash = hashlib.sha256(timing.encode()).hexdigest()[:32]
        self.trail.kind, self.trail.noise, self.trail.query_hash = "private", next(iter(noises.values())), query_hash
        identity = ["union", u.tree.sql(dialect="postgres")]
        for i in sorted(noises):
            identity += [rws[i].dialect, rws[i].sql, repr(rws[i].plan), str(eps), str(delta), repr(noises[i].cost)]
        ticket = self.engine.replays.ticket_for(self.user, identity, cost, self.settings.post_key())
        with self.engine.admission.admit(self.user, wait=max(0.0, self._deadline - time.monotonic()), cancelled=self._canceled):
            return self._with_replay(ticket, guarantee, lambda: self._union_charged(
                rws, noises, answered, public_keys, cost, guarantee, eps, query_hash, timing, post_sql, names, types))

    def _union_charged(self, rws: list[Rewrite], noises: dict[int, NoisePlan], answered: dict[int, Result],
                       public_keys: dict[int, list[tuple[Any, ...]] | None], cost: Cost, guarantee: QueryGuarantee,
                       eps: Fraction, query_hash: str, timing: str, post_sql: str, names: list[str],
                       types: tuple[str, ...]) -> Result:
        from dpsql.proxy.union_release import combine

        self._charge_cost(cost, guarantee, query_hash)
        spent = (f"dpsql: this query spent ε={float(guarantee.epsilon):g}, δ={float(guarantee.delta):.3g} in "
                 f"{len(noises)} releases (ε={float(eps):g} each)" + self._recorded_text())

        def work() -> Result:
            results = []
            for i, rw in enumerate(rws):
                if i in answered:
                    results.append(answered[i])
                else:
                    assert rw.plan is not None
                    results.append(self._charged(rw, rw.plan, noises[i], public_keys[i]))
            extra = [n for r in results for n in r.notices if not n.startswith("dpsql: this query spent")]
            return combine(self.engine.post, post_sql, names, types, results,
                           notices=[spent + self._remaining_text(), *extra], cost=cost)

        return self._shielded(shape_of(timing), work)

    def _shielded(self, shape: str, work: Callable[[], Result]) -> Result:
        """Run ``work`` (the part after a charge) and answer — result or error — at the deadline
        the timing shield fixes now for ``shape``, before any private row is read."""
        deadline = self.engine.shield.begin(shape, time.perf_counter())
        self._client_canceled = False
        self._answer_at = deadline
        outcome: Result | Exception
        try:
            outcome = work()
        except QueryCanceled:
            if deadline is not None and not self._client_canceled:
                deadline.record_timeout()  # the statement timeout: answered when it fired
            self._answer_at = None
            raise
        except Exception as e:  # answered at the deadline like a result
            outcome = e
        try:
            if deadline is not None:
                deadline.wait()
        except Canceled:
            raise query_canceled("cancel") from None
        finally:
            self._answer_at = None
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def explain_bias(self, sql: str) -> Result:
        """``EXPLAIN (BIAS) sql``: a DP estimate of what ``sql`` loses to contribution bounding
        (:mod:`~dpsql.proxy.bias`), at ``dp.bias_epsilon`` and the session's δ, charged to the
        session's filters before any row is read, answered at the timing shield's deadline."""
        from dpsql.proxy import bias
        from dpsql.proxy.measures import measure

        rw, _ = self.plan(sql)
        bp = bias.build(rw, self.engine.policy, self.settings.bias_epsilon, self.settings.delta)
        self.trail.kind, self.trail.noise = "private", bp.noise
        self.engine.backend.validate(bp.sql)
        query_hash = hashlib.sha256(bp.sql.encode()).hexdigest()[:32]
        self.trail.query_hash = query_hash
        with self.engine.admission.admit(self.user, wait=max(0.0, self._deadline - time.monotonic()), cancelled=self._canceled):
            self._charge(bp.noise, query_hash)

            def work() -> Result:
                rs = self.backend.execute(bp.sql, timeout=self.engine.policy.limits.statement_timeout)
                noisy = measure(bp.noise, bp.measures, bias.exact_cells(bp, rs.columns, rs.rows))
                lines = bias.report(bp, bias.estimates(bp, noisy))
                return Result(("QUERY PLAN",), ("text",), [(line,) for line in lines], command="EXPLAIN",
                              notices=[self._cost_notice(bp.noise)], cost=bp.noise.cost)

            return self._shielded(shape_of(bp.sql), work)

    def _charged(
        self, rw: Rewrite, plan: ReleasePlan, noise: NoisePlan, public_keys: list[tuple[Any, ...]] | None
    ) -> Result:
        """Everything after the charge: the bounded SQL, then the release step (:mod:`~dpsql.proxy.release`)."""
        # Without partition selection the released cells are known now: draw and pad the noise
        # while the bounded SQL runs.
        ahead = release_step.start(plan, noise, public_keys)
        rs = self.backend.execute(rw.sql, timeout=self.engine.policy.limits.statement_timeout)
        out = release_step.finish(plan, noise, rs.columns, rs.rows, public_keys, self.engine.post, ahead=ahead,
                                  options=self.settings.release_options(),
                                  histograms=lambda q: self.backend.execute(q, timeout=self.engine.policy.limits.statement_timeout))
        return Result(
            tuple(o.name for o in plan.outputs),
            tuple(o.pg_type for o in plan.outputs),
            out.rows,
            notices=[self._cost_notice(noise), *out.notices],
            cost=noise.cost,
        )

    def _validate(self, rw: Rewrite, plan: ReleasePlan) -> None:
        """Checks that read no data, run before the charge so a query that could only fail is free:
        the bounded SQL binds on the engine, the query's constants evaluate, and the
        post-processing query binds over an empty noisy table. A pass is cached by the engine.
        The row counts of uncorrelated scalar subqueries read public tables only, which may change:
        they are checked on every execution (21000 before the charge, as PostgreSQL would fail)."""
        if plan.subquery_check_sql is not None:
            limits = self.engine.policy.limits
            check_counts(self.backend.execute(plan.subquery_check_sql, timeout=limits.statement_timeout).rows)
        if self.engine.validated(rw):
            return
        self.engine.backend.validate(rw.sql)
        for h in plan.histograms:  # quantiles: their bounded histogram queries bind before the charge too
            self.engine.backend.validate(h.sql)
        if plan.constants_sql is not None:
            try:
                self.backend.execute(plan.constants_sql, timeout=self.engine.policy.limits.statement_timeout)
            except DPSQLError:
                raise DataException(
                    "a constant in the query cannot be evaluated (for example an invalid date literal or an out-of-range cast)",
                    hint="fix the literal; no budget was spent",
                ) from None
        if plan.post_sql is not None:
            self.engine.post.run(NOISY_TABLE, plan.post_types, [[] for _ in plan.post_types], plan.post_sql)
        self.engine.mark_validated(rw)

    def _cost_notice(self, noise: NoisePlan) -> str:
        if noise.cost.amount == 0 and noise.cost.delta == 0:
            return f"dpsql: this query spent nothing (its answer follows from the policy alone){self._remaining_text()}"
        spent = f"dpsql: this query spent ε={float(noise.epsilon):g}, δ={float(noise.delta):.3g}"
        return spent + self._recorded_text() + self._remaining_text()

    def _recorded_text(self) -> str:
        """" (ledger: ρ=…, δ=…)": exactly what the charge of the running statement recorded."""
        receipt = self.trail.receipt
        if receipt is None:
            return ""
        cost = receipt.cost
        text = f" (ledger: {cost.symbol}={float(from_pico(cost.amount_pico)):.6g}"
        if cost.delta_atto:
            text += f", selection δ={float(from_atto(cost.delta_atto)):.3g}"
        return text + ")"

    def _remaining_text(self) -> str:
        """"; remaining for USER: ε=…, δ=…" from the ledger now ("" if it cannot be read)."""
        try:
            status = {s.scope: s for s in self.budget()}
        except DPSQLError:
            status = {}
        user = status.get("user")
        self.trail.remaining = user
        left = f"; remaining for {self.user}: ε={user.remaining_epsilon:.4g}" if user and user.remaining_epsilon is not None else ""
        if user and user.remaining_delta is not None:
            left += f", δ={float(user.remaining_delta):.3g}"
        return left

    def budget_query(self, sql: str) -> Result:
        """Answer a SELECT over the ``dpsql.budget`` view (no cost; reads only the ledger)."""
        from dpsql.proxy.budget_view import BUDGET_COLUMNS, budget_rows, rewrite_budget_query

        query = rewrite_budget_query(sql)
        rows = budget_rows(self.budget())
        data = [[r[i] for r in rows] for i in range(len(BUDGET_COLUMNS))]
        names, types, out = self.engine.post.run_typed("__dp_budget", BUDGET_COLUMNS, data, query)
        return Result(tuple(names), tuple(types), out)
