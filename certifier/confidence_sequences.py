"""Confidence sequences: bounds on a Bernoulli probability that hold at every sample size at once.

A confidence sequence (L_t) for a Bernoulli probability p holds at every sample size at
once: P(p >= L_t for all t) >= 1 - alpha. The sampler may look after every chunk and
stop whenever the data say so, and the bound at the stopping time is still valid. A
fixed-n Clopper-Pearson bound (``certifier.stats``) does not have that property:
recomputed after every chunk, it crosses a level that p does not reach far more often
than alpha. The sequential plan (``certifier.sequential``) certifies with these.

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
sequence. :class:`FinalLook` adds a fixed-n look at the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, logsumexp

from .stats import clopper_pearson_lower_array

_NEWTON_STEPS = 80


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


__all__ = ["BetaMixture", "ConfidenceSequence", "FinalLook", "JEFFREYS", "TAIL_PRIOR"]
