"""Statistical audits of the real noise path (security.md §4: T2 distribution audit, T4 partition
selection, T6 timing).

Every test here fails falsely with probability ≤ 1e-6 (stated per test), and each comes with a
negative control — a deliberately broken mechanism the same test must flag — so none of them
is a test that cannot fail.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from accountant_plans import COUNT, UNITS, build_plan
from scipy.stats import beta, binom

from dpsql.accountant import mechanisms as mech
from dpsql.accountant import noise
from dpsql.accountant.calibration import cks20_delta
from dpsql.accountant.planner import calibrate
from dpsql.rewriter.plan import Statistic

pytestmark = pytest.mark.slow  # statistical audits: run in CI, ~25 s in all

ALPHA = 1e-6  # false-failure probability allowed for each test as a whole
N = 100_000  # draws per side (neighbouring database); half selects the event, half certifies it
N_CONTROL = 200_000  # draws per side for the Gaussian negative control (power: see its test)
EPS_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
SUM5_INT = Statistic("a1", "sum", "SUM(x)", 5)  # integer sum with L∞ = 5


# ---------------------------------------------------------------------------------------------
# T2: event selection on half A, Clopper–Pearson certification on half B


def _cp_lower(k: int, n: int, a: float) -> float:
    return 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))


def _cp_upper(k: int, n: int, a: float) -> float:
    return 1.0 if k == n else float(beta.isf(a, k + 1, n - k))


@dataclass(frozen=True)
class Finding:
    violated: bool
    margin: float  # certified lower bound of P[S|D] − e^ε'·P[S|D'] − δ(ε'); > 0 is a violation
    event: str


def audit(
    x: np.ndarray,
    y: np.ndarray,
    delta_of: Callable[[float], float],
    eps_grid: tuple[float, ...],
    alpha: float,
) -> Finding:
    """Look for an (ε', δ(ε')) violation between output samples x ~ M(D) and y ~ M(D').

    Half A of each sample picks, among threshold events {out ≥ k} / {out ≤ k} in both directions
    and the ε' of ``eps_grid``, the one with the largest estimated excess
    P[S|·] − e^ε'·P[S|·'] − δ(ε'). Half B certifies that single event with one-sided
    Clopper–Pearson bounds at ``alpha``/2 each, so a mechanism that meets its claimed privacy
    profile δ(·) is flagged with probability ≤ ``alpha``.
    """
    n = len(x) // 2
    xa, xb, ya, yb = np.sort(x[:n]), x[n:], np.sort(y[:n]), y[n:]
    lo, hi = np.quantile(np.concatenate([xa, ya]), [0.0005, 0.9995])
    ks = np.arange(math.floor(lo), math.ceil(hi) + 1)
    best: tuple[float, str, int, float, np.ndarray, np.ndarray] | None = None
    for pa, qa, pb, qb in ((xa, ya, xb, yb), (ya, xa, yb, xb)):
        for side in ("ge", "le"):
            if side == "ge":
                cp, cq = n - np.searchsorted(pa, ks, "left"), n - np.searchsorted(qa, ks, "left")
            else:
                cp, cq = np.searchsorted(pa, ks, "right"), np.searchsorted(qa, ks, "right")
            p, q = cp / n, cq / n
            for e in eps_grid:
                score = p - 2 * np.sqrt(p * (1 - p) / n) - math.exp(e) * (q + 2 * np.sqrt(q * (1 - q) / n)) - delta_of(e)
                i = int(np.argmax(score))
                if best is None or score[i] > best[0]:
                    best = (float(score[i]), side, int(ks[i]), e, pb, qb)
    assert best is not None
    _, side, k, e, pb, qb = best
    m = len(pb)
    kp = int(np.sum(pb >= k) if side == "ge" else np.sum(pb <= k))
    kq = int(np.sum(qb >= k) if side == "ge" else np.sum(qb <= k))
    margin = _cp_lower(kp, m, alpha / 2) - math.exp(e) * _cp_upper(kq, m, alpha / 2) - delta_of(e)
    return Finding(margin > 0, margin, f"out {'≥' if side == 'ge' else '≤'} {k} at ε'={e}")


def _neighbours_through_release(np_, c: int, s: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One release() call over 2N public groups: N copies of D (count c, sum s) then N of D' (one
    more unit contributing the maximum to each statistic)."""
    exact = {"a0": [c] * N + [c + 1] * N, "a1": [s] * N + [s + 5] * N}
    out = noise.release(np_, exact)
    assert out.kept == tuple(range(2 * N))
    res = {}
    for col in ("a0", "a1"):
        v = np.asarray(out.values[col], dtype=np.int64)
        res[col] = (v[:N], v[N:])
    return res


def test_t2_zcdp_discrete_gaussian() -> None:
    """T2 under zcdp, through release(): each statistic (a count, L∞ = 1, and a sum, L∞ = 5) is
    audited against the CKS20 privacy profile δ(ε') of its own charged ρ — stronger than the
    query-level (ε, δ). Two certifications at α/2 each: false failure ≤ 1e-6.

    Negative control: the count with σ halved (true ρ ×4) but claimed at the original ρ, with
    N_CONTROL = 2·10^5 draws per side. Measured margin ≈ +0.022 ± 0.0023 (sd), i.e. it is missed
    with probability far below 1e-6; at N = 10^5 it would be ≈ 4.7 sd, too close.
    """
    plan = build_plan((COUNT, SUM5_INT))
    np_ = calibrate(plan, Fraction(1), Fraction(1, 10**6), "zcdp")
    samples = _neighbours_through_release(np_, c=40, s=200)
    for col in ("a0", "a1"):
        rho = np_.stat(col).cost
        x, y = samples[col]
        finding = audit(x, y, lambda e, r=rho: cks20_delta(r, e), EPS_GRID, ALPHA / 2)
        assert not finding.violated, (col, finding)
    count = np_.stat("a0")
    z = np.asarray(mech.make_discrete_gaussian(count.scale / 2).sample(2 * N_CONTROL), dtype=np.int64)
    finding = audit(40 + z[:N_CONTROL], 41 + z[N_CONTROL:], lambda e: cks20_delta(count.cost, e), EPS_GRID, ALPHA)
    assert finding.violated, finding


def test_t2_basic_discrete_laplace() -> None:
    """T2 under basic accounting, through release(): pure ε_i per statistic (δ = 0 at ε' = ε_i).
    Two certifications at α/2 each: false failure ≤ 1e-6. Negative control: the count's scale
    halved (true ε doubled), measured margin ≈ +0.26, far from 0."""
    plan = build_plan((COUNT, SUM5_INT))
    np_ = calibrate(plan, Fraction(1), Fraction(0), "basic")
    samples = _neighbours_through_release(np_, c=40, s=200)
    for col in ("a0", "a1"):
        eps_i = float(np_.stat(col).cost)
        x, y = samples[col]
        finding = audit(x, y, lambda e: 0.0, (eps_i,), ALPHA / 2)
        assert not finding.violated, (col, finding)
    count = np_.stat("a0")
    z = np.asarray(mech.make_discrete_laplace(count.scale / 2).sample(2 * N), dtype=np.int64)
    finding = audit(40 + z[:N], 41 + z[N:], lambda e: 0.0, (float(count.cost),), ALPHA)
    assert finding.violated, finding


# ---------------------------------------------------------------------------------------------
# T4: a key held by one unit is released with probability ≤ δ


def _release_bound(trials: int, p: float) -> int:
    """Largest release count with P[Binomial(trials, p) > bound] ≤ 1e-6 (≈ p·n + 4.9σ)."""
    return int(binom.isf(ALPHA, trials, p))


@pytest.mark.parametrize("accounting", ["zcdp", "basic"])
def test_t4_partition_selection(accounting: str) -> None:
    """T4: N = 10^5 independent one-unit keys in ONE threshold call; the count of released keys must
    stay within the binomial 1−1e-6 quantile of N·δ (δ = the charged selection δ ≤ 1e-3). False
    failure ≤ 1e-6. A threshold bug that triples δ is always caught (negative control)."""
    plan = build_plan((COUNT, UNITS), selection=True, units_column="u")
    delta = Fraction(1, 100) if accounting == "zcdp" else Fraction(1, 1000)  # δ_sel = 1e-3 either way
    np_ = calibrate(plan, Fraction(1), delta, accounting)  # type: ignore[arg-type]
    sel = np_.selection
    assert sel is not None and sel.delta <= Fraction(1, 1000)
    out = noise.release(np_, {"a0": [1] * N}, units=[1] * N)
    bound = _release_bound(N, float(sel.delta))
    assert len(out.kept) <= bound, (len(out.kept), bound)
    # a key held by many units is released
    big = sel.threshold + 20 * (sel.error95 + 1)
    out = noise.release(np_, {"a0": [big] * 100}, units=[big] * 100)
    assert len(out.kept) == 100
    # negative control: a threshold lowered until the exact one-unit release probability is ≥ 3δ
    make = mech.make_gaussian_threshold if accounting == "zcdp" else mech.make_laplace_threshold
    tau = sel.threshold
    while _exact_release_probability(accounting, sel.scale, tau) < 3 * float(sel.delta):
        tau -= 1
    broken = make(sel.scale, tau).release(dict.fromkeys(range(N), 1))
    assert len(broken) > bound, (len(broken), bound)


def _exact_release_probability(accounting: str, scale: float, tau: int) -> float:
    """P[1 + Z ≥ τ] for the discrete Gaussian (σ) or discrete Laplace (t) noise Z."""
    need = tau - 1
    ks = np.arange(-int(60 * scale) - 10, int(60 * scale) + 11)
    w = np.exp(-(ks.astype(float) ** 2) / (2 * scale * scale)) if accounting == "zcdp" else np.exp(-np.abs(ks) / scale)
    return float(w[ks >= need].sum() / w.sum())


# ---------------------------------------------------------------------------------------------
# T6: the padded noise phase does not track |noise|


def test_t6_padded_timing_does_not_track_noise() -> None:
    """T6: 400 padded release() calls; |Pearson r(|noise|, duration)| must stay < 0.25. Under
    independence r·√(n−1) is ≈ N(0, 1), so the false-failure rate is P(|N| > 4.99) < 1e-6.
    Negative control: the same statistic over the *unpadded* durations of a sampler whose time
    grows with |noise| (a naive loop) is flagged."""
    np_ = calibrate(build_plan((COUNT,)), Fraction(1), Fraction(1, 10**6), "zcdp")
    n = 400
    mags, durs = [], []
    for _ in range(n):
        t = time.perf_counter()
        out = noise.release(np_, {"a0": [0] * 8})
        durs.append(time.perf_counter() - t)
        mags.append(sum(abs(v) for v in out.values["a0"]))
    r = statistics.correlation(mags, durs)
    assert abs(r) < 0.25, r
    assert statistics.quantiles(durs, n=100)[-1] < 4 * noise.PAD_QUANTUM  # padded to one quantum

    def naive(scale: float) -> int:  # time grows with |draw|: the kind of sampler R9 forbids
        z = np.random.default_rng().geometric(1 - math.exp(-1 / scale)) - 1
        for _ in range(z * 2000):
            pass
        return int(z)

    mags2, durs2 = [], []
    for _ in range(n):
        t = time.perf_counter()
        mags2.append(naive(8.0))
        durs2.append(time.perf_counter() - t)
    assert abs(statistics.correlation(mags2, durs2)) >= 0.25
