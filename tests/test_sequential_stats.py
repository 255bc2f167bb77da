"""Sequential certification, the statistics: confidence sequences that survive optional
stopping, the stopping rule, and the two-bound Gaussian radius.

Every failure-rate test uses a large alpha (0.1 or 0.2) so that a violation rate above it
is measurable with a few thousand simulated streams, and each has a mutation beside it
showing that the same test catches a rule that is not valid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from certifier.confidence_sequences import JEFFREYS, TAIL_PRIOR, BetaMixture, FinalLook
from certifier.methods import Certificate, Votes, two_bound_gaussian_certificate
from certifier.plugins import get_method
from certifier.sequential import SequentialCertification, SequentialPlan
from certifier.stats import clopper_pearson_lower, clopper_pearson_upper

from sequential_mutants import PeekingClopperPearson
from sequential_simulator import gaussian_radius_of, l1_radius_of, simulate_one_bound

PRIORS = [JEFFREYS, TAIL_PRIOR, BetaMixture(((0.5, 0.5, 0.5), (0.5, 1.0, 0.05)))]
CASES = [(1, 1), (1, 10), (5, 10), (10, 10), (990, 1000), (12_345, 20_000), (99_990, 100_000),
         (100_000, 100_000), (3, 100_000)]


# -- the confidence sequence -------------------------------------------------------


@pytest.mark.parametrize("cs", PRIORS, ids=lambda cs: cs.name)
def test_log_evidence_is_the_mixture_of_likelihood_ratios(cs):
    # M_t(p) from its definition: the prior's integral of the likelihood ratio
    for s, t, p in [(7, 10, 0.3), (2, 12, 0.5), (30, 31, 0.8)]:
        def integrand(q):
            density = sum(w * stats.beta.pdf(q, a, b) for w, a, b in cs.components)
            return density * math.exp(s * math.log(q / p) + (t - s) * math.log((1 - q) / (1 - p)))
        direct, _ = integrate.quad(integrand, 0, 1, limit=200, points=[s / t])
        assert cs.log_evidence(p, s, t) == pytest.approx(math.log(direct), rel=1e-7)


@pytest.mark.parametrize("cs", PRIORS, ids=lambda cs: cs.name)
@pytest.mark.parametrize("alpha", [0.1, 0.001])
def test_lower_end_is_the_root_of_ville_on_the_safe_side(cs, alpha):
    threshold = math.log(1 / alpha)
    for s, t in CASES:
        lower = cs.lower(s, t, alpha)
        root = optimize.brentq(lambda p: cs.log_evidence(p, s, t) - threshold, 1e-300, s / t, xtol=1e-300,
                               rtol=1e-15)
        assert lower <= root * (1 + 1e-14), (s, t)
        assert lower >= root * (1 - 1e-9), (s, t)
        # the returned end is itself excluded: M_t(lower) >= 1/alpha
        assert cs.log_evidence(lower, s, t) >= threshold
    assert cs.lower(0, 50, alpha) == 0.0


@pytest.mark.parametrize("cs", PRIORS, ids=lambda cs: cs.name)
def test_upper_end_is_one_minus_the_lower_end_of_the_complement(cs):
    for s, t in CASES:
        upper = cs.upper(s, t, 0.01)
        assert upper >= 1 - cs.lower(t - s, t, 0.01)
        assert upper >= s / t
        assert upper - (1 - cs.lower(t - s, t, 0.01)) <= 4e-16
    assert cs.upper(20, 20, 0.01) == 1.0


def test_jeffreys_is_symmetric_and_vectorized():
    s = np.array([0, 3, 50, 99, 100])
    lower = JEFFREYS.lower(s, 100, 0.05)
    assert np.allclose(JEFFREYS.upper(100 - s, 100, 0.05), 1 - lower, atol=1e-15)
    assert [JEFFREYS.lower(int(k), 100, 0.05) for k in s] == list(lower)


@pytest.mark.parametrize("cs", PRIORS, ids=lambda cs: cs.name)
def test_bounds_grow_with_agreeing_votes(cs):
    # the stopping rule's "reachable" bound assumes this: one more agreeing vote never lowers it
    for t in [1, 10, 100, 1000, 10_000, 100_000]:
        s = np.unique(np.linspace(0, t, 60).astype(int))
        now, after = cs.lower(s, t, 0.001), cs.lower(s + 1, t + 1, 0.001)
        assert np.all(after >= now)
        assert np.all(np.diff(now) >= 0)


def test_wider_than_clopper_pearson_at_the_same_count():
    # an anytime bound pays for its validity at every t: it is never tighter than fixed n
    for cs in PRIORS:
        for s, t in CASES:
            if s:
                assert cs.lower(s, t, 0.001) <= clopper_pearson_lower(s, t, 0.001)


def test_bad_arguments():
    with pytest.raises(ValueError):
        JEFFREYS.lower(5, 4, 0.1)
    with pytest.raises(ValueError):
        JEFFREYS.lower(1, 4, 1.5)
    with pytest.raises(ValueError):
        BetaMixture(((0.7, 1, 1), (0.7, 1, 1)))
    with pytest.raises(ValueError):
        BetaMixture(((1.0, 0.0, 1.0),))


# -- coverage under adversarial stopping --------------------------------------------


LOOKS = np.unique(np.geomspace(8, 20_000, 90).astype(int))


def first_crossing_rate(bound, p: float, streams: int, seed: int) -> float:
    """Stop each stream at the first look where its lower bound exceeds the true p (the most
    adversarial stopping time: certify "p >= level" for a level just above p the moment the
    bound allows it). Returns the fraction of streams that ever stop: wrong claims."""
    rng = np.random.default_rng(seed)
    increments = rng.binomial(np.diff(LOOKS, prepend=0)[:, None], p, size=(len(LOOKS), streams))
    successes = np.cumsum(increments, axis=0)
    crossed = np.zeros(streams, dtype=bool)
    for t, s in zip(LOOKS, successes):
        crossed |= bound(s, t) > p
    return float(crossed.mean())


ALPHA = 0.1
STREAMS = 6000
LIMIT = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / STREAMS)


@pytest.mark.parametrize("p", [0.5, 0.841, 0.977, 0.9987])
@pytest.mark.parametrize("cs", [JEFFREYS, TAIL_PRIOR], ids=lambda cs: cs.name)
def test_coverage_survives_stopping_at_the_first_crossing(cs, p):
    rate = first_crossing_rate(lambda s, t: cs.lower(s, t, ALPHA), p, STREAMS, seed=1)
    assert rate <= LIMIT, rate


@pytest.mark.parametrize("cs", [JEFFREYS, TAIL_PRIOR], ids=lambda cs: cs.name)
def test_upper_end_coverage_survives_stopping(cs):
    # the mirror image: stop when the upper bound first drops below p
    p = 0.05
    rng = np.random.default_rng(2)
    increments = rng.binomial(np.diff(LOOKS, prepend=0)[:, None], p, size=(len(LOOKS), STREAMS))
    successes = np.cumsum(increments, axis=0)
    crossed = np.zeros(STREAMS, dtype=bool)
    for t, s in zip(LOOKS, successes):
        crossed |= cs.upper(s, t, ALPHA) < p
    rate = crossed.mean()
    assert rate <= LIMIT, rate


@pytest.mark.parametrize("p", [0.5, 0.977])
def test_final_look_adds_a_fixed_n_bound_at_the_budget_only(p):
    final = FinalLook(TAIL_PRIOR, budget=int(LOOKS[-1]), share=0.5)
    rate = first_crossing_rate(lambda s, t: final.lower(s, t, ALPHA), p, STREAMS, seed=3)
    assert rate <= LIMIT, rate
    # at the budget it is at least as tight as Clopper-Pearson at share * alpha; before, the sequence's
    t = int(LOOKS[-1])
    assert final.lower(t - 30, t, ALPHA) == max(clopper_pearson_lower(t - 30, t, ALPHA / 2),
                                                 TAIL_PRIOR.lower(t - 30, t, ALPHA / 2))
    assert final.lower(900, 1000, ALPHA) == TAIL_PRIOR.lower(900, 1000, ALPHA / 2)
    assert final.upper(30, t, ALPHA) <= clopper_pearson_upper(30, t, ALPHA / 2) + 1e-15
    # the fixed-n look belongs to exactly the budget: past it, the sequence alone
    assert final.lower(t - 30, t + 1, ALPHA) == TAIL_PRIOR.lower(t - 30, t + 1, ALPHA / 2)


@pytest.mark.parametrize("p", [0.5, 0.977])
def test_mutation_clopper_pearson_recomputed_after_every_chunk_fails(p):
    # The same test on a fixed-n bound peeked at after every chunk: each look alone is
    # valid at alpha, the first crossing over 90 looks is not.
    rate = first_crossing_rate(lambda s, t: PeekingClopperPearson().lower(s, t, ALPHA), p, STREAMS, seed=1)
    assert rate > 2 * LIMIT, rate


# -- the stopping rule ------------------------------------------------------------------


LEVELS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def test_plan_validates_its_settings():
    for bad in [dict(levels=()), dict(levels=(1.0, 0.5)), dict(levels=(0.5, 0.5)), dict(levels=(-1.0,)),
                dict(levels=(1.0,), budget=0), dict(levels=(1.0,), alpha=0), dict(levels=(1.0,), growth=1.0),
                dict(levels=(1.0,), final_share=1.0)]:
        settings = dict(budget=1000, alpha=0.001) | bad
        with pytest.raises(ValueError):
            SequentialPlan(**settings)
    plan = SequentialPlan(levels=[0, 0.5], budget=1000, alpha=0.001)
    assert plan.levels == (0.0, 0.5) and plan.settings()["plan"] == "sequential"


def test_level_index_rounds_down_to_the_grid():
    plan = SequentialPlan(levels=LEVELS, budget=1000, alpha=0.001)
    radii = [-np.inf, np.nan, 0.0, 0.4999999, 0.5, 2.99, 3.0, 7.0]
    assert list(plan.level_index(radii)) == [-1, -1, 0, 0, 1, 5, 6, 6]


def test_reported_level_is_always_proved_by_the_bound():
    plan = SequentialPlan(levels=LEVELS, budget=50_000, alpha=0.001)
    radius_of = gaussian_radius_of(1.0)
    p = np.repeat(np.concatenate([[0.3, 0.5, 0.6], np.minimum(stats.norm.cdf(np.array(LEVELS[1:])) + 0.002, 0.9995), [0.99999, 1.0]]), 40)
    level, used, reason, best = simulate_one_bound(plan, p, radius_of, np.random.default_rng(3))
    proved = level >= 0
    assert np.all(radius_of(best[proved]) >= np.asarray(LEVELS)[level[proved]])
    assert np.all(plan.level_index(radius_of(best)) == level)
    assert np.all((used >= 1) & (used <= plan.budget))
    # stopping before the budget needs a reason other than the budget
    assert np.all((reason == 4) == ((used == plan.budget) & (reason == 4)))
    # certain inputs reach the top level well inside the budget; hopeless ones stop early
    assert np.all(level[p == 1.0] == len(LEVELS) - 1) and used[p == 1.0].max() < 10_000
    assert used[p == 0.3].max() < 1000 and np.all(level[p == 0.3] == -1)


def level_failure_rate(cs, final_share=0.1) -> float:
    """Fraction of streams whose reported level needs more than their true p (alpha 0.1).

    p sits just below the threshold of level 1.0 (Phi(1)); with no futility rule and small
    chunks the plan keeps looking, the most chances to cross wrongly."""
    plan = SequentialPlan(levels=(0.0, 1.0), budget=20_000, alpha=ALPHA, cs=cs, final_share=final_share,
                          futility=1e-12, first_chunk=8, growth=1.1)
    p = np.full(4000, stats.norm.cdf(1.0) - 1e-9)
    level, *_ = simulate_one_bound(plan, p, gaussian_radius_of(1.0), np.random.default_rng(4))
    return float((level >= 1).mean())


def test_plan_reports_a_wrong_level_at_a_rate_under_alpha():
    assert level_failure_rate(TAIL_PRIOR) <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / 4000)


def test_mutation_plan_on_a_peeked_fixed_n_bound_fails():
    assert level_failure_rate(PeekingClopperPearson(), final_share=0) > 2 * ALPHA


def rs_selection(top: int = 1, classes: int = 2) -> Votes:
    counts = np.zeros(classes, dtype=np.int64)
    counts[top] = 100
    return Votes({"model": counts}, clopper_pearson_lower)


def run_generic(plan, method, selection, draw, groups=("model",), classes=2):
    """Drive SequentialCertification the way the engine will: chunks of fresh votes."""
    counts = {g: np.zeros(classes, dtype=np.int64) for g in groups}
    run = SequentialCertification(plan, method, selection)
    step = run.step(counts)
    looks = 0
    while not step.stop:
        assert step.chunk >= 1
        counts = {g: counts[g] + draw(g, step.chunk) for g in groups}
        looks += 1
        step = run.step(counts)
    return step, counts, run, looks


@pytest.mark.parametrize("p", [0.3, 0.62, 0.9, 0.99, 0.9991, 1.0])
def test_the_method_driven_plan_matches_the_vectorized_one(p):
    # the engine's path (asking rs for certificates) decides exactly as the simulations' path
    plan = SequentialPlan(levels=LEVELS, budget=100_000, alpha=0.001)
    level, used, _, _ = simulate_one_bound(plan, np.array([p]), gaussian_radius_of(1.0), np.random.default_rng(9))
    rng = np.random.default_rng(9)

    def draw(group, chunk):
        k = rng.binomial(chunk, p)
        return np.array([chunk - k, k])

    step, counts, _, _ = run_generic(plan, get_method("rs")(sigma=1.0), rs_selection(), draw)
    assert (step.level, step.samples) == (int(level[0]), int(used[0]))
    certificate = step.certificate
    if step.level >= 0:
        assert certificate.prediction == 1 and certificate.radius == LEVELS[step.level]
        assert certificate.details["sequential"]["certified_radius"] >= certificate.radius
    assert certificate.details["sequential"]["samples"] == counts["model"].sum()


def test_one_radius_is_the_one_level_plan():
    # --radius R: certified at R (radius R), or not (a prediction with radius 0, or abstain)
    method = get_method("rs")(sigma=0.5)
    rng = np.random.default_rng(0)
    outcomes = {}
    for p in [0.999, 0.6, 0.2]:
        plan = SequentialPlan(levels=(0.5,), budget=100_000, alpha=0.001)
        step, counts, _, _ = run_generic(plan, method, rs_selection(), lambda g, c: _bernoulli(rng, c, p))
        outcomes[p] = (step.certificate.prediction, step.certificate.radius, step.samples)
    assert outcomes[0.999][:2] == (1, 0.5) and outcomes[0.999][2] < 200
    assert outcomes[0.6][1] == 0.0 and outcomes[0.6][2] < 2000
    assert outcomes[0.2] == (None, 0.0, outcomes[0.2][2]) and outcomes[0.2][2] < 200
    # a radius above the ceiling at this budget (sigma Phi^-1(alpha^(1/n)) = 1.91) is
    # settled at the first look, whatever the votes
    plan = SequentialPlan(levels=(2.0,), budget=100_000, alpha=0.001)
    step, *_ = run_generic(plan, method, rs_selection(), lambda g, c: _bernoulli(rng, c, 1.0))
    assert step.reason == "next level unreachable" and step.samples == plan.first_chunk
    level, used, _, _ = simulate_one_bound(plan, np.array([1.0]), gaussian_radius_of(0.5), rng)
    assert used[0] == plan.first_chunk


def _bernoulli(rng, chunk, p):
    k = rng.binomial(chunk, p)
    return np.array([chunk - k, k])


def test_drs_two_groups_and_the_bonferroni_split_go_through_the_method():
    # drs asks for each side's bound at alpha / 2; the plan's certificate must come from
    # exactly those anytime bounds, and the level it reports must be proved by them
    method = get_method("drs")(sigma=0.5)
    plan = SequentialPlan(levels=(0.0, 0.25, 0.5, 0.75), budget=50_000, alpha=0.001)
    rng = np.random.default_rng(1)
    probabilities = {"left": 0.97, "right": 0.9}
    selection = Votes({"left": np.array([0, 100]), "right": np.array([0, 100])}, clopper_pearson_lower)
    step, counts, run, _ = run_generic(plan, method, selection,
                                       lambda g, c: _bernoulli(rng, c, probabilities[g]), groups=("left", "right"))
    t = counts["left"].sum()
    assert counts["right"].sum() == t == step.samples
    keys = {key[0]: key[2] for key in run._best_lower}
    assert keys == {"left": 0.0005, "right": 0.0005}
    bound = {g: plan.bounds.lower(counts[g][1], t, 0.0005) for g in ("left", "right")}
    from certifier_plugins.drs import drs_radius
    assert step.level >= 1
    assert plan.levels[step.level] <= drs_radius(0.5, run._best_lower[("left", (1,), 0.0005)],
                                                 run._best_lower[("right", (1,), 0.0005)])
    assert all(run._best_lower[(g, (1,), 0.0005)] >= bound[g] for g in bound)


def test_l1_methods_map_their_radius_the_same_way():
    method = get_method("uniform")(options=get_method("uniform").Options(**{"lambda": 1.0}))
    plan = SequentialPlan(levels=(0.0, 0.5, 0.9), budget=100_000, alpha=0.001)
    level, used, _, best = simulate_one_bound(plan, np.array([0.97]), l1_radius_of(1.0), np.random.default_rng(2))
    rng = np.random.default_rng(2)
    step, *_ = run_generic(plan, method, rs_selection(), lambda g, c: _bernoulli(rng, c, 0.97))
    assert (step.level, step.samples) == (int(level[0]), int(used[0]))
    # 2 lambda (p - 1/2) = 0.94 at p = 0.97: level 0.9 needs p_lower >= 0.95
    assert step.level == 2 and step.certificate.radius == 0.9


# -- the two-bound Gaussian radius ------------------------------------------------------


def interval_model(cuts: list[float], top: int):
    """1-D classifier: class c when z in [cuts[c], cuts[c + 1]) (cuts start at -inf, end at
    inf). Under z = x0 + N(0, 1) each class's probability is a difference of Phi, and the
    smoothed classifier's exact L2 radius at x0 is where another class first overtakes
    ``top`` as x0 moves (other coordinates do not matter)."""
    cuts = np.asarray(cuts, dtype=np.float64)

    def probabilities(x0):
        cdf = stats.norm.cdf(cuts - x0)
        return np.diff(cdf)

    def margin(x0):
        p = probabilities(x0)
        return p[top] - np.max(np.delete(p, top))

    def exact_radius(x0):
        grid = np.linspace(0, 6, 6001)
        radius = np.inf
        for sign in (-1, 1):
            values = np.array([margin(x0 + sign * d) for d in grid])
            below = np.flatnonzero(values <= 0)
            if below.size:
                i = below[0]
                d = optimize.brentq(lambda d: margin(x0 + sign * d), grid[i - 1], grid[i], xtol=1e-12)
                radius = min(radius, d)
        return radius

    return probabilities, exact_radius


def count_votes(rng, probabilities, size):
    return rng.multinomial(size, probabilities)


def two_bound_violations(x0, cuts, top, *, alpha, repeats, n, rule, seed=0):
    probabilities, exact_radius = interval_model(cuts, top)
    p = probabilities(x0)
    exact = exact_radius(x0)
    # Cohen's two-bound radius with the true probabilities never exceeds the exact one
    assert 0.5 * (stats.norm.ppf(p[top]) - stats.norm.ppf(np.max(np.delete(p, top)))) <= exact + 1e-9
    rng = np.random.default_rng(seed)
    wrong = 0
    radii = []
    for _ in range(repeats):
        selection = Votes({"model": count_votes(rng, p, 100)}, clopper_pearson_lower)
        estimation = Votes({"model": count_votes(rng, p, n)}, clopper_pearson_lower)
        certificate = rule(selection, estimation, alpha)
        if certificate.prediction is None:
            continue
        radii.append(certificate.radius)
        wrong += certificate.prediction != top or certificate.radius > exact
    return wrong / repeats, exact, np.array(radii)


# A right-tail class (the top), a left-tail runner-up and small classes between: the
# two-bound radius with exact probabilities equals the exact radius (tight case).
TIGHT = dict(x0=0.653, cuts=[-np.inf, -0.4, -0.2, 0.0, 0.2, 0.4, np.inf], top=5)
# Two contenders for runner-up (0.19 on the left, 0.16 in the middle): selection often
# names the smaller one, so a rule that forgets the other classes over-claims.
CLOSE = dict(x0=0.35, cuts=[-np.inf, -0.53, -0.12, 0.26, np.inf], top=3)


def two_bound(selection, estimation, alpha):
    return two_bound_gaussian_certificate(selection, estimation, alpha, sigma=1.0)


def two_bound_without_rest(selection, estimation, alpha):
    """Mutation: bound only the selection's runner-up; the other classes are ignored."""
    top = selection.top()
    chosen = selection["model"].copy()
    chosen[top] = -1
    runner_up = int(np.argmax(chosen))
    p_lower = estimation.lower_bound("model", top, alpha / 2)
    p_upper = clopper_pearson_upper(estimation.count("model", runner_up), estimation.trials("model"), alpha / 2)
    if not p_lower > p_upper:
        return Certificate.abstain()
    return Certificate(top, 0.5 * (stats.norm.ppf(p_lower) - stats.norm.ppf(p_upper)))


@pytest.mark.parametrize("case", [TIGHT, CLOSE], ids=["tight", "close-runner-up"])
def test_two_bound_radius_violates_the_exact_radius_under_alpha(case):
    rate, exact, radii = two_bound_violations(**case, alpha=0.2, repeats=1500, n=20_000, rule=two_bound)
    assert rate <= 0.2 + 3 * math.sqrt(0.2 * 0.8 / 1500), rate
    assert radii.size > 1000 and np.median(radii) > 0.8 * exact  # and it is not vacuous


def test_mutation_forgetting_the_other_classes_fails():
    rate, *_ = two_bound_violations(**CLOSE, alpha=0.2, repeats=1500, n=20_000, rule=two_bound_without_rest)
    assert rate > 0.2 + 3 * math.sqrt(0.2 * 0.8 / 1500), rate


def test_two_bound_radius_beats_one_bound_when_the_rest_is_spread():
    probabilities, exact_radius = interval_model(TIGHT["cuts"], TIGHT["top"])
    p = probabilities(TIGHT["x0"])
    rng = np.random.default_rng(5)
    selection = Votes({"model": count_votes(rng, p, 100)}, clopper_pearson_lower)
    estimation = Votes({"model": count_votes(rng, p, 100_000)}, clopper_pearson_lower)
    one = get_method("rs")(sigma=1.0).certify(selection, estimation, 0.001)
    two = two_bound(selection, estimation, 0.001)
    assert two.prediction == one.prediction == TIGHT["top"]
    assert two.radius > 2 * one.radius
    assert two.radius <= exact_radius(TIGHT["x0"])


def test_two_bound_radius_falls_back_to_the_one_bound_radius():
    # all votes on the top class: 1 - pA_lower binds, the radius is rs's at top_share * alpha
    selection = Votes({"model": np.array([0, 100, 0])}, clopper_pearson_lower)
    estimation = Votes({"model": np.array([0, 10_000, 0])}, clopper_pearson_lower)
    certificate = two_bound(selection, estimation, 0.002)
    assert certificate.radius == pytest.approx(stats.norm.ppf(clopper_pearson_lower(10_000, 10_000, 0.001)),
                                               rel=1e-12)
    # a class the estimation never saw is still bounded: the rest (here empty of votes)
    assert certificate.details["p_upper_others"] > 0
    # two classes: no bound for the rest, so B gets alpha / 2 alone
    two = two_bound_gaussian_certificate(Votes({"model": np.array([30, 70])}, clopper_pearson_lower),
                                         Votes({"model": np.array([3000, 7000])}, clopper_pearson_lower),
                                         0.002, sigma=1.0, classes=2)
    expected = 0.5 * (stats.norm.ppf(clopper_pearson_lower(7000, 10_000, 0.001))
                      - stats.norm.ppf(clopper_pearson_upper(3000, 10_000, 0.001)))
    assert two.radius == pytest.approx(expected, rel=1e-12)


def test_two_bound_radius_under_optional_stopping():
    # the anytime version: stop each stream at the first look where the claimed radius
    # exceeds the exact one; wrong claims stay under alpha
    probabilities, exact_radius = interval_model(TIGHT["cuts"], TIGHT["top"])
    p = probabilities(TIGHT["x0"])
    exact = exact_radius(TIGHT["x0"])
    rng = np.random.default_rng(6)
    alpha, streams, looks = 0.2, 300, [200, 600, 2000, 6000, 20_000]
    plan = SequentialPlan(levels=(0.0,), budget=looks[-1], alpha=alpha)
    wrong = 0
    for _ in range(streams):
        selection = Votes({"model": count_votes(rng, p, 100)}, clopper_pearson_lower)
        counts = np.zeros(len(p), dtype=np.int64)
        state = SequentialCertification(plan, None, selection)
        for t in looks:
            counts += count_votes(rng, p, t - counts.sum())
            certificate = two_bound(selection, state.anytime_votes({"model": counts}), alpha)
            if certificate.prediction is not None and (certificate.prediction != TIGHT["top"]
                                                       or certificate.radius > exact):
                wrong += 1
                break
    assert wrong / streams <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / streams)
