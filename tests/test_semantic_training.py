"""certify train with the semantic plugins: each trains on its own views, and the model certifies with them."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

import certifier  # noqa: E402
from certifier.cli import cli  # noqa: E402


@pytest.fixture
def small_data(tmp_path, fashion):
    path = tmp_path / "small.npz"
    np.savez(path, x_train=fashion["x_train"][:300], y_train=fashion["y_train"][:300],
             x_test=fashion["x_test"][:50], y_test=fashion["y_test"][:50])
    return path


@pytest.mark.parametrize("plugin,args,options", [
    ("brightness", ["--sigma", "0.25"], {}),
    ("contrast", ["--sigma", "0.2"], {}),
    ("gamma", ["--sigma", "0.2"], {}),
    ("translation", ["-o", "k", "2"], {"k": 2}),
])
def test_train_on_the_plugins_views_and_certify_with_the_models_settings(plugin, args, options, small_data, tmp_path):
    out = tmp_path / f"{plugin}.onnx"
    result = CliRunner().invoke(cli, ["train", "-q", "--plugin", plugin, *args, "--data", str(small_data),
                                      "--epochs", "1", "--width", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert metadata["certifier.plugin"] == plugin
    assert json.loads(metadata["certifier.options"]) == options
    run = certifier.load(out)  # plugin, sigma and K from the metadata
    assert run.method.name == plugin
    results = run.certify(np.load(small_data)["x_test"][:2], n0=10, n=50)
    assert len(results) == 2 and all(r.threat_model == run.method.threat_model.name for r in results)


def test_training_batches_are_the_plugins_views(monkeypatch):
    """train.py draws every training view with the method's own sample()."""
    import certifier_plugins.train as train

    drawn = []
    method = certifier.make_method("brightness", 0.3, {}, {})
    original = type(method).sample

    def recording(self, x, rng, group):
        views = original(self, x, rng, group)
        drawn.append((x, views))
        return views

    monkeypatch.setattr(type(method), "sample", recording)
    x = np.random.default_rng(0).random((8, 1, 4, 4)).astype(np.float32)
    views, labels = train._noisy_views(method, x, np.arange(8), np.random.default_rng(1), ["model"])
    assert len(drawn) == 1 and np.array_equal(views, drawn[0][1])
    shifts = (views - x).reshape(8, -1)
    assert np.allclose(shifts, shifts[:, :1], atol=1e-6) and np.ptp(shifts[:, 0]) > 0  # one b per image
