"""Exact rounding of privacy parameters: the calibration grid and the ledger's integer units.

Every rounding here goes in the safe direction, and the direction is part of the function name:

* a *cost* (what a query is charged) is rounded **up** — ``*_up`` —, so the ledger never
  records less than the mechanism's privacy map;
* a *budget* (what a filter admits) is rounded **down** — ``*_down`` —, so the ledger never
  admits more than the policy states.

Units:

* calibration grid ``GRID = 1e-15``: privacy maps (ρ, ε) are reported as multiples of it;
* ``PICO = 10**12``: ρ (zcdp) and ε (basic) in the ledger are integers in units of 1e-12;
* ``ATTO = 10**18``: δ in the ledger is an integer in units of 1e-18.
"""

from __future__ import annotations

from fractions import Fraction

GRID_DENOMINATOR = 10**15
GRID = Fraction(1, GRID_DENOMINATOR)
PICO = 10**12
ATTO = 10**18


def _ceil(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


def _floor(x: Fraction) -> int:
    return x.numerator // x.denominator


def ceil_to_grid(x: Fraction) -> Fraction:
    """The smallest multiple of ``GRID`` (1e-15) that is ≥ ``x`` (exact)."""
    return Fraction(_ceil(Fraction(x) * GRID_DENOMINATOR), GRID_DENOMINATOR)


def floor_to_grid(x: Fraction) -> Fraction:
    """The largest multiple of ``GRID`` (1e-15) that is ≤ ``x`` (exact)."""
    return Fraction(_floor(Fraction(x) * GRID_DENOMINATOR), GRID_DENOMINATOR)


def to_pico_up(x: Fraction) -> int:
    """A cost ρ or ε as an integer number of 1e-12 units, rounded up (never under-charges)."""
    x = Fraction(x)
    if x < 0:
        raise ValueError("a privacy cost cannot be negative")
    return _ceil(x * PICO)


def to_pico_down(x: Fraction) -> int:
    """A budget ρ or ε as an integer number of 1e-12 units, rounded down (never over-admits)."""
    x = Fraction(x)
    if x < 0:
        raise ValueError("a privacy budget cannot be negative")
    return _floor(x * PICO)


def to_atto_up(x: Fraction) -> int:
    """A cost δ as an integer number of 1e-18 units, rounded up."""
    x = Fraction(x)
    if x < 0:
        raise ValueError("a privacy cost cannot be negative")
    return _ceil(x * ATTO)


def to_atto_down(x: Fraction) -> int:
    """A budget δ as an integer number of 1e-18 units, rounded down."""
    x = Fraction(x)
    if x < 0:
        raise ValueError("a privacy budget cannot be negative")
    return _floor(x * ATTO)


def from_pico(n: int) -> Fraction:
    """The exact value of ``n`` pico units."""
    return Fraction(n, PICO)


def from_atto(n: int) -> Fraction:
    """The exact value of ``n`` atto units."""
    return Fraction(n, ATTO)
