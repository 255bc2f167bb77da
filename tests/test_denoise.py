"""certify train-denoiser: the converter, both losses, resume, metadata, refusals."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

torch = pytest.importorskip("torch")
if importlib.util.find_spec("onnx2torch") is None:  # imported through import_onnx2torch, never directly
    pytest.skip("onnx2torch is not installed (pip install '.[test]')", allow_module_level=True)

from certifier.cli import cli  # noqa: E402
from certifier_plugins.denoise import (  # noqa: E402
    build_denoiser,
    denoiser_size,
    import_onnx2torch,
    load_classifier,
    train_denoiser,
)
from certifier_plugins._torch import export_onnx  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"
BUNDLED = sorted(path for path in MODELS.glob("fmnist-*.onnx") if "diffusion" not in path.name)  # one input


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fashion):
    """400 Fashion-MNIST training images (labels kept) and their test split, 120 images."""
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=fashion["x_train"][:400], y_train=fashion["y_train"][:400],
             x_test=fashion["x_test"][:120], y_test=fashion["y_test"][:120])
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A small classifier with normalization (mean/std) and NHWC input, as a third party might export it."""
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
        torch.nn.Flatten(), torch.nn.Linear(4 * 7 * 7, 10),
    )

    class ChannelsLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, x):
            return self.network(x.permute(0, 3, 1, 2))

    path = folder / "nhwc.onnx"
    export_onnx(ChannelsLast(), (28, 28, 1), path, {
        "certifier.input_space": json.dumps({"scale": 1.0, "mean": [0.3], "std": [0.4], "layout": "nhwc"})})
    return path


def run(args):
    return CliRunner().invoke(cli, ["train-denoiser", "-q", *args])


def metadata_of(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


# -- the converter ----------------------------------------------------------------


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_converted_bundled_classifiers_give_onnxruntime_logits(path):
    onnx2torch = import_onnx2torch()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    shape = [7 if isinstance(d, str) else d for d in model_input.shape]
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    expected = session.run(None, {model_input.name: x})[0]
    network = onnx2torch.convert(onnx.load(str(path))).eval()
    with torch.no_grad():
        got = network(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(expected, expected[:1])  # different inputs give different logits


def test_classifier_input_mapping_is_applied_in_torch_as_certify_applies_it(classifier):
    """mean/std and NHWC from the model's metadata: torch on pixel images equals onnxruntime
    on certify's own ModelAdapter output, and gradients reach the images."""
    from certifier.model import load_model
    from certifier.space import InputSpace, ModelAdapter

    frozen, model = load_classifier(classifier, (1, 28, 28), {}, None, torch.device("cpu"))
    assert frozen.layout == "nhwc" and not frozen.identity
    images = np.random.default_rng(2).random((6, 1, 28, 28), dtype=np.float32)
    onnx_model = load_model(classifier, device="cpu")
    adapter = ModelAdapter((1, 28, 28), onnx_model.input_dims, onnx_model.input_dtype,
                           InputSpace.from_metadata(onnx_model.metadata))
    expected = onnx_model.raw_outputs(adapter(images))
    pixels = torch.from_numpy(images).requires_grad_()
    got = frozen(pixels)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-4, atol=1e-5)
    got.sum().backward()
    assert pixels.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in frozen.network.parameters())
    # a user's option overrides the metadata, as in certify
    plain, _ = load_classifier(classifier, (1, 28, 28), {"mean": (0.0,), "std": (1.0,)}, None, torch.device("cpu"))
    assert plain.identity


def test_probability_outputs_are_read_as_log_probabilities(tmp_path):
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Softmax(dim=1))
    path = tmp_path / "softmax.onnx"
    export_onnx(network, (1, 28, 28), path, {}, output_name="probabilities")
    frozen, _ = load_classifier(path, (1, 28, 28), {}, None, torch.device("cpu"))
    images = torch.rand(4, 1, 28, 28)
    assert frozen.probabilities
    np.testing.assert_allclose(frozen(images).exp().numpy(), network(images).detach().numpy(), rtol=1e-4, atol=1e-6)


STAND_IN_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import onnx, torch
    from certifier_plugins import denoise
    onnx2torch = denoise.import_onnx2torch()
    assert denoise._uses_torchvision_stand_in
    assert "torchvision" not in sys.modules or sys.modules["torchvision"].__file__
    network = onnx2torch.convert(onnx.load(sys.argv[1])).eval()
    print(float(network(torch.zeros(2, 1, 28, 28)).abs().sum()) > 0)
    # a detection model is refused in one line before conversion
    try:
        denoise.load_classifier(__import__("pathlib").Path(sys.argv[2]), (1, 28, 28), {}, None, torch.device("cpu"))
    except denoise.CertifyError as error:
        print("refused:", error)
""")


def test_converter_imports_beside_a_torchvision_that_cannot_load(tmp_path):
    """A torchvision that fails on import (a CUDA build beside the CPU torch) gets a stand-in
    that lives only while onnx2torch imports; classifiers still convert; models with
    detection operators are refused."""
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    # a classifier with a RoiAlign (a detection operator) inside; its scores have one row per input
    rois = helper.make_tensor("rois", TensorProto.FLOAT, [1, 4], [0, 0, 4, 4])
    index = helper.make_tensor("index", TensorProto.INT64, [1], [0])
    weights = helper.make_tensor("W", TensorProto.FLOAT, [784, 4], np.linspace(-1, 1, 784 * 4).tolist())
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    graph = helper.make_graph(
        [helper.make_node("RoiAlign", ["x", "rois", "index"], ["y"], output_height=2, output_width=2),
         helper.make_node("ReduceSum", ["y"], ["pooled"], keepdims=0),
         helper.make_node("Mul", ["pooled", "zero"], ["nothing"]),
         helper.make_node("Flatten", ["x"], ["flat"]),
         helper.make_node("MatMul", ["flat", "W"], ["linear"]),
         helper.make_node("Add", ["linear", "nothing"], ["scores"])],
        "detect", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4])], initializer=[rois, index, weights, zero])
    detection = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    detection.ir_version = 8
    onnx.save(detection, tmp_path / "detect.onnx")
    environment = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", STAND_IN_SCRIPT, str(MODELS / "fmnist-rs-0.25.onnx"),
                           str(tmp_path / "detect.onnx")], capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1].startswith("refused:") and "RoiAlign" in lines[1]


# -- the denoiser network ---------------------------------------------------------


def test_denoiser_size_grows_with_the_image():
    small, medium, large = denoiser_size(28, 28), denoiser_size(64, 64), denoiser_size(224, 224)
    assert small[0] * small[1] < medium[0] * medium[1] < large[0] * large[1]
    assert large == (17, 64)  # DnCNN as published
    network = build_denoiser(3, 4, 8).eval()
    noisy = torch.rand(2, 3, 33, 17) * 3 - 1
    out = network(noisy)
    assert out.shape == noisy.shape and out.min() >= 0 and out.max() <= 1


# -- training ---------------------------------------------------------------------


def test_mse_training_lowers_its_loss_and_writes_metadata(tiny, tmp_path):
    out = tmp_path / "mse.onnx"
    result = train_denoiser(data=tiny, out=out, sigma=0.5, loss="mse", epochs=3, batch_size=32,
                            features=8, depth=3, dataset_name="tiny-fashion", quiet=True)
    history = result["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert result["validation"]["mse"] < 0.25 * 0.5  # well below the noise's own MSE, sigma^2
    metadata = metadata_of(out)
    assert float(metadata["certifier.denoiser.sigma"]) == 0.5
    assert metadata["certifier.denoiser.loss"] == "mse"
    assert metadata["certifier.dataset"] == "tiny-fashion"
    assert json.loads(metadata["certifier.denoiser.input_shape"]) == [1, 28, 28]
    assert "certifier.denoiser.classifier_sha256" not in metadata
    assert "certifier.plugin" not in metadata and "certifier.sigma" not in metadata
    training = json.loads(metadata["certifier.denoiser.training"])
    assert training["epochs"] == 3 and training["depth"] == 3 and training["features"] == 8
    model = onnx.load(str(out))
    assert model.ir_version <= 13
    # dynamic batch, NCHW pixel space in and out, the same as torch
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [1, 28, 28]
    noisy = np.random.default_rng(0).normal(0.5, 0.5, (3, 1, 28, 28)).astype(np.float32)
    denoised = session.run(None, {session.get_inputs()[0].name: noisy})[0]
    assert denoised.shape == noisy.shape and denoised.min() >= 0 and denoised.max() <= 1
    # the exported graph computes what the trained torch network computes
    network = build_denoiser(1, 3, 8)
    network.load_state_dict(torch.load(tmp_path / "mse.onnx.ckpt", weights_only=False)["network"])
    with torch.no_grad():
        expected = network.eval()(torch.from_numpy(noisy)).numpy()
    np.testing.assert_allclose(denoised, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(denoised, noisy.clip(0, 1), atol=1e-3)  # it changes the images


def test_stability_training_lowers_its_loss_through_the_classifier(tiny, classifier, tmp_path):
    from certifier.model import file_sha256

    out = tmp_path / "stab.onnx"
    result = train_denoiser(data=tiny, out=out, sigma=0.5, loss="stability", classifier=classifier, epochs=3,
                            batch_size=32, features=8, depth=3, lr=3e-3, quiet=True)
    history = result["history"]
    assert [h["phase"] for h in history] == ["stability"] * 3
    assert history[-1]["loss"] < history[0]["loss"]
    assert 0 <= result["validation"]["kept_clean_class"] <= 1
    metadata = metadata_of(out)
    assert metadata["certifier.denoiser.loss"] == "stability"
    assert metadata["certifier.denoiser.classifier_sha256"] == file_sha256(classifier)
    training = json.loads(metadata["certifier.denoiser.training"])
    assert training["input_space"] == {"scale": None, "mean": None, "std": None, "layout": None}


def test_stability_loss_takes_gradients_through_the_frozen_classifier_only(classifier):
    """The denoiser's weights get gradients from the cross-entropy; the classifier's do not change."""
    frozen, _ = load_classifier(classifier, (1, 28, 28), {}, None, torch.device("cpu"))
    before = [p.clone() for p in frozen.network.parameters()]
    network = build_denoiser(1, 3, 4)
    images = torch.rand(8, 1, 28, 28)
    targets = frozen(images).argmax(1)
    loss = torch.nn.functional.cross_entropy(frozen(network(images + 0.25 * torch.randn_like(images))), targets)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in network.parameters() if p.ndim > 1)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.network.parameters()))


def test_mse_then_stability_resume_and_refuse_another_run(tiny, classifier, tmp_path):
    out = tmp_path / "both.onnx"
    args = ["--data", str(tiny), "--sigma", "0.25", "--loss", "mse+stability", "--classifier", str(classifier),
            "--features", "4", "--depth", "3", "--batch-size", "64", "--out", str(out)]
    first = run(args + ["--epochs", "3", "--mse-epochs", "1"])
    assert first.exit_code == 0, first.output
    metadata = metadata_of(out)
    assert metadata["certifier.denoiser.loss"] == "mse+stability"
    training = json.loads(metadata["certifier.denoiser.training"])
    assert training["phases"] == ["mse", "stability", "stability"]
    assert training["stability_lr"] == pytest.approx(1e-4)  # --lr / 10 after the MSE epochs
    complete = out.read_bytes()
    # rerunning the finished run resumes after its last epoch: nothing left to train, same weights
    out.unlink()
    again = CliRunner().invoke(cli, ["train-denoiser", *args, "--epochs", "3", "--mse-epochs", "1"])
    assert again.exit_code == 0, again.output
    assert "resuming" in again.output
    assert onnx.load_from_string(complete).graph.initializer[0] == onnx.load(str(out)).graph.initializer[0]
    # other settings refuse the checkpoint, --restart overwrites it
    refused = run(args + ["--epochs", "4", "--mse-epochs", "1"])
    assert refused.exit_code == 1 and "checkpoint of another training run" in refused.output
    assert run(args + ["--epochs", "4", "--mse-epochs", "1", "--restart"]).exit_code == 0


@pytest.mark.parametrize("loss,epochs,mse_epochs,stop_after", [
    ("mse", 2, None, 1),
    ("mse+stability", 3, 1, 1),  # resumes into a new phase: a fresh optimizer, as in one go
    ("mse+stability", 3, 1, 2),  # resumes inside the stability phase: its optimizer state is restored
])
def test_an_interrupted_run_resumes_to_the_same_weights(tiny, classifier, tmp_path, monkeypatch, loss, epochs,
                                                        mse_epochs, stop_after):
    """Training in one go equals training interrupted after an epoch and resumed."""
    import certifier_plugins.denoise as denoise

    common = dict(data=tiny, sigma=0.5, loss=loss, epochs=epochs, mse_epochs=mse_epochs, batch_size=64,
                  features=4, depth=3, quiet=True, classifier=classifier if loss != "mse" else None)
    train_denoiser(out=tmp_path / "straight.onnx", **common)

    class Stop(Exception):
        pass

    original, calls = denoise._validate, []

    def validate_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) > stop_after:  # the checkpoint of epoch stop_after is written
            raise Stop
        return original(*args, **kwargs)

    monkeypatch.setattr(denoise, "_validate", validate_then_stop)
    with pytest.raises(Stop):
        train_denoiser(out=tmp_path / "resumed.onnx", **common)
    monkeypatch.setattr(denoise, "_validate", original)
    assert torch.load(tmp_path / "resumed.onnx.ckpt", weights_only=False)["epoch"] == stop_after
    result = train_denoiser(out=tmp_path / "resumed.onnx", **common)
    assert [h["epoch"] for h in result["history"]] == list(range(stop_after + 1, epochs + 1))
    straight = onnx.load(str(tmp_path / "straight.onnx")).graph.initializer
    resumed = onnx.load(str(tmp_path / "resumed.onnx")).graph.initializer
    assert len(straight) == len(resumed)
    for a, b in zip(straight, resumed):
        np.testing.assert_allclose(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b), rtol=1e-5,
                                   atol=1e-6)


# -- refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra,message",
    [(["--loss", "stability"], "give --classifier"),
     (["--classifier", "{classifier}"], "--loss mse never calls the classifier"),
     (["--mse-epochs", "1"], "--mse-epochs applies only to --loss mse+stability"),
     (["--stability-lr", "1e-4"], "--stability-lr applies only to"),
     (["--loss", "mse+stability", "--classifier", "{classifier}"], "needs at least 2 epochs"),
     (["--loss", "mse+stability", "--classifier", "{classifier}", "--epochs", "2", "--mse-epochs", "2"],
      "--mse-epochs must be between 1 and 1"),
     (["--loss", "stability", "--classifier", "{classifier}", "--mean", "0.1,0.2"], "--mean needs 1 value"),
     (["--loss", "stability", "--classifier", "{classifier}", "--layout", "flat"], "--layout flat does not fit the model"),
     (["--loss", "stability", "--classifier", "{garbage}"], "is not an ONNX model"),
     (["--loss", "stability", "--classifier", "{missing}"], "model file not found")],
)
def test_bad_arguments_are_one_line_errors(tiny, classifier, tmp_path, extra, message):
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    names = {"classifier": classifier, "garbage": tmp_path / "garbage.onnx", "missing": tmp_path / "missing.onnx"}
    extra = [value.format(**names) for value in extra]
    args = ["--data", str(tiny), "--sigma", "0.5", "--epochs", "1", "--out", str(tmp_path / "d.onnx"), *extra]
    if extra.count("--epochs"):
        args = args[:4] + args[6:]
    result = run(args)
    assert result.exit_code != 0, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("option,value", [
    ("--features", "100000"), ("--features", "0"), ("--depth", "100000"), ("--depth", "0"), ("--depth", "1"),
    ("--epochs", "0"), ("--epochs", "1000000000000"), ("--batch-size", "0"), ("--mse-epochs", "0"),
    ("--lr", "0"), ("--lr", "-1"), ("--lr", "1e38"), ("--stability-lr", "0"), ("--sigma", "0"), ("--sigma", "1e39"),
    ("--validation-fraction", "0"), ("--validation-fraction", "1"),
])
def test_settings_out_of_range_are_usage_errors_before_anything_runs(tiny, tmp_path, option, value):
    result = run(["--data", str(tiny), "--sigma", "0.5", "--out", str(tmp_path / "d.onnx"), option, value])
    assert result.exit_code == 2 and f"{option}': {value}" in result.output.replace("e+", "e"), result.output
    assert "is not in the range" in result.output
    assert "unexpected" not in result.output and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("settings,message", [
    ({"depth": 0}, "--depth must be a whole number from 2 to 100"),
    ({"features": 10**5}, "--features must be a whole number from 1 to 1024"),
    ({"depth": 3.5}, "--depth must be a whole number"),
    ({"lr": float("nan")}, "--lr must be a positive number"),
    ({"lr": float("inf")}, "--lr must be a positive number"),
    ({"sigma": float("nan")}, "--sigma must be a positive number"),
    ({"epochs": 10**12}, "--epochs must be a whole number from 1 to 100000"),
])
def test_settings_from_python_are_checked_as_on_the_command_line(tiny, tmp_path, settings, message):
    from certifier import CertifyError

    arguments = {"data": tiny, "out": tmp_path / "d.onnx", "sigma": 0.5, "quiet": True, **settings}
    with pytest.raises(CertifyError, match=message):
        train_denoiser(**arguments)
    assert list(tmp_path.iterdir()) == []


def test_a_denoiser_too_big_for_memory_is_refused_up_front(tiny, tmp_path, monkeypatch):
    """Sizes within the ranges can still be too big together: the memory a training step needs
    (measured on torch's meta device, nothing allocated) is checked against what is available."""
    import certifier.resources

    monkeypatch.setattr(certifier.resources, "available_memory", lambda: 8 << 30)
    result = run(["--data", str(tiny), "--sigma", "0.5", "--out", str(tmp_path / "d.onnx"), "--features", "1024",
                  "--depth", "100"])
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert "needs at least" in line and "8.0 GiB is available" in line and "lower --features, --depth or --batch-size" \
        in line, line
    assert list(tmp_path.iterdir()) == []
    # the default for these images fits easily
    monkeypatch.setattr(certifier.resources, "available_memory", lambda: 256 << 20)
    assert run(["--data", str(tiny), "--sigma", "0.5", "--out", str(tmp_path / "d.onnx"), "--epochs", "1"]).exit_code == 0


def test_a_training_that_diverges_stops_in_one_line(tiny, tmp_path, monkeypatch):
    """A loss that is not finite stops the run instead of exporting a denoiser of NaNs."""
    import certifier_plugins.denoise as denoise

    class Diverging(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, noisy):
            return noisy * self.scale * float("inf")

    monkeypatch.setattr(denoise, "build_denoiser", lambda channels, depth, features: Diverging())
    result = run(["--data", str(tiny), "--sigma", "0.5", "--epochs", "1", "--out", str(tmp_path / "d.onnx")])
    assert result.exit_code == 1 and "training diverged" in result.output and "lower --lr" in result.output
    assert not (tmp_path / "d.onnx").exists()


def test_images_come_from_the_training_split_only(tiny, fashion):
    from certifier_plugins.denoise import load_images

    train, validation, labels = load_images(tiny, 0.05, seed=0)
    assert len(train) + len(validation) == 400 and len(validation) == 20
    assert train.dtype == np.float32 and train.shape[1:] == (1, 28, 28) and 0 <= train.min() and train.max() <= 1
    pool = {image.tobytes() for image in (fashion["x_train"][:400].astype(np.float32) / 255)}
    assert all(image[0].tobytes() in pool for image in np.concatenate([train, validation]))
    assert labels is not None and len(labels) == 20


def test_test_split_is_never_trained_on(tmp_path, fashion):
    np.savez(tmp_path / "test-only.npz", x_test=fashion["x_test"][:20], y_test=fashion["y_test"][:20])
    result = run(["--data", str(tmp_path / "test-only.npz"), "--sigma", "0.5", "--out", str(tmp_path / "d.onnx")])
    assert result.exit_code == 1 and "never trains on test images" in result.output


def test_feature_vectors_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 50), dtype=np.float32))
    result = run(["--data", str(tmp_path / "x.npy"), "--sigma", "0.5", "--out", str(tmp_path / "d.onnx")])
    assert result.exit_code == 1 and "a denoiser needs images" in result.output


def test_classifier_for_other_images_is_refused(tiny, tmp_path):
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    path = tmp_path / "cifar.onnx"
    export_onnx(network, (3, 32, 32), path, {})
    result = run(["--data", str(tiny), "--sigma", "0.5", "--loss", "stability", "--classifier", str(path),
                  "--out", str(tmp_path / "d.onnx")])
    assert result.exit_code == 1 and "the model takes colour images (3 channels)" in result.output


def test_classifier_the_converter_cannot_convert_is_refused(tiny, tmp_path):
    # an operator onnx2torch has no converter for (onnxruntime runs it)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]),
         helper.make_node("Hardmax", ["flat"], ["scores"])],
        "odd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 784])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "odd.onnx"
    onnx.save(model, path)
    result = run(["--data", str(tiny), "--sigma", "0.5", "--loss", "stability", "--classifier", str(path),
                  "--out", str(tmp_path / "d.onnx")])
    assert result.exit_code == 1, result.output
    assert "onnx2torch cannot convert odd.onnx" in result.output and "--loss mse" in result.output


def test_label_output_is_refused(tiny, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]),
         helper.make_node("ArgMax", ["flat"], ["label"], axis=1, keepdims=0)],
        "labels", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "labels.onnx")
    result = run(["--data", str(tiny), "--sigma", "0.5", "--loss", "stability", "--classifier",
                  str(tmp_path / "labels.onnx"), "--out", str(tmp_path / "d.onnx")])
    assert result.exit_code == 1 and "not class scores" in result.output


def test_float16_classifier_is_refused(tiny, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["wide"], to=TensorProto.FLOAT),
         helper.make_node("Flatten", ["wide"], ["scores"])],
        "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 784])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "half.onnx")
    result = run(["--data", str(tiny), "--sigma", "0.5", "--loss", "stability", "--classifier",
                  str(tmp_path / "half.onnx"), "--out", str(tmp_path / "d.onnx")])
    assert result.exit_code == 1 and "float16 inputs" in result.output and "--loss mse" in result.output


def test_missing_torch_or_converter_is_a_one_line_error(monkeypatch, tmp_path, tiny, classifier):
    import certifier_plugins.denoise as denoise

    monkeypatch.setitem(sys.modules, "onnx2torch", None)
    result = run(["--data", str(tiny), "--sigma", "0.5", "--loss", "stability", "--classifier", str(classifier),
                  "--epochs", "1", "--out", str(tmp_path / "d.onnx")])
    assert result.exit_code == 1 and "needs onnx2torch" in result.output and "[denoise]" in result.output
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(denoise.CertifyError, match="needs torch"):
        denoise._torch()
    result = run(["--data", str(tiny), "--sigma", "0.5", "--out", str(tmp_path / "d.onnx")])
    assert result.exit_code == 1 and "needs torch" in result.output and "Traceback" not in result.output
