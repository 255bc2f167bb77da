"""DRS: the sub-images, the certificate rule, a closed form with exact smoothed
probabilities, two models end to end, training, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from scipy import optimize, stats

import certifier
from certifier.cli import cli
from certifier.methods import Votes
from certifier.plugins import get_method
from certifier.stats import clopper_pearson_lower
from certifier_plugins.drs import LEFT, RIGHT, merge, scatter, split

from onnx_models import hyperplane_model, linear_model, save

# -- the sub-images ----------------------------------------------------------------


def numbered(shape) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def test_each_side_takes_one_diagonal_of_every_2x2_block():
    x = numbered((2, 3, 6, 8))
    left, right = split(x, LEFT), split(x, RIGHT)
    assert left.shape == right.shape == (2, 3, 6, 4)
    for a in range(3):
        for b in range(4):
            block = x[:, :, 2 * a : 2 * a + 2, 2 * b : 2 * b + 2]
            # main diagonal to the left sub-image, anti-diagonal to the right one
            assert (left[:, :, 2 * a, b] == block[:, :, 0, 0]).all()
            assert (left[:, :, 2 * a + 1, b] == block[:, :, 1, 1]).all()
            assert (right[:, :, 2 * a, b] == block[:, :, 0, 1]).all()
            assert (right[:, :, 2 * a + 1, b] == block[:, :, 1, 0]).all()


def test_the_sides_partition_the_pixels_and_the_norm():
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 4, 6), (2, 3, 5, 6), (1, 1, 6, 7), (1, 2, 3, 3)]:
        x = numbered(shape)
        both = np.concatenate([split(x, LEFT).ravel(), split(x, RIGHT).ravel()])
        padding = shape[0] * shape[1] * shape[2] * (shape[3] % 2)
        assert np.array_equal(np.sort(both), np.sort(np.concatenate([x.ravel(), np.zeros(padding)])))
        # a perturbation d of x moves the sub-images by split(d), whose parts add up to ||d||
        # (the zero padding of an odd width is a constant, so it adds nothing)
        clean = rng.uniform(0, 1, shape).astype(np.float32)
        d = rng.normal(size=shape).astype(np.float32)
        moved = [split(clean + d, side) - split(clean, side) for side in (LEFT, RIGHT)]
        assert np.allclose(moved[0], split(d, LEFT), atol=1e-6) and np.allclose(moved[1], split(d, RIGHT), atol=1e-6)
        squared = sum(float((m.astype(np.float64) ** 2).sum()) for m in moved)
        assert squared == pytest.approx(float((d.astype(np.float64) ** 2).sum()), rel=1e-5)


def test_split_of_a_broadcast_input_matches_a_copied_one():
    x = numbered((1, 1, 4, 4))
    broadcast = np.broadcast_to(x, (5, 1, 4, 4))
    for side in (LEFT, RIGHT):
        assert np.array_equal(split(broadcast, side), split(np.repeat(x, 5, axis=0), side))


@pytest.mark.parametrize("side", [LEFT, RIGHT])
@pytest.mark.parametrize("width", [8, 7])
def test_resizing_keeps_each_pixel_and_fills_the_others(side, width):
    x = numbered((2, 1, 6, width))
    sub = split(x, side)
    mask = scatter(np.ones_like(sub), side, width) == 1
    for mode in ("nearest", "bilinear"):
        full = merge(sub, side, width, mode)
        assert full.shape == x.shape
        assert np.array_equal(full[mask], x[mask])
    assert np.array_equal(merge(sub, side, width, "nearest"), np.repeat(sub, 2, axis=-1)[..., :width])


@pytest.mark.parametrize("side", [LEFT, RIGHT])
def test_bilinear_is_exact_on_a_plane_away_from_the_border(side):
    rows, cols = np.meshgrid(np.arange(8), np.arange(10), indexing="ij")
    plane = (0.3 * rows - 0.7 * cols + 2.0).astype(np.float32)[None, None]
    full = merge(split(plane, side), side, 10, "bilinear")
    assert np.allclose(full[..., 1:-1, 1:-1], plane[..., 1:-1, 1:-1], atol=1e-5)
    # on the border a missing pixel is still a mean of its neighbours
    assert full.min() >= plane.min() - 1e-5 and full.max() <= plane.max() + 1e-5


# -- the certificate rule ------------------------------------------------------------


def lower_by_root(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson bound from its definition: P(Bin(n, p) >= k) = alpha."""
    if k == 0:
        return 0.0
    return optimize.brentq(lambda p: stats.binom.sf(k - 1, n, p) - alpha, 1e-15, 1 - 1e-15, xtol=1e-15)


def drs(sigma=0.5, **options):
    method_class = get_method("drs")
    return method_class(sigma=sigma, options=method_class.Options(**options))


def votes(left, right) -> Votes:
    return Votes({LEFT: np.array(left), RIGHT: np.array(right)}, clopper_pearson_lower)


def test_radius_is_sigma_over_root_2_times_the_sum_of_quantiles_at_alpha_over_2():
    sigma, alpha, n = 0.5, 0.001, 10_000
    certificate = drs(sigma).certify(votes([2, 98], [10, 90]), votes([10, 9990], [4000, 6000]), alpha)
    p_left, p_right = lower_by_root(9990, n, alpha / 2), lower_by_root(6000, n, alpha / 2)
    expected = sigma / math.sqrt(2) * (stats.norm.ppf(p_left) + stats.norm.ppf(p_right))
    assert certificate.prediction == 1
    assert certificate.radius == pytest.approx(expected, rel=1e-9)
    assert certificate.details["p_lower_left"] == pytest.approx(p_left, rel=1e-9)
    # what the public code reports (RS radius per side at alpha, combined as sqrt(r_l^2 + r_r^2))
    # is a different, larger number on these votes
    r_left = sigma * stats.norm.ppf(lower_by_root(9990, n, alpha))
    r_right = sigma * stats.norm.ppf(lower_by_root(6000, n, alpha))
    assert math.hypot(r_left, r_right) > 1.2 * certificate.radius


def test_abstains_unless_the_two_lower_bounds_sum_to_one():
    method = drs(0.25)
    # a good left side, a poor right side: pl + pr < 1
    assert method.certify(votes([0, 10], [0, 10]), votes([1000, 9000], [9000, 1000]), 0.001).prediction is None
    # a right side below one half still helps when pl + pr >= 1, and lowers the radius
    certificate = method.certify(votes([0, 10], [0, 10]), votes([10, 9990], [5600, 4400]), 0.001)
    assert certificate.prediction == 1
    p_left, p_right = lower_by_root(9990, 10_000, 0.0005), lower_by_root(4400, 10_000, 0.0005)
    assert p_right < 0.5 and p_left + p_right > 1
    assert 0 < certificate.radius < 0.25 / math.sqrt(2) * stats.norm.ppf(p_left)


def test_class_comes_from_the_summed_selection_votes():
    method = drs()
    # left alone says 1, the sum says 0; estimation votes for 1 must not change it
    certificate = method.certify(votes([40, 60], [90, 10]), votes([0, 1000], [0, 1000]), 0.001)
    assert certificate.prediction is None and certificate.details["top_votes_left"] == 0


def test_radius_ceiling_is_all_votes_agreeing_at_alpha_over_2(tmp_path):
    model = save(linear_model(np.ones((8, 2)), np.zeros(2), (1, 4, 2)), tmp_path / "m.onnx")
    run = certifier.load(model, plugin="drs", sigma=0.5, options={"resize": "none"})
    engine = run.engine((1, 4, 4), n0=10, n=1000, alpha=0.001)
    assert engine.radius_ceiling() == pytest.approx(
        0.5 * math.sqrt(2) * stats.norm.ppf(0.0005 ** (1 / 1000)), rel=1e-12)


# -- a closed form: linear sub-classifiers with exact smoothed probabilities --------------

SIGMA, ALPHA = 0.5, 0.05
W_LEFT = np.array([1.0, -2.0, 0.5, 0.0, 1.5, 0.0, -1.0, 0.5])
W_RIGHT = np.array([0.0, 0.3, -0.2, 0.1, 0.0, 0.0, 0.2, -0.1])
B_LEFT, B_RIGHT = -0.1, -0.02


def exact_margins(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """t = (w . x_side + b) / (sigma ||w||): P(f_side(x_side + Z) = 1) = Phi(t) exactly."""
    flat = lambda side: split(x, side).reshape(len(x), -1).astype(np.float64)  # noqa: E731
    t_left = (flat(LEFT) @ W_LEFT + B_LEFT) / (SIGMA * np.linalg.norm(W_LEFT))
    t_right = (flat(RIGHT) @ W_RIGHT + B_RIGHT) / (SIGMA * np.linalg.norm(W_RIGHT))
    return t_left, t_right


def exact_radius(t_left, t_right, label):
    """sigma / sqrt(2) * (Phi^-1(p_l) + Phi^-1(p_r)) at the exact probabilities of ``label``;
    negative when ``label`` is not the smoothed classifier's class."""
    sign = np.where(np.asarray(label) == 1, 1.0, -1.0)
    return sign * SIGMA / math.sqrt(2) * (t_left + t_right)


@pytest.fixture
def linear_pair(tmp_path):
    """Different two-class linear models for the two sides, reading C x H x W/2 sub-images."""
    left = save(hyperplane_model(W_LEFT, B_LEFT, (1, 4, 2)), tmp_path / "left.onnx")
    right = save(hyperplane_model(W_RIGHT, B_RIGHT, (1, 4, 2)), tmp_path / "right.onnx")
    run = certifier.load(left, plugin="drs", sigma=SIGMA, options={"resize": "none", "model-r": str(right)})
    return run


def test_the_reference_radius_is_the_exact_radius_of_the_smoothed_classifier():
    """With linear sub-classifiers, g is itself linear: the reference radius is where it
    flips, so no sound certificate may exceed it."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (50, 1, 4, 4))
    t_left, t_right = exact_margins(x)
    label = (t_left + t_right > 0).astype(int)
    radius = exact_radius(t_left, t_right, label)
    # the worst direction moves both sides by the same length against their normals
    normal_left = scatter(np.broadcast_to((W_LEFT / np.linalg.norm(W_LEFT)).reshape(1, 1, 4, 2), (50, 1, 4, 2)), LEFT, 4)
    normal_right = scatter(np.broadcast_to((W_RIGHT / np.linalg.norm(W_RIGHT)).reshape(1, 1, 4, 2), (50, 1, 4, 2)), RIGHT, 4)
    toward_0 = -(normal_left + normal_right) / math.sqrt(2)  # unit norm
    sign = np.where(label == 1, 1.0, -1.0)[:, None, None, None]
    for scale, flips in ((0.999, False), (1.001, True)):
        moved = x + sign * toward_0 * (scale * radius)[:, None, None, None]
        t_l, t_r = exact_margins(moved)
        summed = stats.norm.cdf(t_l) + stats.norm.cdf(t_r)  # P(class 1) over both sides
        assert (((summed > 1).astype(int) != label) == flips).all()


def test_certificates_never_exceed_the_exact_radius_more_often_than_alpha(linear_pair):
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (300, 1, 4, 4)).astype(np.float32)
    t_left, t_right = exact_margins(x)
    results = linear_pair.certify(x, n0=50, n=400, alpha=ALPHA, batch_size=450, seed=4)
    violations, certified, tight = 0, 0, []
    for r in results:
        if r.prediction is None:
            continue
        certified += 1
        truth = exact_radius(t_left[r.index], t_right[r.index], r.prediction)
        violations += r.radius > truth
        if truth > 0.3:
            tight.append(r.radius / truth)
    assert violations <= stats.binom.ppf(0.999, len(x), ALPHA)
    # not vacuous: most inputs are certified, with radii close to the exact ones
    assert certified > 200 and len(tight) > 100 and np.mean(tight) > 0.6

    # The same votes under the public code's rule (RS radius per side at alpha, abstain only
    # when both are zero, sqrt(r_l^2 + r_r^2)) exceed the exact radius far more often.
    def public_rule(r):
        radii = [SIGMA * max(0.0, stats.norm.ppf(clopper_pearson_lower(r.details[f"top_votes_{s}"], 400, ALPHA)))
                 for s in (LEFT, RIGHT)]
        return math.hypot(*radii)

    over = sum(public_rule(r) > exact_radius(t_left[r.index], t_right[r.index], r.prediction)
               for r in results if r.prediction is not None)
    assert over > 3 * stats.binom.ppf(0.999, len(x), ALPHA)


def test_failure_rate_stays_under_alpha_near_the_boundary(linear_pair):
    """One input repeated, both sides barely above one half: every repetition gets fresh noise."""
    point = np.full((1, 1, 4, 4), 0.25, dtype=np.float32)
    t_left, t_right = exact_margins(point)
    assert 0 < t_left[0] < 0.1 and 0 < t_right[0] < 0.3
    truth = {c: exact_radius(t_left, t_right, c)[0] for c in (0, 1)}
    assert 0.05 < truth[1] < 0.15
    results = linear_pair.certify(np.repeat(point, 400, axis=0), n0=20, n=500, alpha=0.1, batch_size=520, seed=9)
    over = sum(r.prediction is not None and r.radius > truth[r.prediction] for r in results)
    assert over <= stats.binom.ppf(0.999, 400, 0.1)
    assert sum(r.prediction == 1 for r in results) > 100


# -- two models, the command line, odd sizes -----------------------------------------------


def constant_model(label: int, shape, classes: int = 3) -> onnx.ModelProto:
    bias = np.zeros(classes, dtype=np.float32)
    bias[label] = 5.0
    return linear_model(np.zeros((int(np.prod(shape)), classes)), bias, shape)


def test_two_models_through_the_cli(tmp_path):
    left = save(constant_model(2, (1, 6, 6)), tmp_path / "left.onnx")
    right = save(constant_model(1, (1, 6, 6)), tmp_path / "right.onnx")
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).uniform(0, 1, (3, 6, 6)).astype(np.float32),
             y=np.array([2, 1, 0]))
    output = tmp_path / "run.jsonl"
    result = CliRunner().invoke(cli, ["--plugin", "drs", "--sigma", "0.25", "-o", "model-r", str(right), "-n", "300",
                                      "--n0", "20", "-q", str(left), "--data", str(tmp_path / "x.npz"),
                                      "--output", str(output)])
    assert result.exit_code == 0, result.output
    header, *records = [json.loads(line) for line in output.read_text().splitlines()]
    assert set(header["group_models"]) == {RIGHT}
    assert header["settings"]["options"] == {"resize": "bilinear", "model_r": str(right)}
    for record in records:
        # each side's votes came from its own model; the tie on the sum goes to class 1
        assert record["details"]["top_votes_left"] == 0 and record["details"]["top_votes_right"] == 300
        assert record["prediction"] is None


@pytest.mark.parametrize("resize,view", [("none", (1, 5, 4)), ("nearest", (1, 5, 7)), ("bilinear", (1, 5, 7))])
def test_odd_sizes_are_padded(tmp_path, resize, view):
    model = save(constant_model(0, view), tmp_path / "m.onnx")
    run = certifier.load(model, plugin="drs", sigma=0.25, options={"resize": resize})
    x = np.random.default_rng(0).uniform(0, 1, (2, 1, 5, 7)).astype(np.float32)
    assert run.method.view_shape((1, 5, 7), LEFT) == view
    results = run.certify(x, n0=10, n=100, alpha=0.01)
    assert all(r.prediction == 0 and r.radius > 0 for r in results)


def cli_error(*arguments) -> str:
    result = CliRunner().invoke(cli, list(map(str, arguments)))
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_bad_input_is_one_line(tmp_path):
    flat = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "flat.onnx")
    np.savez(tmp_path / "flat.npz", x=np.full((1, 4), 0.5, dtype=np.float32))
    assert "not images" in cli_error("--plugin", "drs", "--sigma", "0.5", flat, "--data", tmp_path / "flat.npz")
    full = save(constant_model(0, (1, 6, 6)), tmp_path / "full.onnx")
    np.savez(tmp_path / "x.npz", x=np.full((1, 6, 6), 0.5, dtype=np.float32))
    data = ("--data", tmp_path / "x.npz")
    message = cli_error("--plugin", "drs", "--sigma", "0.5", "-o", "resize", "none", full, *data)
    assert "makes views of shape 1x6x3" in message and "full.onnx takes" in message
    message = cli_error("--plugin", "drs", "--sigma", "0.5", "-o", "resize", "cubic", full, *data)
    assert "resize" in message
    message = cli_error("--plugin", "drs", "--sigma", "0.5", "-o", "model-r", tmp_path / "missing.onnx", full, *data)
    assert "missing.onnx" in message
    thin = save(constant_model(0, (1, 6, 1)), tmp_path / "thin.onnx")
    np.savez(tmp_path / "thin.npz", x=np.full((1, 6, 1), 0.5, dtype=np.float32))
    assert "at least 2 x 2" in cli_error("--plugin", "drs", "--sigma", "0.5", thin, "--data", tmp_path / "thin.npz")


def test_a_one_sided_model_must_be_paired(tmp_path):
    def trained_on(group):
        metadata = {"certifier.plugin": "drs", "certifier.sigma": "0.5", "certifier.group": group}
        bias = np.array([1.0, 0.0], dtype=np.float32)
        return save(linear_model(np.zeros((36, 2)), bias, (1, 6, 6), metadata=metadata), tmp_path / f"{group}.onnx")

    np.savez(tmp_path / "x.npz", x=np.full((1, 6, 6), 0.5, dtype=np.float32))
    data = ("--data", tmp_path / "x.npz")
    assert "-o model-r" in cli_error("--plugin", "drs", trained_on(LEFT), *data)
    assert "right sub-images only" in cli_error("--plugin", "drs", trained_on(RIGHT), *data)
    result = CliRunner().invoke(cli, ["-q", str(trained_on(LEFT)), "-o", "model-r", str(trained_on(RIGHT)),
                                      "-n", "50", "--n0", "10", *map(str, data)])
    assert result.exit_code == 0, result.output


# -- training and pictures -----------------------------------------------------------


@pytest.fixture
def tiny_data(tmp_path):
    """Two classes of 8x8 images: a bright left half or a bright right half."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 160)
    x = rng.uniform(0, 0.3, (160, 8, 8))
    x[y == 0, :, :4] += 0.6
    x[y == 1, :, 4:] += 0.6
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=(x[:128] * 255).astype(np.uint8), y_train=y[:128],
             x_test=(x[128:] * 255).astype(np.uint8), y_test=y[128:])
    return path


def train(tmp_path, data, out, *extra):
    pytest.importorskip("torch")
    result = CliRunner().invoke(cli, ["train", "--plugin", "drs", "--sigma", "0.25", "--data", str(data), "--epochs",
                                      "2", "--batch-size", "32", "--width", "4", "--out", str(tmp_path / out), "-q",
                                      *extra])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(tmp_path / out))
    metadata = {p.key: p.value for p in model.metadata_props}
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    return metadata, dims


def test_train_on_sub_images_one_model_or_one_per_side(tmp_path, tiny_data):
    metadata, dims = train(tmp_path, tiny_data, "both.onnx", "-o", "resize", "none")
    assert dims == [1, 8, 4] and metadata["certifier.group"] == "left,right"
    assert json.loads(metadata["certifier.options"])["resize"] == "none"
    training = json.loads(metadata["certifier.training"])
    assert not math.isnan(training["validation_clean_accuracy"])
    for side in (LEFT, RIGHT):
        metadata, dims = train(tmp_path, tiny_data, f"{side}.onnx", "-o", "resize", "none", "--group", side)
        assert dims == [1, 8, 4] and metadata["certifier.group"] == side
    metadata, dims = train(tmp_path, tiny_data, "full.onnx", "-o", "resize", "bilinear")
    assert dims == [1, 8, 8]
    # the models certify: one for both sides, or one per side (options come from the metadata)
    x_test = np.load(tiny_data)["x_test"]
    for main, extra in (("both.onnx", {}), ("left.onnx", {"model-r": str(tmp_path / "right.onnx")}),
                        ("full.onnx", {})):
        run = certifier.load(tmp_path / main, options=extra)
        assert run.method.name == "drs" and run.method.sigma == 0.25
        results = run.certify(x_test[:4], n0=10, n=50, alpha=0.01)
        assert len(results) == 4


def test_show_draws_each_side(tmp_path):
    pytest.importorskip("matplotlib")
    from certifier_plugins.show import render

    x = np.random.default_rng(0).uniform(0, 1, (1, 6, 6)).astype(np.float32)
    method = drs(0.25)
    stages = method.stages(x[None], np.random.default_rng(0), RIGHT)
    assert [name for name, _ in stages] == ["right pixels", "noisy right sub-image", "bilinear view (right)"]
    assert stages[1][1].shape == (1, 1, 6, 3) and stages[2][1].shape == (1, 1, 6, 6)
    render(method, x, tmp_path / "drs.png", samples=1)
    assert (tmp_path / "drs.png").stat().st_size > 1000


def test_a_bad_input_space_on_sub_image_views_is_not_blamed_on_their_shape(tmp_path):
    sub = save(constant_model(0, (1, 6, 3)), tmp_path / "sub.onnx")
    np.savez(tmp_path / "x.npz", x=np.full((1, 6, 6), 0.5, dtype=np.float32))
    message = cli_error("--plugin", "drs", "--sigma", "0.5", "-o", "resize", "none", "--std", "0", sub,
                        "--data", tmp_path / "x.npz")
    assert "std" in message and "makes views of shape" not in message
