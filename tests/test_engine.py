"""The engine's contract with plugins: deterministic enumeration, vote groups, separate models."""

from __future__ import annotations

import numpy as np
import pytest

import certifier
from certifier.engine import Engine
from certifier.planning import auto_batch_size
from certifier.sampling import ESTIMATION, FixedSampling

from onnx_models import hyperplane_model, linear_model, save


class Enumerate(certifier.SmoothingMethod):
    """Deterministic: view j shifts the first feature by (j - 5) / 10; exact 'radius' = a tenth of the top votes
    (within the L1 diameter 4 of the inputs' space, as every radius must be)."""

    name = "enumerate-test"
    norm = "l1"
    deterministic = True
    uses_sigma = False
    calls: list = []

    def num_views(self, input_shape):
        return 11

    def views(self, x, index, group):
        Enumerate.calls.append(index.copy())
        shifted = np.array(x, dtype=np.float32)
        shifted[:, 0] += (index.astype(np.float32) - 5) / 10
        return shifted

    def certify(self, selection, estimation, alpha):
        assert selection is None
        counts = estimation["model"]
        top = estimation.top()
        return certifier.Certificate(top, counts[top] / 10, exact=True, details={"counts": counts.tolist()})


def test_deterministic_methods_see_every_view_exactly_once(register_methods, tmp_path):
    register_methods(Enumerate)
    Enumerate.calls = []
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="enumerate-test")
    x = np.array([[0.52, 0, 0, 0], [0.93, 0, 0, 0]], dtype=np.float32)
    results = run.certify(x, batch_size=4)
    seen = np.concatenate(Enumerate.calls)
    assert sorted(seen.tolist()) == sorted(list(range(11)) * 2)
    # x0 = 0.52: shifted values 0.02 .. 1.02; class 1 where > 0.5, i.e. j >= 5 (0.52 - 0.0) : 6 views
    assert results[0].details["counts"] == [5, 6]
    assert results[1].details["counts"] == [1, 10]
    assert results[0].exact and results[0].forward_passes == 11


def test_engine_reports_the_ceiling_for_deterministic_methods(register_methods, tmp_path):
    register_methods(Enumerate)
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="enumerate-test")
    assert run.engine((4,)).radius_ceiling() == 1.1


class TwoSides(certifier.SmoothingMethod):
    """Group 'a' sees the first two features, group 'b' the last two, each with its own model."""

    name = "two-sides-test"
    norm = "l2"
    groups = ("a", "b")
    second_model = None

    def view_shape(self, input_shape, group):
        return (2,)

    def group_model(self, group):
        return TwoSides.second_model if group == "b" else None

    def sample(self, x, rng, group):
        half = x[:, :2] if group == "a" else x[:, 2:]
        return half + self.sigma * rng.standard_normal(half.shape).astype(np.float32)

    def certify(self, selection, estimation, alpha):
        top = selection.top()
        bounds = {g: estimation.lower_bound(g, top, alpha / 2) for g in self.groups}
        return certifier.Certificate(top, 0.0, details={"trials": {g: estimation.trials(g) for g in self.groups},
                                                         "counts": {g: estimation[g].tolist() for g in self.groups},
                                                         "bounds": bounds})


def test_vote_groups_go_to_their_own_models(register_methods, tmp_path):
    # model a: class 1 iff x0 > 0.5; model b: class 1 iff x1' < 0.5 (second half's second feature)
    model_a = save(hyperplane_model([1, 0], -0.5, (2,)), tmp_path / "a.onnx")
    model_b = save(hyperplane_model([0, -1], 0.5, (2,)), tmp_path / "b.onnx")
    TwoSides.second_model = str(model_b)
    register_methods(TwoSides)
    run = certifier.load(model_a, plugin="two-sides-test", sigma=0.01)
    # a says 1 (x0 = 0.9), b says 0 (x3 = 0.9 > 0.5)
    result = run.certify(np.array([[0.9, 0.0, 0.0, 0.9]], dtype=np.float32), n0=10, n=300, batch_size=128)[0]
    assert result.details["trials"] == {"a": 300, "b": 300}
    assert result.details["counts"]["a"][1] == 300 and result.details["counts"]["b"][0] == 300
    assert result.forward_passes == 2 * (10 + 300)


def test_class_count_grows_for_label_outputs(tmp_path):
    weights = np.zeros((4, 12), dtype=np.float32)
    weights[0, 11] = 10.0
    path = save(linear_model(weights, np.zeros(12), (4,), output="label"), tmp_path / "label.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.1)
    result = run.certify(np.array([[1, 0, 0, 0]], dtype=np.float32), n0=10, n=200)[0]
    assert result.prediction == 11


def test_auto_batch_size_bounds():
    assert auto_batch_size((1, 28, 28)) == 2674
    assert auto_batch_size((3, 224, 224)) == 13
    assert auto_batch_size((4,)) == 4096
    assert auto_batch_size((3, 4000, 4000)) == 1


def test_workers_do_not_change_results(tmp_path):
    path = save(hyperplane_model([0.6, 0.8, 0, 0], -0.7), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.4)
    x = np.random.default_rng(2).uniform(0, 1, (4, 4)).astype(np.float32)
    one = run.certify(x, n=900, batch_size=100, workers=1)
    three = run.certify(x, n=900, batch_size=100, workers=3)
    assert [(r.prediction, r.radius) for r in one] == [(r.prediction, r.radius) for r in three]


@pytest.mark.parametrize("mode", ["certify", "predict"])
def test_predict_and_certify_share_the_engine(tmp_path, mode):
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.25)
    result = run.certify(np.array([[0.95, 0, 0, 0]], dtype=np.float32), n0=10, n=500, mode=mode)[0]
    assert result.prediction == 1
    assert result.forward_passes == (510 if mode == "certify" else 500)


def test_one_engine_serves_runs_in_any_order(tmp_path):
    """A run keeps its state to itself: certify, predict, certify again on one engine give
    what fresh engines give, and the engine's settings never change."""
    path = save(hyperplane_model([0.6, 0.8, 0, 0], -0.7), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.4)
    x = np.random.default_rng(3).uniform(0, 1, (3, 4)).astype(np.float32)
    dataset = run.dataset(x)

    def answers(engine, mode):
        return [(r.prediction, r.certificate and r.certificate.radius)
                for r in engine.run(dataset, range(3), mode=mode)]

    engine = run.engine(dataset.shape, n0=20, n=300, batch_size=64)

    def settings():
        return {k: v for k, v in vars(engine).items() if k != "_ceilings"}  # a cache of these settings' ceilings

    before = settings()
    first = answers(engine, "certify")
    predicted = answers(engine, "predict")
    assert settings() == before
    again = answers(engine, "certify")
    assert first == again == answers(run.engine(dataset.shape, n0=20, n=300, batch_size=64), "certify")
    assert predicted == answers(run.engine(dataset.shape, n0=20, n=300, batch_size=64), "predict")


class ChunkedSampling(FixedSampling):
    """Estimation views in three chunks, as a plan that looks at the votes between chunks would draw them."""

    name = "chunked-test"

    def chunks(self, phase):
        if phase != ESTIMATION:
            yield from super().chunks(phase)
            return
        yield from (self.n - 2 * (self.n // 3), self.n // 3, self.n // 3)


def test_the_engine_draws_the_chunks_its_plan_asks_for(tmp_path):
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.25)
    dataset = run.dataset(np.array([[0.9, 0, 0, 0], [0.1, 0, 0, 0]], dtype=np.float32))
    groups = run.groups(dataset.shape)
    chunked = Engine.from_settings(run.method, groups, batch_size=64, sampling=ChunkedSampling(10, 500))
    fixed = Engine.from_settings(run.method, groups, batch_size=64, n0=10, n=500)
    for one, other in zip(chunked.run(dataset, [0, 1]), fixed.run(dataset, [0, 1])):
        assert one.forward_passes == other.forward_passes == 510
        assert one.certificate.details["top_votes"] <= 500 and one.prediction == other.prediction
    # every batch of a phase draws its own noise, whatever chunk it belongs to
    jobs = list(chunked._jobs(np.zeros(4, np.float32), 0, chunked.plan.phases()))
    keys = [(job.phase, job.batch) for job in jobs]
    assert len(set(keys)) == len(keys)
    assert sum(job.stop - job.start for job in jobs if job.phase == ESTIMATION) == 500
