"""certify train: data, noise from the plugin, checkpoints and resume, ONNX export with metadata."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

import certifier  # noqa: E402
from certifier.cli import cli  # noqa: E402
from certifier_plugins.train import build_network  # noqa: E402


@pytest.fixture
def small_data(tmp_path, fashion):
    path = tmp_path / "small.npz"
    np.savez(path, x_train=fashion["x_train"][:600], y_train=fashion["y_train"][:600],
             x_test=fashion["x_test"][:200], y_test=fashion["y_test"][:200])
    return path


def train(args):
    return CliRunner().invoke(cli, ["train", "-q", *args])


def test_train_exports_a_model_certify_reads_without_options(small_data, tmp_path):
    out = tmp_path / "model.onnx"
    result = train(["--plugin", "rs", "--sigma", "0.3", "--data", str(small_data), "--epochs", "2", "--out", str(out),
                    "--classes", "a,b,c,d,e,f,g,h,i,j", "--dataset-name", "tiny-fashion", "--width", "4"])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    assert model.ir_version <= 10
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["certifier.plugin"] == "rs" and float(metadata["certifier.sigma"]) == 0.3
    assert metadata["certifier.dataset"] == "tiny-fashion"
    assert json.loads(metadata["certifier.classes"]) == list("abcdefghij")
    assert json.loads(metadata["certifier.input_space"])["scale"] == 1.0
    training = json.loads(metadata["certifier.training"])
    assert training["epochs"] == 2 and 0 <= training["validation_noisy_accuracy"] <= 1
    # plugin and sigma come from the metadata
    run = certifier.load(out)
    assert run.method.name == "rs" and run.method.sigma == 0.3
    results = run.certify(np.load(small_data)["x_test"][:3], n0=10, n=100)
    assert len(results) == 3


def test_training_learns_something(small_data, tmp_path):
    out = tmp_path / "model.onnx"
    result = train(["--plugin", "rs", "--sigma", "0.1", "--data", str(small_data), "--epochs", "6", "--out", str(out),
                    "--batch-size", "32", "--width", "8"])
    assert result.exit_code == 0, result.output
    training = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["certifier.training"])
    assert training["validation_clean_accuracy"] > 0.4  # ten classes: chance is 0.1


def test_resume_from_checkpoint_and_refuse_another_run(small_data, tmp_path):
    out = tmp_path / "model.onnx"
    args = ["--plugin", "rs", "--sigma", "0.2", "--data", str(small_data), "--out", str(out), "--width", "4"]
    assert train(args + ["--epochs", "1"]).exit_code == 0
    checkpoint = tmp_path / "model.onnx.ckpt"
    assert checkpoint.exists()
    # the same run with more epochs is another run (the schedule differs): refused
    refused = train(args + ["--epochs", "2"])
    assert refused.exit_code == 1 and "checkpoint of another training run" in refused.output
    assert "Traceback" not in refused.output
    assert train(args + ["--epochs", "2", "--restart"]).exit_code == 0
    # rerunning the finished run resumes after its last epoch: nothing left to train, same weights
    before = out.read_bytes()
    out.unlink()
    again = CliRunner().invoke(cli, ["train", *args, "--epochs", "2"])
    assert again.exit_code == 0 and "resuming" in again.output
    assert onnx.load_from_string(before).graph.initializer[0] == onnx.load(str(out)).graph.initializer[0]


def test_limit_trains_on_the_first_inputs_only(small_data, tmp_path, monkeypatch):
    import certifier_plugins.train as training

    loaded = []
    original = training._load_training_data

    def spy(*args, **kwargs):
        loaded.append(original(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(training, "_load_training_data", spy)
    out = tmp_path / "model.onnx"
    args = ["--plugin", "rs", "--sigma", "0.2", "--data", str(small_data), "--out", str(out), "--width", "4",
            "--epochs", "1"]
    assert train(args + ["--limit", "50"]).exit_code == 0
    x, y, x_val, y_val, names = loaded[-1]
    data = np.load(small_data)
    assert np.array_equal(y, data["y_train"][:50]) and np.array_equal(x[:, 0] * 255, data["x_train"][:50])
    assert len(x_val) == 200 and len(names) == 10  # the test split whole; the classes of every label
    training_record = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["certifier.training"])
    assert training_record["limit"] == 50
    # another limit is another run: its checkpoint is not resumed
    refused = train(args + ["--limit", "60"])
    assert refused.exit_code == 1 and "checkpoint of another training run" in refused.output
    # without a test split, the validation inputs are held out of the first K
    np.savez(tmp_path / "plain.npz", x=data["x_train"][:300], y=data["y_train"][:300])
    assert train(["--plugin", "rs", "--sigma", "0.2", "--data", str(tmp_path / "plain.npz"), "--out",
                  str(tmp_path / "plain.onnx"), "--width", "4", "--epochs", "1", "--limit", "100"]).exit_code == 0
    x, _, x_val, _, _ = loaded[-1]
    assert len(x) + len(x_val) == 100 and len(x_val) == 10


def test_image_folder_and_validation_split(tmp_path):
    from skimage import io

    rng = np.random.default_rng(0)
    for label in ("0", "1"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(12):
            image = rng.integers(0, 60, (8, 8), dtype=np.uint8) + (150 if label == "1" else 0)
            io.imsave(tmp_path / "images" / label / f"{i}.png", image, check_contrast=False)
    out = tmp_path / "folder.onnx"
    result = train(["--plugin", "rs", "--sigma", "0.1", "--data", str(tmp_path / "images"), "--epochs", "2",
                    "--out", str(out), "--width", "4", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["certifier.classes"]) == ["0", "1"]


@pytest.mark.parametrize(
    "args,message",
    [(["--plugin", "nope", "--sigma", "0.1"], "unknown plugin"),
     (["--plugin", "rs"], "needs --sigma"),
     (["--plugin", "rs", "--sigma", "0.1", "--epochs", "0"], "'--epochs': 0 is not in the range 1<=x<=100000"),
     (["--plugin", "rs", "--sigma", "0.1", "--group", "left"], "--group left is not one")],
)
def test_bad_training_arguments_are_one_line_errors(small_data, tmp_path, args, message):
    result = train(args + ["--data", str(small_data), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_unlabeled_training_data_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 8, 8), dtype=np.uint8))
    result = train(["--plugin", "rs", "--sigma", "0.1", "--data", str(tmp_path / "x.npy"), "--out",
                    str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "no labels" in result.output


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 7, 9), (20,)])
def test_network_fits_any_input_shape(shape):
    import torch

    network = build_network(shape, 5, width=4)
    assert network(torch.zeros(2, *shape)).shape == (2, 5)


def test_no_noise_trains_a_plain_model_without_smoothing_defaults(small_data, tmp_path):
    """The stand-in for a third-party model: certify must not smooth it with a sigma from metadata."""
    out = tmp_path / "plain.onnx"
    result = train(["--no-noise", "--data", str(small_data), "--epochs", "3", "--out", str(out), "--width", "4",
                    "--batch-size", "32", "--dataset-name", "tiny-fashion"])
    assert result.exit_code == 0, result.output
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert not any(key in metadata for key in ("certifier.plugin", "certifier.sigma", "certifier.options",
                                               "certifier.input_space", "certifier.group"))
    assert metadata["certifier.dataset"] == "tiny-fashion"
    training = json.loads(metadata["certifier.training"])
    assert training["noise"] is False and training["plugin"] is None
    assert 0 <= training["validation_clean_accuracy"] <= 1
    assert "validation_noisy_accuracy" not in training
    with pytest.raises(certifier.CertifyError, match="no --plugin given"):
        certifier.load(out)
    with pytest.raises(certifier.CertifyError, match="needs --sigma"):
        certifier.load(out, plugin="rs")
    run = certifier.load(out, plugin="rs", sigma=0.25)
    assert len(run.certify(np.load(small_data)["x_test"][:2], n0=10, n=50)) == 2
    refused = CliRunner().invoke(cli, ["--data", str(small_data), "-n", "50", str(out)])
    assert refused.exit_code != 0 and "no --plugin given" in refused.output


def test_no_noise_views_are_the_clean_images():
    from certifier_plugins.train import CleanImages

    x = np.random.default_rng(0).random((4, 1, 5, 5), dtype=np.float32)
    assert CleanImages().sample(x, np.random.default_rng(1), "model") is x


@pytest.mark.parametrize(
    "args,message",
    [(["--no-noise", "--plugin", "rs"], "drop --plugin"),
     (["--no-noise", "--sigma", "0.25"], "drop --sigma"),
     (["--no-noise", "-o", "method", "slic"], "drop --option"),
     ([], "--plugin (the noise to train with), or --no-noise")],
)
def test_no_noise_refusals(small_data, tmp_path, args, message):
    result = train(args + ["--data", str(small_data), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("option,value", [
    ("--width", "0"), ("--width", "100000"), ("--epochs", "1000000000000"), ("--batch-size", "0"), ("--lr", "0"),
    ("--lr", "1e38"), ("--validation-fraction", "1"), ("--limit", "0"),
])
def test_settings_out_of_range_are_usage_errors_before_anything_runs(small_data, tmp_path, option, value):
    result = train(["--plugin", "rs", "--sigma", "0.25", "--data", str(small_data), "--out", str(tmp_path / "m.onnx"),
                    option, value])
    assert result.exit_code == 2 and f"{option}': {value}" in result.output.replace("e+", "e"), result.output
    assert "is not in the range" in result.output and not (tmp_path / "m.onnx").exists()


def test_a_learning_rate_that_is_not_a_number_is_one_line(small_data, tmp_path):
    result = train(["--plugin", "rs", "--sigma", "0.25", "--data", str(small_data), "--out", str(tmp_path / "m.onnx"),
                    "--lr", "nan"])
    assert result.exit_code == 1 and "--lr must be a positive number" in result.output, result.output


def test_a_network_too_big_for_memory_is_refused_up_front(small_data, tmp_path, monkeypatch):
    """A width and a batch within their ranges can still be too big together (on larger images
    especially): the memory a training step needs is checked before the network is built."""
    import certifier.resources

    monkeypatch.setattr(certifier.resources, "available_memory", lambda: 1 << 30)
    result = train(["--plugin", "rs", "--sigma", "0.25", "--data", str(small_data), "--out", str(tmp_path / "m.onnx"),
                    "--width", "512", "--batch-size", "600"])
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert "needs at least" in line and "1.0 GiB is available" in line and "lower --batch-size or --width" in line
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.onnx.ckpt").exists()


def test_a_training_that_diverges_stops_in_one_line(small_data, tmp_path, monkeypatch):
    """A loss that is not finite stops the run instead of exporting a model of NaNs (learning
    rates large enough to do that are out of --lr's range, so a network that overflows stands in)."""
    import torch

    import certifier_plugins.train as training

    class Overflowing(torch.nn.Module):
        def __init__(self, classes):
            super().__init__()
            self.linear = torch.nn.Linear(1, classes)

        def forward(self, x):
            return self.linear(x.flatten(1)[:, :1]) * float("inf")

    monkeypatch.setattr(training, "build_network", lambda shape, classes, width: Overflowing(classes))
    result = train(["--plugin", "rs", "--sigma", "0.25", "--data", str(small_data), "--out", str(tmp_path / "m.onnx"),
                    "--epochs", "1"])
    assert result.exit_code == 1 and "training diverged" in result.output and "lower --lr" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_a_checkpoint_of_other_data_or_a_newer_certify_is_refused_in_one_line(small_data, tmp_path, fashion):
    import torch

    out = tmp_path / "model.onnx"
    args = ["--plugin", "rs", "--sigma", "0.2", "--out", str(out), "--width", "4", "--epochs", "1"]
    assert train(args + ["--data", str(small_data)]).exit_code == 0
    # other data at the same path: fewer inputs and four classes (the network's last layer no longer fits)
    np.savez(small_data, x_train=fashion["x_train"][:400], y_train=fashion["y_train"][:400] % 4,
             x_test=fashion["x_test"][:200], y_test=fashion["y_test"][:200] % 4)
    refused = train(args + ["--data", str(small_data)])
    assert refused.exit_code == 1 and "checkpoint of another training run" in refused.output
    assert "Traceback" not in refused.output and len(refused.output.strip().splitlines()) == 1
    checkpoint = tmp_path / "model.onnx.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "version": 99}, checkpoint)
    newer = train(args + ["--data", str(small_data)])
    assert newer.exit_code == 1 and "written by a newer certify" in newer.output
    assert checkpoint.exists()
