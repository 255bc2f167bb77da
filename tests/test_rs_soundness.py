"""The RS certificate: closed forms, an exactly known radius, and the failure rate at alpha."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

import certifier
from certifier.engine import Engine, Group
from certifier.methods import Votes
from certifier.noise import standard_normal
from certifier.plugins import get_method
from certifier.space import InputSpace, ModelAdapter
from certifier.stats import clopper_pearson_lower

from onnx_models import hyperplane_model, save


def binomial_lower_by_root(k: int, n: int, alpha: float) -> float:
    """The one-sided Clopper-Pearson bound from its definition: P(Bin(n, p) >= k) = alpha."""
    if k == 0:
        return 0.0
    return optimize.brentq(lambda p: stats.binom.sf(k - 1, n, p) - alpha, 1e-15, 1 - 1e-15, xtol=1e-14)


@pytest.mark.parametrize("k,n,alpha", [(1, 10, 0.05), (990, 1000, 0.001), (100000, 100000, 0.001), (51, 100, 0.01)])
def test_clopper_pearson_matches_its_definition(k, n, alpha):
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(binomial_lower_by_root(k, n, alpha), abs=1e-9)


def test_clopper_pearson_edges():
    assert clopper_pearson_lower(0, 100, 0.001) == 0.0
    # all votes agree: alpha ** (1 / n), the ceiling SPEC asks to report
    assert clopper_pearson_lower(1000, 1000, 0.001) == pytest.approx(0.001 ** (1 / 1000), rel=1e-12)


def rs(sigma=0.5):
    return get_method("rs")(sigma=sigma)


def votes(counts: list[int]) -> Votes:
    return Votes({"model": np.array(counts)}, clopper_pearson_lower)


def test_rs_radius_is_sigma_times_quantile_of_the_lower_bound():
    method = rs(0.5)
    certificate = method.certify(votes([3, 97]), votes([120, 9880]), alpha=0.001)
    p_lower = binomial_lower_by_root(9880, 10000, 0.001)
    assert certificate.prediction == 1
    assert certificate.radius == pytest.approx(0.5 * stats.norm.ppf(p_lower), rel=1e-9)
    assert certificate.radius <= 0.5 * stats.norm.ppf(9880 / 10000)


def test_rs_class_comes_from_selection_votes_only():
    method = rs()
    # Selection says class 0; estimation votes for class 1 must not change the choice.
    certificate = method.certify(votes([60, 40]), votes([10, 990]), alpha=0.001)
    assert certificate.prediction is None and certificate.radius == 0.0
    assert certificate.details["top_votes"] == 10


def test_rs_abstains_below_one_half_and_ceiling():
    method = rs(0.25)
    assert method.certify(votes([100, 0]), votes([5050, 4950]), 0.001).prediction is None
    full = method.certify(votes([100, 0]), votes([100000, 0]), 0.001)
    assert full.radius == pytest.approx(0.25 * stats.norm.ppf(0.001 ** (1 / 100000)), rel=1e-12)


def test_noise_is_standard_normal():
    rng = np.random.default_rng(1)
    draws = standard_normal(rng, (400_001,)).astype(np.float64)
    assert stats.kstest(draws, "norm").pvalue > 1e-4
    assert abs(draws.mean()) < 0.01 and abs(draws.std() - 1) < 0.01
    # tails: P(|Z| > 3) = 0.0027
    assert abs((np.abs(draws) > 3).mean() - 0.0027) < 0.0006
    # the two halves (cosine and sine of the same draw) are uncorrelated
    half = len(draws) // 2
    assert abs(np.corrcoef(draws[:half], draws[half : 2 * half])[0, 1]) < 0.01
    # chi-square of 4-dim vectors: norms of independent coordinates
    vectors = draws[: 400_000].reshape(-1, 4)
    assert stats.kstest((vectors**2).sum(1), "chi2", args=(4,)).pvalue > 1e-4


def _hyperplane_engine(tmp_path, direction, offset, sigma, **settings):
    path = save(hyperplane_model(direction, offset, (len(direction),)), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="rs", sigma=sigma)
    return run, run.engine((len(direction),), **settings)


def test_linear_model_radius_never_exceeds_the_exact_distance(tmp_path):
    """For a half-space classifier, the smoothed classifier's exact radius is the
    distance to the hyperplane; violations must occur at a rate below alpha."""
    direction = np.array([3.0, -4.0, 0.0, 0.0]) / 5.0
    offset = -0.1
    sigma, alpha = 0.5, 0.05
    rng = np.random.default_rng(7)
    points = rng.uniform(0, 1, size=(300, 4)).astype(np.float32)
    distance = np.abs(points @ direction + offset)
    run, engine = _hyperplane_engine(tmp_path, direction, offset, sigma, n0=50, n=400, alpha=alpha, batch_size=500)
    results = list(run.results(points, indices=range(len(points)), n0=50, n=400, alpha=alpha, batch_size=500, seed=3))
    side = (points @ direction + offset > 0).astype(int)
    violations = 0
    for result in results:
        if result.prediction is None:
            continue
        if result.prediction != side[result.index] or result.radius > distance[result.index]:
            violations += 1
    # Clopper-Pearson is conservative: violations stay below alpha * N with room to spare
    assert violations <= stats.binom.ppf(0.999, len(points), alpha)
    # and the certificate is not vacuous: far points get radii close to their distance
    far = [r for r in results if distance[r.index] > 0.3 and r.prediction is not None]
    assert len(far) > 50
    assert np.mean([r.radius / distance[r.index] for r in far]) > 0.5


def test_failure_rate_stays_under_alpha_near_the_boundary(tmp_path):
    """Inputs where pA is just above the decision threshold stress the bound."""
    direction = np.array([1.0, 0.0, 0.0, 0.0])
    sigma, alpha, n = 0.25, 0.1, 200
    # distance 0.05: exact pA = Phi(0.2) = 0.579
    point = np.array([[0.55, 0.5, 0.5, 0.5]], dtype=np.float32)
    points = np.repeat(point, 400, axis=0)
    run, _ = _hyperplane_engine(tmp_path, direction, -0.5, sigma)
    # every repetition gets its own noise because the seed is keyed by input index
    results = list(run.results(points, n0=20, n=n, alpha=alpha, batch_size=256, seed=11))
    over = sum(1 for r in results if r.prediction is not None and (r.prediction != 1 or r.radius > 0.05))
    assert over <= stats.binom.ppf(0.999, len(points), alpha)


def test_selection_and_estimation_use_separate_fresh_samples(tmp_path, register_methods):
    """The engine must hand certify() n0 selection votes and n estimation votes drawn
    from different noise."""
    seen = {}

    class Spy(certifier.SmoothingMethod):
        name = "spy"
        norm = "l2"

        def sample(self, x, rng, group):
            draws = rng.standard_normal(x.shape).astype(np.float32)
            seen.setdefault("draws", []).append(draws[:, 0].copy())
            return x + self.sigma * draws

        def certify(self, selection, estimation, alpha):
            seen["selection"] = selection.trials("model")
            seen["estimation"] = estimation.trials("model")
            return certifier.Certificate(selection.top(), 0.0)

    register_methods(Spy)
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="spy", sigma=1.0)
    run.certify(np.full((1, 4), 0.5, dtype=np.float32), n0=30, n=70, batch_size=1000)
    assert seen["selection"] == 30 and seen["estimation"] == 70
    selection_draws, estimation_draws = seen["draws"]
    assert len(selection_draws) == 30 and len(estimation_draws) == 70
    assert not np.isin(selection_draws, estimation_draws).any()


def test_results_do_not_depend_on_batching_or_label(tmp_path):
    direction = np.array([0.6, 0.8, 0.0, 0.0])
    path = save(hyperplane_model(direction, -0.7), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.3)
    x = np.random.default_rng(0).uniform(0, 1, (5, 4)).astype(np.float32)
    # The true label is never an input to certification: labels only fill "correct".
    with_labels = run.certify(x, np.array([0, 1, 0, 1, 0]), n=500, seed=5, batch_size=500)
    without = run.certify(x, n=500, seed=5, batch_size=500)
    assert [r.radius for r in with_labels] == [r.radius for r in without]
    assert [r.prediction for r in with_labels] == [r.prediction for r in without]
    again = run.certify(x, n=500, seed=5, batch_size=500)
    assert [r.radius for r in again] == [r.radius for r in without]


def test_predict_abstains_on_a_tie(tmp_path):
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.5)
    on_boundary = np.array([[0.5, 0.1, 0.1, 0.1]], dtype=np.float32)
    far = np.array([[1.0, 0.1, 0.1, 0.1]], dtype=np.float32)
    assert run.certify(on_boundary, n=2000, alpha=0.001, mode="predict")[0].prediction is None
    assert run.certify(far, n=2000, alpha=0.001, mode="predict")[0].prediction == 1


def test_predict_matches_the_binomial_test():
    method = rs()
    assert stats.binomtest(520, 1000, 0.5).pvalue > 0.05
    assert method.predict(votes([480, 520, 0]), 0.05) is None
    assert stats.binomtest(600, 1000, 0.5).pvalue <= 0.05
    assert method.predict(votes([400, 600, 0]), 0.05) == 1
    # the test uses the top two classes only: a third class does not dilute it
    assert method.predict(votes([300, 600, 100]), 0.001) == 1


def test_group_and_engine_refuse_mismatched_groups(tmp_path):
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    model = certifier.load(path, plugin="rs", sigma=0.5).model
    adapter = ModelAdapter((4,), model.input_dims, model.input_dtype, InputSpace())
    with pytest.raises(certifier.CertifyError):
        Engine.from_settings(rs(), {"left": Group("left", model, adapter)})
    with pytest.raises(certifier.CertifyError):
        Engine.from_settings(rs(), {"model": Group("model", model, adapter)}, alpha=1.5)


def test_radius_is_never_rounded_up_in_tables():
    from certifier.stats import round_down

    assert round_down(0.123456789, 4) == 0.1234
    assert round_down(0.99999, 4) == 0.9999
    assert math.isclose(round_down(1.0, 4), 1.0)
