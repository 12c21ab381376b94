"""The public side of DP quantiles: exact quantile levels and the candidate grid.

Pure (no OpenDP, no data): the rewriter builds grids from declared bounds and the accountant's
mechanism (:mod:`dpsql.accountant.quantiles`) scores their candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

MAX_ALPHA_DENOMINATOR = 10**6  # q is exact with at most 6 decimal digits (0.999999)
MAX_CANDIDATES = 4096  # candidates per grid: the engine returns ≤ this many histogram rows per group
DEFAULT_CANDIDATES = 250  # target number of grid steps (≤ 251 candidates: each selection costs ~45 µs per candidate)


# ---------------------------------------------------------------------------------------------
# α and the grid


def alpha_fraction(q: object) -> Fraction:
    """The exact quantile level q ∈ [0, 1] as a Fraction with denominator ≤ 10^6.

    Accepts an int, a Fraction, a Decimal or a decimal string (the SQL literal's text); a float is
    taken by its shortest repr (0.95 → 19/20). Raises ValueError outside [0, 1] or when q needs a
    finer denominator (more than 6 decimal digits).
    """
    if isinstance(q, bool):
        raise ValueError("the quantile level must be a number")
    if isinstance(q, float):
        if not math.isfinite(q):
            raise ValueError("the quantile level must be finite")
        q = repr(q)
    try:
        a = Fraction(Decimal(q)) if isinstance(q, str | Decimal) else Fraction(q)  # type: ignore[arg-type]
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ValueError("the quantile level must be a number between 0 and 1") from exc
    if not 0 <= a <= 1:
        raise ValueError("the quantile level must be between 0 and 1")
    if a.denominator > MAX_ALPHA_DENOMINATOR:
        raise ValueError("the quantile level may have at most 6 decimal digits")
    return a


def _nice_step(span: Fraction, k: int, integral: bool) -> Fraction:
    """The smallest step of the form {1, 2, 5}·10^e with span/step ≤ k (a whole number when integral)."""
    raw = span / k
    if integral and raw <= 1:
        return Fraction(1)
    e = math.floor(math.log10(float(raw))) - 1
    while True:
        for m in (1, 2, 5):
            step = Fraction(m) * (Fraction(10) ** e)
            if step >= raw and (not integral or step.denominator == 1):
                return step
        e += 1


@dataclass(frozen=True)
class QuantileGrid:
    """A public grid of candidates ``lower + i·step``, i = 0…size−1, all within [lower, upper].

    Built only from the policy (declared bounds) and the column's type, never from data.
    """

    lower: Fraction
    step: Fraction
    size: int

    def candidate(self, i: int) -> Fraction:
        """The i-th candidate (exact)."""
        if not 0 <= i < self.size:
            raise IndexError("candidate index out of range")
        return self.lower + i * self.step

    @property
    def upper(self) -> Fraction:
        """The last candidate (≤ the declared upper bound)."""
        return self.lower + (self.size - 1) * self.step

    def candidates(self) -> list[Fraction]:
        """Every candidate in increasing order."""
        return [self.lower + i * self.step for i in range(self.size)]

    @staticmethod
    def from_bounds(lower: object, upper: object, *, integral: bool, target: int = DEFAULT_CANDIDATES) -> QuantileGrid:
        """The grid for declared bounds [lower, upper]: at most ``target`` + 1 candidates, a {1,2,5}·10^e
        step (a whole number when ``integral``: integers, days, seconds), first candidate = lower.

        Raises ValueError when lower > upper or ``target`` is outside 2…MAX_CANDIDATES.
        """
        lo, hi = Fraction(lower), Fraction(upper)  # type: ignore[arg-type]
        if lo > hi:
            raise ValueError("lower bound above upper bound")
        if not 2 <= target < MAX_CANDIDATES:
            raise ValueError("the number of candidates must be between 2 and 4096")
        if lo == hi:
            return QuantileGrid(lo, Fraction(1), 1)
        step = _nice_step(hi - lo, target, integral)
        size = int((hi - lo) // step) + 1
        return QuantileGrid(lo, step, size)


