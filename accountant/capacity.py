"""What the ledgers can hold: policy budgets are checked against it at load, so a policy that
``dpsql check`` accepts can never make a ledger overflow.

Both ledgers keep every running sum as a signed 64-bit integer (SQLite ``INTEGER``, PostgreSQL
``bigint``): ρ (zcdp) or ε (basic) in 1e-12 units, δ in 1e-18 units, so at most
``LEDGER_MAX = 2**63 − 1`` units, i.e. about 9.22e6 of ρ or ε and 9.22 of δ.

A filter with a limit admits a charge only while ``spent + charge ≤ limit``, so its sum never
exceeds the limit; the sum that is *computed* before admission is at most ``limit + C`` where C is
the largest charge one query can carry (:func:`max_query_charge`). Requiring ``limit + C ≤
LEDGER_MAX`` for every limited filter (user, per-user, global, session caps) therefore covers a
whole window of maximal charges, however many queries fill it. Sums without a limit (the global
record of a policy with no ``[budget.global]``, the session of a user without a session cap, and
every session's δ) are recorded saturating at ``LEDGER_MAX``
(:meth:`~dpsql.accountant.ledger.Ledger.charge`); a saturated sum is above every limit a policy
can set, so it can only ever refuse more, never admit more. δ needs no check: the policy caps a
budget δ and a query δ at 0.1 (1e17 units each), far below ``LEDGER_MAX``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from dpsql.accountant.accounting import CONVERSION_DELTA_SHARE, accounting_mode
from dpsql.accountant.filters import budget_filter
from dpsql.accountant.units import PICO, to_atto_up, to_pico_up
from dpsql.errors import PolicyError

if TYPE_CHECKING:
    from dpsql.policy import Budget, Policy, PrivacySettings

LEDGER_MAX = 2**63 - 1  # SQLite INTEGER and PostgreSQL bigint


@dataclass(frozen=True)
class QueryCharge:
    """The largest charge one query can carry under a policy, in ledger units."""

    main: int  # ρ (zcdp) or ε (basic), 1e-12 units
    delta: int  # δ, 1e-18 units


def max_query_charge(privacy: PrivacySettings) -> QueryCharge:
    """The largest (main, δ) charge, in ledger units, of any query the policy admits.

    zcdp: the planner's cost is at most ρ_q = rho_for_epsilon(ε, δ_conv) with δ_conv ≤ δ, which is
    largest at (max_epsilon_per_query, max_delta_per_query) (monotone in both); basic: at most ε.
    The δ charged (partition selection) is at most the query's δ. Both rounded up as the ledger does.
    """
    eps, delta = privacy.max_epsilon_per_query, privacy.max_delta_per_query
    main = accounting_mode(privacy.accounting).largest_charge(eps, delta)
    return QueryCharge(to_pico_up(main), to_atto_up(delta))


def largest_budget_epsilon(privacy: PrivacySettings, delta: Fraction) -> Fraction:
    """The largest budget ε (with budget δ ``delta``), to 3 significant digits rounded down, that
    the ledgers can hold beside one maximal query charge."""
    room = LEDGER_MAX - max_query_charge(privacy).main
    if room <= 0:
        return Fraction(0)
    guess = accounting_mode(privacy.accounting).epsilon_of(Fraction(room, PICO), delta * CONVERSION_DELTA_SHARE)
    while guess > 0:
        nice = _round_down(guess)
        if _fits(privacy, nice, delta, room):
            return nice
        guess = nice * Fraction(999, 1000)
    return Fraction(0)


def _round_down(x: Fraction) -> Fraction:
    """``x`` rounded down to 3 significant decimal digits."""
    digits = len(str(int(x))) if x >= 1 else 1
    scale = Fraction(10) ** (digits - 3)
    return Fraction(int(x / scale)) * scale


def _fits(privacy: PrivacySettings, epsilon: Fraction, delta: Fraction, room: int) -> bool:
    from dpsql.policy import Budget

    f = budget_filter("user", privacy.accounting, Budget(epsilon, delta))
    return f.main is not None and f.main <= room


def check_ledger_capacity(policy: Policy) -> None:
    """Raise PolicyError (file, key, problem) unless every budget of ``policy`` fits the ledgers
    together with one maximal query charge (see the module docstring)."""
    privacy = policy.privacy
    fname = str(policy.file)
    charge = max_query_charge(privacy)
    if charge.main > LEDGER_MAX // 2:
        raise PolicyError(
            fname,
            "privacy.max_epsilon_per_query",
            f"({float(privacy.max_epsilon_per_query):g}) is more than the budget ledger can record for one query",
        )
    budgets: list[tuple[str, Budget, Fraction | None]] = [("budget", policy.budget, policy.session_epsilon)]
    if policy.global_budget is not None:
        budgets.append(("budget.global", policy.global_budget, None))
    for name, user in policy.users.items():
        budgets.append((f"users.{name}", user.budget, user.session_epsilon))
    for prefix, budget, session_cap in budgets:
        _check_budget(fname, prefix, privacy, budget, session_cap, charge)


def _check_budget(
    fname: str, prefix: str, privacy: PrivacySettings, budget: Budget, session_cap: Fraction | None, charge: QueryCharge
) -> None:
    room = LEDGER_MAX - charge.main
    limits = [("epsilon", budget_filter("user", privacy.accounting, budget))]
    if session_cap is not None:
        limits.append(("session_epsilon", budget_filter("session", privacy.accounting, budget, session_epsilon=session_cap)))
    for key, f in limits:
        if f.main is not None and f.main > room:
            value = budget.epsilon if key == "epsilon" else session_cap
            assert value is not None
            top = largest_budget_epsilon(privacy, budget.delta)
            raise PolicyError(
                fname,
                f"{prefix}.{key}",
                f"({float(value):g}) is more than the budget ledger can hold: the largest {key} it accepts at "
                f"delta = {float(budget.delta):g} is {float(top):g} (ledger sums are 64-bit integers of 1e-12 units)",
            )
