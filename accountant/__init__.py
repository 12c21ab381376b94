"""dpsql.accountant: privacy math, secure noise and the durable budget ledger.

Modules, each with one job (import them directly; this package imports nothing on its own, so
reading the ledger does not load OpenDP):

* :mod:`~dpsql.accountant.units` — exact rounding: the 1e-15 calibration grid, pico/atto ledger units.
* :mod:`~dpsql.accountant.calibration` — pure functions: CKS20 ρ ↔ (ε, δ), Gaussian/Laplace maps
  and scales, 95% error half-widths.
* :mod:`~dpsql.accountant.mechanisms` — ``make_…`` constructors: OpenDP discrete Gaussian/Laplace
  and threshold (partition selection) mechanisms, each with its privacy map.
* :mod:`~dpsql.accountant.costs` — :class:`Cost`, what one query is charged.
* :mod:`~dpsql.accountant.planner` — :func:`calibrate`: release plan + (ε, δ) → :class:`NoisePlan`.
* :mod:`~dpsql.accountant.noise` — :func:`release`: the only code that sees exact values and noise.
* :mod:`~dpsql.accountant.filters` — policy budgets → session/user/global filter limits; reporting.
* :mod:`~dpsql.accountant.ledger` / :mod:`~dpsql.accountant.sqlite_ledger` — atomic, durable,
  fail-closed charging.

The engine's order of operations: ``calibrate`` → ``ledger.charge`` (durable) → run the SQL →
``release`` → post-processing.
"""
