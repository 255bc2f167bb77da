"""Denoised smoothing: --denoiser D puts D between the noise and the classifier (SPEC,
"Denoised smoothing"); the certificate is the wrapped method's own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from scipy import stats

import certifier
from certifier.cli import cli
from certifier.denoiser import compose, load_denoiser
from certifier.errors import CertifyError
from certifier.space import InputSpace, ModelAdapter

from onnx_models import OPSET, fixed_reshape_model, hyperplane_model, linear_model, save

MODELS = Path(__file__).resolve().parents[1] / "models"
IMAGE = (1, 4, 4)


# -- denoisers built by hand -------------------------------------------------------------


def image_graph(nodes, initializers=(), *, shape=IMAGE, out_shape=None, batch="N", input_type=TensorProto.FLOAT,
                output_type=None, opset=OPSET, metadata=None, name="input") -> onnx.ModelProto:
    """An image-to-image model: ``name`` (batch, *shape) -> "denoised" (batch, *out_shape)."""
    graph = helper.make_graph(
        nodes, "denoiser",
        [helper.make_tensor_value_info(name, input_type, [batch, *shape])],
        [helper.make_tensor_value_info("denoised", output_type or input_type, [batch, *(out_shape or shape)])],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def identity_denoiser(**options) -> onnx.ModelProto:
    return image_graph([helper.make_node("Identity", [options.pop("name", "input")], ["denoised"])], **options)


def sigma_metadata(sigma: float) -> dict[str, str]:
    return {"certifier.denoiser.sigma": repr(sigma), "certifier.denoiser.loss": "mse",
            "certifier.dataset": "unit-test"}


def linear_denoiser(matrix: np.ndarray, bias: np.ndarray, shape=IMAGE, **options) -> onnx.ModelProto:
    """D(u) = reshape(flatten(u) @ matrix + bias): a dense linear map of the whole image."""
    size = int(np.prod(shape))
    return image_graph(
        [
            helper.make_node("Reshape", ["input", "flat_shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "A"], ["mixed"]),
            helper.make_node("Add", ["mixed", "b"], ["shifted"]),
            helper.make_node("Reshape", ["shifted", "image_shape"], ["denoised"]),
        ],
        [
            numpy_helper.from_array(np.array([-1, size], np.int64), "flat_shape"),
            numpy_helper.from_array(np.array([-1, *shape], np.int64), "image_shape"),
            numpy_helper.from_array(np.asarray(matrix, np.float32), "A"),
            numpy_helper.from_array(np.asarray(bias, np.float32), "b"),
        ],
        shape=shape, **options,
    )


def constant_denoiser(image: np.ndarray, shape=IMAGE) -> onnx.ModelProto:
    """D(u) = image, whatever u is (u * 0 + image)."""
    return image_graph(
        [helper.make_node("Mul", ["input", "zero"], ["nothing"]), helper.make_node("Add", ["nothing", "c"], ["denoised"])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
         numpy_helper.from_array(np.asarray(image, np.float32).reshape(1, *shape), "c")],
        shape=shape,
    )


def blur_denoiser(channels: int = 1, shape=None, **options) -> onnx.ModelProto:
    """A fully convolutional 3x3 mean filter: any image size."""
    kernel = np.full((channels, 1, 3, 3), 1 / 9, np.float32)
    return image_graph(
        [helper.make_node("Conv", ["input", "k"], ["denoised"], pads=[1, 1, 1, 1], group=channels)],
        [numpy_helper.from_array(kernel, "k")],
        shape=shape or (channels, "H", "W"), **options,
    )


def images(count: int = 6, shape=IMAGE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, size=(count, *shape)).astype(np.float32)


def random_classifier(shape=IMAGE, classes: int = 3, seed: int = 1, **options) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    features = int(np.prod(shape))
    return linear_model(rng.normal(size=(features, classes)), rng.normal(size=classes) * 0.1, shape, **options)


def same_records(a, b) -> bool:
    keep = lambda r: {k: v for k, v in r.__dict__.items() if k != "seconds"}  # noqa: E731
    return [keep(r) for r in a] == [keep(r) for r in b]


SETTINGS = dict(n0=20, n=200, alpha=0.01, seed=5, batch_size=64)


# -- an identity denoiser changes nothing ------------------------------------------------


@pytest.mark.parametrize("declared,options,space", [
    ((1, 4, 4), {}, {}),
    ((1, 4, 4), {}, {"scale": 255.0, "mean": (120.0,), "std": (60.0,)}),
    ((4, 4, 1), {}, {}),
    ((4, 4), {}, {"scale": 2.0}),
    ((16,), {}, {"mean": (0.5,)}),
    ((16,), {}, {"layout": "nhwc"}),
    ((1, 4, 4), {"input_type": TensorProto.UINT8}, {}),
    ((1, 4, 4), {"input_type": TensorProto.FLOAT16}, {"mean": (0.25,)}),
    ((1, 4, 4), {"input_type": TensorProto.DOUBLE}, {"std": (0.3,)}),
    ((1, 4, 4), {"batch": 4}, {}),
])
def test_identity_denoiser_gives_exactly_the_rs_result(tmp_path, declared, options, space):
    """The input mapping as ONNX nodes does what ModelAdapter does in numpy, for every layout
    and dtype: the same seed gives the same records."""
    model = save(random_classifier(declared, **options), tmp_path / "model.onnx")
    denoiser = save(identity_denoiser(), tmp_path / "identity.onnx")
    x = images(5)
    plain = certifier.load(model, plugin="rs", sigma=0.5, **space).certify(x, **SETTINGS)
    run = certifier.load(model, plugin="rs", sigma=0.5, denoiser=denoiser, **space)
    denoised = run.certify(x, **SETTINGS)
    assert same_records(plain, denoised)
    assert {r.prediction for r in plain} != {None}
    (group,) = run.groups(IMAGE).values()
    assert group.denoised is not None  # the composed graph ran, not the plain model


def test_identity_denoiser_on_a_fixed_batch_classifier(tmp_path):
    weights = np.random.default_rng(2).normal(size=(16, 3))
    model = save(fixed_reshape_model(weights, np.zeros(3), IMAGE, batch=4), tmp_path / "fixed.onnx")
    denoiser = save(identity_denoiser(), tmp_path / "identity.onnx")
    x = images(3)
    plain = certifier.load(model, plugin="rs", sigma=0.5).certify(x, **SETTINGS)
    denoised = certifier.load(model, plugin="rs", sigma=0.5, denoiser=denoiser).certify(x, **SETTINGS)
    assert same_records(plain, denoised)


@pytest.mark.parametrize("layout", ["nhwc", "hw", "flat"])
def test_denoisers_in_other_layouts(tmp_path, layout):
    """A denoiser reading N x H x W x C, N x H x W or N x D images gets the views in its layout
    and gives them back as images."""
    shape = {"nhwc": (4, 4, 1), "hw": (4, 4), "flat": (16,)}[layout]
    model = save(random_classifier(), tmp_path / "model.onnx")
    denoiser = save(identity_denoiser(shape=shape), tmp_path / f"{layout}.onnx")
    x = images(4)
    plain = certifier.load(model, plugin="rs", sigma=0.5).certify(x, **SETTINGS)
    assert same_records(plain, certifier.load(model, plugin="rs", sigma=0.5, denoiser=denoiser).certify(x, **SETTINGS))


@pytest.mark.parametrize("options", [{"input_type": TensorProto.FLOAT16}, {"input_type": TensorProto.DOUBLE},
                                     {"batch": 1}])
def test_denoisers_of_other_dtypes_and_a_fixed_batch(tmp_path, options):
    """Views are cast to the denoiser's float type and back; a denoiser exported for batches
    of one runs on whole batches when its graph allows (checked as for any model)."""
    model = save(random_classifier(), tmp_path / "model.onnx")
    denoiser = save(identity_denoiser(**options), tmp_path / "identity.onnx")
    x = images(4)
    plain = certifier.load(model, plugin="rs", sigma=0.5).certify(x, **SETTINGS)
    denoised = certifier.load(model, plugin="rs", sigma=0.5, denoiser=denoiser).certify(x, **SETTINGS)
    if options.get("input_type") == TensorProto.FLOAT16:  # views rounded to float16: a few votes may move
        assert [r.prediction for r in plain] == [r.prediction for r in denoised]
        assert all(abs(a.details["top_votes"] - b.details["top_votes"]) <= 5 for a, b in zip(plain, denoised))
    else:
        assert same_records(plain, denoised)


def test_identity_denoiser_with_the_bundled_rs_model(tmp_path):
    model = MODELS / "fmnist-rs-0.25.onnx"
    with np.load(MODELS / "fmnist-samples.npz") as data:
        x = data["x"][:3]
    denoiser = save(identity_denoiser(shape=(1, 28, 28)), tmp_path / "identity.onnx")
    settings = dict(n0=50, n=300, alpha=0.001, seed=1)
    plain = certifier.load(model).certify(x, **settings)
    assert same_records(plain, certifier.load(model, denoiser=denoiser).certify(x, **settings))


# -- the certificate through a denoiser ---------------------------------------------------


def test_linear_model_soundness_through_a_linear_denoiser(tmp_path):
    """f(D(u)) with D(u) = u A + b (u a flattened image) and f the half-space w . v + c > 0 is the
    half-space (A w) . u + (w . b + c) > 0: the smoothed classifier's exact radius at x is that
    hyperplane's distance to x. Certified radii may exceed it (or the side be wrong) only at a
    rate below alpha."""
    rng = np.random.default_rng(11)
    size = int(np.prod(IMAGE))
    matrix = np.eye(size) * 0.6 + rng.normal(scale=0.3, size=(size, size))
    bias = rng.normal(scale=0.1, size=size)
    w = rng.normal(size=size)
    w /= np.linalg.norm(w)
    c = -float(w @ (np.full(size, 0.5) @ matrix + bias))  # the boundary passes through the middle of the cube
    model = save(hyperplane_model(w, c, IMAGE), tmp_path / "plane.onnx")
    denoiser = save(linear_denoiser(matrix, bias), tmp_path / "linear.onnx")
    direction, offset = matrix @ w, float(w @ bias + c)
    sigma, alpha = 0.5, 0.05
    points = rng.uniform(0, 1, size=(300, *IMAGE)).astype(np.float32)
    flat = points.reshape(len(points), -1).astype(np.float64)
    side = (flat @ direction + offset > 0).astype(int)
    distance = np.abs(flat @ direction + offset) / np.linalg.norm(direction)
    run = certifier.load(model, plugin="rs", sigma=sigma, denoiser=denoiser)
    results = run.certify(points, n0=50, n=400, alpha=alpha, batch_size=500, seed=3)
    assert _violations(results, side, distance) <= stats.binom.ppf(0.999, len(points), alpha)
    far = [r for r in results if distance[r.index] > 0.3 and r.prediction is not None]
    assert len(far) > 50
    assert np.mean([r.radius / distance[r.index] for r in far]) > 0.5
    # and the denoiser really is in the way: without it the same classifier decides otherwise
    plain = certifier.load(model, plugin="rs", sigma=sigma).certify(points, n0=50, n=400, alpha=alpha, seed=3)
    assert sum(a.prediction != b.prediction for a, b in zip(results, plain)) > 20


def _violations(results, side, distance) -> int:
    """Certificates that are wrong: another side than the smoothed classifier's, or a radius
    beyond the boundary."""
    return sum(1 for r in results if r.prediction is not None
               and (r.prediction != side[r.index] or r.radius > distance[r.index]))


def test_mutation_noise_after_the_denoiser_fails(tmp_path):
    """The check above can fail: with D(u) = 1.5 u - 0.25 (it stretches distances by 1.5), adding
    the noise after the denoiser (certifying f at D(x), the wrong order) claims radii 1.5 times
    too large, and far more than alpha of them exceed the true distance; the right order,
    f(D(x + Z)), stays within alpha on the same points."""
    rng = np.random.default_rng(12)
    size = int(np.prod(IMAGE))
    w = rng.normal(size=size)
    w /= np.linalg.norm(w)
    stretch, shift = 1.5, -0.25
    c = -float(w @ np.full(size, 0.5))  # f's boundary passes through D(0.5) = 0.5
    model = save(hyperplane_model(w, c, IMAGE), tmp_path / "plane.onnx")
    denoiser = save(linear_denoiser(np.eye(size) * stretch, np.full(size, shift)), tmp_path / "stretch.onnx")
    points = rng.uniform(0.17, 0.83, size=(300, *IMAGE)).astype(np.float32)  # D(points) stays in [0, 1]
    denoised = np.clip(points * np.float32(stretch) + np.float32(shift), 0, 1)
    margin = denoised.reshape(len(points), -1).astype(np.float64) @ w + c
    side, distance = (margin > 0).astype(int), np.abs(margin) / stretch  # |w| = 1; the input moves 1/1.5 as far
    sigma, alpha = 0.25, 0.05
    settings = dict(n0=50, n=1000, alpha=alpha, batch_size=1000, seed=4)
    bound = stats.binom.ppf(0.999, len(points), alpha)
    right = certifier.load(model, plugin="rs", sigma=sigma, denoiser=denoiser).certify(points, **settings)
    assert _violations(right, side, distance) <= bound
    wrong_order = certifier.load(model, plugin="rs", sigma=sigma).certify(denoised, **settings)
    assert _violations(wrong_order, side, distance) > 3 * bound


def test_drs_denoises_each_side(tmp_path):
    """A denoiser that returns one fixed image makes every view of either side vote for the
    classifier's class of that image: a side that skipped it would vote otherwise."""
    shape = (1, 4, 6)
    model = save(random_classifier(shape, classes=3, seed=7), tmp_path / "model.onnx")
    x = images(8, shape, seed=9)
    plain = certifier.load(model, plugin="drs", sigma=0.25).certify(x, **SETTINGS)
    # an image of a class the plain runs do not predict
    candidates = np.random.default_rng(4).uniform(-3, 3, size=(200, *shape)).astype(np.float32)
    classes = ort.InferenceSession(str(model)).run(None, {"input": candidates})[0].argmax(axis=1)
    target = int(next(c for c in classes if c not in {r.prediction for r in plain}))
    fixed = candidates[list(classes).index(target)]
    denoiser = save(constant_denoiser(fixed, shape), tmp_path / "constant.onnx")
    run = certifier.load(model, plugin="drs", sigma=0.25, denoiser=denoiser)
    results = run.certify(x, **SETTINGS)
    assert {r.prediction for r in results} == {target}
    assert all(r.details["top_votes_left"] == r.details["top_votes_right"] == SETTINGS["n"] for r in results)
    assert {r.prediction for r in run.certify(x, mode="predict", **SETTINGS)} == {target}


def test_drs_identity_denoiser_on_each_side_and_a_right_model(tmp_path):
    shape = (1, 4, 6)
    left = save(random_classifier(shape, seed=2), tmp_path / "left.onnx")
    right = save(random_classifier(shape, seed=3), tmp_path / "right.onnx")
    denoiser = save(identity_denoiser(shape=shape), tmp_path / "identity.onnx")
    x = images(5, shape)
    options = {"model-r": str(right)}
    plain = certifier.load(left, plugin="drs", sigma=0.25, options=options).certify(x, **SETTINGS)
    run = certifier.load(left, plugin="drs", sigma=0.25, options=options, denoiser=denoiser)
    assert same_records(plain, run.certify(x, **SETTINGS))
    groups = run.groups(shape)
    assert groups["left"].denoised is not groups["right"].denoised


def test_drs_sub_images_through_a_fully_convolutional_denoiser(tmp_path):
    """-o resize none: views are C x H x W/2 sub-images; a denoiser of any image size takes them."""
    shape = (1, 4, 6)
    model = save(random_classifier((1, 4, 3)), tmp_path / "sub.onnx")
    denoiser = save(blur_denoiser(), tmp_path / "blur.onnx")
    run = certifier.load(model, plugin="drs", sigma=0.25, options={"resize": "none"}, denoiser=denoiser)
    results = run.certify(images(4, shape), **SETTINGS)
    assert len(results) == 4
    fixed = save(identity_denoiser(shape=shape), tmp_path / "fixed.onnx")
    with pytest.raises(CertifyError, match=r"takes images of shape 1x4x6, but plugin drs's views are 1x4x3"):
        certifier.load(model, plugin="drs", sigma=0.25, options={"resize": "none"}, denoiser=fixed).certify(
            images(1, shape), **SETTINGS)


def test_pprs_takes_a_denoiser(tmp_path):
    model = save(random_classifier((1, 8, 8)), tmp_path / "model.onnx")
    denoiser = save(identity_denoiser(shape=(1, 8, 8)), tmp_path / "identity.onnx")
    x = images(3, (1, 8, 8))
    options = {"method": "grid"}
    plain = certifier.load(model, plugin="pprs", sigma=0.25, options=options).certify(x, **SETTINGS)
    denoised = certifier.load(model, plugin="pprs", sigma=0.25, options=options, denoiser=denoiser).certify(x, **SETTINGS)
    assert same_records(plain, denoised)


# -- composing graphs --------------------------------------------------------------------


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("denoiser_opset,classifier_opset", [(17, 13), (13, 17), (11, 17), (17, 17)])
def test_compose_reconciles_opsets(tmp_path, denoiser_opset, classifier_opset):
    """The older graph is raised to the newer opset; the composed graph computes f(map(D(u)))."""
    rng = np.random.default_rng(3)
    matrix, bias = rng.normal(size=(16, 16)) * 0.3, rng.normal(size=16) * 0.1
    denoiser_path = save(linear_denoiser(matrix, bias, opset=denoiser_opset), tmp_path / "d.onnx")
    classifier = random_classifier()
    classifier.opset_import[0].version = classifier_opset
    classifier.ir_version = 8
    adapter = ModelAdapter(IMAGE, [1, 4, 4], np.float32, InputSpace(scale=2.0, mean=(0.5,)))
    composed = compose(load_denoiser(denoiser_path), classifier, adapter, "nchw", IMAGE)
    assert {o.version for o in composed.opset_import if o.domain == ""} == {max(denoiser_opset, classifier_opset)}
    x = images(7)
    denoised = (x.reshape(7, -1) @ matrix.astype(np.float32) + bias.astype(np.float32)).reshape(x.shape)
    expected = _run(classifier, adapter(denoised.astype(np.float32)))
    np.testing.assert_allclose(_run(composed, x), expected, rtol=1e-5, atol=1e-5)


def test_compose_avoids_the_classifiers_names(tmp_path):
    """A classifier whose names look like the ones certify adds keeps them; certify's get another prefix."""
    classifier = random_classifier()
    graph = classifier.graph
    graph.input[0].name = "certify.views"
    for node in graph.node:
        node.input[:] = ["certify.views" if i == "input" else i for i in node.input]
    graph.node[0].name = "certify.mapping/1_reshape"
    path = save(classifier, tmp_path / "tricky.onnx")
    denoiser = save(identity_denoiser(), tmp_path / "identity.onnx")
    x = images(4)
    plain = certifier.load(path, plugin="rs", sigma=0.5).certify(x, **SETTINGS)
    assert same_records(plain, certifier.load(path, plugin="rs", sigma=0.5, denoiser=denoiser).certify(x, **SETTINGS))


# -- refusals, each in one line -----------------------------------------------------------


def cli_error(arguments: list[str]) -> str:
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def setup(tmp_path):
    model = save(random_classifier(), tmp_path / "model.onnx")
    data = tmp_path / "x.npz"
    np.savez(data, x=images(3), y=np.array([0, 1, 2]))
    return tmp_path, model, data


def run_args(model, data, *extra):
    return ["run", str(model), "--data", str(data), "-n", "50", "--n0", "10", *extra]


@pytest.mark.parametrize("plugin", ["uniform", "dssn", "ssn", "brightness", "contrast", "gamma", "translation"])
def test_methods_whose_views_are_not_noisy_images_refuse_a_denoiser(setup, plugin):
    tmp_path, model, data = setup
    denoiser = save(identity_denoiser(), tmp_path / "identity.onnx")
    sigma = [] if plugin == "translation" else ["--sigma", "0.5"]  # translation has no noise scale
    line = cli_error(run_args(model, data, "--plugin", plugin, *sigma, "--denoiser", str(denoiser)))
    assert f"plugin {plugin} does not take a denoiser" in line and "drs, pprs, rs" in line


def test_a_plugin_takes_a_denoiser_only_when_it_says_so(tmp_path):
    """denoisable is opt-in: a new method whose views may be anything refuses a denoiser."""
    from certifier import Certificate, SmoothingMethod
    from certifier.denoiser import check_denoiser
    from certifier.plugins import get_methods

    class Shifted(SmoothingMethod):
        name = "shifted"
        norm = "l2"

        def sample(self, x, rng, group):
            return x

        def certify(self, selection, estimation, alpha):
            return Certificate(selection.top(), 0.0)

    denoiser = load_denoiser(save(identity_denoiser(), tmp_path / "identity.onnx"))
    with pytest.raises(CertifyError, match="plugin shifted does not take a denoiser"):
        check_denoiser(denoiser, Shifted(sigma=0.5))
    Shifted.denoisable = True
    check_denoiser(denoiser, Shifted(sigma=0.5))
    assert [m for m in ("rs", "pprs", "drs", "uniform", "dssn", "ssn")
            if get_methods()[m].denoisable] == ["rs", "pprs", "drs"]


def test_a_denoiser_trained_for_another_sigma_is_refused_unless_allowed(setup):
    tmp_path, model, data = setup
    denoiser = save(identity_denoiser(metadata=sigma_metadata(0.25)), tmp_path / "d25.onnx")
    line = cli_error(run_args(model, data, "--plugin", "rs", "--sigma", "0.5", "--denoiser", str(denoiser)))
    assert "trained for sigma 0.25 but --sigma is 0.5" in line and "--allow-denoiser-sigma-mismatch" in line
    output = tmp_path / "run.jsonl"
    result = CliRunner().invoke(cli, run_args(model, data, "--plugin", "rs", "--sigma", "0.5", "--denoiser",
                                              str(denoiser), "--allow-denoiser-sigma-mismatch", "--output",
                                              str(output)))
    assert result.exit_code == 0, result.output
    header = json.loads(output.read_text().splitlines()[0])
    assert header["settings"]["sigma"] == 0.5
    assert header["denoiser_metadata"]["certifier.denoiser.sigma"] == "0.25"


def test_the_denoisers_sigma_is_the_default(setup):
    tmp_path, model, data = setup
    denoiser = save(identity_denoiser(metadata=sigma_metadata(0.25)), tmp_path / "d25.onnx")
    run = certifier.load(model, plugin="rs", denoiser=denoiser)
    assert run.method.sigma == 0.25
    result = CliRunner().invoke(cli, run_args(model, data, "--plugin", "rs", "--denoiser", str(denoiser)))
    assert result.exit_code == 0, result.output
    assert "sigma 0.25 from the denoiser's metadata" in result.output


def test_an_unusable_recorded_sigma_is_refused(setup):
    tmp_path, model, data = setup
    denoiser = save(identity_denoiser(metadata={"certifier.denoiser.sigma": "wide"}), tmp_path / "odd.onnx")
    line = cli_error(run_args(model, data, "--plugin", "rs", "--sigma", "0.5", "--denoiser", str(denoiser)))
    assert "certifier.denoiser.sigma metadata is 'wide'" in line


def test_a_denoiser_that_changes_the_shape_is_refused(setup):
    tmp_path, model, data = setup
    declared = image_graph([helper.make_node("MaxPool", ["input"], ["denoised"], kernel_shape=[2, 2], strides=[2, 2])],
                           out_shape=(1, 2, 2))
    line = cli_error(run_args(model, data, "--plugin", "rs", "--sigma", "0.5", "--denoiser",
                              str(save(declared, tmp_path / "declared.onnx"))))
    assert "changes the shape of an image: it takes 1x4x4 and returns 1x2x2" in line
    hidden = image_graph([helper.make_node("MaxPool", ["input"], ["denoised"], kernel_shape=[2, 2], strides=[2, 2])],
                         out_shape=("C", "H", "W"))
    line = cli_error(run_args(model, data, "--plugin", "rs", "--sigma", "0.5", "--denoiser",
                              str(save(hidden, tmp_path / "hidden.onnx"))))
    assert "returns 3x1x2x2 for a batch of 3x1x4x4" in line and "changes the shape" in line


def test_a_denoiser_for_other_images_is_refused(setup):
    tmp_path, model, data = setup
    other = save(identity_denoiser(shape=(1, 28, 28)), tmp_path / "big.onnx")
    line = cli_error(run_args(model, data, "--plugin", "rs", "--sigma", "0.5", "--denoiser", str(other)))
    assert "takes images of shape 1x28x28, but plugin rs's views are 1x4x4" in line


@pytest.mark.parametrize("problem,message", [
    ("two inputs", "a denoiser takes exactly one input"),
    ("two outputs", "a denoiser gives exactly one output"),
    ("integer", "is UINT8; a denoiser reads and writes float images"),
    ("not onnx", "--denoiser: "),
    ("missing", "--denoiser: model file not found"),
])
def test_files_that_are_not_denoisers_are_refused(setup, problem, message):
    tmp_path, model, data = setup
    path = tmp_path / "bad.onnx"
    if problem == "two inputs":
        bad = identity_denoiser()
        bad.graph.input.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, ["N", 1, 4, 4]))
        save(bad, path)
    elif problem == "two outputs":
        bad = identity_denoiser()
        bad.graph.node.append(helper.make_node("Identity", ["input"], ["copy"]))
        bad.graph.output.append(helper.make_tensor_value_info("copy", TensorProto.FLOAT, ["N", 1, 4, 4]))
        save(bad, path)
    elif problem == "integer":
        save(identity_denoiser(input_type=TensorProto.UINT8), path)
    elif problem == "not onnx":
        path.write_bytes(b"not a model at all")
    line = cli_error(run_args(model, data, "--plugin", "rs", "--sigma", "0.5", "--denoiser", str(path)))
    assert message in line


def test_feature_vectors_are_not_images(tmp_path):
    model = save(random_classifier((16,)), tmp_path / "flat.onnx")
    denoiser = save(identity_denoiser(shape=(16,)), tmp_path / "flat-denoiser.onnx")
    with pytest.raises(CertifyError, match=r"makes views of shape 16, not images \(C x H x W\): a denoiser cleans images"):
        certifier.load(model, plugin="rs", sigma=0.5, denoiser=denoiser).certify(np.zeros((1, 16), np.float32), **SETTINGS)


def test_a_denoiser_given_as_the_model_is_named(setup):
    tmp_path, _, data = setup
    denoiser = save(identity_denoiser(metadata=sigma_metadata(0.25)), tmp_path / "d.onnx")
    line = cli_error(run_args(denoiser, data, "--plugin", "rs", "--sigma", "0.25"))
    assert "d.onnx is a denoiser" in line and "--denoiser" in line


# -- results files: header, resume, report -------------------------------------------------


def test_header_resume_and_report(setup):
    tmp_path, model, data = setup
    first = save(identity_denoiser(metadata=sigma_metadata(0.5)), tmp_path / "first.onnx")
    second = save(blur_denoiser(metadata=sigma_metadata(0.5)), tmp_path / "second.onnx")
    output = tmp_path / "run.jsonl"
    base = run_args(model, data, "--plugin", "rs", "--sigma", "0.5", "--output", str(output))
    result = CliRunner().invoke(cli, [*base, "--denoiser", str(first), "--limit", "2"])
    assert result.exit_code == 0, result.output
    header = json.loads(output.read_text().splitlines()[0])
    assert header["denoiser"] == str(first)
    assert header["denoiser_sha256"] == certifier.load(model, plugin="rs", sigma=0.5, denoiser=first).denoiser.sha256
    assert header["denoiser_metadata"] == sigma_metadata(0.5)
    # another denoiser, or none, is another setting: the file is not resumed
    for other in (["--denoiser", str(second)], []):
        line = cli_error([*base, *other])
        assert "holds results for other settings (denoiser_sha256" in line
    # the same denoiser resumes
    result = CliRunner().invoke(cli, [*base, "--denoiser", str(first)])
    assert result.exit_code == 0 and "resuming" in result.output, result.output
    assert len(output.read_text().splitlines()) == 4  # header and three records
    plain = tmp_path / "plain.jsonl"
    assert CliRunner().invoke(cli, run_args(model, data, "--plugin", "rs", "--sigma", "0.5", "--output",
                                            str(plain))).exit_code == 0
    assert "denoiser" not in json.loads(plain.read_text().splitlines()[0])
    report = CliRunner().invoke(cli, ["report", str(output), str(plain)])
    assert report.exit_code == 0, report.output
    (row,) = [line for line in report.output.splitlines() if line.startswith("denoiser")]
    assert row.split()[1:] == ["first.onnx", "none"]
    alone = CliRunner().invoke(cli, ["report", str(plain)])
    assert not any(line.startswith("denoiser") for line in alone.output.splitlines())


# -- the bundled denoisers ----------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mse", "stab"])
@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_bundled_denoisers_record_what_they_were_trained_for(loss, sigma):
    denoiser = load_denoiser(MODELS / f"fmnist-denoiser-{loss}-{sigma}.onnx")
    assert denoiser.sigma == sigma
    plain = certifier.load(MODELS / "fmnist-plain.onnx", plugin="rs", sigma=sigma).model
    assert denoiser.trained_through_another(plain.sha256) is None
    if loss == "stab":  # trained through the plain classifier: the noise-trained model is another one
        rs_model = certifier.load(MODELS / f"fmnist-rs-{sigma}.onnx").model
        assert "trained through another classifier" in denoiser.trained_through_another(rs_model.sha256)
    else:  # an MSE denoiser never saw a classifier
        assert denoiser.trained_through_another("0" * 64) is None


def test_the_bundled_stability_denoiser_helps_the_plain_classifier():
    """At sigma 0.5 the plain classifier's smoothed predictions are mostly wrong or abstain;
    through the stability denoiser most are right (same seed, same noise)."""
    with np.load(MODELS / "fmnist-samples.npz") as data:
        x, y = data["x"][:30], data["y"][:30]
    settings = dict(n0=20, n=100, alpha=0.001, seed=0)
    model = MODELS / "fmnist-plain.onnx"
    bare = certifier.load(model, plugin="rs", sigma=0.5).certify(x, y, **settings)
    denoised = certifier.load(model, plugin="rs", sigma=0.5,
                              denoiser=MODELS / "fmnist-denoiser-stab-0.5.onnx").certify(x, y, **settings)
    assert sum(r.correct for r in denoised) >= sum(r.correct for r in bare) + 6


def test_a_stability_denoiser_used_with_another_classifier_is_noted(tmp_path):
    data = tmp_path / "x.npz"
    with np.load(MODELS / "fmnist-samples.npz") as samples:
        np.savez(data, x=samples["x"][:1], y=samples["y"][:1])
    denoiser = str(MODELS / "fmnist-denoiser-stab-0.25.onnx")
    for model, noted in (("fmnist-rs-0.25.onnx", True), ("fmnist-plain.onnx", False)):
        result = CliRunner().invoke(cli, run_args(MODELS / model, data, "--plugin", "rs", "--denoiser", denoiser))
        assert result.exit_code == 0, result.output
        assert ("was trained through another classifier" in result.output) is noted, result.output
