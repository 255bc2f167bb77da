"""--denoiser with a diffusion noise predictor (issue 20): recognized from its inputs, set up for
--sigma (schedule, t*, data range), composed with the classifier as any denoiser, recorded in
the results header, refused in one line when it cannot be used."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto

import certifier
from certifier.cli import cli
from certifier.diffusion import choose_step, cosine_schedule, linear_schedule, step_sigma
from certifier.errors import CertifyError
from certifier.onnx_file import file_sha256

from onnx_models import linear_model, save
from test_denoiser import cli_error, identity_denoiser
from test_diffusion import IMAGE, clipping_classifier, predictor, tiny_unet

MODELS = Path(__file__).resolve().parents[1] / "models"
SETTINGS = dict(n0=20, n=300, alpha=0.01, seed=5, batch_size=64)
COSINE = {"kind": "cosine", "steps": 1000, "s": 0.008, "max_beta": 0.999}


def recorded(model: onnx.ModelProto, schedule=COSINE, **more) -> onnx.ModelProto:
    """``model`` with the metadata certify train-denoiser --kind diffusion writes (a schedule, ...)."""
    entries = {"certifier.diffusion.schedule": json.dumps(schedule) if schedule else None,
               **{f"certifier.diffusion.{k}": json.dumps(v) for k, v in more.items()}}
    for key, value in entries.items():
        if value is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    return model


def classifier(seed: int = 3, shape=IMAGE) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    return linear_model(rng.normal(size=(int(np.prod(shape)), 3)).astype(np.float32),
                        (rng.normal(size=3) * 0.1).astype(np.float32), shape)


def images(count: int = 6, shape=IMAGE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (count, *shape)).astype(np.float32)


def keep(records) -> list[tuple]:
    return [(r.prediction, r.radius, r.counts if hasattr(r, "counts") else None) for r in records]


@pytest.fixture
def files(tmp_path):
    data = tmp_path / "x.npz"
    np.savez(data, x=images(3), y=np.array([0, 1, 2]))
    return {
        "model": save(classifier(), tmp_path / "model.onnx"),
        "eps": save(recorded(predictor(gain=0.3, per_step=1e-3)), tmp_path / "eps.onnx"),
        "bare": save(predictor(gain=0.3, per_step=1e-3), tmp_path / "bare.onnx"),
        "data": data,
        "dir": tmp_path,
    }


def run_args(files, *extra, sigma="0.5"):
    return ["run", str(files["model"]), "--plugin", "rs", "--sigma", sigma, "--data", str(files["data"]),
            "-n", "50", "--n0", "10", *extra]


# -- the one-shot denoiser through --denoiser ---------------------------------------------------


@pytest.mark.parametrize("sigma", [0.25, 1.0])
def test_a_zero_noise_predictor_certifies_like_no_denoiser_up_to_the_clipping(tmp_path, sigma):
    """A predictor that always answers zero leaves clip(view, 0, 1): given directly as --denoiser it
    certifies exactly as the classifier that clips its input itself, without a denoiser."""
    rng = np.random.default_rng(3)
    weights, bias = rng.normal(size=(16, 3)).astype(np.float32), (rng.normal(size=3) * 0.1).astype(np.float32)
    model = save(linear_model(weights, bias, IMAGE), tmp_path / "model.onnx")
    clipping = save(clipping_classifier(weights, bias), tmp_path / "clipping.onnx")
    zero = save(recorded(predictor()), tmp_path / "zero.onnx")
    x = images()
    run = certifier.load(model, plugin="rs", sigma=sigma, denoiser=zero)
    assert run.denoiser.kind == "diffusion"
    through = run.certify(x, **SETTINGS)
    plain = certifier.load(clipping, plugin="rs", sigma=sigma).certify(x, **SETTINGS)
    assert keep(through) == keep(plain)
    assert {r.prediction for r in plain} != {None}
    unclipped = certifier.load(model, plugin="rs", sigma=sigma).certify(x, **SETTINGS)
    assert keep(unclipped) != keep(plain)  # the clipping matters, so the comparison could fail


def test_the_predictor_certifies_as_its_one_shot_graph_saved_as_a_denoiser(files):
    """--denoiser eps.onnx gives the records of the one-shot graph for the same step, written to a
    file and given as an ordinary denoiser."""
    from certifier.diffusion import as_noise_predictor, one_shot_denoiser

    step = choose_step(cosine_schedule(), 0.5)
    wrapper = save(one_shot_denoiser(as_noise_predictor(onnx.load(files["eps"]), "eps.onnx"), step, IMAGE),
                   files["dir"] / "one-shot.onnx")
    x = images()
    direct = certifier.load(files["model"], plugin="rs", sigma=0.5, denoiser=files["eps"]).certify(x, **SETTINGS)
    saved = certifier.load(files["model"], plugin="rs", sigma=0.5, denoiser=wrapper).certify(x, **SETTINGS)
    assert keep(direct) == keep(saved)
    assert keep(direct) != keep(certifier.load(files["model"], plugin="rs", sigma=0.5).certify(x, **SETTINGS))


@pytest.mark.parametrize("kind,schedule", [("linear", linear_schedule()), ("cosine", cosine_schedule())])
@pytest.mark.parametrize("sigma", [0.12, 0.25, 0.5, 1.0])
def test_the_header_records_the_step_the_formula_chooses(files, kind, schedule, sigma):
    """t* is the step whose alpha_bar is nearest 1 / (1 + (2 sigma)^2), computed here by brute force;
    the header records it, its alpha_bar, the schedule and the data range; stderr says the step."""
    target = 1 / (1 + (2 * sigma) ** 2)
    alpha_bar = np.cumprod(1 - schedule.betas)
    index = int(np.argmin(np.abs(alpha_bar - target)))
    output = files["dir"] / "run.jsonl"
    result = CliRunner().invoke(cli, run_args(files, "--denoiser", str(files["bare"]), "--schedule", kind,
                                              "--output", str(output), sigma=str(sigma)))
    assert result.exit_code == 0, result.output
    header = json.loads(output.read_text().splitlines()[0])
    assert header["denoiser_kind"] == "diffusion"
    assert header["timestep"] == index and header["alpha_bar"] == pytest.approx(alpha_bar[index], rel=1e-12)
    assert header["schedule"]["kind"] == kind and header["schedule"]["steps"] == 1000
    assert header["data_range"] == [-1.0, 1.0] and header["timestep_convention"] == {"first": 0, "scale": 1.0}
    assert f"took the nearest, {index}," in result.output  # these sigmas lie between two steps


def test_a_sigma_on_a_step_takes_it_without_a_between_note(files):
    sigma = step_sigma(float(cosine_schedule().alpha_bar[300]))
    result = CliRunner().invoke(cli, run_args(files, "--denoiser", str(files["eps"]), sigma=repr(sigma)))
    assert result.exit_code == 0, result.output
    assert "timestep 300 " in result.output and "lies between" not in result.output


def test_report_shows_kind_schedule_timestep_and_alpha_bar(files):
    output, plain = files["dir"] / "run.jsonl", files["dir"] / "plain.jsonl"
    assert CliRunner().invoke(cli, run_args(files, "--denoiser", str(files["eps"]), "--output",
                                            str(output))).exit_code == 0
    assert CliRunner().invoke(cli, run_args(files, "--output", str(plain))).exit_code == 0
    step = choose_step(cosine_schedule(), 0.5)
    report = CliRunner().invoke(cli, ["report", str(output), str(plain)])
    assert report.exit_code == 0, report.output
    rows = {line.split("  ")[0]: line.split()[-2:] for line in report.output.splitlines()}
    assert rows["denoiser kind"] == ["diffusion", "-"]
    assert "cosine (1000 steps)" in report.output
    assert rows["timestep"] == [f"{step.timestep:g}", "-"]
    assert rows["alpha_bar"] == [f"{step.alpha_bar:.6g}", "-"]
    page = files["dir"] / "report.html"
    assert CliRunner().invoke(cli, ["report", str(output), "--html", str(page)]).exit_code == 0
    text = page.read_text()
    assert "denoiser timestep" in text and "denoiser alpha bar" in text and str(step.alpha_bar) in text


# -- resuming -----------------------------------------------------------------------------------


def test_resume_refuses_another_schedule_or_step(files):
    output = files["dir"] / "run.jsonl"
    base = run_args(files, "--denoiser", str(files["bare"]), "--output", str(output))
    result = CliRunner().invoke(cli, [*base, "--schedule", "cosine", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert "holds results for other settings (schedule" in cli_error([*base, "--schedule", "linear"])
    assert "(schedule" in cli_error([*base, "--schedule", "cosine", "--steps", "500"])
    # a file written by another t* (or alpha_bar, data range) for the same schedule
    lines = output.read_text().splitlines()
    for key, value in (("timestep", 123.0), ("alpha_bar", 0.5), ("data_range", [0.0, 1.0]),
                       ("timestep_convention", {"first": 1, "scale": 1.0})):
        header = json.loads(lines[0])
        header[key] = value
        output.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
        assert f"holds results for other settings ({key}" in cli_error([*base, "--schedule", "cosine"])
    output.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, [*base, "--schedule", "cosine"])
    assert result.exit_code == 0 and "resuming" in result.output, result.output


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("build,extra,message", [
    (lambda: recorded(predictor(timestep_type=TensorProto.STRING)), [], "timestep input 'timestep' is STRING"),
    (lambda: recorded(predictor(timestep_shape=("N", 1))), [], "declares rank 2"),
    (lambda: recorded(predictor(timestep_shape=(2, 3))), [], "declares rank 2"),
    (lambda: recorded(predictor(shape=(1, 8, 8))), [], "takes images of 1x8x8 .* but the views are 1x4x4"),
    (lambda: recorded(predictor(out_channels=3)), [], "gives 3 channels for images of 1"),
    (lambda: recorded(predictor()), ["--schedule", "linear"], "trained with the cosine schedule .* does not match"),
    (lambda: recorded(predictor()), ["--schedule", "cosine", "--steps", "500"], "does not match"),
    (lambda: predictor(), [], "records no noise schedule"),
    (lambda: predictor(), ["--steps", "500"], "--steps goes with --schedule linear or cosine"),
    (lambda: predictor(), ["--schedule", "quadratic"], "--schedule must be linear, cosine or a file of betas"),
    (lambda: recorded(predictor(), data_range=[0.0, 1.0]), ["--data-range", "-1", "1"],
     "records the data range \\[0.0, 1.0\\]"),
    (lambda: recorded(predictor(), prediction="v"), [], "certify uses noise predictors"),
])
def test_unusable_noise_predictors_are_refused_in_one_line(files, build, extra, message):
    path = save(build(), files["dir"] / "eps-bad.onnx")
    line = cli_error(run_args(files, "--denoiser", str(path), *extra))
    assert re.search(message, line), line


def test_an_empty_data_range_entry_records_none(files):
    """A file whose data range entry is empty records no range: --data-range says it, and the
    header holds the range given, not a range the file was said to record."""
    model = recorded(predictor())
    entry = model.metadata_props.add()
    entry.key, entry.value = "certifier.diffusion.data_range", ""
    path = save(model, files["dir"] / "eps-empty-range.onnx")
    output = files["dir"] / "run.jsonl"
    result = CliRunner().invoke(cli, [*run_args(files, "--denoiser", str(path), "--data-range", "0", "1"),
                                      "--limit", "1", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert json.loads(output.read_text().splitlines()[0])["data_range"] == [0.0, 1.0]


def test_a_sigma_outside_the_schedule_is_refused(files):
    line = cli_error(run_args(files, "--denoiser", str(files["eps"]), sigma="0.001"))
    assert "sigma 0.001 is below the noise levels of the model's cosine schedule" in line
    line = cli_error(run_args(files, "--denoiser", str(files["bare"]), "--schedule", "linear", sigma="500"))
    assert "is above the noise levels" in line


def test_other_misuse_is_refused_in_one_line(files):
    # the predictor as the classifier
    line = cli_error(["run", str(files["eps"]), "--plugin", "rs", "--sigma", "0.5", "--data", str(files["data"])])
    assert "eps.onnx is a diffusion noise predictor" in line and "give it with --denoiser" in line
    line = cli_error(["run", str(files["bare"]), "--plugin", "rs", "--sigma", "0.5", "--data", str(files["data"])])
    assert "bare.onnx is a diffusion noise predictor" in line
    # diffusion options without a denoiser, or with a denoiser of images
    assert "--schedule go with --denoiser" in cli_error(run_args(files, "--schedule", "cosine"))
    assert "--denoiser-kind go with --denoiser" in cli_error(run_args(files, "--denoiser-kind", "diffusion"))
    identity = save(identity_denoiser(), files["dir"] / "identity.onnx")
    line = cli_error(run_args(files, "--denoiser", str(identity), "--schedule", "cosine"))
    assert "are for a diffusion noise predictor; the denoiser identity.onnx is a denoiser of images" in line
    # forced kinds
    line = cli_error(run_args(files, "--denoiser", str(files["eps"]), "--denoiser-kind", "gaussian"))
    assert "a denoiser takes exactly one input" in line
    line = cli_error(run_args(files, "--denoiser", str(identity), "--denoiser-kind", "diffusion"))
    assert "a diffusion noise predictor takes two inputs" in line
    # no sigma: a diffusion model serves them all
    line = cli_error(["run", str(files["model"]), "--plugin", "rs", "--data", str(files["data"]), "--denoiser",
                      str(files["eps"])])
    assert "serves every sigma" in line and "--sigma" in line


def test_an_ambiguous_two_input_model_names_the_flag(files):
    """Two image inputs: not recognized as a predictor; the refusal says how to force the kind."""
    two = identity_denoiser()
    two.graph.input.append(onnx.helper.make_tensor_value_info("other", TensorProto.FLOAT, ["N", 1, 4, 4]))
    path = save(two, files["dir"] / "two.onnx")
    line = cli_error(run_args(files, "--denoiser", str(path)))
    assert "takes exactly one input" in line and "--denoiser-kind diffusion" in line


def test_a_model_too_large_to_compose_is_refused_in_one_line(files, monkeypatch):
    """Protobuf holds at most 2 GB: a graph beyond it is refused before it is serialized."""
    import certifier.denoiser as denoiser_module

    monkeypatch.setattr(denoiser_module, "PROTO_LIMIT", 100)
    line = cli_error(run_args(files, "--denoiser", str(files["eps"])))
    assert "a graph composed in memory holds at most 2 GiB" in line


def test_a_predictor_with_external_data_is_read_and_hashed_with_it(files):
    """Weights in a file beside the model (as exports over 2 GB have them) are read, and part of its hash."""
    folder = files["dir"] / "external"
    folder.mkdir()
    path = folder / "eps.onnx"
    onnx.save(recorded(predictor(gain=0.3, per_step=1e-3)), str(path), save_as_external_data=True,
              location="eps.data", size_threshold=0)
    assert (folder / "eps.data").exists()
    x = images(3)
    inline = certifier.load(files["model"], plugin="rs", sigma=0.5, denoiser=files["eps"]).certify(x, **SETTINGS)
    run = certifier.load(files["model"], plugin="rs", sigma=0.5, denoiser=path)
    assert keep(run.certify(x, **SETTINGS)) == keep(inline)
    assert run.denoiser.sha256 == file_sha256(path, folder / "eps.data")


def test_betas_from_a_file_and_from_python(files):
    betas = linear_schedule(200).betas
    text = files["dir"] / "betas.txt"
    text.write_text(" ".join(repr(float(b)) for b in betas))
    output = files["dir"] / "run.jsonl"
    result = CliRunner().invoke(cli, run_args(files, "--denoiser", str(files["bare"]), "--schedule", str(text),
                                              "--output", str(output)))
    assert result.exit_code == 0, result.output
    header = json.loads(output.read_text().splitlines()[0])
    assert header["schedule"]["kind"] == "betas" and header["schedule"]["steps"] == 200
    assert header["timestep"] == choose_step(linear_schedule(200), 0.5).index
    x = images(2)
    run = certifier.load(files["model"], plugin="rs", sigma=0.5, denoiser=files["bare"], schedule=list(betas))
    assert run.denoiser.step.index == header["timestep"]
    with pytest.raises(CertifyError, match="beta 3 is 1.5"):
        certifier.load(files["model"], plugin="rs", sigma=0.5, denoiser=files["bare"],
                       schedule=[0.1, 0.1, 0.1, 1.5]).certify(x, **SETTINGS)


# -- other methods ------------------------------------------------------------------------------


def test_drs_and_pprs_take_a_noise_predictor(tmp_path):
    """drs (each side) and pprs put the one-shot denoiser in front of the classifier as they put a
    denoiser: the records equal those through the one-shot graph saved as an ordinary denoiser."""
    from certifier.diffusion import as_noise_predictor, one_shot_denoiser

    for plugin, shape, options in (("drs", (1, 4, 4), {}), ("pprs", (1, 8, 8), {"method": "grid"})):
        eps = save(recorded(predictor(gain=0.3, per_step=1e-3, shape=shape)), tmp_path / f"eps-{plugin}.onnx")
        model = save(classifier(shape=shape), tmp_path / f"model-{plugin}.onnx")
        x = images(3, shape)
        direct = certifier.load(model, plugin=plugin, sigma=0.5, options=options, denoiser=eps)
        assert direct.denoiser.kind == "diffusion"
        got = direct.certify(x, **SETTINGS)
        view_shape = direct.groups(x.shape[1:])[direct.method.groups[0]].adapter.view_shape
        wrapper = save(one_shot_denoiser(as_noise_predictor(onnx.load(eps), eps.name),
                                         choose_step(cosine_schedule(), 0.5), view_shape), tmp_path / "w.onnx")
        saved = certifier.load(model, plugin=plugin, sigma=0.5, options=options, denoiser=wrapper).certify(
            x, **SETTINGS)
        plain = certifier.load(model, plugin=plugin, sigma=0.5, options=options).certify(x, **SETTINGS)
        assert keep(got) == keep(saved), plugin
        assert keep(got) != keep(plain), plugin


# -- a diffusers UNet2DModel, exported as users export it -----------------------------------------


def test_a_diffusers_unet_export_certifies_end_to_end(tmp_path):
    """A tiny diffusers UNet2DModel (noise and variances: 2C outputs), exported by torch.onnx.export
    with an int64 timestep of one value per image, certifies through --denoiser with --schedule."""
    torch, network = tiny_unet()
    path = tmp_path / "unet.onnx"
    torch.onnx.export(network, (torch.zeros(2, 1, 8, 8), torch.tensor([10, 10])), str(path),
                      input_names=["sample", "timestep"], output_names=["out_sample"], opset_version=14, dynamo=False,
                      dynamic_axes={"sample": {0: "batch"}, "timestep": {0: "batch"}, "out_sample": {0: "batch"}})
    model = save(classifier(shape=(1, 8, 8)), tmp_path / "model.onnx")
    data = tmp_path / "x.npz"
    np.savez(data, x=images(2, (1, 8, 8)), y=np.array([0, 1]))
    output = tmp_path / "run.jsonl"
    result = CliRunner().invoke(cli, ["run", str(model), "--plugin", "rs", "--sigma", "0.25", "--data", str(data),
                                      "-n", "40", "--n0", "10", "--denoiser", str(path), "--schedule", "linear",
                                      "--output", str(output)])
    assert result.exit_code == 0, result.output
    header = json.loads(output.read_text().splitlines()[0])
    assert header["denoiser_kind"] == "diffusion" and header["timestep"] == choose_step(linear_schedule(), 0.25).index
    assert len(output.read_text().splitlines()) == 3


# -- the bundled model --------------------------------------------------------------------------


def test_the_bundled_diffusion_model_is_recognized_and_records_its_schedule():
    run = certifier.load(MODELS / "fmnist-plain.onnx", plugin="rs", sigma=0.25,
                         denoiser=MODELS / "fmnist-diffusion.onnx")
    step = run.denoiser.step
    assert (step.index, round(step.alpha_bar, 6)) == (289, 0.799536)  # the model card's table
    assert run.denoiser.schedule.kind == "cosine"


def test_the_timestep_recorded_is_the_one_the_input_type_holds():
    from onnx import TensorProto

    from certifier.diffusion import fed_timestep

    assert float(fed_timestep(2049.0, TensorProto.FLOAT16, "m")) == 2048.0  # float16 holds 2049 as 2048
    assert float(fed_timestep(289.0, TensorProto.INT64, "m")) == 289.0
    for timestep, kind in [(math.inf, TensorProto.INT64), (1e300, TensorProto.INT64), (1e300, TensorProto.FLOAT16),
                           (1e12, TensorProto.INT32)]:
        with pytest.raises(certifier.CertifyError, match="cannot hold timestep"):
            fed_timestep(timestep, kind, "m")


def test_schedules_without_signal_or_with_an_infinite_offset_are_refused():
    from certifier.diffusion import betas_schedule, choose_step, cosine_schedule, step_sigma

    assert step_sigma(0.0) == math.inf
    with pytest.raises(certifier.CertifyError, match="no signal is left"):
        # alpha_bar underflows to 0 after 21 steps, and sigma 1e200's noise level is 0 too
        choose_step(betas_schedule([1 - 2**-53] * 25), 1e200)
    with pytest.raises(certifier.CertifyError, match="cosine schedule needs"):
        cosine_schedule(100, offset=math.inf)
