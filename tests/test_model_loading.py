"""The ONNX loader on odd and hostile models, checked against numpy's answer for the linear model."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, external_data_helper, helper, numpy_helper

import certifier
from certifier import CertifyError, device
from certifier.model import load_model
from certifier.space import prefers_channels_last, resolve_layout

from onnx_models import (
    batch_mixing_model,
    custom_domain_model,
    fixed_reshape_model,
    hyperplane_model,
    linear_model,
    multi_output_model,
    nan_model,
    save,
    squeezed_sigmoid_model,
    two_input_model,
    with_external_weights,
    write,
)

RNG = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def same_data_in_every_order():
    """Each test draws the same inputs whichever tests ran before it."""
    global RNG
    RNG = np.random.default_rng(7)


def weights(features: int, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random weights with zero column means, so the label depends on the pixels' pattern."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(features, classes))
    w -= w.mean(axis=0)
    return w.astype(np.float32), rng.normal(size=classes).astype(np.float32) * 0.1


def reference(x_model_layout: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy's labels for the linear model on inputs already in the model's layout."""
    logits = x_model_layout.reshape(len(x_model_layout), -1).astype(np.float64) @ w + b
    return logits.argmax(axis=1)


def pixels(*shape: int) -> np.ndarray:
    return RNG.random(shape).astype(np.float32)


def direct_labels(path, x, **load_options) -> np.ndarray:
    """The labels the certifier's model and input adapter give pixel-space inputs (no noise)."""
    run = certifier.load(path, plugin="rs", sigma=0.25, device="cpu", **load_options)
    dataset = run.dataset(x)
    group = run.groups(dataset.shape)["model"]
    return group.model.labels(group.adapter(dataset.batch(range(len(dataset)))))


def certified_predictions(path, x, **load_options) -> np.ndarray:
    """Predictions of RS with negligible noise: the base model's labels when all votes agree."""
    run = certifier.load(path, plugin="rs", sigma=1e-5, device="cpu", **load_options)
    results = run.certify(x, n0=3, n=16, alpha=0.05)
    assert all(r.prediction is not None for r in results)
    return np.array([r.prediction for r in results])


def spy_on_runs(model) -> list[int]:
    """Record the batch size of every onnxruntime call the model makes."""
    sizes: list[int] = []
    real_run = model.session.run

    def run(names, feeds):
        sizes.append(len(next(iter(feeds.values()))))
        return real_run(names, feeds)

    model.session = type("Spy", (), {"run": staticmethod(run), "get_providers": model.session.get_providers})()
    return sizes


# -- threads ------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_cpu_runs_batches_side_by_side(tmp_path, threads):
    from certifier.resources import usable_cores

    w, b = weights(64)
    path = save(linear_model(w, b, (1, 8, 8)), tmp_path / "m.onnx")
    model = load_model(path, device="cpu", threads=threads)
    assert model.parallel_runs == min(threads or usable_cores(), 8)
    assert model.session.get_session_options().intra_op_num_threads == max(1, (threads or usable_cores()) // 8)
    run = certifier.load(path, plugin="rs", sigma=0.25, device="cpu", threads=threads)
    assert run.engine((1, 8, 8)).workers == model.parallel_runs
    assert run.engine((1, 8, 8), workers=5).workers == 5


@pytest.mark.parametrize("threads,expected", [(1, (1, 1)), (2, (2, 1)), (8, (8, 1)), (16, (8, 2)), (20, (8, 2))])
def test_cpu_threads_split_into_runs_and_threads_per_run(threads, expected):
    from certifier.resources import cpu_runs

    assert cpu_runs(threads) == expected


# -- batch dimension ---------------------------------------------------------------


def test_dynamic_batch_runs_in_one_call(tmp_path):
    w, b = weights(64)
    path = save(linear_model(w, b, (1, 8, 8)), tmp_path / "m.onnx")
    x = pixels(9, 8, 8)
    model = load_model(path, device="cpu")
    assert model.fixed_batch is None and model.notes == []
    model.labels(x[:, None])  # the first batch of each size is also checked for coupling, once
    sizes = spy_on_runs(model)
    assert list(model.labels(x[:, None])) == list(reference(x, w, b))
    assert sizes == [9]
    assert list(certified_predictions(path, x)) == list(reference(x, w, b))


def test_fixed_batch_of_one_is_made_dynamic(tmp_path):
    w, b = weights(64)
    path = save(linear_model(w, b, (1, 8, 8), batch=1), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert model.fixed_batch is None
    assert any("made dynamic" in note for note in model.notes)
    x = pixels(7, 8, 8)
    model.labels(x[:, None])  # the first batch of each size is also checked for coupling, once
    sizes = spy_on_runs(model)
    assert list(model.labels(x[:, None])) == list(reference(x, w, b))
    assert sizes == [7]
    assert list(certified_predictions(path, x)) == list(reference(x, w, b))


def test_fixed_batch_that_cannot_be_made_dynamic_runs_in_chunks(tmp_path):
    w, b = weights(64)
    path = save(fixed_reshape_model(w, b, (1, 8, 8), batch=1), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert model.fixed_batch == 1
    assert any("exactly 1" in note for note in model.notes)
    x = pixels(5, 8, 8)
    sizes = spy_on_runs(model)
    assert list(model.labels(x[:, None])) == list(reference(x, w, b))
    assert sizes == [1] * 5
    assert list(certified_predictions(path, x)) == list(reference(x, w, b))


def test_fixed_batch_of_four_pads_the_last_chunk(tmp_path):
    w, b = weights(16)
    path = save(fixed_reshape_model(w, b, (16,), batch=4), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert model.fixed_batch == 4
    x = pixels(6, 16)
    model.labels(x)  # the first batch of each size is also checked for coupling, once
    sizes = spy_on_runs(model)
    labels = model.labels(x)
    assert labels.shape == (6,)
    assert list(labels) == list(reference(x, w, b))
    assert sizes == [4, 4]
    # 3 selection + 10 estimation views: neither a multiple of 4.
    run = certifier.load(path, plugin="rs", sigma=1e-5, device="cpu")
    results = run.certify(x, n0=3, n=10, alpha=0.2)
    assert [r.prediction for r in results] == list(reference(x, w, b))
    assert all(r.forward_passes == 13 for r in results)


def test_graph_that_mixes_the_batch_keeps_its_fixed_size(tmp_path):
    path = save(batch_mixing_model(features=5, classes=3, batch=2), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="depends on the other inputs in its batch"):
        load_model(path, device="cpu")
    model = load_model(path, device="cpu", allow_batch_coupling=True)
    assert model.fixed_batch == 2 and model.batch_coupled
    sizes = spy_on_runs(model)
    assert model.labels(pixels(5, 5)).shape == (5,)
    assert sizes == [2] * 5  # one input per run, padded


# -- outputs -----------------------------------------------------------------------


@pytest.mark.parametrize("output, chosen, kind", [
    ("probabilities", "probabilities", "scores"),
    ("label", "label", "label"),
    ("label+probabilities", "probabilities", "scores"),
])
def test_class_outputs(tmp_path, output, chosen, kind):
    w, b = weights(16, 4)
    path = save(linear_model(w, b, (16,), output=output), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert (model.output.name, model.output.kind) == (chosen, kind)
    x = pixels(12, 16)
    assert list(direct_labels(path, x)) == list(reference(x, w, b))
    assert list(certified_predictions(path, x[:4])) == list(reference(x[:4], w, b))


def binary_weights() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One score per input, with inputs on both sides of the boundary."""
    w = np.array([[1.0], [-1.0], [0.5], [0.0]], dtype=np.float32)
    x = pixels(40, 4)
    b = np.array([-float(np.median(x @ w))], dtype=np.float32)
    return w, b, x


@pytest.mark.parametrize("build, threshold, kind", [
    (lambda w, b: linear_model(w, b, (4,), output="sigmoid"), 0.5, None),
    (lambda w, b: linear_model(w, b, (4,), output="logits"), 0.0, "binary-logit"),
    (lambda w, b: squeezed_sigmoid_model(w, b, (4,)), 0.5, None),
    (lambda w, b: squeezed_sigmoid_model(w, b, (4,)), 0.5, "binary-probability"),
], ids=["sigmoid", "logit-as-said", "sigmoid-squeezed", "sigmoid-as-said"])
def test_single_score_output(tmp_path, build, threshold, kind):
    w, b, x = binary_weights()
    path = save(build(w, b), tmp_path / "m.onnx")
    model = load_model(path, device="cpu", output_kind=kind)
    assert model.output.kind == "binary"
    assert model.output.threshold == threshold
    assert model.num_classes == 2
    expected = ((x @ w + b)[:, 0] > 0).astype(int)
    assert 0 < expected.sum() < len(expected)
    assert list(direct_labels(path, x, output_kind=kind)) == list(expected)


def test_a_single_logit_is_never_guessed(tmp_path):
    w, b, _ = binary_weights()
    path = save(linear_model(w, b, (4,), output="logits"), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="probability or a logit.*--output-kind binary-probability.*binary-logit"):
        load_model(path, device="cpu")


def test_output_name_selects_an_output(tmp_path):
    w, b = weights(16, 4)
    path = save(linear_model(w, b, (16,), output="label+probabilities"), tmp_path / "m.onnx")
    model = load_model(path, device="cpu", output_name="label")
    assert (model.output.name, model.output.kind) == ("label", "label")
    x = pixels(8, 16)
    assert list(direct_labels(path, x, output_name="label")) == list(reference(x, w, b))


def test_unknown_output_name_is_refused(tmp_path):
    w, b = weights(16, 4)
    path = save(linear_model(w, b, (16,), output="label+probabilities"), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match=r"--output-name 'nope' is not an output.*label, probabilities"):
        load_model(path, device="cpu", output_name="nope")


def test_several_score_outputs_without_a_telling_name_are_refused(tmp_path):
    w, b = weights(16, 4)
    path = save(multi_output_model(w, b, (16,), ["first", "second"]), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match=r"several score outputs \(first, second\).*--output-name"):
        load_model(path, device="cpu")
    # An explicit choice settles it: "second" is the negated logits.
    x = pixels(10, 16)
    chosen = direct_labels(path, x, output_name="second")
    assert list(chosen) == list((-(x @ w + b)).argmax(axis=1))


def test_the_score_output_with_a_telling_name_wins(tmp_path):
    w, b = weights(16, 4)
    path = save(multi_output_model(w, b, (16,), ["features", "scores"]), tmp_path / "m.onnx")
    assert load_model(path, device="cpu").output.name == "scores"
    x = pixels(10, 16)
    assert list(direct_labels(path, x)) == list((-(x @ w + b)).argmax(axis=1))


@pytest.mark.parametrize("how", ["log", "div"])
def test_nan_scores_are_reported(tmp_path, how):
    path = save(nan_model(4, 3, how), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    with pytest.raises(CertifyError, match="output NaN"):
        model.labels(pixels(3, 4))


# -- input layouts, ranges and types --------------------------------------------------


def test_nhwc_and_nchw_single_channel(tmp_path):
    w, b = weights(28 * 28)
    nhwc = save(linear_model(w, b, (28, 28, 1)), tmp_path / "nhwc.onnx")
    nchw = save(linear_model(w, b, (1, 28, 28)), tmp_path / "nchw.onnx")
    x = pixels(6, 28, 28)
    expected = list(reference(x, w, b))
    assert list(direct_labels(nhwc, x)) == expected
    assert list(direct_labels(nchw, x)) == expected
    assert list(direct_labels(nhwc, x[..., None])) == expected  # data stored as N x 28 x 28 x 1
    assert list(certified_predictions(nhwc, x[:3])) == expected[:3]


def test_nhwc_and_nchw_colour(tmp_path):
    w, b = weights(8 * 8 * 3)
    x_hwc = pixels(12, 8, 8, 3)
    x_chw = np.ascontiguousarray(x_hwc.transpose(0, 3, 1, 2))
    nhwc = save(linear_model(w, b, (8, 8, 3)), tmp_path / "nhwc.onnx")
    nchw = save(linear_model(w, b, (3, 8, 8)), tmp_path / "nchw.onnx")
    on_hwc, on_chw = list(reference(x_hwc, w, b)), list(reference(x_chw, w, b))
    assert on_hwc != on_chw  # the layouts really give different answers
    for data in (x_hwc, x_chw):
        assert list(direct_labels(nhwc, data)) == on_hwc
        assert list(direct_labels(nchw, data)) == on_chw
    assert list(certified_predictions(nhwc, x_chw[:3])) == on_hwc[:3]
    assert list(certified_predictions(nchw, x_hwc[:3])) == on_chw[:3]


def test_hw_input(tmp_path):
    w, b = weights(28 * 28)
    path = save(linear_model(w, b, (28, 28)), tmp_path / "m.onnx")
    x = pixels(6, 28, 28)
    assert list(direct_labels(path, x)) == list(reference(x, w, b))
    assert list(certified_predictions(path, x[:3])) == list(reference(x[:3], w, b))


def test_flat_input_fed_with_images(tmp_path):
    w, b = weights(784)
    path = save(linear_model(w, b, (784,)), tmp_path / "m.onnx")
    x = pixels(6, 28, 28)
    assert list(direct_labels(path, x)) == list(reference(x, w, b))
    assert list(certified_predictions(path, x[:3])) == list(reference(x[:3], w, b))


def test_flat_input_fed_with_colour_images_in_either_order(tmp_path):
    w, b = weights(3 * 8 * 8)
    path = save(linear_model(w, b, (3 * 8 * 8,)), tmp_path / "m.onnx")
    chw = pixels(6, 3, 8, 8)
    assert list(direct_labels(path, chw)) == list(reference(chw, w, b))
    assert list(direct_labels(path, chw, layout="nchw")) == list(reference(chw, w, b))
    hwc_order = chw.transpose(0, 2, 3, 1)
    assert list(reference(hwc_order, w, b)) != list(reference(chw, w, b))  # the order matters here
    assert list(direct_labels(path, chw, layout="nhwc")) == list(reference(hwc_order, w, b))
    assert list(certified_predictions(path, chw[:3], layout="nhwc")) == list(reference(hwc_order[:3], w, b))


def test_flat_input_fed_with_vectors(tmp_path):
    w, b = weights(4)
    path = save(linear_model(w, b, (4,)), tmp_path / "m.onnx")
    x = pixels(20, 4)
    assert list(direct_labels(path, x)) == list(reference(x, w, b))
    assert list(certified_predictions(path, x[:4])) == list(reference(x[:4], w, b))


def test_uint8_input_scales_by_255_and_rounds(tmp_path):
    # class 1 exactly when the first value the model reads is above 100.5
    path = save(hyperplane_model([1, 0, 0, 0], -100.5, input_type=TensorProto.UINT8), tmp_path / "m.onnx")
    x = np.zeros((6, 4), dtype=np.float32)
    x[:, 0] = np.array([100.0, 100.4, 100.6, 101.0, 255.0, 0.0]) / 255
    x[:, 1] = 1.0
    assert list(direct_labels(path, x)) == [0, 0, 1, 1, 1, 0]
    assert list(certified_predictions(path, x)) == [0, 0, 1, 1, 1, 0]
    # --scale overrides the default 255: then every value reads as 0 or 1
    assert list(direct_labels(path, x, scale=1.0)) == [0] * 6

    run = certifier.load(path, plugin="rs", sigma=0.25, device="cpu")
    adapter = run.groups((4,))["model"].adapter
    assert adapter.space.scale == 255.0
    noisy = np.array([[1.3, -0.3, 0.5, 0.502]], dtype=np.float32)  # noise leaves [0, 1]
    fed = adapter(noisy)
    assert fed.dtype == np.uint8
    assert list(fed[0]) == [255, 0, 128, 128]  # clipped, not wrapped; rounded, not truncated


def test_normalized_model_input_from_metadata_and_options(tmp_path):
    w, b = weights(3 * 5 * 5)
    # the metadata's std makes channel 0 dominate; the options' std makes channel 1 dominate
    space = '{"scale": 255, "mean": [120, 110, 100], "std": [10, 200, 200]}'
    path = save(linear_model(w, b, (3, 5, 5), metadata={"certifier.input_space": space}), tmp_path / "m.onnx")
    x = pixels(10, 3, 5, 5)
    mean, std = np.array([120, 110, 100]).reshape(1, 3, 1, 1), np.array([10, 200, 200]).reshape(1, 3, 1, 1)
    from_metadata = list(reference((x * 255 - mean) / std, w, b))
    options = dict(scale=1.0, mean=(0.5, 0.4, 0.3), std=(1.0, 0.02, 1.0))
    from_options = list(reference((x - np.reshape(options["mean"], (1, 3, 1, 1))) / np.reshape(options["std"], (1, 3, 1, 1)), w, b))
    assert from_metadata != from_options
    assert list(direct_labels(path, x)) == from_metadata
    assert list(direct_labels(path, x, **options)) == from_options


@pytest.mark.parametrize("declared, expected", [
    ((28, 28, 1), True), ((None, None, 3), True), ((1, 28, 28), False), ((3, 4, 4), False),
    ((3, None, None), False), ((None, None, None), False), ((784,), False), ((28, 28), False),
])
def test_which_models_read_channels_last(declared, expected):
    assert prefers_channels_last(declared) is expected


@pytest.mark.parametrize("declared, view, layout", [
    ((None, None, 3), (3, 8, 8), "nhwc"),
    ((3, None, None), (3, 8, 8), "nchw"),
    ((None, None, None), (3, 8, 8), "nchw"),
    ((3, 3, 3), (3, 3, 3), "nchw"),
    ((8, 8, 3), (3, 8, 8), "nhwc"),
    ((28, 28), (1, 28, 28), "hw"),
    ((784,), (1, 28, 28), "flat"),
])
def test_resolve_layout(declared, view, layout):
    assert resolve_layout(declared, view) == layout


def test_resolve_layout_refuses_what_does_not_fit():
    with pytest.raises(CertifyError, match="takes 28 x 28 images but the data.s are 32 x 32.*--resize 28 28"):
        resolve_layout((1, 28, 28), (1, 32, 32))
    with pytest.raises(CertifyError, match="--layout must be one of"):
        resolve_layout((1, 28, 28), (1, 28, 28), "hwcn")
    with pytest.raises(CertifyError, match="set --layout"):
        resolve_layout((8, 8, 3), (3, 8, 8), "nchw")


def test_float16_input(tmp_path):
    w, b = weights(16, 4)
    path = save(linear_model(w, b, (16,), input_type=TensorProto.FLOAT16), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert model.input_dtype == np.float16
    x = pixels(12, 16)
    expected = list(reference(x.astype(np.float16).astype(np.float32), w, b))
    assert list(direct_labels(path, x)) == expected
    assert list(certified_predictions(path, x[:4])) == expected[:4]


def test_initializer_listed_as_an_input_is_not_a_second_input(tmp_path):
    w, b = weights(4)
    model = linear_model(w, b, (4,))
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.shape)))
    path = save(model, tmp_path / "m.onnx")
    x = pixels(8, 4)
    assert list(direct_labels(path, x)) == list(reference(x, w, b))


def test_ir_version_newer_than_onnxruntime_reads_still_loads(tmp_path):
    w, b = weights(4)
    model = linear_model(w, b, (4,))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))  # onnx's default IR version
    assert onnx.load(str(path)).ir_version >= 14
    loaded = load_model(path, device="cpu")
    assert any("IR version" in note for note in loaded.notes)
    x = pixels(8, 4)
    assert list(direct_labels(path, x)) == list(reference(x, w, b))


# -- hostile and malformed files -------------------------------------------------------


def good_model_bytes(tmp_path) -> bytes:
    w, b = weights(4)
    return save(linear_model(w, b, (4,)), tmp_path / "good.onnx").read_bytes()


@pytest.mark.parametrize("content, message", [
    (lambda _: np.random.default_rng(3).bytes(2000), "is not an ONNX model"),
    (lambda _: b"", "is not an ONNX model"),
    (lambda _: b"this is a text file, not a model\n" * 3, "is not an ONNX model"),
    (lambda tmp: good_model_bytes(tmp)[:40], "is not an ONNX model"),
    (lambda tmp: good_model_bytes(tmp)[: len(good_model_bytes(tmp)) // 2], "is not an ONNX model"),
], ids=["random-bytes", "empty", "text", "truncated-head", "truncated-half"])
def test_files_that_are_not_models(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content(tmp_path))
    with pytest.raises(CertifyError, match=message) as raised:
        load_model(path, device="cpu")
    assert "\n" not in str(raised.value)
    assert "torch.onnx.export" in str(raised.value)  # says what to do


def test_directory_and_missing_path(tmp_path):
    with pytest.raises(CertifyError, match="not a file"):
        load_model(tmp_path, device="cpu")
    with pytest.raises(CertifyError, match="not found"):
        load_model(tmp_path / "missing.onnx", device="cpu")


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if onnxruntime or onnx's external-data reader is reached."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the model reached onnxruntime or the external data was read")

    monkeypatch.setattr(onnxruntime, "InferenceSession", forbidden)
    monkeypatch.setattr(external_data_helper, "load_external_data_for_model", forbidden)
    monkeypatch.setattr(external_data_helper, "load_external_data_for_tensor", forbidden)


def external_model(tmp_path, location: str, data_at=None):
    """A model in tmp_path/model whose weights live at ``location``; writes them to ``data_at``."""
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    w, b = weights(4)
    model, data = with_external_weights(linear_model(w, b, (4,)), location)
    if data_at is not None:
        data_at.parent.mkdir(parents=True, exist_ok=True)
        data_at.write_bytes(data)
    return write(model, folder / "m.onnx"), w, b


def test_external_data_at_an_absolute_path_is_refused(tmp_path, no_loading):
    outside = tmp_path / "elsewhere" / "W.bin"
    path, _, _ = external_model(tmp_path, str(outside), data_at=outside)
    with pytest.raises(CertifyError, match="outside the model's folder"):
        load_model(path, device="cpu")


@pytest.mark.parametrize("location", ["../elsewhere/W.bin", "sub/../../elsewhere/W.bin"])
def test_external_data_above_the_model_folder_is_refused(tmp_path, no_loading, location):
    path, _, _ = external_model(tmp_path, location, data_at=tmp_path / "elsewhere" / "W.bin")
    with pytest.raises(CertifyError, match="outside the model's folder"):
        load_model(path, device="cpu")


def test_external_data_through_a_symlink_out_of_the_folder_is_refused(tmp_path, no_loading):
    outside = tmp_path / "elsewhere" / "W.bin"
    path, _, _ = external_model(tmp_path, "W.bin", data_at=outside)
    os.symlink(outside, path.parent / "W.bin")
    with pytest.raises(CertifyError, match="outside the model's folder"):
        load_model(path, device="cpu")


def test_sparse_initializer_with_external_data_outside_is_refused(tmp_path, no_loading):
    outside = tmp_path / "elsewhere" / "values.bin"
    outside.parent.mkdir()
    np.ones(2, dtype=np.float32).tofile(outside)
    values = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "S")
    values.ClearField("raw_data")
    values.data_location = TensorProto.EXTERNAL
    entry = values.external_data.add()
    entry.key, entry.value = "location", str(outside)
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([0, 3], dtype=np.int64), "i"), [2, 3])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "S"], ["logits"])], "sparse",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        sparse_initializer=[sparse],
    )
    (tmp_path / "model").mkdir()
    path = write(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "model" / "m.onnx")
    with pytest.raises(CertifyError, match="outside the model's folder"):
        load_model(path, device="cpu")


def test_missing_external_data_is_reported(tmp_path, no_loading):
    path, _, _ = external_model(tmp_path, "W.bin")
    with pytest.raises(CertifyError, match="external data file 'W.bin'.*is missing"):
        load_model(path, device="cpu")


def test_external_data_shorter_than_declared_is_reported(tmp_path):
    path, _, _ = external_model(tmp_path, "W.bin", data_at=tmp_path / "model" / "W.bin")
    model = onnx.load(str(path), load_external_data=False)
    entry = model.graph.initializer[0].external_data.add()
    entry.key, entry.value = "length", "100000"
    write(model, path)
    with pytest.raises(CertifyError, match="cannot read the external data of m.onnx.*exceeds"):
        load_model(path, device="cpu")


def test_external_data_inside_the_folder_loads(tmp_path):
    path, w, b = external_model(tmp_path, "weights/W.bin", data_at=tmp_path / "model" / "weights" / "W.bin")
    x = pixels(10, 4)
    assert list(direct_labels(path, x)) == list(reference(x, w, b))
    assert list(certified_predictions(path, x[:3])) == list(reference(x[:3], w, b))


def test_model_hash_covers_external_weights(tmp_path):
    path, _, _ = external_model(tmp_path, "W.bin", data_at=tmp_path / "model" / "W.bin")
    before = load_model(path, device="cpu").sha256
    assert load_model(path, device="cpu").sha256 == before
    data = bytearray((path.parent / "W.bin").read_bytes())
    data[0] ^= 1  # other weights, same .onnx file
    (path.parent / "W.bin").write_bytes(bytes(data))
    assert load_model(path, device="cpu").sha256 != before


def test_model_hash_of_a_plain_file(tmp_path):
    import hashlib

    w, b = weights(4)
    path = save(linear_model(w, b, (4,)), tmp_path / "m.onnx")
    assert load_model(path, device="cpu").sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "inside-if"])
def test_custom_domain_is_refused(tmp_path, no_loading, nested):
    path = write(custom_domain_model("evil.ops", nested=nested), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="custom domain 'evil.ops'"):
        load_model(path, device="cpu")


def test_two_real_inputs_are_refused(tmp_path):
    path = save(two_input_model(), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="exactly one input.*a, b"):
        load_model(path, device="cpu")


# -- device choice -----------------------------------------------------------------------

CUDA, CPU = device.CUDA, device.CPU


def probe(works: bool, reason: str = "why"):
    calls = []

    def cuda_works():
        calls.append(1)
        return works, reason

    cuda_works.calls = calls
    return cuda_works


def test_cuda_is_used_when_it_works():
    works = probe(True)
    providers, note = device.choose_providers("auto", [CUDA, CPU], works)
    assert providers == [CUDA, CPU] and "CUDA" in note and works.calls
    assert device.choose_providers("cuda", [CUDA, CPU], probe(True))[0] == [CUDA, CPU]


def test_cuda_listed_but_not_usable_falls_back_to_cpu():
    providers, note = device.choose_providers("auto", [CUDA, CPU], probe(False, "no GPU here"))
    assert providers == [CPU]
    assert "no GPU here" in note


def test_wheel_without_cuda_never_probes():
    works = probe(True)
    providers, note = device.choose_providers("auto", [CPU], works)
    assert providers == [CPU] and "no CUDA support" in note and not works.calls
    with pytest.raises(CertifyError, match="no CUDA support.*--device cpu"):
        device.choose_providers("cuda", [CPU], works)


def test_device_cuda_when_unusable_raises():
    with pytest.raises(CertifyError, match="CUDA is not usable here \\(driver missing\\).*--device cpu"):
        device.choose_providers("cuda", [CUDA, CPU], probe(False, "driver missing"))


def test_device_cpu_never_probes():
    works = probe(True)
    assert device.choose_providers("cpu", [CUDA, CPU], works)[0] == [CPU]
    assert not works.calls


def test_unknown_device_is_refused():
    with pytest.raises(CertifyError, match="--device must be one of"):
        device.choose_providers("tpu", [CPU], probe(True))


def test_probe_cuda_is_silent_and_false_without_a_gpu(capfd):
    works, reason = device.probe_cuda()
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert reason
    if not os.path.exists("/dev/nvidia0"):  # this machine: no GPU
        assert works is False


def test_loader_records_the_cpu_fallback(tmp_path):
    w, b = weights(4)
    path = save(linear_model(w, b, (4,)), tmp_path / "m.onnx")
    model = load_model(path, cuda_probe=lambda: (False, "fake probe"))
    assert model.providers == [CPU] and model.device == "cpu"
    if CUDA in onnxruntime.get_available_providers():
        assert "fake probe" in model.device_note
    with pytest.raises(CertifyError, match="--device cuda"):
        load_model(path, device="cuda", cuda_probe=lambda: (False, "fake probe"))
