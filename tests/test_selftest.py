"""certify selftest and certifier.testing: every method against the exact radii of closed-form models.

Each built-in method passes the check at its default settings; methods whose radius is
inflated (by 30%, or by one step for the exact ones) fail it; the command prints a table or
JSON and exits 1 on a failure, a crash, an answer out of contract, or no check at all; and
the registration helpers work whether or not a plugin is installed.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import certifier
from certifier import hookimpl, plugins
from certifier.cli import cli
from certifier.plugins import get_method, pm
from certifier import load_model
from certifier.testing import (
    SoundnessCheck, assert_sound, check_soundness, hyperplane_distance, hyperplane_model, register_plugin,
    registered, save_model, votes,
)

# every method a built-in plugin registers: each must pass the check (a new built-in is included by itself)
BUILTIN_METHODS = sorted(name for name, (_, plugin) in plugins._methods_by_plugin()[0].items()
                         if plugins.is_builtin(plugin))


def test_the_built_in_methods_are_all_here():
    assert {"rs", "pprs", "drs", "dssn", "ssn", "uniform", "brightness", "contrast", "gamma",
            "translation"} <= set(BUILTIN_METHODS)


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_every_built_in_method_passes_the_selftest(name):
    report = assert_sound(name)
    ran = [row for row in report.rows if row.inputs]
    assert ran, report.table()
    # not vacuous: certificates are issued, and they come close to the exact radii
    assert sum(row.certified for row in ran) >= 0.8 * sum(row.inputs for row in ran)
    assert max(row.tightness or 0 for row in ran) > 0.6, report.table()


def mutant(base: str, name: str, change) -> object:
    """A plugin registering a copy of method ``base`` whose certificates go through ``change``."""
    method = get_method(base)

    class Changed(method):
        def certify(self, selection, estimation, alpha):
            return change(self, super().certify(selection, estimation, alpha))

    Changed.name = name

    class Plugin:
        __name__ = f"mutant-{name}"

        @hookimpl
        def register_methods(self, register):
            register(Changed)

    return Plugin()


def inflated(certificate, factor=1.3):
    return dataclasses.replace(certificate, radius=certificate.radius * factor)


@pytest.mark.parametrize("base", ["rs", "uniform", "ssn", "brightness"])
def test_a_radius_inflated_by_30_percent_fails(base):
    with registered(mutant(base, f"{base}-inflated", lambda method, c: inflated(c))):
        report = check_soundness(f"{base}-inflated", inputs=120)
    assert not report.passed
    assert report.total.verdict == "FAIL" and report.total.violations > 3 * report.total.expected


def test_the_true_radius_passes_where_the_inflated_one_fails():
    # same settings, same seed: only the factor differs
    with registered(mutant("uniform", "uniform-same", lambda method, c: c)):
        assert check_soundness("uniform-same", inputs=120).passed


def one_step_more(method, certificate):
    step = 1.0 / method.q if hasattr(method, "q") else 1.0
    return dataclasses.replace(certificate, radius=certificate.radius + step)


@pytest.mark.parametrize("base,change", [
    ("dssn", one_step_more), ("dssn", lambda method, c: inflated(c)), ("translation", one_step_more)])
def test_an_exact_method_over_claiming_fails(base, change):
    with registered(mutant(base, f"{base}-more", change)):
        report = check_soundness(f"{base}-more")
    assert not report.passed and report.deterministic
    assert all(row.violations for row in report.rows if row.inputs)


def test_exact_methods_get_zero_tolerance():
    """One step too far on a few inputs only: still a failure."""
    calls = []

    def now_and_then(method, certificate):
        below_ceiling = certificate.details["radius_steps"] < method.levels // 2
        calls.append(below_ceiling)
        return one_step_more(method, certificate) if below_ceiling and sum(calls) % 10 == 0 else certificate

    with registered(mutant("dssn", "dssn-sometimes", now_and_then)):
        report = check_soundness("dssn-sometimes")
    violations = sum(row.violations for row in report.rows)
    assert 0 < violations < 0.1 * sum(row.inputs for row in report.rows)
    assert not report.passed and "violations in" in report.problems[0]


def test_the_report_reads_as_a_table_and_as_json():
    report = check_soundness("contrast", inputs=40)
    table = report.table().splitlines()
    assert table[0].startswith("selftest of plugin contrast (sigma 0.25, alpha 0.1, n0 64, n 512, seed 0")
    assert table[1].split() == ["check", "shape", "inputs", "certified", "violations", "allowed", "p-value",
                                "tightness", "verdict"]
    assert table[-1] == "PASS"
    data = json.loads(json.dumps(report.as_dict()))
    assert data["passed"] is True and data["total"]["inputs"] == sum(r["inputs"] for r in data["rows"])
    assert {r["check"] for r in data["rows"]} == {"linear", "mean", "pixel"}


# -- the command ---------------------------------------------------------------------------------------


def test_selftest_command_passes_a_sound_method():
    result = CliRunner().invoke(cli, ["selftest", "--plugin", "gamma", "--inputs", "40"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "PASS"
    assert "pixel  2" in result.output


def test_selftest_command_fails_an_inflated_radius_with_status_1():
    with registered(mutant("rs", "rs-inflated", lambda method, c: inflated(c))):
        result = CliRunner().invoke(cli, ["selftest", "--plugin", "rs-inflated", "--sigma", "0.5", "--inputs", "40",
                                          "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["passed"] is False and data["settings"]["sigma"] == 0.5
    assert data["total"]["verdict"] == "FAIL" and any(row["examples"] for row in data["rows"])


def test_selftest_command_fails_a_method_without_checks(register_methods):
    class Unchecked(certifier.SmoothingMethod):
        name = "unchecked"
        norm = "l2"

        def sample(self, x, rng, group):
            return certifier.gaussian_views(x, self.sigma, rng)

        def certify(self, selection, estimation, alpha):
            return certifier.gaussian_certificate(selection, estimation, alpha, self.sigma)

    register_methods(Unchecked)
    result = CliRunner().invoke(cli, ["selftest", "--plugin", "unchecked"])
    assert result.exit_code == 1
    assert "FAIL: plugin unchecked declares no soundness check" in result.output


@pytest.mark.parametrize("answer,message", [
    (lambda: 1 / 0, "plugin crashing failed in certify(): ZeroDivisionError"),
    (lambda: certifier.Certificate(1, float("nan")), "certify() gives radius nan when every vote agrees"),
    (lambda: certifier.Certificate(7, 0.1), "certify() predicted class 7"),
])
def test_selftest_command_fails_a_crash_or_an_answer_out_of_contract(register_methods, answer, message):
    class Crashing(certifier.SmoothingMethod):
        name = "crashing"
        norm = "l2"

        def sample(self, x, rng, group):
            return certifier.gaussian_views(x, self.sigma, rng)

        def certify(self, selection, estimation, alpha):
            return answer()

        def soundness_checks(self):
            return (SoundnessCheck("linear"),)

    register_methods(Crashing)
    result = CliRunner().invoke(cli, ["selftest", "--plugin", "crashing", "--inputs", "10"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines()[-1].startswith("FAIL: linear 2:") and message in result.output


def test_selftest_command_refuses_an_unknown_plugin_in_one_line():
    result = CliRunner().invoke(cli, ["selftest", "--plugin", "nope"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        result.output.strip().splitlines()[0]] and "unknown plugin 'nope'" in result.output


def test_a_check_the_users_options_rule_out_is_skipped_and_named():
    report = check_soundness("drs", options={"resize": "bilinear"}, inputs=20)
    assert not report.passed
    assert report.problems[0].startswith("no check could run")
    assert "this check runs with -o resize nearest" in report.problems[0]
    # left to itself, drs runs its check with the resize it needs
    assert check_soundness("drs", inputs=40).passed
    # a model of the user's for one side would not be the closed-form model
    report = check_soundness("drs", options={"model-r": "theirs.onnx"}, inputs=20)
    assert not report.passed and "names another model for vote group right" in report.problems[0]


# -- the parts a plugin's own tests use -----------------------------------------------------------------


def test_votes_are_the_engines_fixed_n_votes():
    rs = get_method("rs")(sigma=0.5)
    certificate = rs.certify(votes([3, 97]), votes([120, 9880]), alpha=0.001)
    from scipy import stats

    assert certificate.prediction == 1
    assert certificate.radius == pytest.approx(0.5 * stats.norm.ppf(stats.beta.ppf(0.001, 9880, 121)), rel=1e-6)
    both = votes(left=[1, 9], right=[0, 10])
    assert both.trials("left") == 10 and both.top() == 1
    with pytest.raises(TypeError):
        votes([1, 2], left=[1, 2])


def test_hyperplane_models_and_distances(tmp_path):
    direction, offset = np.array([3.0, -4.0]), 0.5
    path = save_model(hyperplane_model(direction, offset, (2,)), tmp_path / "plane.onnx")
    x = np.array([[0.9, 0.1], [0.1, 0.9]], dtype=np.float32)
    assert load_model(path).labels(x).tolist() == [1, 0]
    margin = abs(3 * 0.9 - 4 * 0.1 + 0.5)
    assert hyperplane_distance(x[:1], direction, offset, "l2")[0] == pytest.approx(margin / 5)
    assert hyperplane_distance(x[:1], direction, offset, "l1")[0] == pytest.approx(margin / 4)
    assert hyperplane_distance(x[:1], direction, offset, "linf")[0] == pytest.approx(margin / 7)


def test_soundness_checks_are_validated():
    with pytest.raises(ValueError, match="unknown soundness check 'planar'"):
        SoundnessCheck("planar")
    with pytest.raises(ValueError, match="threshold and boundary belong to pixel checks"):
        SoundnessCheck("linear", threshold=0.5)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        SoundnessCheck("pixel", boundary=1.5)
    with pytest.raises(ValueError, match="grid"):
        SoundnessCheck("exhaustive", grid=0)
    assert [c.kind for c in get_method("rs")(sigma=0.5).soundness_checks()] == ["linear", "mean", "pixel"]
    assert certifier.SmoothingMethod.soundness_checks(get_method("rs")(sigma=0.5)) == ()


def laplace_like_module(name: str) -> types.ModuleType:
    """A plugin module as an author writes it: a method registered by a hook in its module."""
    module = types.ModuleType(name)

    class Laplace(certifier.SmoothingMethod):
        name = "laplace-installed"
        norm = "l1"

    @hookimpl
    def register_methods(register):
        register(Laplace)

    module.register_methods = register_methods
    return module


@pytest.fixture
def installed(monkeypatch):
    """A plugin module offered as the only installed plugin, as pip install makes it."""
    module = laplace_like_module("certifier_test_installed")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    point = importlib.metadata.EntryPoint(name="laplace-installed", value=module.__name__, group="certifier")
    monkeypatch.setattr(plugins, "_entry_points", lambda: [point])
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.delenv("CERTIFY_LOAD_PLUGINS", raising=False)
    try:
        yield module
    finally:
        if pm.get_plugin("laplace-installed") is not None:
            pm.unregister(name="laplace-installed")


def test_registering_an_installed_plugin_for_a_test_works(installed):
    # what the guide's fixture did: refused once the plugin is installed and loaded
    plugins.load_plugins()
    with pytest.raises(ValueError, match="already registered under a different name"):
        pm.register(installed, name="laplace-under-test")
    with registered(installed):
        assert "laplace-installed" in plugins.get_methods()
    # the installed copy stays registered: it was not the test's to remove
    assert pm.get_plugin("laplace-installed") is installed


def test_registering_before_certify_loads_the_installed_copy(installed):
    # registered() loads the installed plugins first, so the entry point finds its module registered
    with registered(installed):
        assert pm.get_plugin("laplace-installed") is installed
        assert "laplace-installed" in plugins.get_methods()


def test_registering_a_plugin_that_is_not_installed_and_removing_it():
    module = laplace_like_module("certifier_test_local")
    with registered(module):
        assert pm.is_registered(module) and "laplace-installed" in plugins.get_methods()
    assert not pm.is_registered(module) and "laplace-installed" not in plugins.get_methods()


def test_the_register_plugin_fixture(register_plugin):
    module = laplace_like_module("certifier_test_fixture")
    register_plugin(module)
    assert pm.is_registered(module)


def test_the_kit_certifies_through_the_public_api():
    """certifier.testing imports only certifier's public names, but for the two it documents."""
    source = (Path(certifier.__file__).parent / "testing.py").read_text()
    internal = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                internal += [a.name for a in node.names if a.name not in certifier.__all__]
            else:
                internal += [f"{node.module}.{a.name}" for a in node.names]
    assert sorted(internal) == ["plugins.load_plugins", "plugins.pm", "stats.clopper_pearson_lower"]


def test_sigma_defaults_only_when_the_method_has_no_noise_level_of_its_own():
    assert check_soundness("uniform", options={"lambda": 0.2}, inputs=12).settings["options"] == {"lambda": 0.2}
    assert check_soundness("rs", inputs=12).settings["sigma"] == 0.25
    assert math.isclose(check_soundness("uniform", inputs=12).settings["sigma"], 0.25)
