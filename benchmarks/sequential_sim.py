"""Sequential certification against fixed n = 100,000, simulated on vote streams.

    python benchmarks/sequential_sim.py                   # all parts below except tune (~5 min)
    python benchmarks/sequential_sim.py --part bounds     # what each bound costs
    python benchmarks/sequential_sim.py --part published  # ImageNet and MNIST models, published pA
    python benchmarks/sequential_sim.py --part fmnist     # the bundled Fashion-MNIST RS models
    python benchmarks/sequential_sim.py --part radius     # a single --radius R decision
    python benchmarks/sequential_sim.py --part two-bound  # where the two-bound radius helps
    python benchmarks/sequential_sim.py --part tune       # the settings sweep behind the defaults
    python benchmarks/sequential_sim.py --part unanimous  # runs the models: are unanimous images ~certain? (~6 min)
    python benchmarks/sequential_sim.py --collect         # recount the bundled models' votes (~10 min)

An input's votes are a stream of independent draws: the class of each noisy copy. Given
each input's class probabilities, the selection (n0 = 100 votes, top class) and the
estimation votes are drawn exactly, so fixed-n Clopper-Pearson certification and the
sequential plan (certifier.sequential) are compared on the same inputs without running
a model; the plan's decisions are those the engine will make (the tests check that the
vectorized path used here decides exactly as the method-driven one).

Where the class probabilities come from:

- published (../shared/data/pA/*.txt): each line is a two-sided Clopper-Pearson interval
  of pA at N = 100,000, alpha = 0.001. The success count k is recovered from the lower
  end (it matches a two-sided interval at N = 100,000 to 1e-9 for every image with
  pA >= 0.3; a few low-pA lines were computed at a smaller N and get the interval's
  midpoint) and pA = k / N is the input's true probability of its label. The files give
  nothing about the other classes, so every input has two classes: its label with pA
  and one other with 1 - pA. A wrong input (pA < 1/2) is then a confident mistake that
  costs as many samples as a right one: the conservative reading for the sample ratio.
- fmnist: class vote counts of the bundled models on the first 500 test images (2,000
  noisy copies per image, 10,000 for images whose top class has >= 99% of the first
  2,000), stored in benchmarks/sequential-votes/ (--collect recounts them). Each
  repetition draws every image's class probabilities from its counts: the top class's
  from its Jeffreys posterior Beta(k + 1/2, n - k + 1/2), so an image unanimous in 10,000
  copies gets a pA a little below 1, and the rest of the mass split over the other
  classes by a Dirichlet(counts + 1/2) draw (--posterior dirichlet draws all ten classes
  from Dirichlet(counts + 1/2) instead: a sensitivity check, see Population.draw).

Every ratio printed is computed within this run: the fixed plan's forward passes per
input (n0 + n) over the sequential plan's (n0 + samples used).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats

from certifier.confidence_sequences import JEFFREYS, TAIL_PRIOR, BetaMixture
from certifier.methods import SmoothingMethod, Votes, two_bound_gaussian_certificate
from certifier.sequential import SequentialCertification, SequentialPlan
from certifier.stats import clopper_pearson_lower

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the vectorized simulator is a test helper

from sequential_simulator import gaussian_radius_of, simulate_one_bound  # noqa: E402
SHARED = ROOT.parent / "shared"
VOTES = ROOT / "benchmarks" / "sequential-votes"
N, N0, ALPHA = 100_000, 100, 0.001
#: Cohen et al. (2019) and Salman et al. (2019) report ImageNet at these L2 radii.
IMAGENET_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
#: the sigma = 0.5 grid in steps of 0.25, up to the largest level below the n = 100,000 ceiling (1.905)
FINE_GRID_05 = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
#: MACER (Zhai et al. 2020) reports MNIST in steps of 0.25 up to 2.5
MNIST_GRID = tuple(np.round(np.arange(0, 2.51, 0.25), 2))
#: certify's default --radii (certifier.summaries.DEFAULT_RADII), what a user of the bundled models gets
DEFAULT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)

PUBLISHED = [
    ("cohen-imagenet-1.00-orig.pth.txt", "Cohen ImageNet", 1.0, IMAGENET_GRID),
    ("salman-imagenet-0.50.pth.txt", "Salman ImageNet", 0.5, IMAGENET_GRID),
    ("salman-imagenet-0.50.pth.txt", "Salman ImageNet (fine grid)", 0.5, FINE_GRID_05),
    ("salman-imagenet-1.00.pth.txt", "Salman ImageNet", 1.0, IMAGENET_GRID),
    ("cohen-mnist-1.00.pth.txt", "Cohen-recipe MNIST", 1.0, MNIST_GRID),
]
FMNIST = [("fmnist-rs-0.25-gaussian", 0.25), ("fmnist-rs-0.5-gaussian", 0.5)]


# -- populations -------------------------------------------------------------------------


@dataclass
class Population:
    """Inputs to certify: how to draw each input's class probabilities, and its label."""

    name: str
    sigma: float
    grid: tuple[float, ...]
    labels: np.ndarray
    fixed_probabilities: np.ndarray | None = None  # (inputs, classes), used as they are
    counts: np.ndarray | None = None  # (inputs, classes): probabilities drawn from a posterior per repetition
    posterior: str = "binomial"

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """The inputs' class probabilities for one repetition.

        "binomial": the top class's probability from its Jeffreys posterior
        Beta(k + 1/2, n - k + 1/2), the rest of the mass split over the other classes by a
        Dirichlet(counts + 1/2) draw. "dirichlet": Dirichlet(counts + 1/2) over all classes,
        which acts as 4.5 extra votes against the top class of a 10-class model (an input
        unanimous in 10,000 copies gets pA near 0.9995): shown as a sensitivity check.
        """
        if self.fixed_probabilities is not None:
            return self.fixed_probabilities
        if self.posterior == "dirichlet":
            return _dirichlet_rows(rng, self.counts + 0.5)
        rows = np.arange(len(self.counts))
        top = np.argmax(self.counts, axis=1)
        k = self.counts[rows, top]
        n = self.counts.sum(axis=1)
        p_top = rng.beta(k + 0.5, n - k + 0.5)
        others = self.counts + 0.5
        others[rows, top] = 0.0
        split = _dirichlet_rows(rng, np.maximum(others, 1e-300))
        split[rows, top] = 0.0
        split /= split.sum(axis=1, keepdims=True)
        probabilities = split * (1.0 - p_top)[:, None]
        probabilities[rows, top] = p_top
        return probabilities

    def __len__(self) -> int:
        return len(self.labels)


def _dirichlet_rows(rng: np.random.Generator, concentration: np.ndarray) -> np.ndarray:
    gammas = rng.standard_gamma(concentration)
    return gammas / gammas.sum(axis=1, keepdims=True)


def published_pa(path: Path) -> tuple[np.ndarray, int]:
    """Each image's pA from its interval (see the module docstring); and how many used midpoints."""
    rows = [line.split() for line in path.read_text().splitlines() if line.startswith("o ")]
    lower = np.array([float(r[2]) for r in rows])
    upper = np.array([float(r[3]) for r in rows])
    k = np.arange(N + 1)
    ends = np.zeros(N + 1)
    ends[1:] = stats.beta.ppf(ALPHA / 2, k[1:], N - k[1:] + 1)
    i = np.clip(np.searchsorted(ends, lower), 1, N)
    nearest = np.where(np.abs(ends[i] - lower) < np.abs(ends[i - 1] - lower), i, i - 1)
    matched = np.abs(ends[nearest] - lower) < 1e-9
    return np.where(matched, nearest / N, (lower + upper) / 2), int((~matched).sum())


def published_population(filename: str, name: str, sigma: float, grid) -> Population:
    pa, midpoints = published_pa(SHARED / "data" / "pA" / filename)
    probabilities = np.stack([pa, 1 - pa], axis=1)
    population = Population(f"{name} sigma {sigma:g}", sigma, tuple(grid), np.zeros(len(pa), dtype=int),
                            fixed_probabilities=probabilities)
    population.midpoints = midpoints
    return population


#: how the fmnist part draws class probabilities from the counts (--posterior)
POSTERIOR = {"name": "binomial"}


def fmnist_population(model: str, sigma: float, grid=DEFAULT_GRID, posterior: str | None = None) -> Population:
    path = VOTES / f"{model}.npz"
    if not path.exists():
        sys.exit(f"{path} is missing: run with --collect first")
    data = np.load(path)
    return Population(f"{model} (500 test images)", sigma, tuple(grid), data["labels"].astype(int),
                      counts=data["counts"][:, 0].astype(np.float64), posterior=posterior or POSTERIOR["name"])


# -- the two plans ------------------------------------------------------------------------


def select(rng: np.random.Generator, probabilities: np.ndarray):
    """Selection: n0 votes, the top class (ties to the lowest index); its probability."""
    votes = rng.multinomial(N0, probabilities)
    top = np.argmax(votes, axis=1)
    return top, probabilities[np.arange(len(top)), top]


def fixed_radius(rng, p_top: np.ndarray, sigma: float, n: int = N) -> np.ndarray:
    """Cohen et al.'s CERTIFY at fixed n: Clopper-Pearson at alpha; -inf to abstain."""
    k = rng.binomial(n, p_top)
    with np.errstate(all="ignore"):
        lower = np.where(k > 0, stats.beta.ppf(ALPHA, np.maximum(k, 1), n - k + 1), 0.0)
    return gaussian_radius_of(sigma)(lower)


@dataclass
class Outcome:
    passes: float  # forward passes per input, n0 included
    accuracy: np.ndarray  # certified accuracy (%) at each grid level
    samples: np.ndarray  # per-input forward passes (all repetitions)
    certified: np.ndarray | None = None  # (inputs x repetitions, levels): certified and correct


def certified_accuracy(correct, radius, grid) -> np.ndarray:
    return np.array([100.0 * np.mean(correct & (radius >= r)) for r in grid])


def compare(population: Population, plan: SequentialPlan, repetitions: int, seed: int):
    """Fixed n = 100,000 and the sequential plan on the same inputs and selections."""
    rng = np.random.default_rng(seed)
    radius_of = gaussian_radius_of(population.sigma)
    grid = np.asarray(population.grid)
    correct_all, fixed_all, seq_all, used_all = [], [], [], []
    for _ in range(repetitions):
        probabilities = population.draw(rng)
        top, p_top = select(rng, probabilities)
        correct = top == population.labels
        fixed_all.append(fixed_radius(rng, p_top, population.sigma))
        level, used, _, _ = simulate_one_bound(plan, p_top, radius_of, rng)
        seq_all.append(np.where(level >= 0, grid[np.maximum(level, 0)], -np.inf))
        used_all.append(used)
        correct_all.append(correct)
    correct = np.concatenate(correct_all)
    fixed_r, seq_r, used = map(np.concatenate, (fixed_all, seq_all, used_all))
    fixed = Outcome(N0 + N, certified_accuracy(correct, fixed_r, grid), np.full(len(used), N0 + N),
                    correct[:, None] & (fixed_r[:, None] >= grid[None, :]))
    sequential = Outcome(float(np.mean(N0 + used)), certified_accuracy(correct, seq_r, grid), N0 + used,
                         correct[:, None] & (seq_r[:, None] >= grid[None, :]))
    return fixed, sequential


def plan_for(grid, **settings) -> SequentialPlan:
    return SequentialPlan(levels=tuple(grid), budget=N, alpha=ALPHA, **settings)


# -- reports ------------------------------------------------------------------------------


def accuracy_table(population: Population, fixed: Outcome, sequential: Outcome) -> list[str]:
    grid = population.grid
    lines = ["| plan | passes/input | " + " | ".join(f"r={r:g}" for r in grid) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in grid) + " |"]
    for name, outcome in (("fixed n = 100,000", fixed), ("sequential, budget 100,000", sequential)):
        lines.append(f"| {name} | {outcome.passes:,.0f} | " + " | ".join(f"{a:.1f}" for a in outcome.accuracy) + " |")
    gap = sequential.accuracy - fixed.accuracy
    # 95% interval of the difference; inputs are paired (same selection), repetitions independent
    paired = sequential.certified.astype(float) - fixed.certified.astype(float)
    half = 196.0 * paired.std(axis=0) / math.sqrt(len(paired))
    lines.append("| difference (points) | | " + " | ".join(f"{d:+.1f} ± {h:.1f}" for d, h in zip(gap, half)) + " |")
    return lines


def summary_line(population, fixed, sequential) -> str:
    gap = sequential.accuracy - fixed.accuracy
    q = np.percentile(sequential.samples, [50, 90, 99])
    return (f"{population.name}: {fixed.passes / sequential.passes:.1f}x fewer forward passes "
            f"({sequential.passes:,.0f} vs {fixed.passes:,.0f} per input; median {q[0]:,.0f}, 90th {q[1]:,.0f}, "
            f"99th {q[2]:,.0f}); largest accuracy loss {-gap.min():.1f} points (at r={population.grid[int(np.argmin(gap))]:g})")


def part_published(plan_settings, repetitions, seed, out):
    out("## Published per-image pA (ImageNet, MNIST)\n")
    for filename, name, sigma, grid in PUBLISHED:
        population = published_population(filename, name, sigma, grid)
        reps = repetitions if len(population) <= 100 else max(1, repetitions // 10)
        fixed, sequential = compare(population, plan_for(grid, **plan_settings), reps, seed)
        out(f"### {population.name}: {len(population)} images x {reps} repetitions "
            f"({population.midpoints} pA from interval midpoints)\n")
        out("\n".join(accuracy_table(population, fixed, sequential)) + "\n")
        out(summary_line(population, fixed, sequential) + "\n")


def part_fmnist(plan_settings, repetitions, seed, out):
    out("## Bundled Fashion-MNIST RS models (simulated from their measured votes)\n")
    for model, sigma in FMNIST:
        population = fmnist_population(model, sigma)
        reps = max(1, repetitions // 5)
        fixed, sequential = compare(population, plan_for(population.grid, **plan_settings), reps, seed)
        out(f"### {population.name}, sigma {sigma:g}: x {reps} repetitions\n")
        out("\n".join(accuracy_table(population, fixed, sequential)) + "\n")
        out(summary_line(population, fixed, sequential) + "\n")


def part_radius(plan_settings, repetitions, seed, out):
    out("## A single --radius R decision (the one-level plan)\n")
    out("| model | R | certified at R: fixed | sequential | passes/input: fixed | sequential | ratio |")
    out("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    cases = [(published_population(f, n, s, g), reps_for(repetitions, f)) for f, n, s, g in PUBLISHED
             if "fine" not in n]
    cases += [(fmnist_population(m, s), max(1, repetitions // 5)) for m, s in FMNIST]
    for population, reps in cases:
        radii = [r for r in population.grid if r > 0][:4]
        for radius in radii:
            one = replace(population, grid=(radius,))
            fixed, sequential = compare(one, plan_for((radius,), **plan_settings), reps, seed)
            out(f"| {population.name} | {radius:g} | {fixed.accuracy[0]:.1f} | {sequential.accuracy[0]:.1f} | "
                f"{fixed.passes:,.0f} | {sequential.passes:,.0f} | {fixed.passes / sequential.passes:.0f}x |")
    out("")


def reps_for(repetitions, filename):
    return repetitions if "mnist" not in filename else max(1, repetitions // 10)


# -- the bounds themselves -------------------------------------------------------------------


def part_bounds(plan_settings, repetitions, seed, out):
    """What each bound costs: samples to prove a level when every vote agrees, and the
    width at a fixed count in standard errors (p - bound) / sqrt(p (1 - p) / t)."""
    plan = plan_for((0.0,), **plan_settings)
    contenders = [("Clopper-Pearson, fixed n (not valid sequentially)", None),
                  ("Beta(1/2,1/2) mixture (SPEC)", JEFFREYS), ("Beta(1,0.1) mixture", TAIL_PRIOR),
                  (f"default: {plan.bounds.name}", plan.bounds)]
    out("## The bounds: samples to prove a level when every vote agrees (alpha 0.001)\n")
    levels = [(z, stats.norm.cdf(z)) for z in (1.0, 2.0, 3.0, 3.5)]
    out("| bound | " + " | ".join(f"Phi({z:g}) = {q:.5f}" for z, q in levels) + " |")
    out("| --- | " + " | ".join("---:" for _ in levels) + " |")
    for name, bound in contenders:
        cells = []
        for _, q in levels:
            if bound is None:
                cells.append(f"{math.ceil(math.log(ALPHA) / math.log(q)):,}")
                continue
            lo, hi = 1, 10 * N
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if bound.lower(mid, mid, ALPHA) >= q else (mid, hi)
            cells.append(f"{hi:,}" if hi < 10 * N else "-")
        out(f"| {name} | " + " | ".join(cells) + " |")
    out("\nWidth of the lower bound in standard errors, (S/t - bound) / sqrt(p (1 - p) / t) at S = p t:\n")
    cases = [(p, t) for p in (0.8, 0.99, 0.999) for t in (1_000, 10_000, 100_000)]
    out("| bound | " + " | ".join(f"p={p:g}, t={t:,}" for p, t in cases) + " |")
    out("| --- | " + " | ".join("---:" for _ in cases) + " |")
    for name, bound in contenders:
        cells = []
        for p, t in cases:
            s = round(p * t)
            value = clopper_pearson_lower(s, t, ALPHA) if bound is None else bound.lower(s, t, ALPHA)
            cells.append(f"{(s / t - value) / math.sqrt(p * (1 - p) / t):.2f}")
        out(f"| {name} | " + " | ".join(cells) + " |")
    out("")


def part_overhead(plan_settings, repetitions, seed, out, inputs: int = 200):
    """Python time of the decisions on the engine's path (rs asked for its certificates)."""
    from certifier.plugins import get_method

    population = fmnist_population("fmnist-rs-0.5-gaussian", 0.5)
    rng = np.random.default_rng(seed)
    method = get_method("rs")(sigma=0.5)
    plan = plan_for(population.grid, **plan_settings)
    seconds, looks, samples = [], [], []
    for p in population.draw(rng)[:inputs]:
        selection = Votes({"model": rng.multinomial(N0, p)}, clopper_pearson_lower)
        run = SequentialCertification(plan, method, selection)
        counts = np.zeros(len(p), dtype=np.int64)
        started = time.perf_counter()
        step, count = run.step({"model": counts}), 1
        while not step.stop:
            counts = counts + rng.multinomial(step.chunk, p)  # drawing votes is not timed apart: it is cheap
            step, count = run.step({"model": counts}), count + 1
        seconds.append(time.perf_counter() - started)
        looks.append(count)
        samples.append(step.samples)
    seconds, looks = np.array(seconds), np.array(looks)
    out("## The decisions' own cost (engine path, rs, fmnist-rs-0.5-gaussian inputs)\n")
    out(f"{inputs} inputs: {1e3 * seconds.mean():.1f} ms of Python per input over {looks.mean():.1f} looks "
        f"(at most {looks.max()}), {1e3 * (seconds / looks).mean():.2f} ms per look, for "
        f"{np.mean(samples):,.0f} samples per input\n")


# -- settings sweep -----------------------------------------------------------------------

PRIORS = {"Beta(1/2,1/2)": JEFFREYS, "Beta(1,0.1)": TAIL_PRIOR, "Beta(2,0.1)": BetaMixture(((1.0, 2.0, 0.1),)),
          "Beta(1,0.2)": BetaMixture(((1.0, 1.0, 0.2),)), "Beta(1,0.05)": BetaMixture(((1.0, 1.0, 0.05),))}


def part_tune(plan_settings, repetitions, seed, out):
    out("## Settings sweep: ratio of forward passes / largest accuracy loss (points)\n")
    populations = [published_population(f, n, s, g) for f, n, s, g in PUBLISHED if "fine" not in n]
    populations += [fmnist_population(m, s) for m, s in FMNIST]
    configs = [(name, prior, 0.0, futility, growth) for (name, prior), futility, growth
               in itertools.product(PRIORS.items(), (0.02, 0.05, 0.1), (1.25, 1.5))]
    configs += [("Beta(1,0.1)", TAIL_PRIOR, share, futility, 1.25)
                for share, futility in itertools.product((0.1, 0.2, 0.5), (0.1, 0.2))]
    out("| prior | final look | futility | growth | " + " | ".join(p.name for p in populations) + " |")
    out("| --- | ---: | ---: | ---: | " + " | ".join("---" for _ in populations) + " |")
    for prior_name, prior, share, futility, growth in configs:
        cells = []
        for population in populations:
            reps = repetitions if len(population) <= 100 else max(1, repetitions // 10)
            settings = dict(cs=prior, final_share=share, futility=futility, growth=growth)
            fixed, sequential = compare(population, plan_for(population.grid, **settings), reps, seed)
            gap = sequential.accuracy - fixed.accuracy
            cells.append(f"{fixed.passes / sequential.passes:.1f}x / {-gap.min():.1f}")
        out(f"| {prior_name} | {share:g} | {futility:g} | {growth:g} | " + " | ".join(cells) + " |")
    out("")


# -- the two-bound radius ---------------------------------------------------------------------


def spread(pa: float, kind: str, classes: int = 10) -> np.ndarray:
    """Class probabilities with the top class (index 0) at pa and the rest shared out."""
    rest = 1 - pa
    others = classes - 1
    if kind == "one runner-up":
        tail = [rest] + [0.0] * (others - 1)
    elif kind == "runner-up half":
        tail = [rest / 2] + [rest / 2 / (others - 1)] * (others - 1)
    else:  # "even"
        tail = [rest / others] * others
    return np.array([pa] + tail)


class _TwoBoundRS(SmoothingMethod):
    """rs with the two-bound certificate (for the sequential comparison)."""

    name = "rs-two-bound"
    norm = "l2"

    def certify(self, selection, estimation, alpha):
        return two_bound_gaussian_certificate(selection, estimation, alpha, self.sigma)


class _OneBoundRS(SmoothingMethod):
    name = "rs-one-bound"
    norm = "l2"

    def certify(self, selection, estimation, alpha):
        from certifier.methods import gaussian_certificate

        return gaussian_certificate(selection, estimation, alpha, self.sigma)


def part_two_bound(plan_settings, repetitions, seed, out):
    rng = np.random.default_rng(seed)
    sigma = 1.0
    out("## The two-bound radius: where it helps (sigma 1, 10 classes, fixed n = 100,000, alpha 0.001)\n")
    out("Mean certified radius over repetitions (abstentions count 0); exact columns use the true "
        "probabilities (the one-bound sigma Phi^-1(pA) and Cohen's two-bound sigma/2 (Phi^-1(pA) - Phi^-1(pB))).\n")
    out("| pA | rest of the mass | one-bound | two-bound | gain | exact one-bound | exact two-bound |")
    out("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    reps = max(20, repetitions * 2)
    one_method, two_method = _OneBoundRS(sigma=sigma), _TwoBoundRS(sigma=sigma)
    for pa, kind in itertools.product((0.35, 0.5, 0.6, 0.8, 0.95, 0.99, 0.999),
                                      ("one runner-up", "runner-up half", "even")):
        p = spread(pa, kind)
        radii = {"one": [], "two": []}
        for _ in range(reps):
            selection = Votes({"model": rng.multinomial(N0, p)}, clopper_pearson_lower)
            estimation = Votes({"model": rng.multinomial(N, p)}, clopper_pearson_lower)
            for key, method in (("one", one_method), ("two", two_method)):
                c = method.certify(selection, estimation, ALPHA)
                radii[key].append(c.radius if c.prediction == 0 else 0.0)
        one, two = np.mean(radii["one"]), np.mean(radii["two"])
        exact_one = max(sigma * stats.norm.ppf(pa), 0.0)
        exact_two = max(0.5 * sigma * (stats.norm.ppf(pa) - stats.norm.ppf(p[1:].max())), 0.0)
        out(f"| {pa:g} | {kind} | {one:.3f} | {two:.3f} | {two - one:+.3f} | {exact_one:.3f} | {exact_two:.3f} |")
    out("")
    # the bundled models: one-bound against two-bound, at fixed n and under the sequential plan
    grid = DEFAULT_GRID
    for model, model_sigma in FMNIST:
        population = fmnist_population(model, model_sigma)
        probabilities = population.draw(rng)
        methods = {"one-bound": _OneBoundRS(sigma=model_sigma), "two-bound": _TwoBoundRS(sigma=model_sigma)}
        plan = plan_for(grid, **plan_settings)
        radii = {(plan_name, key): [] for plan_name in ("fixed", "sequential") for key in methods}
        passes = {key: [] for key in methods}
        correct = []
        for i, p in enumerate(probabilities):
            selection = Votes({"model": rng.multinomial(N0, p)}, clopper_pearson_lower)
            estimation = Votes({"model": rng.multinomial(N, p)}, clopper_pearson_lower)
            correct.append(selection.top() == population.labels[i])
            for key, method in methods.items():
                c = method.certify(selection, estimation, ALPHA)
                radii[("fixed", key)].append(c.radius if c.prediction is not None else -np.inf)
                step = _run_sequential(plan, method, selection, p, rng)
                c = step.certificate
                radii[("sequential", key)].append(c.radius if c.prediction is not None else -np.inf)
                passes[key].append(N0 + step.samples)
        correct = np.array(correct)
        out(f"{population.name}, sigma {model_sigma:g}: certified accuracy (%) and ACR, one repetition\n")
        out("| plan | radius | passes/input | " + " | ".join(f"r={r:g}" for r in grid) + " | ACR |")
        out("| --- | --- | ---: | " + " | ".join("---:" for _ in grid) + " | ---: |")
        for (plan_name, key), values in radii.items():
            r = np.array(values)
            # the sequential radius is rounded down to the grid, so its ACR is not comparable
            acr = f"{np.mean(np.where(correct & (r >= 0), r, 0.0)):.4f}" if plan_name == "fixed" else "-"
            cost = N0 + N if plan_name == "fixed" else np.mean(passes[key])
            out(f"| {plan_name} | {key} | {cost:,.0f} | "
                + " | ".join(f"{a:.1f}" for a in certified_accuracy(correct, r, grid)) + f" | {acr} |")
        grows = np.mean(np.array(radii[("fixed", "two-bound")]) > np.array(radii[("fixed", "one-bound")]) + 1e-12)
        out(f"\nAt fixed n the two-bound radius is larger for {100 * grows:.1f}% of the inputs.\n")


def _run_sequential(plan, method, selection, p, rng):
    counts = np.zeros(len(p), dtype=np.int64)
    run = SequentialCertification(plan, method, selection)
    step = run.step({"model": counts})
    while not step.stop:
        counts = counts + rng.multinomial(step.chunk, p)
        step = run.step({"model": counts})
    return step


def gaussian_certificate_radius(selection, estimation, sigma):
    from certifier.methods import gaussian_certificate

    c = gaussian_certificate(selection, estimation, ALPHA, sigma)
    return c.radius if c.prediction is not None else -np.inf


# -- collecting the bundled models' votes -------------------------------------------------------


def collect(model: str, images: int = 500, first: int = 2000, more: int = 10_000, threshold: float = 0.99,
            seed: int = 0) -> None:
    """Class vote counts of a bundled model on the first test images, through the certifier's
    own view making and model adapter (single-threaded, nice to share the machine)."""
    import certifier

    data = np.load(SHARED / "data" / "fashion_mnist.npz")
    x = (data["x_test"][:images].astype(np.float32) / 255)[:, None]
    labels = data["y_test"][:images]
    run = certifier.load(ROOT / "models" / f"{model}.onnx", threads=1)
    groups = run.groups(x.shape[1:])
    classes = max(g.model.num_classes or 2 for g in groups.values())
    counts = np.zeros((images, len(groups), classes), dtype=np.int64)
    started = time.perf_counter()
    for i, image in enumerate(x):
        for target in (first, more):
            for g, (name, group) in enumerate(groups.items()):
                done = int(counts[i, g].sum())
                rng = np.random.default_rng([seed, i, g, done])
                while done < target:
                    size = min(target - done, 2000)
                    views = run.method.sample(np.broadcast_to(image, (size,) + image.shape), rng, name)
                    counts[i, g] += np.bincount(group.model.labels(group.adapter(views)), minlength=classes)[:classes]
                    done += size
            top = counts[i].sum(axis=0).argmax()
            if (counts[i, :, top] / counts[i].sum(axis=1)).min() < threshold:
                break
        if i % 100 == 99:
            print(f"{model}: {i + 1} images, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    VOTES.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(VOTES / f"{model}.npz", counts=counts, labels=labels,
                        groups=np.array(list(groups)), first=first, more=more, threshold=threshold, seed=seed)


def part_unanimous(plan_settings, repetitions, seed, out, images: int = 40, extra: int = 25_000):
    """Runs the models: how often do images unanimous in their 10,000 counted copies vote
    otherwise? The fmnist posteriors disagree exactly there (see Population.draw)."""
    import certifier

    data = np.load(SHARED / "data" / "fashion_mnist.npz")
    out("## Images unanimous in 10,000 copies: their other votes in more copies\n")
    out("| model | images | more copies each | other votes seen | rate | expected: binomial posterior | "
        "expected: 10-class Dirichlet |")
    out("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model, _ in FMNIST:
        stored = np.load(VOTES / f"{model}.npz")
        counts = stored["counts"][:, 0]
        n = counts.sum(axis=1)
        unanimous = np.flatnonzero((counts.max(axis=1) == n) & (n >= 10_000))
        chosen = np.random.default_rng(seed).choice(unanimous, size=min(images, len(unanimous)), replace=False)
        run = certifier.load(ROOT / "models" / f"{model}.onnx", threads=1)
        x = (data["x_test"][chosen].astype(np.float32) / 255)[:, None]
        (name, group), = run.groups(x.shape[1:]).items()
        others = 0
        for i, image in zip(chosen, x):
            top = int(np.argmax(counts[i]))
            rng = np.random.default_rng([seed, int(i), 99])
            for start in range(0, extra, 2500):
                views = run.method.sample(np.broadcast_to(image, (2500,) + image.shape), rng, name)
                others += int(np.sum(group.model.labels(group.adapter(views)) != top))
        total = len(chosen) * extra
        # posterior means of 1 - pA after 0 other votes in 10,000: 0.5 / 10,001 and 4.5 / 10,005
        out(f"| {model} | {len(chosen)} | {extra:,} | {others} | {others / total:.2e} | "
            f"{total * 0.5 / 10_001:.0f} | {total * 4.5 / 10_005:.0f} |")
    out("")


# -- main -------------------------------------------------------------------------------------

PARTS = {"bounds": part_bounds, "published": part_published, "fmnist": part_fmnist, "radius": part_radius,
         "two-bound": part_two_bound, "overhead": part_overhead, "tune": part_tune, "unanimous": part_unanimous}
#: parts that are not run by default: the sweep, and the one that runs the models
OPT_IN = ("tune", "unanimous")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=sorted(PARTS),
                        help="repeatable; default: all but tune and unanimous")
    parser.add_argument("--repetitions", type=int, default=50,
                        help="repetitions of each 100-image set (fewer for the larger sets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--collect", action="store_true", help="recount the bundled models' votes first")
    parser.add_argument("--posterior", choices=("binomial", "dirichlet"), default="binomial",
                        help="how the bundled models' class probabilities are drawn from their counts")
    parser.add_argument("--prior", help="a,b: the sequence's Beta(a, b) prior (default: the plan's, Beta(1, 0.1))")
    parser.add_argument("--final-share", type=float, help="share of alpha for the look at n (default 0.1)")
    parser.add_argument("--futility", type=float, help="level of the futility projection (default 0.2)")
    parser.add_argument("--growth", type=float, help="chunk growth factor (default 1.25)")
    args = parser.parse_args()
    POSTERIOR["name"] = args.posterior
    settings = {}
    if args.prior:
        a, b = (float(v) for v in args.prior.split(","))
        settings["cs"] = BetaMixture(((1.0, a, b),))
    for key in ("final_share", "futility", "growth"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.collect:
        for model, _ in FMNIST:
            collect(model)
    parts = args.part or [p for p in PARTS if p not in OPT_IN]
    default = SequentialPlan(levels=(0.0,), budget=N, alpha=ALPHA, **settings)
    print(f"# sequential_sim: n0 {N0}, n / budget {N:,}, alpha {ALPHA}; plan: {default.bounds.name}, futility "
          f"{default.futility}, first chunk {default.first_chunk}, growth {default.growth}; seed {args.seed}; "
          f"bundled models' posterior {args.posterior}\n")
    started = time.perf_counter()
    for part in parts:
        PARTS[part](settings, args.repetitions, args.seed, print)
        sys.stdout.flush()
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
