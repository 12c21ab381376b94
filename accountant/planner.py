"""Calibration of a release plan: from the rewriter's sensitivities and the query's (ε, δ) to noise scales.

:func:`calibrate` is pure and deterministic (no data, no randomness): EXPLAIN and the engine call it
with the same inputs and get the same :class:`NoisePlan`. The query alone is (ε, δ)-DP (DESIGN §1):

**zcdp.** With partition selection, δ_sel = δ/10 goes to the threshold mechanism and
δ_conv = δ − δ_sel to the zCDP→DP conversion; otherwise δ_conv = δ. The query's zCDP budget is
ρ_q = rho_for_epsilon(ε, δ_conv). It is split in proportion to ``Statistic.weight`` among the
statistics that need their own noise, plus one share for partition selection (weight 1, or the
weight of the units statistic it replaces — see below). Statistic i gets the discrete Gaussian
σ_i = gaussian_sigma(L0, L∞_i, ρ_i), with L0 = ``plan.max_groups``. Selection gets the Gaussian
threshold mechanism with σ_sel = gaussian_sigma(L0, 1, ρ_sel) and the smallest integer threshold
whose OpenDP map has δ ≤ δ_sel. The cost charged is (Σ of each mechanism's own map, δ of the
selection's map): ρ-zCDP composition gives Σρ ≤ ρ_q, hence (ε, δ_conv + δ_sel)-DP by CKS20.

**basic.** ε is split by weight the same way; statistic i gets the discrete Laplace with scale
laplace_scale(L0, L∞_i, ε_i), selection the Laplace threshold mechanism with δ_sel = δ. The cost is
(Σ ε maps, δ of the selection's map); basic composition gives (Σε, δ_sel)-DP.

**Units statistic.** Under partition selection the threshold mechanism already releases a noisy
count of distinct units per kept group. A statistic of kind ``"units"`` named by
``plan.units_column`` (COUNT(DISTINCT unit)) is therefore not noised again: its released value is
the selection's noisy count (post-processing), and the selection's share takes that statistic's
weight. Its reported scale and error are the selection's.

**Two constructions of partition selection.** (a) — the one above — thresholds a separate noisy
distinct-unit count (L∞ = 1) and noises every statistic besides. (b) thresholds a released
COUNT(*) statistic's *own* noisy value (OpenDP's way): that statistic's noise is the threshold
mechanism's, calibrated to the statistic's own sensitivity — d_in = (L0', ‖Δ‖, L∞) with
L∞ = min(max_rows, max_contributions), ‖Δ‖ = ⌈√Δ₂²⌉ (Gaussian) or Δ₁ (Laplace) from
``sensitivity_norms`` — and it takes its own share plus the selection's; the other statistics
keep exactly the shares they have under (a). τ is the smallest threshold whose OpenDP map (at
τ − 1, opendp#2922) has δ ≤ δ_sel; the cost is still Σ of the maps, in both modes. A group that
exists only because of one unit has COUNT(*) ≤ L∞ (the clamped partial), which is what the map
assumes. Candidates: COUNT(*) statistics (``Statistic.counts_rows``) when COUNT(DISTINCT unit)
is not itself released (else (a)'s threshold releases it for free and (b) would noise it again).
COUNT(x), FILTERed counts and sums are never thresholded: they can be below a group's unit
count (NULLs, the filter), so the comparison below would not hold for them.

**Choosing the construction.** Thresholding rows instead of units raises τ by about the factor
L∞ (a unit can add L∞ rows), so (b) can suppress groups that (a) releases — measured: with
max_rows 40 at ε = 1, groups of ~130 rows were all lost. The planner is data-independent, so it
compares the two in the unit (b) thresholds: every COUNT(*) group has at least as many rows as
distinct units (each kept (unit, group) adds ≥ 1 row). With the release point
R = τ + error95 (a group whose exact thresholded count is ≥ R is released with probability
≥ 97.5%), (b) is chosen iff

  (1) it lowers the COUNT's noise scale (same noise family, so its variance and 95% error), and
  (2) R_b (rows) ≤ R_a (units),

so no group that (a) releases reliably is lost to (b), whatever its rows per unit. Otherwise (a)
is kept. In practice (b) wins under ``basic`` when the L1 cap k is below about 2·L0 (the unit
threshold pays Δ₁ = L0 for the selection alone, COUNT(*) pays min(L0·L∞, k)), and in both modes
when k = 1; under zcdp with L∞ ≫ 1 (a) stays (τ_b/τ_a ≈ L∞/√2). The choice, both release points
and the construction not chosen (``NoisePlan.selection_alternative``, never charged or sampled)
are shown by EXPLAIN.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction

from dpsql.accountant.accounting import SELECTION_DELTA_SHARE, AccountingMode, accounting_mode
from dpsql.accountant.calibration import ScaleOutOfRange
from dpsql.accountant.costs import Accounting, Cost
from dpsql.accountant.mechanisms import AdditiveMechanism, ThresholdMechanism
from dpsql.accountant.quantiles import QuantileNoise, plan_quantile
from dpsql.errors import InvalidParameterValue, UnsupportedQuery
from dpsql.rewriter.plan import QuantileStatistic, ReleasePlan, Statistic

__all__ = ["SELECTION_DELTA_SHARE", "SELECTION_PREFERENCES", "NoisePlan", "SelectionNoise", "StatisticNoise", "calibrate"]
_MAX_THRESHOLD = 2**62


@dataclass(frozen=True)
class StatisticNoise:
    """How one statistic column is noised: by ``measurement``, the object whose privacy map gave
    ``cost`` and whose sampler the noise step calls (the mechanism charged is the one that samples).

    ``scale`` and ``error95`` are in integer units (σ for the Gaussian, t for the Laplace);
    ``released_scale`` and ``released_error95`` are the same in released units (× ``grid``).
    ``error95`` is a b with P(|noise| ≤ b) ≥ 0.95. ``from_selection`` marks the units statistic
    whose value is the selection's noisy count: its measurement is the selection's threshold
    mechanism and its ``cost`` is 0 (it is the selection's).
    """

    column: str
    measurement: AdditiveMechanism | ThresholdMechanism
    error95: int
    grid: Fraction
    l0: int
    linf: int
    cost: Fraction
    from_selection: bool = False
    l1: int | None = None  # the L1 bound on one unit's total change (max_contributions), when tighter

    @property
    def mechanism(self) -> str:
        """The measurement's name (discrete_gaussian, discrete_laplace, or a threshold's)."""
        return self.measurement.name

    @property
    def scale(self) -> float:
        """The measurement's noise scale, in integer units."""
        return self.measurement.scale

    @property
    def released_scale(self) -> Fraction:
        """The noise scale in the statistic's released units (scale × grid)."""
        return Fraction(self.scale) * self.grid

    @property
    def released_error95(self) -> Fraction:
        """The 95% error half-width in released units (error95 × grid)."""
        return self.error95 * self.grid


@dataclass(frozen=True)
class SelectionNoise:
    """DP partition selection: ``measurement`` (a threshold mechanism over distinct-unit counts per
    group), whose map gave ``cost`` and ``delta`` and whose ``release`` the noise step calls."""

    measurement: ThresholdMechanism
    l0: int
    cost: Fraction  # ρ (zcdp) or ε (basic) of its map
    delta: Fraction  # δ of its map
    error95: int  # of the noisy thresholded counts
    # construction (b): the COUNT(*) statistic whose own exact values are thresholded (and whose
    # released values are the noisy counts); None: (a), the distinct-unit count (units_column)
    column: str | None = None
    linf: int = 1  # d_in L∞ of the map: 1 for unit counts, min(max_rows, max_contributions) for (b)
    lp: int | None = None  # d_in norm of the map (None: l0·linf, tightened by OpenDP)

    @property
    def construction(self) -> str:
        """``"units"`` (a separate distinct-unit count is thresholded) or ``"count"`` (COUNT(*)'s own value)."""
        return "units" if self.column is None else "count"

    @property
    def release_point(self) -> int:
        """threshold + error95: a group whose exact thresholded count (units for (a), rows for
        (b)) is at least this is released with probability ≥ 97.5% (P(Z ≥ −error95) ≥ 0.975)."""
        return self.threshold + self.error95

    @property
    def mechanism(self) -> str:
        """The measurement's name (gaussian_threshold or laplace_threshold)."""
        return self.measurement.name

    @property
    def scale(self) -> float:
        """The measurement's noise scale, in integer units."""
        return self.measurement.scale

    @property
    def threshold(self) -> int:
        """Groups whose noisy distinct-unit count is ≥ this are released."""
        return self.measurement.threshold


@dataclass(frozen=True)
class NoisePlan:
    """Everything the noise step needs, derived from the plan and (ε, δ) only.

    ``epsilon``/``delta`` are the query's stated guarantee; ``cost`` is what the ledger is
    charged. Under zcdp, ``conversion_delta`` is the δ of the CKS20 conversion and
    ``epsilon_bound`` = cks20_epsilon(cost.amount, conversion_delta) ≤ ``epsilon``.
    """

    accounting: Accounting
    stats: tuple[StatisticNoise, ...]
    selection: SelectionNoise | None
    units_column: str | None
    epsilon: Fraction
    delta: Fraction
    cost: Cost
    conversion_delta: Fraction | None
    epsilon_bound: float
    quantiles: tuple[QuantileNoise, ...] = ()  # DP selections (quantiles, MIN/MAX), in plan order
    # the partition-selection construction considered but not chosen (for EXPLAIN); never charged
    # or sampled
    selection_alternative: SelectionNoise | None = None

    def stat(self, column: str) -> StatisticNoise:
        """The noise of the statistic called ``column`` (KeyError if none)."""
        for s in self.stats:
            if s.column == column:
                return s
        raise KeyError(column)


def _check_request(epsilon: Fraction, delta: Fraction, mode: AccountingMode, selection: bool) -> None:
    if epsilon <= 0:
        raise InvalidParameterValue("dp.epsilon must be greater than 0", hint="SET dp.epsilon = 0.5")
    if not 0 <= delta < 1:
        raise InvalidParameterValue("dp.delta must be in [0, 1)", hint="SET dp.delta = 1e-7")
    if delta == 0 and (mode.needs_delta or selection):
        why = "zCDP accounting" if mode.needs_delta else "grouping by keys without declared values"
        raise InvalidParameterValue(f"dp.delta must be greater than 0 for {why}", hint="SET dp.delta = 1e-7")


def _units_stat(plan: ReleasePlan) -> Statistic | None:
    if not plan.partition_selection:
        return None
    if plan.units_column is None:
        raise ValueError("a plan with partition selection must name its units column")
    for s in plan.stats:
        if s.column == plan.units_column:
            if s.kind != "units" or s.max_contribution != 1:
                raise ValueError("the units column must be a 'units' statistic with max_contribution 1")
            return s
    return None


def _positive_weight(s: Statistic | QuantileStatistic) -> int:
    if isinstance(s.weight, bool) or not isinstance(s.weight, int) or s.weight < 1:
        raise ValueError(f"statistic {s.column}: weight must be a positive integer")
    return s.weight


def _threshold_for(
    make: Callable[[float, int], ThresholdMechanism],
    scale: float,
    l0: int,
    delta_target: Fraction,
    guess: int = 2,
    linf: int = 1,
    lp: int | None = None,
) -> ThresholdMechanism:
    """The mechanism with the smallest integer threshold whose map δ at d_in (l0, lp, linf) is
    ≤ delta_target.

    The map's δ falls as the threshold rises, so the answer is found by galloping out from
    ``guess`` (any integer; a good one saves OpenDP map evaluations) to a bracket, then bisecting.
    The result does not depend on the guess. Thresholds start at linf + 1 (the map is evaluated
    at threshold − 1, which OpenDP requires to be ≥ linf).
    """
    floor = linf + 1

    def ok(t: int) -> bool:
        return make(scale, t).map(l0, linf, lp)[1] <= delta_target

    # Invariant: lo is floor − 1 (below every threshold) or fails; hi passes.
    g = min(max(floor, int(guess)), _MAX_THRESHOLD)
    step = 1
    if ok(g):
        hi = g
        lo = hi - step
        while lo >= floor and ok(lo):
            hi = lo
            step *= 2
            lo = hi - step
        lo = max(lo, floor - 1)
    else:
        lo = g
        hi = lo + step
        while not ok(hi):
            lo = hi
            step *= 2
            hi = lo + step
            if hi > _MAX_THRESHOLD:
                raise UnsupportedQuery("dp.delta is too small for partition selection", hint="raise dp.delta")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return make(scale, hi)


def _threshold_guess(
    mode: AccountingMode | Accounting, scale: float, l0: int, delta_target: Fraction, linf: int = 1
) -> int:
    """A rough threshold for the bracket search: the tail of one noise draw at δ/l0."""
    if isinstance(mode, str):
        mode = accounting_mode(mode)
    tail = math.log(max(l0, 1) / float(delta_target)) if delta_target > 0 else 50.0
    width = mode.tail_width(scale, tail)
    return int(min(_MAX_THRESHOLD, linf + l0 + width)) if math.isfinite(width) else linf + 1


@functools.lru_cache(maxsize=1024)
def _selection(
    accounting: Accounting,
    l0: int,
    share: Fraction,
    delta_sel: Fraction,
    linf: int = 1,
    lp: int | None = None,
    column: str | None = None,
) -> SelectionNoise:
    """Calibrate the threshold mechanism: scale from the ρ/ε share, threshold from δ_sel.

    Distinct-unit counts (``column`` None) use d_in (l0, l0, 1); a thresholded COUNT(*) passes its
    own ``linf`` and norm ``lp`` (construction (b)). The returned cost is the map's, ≤ ``share``.
    """
    mode = accounting_mode(accounting)
    make: Callable[[float, int], ThresholdMechanism] = mode.threshold
    scale = mode.selection_scale(l0, share) if lp is None else mode.norm_scale(l0, linf, lp, share)
    guess = _threshold_guess(mode, scale, l0, delta_sel, linf)
    for _ in range(64):
        mech = _threshold_for(make, scale, l0, delta_sel, guess, linf, lp)
        guess = mech.threshold
        cost, delta = mech.map(l0, linf, lp)
        if cost <= share:
            break
        scale = math.nextafter(scale, math.inf) * (1 + 1e-12)  # OpenDP's float map rounds outward
    else:  # pragma: no cover - OpenDP's map is within a few ulps of the exact one
        raise RuntimeError("could not calibrate partition selection")
    return SelectionNoise(mech, l0, cost, delta, mode.error95(mech.scale), column, linf, lp)


def _at_least(accounting: Accounting, sel: SelectionNoise, min_units: int) -> SelectionNoise:
    """``sel`` with its threshold raised to ``min_units`` when that is higher (same scale). A higher
    threshold releases a subset of the groups, so its map's δ is no larger; cost and δ are the new
    mechanism's own map."""
    if min_units <= sel.threshold:
        return sel
    mech = accounting_mode(accounting).threshold(sel.measurement.scale, min_units)
    cost, delta = mech.map(sel.l0, sel.linf, sel.lp)
    return replace(sel, measurement=mech, cost=cost, delta=delta)


def _own_count_candidate(plan: ReleasePlan, units: Statistic | None) -> Statistic | None:
    """The statistic construction (b) may threshold: the first COUNT(*) of kept rows
    (``Statistic.counts_rows``), when the distinct-unit count is not itself released (then (a)'s
    threshold already releases it and (b) would have to noise it again)."""
    if not plan.partition_selection:
        return None
    if units is not None and any(units.column in a.stats for a in plan.aggregates):
        return None
    for s in plan.stats:
        if s.counts_rows and s.kind == "count" and s.grid == 1 and (units is None or s.column != units.column):
            return s
    return None


def _count_selection(
    accounting: Accounting, mode: AccountingMode, c: Statistic, l0: int, k: int | None, share: Fraction, delta_sel: Fraction
) -> SelectionNoise:
    """Construction (b): the threshold mechanism on COUNT(*)'s own values. L∞ = max_rows, or the L1
    cap when smaller; the norm from ``sensitivity_norms`` (l0 cells, that L∞, the L1 bound)."""
    l1 = c.l1 if k is not None else None
    linf = min(c.max_contribution, l1) if l1 is not None else c.max_contribution
    lp = mode.threshold_norm(l0, linf, l1)
    return _selection(accounting, l0, share, delta_sel, linf, lp, c.column)


SELECTION_PREFERENCES = ("auto", "units", "count")


def calibrate(
    plan: ReleasePlan, epsilon: Fraction, delta: Fraction, accounting: Accounting, preference: str = "auto"
) -> NoisePlan:
    """Noise scales, thresholds and the exact cost that make this query alone (ε, δ)-DP.

    ``preference`` (``dp.partition_selection``) picks the partition-selection construction:
    ``"auto"`` by the rule above, ``"units"`` always (a), ``"count"`` (b) whenever the plan has a
    candidate COUNT(*) and it calibrates (else (a)) — for analysts who know their groups are large.
    Every choice is a valid construction with the same guarantee; only accuracy and suppression differ.

    Pure and deterministic. The cost is the sum of the mechanisms' own privacy maps applied to
    the plan's sensitivities (never the target), and is guaranteed ≤ the target: Σρ ≤ ρ_q under
    zcdp, Σε ≤ ε under basic, selection δ ≤ δ_sel. Raises InvalidParameterValue for a bad (ε, δ)
    and UnsupportedQuery when the needed noise is beyond the samplers' range.
    """
    if preference not in SELECTION_PREFERENCES:
        raise ValueError(f"preference must be one of {SELECTION_PREFERENCES}")
    eps, dlt = Fraction(epsilon), Fraction(delta)
    selection_needed = plan.partition_selection
    mode = accounting_mode(accounting)
    _check_request(eps, dlt, mode, selection_needed)
    l0 = plan.max_groups
    if isinstance(l0, bool) or not isinstance(l0, int) or l0 < 1:
        raise ValueError("plan.max_groups must be a positive integer")
    # max_contributions (k rows per unit across all groups, enforced in the bounded SQL before the
    # per-(unit, group) partials) means a unit touches at most k groups: L0 = min(max_groups, k)
    # for the additive statistics and the selection; a statistic's own L1 bound (Statistic.l1)
    # gives the tighter Δ₁ / Δ₂ (sensitivity_norms). Quantile histograms keep max_groups (their
    # bounded queries do not apply the row cap).
    k = plan.max_contributions
    l0_stats = min(l0, k) if k is not None else l0
    units = _units_stat(plan)
    own = [s for s in plan.stats if units is None or s.column != units.column]
    sel_weight = 0
    if selection_needed:
        sel_weight = _positive_weight(units) if units is not None else 1
    total_weight = sum(_positive_weight(s) for s in own) + sel_weight + sum(_positive_weight(q) for q in plan.quantiles)

    split = mode.query_budget(eps, dlt, selection_needed)
    budget, delta_sel, delta_conv = split.amount, split.selection_delta, split.conversion_delta

    if total_weight == 0:  # nothing to noise (should not happen)
        return NoisePlan(accounting, (), None, None, eps, dlt, Cost.zero(accounting), delta_conv, 0.0)

    try:
        additive: dict[str, StatisticNoise] = {}
        for s in own:
            share = budget * _positive_weight(s) / total_weight
            l1 = s.l1 if k is not None else None
            mech = mode.additive(l0_stats, s.max_contribution, share, l1)
            cost = mech.map(l0_stats, s.max_contribution, l1)  # the charge is this measurement's own map
            if cost > share:  # pragma: no cover - guaranteed by gaussian_sigma / laplace_scale
                raise RuntimeError("calibration produced a map above its share")
            additive[s.column] = StatisticNoise(
                s.column, mech, mode.error95(mech.scale), s.grid, l0_stats, s.max_contribution, cost, l1=l1
            )

        selection: SelectionNoise | None = None
        alternative: SelectionNoise | None = None
        if selection_needed:
            # (a): a separate threshold on the distinct-unit count, with its own share
            selection = _selection(accounting, l0_stats, budget * sel_weight / total_weight, delta_sel)
            # min_privacy_units_per_group counts units: it needs (a), with its threshold raised to m
            cand = _own_count_candidate(plan, units) if plan.min_units is None and preference != "units" else None
            if plan.min_units is not None:
                selection = _at_least(accounting, selection, plan.min_units)
            if cand is not None:
                # (b): COUNT(*)'s own value thresholded; it takes its share and the selection's
                share = budget * (_positive_weight(cand) + sel_weight) / total_weight
                try:
                    own_count: SelectionNoise | None = _count_selection(
                        accounting, mode, cand, l0_stats, k, share, delta_sel
                    )
                except (UnsupportedQuery, ScaleOutOfRange):  # (b) out of range: (a) stands
                    own_count = None
                if own_count is not None and (
                    preference == "count" or _prefer_own_count(own_count, selection, additive[cand.column])
                ):
                    selection, alternative = own_count, selection
                else:
                    alternative = own_count

        stats: list[StatisticNoise] = []
        spent = Fraction(0)
        for s in own:
            if selection is not None and s.column == selection.column:
                l1 = s.l1 if k is not None else None
                stats.append(
                    StatisticNoise(
                        s.column, selection.measurement, selection.error95, s.grid, l0_stats, s.max_contribution,
                        Fraction(0), from_selection=True, l1=l1,
                    )
                )
                continue
            stats.append(additive[s.column])
            spent += additive[s.column].cost

        sel_delta = Fraction(0)
        if selection is not None:
            spent += selection.cost
            sel_delta = selection.delta
            if units is not None and selection.column is None:
                stats.append(
                    StatisticNoise(
                        units.column,
                        selection.measurement,
                        selection.error95,
                        units.grid,
                        l0_stats,
                        1,
                        Fraction(0),
                        from_selection=True,
                    )
                )
        quantiles: list[QuantileNoise] = []
        for q in plan.quantiles:
            share = budget * _positive_weight(q) / total_weight
            qn = plan_quantile(
                q.column, q.target, q.alpha, candidates=q.candidates, max_rows=q.max_contribution, l0=l0,
                accounting=accounting, loss=share,
            )
            if qn.cost > share:  # pragma: no cover - guaranteed by calibrate_quantile
                raise RuntimeError("calibration produced a map above its share")
            spent += qn.cost
            quantiles.append(qn)
    except ScaleOutOfRange as e:
        raise UnsupportedQuery(
            "this query needs more noise than dpsql can sample",
            hint="raise dp.epsilon, or query a column with narrower declared bounds",
        ) from e

    if spent > budget or sel_delta > delta_sel:  # pragma: no cover - defensive
        raise RuntimeError("calibrated cost exceeds the query's budget")
    order = {s.column: i for i, s in enumerate(plan.stats)}
    stats.sort(key=lambda n: order[n.column])
    bound = mode.epsilon_bound(spent, delta_conv)
    return NoisePlan(
        accounting=accounting,
        stats=tuple(stats),
        selection=selection,
        units_column=plan.units_column if selection_needed else None,
        epsilon=eps,
        delta=dlt,
        cost=Cost(accounting, spent, sel_delta),
        conversion_delta=delta_conv,
        epsilon_bound=bound,
        quantiles=tuple(quantiles),
        selection_alternative=alternative,
    )


def _prefer_own_count(own: SelectionNoise, units: SelectionNoise, additive: StatisticNoise) -> bool:
    """The rule between the constructions (module docstring, "Choosing the construction"): (b)
    only when it lowers the COUNT's noise scale (same noise family, so its variance and error)
    AND needs no more rows than (a) needs units to release a group with probability ≥ 97.5%
    (every COUNT(*) group has at least as many rows as units)."""
    return own.scale < additive.scale and own.release_point <= units.release_point
