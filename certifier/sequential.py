"""Sequential certification: anytime-valid bounds and the rule that says when to stop.

A confidence sequence (L_t) for a Bernoulli probability p holds at every sample size at
once: P(p >= L_t for all t) >= 1 - alpha. The sampler may look after every chunk and
stop whenever the data say so, and the bound at the stopping time is still valid. A
fixed-n Clopper-Pearson bound does not have that property: recomputed after every chunk,
it crosses a level that p does not reach far more often than alpha.

Construction (SPEC, "Sequential certification"). For a prior pi on [0, 1] fixed in
advance, the mixture of likelihood ratios

    M_t(p) = integral of prod_i q^x_i (1 - q)^(1 - x_i) / (p^x_i (1 - p)^(1 - x_i)) pi(dq)

is, for each fixed p, a non-negative martingale with mean 1 when p is the truth. By
Ville's inequality P(exists t: M_t(p) >= 1/alpha) <= alpha, so the p with
M_t(p) >= 1/alpha may be excluded at every t at once. After S successes in t trials
M_t(p) = C_t / (p^S (1 - p)^(t - S)) with C_t = integral of q^S (1 - q)^(t - S) pi(dq),
whatever the prior: the prior only sets the constant C_t, and M_t falls on (0, S/t]
and rises on [S/t, 1) (M_t(S/t) <= 1 because C_t is at most the largest likelihood).
So the excluded p below S/t form an interval (0, L_t), and L_t is the root of

    h(u) = S u + (t - S) log(1 - e^u) = log C_t + log alpha,   u = log p.

h is increasing and concave in u below log(S/t), so Newton's method started to the left
of the root stays to its left: every iterate is a valid, smaller bound, and the last one
is checked against the rounding error of the evaluation (``_lower_end``). For Beta
priors (and mixtures of them) C_t is a ratio of Beta functions.

Each end is its own one-sided (1 - alpha) sequence: a lower end of p uses the prior for
p, an upper end of p is one minus the lower end of 1 - p under the same prior for
1 - p. A prior that favours values near 1 therefore tightens lower bounds of large
probabilities (the top class) and upper bounds of small ones (the runner-up), which is
where certificates need them. Beta(1/2, 1/2) is symmetric and gives SPEC's two-sided
sequence.

What is here: the sequences (:class:`BetaMixture`, and :class:`FinalLook`, which adds a
fixed-n look at the budget); the stopping rule (:class:`SequentialPlan`); the engine's
side, one input at a time for any method (:class:`SequentialCertification`, which asks
the method's own ``certify`` for certificates from substituted bounds); a vectorized
copy of the same decisions for one-bound methods (:func:`simulate_one_bound`, for tests
and benchmarks). The two-bound Gaussian radius (:func:`two_bound_gaussian_certificate`)
is a certificate rule like the others and lives in :mod:`certifier.methods`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from scipy.special import betaln, logsumexp

from .methods import Certificate, SmoothingMethod, Votes, two_bound_gaussian_certificate
from .stats import clopper_pearson_lower_array, gaussian_quantile

_NEWTON_STEPS = 80


# -- confidence sequences ----------------------------------------------------------


class ConfidenceSequence:
    """Anytime-valid one-sided bounds for a Bernoulli probability.

    ``lower(s, t, alpha)`` is below p at every t simultaneously with probability
    >= 1 - alpha, and ``upper`` is above p with probability >= 1 - alpha. Arguments
    broadcast as numpy arrays; counts may be fractional (the stopping rule projects
    counts forward); results are float64.
    """

    name: str = "confidence-sequence"

    def lower(self, successes, trials, alpha: float):
        raise NotImplementedError

    def upper(self, successes, trials, alpha: float):
        raise NotImplementedError

    def settings(self) -> dict:
        return {"name": self.name}


@dataclass(frozen=True)
class BetaMixture(ConfidenceSequence):
    """Mixture-martingale confidence sequence with prior sum_j w_j Beta(a_j, b_j).

    ``components`` holds (weight, a, b) triples with positive weights summing to at
    most 1 (a smaller sum only loosens the bounds). The prior is on the probability
    being bounded towards 1: p for lower ends, 1 - p for upper ends.
    """

    components: tuple[tuple[float, float, float], ...] = ((1.0, 0.5, 0.5),)

    def __post_init__(self):
        components = tuple(tuple(float(v) for v in c) for c in self.components)
        if not components or any(len(c) != 3 for c in components):
            raise ValueError("a Beta mixture needs (weight, a, b) components")
        for weight, a, b in components:
            if not (weight > 0 and a > 0 and b > 0 and math.isfinite(a + b + weight)):
                raise ValueError(f"Beta mixture component {(weight, a, b)}: weight, a and b must be positive")
        if sum(w for w, _, _ in components) > 1 + 1e-12:
            raise ValueError("Beta mixture weights must sum to at most 1")
        object.__setattr__(self, "components", components)

    @property
    def name(self) -> str:  # type: ignore[override]
        if len(self.components) == 1:
            _, a, b = self.components[0]
            return f"beta-mixture Beta({a:g}, {b:g})"
        return "beta-mixture " + " + ".join(f"{w:g} Beta({a:g}, {b:g})" for w, a, b in self.components)

    def settings(self) -> dict:
        return {"name": "beta-mixture", "components": [list(c) for c in self.components]}

    def log_constant(self, successes, trials) -> np.ndarray:
        """log C_t = log sum_j w_j B(S + a_j, t - S + b_j) / B(a_j, b_j)."""
        s = np.asarray(successes, dtype=np.float64)
        f = np.asarray(trials, dtype=np.float64) - s
        terms = [math.log(w) + betaln(s + a, f + b) - betaln(a, b) for w, a, b in self.components]
        if len(terms) == 1:
            return terms[0]
        return logsumexp(np.stack(np.broadcast_arrays(*terms)), axis=0)

    def log_evidence(self, p, successes, trials) -> np.ndarray:
        """log M_t(p) of the lower-end martingale: p is excluded where it is >= log(1/alpha)."""
        s = np.asarray(successes, dtype=np.float64)
        f = np.asarray(trials, dtype=np.float64) - s
        p = np.asarray(p, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_likelihood = np.where(s > 0, s * np.log(p), 0.0) + np.where(f > 0, f * np.log1p(-p), 0.0)
        return self.log_constant(s, s + f) - log_likelihood

    def lower(self, successes, trials, alpha: float):
        return _lower_end(self, successes, trials, alpha)

    def upper(self, successes, trials, alpha: float):
        t = np.asarray(trials, dtype=np.float64)
        complement = _lower_end(self, t - np.asarray(successes, dtype=np.float64), t, alpha)
        # 1 - x rounds to nearest; one ulp up keeps the upper end on the safe side
        result = np.minimum(np.nextafter(1.0 - np.asarray(complement), 2.0), 1.0)
        return float(result) if np.ndim(result) == 0 else result


@dataclass(frozen=True)
class FinalLook(ConfidenceSequence):
    """A confidence sequence up to a known budget, with a fixed-n look at the budget itself.

    Before the budget the bounds are ``cs``'s at (1 - share) * alpha; at exactly
    ``budget`` trials the lower (upper) end is also the Clopper-Pearson bound at
    share * alpha, and the better of the two is used. Valid on 1..budget by the union
    bound: the sequence fails somewhere with probability <= (1 - share) * alpha, the one
    look at the fixed count ``budget`` with probability <= share * alpha. It gives back
    most of the fixed-n bound's width for inputs that use the whole budget, at the price
    of a slightly smaller alpha everywhere else. Past the budget only ``cs``'s bound is
    used (the fixed-n look belongs to exactly ``budget`` trials).
    """

    cs: ConfidenceSequence
    budget: int
    share: float = 0.5

    def __post_init__(self):
        if not 0 < self.share < 1:
            raise ValueError("share must be in (0, 1)")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.cs.name} + Clopper-Pearson at {self.budget} (share {self.share:g})"

    def settings(self) -> dict:
        return {"name": "final-look", "cs": self.cs.settings(), "budget": int(self.budget), "share": self.share}

    def lower(self, successes, trials, alpha: float):
        base = self.cs.lower(successes, trials, (1 - self.share) * alpha)
        at_budget = np.asarray(trials) == self.budget
        if not np.any(at_budget):
            return base
        fixed = _cp_lower(successes, trials, self.share * alpha)
        result = np.where(at_budget, np.maximum(base, fixed), base)
        return float(result) if np.ndim(result) == 0 else result

    def upper(self, successes, trials, alpha: float):
        base = self.cs.upper(successes, trials, (1 - self.share) * alpha)
        at_budget = np.asarray(trials) == self.budget
        if not np.any(at_budget):
            return base
        t = np.asarray(trials, dtype=np.float64)
        fixed = np.nextafter(1.0 - _cp_lower(t - np.asarray(successes, dtype=np.float64), t, self.share * alpha), 2.0)
        result = np.where(at_budget, np.minimum(base, np.minimum(fixed, 1.0)), base)
        return float(result) if np.ndim(result) == 0 else result


def _cp_lower(successes, trials, alpha: float) -> np.ndarray:
    """Clopper-Pearson's lower end, vectorized, for counts that may be projected (fractional)."""
    # the checked bound: beta.ppf alone answers too high at some counts (stats.clopper_pearson_lower)
    return clopper_pearson_lower_array(successes, trials, alpha)


#: SPEC's construction: the Beta(1/2, 1/2) mixture, symmetric.
JEFFREYS = BetaMixture()
#: The default, chosen on the simulations in docs/results-sequential.md: most of its
#: mass near 1, where certificates need tight lower bounds (and, for upper ends, near 0).
TAIL_PRIOR = BetaMixture(((1.0, 1.0, 0.1),))


def _lower_end(cs: BetaMixture, successes, trials, alpha: float):
    """Largest p <= S/t found with M_t(p) >= 1/alpha, checked with a rounding margin; 0 if S = 0."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if np.ndim(successes) == 0 and np.ndim(trials) == 0:
        return _lower_end_scalar(cs, float(successes), float(trials), alpha)
    s, t = np.broadcast_arrays(np.asarray(successes, dtype=np.float64), np.asarray(trials, dtype=np.float64))
    s, t = s.astype(np.float64), t.astype(np.float64)
    if np.any(~np.isfinite(s)) or np.any(~np.isfinite(t)) or np.any(s < 0) or np.any(s > t):
        raise ValueError("successes must be between 0 and trials")
    out = np.zeros(s.shape, dtype=np.float64)
    live = s > 0
    if np.any(live):
        s_, f_ = s[live], t[live] - s[live]
        target = cs.log_constant(s_, s_ + f_) + math.log(alpha)  # h(u) <= target  <=>  M_t >= 1/alpha
        # h(u) <= S u, so u = target / S starts at or left of the root
        u = target / s_
        for _ in range(_NEWTON_STEPS):
            one_minus = -np.expm1(u)
            with np.errstate(divide="ignore", invalid="ignore"):
                h = s_ * u + np.where(f_ > 0, f_ * np.log(one_minus), 0.0)
                slope = s_ - np.where(f_ > 0, f_ * np.exp(u) / one_minus, 0.0)
                step = (target - h) / slope
            step = np.where(np.isfinite(step) & (step > 0), step, 0.0)
            u = u + step
            if not np.any(step > 4e-16 * np.abs(u)):
                break
        out[live] = _verified(s_, f_, np.exp(u), target)
    return out


def _verified(s: np.ndarray, f: np.ndarray, p: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Move p down until h(p) is below the target by more than the rounding error of h."""
    for _ in range(100):
        with np.errstate(divide="ignore", invalid="ignore"):
            success_term = s * np.log(p)
            failure_term = np.where(f > 0, f * np.log1p(-p), 0.0)
        h = success_term + failure_term
        margin = 1e-12 * (1.0 + np.abs(success_term) + np.abs(failure_term) + np.abs(target))
        bad = ~(h <= target - margin)
        if not np.any(bad):
            return p
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = s / p - np.where(f > 0, f / (1.0 - p), 0.0)
        step = np.where(np.isfinite(slope) & (slope > 0), 4.0 * margin / slope, p / 2)
        p = np.where(bad, np.maximum(p - step - 4.0 * np.spacing(p), 0.0), p)
    raise ArithmeticError("confidence bound did not verify")  # pragma: no cover


def _lower_end_scalar(cs: BetaMixture, s: float, t: float, alpha: float) -> float:
    """``_lower_end`` for one count, in Python floats (the engine asks one bound at a time)."""
    if not (math.isfinite(s) and math.isfinite(t) and 0 <= s <= t):
        raise ValueError("successes must be between 0 and trials")
    if s == 0:
        return 0.0
    f = t - s
    terms = [math.log(w) + float(betaln(s + a, f + b)) - float(betaln(a, b)) for w, a, b in cs.components]
    top = max(terms)
    target = top + math.log(sum(math.exp(x - top) for x in terms)) + math.log(alpha)
    u = target / s
    for _ in range(_NEWTON_STEPS):
        if f == 0:
            break
        one_minus = -math.expm1(u)
        if not one_minus > 0:
            break
        h = s * u + f * math.log(one_minus)
        slope = s - f * math.exp(u) / one_minus
        step = (target - h) / slope if slope > 0 else 0.0
        if not (step > 0 and math.isfinite(step)):
            break
        u += step
        if step <= 4e-16 * abs(u):
            break
    p = math.exp(u)
    for _ in range(100):
        success_term = s * math.log(p) if p > 0 else -math.inf
        failure_term = f * math.log1p(-p) if f > 0 else 0.0
        margin = 1e-12 * (1.0 + abs(success_term) + abs(failure_term) + abs(target))
        if success_term + failure_term <= target - margin:
            return p
        slope = s / p - (f / (1.0 - p) if f > 0 else 0.0)
        step = 4.0 * margin / slope if slope > 0 and math.isfinite(slope) else p / 2
        p = max(p - step - 4.0 * math.ulp(p), 0.0)
    raise ArithmeticError("confidence bound did not verify")  # pragma: no cover


def plausible_rate(successes, trials, level: float, side: str = "upper"):
    """A fixed-n Clopper-Pearson bound at ``level``: the rate the futility rule projects.

    It only decides when to give up on a level, never what is certified, so it need
    not hold under optional stopping; a tight bound here saves samples.
    """
    from scipy.stats import beta

    s = np.asarray(successes, dtype=np.float64)
    t = np.asarray(trials, dtype=np.float64)
    with np.errstate(all="ignore"):
        if side == "upper":
            return np.where(s < t, beta.ppf(1.0 - level, s + 1.0, np.maximum(t - s, 1e-300)), 1.0)
        return np.where(s > 0, beta.ppf(level, np.maximum(s, 1e-300), t - s + 1.0), 0.0)


# -- the stopping rule ----------------------------------------------------------------

CONTINUE, TOP_LEVEL, UNREACHABLE, RULED_OUT, BUDGET = 0, 1, 2, 3, 4
REASONS = {CONTINUE: "continue", TOP_LEVEL: "top level proved", UNREACHABLE: "next level unreachable",
           RULED_OUT: "next level ruled out", BUDGET: "budget spent"}


@dataclass(frozen=True)
class SequentialPlan:
    """When to stop sampling one input, given the levels a user reports.

    ``levels`` are radii, ascending (the summary grid, or the one ``--radius``); the
    result's radius is the largest level the anytime-valid bounds prove, never an
    interpolation. ``budget`` is the most estimation samples per vote group (``-n``).
    Sampling stops as soon as the answer on this grid is decided:

    - the top level is proved;
    - the next level cannot be proved within the budget even if every remaining vote
      went the best way;
    - the next level is ruled out: with the remaining votes at the rate of a
      ``futility``-level Clopper-Pearson bound on the votes so far, the budget would
      still not prove it;
    - the budget is spent.

    Bounds: ``cs`` (a confidence sequence) at (1 - final_share) * alpha, and at exactly
    the budget also Clopper-Pearson at final_share * alpha (:class:`FinalLook`); with
    final_share 0 the sequence alone. ``bounds`` is the combination.

    Only what is proved depends on the bounds' validity; the other rules decide how
    much to spend, so ``futility`` trades certified accuracy for forward passes and
    never touches soundness. Level -1 is "no level": abstain certain when the rules
    above stop there.

    Chunks: the first look is after ``first_chunk`` samples; later looks at ``growth``
    times the samples so far, but never before the first count at which the next level
    could be proved (if every vote from now on agreed; a level no count could prove sets
    no such floor), and never past the budget. Every look is rounded up to a multiple of
    ``granularity`` (the engine's batch: whole batches keep the noise streams the same
    however the chunks fall), or is the budget itself.
    """

    levels: tuple[float, ...]
    budget: int
    alpha: float
    cs: ConfidenceSequence = TAIL_PRIOR
    final_share: float = 0.1
    futility: float = 0.2
    first_chunk: int = 64
    growth: float = 1.25
    granularity: int = 1
    bounds: ConfidenceSequence = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        levels = tuple(float(r) for r in self.levels)
        if not levels or any(not math.isfinite(r) or r < 0 for r in levels):
            raise ValueError("levels must be finite radii >= 0")
        if list(levels) != sorted(set(levels)):
            raise ValueError("levels must be distinct and ascending")
        object.__setattr__(self, "levels", levels)
        if int(self.budget) < 1:
            raise ValueError("the budget must be at least 1 sample")
        if not (0 < self.alpha < 1 and 0 < self.futility < 1):
            raise ValueError("alpha and futility must be in (0, 1)")
        if int(self.first_chunk) < 1 or not self.growth > 1:
            raise ValueError("first_chunk must be >= 1 and growth > 1")
        if int(self.granularity) < 1:
            raise ValueError("granularity must be >= 1")
        if not 0 <= self.final_share < 1:
            raise ValueError("final_share must be in [0, 1)")
        bounds = FinalLook(self.cs, int(self.budget), self.final_share) if self.final_share > 0 else self.cs
        object.__setattr__(self, "bounds", bounds)

    def settings(self) -> dict:
        """What determines the results, for the results header."""
        return {"plan": "sequential", "levels": list(self.levels), "budget": int(self.budget),
                "alpha": self.alpha, "bounds": self.bounds.settings(),
                "futility": self.futility, "first_chunk": int(self.first_chunk), "growth": self.growth,
                "granularity": int(self.granularity)}

    def level_index(self, radius) -> np.ndarray:
        """Index of the largest level at or below each radius; -1 below level 0 or abstaining (-inf, nan)."""
        r = np.asarray(radius, dtype=np.float64)
        r = np.where(np.isnan(r), -np.inf, r)
        return np.searchsorted(np.asarray(self.levels), r, side="right") - 1

    def following(self, level) -> np.ndarray:
        """The radius of the level after ``level`` (inf after the top)."""
        grid = np.asarray(self.levels + (np.inf,))
        return grid[np.minimum(np.asarray(level) + 1, len(self.levels))]

    def decide(self, r_now, r_reach, r_plausible, trials):
        """(level proved, reason); reason CONTINUE means sample on. Vectorized.

        ``r_now``: radius certified by the current anytime-valid bounds;
        ``r_reach``: largest radius any continuation within the budget could certify;
        ``r_plausible``: radius at the budget with the remaining votes at the futility
        rate. Abstentions are -inf.
        """
        level = self.level_index(r_now)
        following = self.following(level)
        reason = np.full(level.shape, CONTINUE)
        reason = np.where(np.asarray(trials) >= self.budget, BUDGET, reason)
        reason = np.where(~(np.asarray(r_plausible, dtype=np.float64) >= following), RULED_OUT, reason)
        reason = np.where(~(np.asarray(r_reach, dtype=np.float64) >= following), UNREACHABLE, reason)
        reason = np.where(level >= len(self.levels) - 1, TOP_LEVEL, reason)
        return level, reason

    def next_trials(self, trials, earliest) -> np.ndarray:
        """Total samples at the next look (see the class docstring)."""
        t = np.asarray(trials, dtype=np.int64)
        grown = np.where(t == 0, int(self.first_chunk), np.ceil(t * self.growth).astype(np.int64))
        target = np.maximum(np.maximum(grown, np.asarray(earliest, dtype=np.int64)), t + 1)
        step = int(self.granularity)
        target = -(-target // step) * step
        return np.minimum(target, int(self.budget))


# -- the plan on one-bound methods, vectorized (simulations and tests) --------------------


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


# -- the plan on any method, one input at a time (the engine's side) ----------------------

Labels = tuple[int, ...]
#: (kind "lower"/"upper", group, labels, alpha) -> bound on P(the group's view votes in labels)
BoundSource = Callable[[str, str, Labels, float], float]


def _labels(label) -> Labels:
    if isinstance(label, (int, np.integer)):
        return (int(label),)
    return tuple(sorted({int(c) for c in label}))


class BoundVotes(Votes):
    """Votes whose bounds come from a sequential plan instead of a fixed-n formula.

    Certificate rules call ``lower_bound`` (and, for rules that bound other classes,
    ``upper_bound``) exactly as on fixed-n votes, so no plugin changes.
    """

    def __init__(self, counts: Mapping[str, np.ndarray], source: BoundSource):
        super().__init__(counts, _no_fixed_bound)
        self._source = source

    def lower_bound(self, group: str, label, alpha: float) -> float:
        return float(self._source("lower", group, _labels(label), alpha))

    def upper_bound(self, group: str, labels, alpha: float) -> float:
        """Upper confidence bound on P(view of this group is classified in ``labels``)."""
        return float(self._source("upper", group, _labels(labels), alpha))


def _no_fixed_bound(successes: int, trials: int, alpha: float) -> float:  # pragma: no cover
    raise AssertionError("sequential votes take their bounds from the plan")


def upper_bound(votes: Votes, group: str, labels, alpha: float) -> float:
    """Upper bound on P(group's view in ``labels``): the votes' own (the plan's for sequential
    votes, Clopper-Pearson for fixed-n votes)."""
    return votes.upper_bound(group, _labels(labels), alpha)


@dataclass(frozen=True)
class Step:
    """What the plan says after a look at one input's votes.

    ``stop`` False: draw ``chunk`` more estimation samples per group, then look again.
    ``stop`` True: ``certificate`` is the result (its radius the largest level proved,
    or 0 with a prediction below level 0, or an abstention), ``level`` its index (-1:
    none) and ``reason`` why sampling stopped.
    """

    stop: bool
    chunk: int
    level: int
    reason: str
    samples: int
    certificate: Certificate | None = None


@dataclass
class SequentialCertification:
    """One input under a :class:`SequentialPlan`, for any smoothing method.

    The plan never needs to know a method's certificate rule: it calls the method's
    own ``certify`` with votes whose bounds are (a) the running best anytime-valid
    bounds, (b) the best bounds any continuation within the budget could reach, (c)
    the bounds at the budget if the votes continued at the futility rate; the radii
    of the three certificates decide. This works for every rule whose radius grows
    with its lower bounds and shrinks with its upper bounds (rs, pprs, drs with its
    alpha/2 per side, uniform and ssn's 2 lambda (p - 1/2), the two-bound radius).

        run = SequentialCertification(plan, method, selection_votes)
        step = run.step(zero_counts)            # the first chunk
        while not step.stop:
            counts = draw(step.chunk, counts)   # fresh estimation votes, per group
            step = run.step(counts)
        step.certificate
    """

    plan: SequentialPlan
    method: SmoothingMethod
    selection: Votes
    _best_lower: dict = field(default_factory=dict)
    _best_upper: dict = field(default_factory=dict)

    def step(self, counts: Mapping[str, np.ndarray]) -> Step:
        counts = {group: np.asarray(c, dtype=np.int64) for group, c in counts.items()}
        plan = self.plan
        trials = {group: int(c.sum()) for group, c in counts.items()}
        spent = max(trials.values())
        if spent == 0:
            return Step(False, self._next_total(counts, trials, -1, 0), -1, REASONS[CONTINUE], 0)
        current = self._certify(counts, self._now(counts, trials))
        r_now = _radius(current)
        r_reach = _radius(self._certify(counts, self._reach(counts, trials)))
        r_plausible = _radius(self._certify(counts, self._plausible(counts, trials)))
        level, reason = plan.decide(r_now, r_reach, r_plausible, spent)
        level, reason = int(level), int(reason)
        if reason == CONTINUE:
            chunk = self._next_total(counts, trials, level, spent) - spent
            return Step(False, chunk, level, REASONS[reason], spent)
        return Step(True, 0, level, REASONS[reason], spent, self._result(current, level, reason, spent))

    def anytime_votes(self, counts: Mapping[str, np.ndarray]) -> BoundVotes:
        """The votes with their running best anytime-valid bounds, for any rule to read."""
        counts = {group: np.asarray(c, dtype=np.int64) for group, c in counts.items()}
        trials = {group: int(c.sum()) for group, c in counts.items()}
        return BoundVotes(counts, self._now(counts, trials))

    # -- the three views -------------------------------------------------------------

    def _count(self, counts, group: str, labels: Labels) -> int:
        c = counts[group]
        return int(sum(int(c[k]) for k in labels if k < len(c)))

    def _now(self, counts, trials) -> BoundSource:
        cs, lower_best, upper_best = self.plan.bounds, self._best_lower, self._best_upper

        def source(kind, group, labels, alpha):
            s, t = self._count(counts, group, labels), trials[group]
            key = (group, labels, alpha)
            if kind == "lower":
                lower_best[key] = max(lower_best.get(key, 0.0), cs.lower(s, t, alpha))
                return lower_best[key]
            upper_best[key] = min(upper_best.get(key, 1.0), cs.upper(s, t, alpha))
            return upper_best[key]

        return source

    def _projected(self, counts, trials, horizon: Callable[[str], int], gained: Callable) -> BoundSource:
        """Bounds at ``horizon(group)`` with ``gained(kind, s, t, more)`` more votes in the labels."""
        cs, lower_best, upper_best = self.plan.bounds, self._best_lower, self._best_upper

        def source(kind, group, labels, alpha):
            s, t = self._count(counts, group, labels), trials[group]
            end = horizon(group)
            more = gained(kind, s, t, end - t)
            key = (group, labels, alpha)
            if kind == "lower":
                return max(lower_best.get(key, 0.0), cs.lower(s + more, end, alpha))
            return min(upper_best.get(key, 1.0), cs.upper(s + more, end, alpha))

        return source

    def _reach(self, counts, trials) -> BoundSource:
        budget = int(self.plan.budget)
        return self._projected(counts, trials, lambda g: max(budget, trials[g]),
                               lambda kind, s, t, more: more if kind == "lower" else 0)

    def _plausible(self, counts, trials) -> BoundSource:
        budget, level = int(self.plan.budget), self.plan.futility

        def gained(kind, s, t, more):
            side = "upper" if kind == "lower" else "lower"
            return float(plausible_rate(s, t, level, side)) * more

        return self._projected(counts, trials, lambda g: max(budget, trials[g]), gained)

    def _next_total(self, counts, trials, level: int, spent: int) -> int:
        """The plan's next look, ``next_trials(spent, earliest)``, where ``earliest`` is the
        first total at which the next level would be proved if every vote agreed (no
        constraint when not even the budget would); the search only runs when that is
        later than the geometric step."""
        plan = self.plan
        budget = int(plan.budget)
        grown = int(plan.next_trials(spent, 0))
        following = float(plan.following(level))

        def proved(total: int) -> bool:
            source = self._projected(counts, trials, lambda g: total,
                                     lambda kind, s, t, more: more if kind == "lower" else 0)
            return _radius(self._certify(counts, source)) >= following

        if grown >= budget or proved(grown) or not proved(budget):
            return grown
        # looks fall on multiples of the granularity (or the budget): search those only; proved()
        # grows with the total, so this finds the first look at or after the earliest proof
        grid = int(plan.granularity)
        lo, hi = grown // grid, -(-budget // grid)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if proved(min(mid * grid, budget)):
                hi = mid
            else:
                lo = mid
        return int(plan.next_trials(spent, min(hi * grid, budget)))

    # -- helpers ---------------------------------------------------------------------

    def _certify(self, counts, source: BoundSource) -> Certificate:
        return self.method.certify(self.selection, BoundVotes(counts, source), self.plan.alpha)

    def _result(self, current: Certificate, level: int, reason: int, spent: int) -> Certificate:
        sequential = {"samples": spent, "level": level, "stopped": REASONS[reason],
                      "certified_radius": float(current.radius) if current.prediction is not None else None}
        details = {**dict(current.details), "sequential": sequential}
        if current.prediction is None:
            return Certificate.abstain(**details)
        radius = self.plan.levels[level] if level >= 0 else 0.0
        # a level is proved only if the certificate reaches it; never report more
        radius = min(radius, float(current.radius))
        return Certificate(current.prediction, radius, exact=False, conditional=current.conditional,
                           details=details)


def _radius(certificate: Certificate) -> float:
    return -math.inf if certificate.prediction is None else float(certificate.radius)


__all__ = [
    "BetaMixture", "FinalLook", "BoundVotes", "ConfidenceSequence", "JEFFREYS", "SequentialCertification",
    "SequentialPlan", "Step", "TAIL_PRIOR", "earliest_proof", "gaussian_radius_of", "l1_radius_of",
    "plausible_rate", "simulate_one_bound", "two_bound_gaussian_certificate", "upper_bound",
]
