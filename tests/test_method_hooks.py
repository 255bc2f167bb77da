"""Optional SmoothingMethod hooks used by the core: training metadata, warnings on the CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
from click.testing import CliRunner

import certifier
from certifier.cli import cli

from onnx_models import hyperplane_model, save


class Recorder(certifier.SmoothingMethod):
    """Gaussian noise that records the input shape at training time and warns on odd inputs."""

    name = "recorder-test"
    norm = "l2"

    def sample(self, x, rng, group):
        return x + self.sigma * rng.standard_normal(x.shape).astype(np.float32)

    def training_metadata(self, input_shape):
        # The second key tries to overwrite a core key: the core's value must win.
        return {"certifier.recorder": json.dumps({"input_shape": list(input_shape)}), "certifier.plugin": "forged"}

    def check_inputs(self, x):
        if (x > 0.95).any():
            warnings.warn("recorder-test: inputs above 0.95 are clipped")
        return np.minimum(x, 0.95)

    def certify(self, selection, estimation, alpha):
        return certifier.Certificate(selection.top(), 0.0)


def test_training_stores_the_methods_extra_metadata(register_methods, tmp_path):
    from certifier_plugins.train import train

    register_methods(Recorder)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.9, (64, 6)).astype(np.float32)
    np.savez(tmp_path / "tiny.npz", x=x, y=(x[:, 0] > 0.45).astype(np.int64))
    out = tmp_path / "tiny.onnx"
    train(plugin="recorder-test", sigma=0.1, options={}, data=tmp_path / "tiny.npz", out=out, epochs=1,
          batch_size=32, lr=0.01, width=2, seed=0, device="cpu", group=None, classes=None, dataset_name=None,
          checkpoint=None, restart=False, quiet=True)
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["certifier.recorder"]) == {"input_shape": [6]}
    assert metadata["certifier.plugin"] == "recorder-test"


def test_plugin_warnings_are_one_line_on_the_cli(register_methods, tmp_path):
    register_methods(Recorder)
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    np.savez(tmp_path / "x.npz", x=np.array([[0.99, 0.1, 0.1, 0.1]], dtype=np.float32), y=np.array([1]))
    result = CliRunner().invoke(cli, ["--plugin", "recorder-test", "--sigma", "0.1", "--n0", "10", "-n", "10", "-q",
                                      str(path), "--data", str(tmp_path / "x.npz")])
    assert result.exit_code == 0, result.output
    assert "certify: warning: recorder-test: inputs above 0.95 are clipped" in result.stderr
    assert "warnings.warn" not in result.stderr and "UserWarning" not in result.stderr
