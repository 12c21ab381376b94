"""Privacy filters: a policy's (ε, δ) budgets as exact ledger limits, and budget reporting.

A query runs only if three filters admit it (DESIGN §1): the **session** (one connection), the
**user** (persistent, optionally replenished every window) and the **global** cap (all users
together, optional). Each filter limits two running sums kept by the ledger in integer units:
the main cost (ρ under zcdp, ε under basic; units of 1e-12) and δ (units of 1e-18). A filter
admits a query iff, for both sums, spent + cost ≤ limit; it stays valid when each query's ε is
chosen adaptively (fully adaptive composition: Feldman–Zrnic 2021 and Whitehouse–Ramdas–Rogers–Wu
2023 for zCDP filters, the latter also with approximate-zCDP δs; Rogers–Roth–Ullman–Vadhan 2016
for pure-DP basic composition), because the costs charged depend on the query and policy only,
never on data.

Limits from a budget (ε_B, δ_B) — the formulas a privacy engineer should audit:

* **zcdp**: ρ limit ρ_B = rho_for_epsilon(ε_B, δ_B/10) (CKS20, rounded down to the 1e-15 grid
  then to 1e-12 units); δ limit 0.9·δ_B for the sum of partition-selection δs. Every sequence of
  queries the filter admits is (ρ_B, Σδ_sel)-approximate-zCDP, hence
  (ε_B, δ_B/10 + 0.9·δ_B) = (ε_B, δ_B)-DP.
* **basic**: ε limit ε_B, δ limit δ_B (rounded down); basic composition gives (Σε, Σδ)-DP.
* **session**: the session ε cap (the user's ``session_epsilon``, possibly lowered by
  ``SET dp.session_epsilon``) converted the same way with the user's δ_B (zcdp: ρ_S =
  rho_for_epsilon(ε_S, δ_B/10)); the session has no δ limit of its own (the user's applies).
  No cap means no session limit.
* **windows**: a budget with ``window_seconds = w`` is replenished in fixed windows aligned to
  the Unix epoch: the window of time ``now`` starts at ⌊now/w⌋·w (computed in integer
  milliseconds) and the next replenish time is that start + w. Without a window the budget is
  for the lifetime of the ledger.

Reporting (``dpsql.budget``): spent ε is the CKS20 conversion of spent ρ at δ_B/10 under zcdp (the
plain sum under basic); remaining ε is the largest ε one more query could still use, i.e. CKS20 of
the remaining ρ at δ_B/10 (zcdp) or ε_limit − spent (basic). Under zcdp spent + remaining ε is more
than ε_B: zCDP composes ρ, not ε. Spent δ is the sum of partition-selection δs; remaining δ is the
δ limit minus it (under zcdp the other δ_B/10 is reserved for the conversion).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from dpsql.accountant.accounting import CONVERSION_DELTA_SHARE, accounting_mode
from dpsql.accountant.costs import Accounting
from dpsql.accountant.units import from_atto, from_pico, to_atto_down, to_pico_down
from dpsql.policy import Budget, Policy

Scope = Literal["session", "user", "global"]
__all__ = ["CONVERSION_DELTA_SHARE", "BudgetStatus", "FilterLimit", "ScopeLimits", "budget_filter", "limits_for", "report"]


@dataclass(frozen=True)
class FilterLimit:
    """One filter: exact integer limits, its replenish window, and the (ε, δ) it was derived from.

    ``main`` is in 1e-12 units of ρ (zcdp) or ε (basic), ``delta`` in 1e-18 units; None means
    unlimited. ``conversion_delta`` is the δ at which ρ is reported as ε (zcdp only).
    """

    scope: Scope
    accounting: Accounting
    main: int | None
    delta: int | None
    window_seconds: float | None
    epsilon: Fraction | None
    budget_delta: Fraction | None
    conversion_delta: Fraction | None

    def window(self, now: float) -> tuple[int, int]:
        """(window start, window length) in integer milliseconds; (0, 0) for a lifetime budget.

        Windows are fixed and aligned to the Unix epoch: start = ⌊now/w⌋·w.
        """
        if self.window_seconds is None:
            return 0, 0
        length = max(1, round(self.window_seconds * 1000))
        now_ms = int(Fraction(now) * 1000 // 1)
        return now_ms // length * length, length

    def next_replenish(self, now: float) -> float | None:
        """The Unix time at which this filter's window ends (None for a lifetime budget)."""
        start, length = self.window(now)
        if length == 0:
            return None
        return (start + length) / 1000.0


@dataclass(frozen=True)
class ScopeLimits:
    """The three filters a query must pass. ``global_`` is None when the policy has no global budget."""

    accounting: Accounting
    session: FilterLimit
    user: FilterLimit
    global_: FilterLimit | None

    def filters(self) -> tuple[FilterLimit, ...]:
        """The filters in checking order: session, user, global (when present)."""
        return (self.session, self.user) + ((self.global_,) if self.global_ is not None else ())


@dataclass(frozen=True)
class BudgetStatus:
    """One row of ``dpsql.budget``: spent and remaining budget of one filter.

    ε values are floats for display; ρ and δ are exact. ``remaining_*`` is None when unlimited.
    """

    scope: Scope
    accounting: Accounting
    spent_epsilon: float
    spent_delta: Fraction
    remaining_epsilon: float | None
    remaining_delta: Fraction | None
    spent_rho: Fraction | None
    remaining_rho: Fraction | None
    budget_epsilon: Fraction | None
    budget_delta: Fraction | None
    window_start: float | None
    next_replenish: float | None


def budget_filter(scope: Scope, accounting: Accounting, budget: Budget, *, session_epsilon: Fraction | None = None) -> FilterLimit:
    """The filter limit of a budget (see the module docstring for the formulas).

    For ``scope == "session"`` pass the user's budget (for δ_B) and the session ε cap; the
    session filter has no δ limit and no window.
    """
    if scope == "session":
        eps, window = session_epsilon, None
    else:
        eps, window = budget.epsilon, budget.window_seconds
    mode = accounting_mode(accounting)
    conv, chargeable = mode.filter_deltas(budget.delta)
    main = to_pico_down(mode.budget_amount(eps, conv)) if eps is not None else None
    delta_limit = to_atto_down(chargeable)
    if scope == "session":
        return FilterLimit(scope, accounting, main, None, None, eps, None, conv)
    return FilterLimit(scope, accounting, main, delta_limit, window, eps, budget.delta, conv)


def limits_for(policy: Policy, user: str, session_epsilon: Fraction | None = None) -> ScopeLimits:
    """The session, user and global filters for ``user`` under ``policy``.

    ``session_epsilon`` is a ``SET dp.session_epsilon`` value: it may lower the policy's session
    cap, never raise it. KeyError if the policy does not list the user.
    """
    up = policy.user(user)
    if up is None:
        raise KeyError(user)
    acc = policy.privacy.accounting
    caps = [c for c in (up.session_epsilon, session_epsilon) if c is not None]
    cap = min(caps) if caps else None
    session = budget_filter("session", acc, up.budget, session_epsilon=cap)
    user_f = budget_filter("user", acc, up.budget)
    glob = budget_filter("global", acc, policy.global_budget) if policy.global_budget is not None else None
    return ScopeLimits(acc, session, user_f, glob)


def _as_epsilon(limit: FilterLimit, main: Fraction) -> float:
    return accounting_mode(limit.accounting).epsilon_bound(main, limit.conversion_delta)


def report(limit: FilterLimit, spent_main: int, spent_delta: int, now: float) -> BudgetStatus:
    """The budget row of one filter given the ledger's spent sums (integer units) in its current window."""
    main = from_pico(spent_main)
    remaining_main = from_pico(max(0, limit.main - spent_main)) if limit.main is not None else None
    start, length = limit.window(now)
    return BudgetStatus(
        scope=limit.scope,
        accounting=limit.accounting,
        spent_epsilon=_as_epsilon(limit, main),
        spent_delta=from_atto(spent_delta),
        remaining_epsilon=_as_epsilon(limit, remaining_main) if remaining_main is not None else None,
        remaining_delta=from_atto(max(0, limit.delta - spent_delta)) if limit.delta is not None else None,
        spent_rho=accounting_mode(limit.accounting).rho(main),
        remaining_rho=accounting_mode(limit.accounting).rho(remaining_main) if remaining_main is not None else None,
        budget_epsilon=limit.epsilon,
        budget_delta=limit.budget_delta,
        window_start=start / 1000.0 if length else None,
        next_replenish=limit.next_replenish(now),
    )
