"""The sequential plan on one-bound methods, vectorized: simulated vote streams, for tests and
benchmarks (benchmarks/sequential_sim.py).

The radius formulas here are copies of the plugins' rules (rs, pprs: sigma Phi^-1(p); uniform,
ssn: 2 lambda (p - 1/2)) for simulation only: certify never uses them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from certifier.sequential import CONTINUE, SequentialPlan, plausible_rate


def gaussian_radius_of(sigma: float, scale: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """rs/pprs: sigma * Phi^-1(p_lower), -inf (abstain) below 1/2; as ``gaussian_certificate``."""
    from scipy.stats import norm

    def radius_of(lower):
        lower = np.asarray(lower, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(lower >= 0.5, sigma * norm.ppf(lower) * scale, -np.inf)

    return radius_of


def l1_radius_of(lam: float) -> Callable[[np.ndarray], np.ndarray]:
    """uniform/ssn: 2 lambda (p_lower - 1/2), abstaining unless p_lower > 1/2."""

    def radius_of(lower):
        lower = np.asarray(lower, dtype=np.float64)
        return np.where(lower > 0.5, 2.0 * lam * (lower - 0.5), -np.inf)

    return radius_of


def earliest_proof(plan: SequentialPlan, radius_of, successes, trials, level) -> np.ndarray:
    """Smallest total t' in (t, budget] at which the level after ``level`` would be proved
    if every vote from now on agreed; 0 (no constraint) when not even the budget would."""
    s = np.asarray(successes, dtype=np.float64)
    t = np.asarray(trials, dtype=np.int64)
    budget = int(plan.budget)
    following = plan.following(level)
    reachable = radius_of(plan.bounds.lower(s + (budget - t), budget, plan.alpha)) >= following
    lo, hi = t.copy(), np.full(t.shape, budget, dtype=np.int64)
    while np.any(reachable & (hi - lo > 1)):
        open_ = reachable & (hi - lo > 1)
        mid = (lo + hi) // 2
        proved = radius_of(plan.bounds.lower(s + (mid - t), mid, plan.alpha)) >= following
        hi = np.where(open_ & proved, mid, hi)
        lo = np.where(open_ & ~proved, mid, lo)
    return np.where(reachable, hi, 0)


def simulate_one_bound(plan: SequentialPlan, p, radius_of, rng: np.random.Generator):
    """Run the plan on independent Bernoulli(p) vote streams, one per entry of ``p``.

    ``radius_of(lower)`` maps a lower bound on the top class's probability to the
    method's radius (-inf to abstain), vectorized (``gaussian_radius_of``). Looks happen
    only where the plan says, so one binomial draw per chunk is exact. The decisions
    are those of :class:`SequentialCertification` on the same counts.

    Returns (level index, samples used, reason, running-max lower bound at the stop).
    """
    p = np.asarray(p, dtype=np.float64)
    size = p.shape
    budget = int(plan.budget)
    s = np.zeros(size)
    t = np.zeros(size, dtype=np.int64)
    best = np.zeros(size)
    level_out = np.full(size, -1)
    reason_out = np.zeros(size, dtype=np.int64)
    active = np.ones(size, dtype=bool)
    target = plan.next_trials(t, earliest_proof(plan, radius_of, s, t, np.full(size, -1)))
    while np.any(active):
        idx = np.flatnonzero(active)
        s[idx] += rng.binomial(target[idx] - t[idx], p[idx])
        t[idx] = target[idx]
        si, ti = s[idx], t[idx]
        best[idx] = np.maximum(best[idx], plan.bounds.lower(si, ti, plan.alpha))
        now = best[idx]
        reach = np.maximum(now, plan.bounds.lower(si + (budget - ti), budget, plan.alpha))
        rate = plausible_rate(si, ti, plan.futility)
        plausible = np.maximum(now, plan.bounds.lower(si + rate * (budget - ti), budget, plan.alpha))
        level, reason = plan.decide(radius_of(now), radius_of(reach), radius_of(plausible), ti)
        done = reason != CONTINUE
        level_out[idx[done]] = level[done]
        reason_out[idx[done]] = reason[done]
        active[idx[done]] = False
        going = idx[~done]
        if going.size:
            earliest = earliest_proof(plan, radius_of, s[going], t[going], level[~done])
            target[going] = plan.next_trials(t[going], earliest)
    return level_out, t, reason_out, best
