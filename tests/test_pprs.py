"""PPRS: the certificate is RS's for the composite classifier f(A_S(u) u); closed forms
under a fixed grid, the failure rate at alpha, the conditional opt-in, training and show."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

import certifier
from certifier.cli import cli
from certifier.methods import Votes
from certifier.plugins import get_method
from certifier import format_summary, summarize
from certifier.stats import clopper_pearson_lower
from certifier_plugins import superpixels

from onnx_models import hyperplane_model, save

SHAPE = (1, 6, 6)  # not (1, 4, 4): a last axis of 4 reads as channels-last


def pprs(sigma=0.5, **options):
    method_class = get_method("pprs")
    return method_class(sigma=sigma, options=certifier.api.parse_options(method_class, options))


def votes(counts):
    return Votes({"model": np.array(counts)}, clopper_pearson_lower)


def grid_matrix(segments=9) -> np.ndarray:
    """A_S of the fixed grid of 2x2 cells on a 6x6 image, as a 36x36 matrix."""
    labels = superpixels.grid_labels(6, 6, segments).ravel()
    same = labels[:, None] == labels[None, :]
    return same / same.sum(axis=1, keepdims=True)


# A direction with variation inside the grid cells: averaging removes part of it, so a
# plugin that skipped the averaging would have a different decision boundary.
DIRECTION = np.random.default_rng(12).integers(-2, 5, 36).astype(np.float64)
OFFSET = -0.5 * (grid_matrix() @ DIRECTION).sum()


def exact_margin(points: np.ndarray) -> np.ndarray:
    """Signed distance of each point to the smoothed classifier's boundary (A w) . x + b = 0."""
    effective = grid_matrix() @ DIRECTION
    return (points.reshape(len(points), -1) @ effective + OFFSET) / np.linalg.norm(effective)


@pytest.fixture
def plane(tmp_path):
    return save(hyperplane_model(DIRECTION, OFFSET, SHAPE), tmp_path / "plane.onnx")


def test_grid_views_have_the_closed_form_vote_probability(plane):
    """Under a fixed partition, w . A(x + Z) + b ~ N((Aw) . x + b, sigma^2 ||Aw||^2)."""
    sigma = 0.5
    x = np.full((1, *SHAPE), 0.4, dtype=np.float32)
    x[0, 0, 0, :2] = 0.9
    run = certifier.load(plane, plugin="pprs", sigma=sigma, options={"method": "grid", "segments": 9})
    result = run.certify(x, n0=10, n=40_000, alpha=0.001, seed=1)[0]
    p_exact = stats.norm.cdf(abs(exact_margin(x)[0]) / sigma)
    p_hat = result.details["top_votes"] / 40_000
    assert abs(p_hat - p_exact) < 4 * np.sqrt(p_exact * (1 - p_exact) / 40_000)
    # the unaveraged linear model has a visibly different vote probability here
    raw = (x.reshape(-1) @ DIRECTION + OFFSET) / np.linalg.norm(DIRECTION)
    assert abs(stats.norm.cdf(abs(raw) / sigma) - p_exact) > 0.05


def test_grid_radius_never_exceeds_the_exact_distance(plane):
    """The exact radius of the smoothed composite classifier is the distance to its
    boundary; certificates above it (or on the wrong side) must occur below alpha."""
    sigma, alpha = 0.5, 0.05
    points = np.random.default_rng(7).uniform(0, 1, size=(300, *SHAPE)).astype(np.float32)
    margin = exact_margin(points)
    run = certifier.load(plane, plugin="pprs", sigma=sigma, options={"method": "grid", "segments": 9})
    results = run.certify(points, n0=50, n=400, alpha=alpha, batch_size=450, seed=3)
    side = (margin > 0).astype(int)
    wrong = sum(1 for r in results if r.prediction is not None
                and (r.prediction != side[r.index] or r.radius > abs(margin[r.index])))
    assert wrong <= stats.binom.ppf(0.999, len(points), alpha)
    far = [r for r in results if abs(margin[r.index]) > 0.3 and r.prediction is not None]
    assert len(far) > 50
    assert np.mean([r.radius / abs(margin[r.index]) for r in far]) > 0.5


def test_failure_rate_stays_under_alpha_near_the_boundary(plane):
    sigma, alpha = 0.25, 0.1
    effective = grid_matrix() @ DIRECTION
    unit = effective / np.linalg.norm(effective)
    # a point at distance 0.05 from the boundary: exact pA = Phi(0.2)
    base = np.full(36, 0.5)
    base += (0.05 - exact_margin(base.reshape(1, *SHAPE))[0]) * unit
    points = np.repeat(base.reshape(1, *SHAPE).astype(np.float32), 400, axis=0)
    assert abs(exact_margin(points[:1])[0] - 0.05) < 1e-5
    run = certifier.load(plane, plugin="pprs", sigma=sigma, options={"method": "grid", "segments": 9})
    results = run.certify(points, n0=20, n=200, alpha=alpha, batch_size=256, seed=11)
    over = sum(1 for r in results if r.prediction is not None and (r.prediction != 1 or r.radius > 0.05))
    assert over <= stats.binom.ppf(0.999, len(points), alpha)


@pytest.mark.parametrize("method", ["slic", "felzenszwalb", "quickshift", "grid"])
def test_certificate_is_rs_for_every_partition(method):
    """Sound rule: the partition is part of the base classifier, so the radius is RS's."""
    certificate = pprs(0.5, method=method).certify(votes([3, 97]), votes([120, 9880]), alpha=0.001)
    expected = get_method("rs")(sigma=0.5).certify(votes([3, 97]), votes([120, 9880]), alpha=0.001)
    assert certificate.prediction == expected.prediction == 1
    assert certificate.radius == expected.radius
    assert certificate.conditional is None
    # the class comes from the selection votes only
    assert pprs(0.5, method=method).certify(votes([60, 40]), votes([10, 990]), 0.001).prediction is None


def test_clean_partition_is_opt_in_conditional_and_scaled_by_one_minus_rho():
    sound = pprs(0.5).certify(votes([3, 97]), votes([120, 9880]), alpha=0.001)
    conditional = pprs(0.5, partition_from="clean", rho=0.2).certify(votes([3, 97]), votes([120, 9880]), alpha=0.001)
    assert conditional.radius == pytest.approx(0.8 * sound.radius, rel=1e-12)
    assert conditional.radius <= 0.8 * sound.radius
    assert "rho=0.2" in conditional.conditional and "unverified" in conditional.conditional
    with pytest.raises(certifier.CertifyError, match="needs -o rho"):
        pprs(0.5, partition_from="clean")
    with pytest.raises(certifier.CertifyError, match="rho applies only"):
        pprs(0.5, rho=0.1)
    with pytest.raises(certifier.CertifyError, match="rho"):
        pprs(0.5, partition_from="clean", rho=1.0)


def test_conditional_results_are_marked_in_the_results_and_summary(plane, tmp_path):
    x = np.random.default_rng(2).uniform(0, 1, (3, *SHAPE)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    out = tmp_path / "clean.jsonl"
    result = CliRunner().invoke(cli, ["--plugin", "pprs", "--sigma", "0.5", "-o", "method", "grid", "-o", "segments", "9",
                                      "-o", "partition-from", "clean", "-o", "rho", "0.3", "-n", "300", "-q", str(plane),
                                      "--data", str(tmp_path / "x.npz"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    certified = [r for r in records if r.get("type") == "result" and r["prediction"] is not None]
    assert certified and all("rho=0.3" in r["conditional"] for r in certified)
    from certifier.results import load_any_results

    header, loaded = load_any_results(out)
    assert "CONDITIONAL" in format_summary([summarize(loaded, header=header)], ["clean"])


def test_clean_partition_is_computed_once_per_input_and_matches_per_row():
    method = pprs(0.5, partition_from="clean", rho=0.1, method="slic")
    x = np.random.default_rng(3).uniform(0, 1, (1, 1, 28, 28)).astype(np.float32)
    broadcast = np.broadcast_to(x, (6, 1, 28, 28))
    assert np.array_equal(method._labels_for(broadcast, broadcast), method.partition(np.repeat(x, 6, axis=0)))
    # the partition of the clean input does not depend on the noise
    views = method.sample(broadcast, np.random.default_rng(0), "model")
    labels = method.partition(x)[0]
    for view in views[:, 0]:
        for k in np.unique(labels):
            assert np.ptp(view[labels == k]) < 1e-5


def test_noisy_partition_follows_each_sample():
    method = pprs(0.5, method="slic")
    x = np.random.default_rng(4).uniform(0, 1, (1, 1, 28, 28)).astype(np.float32)
    views = method.sample(np.broadcast_to(x, (8, 1, 28, 28)), np.random.default_rng(1), "model")
    # each view is piecewise constant, and the pieces differ from sample to sample
    pieces = [len(np.unique(v)) for v in views]
    assert all(10 <= p <= 100 for p in pieces)
    assert len({tuple(np.unique(v).round(6)) for v in views}) == len(views)
    # the same generator state gives the same views
    again = method.sample(np.broadcast_to(x, (8, 1, 28, 28)), np.random.default_rng(1), "model")
    assert np.array_equal(views, again)


@pytest.mark.parametrize("method", ["slic", "felzenszwalb", "quickshift", "grid"])
def test_views_work_for_colour_and_large_images(method):
    pprs_method = pprs(0.25, method=method)
    x = np.random.default_rng(5).uniform(0, 1, (2, 3, 40, 56)).astype(np.float32)
    pprs_method.prepare((3, 40, 56), {})
    views = pprs_method.sample(x, np.random.default_rng(0), "model")
    assert views.shape == x.shape and views.dtype == np.float32
    assert max(len(np.unique(v[0])) for v in views) < 40 * 56 / 2


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(certifier.CertifyError, match="partitions images"):
        pprs().prepare((784,), {})
    with pytest.raises(certifier.CertifyError, match="1 or 3 channels"):
        pprs(method="slic").prepare((4, 8, 8), {})
    pprs(method="felzenszwalb").prepare((4, 8, 8), {})
    x = np.full((2, 1, 8, 8), np.nan, dtype=np.float32)
    with pytest.raises(certifier.CertifyError, match="not finite"):
        pprs().sample(x, np.random.default_rng(0), "model")
    with pytest.raises(certifier.CertifyError, match="no option"):
        pprs(colour="red")


def test_training_uses_the_pprs_views_and_records_the_options(tmp_path):
    """certify train --plugin pprs trains on f(A_S(u) u) and the model carries its options."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 12, 12), dtype=np.uint8)
    y = (x[:, :6].mean(axis=(1, 2)) > x[:, 6:].mean(axis=(1, 2))).astype(np.int64)
    np.savez(tmp_path / "tiny.npz", x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    model = tmp_path / "tiny-pprs.onnx"
    result = CliRunner().invoke(cli, ["train", "--plugin", "pprs", "--sigma", "0.25", "-o", "method", "felzenszwalb",
                                      "-o", "min-size", "4", "--data", str(tmp_path / "tiny.npz"), "--epochs", "1",
                                      "--width", "4", "--out", str(model), "-q"])
    assert result.exit_code == 0, result.output
    run = certifier.load(model)
    assert run.method.name == "pprs" and run.method.sigma == 0.25
    assert run.method.options.method == "felzenszwalb" and run.method.options.min_size == 4
    training = json.loads(run.model.metadata["certifier.training"])
    assert training["settings"]["options"]["method"] == "felzenszwalb"


def test_show_writes_the_clean_noisy_and_partitioned_views(tmp_path):
    pytest.importorskip("matplotlib")
    method = pprs(0.5, method="slic")
    x = np.random.default_rng(6).uniform(0, 1, (1, 28, 28)).astype(np.float32)
    stages = method.stages(x[None], np.random.default_rng(0), "model")
    assert [name for name, _ in stages] == ["noisy sample", "slic partition", "superpixel means (model input)"]
    assert stages[0][1].shape == (1, 1, 28, 28) and stages[1][1].shape == (1, 3, 28, 28)
    np.savez(tmp_path / "one.npz", x=x[None])
    out = tmp_path / "pprs.png"
    result = CliRunner().invoke(cli, ["show", "--plugin", "pprs", "--sigma", "0.5", "-o", "method", "felzenszwalb",
                                      str(tmp_path / "one.npz"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
