"""What one query is charged: a :class:`Cost` in the policy's accounting mode."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from dpsql.accountant.accounting import accounting_mode
from dpsql.accountant.units import to_atto_up, to_pico_up

Accounting = Literal["zcdp", "basic"]


@dataclass(frozen=True)
class Cost:
    """A query's privacy cost, exact.

    ``amount`` is ρ (zero-concentrated DP) when ``accounting == "zcdp"`` and pure ε when
    ``accounting == "basic"``; ``delta`` is the approximate-DP δ the query spends on top of
    that (partition selection only; 0 otherwise). Both are the mechanisms' own privacy maps
    applied to the plan's sensitivities, never a target value.
    """

    accounting: Accounting
    amount: Fraction
    delta: Fraction = Fraction(0)

    def __post_init__(self) -> None:
        accounting_mode(self.accounting)  # ValueError for an unknown mode
        if self.amount < 0 or self.delta < 0:
            raise ValueError("a privacy cost cannot be negative")

    @classmethod
    def zero(cls, accounting: Accounting) -> Cost:
        """A cost of nothing (a plan that releases no noisy statistic)."""
        return cls(accounting, Fraction(0), Fraction(0))

    @property
    def amount_pico(self) -> int:
        """``amount`` in ledger units of 1e-12, rounded up."""
        return to_pico_up(self.amount)

    @property
    def delta_atto(self) -> int:
        """``delta`` in ledger units of 1e-18, rounded up."""
        return to_atto_up(self.delta)

    @property
    def symbol(self) -> str:
        """``"ρ"`` or ``"ε"``: the name of ``amount`` for messages."""
        return accounting_mode(self.accounting).symbol
