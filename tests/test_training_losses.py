"""certify train --loss: consistency regularization and SmoothAdv beside Gaussian augmentation,
their refusals, metadata, and resuming a run from a checkpoint taken within an epoch."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

import certifier  # noqa: E402
from certifier import metadata  # noqa: E402
from certifier.cli import cli  # noqa: E402
from certifier_plugins import train as training  # noqa: E402
from certifier_plugins.rs import GaussianSmoothing  # noqa: E402
from certifier_plugins._losses import make_loss, smoothadv_attack, smoothed_soft_loss  # noqa: E402
from certifier_plugins.train import build_network  # noqa: E402


@pytest.fixture
def tiny_data(tmp_path, fashion):
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=fashion["x_train"][:96], y_train=fashion["y_train"][:96],
             x_test=fashion["x_test"][:32], y_test=fashion["y_test"][:32])
    return path


@pytest.fixture(scope="module")
def images(fashion):
    """512 training images and labels, 200 held-out images, in pixel space (N, 1, 28, 28)."""
    pixels = fashion["x_train"][:512].astype(np.float32)[:, None] / 255
    held_out = fashion["x_test"][:200].astype(np.float32)[:, None] / 255
    return pixels, fashion["y_train"][:512].astype(np.int64), held_out


def train(args):
    return CliRunner().invoke(cli, ["train", "-q", *args])


def _steps(network, loss, method, x, y, steps: int, seed: int):
    """``steps`` SGD steps of ``loss`` on random batches of 64, as train.py takes them."""
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = rng.choice(len(x), 64, replace=False)
        optimizer.zero_grad()
        training._batch_loss(loss, network, method, x[batch], y[batch], rng, ["model"], torch.device("cpu"), 0).backward()
        optimizer.step()
    return network


def _spread(network, x, sigma: float, copies: int = 16) -> float:
    """Mean KL divergence from the mean prediction over noisy copies to each copy's prediction."""
    noisy = x[None] + sigma * np.random.default_rng(5).standard_normal((copies, *x.shape)).astype(np.float32)
    with torch.no_grad():
        probabilities = torch.softmax(network(torch.from_numpy(noisy).flatten(0, 1)), -1).view(copies, len(x), -1)
    mean = probabilities.mean(0)
    return float((mean * (mean.clamp_min(1e-20).log() - probabilities.clamp_min(1e-20).log())).sum(-1).mean())


@pytest.fixture(scope="module")
def pretrained(images):
    """A small network after 60 steps of Gaussian augmentation at sigma 0.5 (it predicts, so its
    predictions over noisy copies can spread), and that method. Tests copy it before training it."""
    x, y, _ = images
    torch.manual_seed(0)
    method = certifier.make_method("rs", 0.5, {}, {})
    return _steps(build_network((1, 28, 28), 10, width=8), make_loss("gaussian"), method, x, y, 60, 0), method


def test_consistency_shrinks_the_spread_over_noisy_copies(images, pretrained):
    """Against Gaussian training, and against cross-entropy alone on the same two copies (the
    consistency loss with both weights 0): the regularizer, not the extra copy, shrinks it."""
    x, y, held_out = images
    start, method = pretrained
    spread = {
        name: _spread(_steps(copy.deepcopy(start), loss, method, x, y, 30, 100), held_out, 0.5)
        for name, loss in (("gaussian", make_loss("gaussian")),
                           ("two copies", make_loss("consistency", consistency_weight=0.0, entropy_weight=0.0)),
                           ("consistency", make_loss("consistency", consistency_weight=20.0)))
    }
    assert spread["consistency"] < 0.75 * spread["gaussian"], spread
    assert spread["consistency"] < 0.8 * spread["two copies"], spread


def test_smoothadv_attack_raises_the_loss_it_attacks(images, pretrained):
    _, _, held_out = images
    network = copy.deepcopy(pretrained[0])
    inputs = torch.from_numpy(held_out[:64])
    labels = torch.from_numpy(np.argmax(network(inputs).detach().numpy(), 1))
    noise = 0.5 * torch.from_numpy(np.random.default_rng(1).standard_normal((4, *inputs.shape)).astype(np.float32))
    radius = 0.5
    attacked = smoothadv_attack(network, inputs, labels, noise, radius, steps=5)
    moved = (attacked - inputs).flatten(1).norm(dim=1)
    assert float(moved.max()) <= radius * (1 + 1e-5) and float(moved.min()) > 0
    assert float(attacked.min()) >= 0 and float(attacked.max()) <= 1
    with torch.no_grad():
        before = smoothed_soft_loss(network, inputs, labels, noise)
        after = smoothed_soft_loss(network, attacked, labels, noise)
        # a random change as large as the attack's, kept in [0, 1] as the attack's is
        direction = torch.from_numpy(np.random.default_rng(2).standard_normal(inputs.shape).astype(np.float32))
        direction *= (moved / direction.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
        randomly = smoothed_soft_loss(network, (inputs + direction).clamp(0, 1), labels, noise)
    assert bool((after >= before - 1e-6).all()) and float(after.mean()) > float(before.mean()) + 0.1
    assert float(after.mean()) > float(randomly.mean())
    assert network.training  # the attack leaves the network in the mode it found


def test_smoothadv_attack_radius_warms_up_linearly():
    loss = make_loss("smoothadv", attack_radius=0.5, attack_warmup=4)
    assert [loss.attack_radius(epoch) for epoch in range(6)] == [0.125, 0.25, 0.375, 0.5, 0.5, 0.5]
    assert make_loss("smoothadv", attack_warmup=0).attack_radius(0) == 1.0


@pytest.mark.parametrize("args,record", [
    ([], {"loss": "gaussian", "noise_copies": 1}),
    (["--loss", "consistency", "--noise-copies", "3", "--consistency-weight", "5"],
     {"loss": "consistency", "noise_copies": 3, "consistency_weight": 5.0, "entropy_weight": 0.5}),
    (["--loss", "smoothadv", "--noise-copies", "2", "--attack-radius", "0.5", "--attack-steps", "2"],
     {"loss": "smoothadv", "noise_copies": 2, "attack_radius": 0.5, "attack_steps": 2, "attack_warmup": 10}),
])
def test_the_loss_and_its_settings_are_recorded_in_the_model(tiny_data, tmp_path, args, record):
    out = tmp_path / "model.onnx"
    result = train(["--plugin", "rs", "--sigma", "0.25", "--data", str(tiny_data), "--epochs", "1", "--width", "4",
                    "--batch-size", "32", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    written = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert metadata.recorded_loss(written) == record
    assert json.loads(written["certifier.training"])["training_seconds"] > 0
    run = certifier.load(out)  # certify reads the model as before
    assert run.method.name == "rs" and len(run.certify(np.load(tiny_data)["x_test"][:2], n0=10, n=50)) == 2


@pytest.mark.parametrize("plugin,args", [
    ("rs", ["--sigma", "0.25"]),
    ("drs", ["--sigma", "0.25"]),
    ("pprs", ["--sigma", "0.25", "-o", "method", "grid"]),
    ("uniform", ["--sigma", "0.5"]),
    ("ssn", ["--sigma", "0.5"]),
    ("dssn", ["--sigma", "0.5"]),
    ("brightness", ["--sigma", "0.25"]),
    ("gamma", ["--sigma", "0.2"]),
    ("translation", ["-o", "k", "1"]),
])
def test_consistency_trains_on_every_plugins_noise(tiny_data, tmp_path, plugin, args):
    out = tmp_path / f"{plugin}.onnx"
    result = train(["--plugin", plugin, *args, "--data", str(tiny_data), "--epochs", "1", "--width", "2",
                    "--batch-size", "48", "--loss", "consistency", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert metadata.recorded_loss(written)["loss"] == "consistency" and written["certifier.plugin"] == plugin


@pytest.mark.parametrize("args,message", [
    (["--plugin", "uniform", "--sigma", "0.5", "--loss", "smoothadv"],
     "--loss smoothadv attacks in L2 (PGD on an L2 ball), but plugin uniform certifies l1 radii; "
     "train it with --loss consistency"),
    (["--plugin", "brightness", "--sigma", "0.25", "--loss", "smoothadv"], "plugin brightness certifies brightness"),
    (["--plugin", "translation", "--loss", "smoothadv"], "plugin translation certifies cyclic-shift radii"),
    (["--plugin", "pprs", "--sigma", "0.25", "--loss", "smoothadv"],
     "--loss smoothadv needs views that are the input plus noise, but plugin pprs transforms the noisy input"),
    (["--plugin", "drs", "--sigma", "0.25", "--loss", "smoothadv"], "but plugin drs transforms the noisy input"),
    (["--no-noise", "--loss", "consistency"], "--loss consistency trains on noisy copies of each input and "
                                              "--no-noise has none"),
    (["--plugin", "rs", "--sigma", "0.25", "--loss", "consistency", "--attack-steps", "3"],
     "--attack-steps is a setting of --loss smoothadv, not of --loss consistency"),
    (["--plugin", "rs", "--sigma", "0.25", "--noise-copies", "2"],
     "--noise-copies is a setting of --loss consistency and smoothadv, not of --loss gaussian"),
    (["--plugin", "rs", "--sigma", "0.25", "--loss", "consistency", "--noise-copies", "1"],
     "--noise-copies must be a whole number from 2 to 256 (the consistency term compares copies), got 1"),
    (["--plugin", "rs", "--sigma", "0.25", "--loss", "consistency", "--consistency-weight", "-1"],
     "--consistency-weight must be at least 0"),
    (["--plugin", "rs", "--sigma", "0.25", "--loss", "consistency", "--entropy-weight", "nan"],
     "--entropy-weight must be a number"),
    (["--plugin", "rs", "--sigma", "0.25", "--loss", "smoothadv", "--attack-radius", "0"],
     "--attack-radius must be above 0"),
    (["--plugin", "rs", "--sigma", "0.25", "--loss", "smoothadv", "--attack-steps", "0"],
     "--attack-steps must be a whole number from 1 to 1000"),
    (["--plugin", "rs", "--sigma", "0.25", "--loss", "smoothadv", "--attack-warmup", "-1"],
     "--attack-warmup must be a whole number at least 0"),
])
def test_losses_that_do_not_apply_are_refused_in_one_line(tiny_data, tmp_path, args, message):
    out = tmp_path / "m.onnx"
    result = train([*args, "--data", str(tiny_data), "--out", str(out)])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def _initializers(path) -> list[np.ndarray]:
    return [onnx.numpy_helper.to_array(tensor) for tensor in onnx.load(str(path)).graph.initializer]


#: Validation draws an epoch: tiny_data's 32 test images in batches of 16.
VALIDATION_DRAWS = 2


def _interrupt_at_call(monkeypatch, number: int):
    """Ctrl-C inside the ``number``-th draw of rs noise (training and validation draws count);
    returns what puts the noise back."""
    sample = GaussianSmoothing.sample
    calls = []

    def interrupted(self, x, rng, group):
        calls.append(1)
        if len(calls) == number:
            raise KeyboardInterrupt
        return sample(self, x, rng, group)

    monkeypatch.setattr(GaussianSmoothing, "sample", interrupted)
    return lambda: monkeypatch.setattr(GaussianSmoothing, "sample", sample)


@pytest.mark.parametrize("loss,draws_per_step", [
    ([], 1),
    (["--loss", "consistency"], 2),
    (["--loss", "smoothadv", "--noise-copies", "2", "--attack-steps", "2", "--attack-warmup", "2"], 2),
])
def test_resuming_within_an_epoch_gives_the_uninterrupted_model(tiny_data, tmp_path, monkeypatch, loss,
                                                                draws_per_step):
    args = ["--plugin", "rs", "--sigma", "0.25", "--data", str(tiny_data), "--epochs", "2", "--width", "4",
            "--batch-size", "16", *loss]
    whole = tmp_path / "whole.onnx"
    assert train([*args, "--out", str(whole)]).exit_code == 0
    monkeypatch.setattr(training, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every step
    # 6 steps an epoch, then the validation draws: stop in the third step of the second epoch
    restore = _interrupt_at_call(monkeypatch, draws_per_step * 6 + VALIDATION_DRAWS + draws_per_step * 2 + 1)
    resumed = tmp_path / "resumed.onnx"
    interrupted = train([*args, "--out", str(resumed)])
    assert interrupted.exit_code == 130 and not resumed.exists()
    restore()
    again = CliRunner().invoke(cli, ["train", *args, "--out", str(resumed)])
    assert again.exit_code == 0, again.output
    assert "resuming" in again.output and "in epoch 2, after step 2" in again.output
    assert all(np.array_equal(a, b) for a, b in zip(_initializers(whole), _initializers(resumed), strict=True))


def test_a_checkpoint_from_before_losses_still_resumes(tiny_data, tmp_path, monkeypatch):
    """Version 1 checkpoints (end of epoch, no loss recorded) were Gaussian runs: they resume as such."""
    args = ["--plugin", "rs", "--sigma", "0.25", "--data", str(tiny_data), "--epochs", "2", "--width", "4",
            "--batch-size", "16"]
    whole = tmp_path / "whole.onnx"
    assert train([*args, "--out", str(whole)]).exit_code == 0
    restore = _interrupt_at_call(monkeypatch, 6 + VALIDATION_DRAWS + 1)  # at the first step of the second epoch
    resumed = tmp_path / "resumed.onnx"
    assert train([*args, "--out", str(resumed)]).exit_code == 130
    restore()
    checkpoint = tmp_path / "resumed.onnx.ckpt"
    state = torch.load(checkpoint, weights_only=False)
    assert state["epoch"] == 1 and "step" not in state
    old = {key: state[key] for key in ("settings", "epoch", "network", "optimizer", "scheduler")}
    torch.save({"version": 1, **old}, checkpoint)
    again = CliRunner().invoke(cli, ["train", *args, "--out", str(resumed)])
    assert again.exit_code == 0 and "resuming" in again.output and "after epoch 1" in again.output
    assert all(np.array_equal(a, b) for a, b in zip(_initializers(whole), _initializers(resumed), strict=True))
    # another loss is another training run
    refused = train([*args, "--out", str(resumed), "--loss", "consistency"])
    assert refused.exit_code == 1 and "checkpoint of another training run" in refused.output


@pytest.mark.parametrize("change", [
    lambda state: state.pop("rng"),
    lambda state: state.pop("epoch_loss"),
    lambda state: state.update(rng={"bit_generator": "Nonsense"}),
    lambda state: state.update(epoch_loss="much"),
])
def test_a_mid_epoch_checkpoint_missing_its_noise_state_is_refused_in_one_line(tiny_data, tmp_path, monkeypatch,
                                                                              change):
    args = ["--plugin", "rs", "--sigma", "0.25", "--data", str(tiny_data), "--epochs", "2", "--width", "4",
            "--batch-size", "16", "--out", str(tmp_path / "model.onnx")]
    monkeypatch.setattr(training, "CHECKPOINT_SECONDS", 0.0)
    restore = _interrupt_at_call(monkeypatch, 3)  # in the third step of the first epoch
    assert train(args).exit_code == 130
    restore()
    checkpoint = tmp_path / "model.onnx.ckpt"
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 2
    change(state)
    torch.save(state, checkpoint)
    refused = train(args)
    assert refused.exit_code == 1 and "Traceback" not in refused.output, refused.output
    assert "is not a checkpoint this training can resume" in refused.output and "--restart" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
