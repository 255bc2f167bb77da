"""Sequential certification: the rule that says when to stop sampling an input.

Estimation views are drawn in chunks, and after each chunk the votes so far decide whether
to stop: the bounds are anytime-valid confidence sequences (``certifier.confidence_sequences``),
so the bound at the stopping time is valid however the stop was chosen.

What is here: the stopping rule (:class:`SequentialPlan`); the engine's side, one input at
a time for any method (:class:`SequentialCertification`, which asks the method's own
``certify`` for certificates from substituted bounds). The two-bound Gaussian radius
(``certifier.methods.two_bound_gaussian_certificate``) is a certificate rule like the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .confidence_sequences import TAIL_PRIOR, ConfidenceSequence, FinalLook
from .methods import Certificate, SmoothingMethod, Votes


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


__all__ = ["BoundVotes", "SequentialCertification", "SequentialPlan", "Step", "plausible_rate", "upper_bound"]
