"""Issue 9, second round: input spaces, class names, batch coupling, extreme alphas,
training settings, show's limits and class folders."""

from __future__ import annotations

import json
import math
import os
import warnings
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from scipy import special, stats

import certifier
from certifier import CertifyError
from certifier.cli import cli
from certifier.data import load_data
from certifier.model import BATCH_TOLERANCE, load_model
from certifier.space import InputSpace, ModelAdapter
from certifier.stats import clopper_pearson_lower, clopper_pearson_upper

from onnx_models import _model, batch_mixing_model, hyperplane_model, linear_model, save

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("CERTIFY_DEBUG", raising=False)


def one_line_error(result, *fragments: str) -> str:
    """A non-zero exit, exactly one "Error: ..." line, no traceback, nothing "unexpected"."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "unexpected" not in errors[0], errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def image_case(tmp_path: Path, metadata: dict[str, str] | None = None, dtype=TensorProto.FLOAT) -> Path:
    """A linear model on 1x8x8 images and three images in images.npz."""
    weights = np.random.default_rng(0).normal(size=(64, 3))
    save(linear_model(weights, np.zeros(3), (1, 8, 8), metadata=metadata, input_type=dtype), tmp_path / "m.onnx")
    np.savez(tmp_path / "images.npz", x=np.random.default_rng(1).random((3, 8, 8)).astype(np.float32), y=[0, 1, 2])
    return tmp_path


def certify_images(folder: Path, *args: str):
    return CliRunner().invoke(cli, [str(folder / "m.onnx"), "--data", str(folder / "images.npz"), "-p", "rs",
                                    "-s", "0.25", "--n0", "5", "-n", "20", "-q", "--output", str(folder / "r.jsonl"),
                                    *args], catch_exceptions=False)


# -- item 1: input space settings ----------------------------------------------------------------


@pytest.mark.parametrize("recorded, fragments", [
    ({"scale": "x"}, ["scale from the model's certifier.input_space metadata", "'x'", "override it with --scale"]),
    ({"scale": float("nan")}, ["scale from the model's certifier.input_space metadata", "nan"]),
    ({"scale": 10**400}, ["scale from the model's certifier.input_space metadata"]),
    ({"mean": "abc"}, ["mean from the model's certifier.input_space metadata"]),
    ({"mean": [[0.5]]}, ["mean from the model's certifier.input_space metadata"]),
    ({"std": [0]}, ["std from the model's certifier.input_space metadata", "positive"]),
    ({"layout": 5}, ["layout from the model's certifier.input_space metadata"]),
])
def test_bad_input_space_metadata_is_named(tmp_path, recorded, fragments):
    case = image_case(tmp_path, {"certifier.input_space": json.dumps(recorded)})
    one_line_error(certify_images(case), *fragments)
    assert not (case / "r.jsonl").exists()


def test_deeply_nested_metadata_is_one_line(tmp_path):
    case = image_case(tmp_path, {"certifier.input_space": "[" * 100_000 + "]" * 100_000})
    one_line_error(certify_images(case), "certifier.input_space metadata is not valid JSON")


def test_the_user_overrides_bad_metadata(tmp_path):
    case = image_case(tmp_path, {"certifier.input_space": json.dumps({"scale": "x"})})
    result = certify_images(case, "--scale", "1")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args, fragments", [
    (["--mean", "nan"], ["--mean values must be finite numbers"]),
    (["--mean", "inf"], ["--mean values must be finite numbers"]),
    (["--std", "inf"], ["--std values must be finite numbers"]),
    (["--scale", "nan"], ["--scale must be a positive number"]),
    (["--scale", "1e38"], ["--scale 1e+38 gives model inputs up to 1e+38", "overflows"]),
    (["--scale", "1e20"], ["--scale 1e+20 gives model inputs up to 1e+20"]),
    (["--std", "1e-320"], ["--std", "beyond float32's range"]),
    (["--scale", "255", "--std", "1e-37"], ["--scale 255 and --std 1e-37", "beyond float32's range"]),
    (["--mean", "1e39"], ["--mean 1e+39", "beyond float32's range"]),
    (["--scale", "1e-320"], ["--scale", "vanish in float32 rounding"]),
    (["--std", "1e39"], ["--std 1e+39", "vanish"]),
    (["--mean", "1e8"], ["--mean 1e+08", "vanish"]),
])
def test_input_spaces_that_break_float32_are_refused_up_front(tmp_path, args, fragments):
    case = image_case(tmp_path)
    one_line_error(certify_images(case, *args), *fragments)
    assert not (case / "r.jsonl").exists()


def test_plausible_input_spaces_still_work(tmp_path):
    case = image_case(tmp_path)
    for args in (["--scale", "255"], ["--scale", "255", "--mean", "0.5", "--std", "0.01"], ["--scale", "1e18"]):
        result = certify_images(case, *args)
        assert result.exit_code == 0, (args, result.output)
        (case / "r.jsonl").unlink()


def test_a_float16_model_is_refused_values_beyond_float16():
    with pytest.raises(CertifyError, match="beyond 6.55e\\+04, where the model's float16 arithmetic overflows"):
        ModelAdapter((4,), [4], np.float16, InputSpace().overridden(scale=1e5))
    assert ModelAdapter((4,), [4], np.float16, InputSpace().overridden(scale=255.0)).space.scale == 255.0


def test_metadata_settings_in_mapping_errors_name_the_metadata():
    space = InputSpace.from_metadata({"certifier.input_space": json.dumps({"std": [1e-40]})}).overridden()
    with pytest.raises(CertifyError, match="std 1e-40 from the model's certifier.input_space metadata"):
        ModelAdapter((4,), [4], np.float32, space)


@pytest.mark.parametrize("layout, fitting", [("flat", "--layout nchw"), ("nhwc", "--layout nchw")])
def test_a_layout_that_does_not_fit_says_which_does(tmp_path, layout, fitting):
    case = image_case(tmp_path)
    message = one_line_error(certify_images(case, "--layout", layout), f"--layout {layout} does not fit the model",
                             fitting)
    assert "but the data gives" not in message


# -- item 2: class names ---------------------------------------------------------------------------


def symbolic(model: onnx.ModelProto, input_axes=(), output_axes=()) -> onnx.ModelProto:
    for value, axes in ((model.graph.input[0], input_axes), (model.graph.output[0], output_axes)):
        for axis in axes:
            dim = value.type.tensor_type.shape.dim[axis]
            dim.Clear()
            dim.dim_param = f"d{axis}"
    return model


@pytest.mark.parametrize("names", [["a", "b", "c"], [str(i) for i in range(12)]])
def test_class_names_that_do_not_match_the_output_are_refused_at_load(tmp_path, names):
    weights = np.random.default_rng(0).normal(size=(64, 10))
    metadata = {"certifier.classes": json.dumps(names)}
    # neither the input's image size nor the output's width is declared: no probe at load
    model = symbolic(linear_model(weights, np.zeros(10), (1, 8, 8), metadata=metadata), (2, 3), (1,))
    path = save(model, tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match=f"lists {len(names)} classes but its output 'logits' has 10"):
        load_model(path, device="cpu")
    matching = {"certifier.classes": json.dumps(list("abcdefghij"))}
    model = symbolic(linear_model(weights, np.zeros(10), (1, 8, 8), metadata=matching), (2, 3), (1,))
    assert load_model(save(model, tmp_path / "ok.onnx"), device="cpu").num_classes == 10


# -- item 3: outputs that depend on the rest of the batch -------------------------------------------


def batch_mean_model(features: int = 16, classes: int = 4, weight: float = 1.0) -> onnx.ModelProto:
    """Dynamic batch: logits = x W + weight * mean_over_batch(x) V."""
    rng = np.random.default_rng(3)
    return _model(
        [
            helper.make_node("MatMul", ["input", "W"], ["own"]),
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[0], keepdims=1),
            helper.make_node("MatMul", ["mean", "V"], ["shared"]),
            helper.make_node("Mul", ["shared", "weight"], ["scaled"]),
            helper.make_node("Add", ["own", "scaled"], ["logits"]),
        ],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [
            numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "V"),
            numpy_helper.from_array(np.array(weight, dtype=np.float32), "weight"),
        ],
        opsets=(("", 13),),
    )


def training_batch_norm_model(features: int = 16, classes: int = 4) -> onnx.ModelProto:
    """BatchNormalization in training mode: each input normalized with its batch's statistics."""
    rng = np.random.default_rng(4)
    ones, zeros = np.ones(features, np.float32), np.zeros(features, np.float32)
    return _model(
        [
            helper.make_node("BatchNormalization", ["input", "scale", "bias", "mean", "var"],
                             ["normed", "running_mean", "running_var"], training_mode=1),
            helper.make_node("MatMul", ["normed", "W"], ["logits"]),
        ],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "W"),
         numpy_helper.from_array(ones, "scale"), numpy_helper.from_array(zeros, "bias"),
         numpy_helper.from_array(zeros, "mean"), numpy_helper.from_array(ones, "var")],
        opsets=(("", 15),),
    )


def dynamically_quantized_model(tmp_path: Path) -> Path:
    """A float MLP through onnxruntime's dynamic quantization: activations are quantized
    with a scale computed over the whole batch."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    rng = np.random.default_rng(5)
    mlp = _model(
        [
            helper.make_node("MatMul", ["input", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["logits"]),
        ],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(rng.normal(size=(64, 32)).astype(np.float32), "W1"),
         numpy_helper.from_array(rng.normal(size=(32, 10)).astype(np.float32), "W2")],
    )
    save(mlp, tmp_path / "mlp.onnx")
    quantization.quantize_dynamic(str(tmp_path / "mlp.onnx"), str(tmp_path / "quantized.onnx"),
                                  weight_type=quantization.QuantType.QInt8)
    quantized = onnx.load(str(tmp_path / "quantized.onnx"))
    quantized.ir_version = 8
    return save(quantized, tmp_path / "quantized.onnx")


COUPLED = {
    "mean over the batch": lambda tmp_path: save(batch_mean_model(), tmp_path / "m.onnx"),
    "batch norm in training mode": lambda tmp_path: save(training_batch_norm_model(), tmp_path / "m.onnx"),
    "dynamic quantization": dynamically_quantized_model,
    "fixed batch of 3 mixing its inputs": lambda tmp_path: save(batch_mixing_model(16, 4, 3), tmp_path / "m.onnx"),
}


@pytest.mark.parametrize("build", COUPLED.values(), ids=COUPLED.keys())
def test_outputs_that_depend_on_the_batch_are_refused(tmp_path, build):
    path = build(tmp_path)
    with pytest.raises(CertifyError, match="depends on the other inputs in its batch.*--batch-size 1") as refused:
        load_model(path, device="cpu")
    assert "\n" not in str(refused.value)
    model = load_model(path, device="cpu", allow_batch_coupling=True)
    assert model.batch_coupled is True
    assert any("one input at a time" in note for note in model.notes)


@pytest.mark.parametrize("build", COUPLED.values(), ids=COUPLED.keys())
def test_an_allowed_coupled_model_classifies_each_input_alone(tmp_path, build):
    model = load_model(build(tmp_path), device="cpu", allow_batch_coupling=True)
    x = np.random.default_rng(6).random((9, *model.input_dims)).astype(np.float32)
    alone = np.concatenate([model.raw_outputs(x[i : i + 1]) for i in range(len(x))])
    # the same rows whatever batch they come in, in whatever order
    assert np.array_equal(model.raw_outputs(x), alone)
    assert np.array_equal(model.raw_outputs(x[::-1])[::-1], alone)
    assert np.array_equal(model.labels(x), alone.argmax(axis=1))


def test_a_coupled_model_with_symbolic_input_is_refused_at_its_first_batch(tmp_path):
    model = symbolic(batch_mean_model(), (1,))
    path = save(model, tmp_path / "m.onnx")
    loaded = load_model(path, device="cpu")
    assert loaded.batch_coupled is None  # not probed yet: no input shape
    with pytest.raises(CertifyError, match="depends on the other inputs in its batch"):
        loaded.labels(np.random.default_rng(0).random((4, 16)).astype(np.float32))


def test_the_tolerance_separates_rounding_from_coupling(tmp_path):
    # a batch term 1e-6 the size of the scores: other kernels' rounding, not coupling
    faint = load_model(save(batch_mean_model(weight=1e-6), tmp_path / "faint.onnx"), device="cpu")
    assert faint.batch_coupled is False
    # 30 times the tolerance: coupling
    with pytest.raises(CertifyError, match="depends on the other inputs"):
        load_model(save(batch_mean_model(weight=30 * BATCH_TOLERANCE), tmp_path / "weak.onnx"), device="cpu")


def test_bundled_models_and_test_models_are_not_coupled(tmp_path):
    bundled = sorted(path for path in MODELS.glob("*.onnx")
                     if "denoiser" not in path.name and "diffusion" not in path.name)  # classifiers only
    assert bundled
    for path in bundled:
        assert load_model(path, device="cpu").batch_coupled is False, path.name
    weights = np.random.default_rng(0).normal(size=(64, 3))
    for number, model in enumerate([linear_model(weights, np.zeros(3), (1, 8, 8)), hyperplane_model([1, 0, 0, 0], -0.5),
                                    linear_model(weights, np.zeros(3), (64,), output="probabilities"),
                                    linear_model(weights, np.zeros(3), (64,), output="label")]):
        assert load_model(save(model, tmp_path / f"{number}.onnx"), device="cpu").batch_coupled is False


# -- item 4: Clopper-Pearson at extreme alphas -------------------------------------------------------


def exact_tail(successes: int, trials: int, p: float) -> Decimal:
    """P(Bin(trials, p) >= successes) with 50 significant digits (the sum from successes up,
    stopped where the terms no longer matter)."""
    with localcontext() as context:
        context.prec = 50
        p = Decimal(p)
        q = 1 - p
        term = Decimal(math.comb(trials, successes)) * p**successes * q ** (trials - successes)
        total, j = term, successes
        while j < trials and term > 0:
            factor = Decimal(trials - j) / Decimal(j + 1) * p / q
            term *= factor
            total += term
            j += 1
            if factor < Decimal("0.5") and term < total * Decimal("1e-45"):
                break
        return +total


#: Where scipy's beta.ppf answers too high or NaN (found by scanning every k for n up to
#: 10^5 at alphas 1e-3 to 1e-300): a tail above alpha by 1.8e-7 at 1e-10, by orders of
#: magnitude below 1e-80.
SCIPY_FAILS = [(99001, 100_000, 1e-10), (3, 30, 1e-100), (3, 100, 1e-100), (4, 100_000, 1e-100),
               (2, 10, 1e-150), (3, 5, 1e-150), (9, 10, 1e-300)]


@pytest.mark.parametrize("k, n, alpha", SCIPY_FAILS)
def test_clopper_pearson_holds_where_scipy_answers_too_high(k, n, alpha):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scipy_answer = float(stats.beta.ppf(alpha, k, n - k + 1))
    assert math.isnan(scipy_answer) or exact_tail(k, n, scipy_answer) > Decimal(alpha)  # the region is real
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning reaches anyone
        bound = clopper_pearson_lower(k, n, alpha)
    assert 0 < bound < 1
    tail = exact_tail(k, n, bound)
    assert tail <= Decimal(alpha)
    assert tail >= Decimal(alpha) * Decimal("0.999")  # and it is not thrown away


def test_clopper_pearson_scan_over_k_and_alpha():
    exponents = list(range(3, 301, 16)) + [300, 320]
    for n in (10, 1000, 100_000):
        for k in sorted({1, 2, 3, n // 3, n // 2, n - 3, n - 1, n}):
            for exponent in exponents:
                alpha = 10.0**-exponent
                bound = clopper_pearson_lower(k, n, alpha)
                assert 0 <= bound < 1, (k, n, alpha)
                if bound > 0:
                    tail = exact_tail(k, n, bound)
                    assert tail <= Decimal(alpha), (k, n, alpha, bound)
                    if exponent <= 300:
                        assert tail >= Decimal(alpha) * Decimal("0.99"), (k, n, alpha, bound)


def test_clopper_pearson_upper_holds_by_symmetry():
    for k, n, alpha in [(30, 10_000, 0.0005), (1, 10, 1e-150), (0, 100, 1e-300), (6, 10, 1e-290)]:
        upper = clopper_pearson_upper(k, n, alpha)
        # P(Bin(n, upper) <= k) = P(Bin(n, 1 - upper) >= n - k) <= alpha
        assert exact_tail(n - k, n, 1 - upper) <= Decimal(alpha)
    assert clopper_pearson_upper(30, 10_000, 0.0005) == pytest.approx(stats.beta.ppf(1 - 0.0005, 31, 9970), rel=1e-9)


def test_all_votes_agreeing_never_rounds_the_bound_to_one():
    # alpha^(1/n) = 1 - 1e-17 rounds to 1.0, whose radius is infinite; the bound is the float below it
    bound = clopper_pearson_lower(10**15, 10**15, 0.99)
    assert bound < 1
    assert math.isfinite(stats.norm.ppf(bound))


def test_an_extreme_alpha_prints_no_warning(tmp_path):
    save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    x = np.full((10, 4), 0.5, dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=[0] * 10)  # on the boundary: votes split
    # with n = 8, scipy's beta.ppf warns at 2, 3 or 4 votes for the top class
    result = CliRunner().invoke(cli, [str(tmp_path / "plane.onnx"), "--data", str(tmp_path / "d.npz"), "-p", "rs",
                                      "-s", "0.25", "--n0", "10", "-n", "8", "--alpha", "1e-300", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output, result.output
    assert special.geterr()["other"] == "ignore"


# -- item 5: training settings ---------------------------------------------------------------------


@pytest.fixture
def tiny_training_data(tmp_path):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = (rng.integers(0, 60, (40, 8, 8)) + 150 * y[:, None, None]).astype(np.uint8)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    return tmp_path / "train.npz"


def train(data: Path, out: Path, *args: str):
    return CliRunner().invoke(cli, ["train", "-q", "-p", "rs", "-s", "0.1", "--data", str(data), "--out", str(out),
                                    "--epochs", "1", "--width", "2", "--batch-size", "8", *args])


@pytest.mark.parametrize("args, fragment", [
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--lr", "inf"], "'--lr': inf is not in the range 0<x<=10"),
    (["--lr", "0"], "'--lr': 0.0 is not in the range"),
    (["--lr", "-0.1"], "'--lr': -0.1 is not in the range"),
    (["--lr", "1e30"], "'--lr': 1e+30 is not in the range"),
    (["--validation-fraction", "0"], "'--validation-fraction': 0.0 is not in the range 0<x<1"),
    (["--validation-fraction", "1"], "'--validation-fraction': 1.0 is not in the range 0<x<1"),
    (["--validation-fraction", "-0.5"], "'--validation-fraction': -0.5 is not in the range 0<x<1"),
    (["--validation-fraction", "nan"], "--validation-fraction must be above 0 and below 1"),
    (["--validation-fraction", "0.01"], "holds out none for validation"),
    (["--width", "0"], "'--width': 0 is not in the range 1<=x<=512"),
    (["--width", "100000"], "'--width': 100000 is not in the range 1<=x<=512"),
])
def test_bad_training_settings_are_refused_and_write_no_model(tiny_training_data, tmp_path, args, fragment):
    out = tmp_path / "m.onnx"
    one_line_error(train(tiny_training_data, out, *args), fragment)
    assert not out.exists()


def test_training_reports_real_validation_accuracy(tiny_training_data, tmp_path):
    out = tmp_path / "m.onnx"
    result = train(tiny_training_data, out, "--validation-fraction", "0.25")
    assert result.exit_code == 0, result.output
    training = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["certifier.training"])
    assert 0 <= training["validation_noisy_accuracy"] <= 1 and 0 <= training["validation_clean_accuracy"] <= 1


# -- item 6: certify show --------------------------------------------------------------------------


def show(tmp_path: Path, *args: str):
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((2, 8, 8)).astype(np.float32))
    return CliRunner().invoke(cli, ["show", "-p", "rs", "-s", "0.25", str(tmp_path / "x.npz"), *args])


@pytest.mark.parametrize("samples", ["0", "-1", "17", "3000"])
def test_show_samples_are_bounded(tmp_path, samples):
    one_line_error(show(tmp_path, "--samples", samples, "--out", str(tmp_path / "s.png")), "--samples must be from 1 to 16")
    assert not (tmp_path / "s.png").exists()


def test_show_reports_a_failed_write(tmp_path, monkeypatch):
    """A full disk (the picture's file is opened, then the write fails); a device as --out is
    refused before anything is written (tests/test_output_files.py)."""
    import errno

    import certifier_plugins.show as show_module

    def full_disk(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        handle.close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(show_module, "open", full_disk, raising=False)
    one_line_error(show(tmp_path, "--out", str(tmp_path / "s.png")), f"cannot write {tmp_path / 's.png'}",
                   "No space left on device")


def test_show_refuses_a_format_it_cannot_write_and_writes_others(tmp_path):
    one_line_error(show(tmp_path, "--out", str(tmp_path / "s.xyz")), "cannot write .xyz pictures")
    result = show(tmp_path, "--out", str(tmp_path / "s.svg"), "--samples", "16")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.svg").read_text().lstrip().startswith("<?xml")


# -- item 7: class folders -------------------------------------------------------------------------


def image_folder(root: Path, classes: list[str], per_class: int = 2) -> Path:
    from PIL import Image

    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_lone_class_folder_that_names_no_class_gives_unlabeled_images(tmp_path):
    folder = image_folder(tmp_path / "data", ["cats"])
    with pytest.warns(UserWarning, match="one class folder, 'cats'.*read as unlabeled"):
        data = load_data(folder)
    assert data.labels is None and len(data) == 2
    with pytest.warns(UserWarning, match="neither among the model's class names"):
        assert load_data(folder, class_names=["dog", "bird"]).labels is None


def test_class_folders_that_name_classes_need_no_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(load_data(image_folder(tmp_path / "a", ["3"])).labels) == [3, 3]
        assert list(load_data(image_folder(tmp_path / "b", ["cat"]), class_names=["dog", "cat"]).labels) == [1, 1]
        # training: the folders define the classes
        trained = load_data(image_folder(tmp_path / "c", ["dog", "cat"]), folders_name_classes=True)
        assert trained.class_names == ["cat", "dog"] and list(trained.labels) == [0, 0, 1, 1]


def test_labels_from_sorted_folder_order_are_announced(tmp_path):
    folder = image_folder(tmp_path / "data", ["dog", "cat"])
    with pytest.warns(UserWarning, match="sorted order \\('cat' = 0, 'dog' = 1\\)"):
        data = load_data(folder)
    assert list(data.labels) == [0, 0, 1, 1]


def test_a_lone_unnamed_folder_prints_no_certified_accuracy(tmp_path):
    image_folder(tmp_path / "data", ["misc"])
    save(linear_model(np.random.default_rng(0).normal(size=(64, 3)), np.zeros(3), (1, 8, 8)), tmp_path / "m.onnx")
    result = CliRunner().invoke(cli, [str(tmp_path / "m.onnx"), "--data", str(tmp_path / "data"), "-p", "rs",
                                      "-s", "0.25", "--n0", "5", "-n", "20", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "certify: warning:" in result.output and "unlabeled" in result.output
    assert "certified accuracy" not in result.output


def test_huge_numeric_folder_names_do_not_crash(tmp_path):
    folder = image_folder(tmp_path / "data", ["99999999999999999999", "0"])
    with pytest.warns(UserWarning, match="sorted order"):
        assert list(load_data(folder).labels) == [0, 0, 1, 1]


def test_an_allowed_coupled_model_is_certified_as_the_function_of_each_input_alone(tmp_path):
    coupled = load_model(save(batch_mean_model(), tmp_path / "m.onnx"), device="cpu", allow_batch_coupling=True)
    # what it computes for an input alone: the batch mean of one input is that input
    alone = batch_mean_model()
    next(node for node in alone.graph.node if node.op_type == "ReduceMean").op_type = "Identity"
    del next(node for node in alone.graph.node if node.op_type == "Identity").attribute[:]
    independent = load_model(save(alone, tmp_path / "alone.onnx"), device="cpu")
    assert independent.batch_coupled is False
    x = np.random.default_rng(7).random((3, 16)).astype(np.float32)
    results = [
        [(r.prediction, r.radius) for r in certifier.api.Run(model, certifier.api.make_method("rs", 0.5, {}, {}),
                                                             space=InputSpace()).certify(x, n0=20, n=200,
                                                                                         batch_size=64)]
        for model in (coupled, independent)
    ]
    assert results[0] == results[1]


def random_model(features: int = 16, classes: int = 4) -> onnx.ModelProto:
    """Dropout left in training mode: each run drops other features."""
    rng = np.random.default_rng(8)
    return _model(
        [
            helper.make_node("Dropout", ["input", "ratio", "training"], ["dropped"]),
            helper.make_node("MatMul", ["dropped", "W"], ["logits"]),
        ],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "W"),
         numpy_helper.from_array(np.array(0.5, dtype=np.float32), "ratio"),
         numpy_helper.from_array(np.array(True), "training")],
    )


def test_a_random_model_cannot_be_checked_for_coupling_so_it_runs_alone_or_not_at_all(tmp_path):
    path = save(random_model(), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="gives other outputs each time it runs the same inputs.*--batch-size 1"):
        load_model(path, device="cpu")
    model = load_model(path, device="cpu", allow_batch_coupling=True)
    assert model.batch_coupled is True


def test_training_never_replaces_what_is_not_a_file(tiny_training_data, tmp_path):
    import os

    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    one_line_error(train(tiny_training_data, fifo), "is a named pipe, not a regular file")
    assert fifo.is_fifo()
    checkpoint = tmp_path / "pipe.ckpt"
    os.mkfifo(checkpoint)
    one_line_error(train(tiny_training_data, tmp_path / "m.onnx", "--checkpoint", str(checkpoint)),
                   "--checkpoint", "is a named pipe, not a regular file")
    assert checkpoint.is_fifo() and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("arrays, fragment", [
    ({"x_train": np.zeros((0, 8, 8), np.uint8), "y_train": np.zeros(0, int)}, "holds no inputs to train on"),
    ({"x": np.zeros((10, 8, 8), np.uint8), "y": np.full(10, 10**9)}, "labels go up to 1000000000"),
    ({"x_train": np.zeros((10, 8, 8), np.uint8), "y_train": np.arange(10) % 2, "x_test": np.zeros((0, 8, 8), np.uint8),
      "y_test": np.zeros(0, int)}, "holds no inputs to validate on"),
])
def test_training_data_that_cannot_train_is_refused(tmp_path, arrays, fragment):
    pytest.importorskip("torch")
    np.savez(tmp_path / "d.npz", **arrays)
    one_line_error(train(tmp_path / "d.npz", tmp_path / "m.onnx"), fragment)
    assert not (tmp_path / "m.onnx").exists()


def test_the_array_form_is_the_scalar_bound_element_by_element():
    from certifier.stats import clopper_pearson_lower_array

    successes = np.array([0, 2, 99001, 10, 3.0])
    trials = np.array([10, 10, 100_000, 10, 5.0])
    bounds = clopper_pearson_lower_array(successes, trials, 1e-150)
    assert bounds.dtype == np.float64
    assert list(bounds) == [clopper_pearson_lower(int(k), int(n), 1e-150) for k, n in zip(successes, trials)]
    assert clopper_pearson_lower_array(5, 10, 0.01) == clopper_pearson_lower(5, 10, 0.01)
    # a projected (fractional) count: Beta(k, n - k + 1)'s quantile, never above it
    fractional = clopper_pearson_lower_array(np.array([2.5, 13687.3]), np.array([10.0, 50_000.0]), 1e-120)
    assert (special.betainc([2.5, 13687.3], [8.5, 36313.7], fractional) <= 1e-120).all()
    assert (special.betainc([2.5, 13687.3], [8.5, 36313.7], fractional) >= 0.999e-120).all()


def test_the_command_line_accepts_a_coupled_model_only_with_batch_size_one(tmp_path):
    model = save(batch_mean_model(), tmp_path / "m.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(9).random((2, 16)).astype(np.float32))
    common = [str(model), "--plugin", "rs", "--sigma", "0.5", "--data", str(data), "-n", "50", "--n0", "10", "-q"]
    refused = CliRunner().invoke(cli, common)
    assert refused.exit_code == 1 and "--batch-size 1" in refused.output
    assert "Traceback" not in refused.output
    allowed = CliRunner().invoke(cli, [*common, "--batch-size", "1"])
    assert allowed.exit_code == 0, allowed.output
    assert "inputs (labeled)" in allowed.output
