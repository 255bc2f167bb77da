"""Issue 18, items 1, 2 and 8: certificates that must not depend on --batch-size (models and
denoisers that mix the rows of large batches only, results files resumed with another batch
size), and the denoiser named for the failures it causes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import certifier
from certifier.cli import cli
from certifier.errors import CertifyError
from certifier.model import load_model
from certifier.remote import ShippedInputs, build_engine, certify_one, read_parts, worker_spec
from certifier.results import INCIDENTAL_KEYS

from onnx_models import OPSET, linear_model, nan_model, save
from test_denoiser import IMAGE, identity_denoiser, image_graph, images, linear_denoiser, random_classifier
from test_hardening_more import no_debug, one_line_error  # noqa: F401  (no_debug is a fixture)


def invoke(*arguments):
    return CliRunner().invoke(cli, [str(a) for a in arguments])


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


# -- graphs that mix the rows of some batch sizes only ----------------------------------------


def _batch_switch(low: int, high: int | None) -> tuple[list, list]:
    """Nodes computing "switch" = 1.0 when the batch holds low..high rows (no upper end: None), else 0.0."""
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["rows"], axis=0),
        helper.make_node("GreaterOrEqual", ["rows", "low"], ["from_low"]),
    ]
    constants = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
                 numpy_helper.from_array(np.array(low, np.int64), "low"),
                 numpy_helper.from_array(np.array(high or 2**62, np.int64), "high")]
    nodes += [
        helper.make_node("LessOrEqual", ["rows", "high"], ["to_high"]),
        helper.make_node("And", ["from_low", "to_high"], ["in_range"]),
        helper.make_node("Cast", ["in_range"], ["switch"], to=TensorProto.FLOAT),
    ]
    return nodes, constants


def switching_model(weights, bias, extra, input_shape, *, low: int = 8, high: int | None = None,
                    weight: float = 1.0, companions: bool = True) -> onnx.ModelProto:
    """logits = flat(x) W + b, plus weight * (the batch's mean of flat(x), or ones) U in batches of
    low..high rows: a function of each input alone in smaller batches, the probes' sizes at load."""
    features = int(np.prod(input_shape))
    switch, constants = _batch_switch(low, high)
    shared = (helper.make_node("ReduceMean", ["flat"], ["shared"], axes=[0], keepdims=1) if companions else
              helper.make_node("Identity", ["ones"], ["shared"]))
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["product"]),
        helper.make_node("Add", ["product", "b"], ["plain"]),
        shared,
        helper.make_node("MatMul", ["shared", "U"], ["term"]),
        *switch,
        helper.make_node("Mul", ["term", "switch"], ["switched"]),
        helper.make_node("Mul", ["switched", "weight"], ["scaled"]),
        helper.make_node("Add", ["plain", "scaled"], ["logits"]),
    ]
    classes = np.asarray(weights).shape[1]
    graph = helper.make_graph(
        nodes, "switching",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=[*constants,
                     numpy_helper.from_array(np.asarray(weights, np.float32), "W"),
                     numpy_helper.from_array(np.asarray(bias, np.float32), "b"),
                     numpy_helper.from_array(np.asarray(extra, np.float32), "U"),
                     numpy_helper.from_array(np.ones((1, features), np.float32), "ones"),
                     numpy_helper.from_array(np.array(weight, np.float32), "weight")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def one_pixel_model(**options) -> onnx.ModelProto:
    """The issue's case: one pixel x, class 1 when x > 0.4, so at x = 0.5 the exact L2 radius is
    0.1; batches of 8 or more add their mean pixel to class 1's score."""
    return switching_model([[-1.0, 1.0]], [0.4, -0.4], [[0.0, 1.0]], (1,), **options)


def image_model(**options) -> onnx.ModelProto:
    """A random linear classifier on 1x4x4 images that mixes batches of 8 or more."""
    rng = np.random.default_rng(1)
    return switching_model(rng.normal(size=(16, 3)), rng.normal(size=3) * 0.1, rng.normal(size=(16, 3)) * 5, IMAGE,
                           **options)


def mixing_denoiser(low: int = 8) -> onnx.ModelProto:
    """D(u) = u + the batch's mean image, in batches of ``low`` images or more."""
    switch, constants = _batch_switch(low, None)
    return image_graph(
        [*switch,
         helper.make_node("ReduceMean", ["input"], ["mean"], axes=[0], keepdims=1),
         helper.make_node("Mul", ["mean", "switch"], ["shift"]),
         helper.make_node("Add", ["input", "shift"], ["denoised"])],
        constants,
    )


@pytest.fixture
def pixel_case(tmp_path):
    model = save(one_pixel_model(), tmp_path / "hostile.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.full((2, 1), 0.5, np.float32))
    return tmp_path, model, data


# -- item 1: coupling checked at the batch sizes the run uses ------------------------------------------


def certify_pixel(case, *extra):
    tmp_path, model, data = case
    output = tmp_path / f"run{len(list(tmp_path.glob('run*')))}.jsonl"
    result = invoke(model, "--data", data, "-p", "rs", "-s", "0.25", "--n0", "100", "-n", "2000", "-q",
                    "--output", output, *extra)
    return result, output


@pytest.mark.parametrize("batch_size", [1, 7])
def test_the_issues_model_certifies_soundly_in_batches_it_does_not_mix(pixel_case, batch_size):
    result, output = certify_pixel(pixel_case, "--batch-size", batch_size)
    assert result.exit_code == 0, result.output
    radii = [r["radius"] for r in records(output)]
    assert radii and all(0 < radius <= 0.1 for radius in radii)  # the exact radius is 0.1


@pytest.mark.parametrize("extra", [["--batch-size", "8"], ["--batch-size", "50"], [],
                                   ["--batch-size", "50", "--sampling", "sequential"]])
def test_the_issues_model_is_refused_in_batches_it_mixes(pixel_case, extra):
    """Before: radii of 0.31 to 0.33 at --batch-size 8 or 50 (the ceiling with a larger term),
    three times the exact radius 0.1."""
    result, output = certify_pixel(pixel_case, *extra)
    one_line_error(result, "hostile.onnx", "depends on the other inputs in its batch", "in this run's batches of",
                   "--batch-size 1")
    assert records(output) == []


def test_the_partial_last_batch_of_an_input_is_checked_too(pixel_case):
    tmp_path, _, data = pixel_case
    save(one_pixel_model(low=6, high=6), tmp_path / "six.onnx")  # mixes batches of exactly 6 rows
    # batches of 32 views: 32 selection, then 32, 32 and the last 6 of the 70 estimation views
    result = invoke(tmp_path / "six.onnx", "--data", data, "-p", "rs", "-s", "0.25", "--n0", "32", "-n", "70",
                    "--batch-size", "32", "-q")
    one_line_error(result, "six.onnx", "in this run's batches of 6")


def test_a_model_whose_answers_change_with_the_batch_size_alone_is_refused(pixel_case):
    """No row sees another, but batches of 8 or more answer otherwise than one input alone: the
    certificate would be for a model that exists only at that batch size."""
    tmp_path, _, data = pixel_case
    save(one_pixel_model(companions=False), tmp_path / "sized.onnx")
    result = invoke(tmp_path / "sized.onnx", "--data", data, "-p", "rs", "-s", "0.25", "--n0", "20", "-n", "200",
                    "--batch-size", "50", "-q")
    one_line_error(result, "sized.onnx", "in this run's batches of 20", "--batch-size 1")


def test_rounding_in_large_batches_is_not_coupling(pixel_case):
    tmp_path, _, data = pixel_case
    save(one_pixel_model(weight=1e-7), tmp_path / "faint.onnx")
    result = invoke(tmp_path / "faint.onnx", "--data", data, "-p", "rs", "-s", "0.25", "--n0", "20", "-n", "200",
                    "--batch-size", "50", "-q")
    assert result.exit_code == 0, result.output


def test_an_allowed_coupled_model_runs_each_input_alone_from_the_batch_that_shows_it(tmp_path):
    """allow_batch_coupling (the command line's --batch-size 1) in a run of larger batches: the
    model mixes batches of 8 or more only, so it passes the probes at load; the first real batch
    shows it, and every view is then classified alone, exactly as by the model that never mixes."""
    x = np.full((2, 1), 0.5, np.float32)
    results, coupled = [], []
    for name, proto, allow in [("hostile", one_pixel_model(), True), ("plain", one_pixel_model(weight=0.0), False)]:
        run = certifier.load(save(proto, tmp_path / f"{name}.onnx"), plugin="rs", sigma=0.25, device="cpu",
                             allow_batch_coupling=allow)
        assert run.model.batch_coupled is False
        results.append([(r.prediction, r.radius) for r in run.certify(x, n0=20, n=500, batch_size=64, seed=1)])
        coupled.append(run.model.batch_coupled)
    assert results[0] == results[1]
    assert coupled == [True, False]


def test_the_check_costs_three_runs_per_batch_size_not_per_batch(tmp_path):
    model = load_model(save(linear_model(np.eye(4, 3), np.zeros(3), (4,)), tmp_path / "m.onnx"), device="cpu")
    sizes = []
    original = model._run
    model._run = lambda batch: sizes.append(len(batch)) or original(batch)
    run = certifier.api.Run(model, certifier.api.make_method("rs", 0.5, {}, {}), space=certifier.InputSpace())
    list(run.certify(np.random.default_rng(0).random((3, 4)).astype(np.float32), n0=10, n=100, batch_size=32))
    # per input: 10 selection views, then 32 + 32 + 32 + 4 estimation views
    engine_runs = 3 * [10, 32, 32, 32, 4]
    # once per size: the batch again (rearranged), then its first and last views alone
    checks = [10, 1, 1, 32, 1, 1, 4, 1, 1]
    assert sorted(sizes) == sorted(engine_runs + checks)


def test_a_worker_checks_the_batches_it_runs(pixel_case):
    """Ray's actors build their engines from the driver's recipe (certifier.remote): the check is
    the model's own, so a worker refuses the batches the driver would."""
    tmp_path, model, _ = pixel_case
    x = np.full((2, 1), 0.5, np.float32)
    run = certifier.load(model, plugin="rs", sigma=0.25, device="cpu")
    with run.job(x, n0=20, n=200, batch_size=50) as job:
        spec, paths = worker_spec(job, device="cpu", threads=1, workers=None)
    engine = build_engine(spec, {sha: read_parts(p) for sha, p in paths.items()})
    with pytest.raises(CertifyError, match="hostile.onnx.*in this run's batches of 20.*--batch-size 1"):
        certify_one(engine, ShippedInputs((1,)), 0, x[0], "certify")


# -- the composed graph: denoisers that mix large batches, and which network is named ------------------


@pytest.fixture
def image_case(tmp_path):
    save(random_classifier(), tmp_path / "model.onnx")
    data = tmp_path / "x.npz"
    np.savez(data, x=images(3), y=np.array([0, 1, 2]))
    return tmp_path, data


def certify_denoised(case, model: str, denoiser: str, *extra):
    tmp_path, data = case
    return invoke("run", tmp_path / model, "--data", data, "-n", "200", "--n0", "20", "-p", "rs", "-s", "0.25",
                  "--denoiser", tmp_path / denoiser, "-q", *extra)


def test_a_denoiser_that_mixes_only_large_batches_is_refused_by_name(image_case):
    tmp_path, _ = image_case
    save(mixing_denoiser(8), tmp_path / "mixer.onnx")
    assert certify_denoised(image_case, "model.onnx", "mixer.onnx", "--batch-size", "7").exit_code == 0
    one_line_error(certify_denoised(image_case, "model.onnx", "mixer.onnx", "--batch-size", "50"),
                   "the output of the denoiser mixer.onnx for an input depends on the other inputs in its batch",
                   "in this run's batches of 20", "--batch-size 1")


def test_a_denoiser_that_mixes_every_batch_is_named_not_the_classifier(image_case):
    tmp_path, _ = image_case
    save(mixing_denoiser(1), tmp_path / "mixer.onnx")
    one_line_error(certify_denoised(image_case, "model.onnx", "mixer.onnx"),
                   "the output of the denoiser mixer.onnx for an input depends on the other inputs", "--batch-size 1")


def test_a_classifier_that_mixes_large_batches_behind_a_denoiser_is_named(image_case):
    tmp_path, _ = image_case
    save(image_model(), tmp_path / "mixing.onnx")
    save(identity_denoiser(), tmp_path / "identity.onnx")
    error = one_line_error(certify_denoised(image_case, "mixing.onnx", "identity.onnx", "--batch-size", "50"),
                           "the output of mixing.onnx for an input depends", "--batch-size 1")
    assert "the denoiser" not in error


def test_a_denoiser_that_mixes_its_batch_runs_at_batch_size_one(image_case):
    """Item 8: --batch-size 1 runs a mixing denoiser one view at a time (each view's batch mean
    is itself: D(u) = 2u), so it certifies what the denoiser 2u certifies. Before: refused with
    advice about ONNX opsets."""
    tmp_path, data = image_case
    save(mixing_denoiser(1), tmp_path / "mixer.onnx")
    save(linear_denoiser(2 * np.eye(16), np.zeros(16)), tmp_path / "double.onnx")
    outputs = []
    for name in ("mixer.onnx", "double.onnx"):
        outputs.append(tmp_path / f"{name}.jsonl")
        result = certify_denoised(image_case, "model.onnx", name, "--batch-size", "1", "--output", outputs[-1])
        assert result.exit_code == 0, result.output
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in records(outputs[0])] == [strip(r) for r in records(outputs[1])]


# -- item 8: NaN and infinity traced to the network that gives them -----------------------------------


def non_finite_denoiser(how: str) -> onnx.ModelProto:
    """NaN or infinity everywhere (u * NaN, u / 0), or NaN only where a pixel exceeds 3 (u + 0 * log(3 - u))."""
    if how == "nan":
        return image_graph([helper.make_node("Mul", ["input", "c"], ["denoised"])],
                           [numpy_helper.from_array(np.array(np.nan, np.float32), "c")])
    if how == "infinity":
        return image_graph([helper.make_node("Div", ["input", "c"], ["denoised"])],
                           [numpy_helper.from_array(np.array(0.0, np.float32), "c")])
    return image_graph(
        [helper.make_node("Sub", ["c", "input"], ["room"]), helper.make_node("Log", ["room"], ["log"]),
         helper.make_node("Mul", ["log", "zero"], ["nothing"]), helper.make_node("Add", ["input", "nothing"], ["denoised"])],
        [numpy_helper.from_array(np.array(3.0, np.float32), "c"), numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )


@pytest.mark.parametrize("how", ["nan", "infinity"])
def test_a_denoiser_that_returns_nan_or_infinity_is_named(image_case, how):
    """Before: "the model output NaN ...; check --scale, --mean, --std"."""
    tmp_path, _ = image_case
    save(non_finite_denoiser(how), tmp_path / "broken.onnx")
    error = one_line_error(certify_denoised(image_case, "model.onnx", "broken.onnx"),
                           "the denoiser broken.onnx returns NaN or infinity")
    assert "--scale" not in error


def test_a_denoiser_that_returns_nan_for_some_views_is_named_when_it_does(image_case):
    tmp_path, _ = image_case
    save(non_finite_denoiser("above 3"), tmp_path / "fragile.onnx")
    # at sigma 2 many views have a pixel above 3; the test images at load do not
    error = one_line_error(certify_denoised(image_case, "model.onnx", "fragile.onnx", "-s", "2"),
                           "the denoiser fragile.onnx returned NaN or infinity for", "noisy views")
    assert "--scale" not in error


def test_a_classifier_that_gives_nan_behind_a_denoiser_is_named(image_case):
    tmp_path, _ = image_case
    save(nan_model(16, 3), tmp_path / "nan.onnx")  # log(x - 2): NaN on images in [0, 1]
    model = onnx.load(str(tmp_path / "nan.onnx"))
    dim = model.graph.input[0].type.tensor_type.shape.dim
    del dim[1:]
    for size in IMAGE:
        dim.add().dim_value = size
    model.graph.node.insert(0, helper.make_node("Flatten", ["pixels"], ["input"], axis=1))
    model.graph.input[0].name = "pixels"
    save(model, tmp_path / "nan.onnx")
    save(identity_denoiser(), tmp_path / "identity.onnx")
    one_line_error(certify_denoised(image_case, "nan.onnx", "identity.onnx"),
                   "the model output NaN (output 'logits') on the images the denoiser identity.onnx returned",
                   "--scale")


# -- item 2: a results file resumes only with the batch size that wrote it --------------------------


@pytest.fixture
def resume_case(tmp_path):
    save(linear_model(np.random.default_rng(0).normal(size=(16, 3)), np.zeros(3), (16,)), tmp_path / "m.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(1).random((4, 16)).astype(np.float32))
    return tmp_path, data


def certify_linear(case, output: Path, *extra):
    tmp_path, data = case
    return invoke(tmp_path / "m.onnx", "--data", data, "-p", "rs", "-s", "0.5", "--n0", "10", "-n", "300", "-q",
                  "--output", output, *extra)


def comparable(path: Path) -> tuple[dict, list]:
    header, *rest = [json.loads(line) for line in path.read_text().splitlines()]
    return ({k: v for k, v in header.items() if k not in INCIDENTAL_KEYS},
            [{k: v for k, v in r.items() if k != "seconds"} for r in rest])


@pytest.mark.parametrize("plan", [[], ["--sampling", "sequential"]])
def test_a_results_file_resumes_only_with_its_batch_size(resume_case, plan):
    """Before: a fixed-n file resumed with another --batch-size mixed two noise streams (each
    record valid, the file equal to no uninterrupted run)."""
    tmp_path, _ = resume_case
    whole, part = tmp_path / "whole.jsonl", tmp_path / "part.jsonl"
    assert certify_linear(resume_case, whole, "--batch-size", "32", *plan).exit_code == 0
    assert certify_linear(resume_case, part, "--batch-size", "32", "--limit", "2", *plan).exit_code == 0
    before = part.read_text()
    one_line_error(certify_linear(resume_case, part, "--batch-size", "16", *plan),
                   "part.jsonl was written with --batch-size 32, this run's is 16", "resume with --batch-size 32")
    assert part.read_text() == before
    assert json.loads(before.splitlines()[0])["batch_size"] == 32
    assert certify_linear(resume_case, part, "--batch-size", "32", *plan).exit_code == 0
    assert comparable(part) == comparable(whole)


def test_a_file_from_before_the_batch_size_was_recorded_resumes_as_it_did(resume_case):
    tmp_path, _ = resume_case
    part = tmp_path / "part.jsonl"
    assert certify_linear(resume_case, part, "--batch-size", "32", "--limit", "2").exit_code == 0
    header, *rest = part.read_text().splitlines(keepends=True)
    old = json.loads(header)
    del old["batch_size"]
    part.write_text(json.dumps(old) + "\n" + "".join(rest))
    result = certify_linear(resume_case, part, "--batch-size", "16")
    assert result.exit_code == 0, result.output
    assert len(records(part)) == 4 and "batch_size" not in json.loads(part.read_text().splitlines()[0])


def test_exact_methods_record_no_batch_size(tmp_path):
    """An exact method runs every view once, whatever the batch: the batch size changes nothing."""
    run = certifier.load(save(linear_model(np.eye(16, 3), np.zeros(3), (1, 4, 4)), tmp_path / "m.onnx"),
                         plugin="dssn", sigma=0.5, device="cpu")
    with run.job(images(2), batch_size=7) as job:
        assert job.header["batch_size"] is None
