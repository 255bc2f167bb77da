"""Methods with several vote groups: one model per group, votes counted per group."""

from __future__ import annotations

import json

import numpy as np
import pytest

import certifier
from certifier.methods import Votes

from onnx_models import hyperplane_model, linear_model, save


def _pair_method(b_model: str, seen: dict):
    """Group "a" reads the whole 4-vector with the main model, group "b" its first two
    coordinates with its own model; certify() records the votes it gets."""

    class Pair(certifier.SmoothingMethod):
        name = "pair"
        norm = "l2"
        groups = ("a", "b")

        def view_shape(self, input_shape, group):
            return input_shape if group == "a" else (2,)

        def group_model(self, group):
            return b_model if group == "b" else None

        def sample(self, x, rng, group):
            draws = rng.standard_normal(x.shape).astype(np.float32)
            seen.setdefault(group, []).append(draws[:, 0].copy())
            noisy = x + self.sigma * draws
            return noisy if group == "a" else noisy[:, :2]

        def certify(self, selection, estimation, alpha):
            seen["selection"], seen["estimation"] = selection, estimation
            return certifier.Certificate(selection.top(), 0.0)

    return Pair


def test_each_group_goes_to_its_own_model_and_is_counted_apart(tmp_path, register_methods):
    main = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "a.onnx")  # class 1 iff x0 > 0.5
    other = save(hyperplane_model([0, 1], -0.5, (2,)), tmp_path / "b.onnx")  # class 1 iff x1 > 0.5
    seen: dict = {}
    register_methods(_pair_method(str(other), seen))
    run = certifier.load(main, plugin="pair", sigma=0.001)
    run.certify(np.array([[0.9, 0.1, 0.0, 0.0]], dtype=np.float32), n0=20, n=60, batch_size=25)
    estimation: Votes = seen["estimation"]
    assert list(estimation["a"]) == [0, 60] and list(estimation["b"]) == [60, 0]
    assert list(seen["selection"]["a"]) == [0, 20] and list(seen["selection"]["b"]) == [20, 0]
    assert list(estimation.total()) == [60, 60]
    # each group draws its noise from its own stream
    a, b = np.concatenate(seen["a"]), np.concatenate(seen["b"])
    assert len(a) == len(b) == 80 and not np.isin(a, b).any()


def test_a_group_model_reads_its_own_input_space(tmp_path, register_methods):
    """The main model's normalization (from its metadata) must not leak into another
    group's model; what the user sets applies to both."""
    weights, bias = np.ones((4, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)
    normalized = {"certifier.input_space": json.dumps({"scale": 1.0, "mean": [0.5], "std": [0.25]})}
    main = save(linear_model(weights, bias, (4,), metadata=normalized), tmp_path / "a.onnx")
    other = save(linear_model(weights[:2], bias, (2,)), tmp_path / "b.onnx")
    register_methods(_pair_method(str(other), {}))
    groups = certifier.load(main, plugin="pair", sigma=0.5).groups((4,))
    assert groups["a"].adapter.space.mean == (0.5,) and groups["a"].adapter.space.std == (0.25,)
    assert groups["b"].adapter.space.mean == (0.0,) and groups["b"].adapter.space.std == (1.0,)
    groups = certifier.load(main, plugin="pair", sigma=0.5, mean=[0.2]).groups((4,))
    assert groups["a"].adapter.space.mean == (0.2,) and groups["b"].adapter.space.mean == (0.2,)
    assert groups["b"].adapter.space.std == (1.0,)


def test_clean_view_defaults_to_the_input_when_shapes_match(register_methods):
    x = np.zeros((3, 4), dtype=np.float32)
    pair = _pair_method("unused.onnx", {})(sigma=0.5)
    assert pair.clean_view(x, "a") is x
    assert pair.clean_view(x, "b") is None


@pytest.mark.parametrize("groups", [("model",), ("a", "b")])
def test_votes_total_sums_the_groups(groups):
    counts = {g: np.arange(3) + i for i, g in enumerate(groups)}
    votes = Votes(counts, lambda k, n, a: 0.0)
    assert list(votes.total()) == list(sum(counts.values()))
    assert votes.trials(groups[-1]) == int(counts[groups[-1]].sum())


def test_views_that_do_not_fit_the_model_are_blamed_on_the_plugin(tmp_path, register_methods):
    # group "b" makes 2-vectors but gets the main model, which reads 4-vectors
    main = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "a.onnx")
    register_methods(_pair_method(None, {}))
    run = certifier.load(main, plugin="pair", sigma=0.5)
    with pytest.raises(certifier.CertifyError) as error:
        run.groups((4,))
    message = str(error.value)
    assert "plugin pair makes views of shape 2 (group 'b') but a.onnx takes 4" in message
    assert "\n" not in message
