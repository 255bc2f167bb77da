"""One rule for sigma and a plugin's own noise scale (issue 21 item 3), and where the settings
show (item 4): each of the issue's surprises, as a test that failed before the rule.

- the guide's example, given only its own scale option, failed with "needs --sigma";
- a model recording no sigma made certify say "sigma ... from the model's metadata";
- a model's recorded sigma was reused for any plugin (its options only for its own);
- an explicit --sigma was silently dropped by a method without a noise scale.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import Field

import certifier
from certifier import hookimpl
from certifier.api import make_method
from certifier.cli import cli, run_command
from certifier.command_options import ray_before_model
from certifier.method_config import configure_method
from certifier.plugins import get_method
from certifier.testing import hyperplane_model, registered, save_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "certifier-laplace" / "certifier_laplace.py"
SQRT3 = math.sqrt(3.0)
UNIFORM_RECORD = {"certifier.plugin": "uniform", "certifier.sigma": repr(1 / SQRT3),
                  "certifier.options": json.dumps({"lambda": 1.0})}


@pytest.fixture(scope="module")
def laplace():
    """The guide's example plugin (examples/certifier-laplace), registered for these tests."""
    spec = importlib.util.spec_from_file_location("certifier_laplace", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get("certifier_laplace")
    sys.modules["certifier_laplace"] = module
    spec.loader.exec_module(module)
    try:
        with registered(module):
            yield module
    finally:
        if previous is None:
            sys.modules.pop("certifier_laplace", None)
        else:
            sys.modules["certifier_laplace"] = previous


@pytest.fixture
def files(tmp_path):
    """A model that records nothing, one trained with uniform at lambda 1, and one input."""
    plain = save_model(hyperplane_model([1.0, 0, 0, 0], -0.5, (4,)), tmp_path / "plain.onnx")
    uniform = save_model(hyperplane_model([1.0, 0, 0, 0], -0.5, (4,), metadata=UNIFORM_RECORD),
                         tmp_path / "uniform.onnx")
    np.savez(tmp_path / "x.npz", x=np.array([[0.9, 0.1, 0.1, 0.1]], dtype=np.float32), y=np.array([1]))
    return plain, uniform, tmp_path / "x.npz"


def certify(*arguments):
    result = CliRunner().invoke(cli, [*map(str, arguments), "-n", "200", "--n0", "20"])
    notes = [line[len("certify: "):] for line in result.output.splitlines() if line.startswith("certify: ")]
    return result, notes


# -- the guide's example: its own scale option alone is enough ------------------------------------


def test_a_plugin_given_only_its_own_scale_option_certifies(laplace, files):
    plain, _, data = files
    result, notes = certify("--plugin", "laplace", "-o", "b", "0.2", plain, "--data", data)
    assert result.exit_code == 0, result.output
    assert "sigma 0.282843 from -o b 0.2 (b = 0.707107 sigma)" in notes
    method = make_method("laplace", None, {"b": "0.2"}, {})
    assert method.b == 0.2 and method.sigma == pytest.approx(0.2 * math.sqrt(2))
    # --sigma alone sets b; both must agree; neither is refused in one line saying what to give
    assert make_method("laplace", 0.5, {}, {}).b == pytest.approx(0.5 / math.sqrt(2))
    assert make_method("laplace", 0.2 * math.sqrt(2), {"b": "0.2"}, {}).b == 0.2
    with pytest.raises(certifier.CertifyError, match=r"^plugin laplace: --sigma 0.3 means -o b 0.212132 "
                                                     r"\(b = 0.707107 sigma\), but -o b is 0.2; give only one of them$"):
        make_method("laplace", 0.3, {"b": "0.2"}, {})
    with pytest.raises(certifier.MissingNoiseScale, match=r"^plugin laplace needs -o b X or --sigma S "
                                                          r"\(b = 0.707107 sigma\)$"):
        make_method("laplace", None, {}, {})


# -- where sigma came from is said truly ----------------------------------------------------------


def test_the_note_on_sigma_names_the_option_it_came_from(files):
    plain, _, data = files
    result, notes = certify("--plugin", "uniform", "-o", "lambda", repr(math.sqrt(1.5)), plain, "--data", data)
    assert result.exit_code == 0, result.output
    assert notes[1] == "sigma 0.707107 from -o lambda 1.22474 (lambda = 1.73205 sigma)"
    assert not any("metadata" in note for note in notes)  # the model records no sigma
    result, notes = certify("--plugin", "uniform", "--sigma", "0.5", plain, "--data", data)
    assert "-o lambda 0.866025 from --sigma 0.5 (lambda = 1.73205 sigma)" in notes
    assert certifier.load(plain, plugin="uniform", options={"lambda": 1}).sigma_source == "option"
    assert certifier.load(plain, plugin="rs", sigma=0.5).notes == []  # --sigma is its own note


# -- the model's record: sigma and options together, for its own plugin only ----------------------


def test_the_models_record_is_used_whole_for_its_own_plugin(files):
    _, uniform, data = files
    result, notes = certify(uniform, "--data", data)
    assert result.exit_code == 0, result.output
    assert "sigma 0.57735, -o lambda 1 from the model's metadata (trained with plugin uniform)" in notes
    run = certifier.load(uniform)
    assert (run.plugin, run.method.lam, run.sigma_source) == ("uniform", 1.0, "model")
    # an explicit scale, in either form, replaces the recorded one in both (and says so)
    run = certifier.load(uniform, sigma=0.5)
    assert run.method.lam == pytest.approx(0.5 * SQRT3) and run.method.sigma == pytest.approx(0.5)
    assert run.notes == ["the model's recorded settings (trained with plugin uniform): its sigma, -o lambda not "
                         "used: --sigma given", "-o lambda 0.866025 from --sigma 0.5 (lambda = 1.73205 sigma)"]
    run = certifier.load(uniform, options={"lambda": 2})
    assert run.method.sigma == pytest.approx(2 / SQRT3)
    assert run.notes[0] == ("the model's recorded settings (trained with plugin uniform): its sigma, -o lambda not "
                            "used: -o lambda given")


def test_a_record_whose_sigma_and_lambda_disagree_is_the_models_fault(tmp_path, files):
    """sigma 1 and lambda 1 cannot both be true of uniform noise (lambda = sqrt(3) sigma): the
    refusal names the model's metadata, not options nobody gave, and either option settles it."""
    _, _, data = files
    record = {**UNIFORM_RECORD, "certifier.sigma": "1.0"}
    model = save_model(hyperplane_model([1.0, 0, 0, 0], -0.5, (4,), metadata=record), tmp_path / "odd.onnx")
    result, _ = certify(model, "--data", data)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert ("the model's metadata records sigma 1 and lambda 1, which disagree (lambda = 1.73205 sigma); give "
            "--sigma or -o lambda") in result.output
    assert "give only one of them" not in result.output
    for option in (["--sigma", "0.5"], ["-o", "lambda", "1"]):
        assert certify(model, "--data", data, *option)[0].exit_code == 0


def test_another_plugin_gets_neither_the_recorded_sigma_nor_the_options(files):
    _, uniform, data = files
    result, _ = certify("--plugin", "rs", uniform, "--data", data)
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "Error: plugin rs needs --sigma; the model was trained with plugin uniform, whose recorded settings apply "
        "to it alone"]
    result, notes = certify("--plugin", "rs", "--sigma", "0.3", uniform, "--data", data)
    assert result.exit_code == 0, result.output
    assert "the model was trained with plugin uniform: its recorded sigma and options are not used for plugin rs" \
        in notes
    with pytest.raises(certifier.MissingNoiseScale, match="trained with plugin uniform"):
        configure_method("ssn", None, {}, UNIFORM_RECORD)  # ssn has a lambda too: not the model's


def test_a_denoisers_sigma_is_the_last_default(files):
    _, uniform, _ = files
    method, source = configure_method("rs", None, {}, UNIFORM_RECORD, fallback_sigma=0.25)
    assert (method.sigma, source.sigma, source.other_plugin) == (0.25, "denoiser", True)
    method, source = configure_method("uniform", None, {}, UNIFORM_RECORD, fallback_sigma=0.25)
    assert (method.lam, source.sigma) == (1.0, "model")


# -- an explicit --sigma is used or refused, never dropped ---------------------------------------


def test_sigma_is_refused_by_a_method_without_a_noise_scale(tmp_path):
    model = save_model(hyperplane_model(np.ones(64), -32, (1, 8, 8)), tmp_path / "image.onnx")
    np.savez(tmp_path / "x.npz", x=np.full((1, 1, 8, 8), 0.75, dtype=np.float32))
    message = "plugin translation has no noise scale, so --sigma does not apply to it; drop --sigma"
    result, _ = certify("--plugin", "translation", "--sigma", "0.5", model, "--data", tmp_path / "x.npz")
    assert result.exit_code == 1 and result.output.strip().splitlines() == [f"Error: {message}"]
    with pytest.raises(certifier.CertifyError, match=message):
        certifier.load(model, plugin="translation", sigma=0.5)
    with pytest.raises(certifier.CertifyError, match=message):
        get_method("translation")(sigma=0.5)  # made directly, as a Ray worker does
    selftest = CliRunner().invoke(cli, ["selftest", "--plugin", "translation", "--sigma", "0.5"])
    assert selftest.exit_code == 1 and selftest.output.strip().splitlines() == [f"Error: {message}"]
    assert certifier.load(model, plugin="translation").sigma_source is None


# -- the declaration itself ----------------------------------------------------------------------


class Widths(certifier.SmoothingMethod):
    """Uniform noise of a width with a default: the default gives sigma when nothing else does."""

    name = "widths-under-test"
    norm = "l1"
    scale_option = "width"
    scale_per_sigma = 2.0

    class Options(certifier.Options):
        width: float = Field(0.5, gt=0)


class OwnScale(certifier.SmoothingMethod):
    """A plugin of the old kind: no declaration, its own __init__ works sigma out of its option."""

    name = "own-scale-under-test"
    norm = "l2"

    class Options(certifier.Options):
        spread: float | None = None

    def __init__(self, sigma=None, options=None):
        options = options or self.Options()
        super().__init__(sigma if sigma is not None else options.spread, options)


class BadScale(certifier.SmoothingMethod):
    name = "bad-scale-under-test"
    norm = "l2"
    scale_option = "nonexistent"


class Plugin:
    def __init__(self, *methods):
        self.methods = methods

    @hookimpl
    def register_methods(self, register):
        for method in self.methods:
            register(method)


def test_a_scale_option_with_a_default(tmp_path):
    with registered(Plugin(Widths, OwnScale)):
        method, source = configure_method("widths-under-test", None, {}, {})
        assert (method.sigma, source.sigma) == (0.25, "default")
        assert source.notes(method) == ["sigma 0.25 from the default -o width 0.5 (width = 2 sigma)"]
        method, source = configure_method("widths-under-test", 0.1, {}, {})
        assert (method.options.width, source.sigma) == (0.2, "given")
        with pytest.raises(certifier.CertifyError, match="means -o width 0.2 .*, but -o width is 0.5"):
            make_method("widths-under-test", 0.1, {"width": 0.5}, {})
        method, source = configure_method("own-scale-under-test", None, {"spread": 0.3}, {})
        assert (method.sigma, source.sigma) == (0.3, "plugin")
        assert source.notes(method) == ["sigma 0.3 from plugin own-scale-under-test's own options"]
        with pytest.raises(certifier.MissingNoiseScale, match=r"^plugin own-scale-under-test needs --sigma$"):
            make_method("own-scale-under-test", None, {}, {})


def test_a_scale_option_that_is_not_an_option_is_refused_when_registered():
    with registered(Plugin(BadScale)):
        with pytest.raises(certifier.CertifyError, match=r"smoothing method bad-scale-under-test's scale_option "
                                                         r"'nonexistent' is not one of its options \(none\)"):
            make_method("bad-scale-under-test", 0.5, {}, {})


def test_the_plugins_listing_says_which_setting_is_the_noise_scale(laplace):
    listed = CliRunner().invoke(cli, ["plugins"]).output.splitlines()
    at = listed.index("  --plugin laplace: Laplace noise (Teng et al. 2020): L1 radius -b ln(2 (1 - pA_lower)) "
                      "[randomized, threat model l1]")
    assert listed[at + 2] == "      noise scale: -o b, or --sigma (b = 0.707107 sigma)"
    assert listed[at + 3] == "      -o b FLOAT: Laplace scale b"
    assert "      no noise scale: --sigma does not apply" in listed  # translation
    assert "      noise scale: --sigma" in listed  # rs
    described = json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).output)
    (entry,) = [m for p in described for m in p["methods"] if m["name"] == "laplace"]
    assert (entry["scale_option"], entry["scale_per_sigma"]) == ("b", pytest.approx(1 / math.sqrt(2)))


# -- item 4: the plugin's options in the header and the reports; --ray before the model ---------


def test_the_plugins_options_show_in_the_header_and_every_report(laplace, files):
    plain, _, data = files
    output = data.parent / "run.jsonl"
    result, _ = certify("--plugin", "laplace", "-o", "b", "0.2", plain, "--data", data, "--output", output)
    assert result.exit_code == 0, result.output
    header = json.loads(output.read_text().splitlines()[0])
    assert header["settings"] == {"sigma": pytest.approx(0.2 * math.sqrt(2)), "options": {"b": 0.2}}
    text = CliRunner().invoke(cli, ["report", str(output)]).output
    assert any(line.split() == ["-o", "b", "0.2"] for line in text.splitlines()), text
    summary = json.loads(CliRunner().invoke(cli, ["report", "--json", str(output)]).output)
    assert summary[str(output)]["options"] == {"b": 0.2}
    page = data.parent / "report.html"
    assert CliRunner().invoke(cli, ["report", str(output), "--html", str(page)]).exit_code == 0
    html = page.read_text()
    assert "-o b</th>" in html and "option b" in html


def test_ray_right_before_the_model_takes_no_address(files):
    plain, _, data = files
    context = run_command.make_context("run", ["--ray", str(plain), "--data", str(data)])
    assert (context.params["ray_address"], context.params["model"]) == ("local", plain)
    context = run_command.make_context("run", ["--ray", "head:6379", str(plain), "--data", str(data)])
    assert (context.params["ray_address"], context.params["model"]) == ("head:6379", plain)
    context = run_command.make_context("run", [str(plain), "--ray", "--data", str(data)])
    assert context.params["ray_address"] == "local"
    assert ray_before_model(["--ray", "model.onnx"]) == ["--ray=local", "model.onnx"]
    assert ray_before_model(["--ray", "auto", "model.onnx"]) == ["--ray", "auto", "model.onnx"]
    assert ray_before_model(["--", "--ray", "model.onnx"]) == ["--", "--ray", "model.onnx"]
