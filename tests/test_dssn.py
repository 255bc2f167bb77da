"""DSSN: the views against the paper's formulas, and the exact certificate by brute force.

Tiny inputs (d = 2 or 3 pixels, q = 4..8, L = 2..18 views) are certified through the
shipped path (check_inputs, prepare, the engine's enumeration, views, certify) with
hand-made base classifiers: lookup tables over the finite set of values a noisy pixel
can take, run as a numpy "model". For every input and every grid perturbation within
the certified L1 radius the smoothed prediction must not change, and for classifiers
built to be worst cases the radius must be exactly attained.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest

import certifier
from certifier.data import Dataset
from certifier.engine import Engine, Group
from certifier.methods import Votes
from certifier.plugins import get_method
from certifier.space import InputSpace, ModelAdapter
from certifier.stats import clopper_pearson_lower
from certifier_plugins.dssn import METADATA_KEY, quantized_split_centers

from onnx_models import linear_model, save

# (q, lambda, d): lambda >= 0.5 (L >= q) and the general lambda < 0.5 case, including
# 2 lambda q not an integer (L = floor(2 lambda q)).
CONFIGS = [
    (4, 0.5, 3),    # L = 4
    (4, 1.0, 3),    # L = 8: cuts above 1 in half the views
    (5, 0.7, 2),    # L = 7
    (6, 1.5, 2),    # L = 18
    (8, 0.25, 2),   # L = 4, cuts every 1/2
    (6, 1 / 6, 3),  # L = 2, cuts every 1/3
    (7, 0.2, 2),    # 2 lambda q = 2.8: L = 2
    (5, 0.3, 3),    # L = 3, cuts every 0.6
]


def dssn(q, lam, **options):
    return get_method("dssn")(options=get_method("dssn").Options(**{"lambda": lam, "q": q, **options}))


def grid(q: int, d: int) -> np.ndarray:
    """Every input of d pixels on the 1/q grid, as integer levels (N, d)."""
    return np.array(list(itertools.product(range(q + 1), repeat=d)), dtype=np.int64)


# -- the views against the paper -------------------------------------------------------


def paper_view(k: int, m: int, views: int, q: int) -> Fraction:
    """Equations (27)-(28) with s = (m + 1/2) / q and 2 lambda = L / q, in exact rationals."""
    x, s, w = Fraction(k, q), Fraction(2 * m + 1, 2 * q), Fraction(views, q)
    cut = math.ceil((x - s) / w) * w + s
    return (min(cut, Fraction(1)) + max(cut - w, Fraction(0))) / 2


@pytest.mark.parametrize("q,views", [(4, 4), (4, 9), (255, 510), (8, 4), (6, 2), (7, 3), (5, 1), (3, 7)])
def test_quantized_views_match_the_paper_exactly(q, views):
    k, m = np.meshgrid(np.arange(q + 1), np.arange(views), indexing="ij")
    ours = quantized_split_centers(k, m, views, q)
    expected = np.array([[float(paper_view(a, b, views, q)) for b in range(views)] for a in range(q + 1)])
    assert np.array_equal(ours, expected.astype(np.float32))
    if views >= q:  # lambda >= 0.5: Corollary 1's simpler form, (1[x > s] + min(s, 1)) / 2
        s = (m + 0.5) / q
        assert np.allclose(ours, ((k / q > s) + np.minimum(s, 1)) / 2, atol=1e-7)


def test_offsets_and_views_follow_the_reference_convention():
    method = dssn(255, 1.0, seed=3)
    shape = (1, 4, 5)
    method.prepare(shape, {})
    v = np.random.RandomState(3).randint(510, size=20)
    assert np.array_equal(method.offsets(shape), v)
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, size=(1,) + shape) / 255).astype(np.float32)
    index = np.array([0, 7, 509])
    views = method.views(np.broadcast_to(x, (3,) + shape), index, "model")
    # the authors' sample_all_deterministic, lambda >= 0.5 branch, in float64
    s = ((v[None, :] + index[:, None]) % 510 + 0.5) / 255.0
    expected = ((x.reshape(1, -1) > s) + np.minimum(s, 1)) / 2
    assert np.allclose(views.reshape(3, -1), expected, atol=1e-6)


def test_training_views_are_views_of_the_same_offsets():
    """certify train draws random view numbers j of the fixed v (the paper's training noise)."""
    method = dssn(6, 1.0)
    method.prepare((3,), {})
    x = (np.array([[0, 3, 6], [1, 2, 5]] * 50) / 6).astype(np.float32)
    noisy = method.sample(x, np.random.default_rng(1), "model")
    every = np.stack([method.views(x, np.full(len(x), j), "model") for j in range(method.levels)], axis=1)
    assert all((every[i] == noisy[i]).all(axis=1).any() for i in range(len(x)))
    drawn = {int(np.flatnonzero((every[i] == noisy[i]).all(axis=1))[0]) for i in range(len(x))}
    assert len(drawn) == method.levels  # all 12 shifts are used


# -- a numpy "model" through the shipped engine ------------------------------------------


class TableModel:
    """A base classifier on noisy pixels: a lookup table over multiples of 1/(4q)."""

    def __init__(self, table: np.ndarray, q: int):
        self.table = table
        self.q = q
        self.num_classes = int(table.max()) + 1 if table.size else 2
        self.num_classes = max(self.num_classes, 2)

    def key(self, z: np.ndarray) -> np.ndarray:
        units = np.rint(z * 4 * self.q).astype(np.int64)
        assert np.allclose(units, z * 4 * self.q, atol=1e-3), "a noisy pixel is off the 1/(4q) lattice"
        return np.ravel_multi_index(tuple(units.T), self.table.shape)

    def labels(self, batch: np.ndarray) -> np.ndarray:
        return self.table.reshape(-1)[self.key(batch)]


def certify_all(method, model: TableModel, levels: np.ndarray, q: int, batch_size: int = 64):
    """Certify every row of ``levels`` (integer pixel levels) through the engine."""
    d = levels.shape[1]
    method.prepare((d,), {})
    adapter = ModelAdapter((d,), [d], np.float32, InputSpace())
    engine = Engine.from_settings(method, {"model": Group("model", model, adapter)}, batch_size=batch_size,
                                  input_shape=(d,))
    dataset = Dataset((levels / q).astype(np.float32), None, "grid")
    results = list(engine.run(dataset, range(len(levels))))
    assert all(r.certificate.exact for r in results)
    predictions = np.array([r.prediction for r in results])
    steps = np.array([r.certificate.details["radius_steps"] for r in results])
    radii = np.array([r.certificate.radius for r in results])
    assert np.array_equal(radii, steps / q)
    counts = [r.certificate.details for r in results]
    return predictions, steps, counts


def smoothed_by_hand(levels: np.ndarray, table_model: TableModel, v: np.ndarray, views: int, q: int) -> np.ndarray:
    """g(x) from the paper's formulas in exact rationals: votes over all L shifts, ties to the lower class."""
    predictions = []
    for k in levels:
        votes = np.zeros(table_model.num_classes, dtype=np.int64)
        for j in range(views):
            z = np.array([float(paper_view(int(k[i]), int((v[i] + j) % views), views, q)) for i in range(len(k))])
            votes[table_model.labels(z[None])[0]] += 1
        predictions.append(int(np.argmax(votes)))
    return np.array(predictions)


def random_table(q: int, d: int, classes: int, rng: np.random.Generator, flip: float) -> np.ndarray:
    """A linear classifier of the noisy pixels with a fraction ``flip`` of random labels."""
    side = 4 * q + 1
    points = np.array(list(itertools.product(range(side), repeat=d)), dtype=np.float64) / (4 * q)
    scores = points @ rng.normal(size=(d, classes)) + rng.normal(scale=0.3, size=classes)
    table = np.argmax(scores, axis=1)
    flips = rng.random(len(table)) < flip
    table[flips] = rng.integers(0, classes, size=int(flips.sum()))
    return table.reshape((side,) * d)


@pytest.mark.parametrize("q,lam,d", CONFIGS)
def test_no_perturbation_within_the_radius_changes_the_prediction(q, lam, d):
    """Exhaustive: every input on the grid, every grid point within its certified L1 radius."""
    rng = np.random.default_rng(q * 100 + d)
    inputs = grid(q, d)
    distance = np.abs(inputs[:, None, :] - inputs[None, :, :]).sum(-1)  # in steps of 1/q
    checked = certified_somewhere = 0
    for trial, (classes, flip) in enumerate([(2, 0.0), (2, 0.1), (3, 0.0), (3, 0.3), (4, 0.05), (2, 0.5)]):
        model = TableModel(random_table(q, d, classes, rng, flip), q)
        method = dssn(q, lam, seed=trial)
        predictions, steps, _ = certify_all(method, model, inputs, q)
        if trial < 2:  # the engine's smoothed prediction is the paper's, computed independently
            by_hand = smoothed_by_hand(inputs, model, method.offsets((d,)), method.levels, q)
            assert np.array_equal(predictions, by_hand)
        within = distance <= steps[:, None]
        changed = predictions[None, :] != predictions[:, None]
        assert not (within & changed).any(), "a perturbation inside the certified radius changes the prediction"
        # the largest perturbation that never changes the prediction, by brute force
        nearest_change = np.where(changed, distance, np.iinfo(np.int64).max).min(axis=1)
        assert (steps < nearest_change).all()
        checked += len(inputs)
        certified_somewhere += int((steps > 0).sum())
    assert certified_somewhere > checked // 10  # not vacuous: many inputs get a positive radius


def worst_case_table(method, k: np.ndarray, k_moved: np.ndarray, top: int, other: int, q: int):
    """A base classifier for which moving x (levels k) to x' (levels k_moved) flips g, with the
    margin at x as large as the rule allows: the rule's radius must be exactly |k - k'|_1 - 1 steps.

    Views that the move changes are labelled ``top`` at x and ``other`` at x'; other views
    of x are labelled ``other`` until n_top - n_other - [other < top] is 2t - 2 or 2t - 1.
    Returns None when the views of x and x' share points in a way that forbids it.
    """
    views = method.levels
    d = len(k)
    j = np.arange(views)
    at_x = method.views(np.broadcast_to((k / q).astype(np.float32), (views, d)), j, "model")
    at_moved = method.views(np.broadcast_to((k_moved / q).astype(np.float32), (views, d)), j, "model")
    moved = np.flatnonzero((at_x != at_moved).any(axis=1))
    t = int(np.abs(k - k_moved).sum())
    if len(moved) != t:
        return None
    model = TableModel(np.full((4 * q + 1,) * d, top, dtype=np.int64), q)
    keys_x, keys_moved = model.key(at_x), model.key(at_moved)
    flipped = set(keys_moved[moved].tolist())
    if flipped & set(keys_x[moved].tolist()):
        return None
    penalty = int(other < top)
    labelled_other = sum(1 for key in keys_x if key in flipped)
    allowed = {n for n in range(views + 1) if views - 2 * n - penalty in (2 * t - 2, 2 * t - 1)}
    # pad with other views of x (each lookup-table point labels every view that lands on it):
    # a subset of the spare points whose view counts bring n_other into the allowed set
    excluded = flipped | set(keys_x[moved].tolist())
    spare = [key for key in dict.fromkeys(keys_x.tolist()) if key not in excluded]
    reachable = {labelled_other: []}
    for key in spare:
        size = int((keys_x == key).sum())
        for total, keys in list(reachable.items()):
            if total + size not in reachable:
                reachable[total + size] = keys + [key]
    found = sorted(allowed & set(reachable))
    if not found:
        return None
    chosen = set(reachable[found[0]])
    table = model.table.reshape(-1)
    table[list(flipped | chosen)] = other
    return model


@pytest.mark.parametrize("q,lam,d", CONFIGS)
def test_the_radius_is_tight_for_worst_case_classifiers(q, lam, d):
    """The rule's radius is attained: one more step of 1/q flips g for a suitable base classifier.

    Moves of t steps with t - 1 up to the ceiling floor(L / 2) are tried; a worst-case
    classifier exists for most of them (not all: views of x that coincide must share a label).
    """
    method = dssn(q, lam)
    method.prepare((d,), {})
    rng = np.random.default_rng(q + d)
    inputs = grid(q, d)
    witnessed = 0
    for k in inputs[rng.permutation(len(inputs))[:40]]:
        for pixel, direction, size in itertools.product(range(d), (-1, 1), range(1, method.levels // 2 + 2)):
            k_moved = k.copy()
            k_moved[pixel] += direction * size
            if not 0 <= k_moved[pixel] <= q:
                continue
            top, other = (0, 1) if (witnessed % 2 == 0) else (1, 0)  # both tie-break directions
            model = worst_case_table(method, k, k_moved, top, other, q)
            if model is None:
                continue
            predictions, steps, _ = certify_all(method, model, np.stack([k, k_moved]), q)
            assert predictions[0] == top and steps[0] == size - 1, (k, k_moved, steps)
            assert predictions[1] != top  # ||x' - x||_1 = radius + 1/q changes the prediction
            witnessed += 1
    assert witnessed >= 20


# -- the rule on hand-made counts -----------------------------------------------------------


def votes(counts):
    return Votes({"model": np.array(counts)}, clopper_pearson_lower)


@pytest.mark.parametrize("counts,prediction,steps", [
    ([5, 5], 0, 0),        # tie: the lower index wins, nothing to spare
    ([4, 6], 1, 0),        # runner-up 0 has the lower index: (6 - 4 - 1) // 2
    ([3, 7], 1, 1),
    ([7, 3], 0, 2),
    ([2, 0, 4, 4], 2, 0),  # tie between 2 and 3
    ([1, 3, 2, 4], 3, 0),  # (4 - 3 - 1) // 2
    ([10, 0], 0, 5),
    ([0, 0, 10], 2, 4),    # runner-up is class 0: (10 - 0 - 1) // 2
])
def test_the_rule_and_its_tie_break(counts, prediction, steps):
    method = dssn(10, sum(counts) / 20)
    certificate = method.certify(None, votes(counts), alpha=0.5)
    assert certificate.exact and certificate.prediction == prediction
    assert certificate.details["radius_steps"] == steps and certificate.radius == steps / 10


def test_the_rule_refuses_votes_that_are_not_all_views():
    with pytest.raises(certifier.CertifyError, match="needs all L = 20 views"):
        dssn(10, 1.0).certify(None, votes([7, 3]), alpha=0.001)


def test_lambda_sigma_and_views():
    Method = get_method("dssn")
    assert Method(sigma=1 / math.sqrt(3)).levels == 510
    assert Method(sigma=3.5).levels == int(2 * 3.5 * math.sqrt(3) * 255)  # the paper's sigma = 3.5: 3091
    assert dssn(255, 0.3).levels == 153  # 2 * 0.3 * 255 is 152.99999999999997 in floating point
    assert Method(sigma=0.5).settings()["effective_lambda"] == 441 / 510
    with pytest.raises(certifier.CertifyError, match="needs -o lambda X or --sigma S"):
        Method()
    with pytest.raises(certifier.CertifyError, match="means lambda"):
        Method(sigma=0.5, options=Method.Options(**{"lambda": 1.0}))
    with pytest.raises(certifier.CertifyError, match="below 1 view"):
        dssn(4, 0.1)


# -- the model, its metadata and the inputs -----------------------------------------------


def _dssn_model(tmp_path, metadata=None, shape=(1, 2, 2)):
    features = int(np.prod(shape))
    weights = np.zeros((features, 2), dtype=np.float32)
    weights[0] = [-1.0, 1.0]
    model = linear_model(weights, np.array([0.5, -0.5], dtype=np.float32), shape, metadata=metadata)
    return save(model, tmp_path / "dssn.onnx")


def _trained_metadata(method, shape):
    return {"certifier.plugin": "dssn", "certifier.sigma": repr(method.sigma),
            "certifier.options": json.dumps(method.options.model_dump(mode="json")),
            **method.training_metadata(shape)}


def test_certify_uses_the_models_offsets_and_refuses_others(tmp_path):
    trained = dssn(255, 0.5, seed=7)
    path = _dssn_model(tmp_path, _trained_metadata(trained, (1, 2, 2)))
    x = np.array([[[[200, 10], [30, 40]]]], dtype=np.uint8)
    run = certifier.load(path)  # plugin, lambda, q and seed from the metadata
    assert run.method.seed == 7 and run.method.levels == 255
    (result,) = run.certify(x, np.array([1]))
    assert result.exact and result.prediction == 1 and result.forward_passes == 255
    assert result.radius == result.details["radius_steps"] / 255
    for options, sigma, message in [
        ({"seed": "8"}, None, "seed 7 in the model, 8 now"),
        ({"lambda": "1.0"}, None, "means lambda"),  # the model's sigma disagrees with the new lambda
        ({"lambda": "1.0"}, 1 / math.sqrt(3), "views L 255 in the model, 510 now"),
        ({"q": "15"}, None, "q 255 in the model, 15 now"),
    ]:
        with pytest.raises(certifier.CertifyError, match=message):
            certifier.load(path, options=options, sigma=sigma).certify(x)
    with pytest.raises(certifier.CertifyError, match="input shape 1x2x2 in the model, 4 now"):
        certifier.load(path).certify(x.reshape(1, 4))
    assert certifier.load(path, sigma=0.5 / math.sqrt(3)).certify(x)[0].radius == result.radius


def test_off_grid_inputs_are_refused_or_rounded_with_a_warning(tmp_path):
    path = _dssn_model(tmp_path, _trained_metadata(dssn(255, 0.5), (1, 2, 2)))
    x = np.array([[[[0.8, 0.1], [0.2, 0.3]]]], dtype=np.float32)
    with pytest.raises(certifier.CertifyError, match="not multiples of 1/255"):
        certifier.load(path).certify(x)
    with pytest.warns(UserWarning, match="rounded to the nearest level"):
        rounded = certifier.load(path, options={"quantize": "true"}).certify(x)
    exact = certifier.load(path).certify(np.rint(x * 255) / 255)
    assert rounded[0].radius == exact[0].radius and rounded[0].prediction == exact[0].prediction
    # 8-bit data at q = 15 is off that grid too
    with pytest.raises(certifier.CertifyError, match="1/15 grid"):
        certifier.load(path, options={"q": "15"}).method.check_inputs(x)


def test_a_model_without_dssn_metadata_is_certified_with_a_warning(tmp_path):
    path = _dssn_model(tmp_path, {"certifier.dataset": "test"})
    x = np.array([[[[200, 10], [30, 40]]]], dtype=np.uint8)
    with pytest.warns(UserWarning, match="does not record its DSSN offsets"):
        (result,) = certifier.load(path, plugin="dssn", sigma=0.5).certify(x)
    assert result.exact and result.forward_passes == 441


def test_train_records_the_offsets_and_certify_checks_them(tmp_path):
    from click.testing import CliRunner

    from certifier.cli import cli
    from certifier_plugins.train import train

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(96, 5, 5)).astype(np.uint8)
    y = (x[:, 0, 0] > 127).astype(np.int64)
    np.savez(tmp_path / "tiny.npz", x=x, y=y)
    out = tmp_path / "tiny-dssn.onnx"
    train(plugin="dssn", sigma=None, options={"lambda": "0.25", "seed": "5"}, data=tmp_path / "tiny.npz", out=out,
          epochs=1, batch_size=32, lr=0.01, width=2, seed=0, device="cpu", group=None, classes=None,
          dataset_name=None, checkpoint=None, restart=False, quiet=True)
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    record = json.loads(metadata[METADATA_KEY])
    assert record["seed"] == 5 and record["levels"] == 127 and record["input_shape"] == [1, 5, 5]
    assert json.loads(metadata["certifier.options"])["lambda"] == 0.25
    runner = CliRunner()
    ok = runner.invoke(cli, [str(out), "--data", str(tmp_path / "tiny.npz"), "--limit", "3", "-q",
                             "--output", str(tmp_path / "run.jsonl")])
    assert ok.exit_code == 0, ok.output
    header, *records = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert header["plugin"] == "dssn" and header["exact"] is True and header["alpha"] is None
    assert header["settings"]["views"] == 127 and header["radius_ceiling"] == 63 / 255
    assert all(r["exact"] and r["forward_passes"] == 127 for r in records)
    refused = runner.invoke(cli, [str(out), "--data", str(tmp_path / "tiny.npz"), "-o", "seed", "0", "-q"])
    assert refused.exit_code == 1 and "seed 5 in the model, 0 now" in refused.output
    assert "Traceback" not in refused.output


def test_views_do_not_depend_on_batching():
    method = dssn(255, 0.75)
    method.prepare((1, 4, 4), {})
    x = (np.random.default_rng(2).integers(0, 256, (1, 1, 4, 4)) / 255).astype(np.float32)
    every = method.views(np.broadcast_to(x, (method.levels, 1, 4, 4)), np.arange(method.levels), "model")
    halves = [method.views(np.broadcast_to(x, (len(part), 1, 4, 4)), part, "model")
              for part in np.array_split(np.arange(method.levels)[::-1], 3)]
    assert np.array_equal(np.concatenate(halves), every[::-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method.check_inputs(x)


def test_the_bundled_models_certify_with_their_own_offsets():
    from pathlib import Path

    models = Path(__file__).resolve().parents[1] / "models"
    with np.load(models / "fmnist-samples.npz") as data:
        x, y = data["x"][:2], data["y"][:2]
    for sigma, views in ((1.0, 883), (2.5, 2208)):
        run = certifier.load(models / f"fmnist-dssn-{sigma}.onnx")
        assert run.method.levels == views and run.method.seed == 0 and run.method.sigma == sigma
        results = run.certify(x, y)
        assert all(r.exact and r.forward_passes == views and r.radius == r.details["radius_steps"] / 255
                   for r in results)
        with pytest.raises(certifier.CertifyError, match="seed 0 in the model, 1 now"):
            certifier.load(models / f"fmnist-dssn-{sigma}.onnx", options={"seed": "1"}).certify(x)
