"""Diffusion one-shot denoising (SPEC, "Diffusion one-shot denoising"): schedules, the step
that matches sigma, recognizing a noise predictor, the one-shot denoiser graph, and
``certify train-denoiser --kind diffusion``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import certifier
from certifier.diffusion import (
    TimestepConvention, as_noise_predictor, betas_schedule, choose_step, cosine_schedule,
    is_noise_predictor, linear_schedule, noise_level, one_shot_denoiser, read_betas, recorded_settings,
    resolve_schedule, schedule_from_record, schedule_option,
)
from certifier.errors import CertifyError

from onnx_models import OPSET, linear_model, save

IMAGE = (1, 4, 4)
SIGMAS = (0.05, 0.12, 0.25, 0.5, 1.0, 2.0)


# -- schedules and the step that matches sigma -------------------------------------------


def spec_alpha_bar(kind: str, steps: int = 1000) -> np.ndarray:
    """alpha_bar as SPEC states it, computed apart from certifier.diffusion."""
    if kind == "linear":
        betas = [1e-4 + (0.02 - 1e-4) * i / (steps - 1) for i in range(steps)]
    else:
        f = lambda t: math.cos((t / steps + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = [min(1 - f(i + 1) / f(i), 0.999) for i in range(steps)]
    found, product = [], 1.0
    for beta in betas:
        product *= 1 - beta
        found.append(product)
    return np.array(found)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedules_follow_the_formulas(kind):
    schedule = linear_schedule() if kind == "linear" else cosine_schedule()
    expected = spec_alpha_bar(kind)
    np.testing.assert_allclose(schedule.alpha_bar, expected, rtol=1e-10)
    if kind == "cosine":
        # improved DDPM: alpha_bar(t) = f(t) / f(0) wherever beta is not capped
        f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        np.testing.assert_allclose(schedule.alpha_bar[:990], [f(i + 1) / f(0) for i in range(990)], rtol=1e-9)
        assert schedule.betas.max() == 0.999
    else:
        assert schedule.betas[0] == 1e-4 and schedule.betas[-1] == 0.02


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_the_step_is_the_one_whose_alpha_bar_is_closest(kind, sigma):
    schedule = schedule_option(kind)
    alpha_bar = spec_alpha_bar(kind)
    target = 1 / (1 + 4 * sigma**2)
    step = choose_step(schedule, sigma)
    distances = np.abs(alpha_bar - target)
    assert distances[step.index] == distances.min()
    assert step.alpha_bar == pytest.approx(alpha_bar[step.index], rel=1e-10)
    assert step.timestep == step.index  # the default convention: 0-based integer steps
    assert step.step_sigma == pytest.approx(math.sqrt((1 - step.alpha_bar) / step.alpha_bar) / 2)
    assert abs(step.step_sigma - sigma) / sigma < 0.02  # 1000 steps are fine enough
    assert step.note is not None and f"took the nearest, {step.index}" in step.note


@pytest.mark.parametrize("sigma", [0.1, 0.5])
def test_another_data_range_scales_the_noise(sigma):
    """Data in [0, 1]: pixel noise sigma is sigma in the model's range, alpha_bar = 1 / (1 + sigma^2)."""
    schedule = linear_schedule()
    step = choose_step(schedule, sigma, data_range=(0.0, 1.0))
    distances = np.abs(spec_alpha_bar("linear") - 1 / (1 + sigma**2))
    assert distances[step.index] == distances.min()
    assert noise_level(sigma, (0.0, 1.0)) == pytest.approx(1 / (1 + sigma**2))


def test_a_sigma_on_a_step_is_taken_without_a_note_and_one_between_says_so():
    schedule = betas_schedule([0.2, 0.5])  # alpha_bar 0.8, 0.4: sigma 0.25 is step 0 exactly
    exact = choose_step(schedule, 0.25)
    assert (exact.index, exact.note) == (0, None)
    between = choose_step(schedule, 0.35, convention=TimestepConvention(first=1))  # alpha_bar 0.671
    assert between.index == 0 and between.timestep == 1
    assert "between steps 1 (alpha_bar 0.8) and 2 (alpha_bar 0.4)" in between.note


@pytest.mark.parametrize("sigma,side", [(0.001, "below"), (500.0, "above")])
def test_a_sigma_outside_the_schedule_is_refused(sigma, side):
    with pytest.raises(CertifyError, match=f"sigma {sigma:g} is {side} the noise levels") as raised:
        choose_step(linear_schedule(), sigma)
    assert "\n" not in str(raised.value)


def test_explicit_betas_from_files(tmp_path):
    betas = np.linspace(0.001, 0.05, 50)
    np.save(tmp_path / "betas.npy", betas)
    (tmp_path / "betas.txt").write_text("\n".join(map(str, betas.tolist())))
    (tmp_path / "betas.json").write_text(json.dumps(list(betas)))
    for name in ("betas.npy", "betas.txt", "betas.json"):
        schedule = schedule_option(str(tmp_path / name))
        np.testing.assert_array_equal(schedule.betas, betas)
        assert schedule.description()["steps"] == 50 and len(schedule.description()["sha256"]) == 64
    (tmp_path / "bad.txt").write_text("0.1 1.5")
    with pytest.raises(CertifyError, match="beta 1 is 1.5"):
        read_betas(tmp_path / "bad.txt")
    with pytest.raises(CertifyError, match="must be linear, cosine or a file"):
        schedule_option("quadratic")


def test_a_schedule_that_does_not_match_the_file_is_refused():
    cosine = cosine_schedule()
    with pytest.raises(CertifyError, match="trained with the cosine schedule of 1000 steps, which does not match"):
        resolve_schedule(cosine, linear_schedule(), "model.onnx")
    assert resolve_schedule(cosine, cosine_schedule(), "model.onnx") is cosine
    assert resolve_schedule(None, cosine, "model.onnx") is cosine
    with pytest.raises(CertifyError, match="records no noise schedule"):
        resolve_schedule(None, None, "model.onnx")


def test_recorded_settings_round_trip_and_refusals():
    betas = betas_schedule(np.linspace(1e-3, 0.2, 20))
    for schedule in (linear_schedule(500), cosine_schedule(250), betas):
        again = schedule_from_record(json.loads(json.dumps(schedule.record())))
        assert again.same_as(schedule) and again.kind == schedule.kind
    found = recorded_settings({"certifier.diffusion.schedule": json.dumps(cosine_schedule().record()),
                               "certifier.diffusion.timestep": '{"first": 1, "scale": 0.001}',
                               "certifier.diffusion.data_range": "[0, 1]"})
    assert found["schedule"].same_as(cosine_schedule())
    assert found["convention"] == TimestepConvention(1, 0.001) and found["data_range"] == (0.0, 1.0)
    assert recorded_settings({})["schedule"] is None
    for metadata, message in [
        ({"certifier.diffusion.schedule": '{"kind": "sqrt"}'}, "not a usable schedule"),
        ({"certifier.diffusion.schedule": '{"kind": "betas", "betas": [0.1], "steps": 2}'}, "lists 1 betas"),
        ({"certifier.diffusion.schedule": "[1, 2"}, "not a JSON object"),
        ({"certifier.diffusion.timestep": '{"first": 2}'}, "first"),
        ({"certifier.diffusion.data_range": "[1, -1]"}, "low < high"),
        ({"certifier.diffusion.prediction": "v_prediction"}, "noise predictors"),
    ]:
        with pytest.raises(CertifyError, match=message) as raised:
            recorded_settings(metadata)
        assert "\n" not in str(raised.value)


# -- noise predictors built by hand -------------------------------------------------------


def predictor(*, gain: float = 0.0, per_step: float = 0.0, timestep_type=TensorProto.INT64, timestep_shape=("N",),
              shape=IMAGE, out_channels=None, extra=100.0, batch="N", sample_type=TensorProto.FLOAT,
              names=("sample", "timestep"), opset=OPSET) -> onnx.ModelProto:
    """eps = gain * sample + per_step * timestep (broadcast over the image); with ``out_channels``
    2C, C more channels of ``extra`` follow (the variances a model may also predict)."""
    sample, timestep = names
    channels = shape[0]
    nodes = [
        helper.make_node("Cast", [sample], ["sample_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", [timestep], ["t_f"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["t_f", "t_shape"], ["t_col"]),
        helper.make_node("Mul", ["sample_f", "gain"], ["scaled"]),
        helper.make_node("Mul", ["t_col", "per_step"], ["shift"]),
        helper.make_node("Add", ["scaled", "shift"], ["eps"]),
    ]
    initializers = [numpy_helper.from_array(np.array(gain, np.float32), "gain"),
                    numpy_helper.from_array(np.array(per_step, np.float32), "per_step"),
                    numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), "t_shape")]
    out_channels = out_channels or channels
    if out_channels != channels:
        nodes.append(helper.make_node("Mul", ["eps", "zero"], ["nothing"]))
        nodes.append(helper.make_node("Add", ["nothing", "extra"], ["variances"]))
        nodes.append(helper.make_node("Concat", ["eps", "variances"], ["both"], axis=1))
        initializers += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                         numpy_helper.from_array(np.full((1, out_channels - channels, 1, 1), extra, np.float32),
                                                 "extra")]
        last = "both"
    else:
        last = "eps"
    nodes.append(helper.make_node("Cast", [last], ["noise"], to=sample_type))
    graph = helper.make_graph(
        nodes, "predictor",
        [helper.make_tensor_value_info(sample, sample_type, [batch, *shape]),
         helper.make_tensor_value_info(timestep, timestep_type, list(timestep_shape))],
        [helper.make_tensor_value_info("noise", sample_type, [batch, out_channels, *shape[1:]])],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def run_graph(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def spec_estimate(views: np.ndarray, eps: np.ndarray, alpha_bar: float) -> np.ndarray:
    """SPEC's one-shot step in float64 for data in [-1, 1]."""
    u = 2 * views.astype(np.float64) - 1
    x_t = math.sqrt(alpha_bar) * u
    x0 = np.clip((x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar), -1, 1)
    return (x0 + 1) / 2


def noisy_views(count=5, shape=IMAGE, sigma=0.5, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (count, *shape)) + rng.normal(0, sigma, (count, *shape))).astype(np.float32)


@pytest.mark.parametrize("timestep_type,timestep_shape", [
    (TensorProto.INT64, ("N",)),
    (TensorProto.INT64, ()),
    (TensorProto.INT32, (1,)),
    (TensorProto.FLOAT, ("N",)),
    (TensorProto.DOUBLE, (1,)),
    (TensorProto.FLOAT16, ()),
])
def test_the_one_shot_graph_computes_the_spec_step(timestep_type, timestep_shape):
    """For every timestep type and rank an export declares: x_t is fed in, the timestep of t*,
    and the estimate is SPEC's."""
    model = predictor(gain=0.3, per_step=0.002, timestep_type=timestep_type, timestep_shape=timestep_shape)
    found = as_noise_predictor(model, "eps.onnx")
    step = choose_step(cosine_schedule(), 0.5)
    wrapper = one_shot_denoiser(found, step, IMAGE)
    onnx.checker.check_model(wrapper, full_check=True)
    views = noisy_views()
    got = run_graph(wrapper, {"noisy": views})
    x_t = math.sqrt(step.alpha_bar) * (2 * views.astype(np.float64) - 1)
    eps = 0.3 * x_t + 0.002 * step.index  # the model's answer, with the timestep it must have been fed
    np.testing.assert_allclose(got, spec_estimate(views, eps, step.alpha_bar), atol=2e-5)
    assert got.min() >= 0 and got.max() <= 1


def test_a_one_based_float_convention_feeds_index_plus_one_scaled():
    model = predictor(per_step=0.5, timestep_type=TensorProto.FLOAT)
    step = choose_step(linear_schedule(), 0.25, convention=TimestepConvention(first=1, scale=0.001))
    assert step.timestep == pytest.approx((step.index + 1) * 0.001)
    views = noisy_views(sigma=0.25)
    got = run_graph(one_shot_denoiser(as_noise_predictor(model, "eps.onnx"), step, IMAGE), {"noisy": views})
    np.testing.assert_allclose(got, spec_estimate(views, np.full(views.shape, 0.5 * step.timestep), step.alpha_bar),
                               atol=2e-5)


def test_a_zero_noise_predictor_gives_the_clipped_identity():
    views = noisy_views(20, sigma=1.0)
    for sigma in (0.12, 0.25, 0.5, 1.0):
        wrapper = one_shot_denoiser(as_noise_predictor(predictor(), "zero.onnx"), choose_step(linear_schedule(), sigma),
                                    IMAGE)
        np.testing.assert_array_equal(run_graph(wrapper, {"noisy": views}), np.clip(views, 0, 1))


def test_a_predictor_of_noise_and_variances_uses_the_first_channels():
    shape = (3, 4, 4)
    model = predictor(gain=0.2, shape=shape, out_channels=6, extra=100.0)
    step = choose_step(cosine_schedule(), 0.25)
    views = noisy_views(shape=shape, sigma=0.25)
    got = run_graph(one_shot_denoiser(as_noise_predictor(model, "learned-sigma.onnx"), step, shape), {"noisy": views})
    x_t = math.sqrt(step.alpha_bar) * (2 * views.astype(np.float64) - 1)
    np.testing.assert_allclose(got, spec_estimate(views, 0.2 * x_t, step.alpha_bar), atol=2e-5)


def test_float16_and_old_opset_predictors_are_wrapped():
    model = predictor(gain=0.3, sample_type=TensorProto.FLOAT16, opset=9)
    step = choose_step(cosine_schedule(), 0.5)
    wrapper = one_shot_denoiser(as_noise_predictor(model, "half.onnx"), step, IMAGE)
    assert {o.version for o in wrapper.opset_import if o.domain in ("", "ai.onnx")} == {10}
    views = noisy_views()
    x_t = math.sqrt(step.alpha_bar) * (2 * views.astype(np.float64) - 1)
    np.testing.assert_allclose(run_graph(wrapper, {"noisy": views}), spec_estimate(views, 0.3 * x_t, step.alpha_bar),
                               atol=3e-3)


@pytest.mark.parametrize("opset", [9, OPSET])
def test_wrapping_leaves_the_predictor_as_it_was(opset):
    """The wrapper is built inside one copy of the predictor's graph (its weights are not copied
    again), never inside the predictor itself, which serves the next sigma: the same wrappers come
    out twice, in either order, whether the opset had to be converted or not."""
    found = as_noise_predictor(predictor(gain=0.3, opset=opset), "eps.onnx")
    before = found.proto.SerializeToString(deterministic=True)
    steps = [choose_step(cosine_schedule(), sigma) for sigma in (0.25, 0.5)]
    first = [one_shot_denoiser(found, step, IMAGE).SerializeToString(deterministic=True) for step in steps]
    again = [one_shot_denoiser(found, step, IMAGE).SerializeToString(deterministic=True) for step in steps[::-1]]
    assert found.proto.SerializeToString(deterministic=True) == before
    assert first == again[::-1] and first[0] != first[1]


def test_the_wrapper_records_what_a_header_needs():
    step = choose_step(cosine_schedule(), 0.25)
    wrapper = one_shot_denoiser(as_noise_predictor(predictor(), "zero.onnx"), step, IMAGE, dataset="unit-test")
    recorded = {p.key: p.value for p in wrapper.metadata_props}
    assert recorded["certifier.denoiser.kind"] == "diffusion"
    assert float(recorded["certifier.denoiser.sigma"]) == 0.25
    assert float(recorded["certifier.denoiser.timestep"]) == step.timestep
    assert float(recorded["certifier.denoiser.alpha_bar"]) == step.alpha_bar
    assert json.loads(recorded["certifier.denoiser.schedule"]) == {"kind": "cosine", "steps": 1000, "s": 0.008,
                                                                   "max_beta": 0.999}
    assert recorded["certifier.dataset"] == "unit-test"


# -- recognition and refusals ---------------------------------------------------------------


def test_noise_predictors_are_told_from_denoisers_by_their_inputs():
    assert is_noise_predictor(predictor())
    assert is_noise_predictor(predictor(names=("x", "t")))
    one_input = linear_model(np.ones((16, 2), np.float32), np.zeros(2, np.float32), IMAGE)
    assert not is_noise_predictor(one_input)
    found = as_noise_predictor(predictor(names=("images", "noise_level")), "other-names.onnx")
    assert (found.sample_name, found.timestep_name) == ("images", "noise_level")


@pytest.mark.parametrize("model,message", [
    (predictor(timestep_type=TensorProto.STRING), "timestep input 'timestep' is STRING; a timestep is an integer"),
    (predictor(timestep_type=TensorProto.BOOL), "is BOOL"),
    (predictor(timestep_shape=("N", 1)), "declares rank 2 \\(\\?x1\\); a timestep is a scalar, \\[1\\] or \\[N\\]"),
    (predictor(sample_type=TensorProto.UINT8), "image input 'sample' is UINT8"),
    (predictor(batch=4, timestep_shape=(3,)), "batches of 4 images but 3 timesteps"),
])
def test_predictors_with_an_unusable_timestep_or_image_are_refused(model, message):
    with pytest.raises(CertifyError, match=message) as raised:
        as_noise_predictor(model, "eps.onnx")
    assert "\n" not in str(raised.value)


def test_a_timestep_without_a_shape_is_refused():
    model = predictor()
    model.graph.input[1].type.tensor_type.ClearField("shape")
    with pytest.raises(CertifyError, match="declares no shape"):
        as_noise_predictor(model, "eps.onnx")


def test_a_predictor_of_another_image_size_or_channels_is_refused():
    step = choose_step(cosine_schedule(), 0.5)
    with pytest.raises(CertifyError, match="takes images of 1x8x8 .* but the views are 1x4x4"):
        one_shot_denoiser(as_noise_predictor(predictor(shape=(1, 8, 8)), "big.onnx"), step, IMAGE)
    with pytest.raises(CertifyError, match="gives 3 channels for images of 1"):
        one_shot_denoiser(as_noise_predictor(predictor(out_channels=3), "odd.onnx"), step, IMAGE)
    with pytest.raises(CertifyError, match="not images"):
        one_shot_denoiser(as_noise_predictor(predictor(), "eps.onnx"), step, (16,))


def test_an_integer_timestep_with_a_fractional_convention_is_refused():
    step = choose_step(cosine_schedule(), 0.5, convention=TimestepConvention(scale=0.001))
    with pytest.raises(CertifyError, match="takes an integer timestep"):
        one_shot_denoiser(as_noise_predictor(predictor(), "eps.onnx"), step, IMAGE)


def test_models_that_are_not_predictors_are_refused():
    three = predictor()
    three.graph.input.append(helper.make_tensor_value_info("class_labels", TensorProto.INT64, ["N"]))
    with pytest.raises(CertifyError, match="takes two inputs .*: sample, timestep, class_labels"):
        as_noise_predictor(three, "conditional.onnx")
    with pytest.raises(CertifyError, match="cannot tell the image input"):
        as_noise_predictor(predictor(names=("a", "b"), timestep_shape=("N", 1, 4, 4)), "two-images.onnx")
    two_outputs = predictor()
    two_outputs.graph.output.append(helper.make_tensor_value_info("t_f", TensorProto.FLOAT, ["N"]))
    with pytest.raises(CertifyError, match="gives one output"):
        as_noise_predictor(two_outputs, "two.onnx")


# -- the wrapper is an ordinary denoiser: certify composes it with a classifier ---------------


def clipping_classifier(weights: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """linear_model's classifier with its input clipped to [0, 1] first (the clipping the one-shot step applies)."""
    model = linear_model(weights, bias, IMAGE)
    graph = model.graph
    first = graph.node[0]
    first.input[0] = "clipped"
    graph.node.insert(0, helper.make_node("Max", ["input", "low"], ["floored"]))
    graph.node.insert(1, helper.make_node("Min", ["floored", "high"], ["clipped"]))
    graph.initializer.extend([numpy_helper.from_array(np.array(0.0, np.float32), "low"),
                              numpy_helper.from_array(np.array(1.0, np.float32), "high")])
    return model


@pytest.mark.parametrize("sigma", [0.25, 1.0])
def test_a_zero_predictor_certifies_like_no_denoiser_up_to_the_clipping(tmp_path, sigma):
    """Composed by certifier.denoiser as any denoiser: the same records as the classifier that
    clips its input itself, certified without a denoiser."""
    rng = np.random.default_rng(3)
    weights, bias = rng.normal(size=(16, 3)).astype(np.float32), (rng.normal(size=3) * 0.1).astype(np.float32)
    model = save(linear_model(weights, bias, IMAGE), tmp_path / "model.onnx")
    clipping = save(clipping_classifier(weights, bias), tmp_path / "clipping.onnx")
    step = choose_step(cosine_schedule(), sigma)
    wrapper = save(one_shot_denoiser(as_noise_predictor(predictor(), "zero.onnx"), step, IMAGE),
                   tmp_path / "one-shot.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (6, *IMAGE)).astype(np.float32)
    settings = dict(n0=20, n=300, alpha=0.01, seed=5, batch_size=64)
    through = certifier.load(model, plugin="rs", sigma=sigma, denoiser=wrapper).certify(x, **settings)
    plain = certifier.load(clipping, plugin="rs", sigma=sigma).certify(x, **settings)
    keep = lambda records: [(r.prediction, r.radius) for r in records]  # noqa: E731
    assert keep(through) == keep(plain)
    assert {r.prediction for r in plain} != {None}
    unclipped = certifier.load(model, plugin="rs", sigma=sigma).certify(x, **settings)
    assert keep(unclipped) != keep(plain)  # the clipping matters, so the comparison could fail


def test_the_wrapper_composes_with_a_classifier_and_matches_the_two_run_in_turn(tmp_path):
    from certifier.denoiser import load_denoiser, open_denoised
    from certifier.model import load_model
    from certifier.space import InputSpace, ModelAdapter

    rng = np.random.default_rng(4)
    classifier = save(linear_model(rng.normal(size=(16, 3)), rng.normal(size=3), IMAGE, input_type=TensorProto.FLOAT),
                      tmp_path / "model.onnx")
    step = choose_step(linear_schedule(), 0.5)
    wrapper = save(one_shot_denoiser(as_noise_predictor(predictor(gain=0.4, per_step=1e-3), "eps.onnx"), step, IMAGE),
                   tmp_path / "one-shot.onnx")
    denoiser = load_denoiser(wrapper)
    assert denoiser.sigma == 0.5 and denoiser.description()["certifier.denoiser.kind"] == "diffusion"
    model = load_model(classifier, device="cpu", threads=1)
    adapter = ModelAdapter(IMAGE, model.input_dims, model.input_dtype, InputSpace())
    composed = open_denoised(denoiser, model, adapter, "rs", threads=1)
    views = noisy_views(7)
    x_t = math.sqrt(step.alpha_bar) * (2 * views.astype(np.float64) - 1)
    expected = model.raw_outputs(spec_estimate(views, 0.4 * x_t + 1e-3 * step.index, step.alpha_bar)
                                 .astype(np.float32))
    np.testing.assert_allclose(composed.raw_outputs(views), expected, rtol=1e-4, atol=1e-4)


# -- a diffusers UNet2DModel, exported as users export it -----------------------------------


def tiny_unet():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    # The test extra's torchvision cannot load beside the CPU torch; diffusers imports it
    # when it finds it installed, for models other than UNet2DModel.
    import diffusers.utils.import_utils as import_utils

    import_utils._torchvision_available = False
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=2, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=4).eval()

    class Exported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep):
            return self.unet(sample, timestep, return_dict=False)[0]

    return torch, Exported()


@pytest.mark.parametrize("timestep", ["int64 scalar", "float [N]"])
def test_a_diffusers_unet_export_is_recognized_and_wrapped(tmp_path, timestep):
    torch, network = tiny_unet()
    example = torch.tensor(10) if timestep == "int64 scalar" else torch.tensor([10.0, 10.0])
    path = tmp_path / "unet.onnx"
    torch.onnx.export(network, (torch.zeros(2, 1, 8, 8), example), str(path), input_names=["sample", "timestep"],
                      output_names=["out_sample"], opset_version=14, dynamo=False,
                      dynamic_axes={"sample": {0: "batch"}, "out_sample": {0: "batch"},
                                    **({"timestep": {0: "batch"}} if example.ndim else {})})
    found = as_noise_predictor(onnx.load(str(path)), path.name)
    assert (found.sample_name, found.timestep_name) == ("sample", "timestep")
    step = choose_step(linear_schedule(), 0.25)
    wrapper = one_shot_denoiser(found, step, (1, 8, 8))
    views = noisy_views(3, (1, 8, 8), sigma=0.25)
    got = run_graph(wrapper, {"noisy": views})
    with torch.no_grad():
        x_t = torch.from_numpy(np.sqrt(step.alpha_bar) * (2 * views - 1)).float()
        eps = network(x_t, torch.full((3,), float(step.index)))[:, :1].double().numpy()  # 2C channels: the first C
    np.testing.assert_allclose(got, spec_estimate(views, eps, step.alpha_bar), atol=1e-4)


# -- certify train-denoiser --kind diffusion --------------------------------------------------


@pytest.fixture(scope="module")
def little_images(tmp_path_factory):
    """48 random 8x8 grey images as a training set."""
    path = tmp_path_factory.mktemp("data") / "little.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=(rng.uniform(0, 1, (48, 8, 8)) * 255).astype(np.uint8))
    return path


def train(args):
    from certifier.cli import cli

    return CliRunner().invoke(cli, ["train-denoiser", "-q", "--kind", "diffusion", *args])


def test_training_writes_a_noise_predictor_certify_recognizes_and_wraps(little_images, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "diffusion.onnx"
    result = train(["--data", str(little_images), "--out", str(out), "--epochs", "2", "--features", "4",
                    "--batch-size", "16", "--schedule", "linear", "--steps", "200", "--dataset-name", "little"])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    metadata = {p.key: p.value for p in model.metadata_props}
    settings = recorded_settings(metadata)
    assert settings["schedule"].same_as(linear_schedule(200))
    assert settings["data_range"] == (-1.0, 1.0) and settings["convention"] == TimestepConvention(0, 1.0)
    assert metadata["certifier.dataset"] == "little"
    training = json.loads(metadata["certifier.diffusion.training"])
    assert training["epochs"] == 2
    assert set(training["validation"]) == {f"mse_sigma_{s:g}" for s in (0.12, 0.25, 0.5, 1.0)}
    assert json.loads(metadata["certifier.diffusion.architecture"])["multiply_adds"] > 0
    found = as_noise_predictor(model, out.name)
    assert (found.sample_name, found.timestep_name, found.timestep_dims) == ("sample", "timestep", [None])
    assert found.timestep_type == TensorProto.INT64
    step = choose_step(settings["schedule"], 0.5)
    views = noisy_views(4, (1, 8, 8))
    got = run_graph(one_shot_denoiser(found, step, (1, 8, 8)), {"noisy": views})
    eps = run_graph(model, {"sample": (math.sqrt(step.alpha_bar) * (2 * views - 1)).astype(np.float32),
                            "timestep": np.full(4, step.index, np.int64)})
    np.testing.assert_allclose(got, spec_estimate(views, eps, step.alpha_bar), atol=1e-4)


def test_an_interrupted_training_resumes_to_the_same_weights(little_images, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import certifier_plugins.noise_predictor as noise_predictor

    common = dict(data=little_images, epochs=3, batch_size=16, features=4, steps=100, quiet=True)
    noise_predictor.train_noise_predictor(out=tmp_path / "straight.onnx", **common)

    class Stop(Exception):
        pass

    original, calls = noise_predictor._validate, []

    def validate_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the checkpoint of epoch 1 is written
            raise Stop
        return original(*args, **kwargs)

    monkeypatch.setattr(noise_predictor, "_validate", validate_then_stop)
    with pytest.raises(Stop):
        noise_predictor.train_noise_predictor(out=tmp_path / "resumed.onnx", **common)
    monkeypatch.setattr(noise_predictor, "_validate", original)
    result = noise_predictor.train_noise_predictor(out=tmp_path / "resumed.onnx", **common)
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]  # epoch 1 from the checkpoint
    straight = onnx.load(str(tmp_path / "straight.onnx")).graph.initializer
    resumed = onnx.load(str(tmp_path / "resumed.onnx")).graph.initializer
    assert len(straight) == len(resumed) > 0
    for a, b in zip(straight, resumed):
        np.testing.assert_allclose(numpy_helper.to_array(a), numpy_helper.to_array(b), rtol=1e-5, atol=1e-6)
    again = train(["--data", str(little_images), "--out", str(tmp_path / "resumed.onnx"), "--epochs", "4",
                   "--batch-size", "16", "--features", "4", "--steps", "100"])
    assert again.exit_code == 1 and "checkpoint of another training run" in again.output


@pytest.mark.parametrize("extra,message", [
    (["--sigma", "0.5"], "drop --sigma"),
    (["--loss", "stability"], "drop --loss"),
    (["--depth", "4"], "drop --depth"),
    (["--mean", "0.5"], "drop --mean"),
    (["--schedule", "quadratic"], "must be linear, cosine or a file of betas"),
    (["--steps", "100001"], "between 1 and 100000"),
])
def test_bad_diffusion_options_are_one_line_errors(little_images, tmp_path, extra, message):
    pytest.importorskip("torch")
    result = train(["--data", str(little_images), "--out", str(tmp_path / "x.onnx"), "--epochs", "1", *extra])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("setting,message", [
    ({"steps": 0}, "--steps must be a whole number at least 1"),
    ({"features": 0}, "--features must be a whole number from 1 to"),
    ({"epochs": 1.5}, "--epochs must be a whole number"),
    ({"lr": 0.0}, "--lr must be a positive number"),
])
def test_bad_settings_from_python_are_one_line_errors(little_images, tmp_path, setting, message):
    pytest.importorskip("torch")
    from certifier_plugins.noise_predictor import train_noise_predictor

    with pytest.raises(CertifyError, match=message):
        train_noise_predictor(data=little_images, out=tmp_path / "x.onnx", quiet=True, **setting)
    assert not (tmp_path / "x.onnx").exists()


def test_the_gaussian_kind_still_needs_a_sigma_and_refuses_diffusion_options(little_images, tmp_path):
    from certifier.cli import cli

    base = ["train-denoiser", "-q", "--data", str(little_images), "--out", str(tmp_path / "x.onnx")]
    result = CliRunner().invoke(cli, base)
    assert result.exit_code == 1 and "give --sigma" in result.output
    result = CliRunner().invoke(cli, [*base, "--sigma", "0.5", "--schedule", "linear"])
    assert result.exit_code == 1 and "apply only to --kind diffusion" in result.output


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 6)])
def test_the_exported_network_gives_torchs_noise_at_any_image_size(tmp_path, size):
    torch = pytest.importorskip("torch")
    from certifier_plugins._torch import export_onnx
    from certifier_plugins.noise_predictor import build_noise_predictor, multiply_adds

    torch.manual_seed(0)
    network = build_noise_predictor(2, 4, size).eval()
    path = tmp_path / "eps.onnx"
    export_onnx(network, (2, *size), path, {}, output_name="noise", input_name="sample",
                extra_inputs=(("timestep", torch.zeros(1, dtype=torch.long)),))
    sample = np.random.default_rng(0).normal(size=(3, 2, *size)).astype(np.float32)
    timestep = np.array([0, 400, 999], np.int64)
    with torch.no_grad():
        expected = network(torch.from_numpy(sample), torch.from_numpy(timestep)).numpy()
    got = run_graph(onnx.load(str(path)), {"sample": sample, "timestep": timestep})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert multiply_adds(network, (2, *size)) > 0


def test_the_bundled_diffusion_model_denoises_every_sigma(fashion):
    """models/fmnist-diffusion.onnx: recognized, its schedule read from its metadata, and at
    each sigma its one-shot estimate is far closer to the clean images than the noisy views,
    and closer than the MSE denoiser trained for that sigma where there is one."""
    path = Path(__file__).resolve().parents[1] / "models" / "fmnist-diffusion.onnx"
    found = as_noise_predictor(onnx.load(str(path)), path.name)
    settings = recorded_settings(found.metadata)
    assert settings["schedule"].same_as(cosine_schedule()) and settings["data_range"] == (-1.0, 1.0)
    clean = (fashion["x_test"][:100].astype(np.float32) / 255)[:, None]
    for sigma in (0.12, 0.25, 0.5, 1.0):
        step = choose_step(settings["schedule"], sigma, settings["data_range"], settings["convention"])
        noisy = (clean + np.random.default_rng(0).normal(0, sigma, clean.shape)).astype(np.float32)
        denoised = run_graph(one_shot_denoiser(found, step, (1, 28, 28)), {"noisy": noisy})
        error = ((denoised - clean) ** 2).mean()
        assert error < 0.25 * sigma**2  # the noise's own is about sigma^2; the card: 15% at 0.12, 2% at 1.0
        dncnn = path.parent / f"fmnist-denoiser-mse-{sigma:g}.onnx"
        if dncnn.exists():  # at least as good as the denoiser trained for this sigma
            assert error < ((run_graph(onnx.load(str(dncnn)), {"input": noisy}) - clean) ** 2).mean()


def test_training_never_writes_over_its_own_data(little_images, tmp_path):
    pytest.importorskip("torch")
    before = little_images.read_bytes()
    result = train(["--data", str(little_images), "--out", str(little_images), "--epochs", "1"])
    assert result.exit_code == 1 and "--out" in result.output and len(result.output.strip().splitlines()) == 1
    assert little_images.read_bytes() == before
