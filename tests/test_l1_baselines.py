"""The randomized L1 baselines of DSSN: uniform additive noise and SSN with independent cuts.

Both certify radius 2 lambda (pA_lower - 1/2) with a one-sided Clopper-Pearson bound. For
the classifier 1[z_0 > 1/2] at lambda = 1/2 both smoothed probabilities equal x_0, so the
exact L1 radius is |x_0 - 1/2| and the rate of certificates above it must stay below alpha.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import certifier
from certifier.methods import Votes
from certifier.plugins import get_method
from certifier.stats import clopper_pearson_lower
from certifier_plugins.dssn import split_centers

from onnx_models import hyperplane_model, save


def method(name, lam):
    return get_method(name)(options=get_method(name).Options(**{"lambda": lam}))


def votes(counts):
    return Votes({"model": np.array(counts)}, clopper_pearson_lower)


@pytest.mark.parametrize("name", ["uniform", "ssn"])
def test_radius_is_two_lambda_times_the_lower_bound_minus_one_half(name):
    smoothing = method(name, 1.5)
    certificate = smoothing.certify(votes([2, 98]), votes([700, 9300]), alpha=0.001)
    p_lower = stats.beta.ppf(0.001, 9300, 701)
    assert certificate.prediction == 1 and not certificate.exact
    assert certificate.radius == pytest.approx(2 * 1.5 * (p_lower - 0.5), rel=1e-12)
    assert certificate.radius < 2 * 1.5 * (0.93 - 0.5)
    # the class comes from the selection votes only; at or below 1/2 the method abstains
    assert smoothing.certify(votes([60, 40]), votes([100, 9900]), 0.001).prediction is None
    assert smoothing.certify(votes([0, 10]), votes([5000, 5000]), 0.5).prediction is None
    # ceiling: all votes agree
    ceiling = smoothing.certify(votes([100, 0]), votes([100000, 0]), 0.001).radius
    assert ceiling == pytest.approx(3 * (0.001 ** (1 / 100000) - 0.5), rel=1e-12)


@pytest.mark.parametrize("name", ["uniform", "ssn"])
def test_failure_rate_stays_under_alpha_at_the_exact_radius(name, tmp_path):
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin=name, options={"lambda": "0.5"})
    alpha = 0.1
    x0 = np.repeat([0.62, 0.3], 200)
    points = np.column_stack([x0, np.full((len(x0), 3), 0.5)]).astype(np.float32)
    results = run.certify(points, n0=20, n=200, alpha=alpha, batch_size=256, seed=4)
    exact = np.abs(x0 - 0.5)
    side = (x0 > 0.5).astype(int)
    wrong = sum(1 for r in results if r.prediction is not None
                and (r.prediction != side[r.index] or r.radius > exact[r.index]))
    assert wrong <= stats.binom.ppf(0.999, len(points), alpha)
    # and the radius is not vacuous
    assert np.mean([r.radius for r in results if r.prediction is not None]) > 0.05


def test_uniform_noise_is_uniform_on_minus_lambda_lambda():
    smoothing = method("uniform", 0.8)
    x = np.full((20000, 8), 0.25, dtype=np.float32)
    noise = (smoothing.sample(x, np.random.default_rng(0), "model") - x).reshape(-1).astype(np.float64)
    assert noise.min() >= -0.8 and noise.max() <= 0.8
    assert stats.kstest(noise, "uniform", args=(-0.8, 1.6)).pvalue > 1e-4


@pytest.mark.parametrize("lam", [0.2, 0.25, 0.5, 1.5])
def test_a_pixel_changes_only_when_a_cut_falls_between(lam):
    """The heart of Theorem 2: with the same cuts, x_i and x'_i give different noisy values
    with probability |x_i - x'_i| / (2 lambda)."""
    rng = np.random.default_rng(1)
    x, moved = rng.uniform(0, 1, 64).astype(np.float32), rng.uniform(0, 1, 64).astype(np.float32)
    samples = 20000
    cut = (rng.random((samples, 64), dtype=np.float32) * np.float32(2 * lam))
    a = split_centers(np.broadcast_to(x, cut.shape), cut.copy(), 2 * lam)
    b = split_centers(np.broadcast_to(moved, cut.shape), cut.copy(), 2 * lam)
    rate = (a != b).mean(axis=0)
    expected = np.minimum(np.abs(x - moved) / (2 * lam), 1)
    assert np.all(np.abs(rate - expected) <= 5 * np.sqrt(expected * (1 - expected) / samples) + 1e-3)
    assert a.min() >= 0 and a.max() <= 1


def test_ssn_matches_the_simple_form_for_lambda_at_least_one_half():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (1000, 10)).astype(np.float32)
    cut = rng.uniform(0, 2.4, (1000, 10)).astype(np.float32)
    general = split_centers(x, cut.copy(), 2.4)
    simple = ((x > cut) + np.minimum(cut, 1)) / 2
    assert np.allclose(general, simple, atol=1e-6)


def test_ssn_and_uniform_take_sigma_or_lambda():
    assert method("ssn", 1.0).sigma == pytest.approx(1 / math.sqrt(3))
    assert get_method("uniform")(sigma=0.5).lam == pytest.approx(0.5 * math.sqrt(3))
    with pytest.raises(certifier.CertifyError, match="needs -o lambda X or --sigma S"):
        get_method("ssn")()
