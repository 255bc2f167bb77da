"""The plugin system: loading, registering, the documented example, the CLI hooks."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Literal

import click
import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import Field

import certifier
from certifier import hookimpl, hookspecs, plugins
from certifier import testing as testing_kit
from certifier.testing import assert_sound
from certifier.cli import cli
from certifier.plugins import pm

from onnx_models import hyperplane_model, save

DOCS = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"
#: The guide's complete example, an installable package (examples/certifier-laplace).
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "certifier-laplace" / "certifier_laplace.py"
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("register_"))


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.DOTALL)


def test_the_guides_example_is_the_example_package():
    assert python_blocks(DOCS.read_text())[0] == EXAMPLE.read_text()


@pytest.fixture
def laplace_module():
    """The complete example from docs/writing-a-plugin.md (examples/certifier-laplace), imported as a module."""
    spec = importlib.util.spec_from_file_location("certifier_laplace", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["certifier_laplace"] = module
    spec.loader.exec_module(module)
    pm.register(module, name="laplace-under-test")
    try:
        yield module
    finally:
        pm.unregister(name="laplace-under-test")
        del sys.modules["certifier_laplace"]


def test_every_hook_is_documented_with_its_signature():
    text = DOCS.read_text()
    for name in HOOKS:
        import inspect

        arguments = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({arguments})`" in text, name


def test_every_hook_has_a_test():
    source = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    for name in HOOKS:
        assert f"def {name}(" in source.replace(f"def {name}(self", f"def {name}("), name


def test_builtins_load_through_the_entry_point_group():
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="certifier")}
    assert names["rs"] == "certifier_plugins.rs"
    plugins.load_plugins()
    assert pm.get_plugin("rs") is not None
    assert "rs" in certifier.plugins.get_methods()


def test_load_plugins_is_safe_to_call_twice():
    before = len(pm.get_plugins())
    plugins.load_plugins()
    plugins.load_plugins()
    assert len(pm.get_plugins()) == before


def test_documented_example_certifies_an_l1_radius_soundly(laplace_module):
    """The example plugin from the docs is sound: its radii stay within the exact ones of closed-form
    models but for alpha (certifier.testing), with --sigma and with its own scale."""
    assert_sound("laplace", sigma=0.5)
    assert_sound("laplace", options={"scale": 0.1})


def test_the_example_packages_own_tests_pass(laplace_module):
    spec = importlib.util.spec_from_file_location("test_certifier_laplace", EXAMPLE.parent / "test_certifier_laplace.py")
    tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tests)
    names = [name for name in dir(tests) if name.startswith("test_")]
    assert names == ["test_laplace_is_sound", "test_laplace_is_sound_with_its_own_scale"]
    for name in names:
        getattr(tests, name)()


def test_an_inflated_laplace_radius_fails_the_kit(laplace_module):
    class Inflated(laplace_module.LaplaceSmoothing):
        name = "laplace-inflated"

        def certify(self, selection, estimation, alpha):
            certificate = super().certify(selection, estimation, alpha)
            return certifier.Certificate(certificate.prediction, certificate.radius * 1.3, details=certificate.details)

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register(Inflated)

    report = testing_kit.check_soundness("laplace-inflated", register=Plugin(), inputs=120)
    assert not report.passed and report.total.verdict == "FAIL"
    assert all(row.verdict == "FAIL" for row in report.rows if row.check == "pixel")


def test_documented_example_through_the_cli(laplace_module, tmp_path):
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    np.savez(tmp_path / "x.npz", x=np.array([[0.9, 0.1, 0.1, 0.1]], dtype=np.float32), y=np.array([1]))
    result = CliRunner().invoke(
        cli, ["--plugin", "laplace", "-o", "scale", "0.2", "-n", "1000", "-q", str(path),
              "--data", str(tmp_path / "x.npz"), "--output", str(tmp_path / "run.jsonl")],
    )
    assert result.exit_code == 0, result.output
    header, record = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert header["plugin"] == "laplace" and header["settings"]["options"] == {"scale": 0.2}
    assert header["settings"]["sigma"] == pytest.approx(0.2 * np.sqrt(2))
    assert record["norm"] == "l1" and record["prediction"] == 1 and record["radius"] > 0
    # an explicit --sigma is never dropped: one that disagrees with the scale is refused
    refused = CliRunner().invoke(cli, ["--plugin", "laplace", "--sigma", "0.3", "-o", "scale", "0.2", str(path),
                                       "--data", str(tmp_path / "x.npz")])
    assert refused.exit_code == 1 and refused.output.strip().splitlines() == [
        "Error: plugin laplace: --sigma 0.3 means -o scale 0.212132, not 0.2; give only one of them"]
    listed = CliRunner().invoke(cli, ["plugins", "--json"])
    entry = next(p for p in json.loads(listed.output) if p["name"] == "laplace-under-test")
    assert entry["builtin"] is False and entry["hooks"] == ["register_methods"]
    assert entry["methods"][0]["options"][0]["name"] == "scale"


def test_register_methods(register_methods):
    class Tiny(certifier.SmoothingMethod):
        name = "tiny"
        norm = "linf"

    register_methods(Tiny)
    assert certifier.plugins.get_methods()["tiny"] is Tiny


def test_choice_options_are_listed_with_their_values(register_methods):
    class Choosy(certifier.SmoothingMethod):
        name = "choosy"
        norm = "l2"

        class Options(certifier.Options):
            mode: Literal["fast", "Exact"] = Field("fast", description="how to go")

    register_methods(Choosy, name="choosy-plugin")
    (option,) = Choosy.option_help()
    assert option["type"] == "fast|Exact" and option["default"] == "fast"
    listed = CliRunner().invoke(cli, ["plugins"])
    # choices are case-sensitive, so they are printed as typed
    assert "-o mode fast|Exact (default: fast): how to go" in listed.output


def test_register_commands():
    class CommandPlugin:
        __name__ = "command-plugin"

        @hookimpl
        def register_commands(self, cli):
            @cli.command(name="hello-test")
            def hello():
                click.echo("hello from a plugin")

    plugin = CommandPlugin()
    pm.register(plugin, name="command-plugin")
    try:
        pm.hook.register_commands(cli=cli)
        result = CliRunner().invoke(cli, ["hello-test"])
        assert result.output.strip() == "hello from a plugin"
    finally:
        pm.unregister(plugin)
        cli.commands.pop("hello-test", None)


def test_duplicate_method_names_are_refused_naming_both_plugins(register_methods):
    class First(certifier.SmoothingMethod):
        name = "twin"
        norm = "l2"

    class Second(certifier.SmoothingMethod):
        name = "twin"
        norm = "l2"

    register_methods(First, name="first-plugin")
    register_methods(Second, name="second-plugin")
    with pytest.raises(certifier.CertifyError, match="first-plugin.*second-plugin|second-plugin.*first-plugin"):
        certifier.plugins.get_methods()


@pytest.mark.parametrize(
    "attributes,message",
    [({"name": "", "norm": "l2"}, "name"), ({"name": "bad norm", "norm": "l2"}, "name"),
     ({"name": "nonorm", "norm": "l3"}, "norm")],
)
def test_malformed_methods_are_refused(register_methods, attributes, message):
    method = type("Malformed", (certifier.SmoothingMethod,), attributes)
    method.name = attributes["name"] or "placeholder"
    register_methods(method, name="malformed")
    method.name = attributes["name"]
    with pytest.raises(certifier.CertifyError, match=message):
        certifier.plugins.get_methods()


def test_registering_something_else_is_refused(register_methods):
    class NotAMethod:
        name = "imposter"
        norm = "l2"

    register_methods(NotAMethod, name="imposter-plugin")
    with pytest.raises(certifier.CertifyError, match="imposter-plugin.*SmoothingMethod"):
        certifier.plugins.get_methods()


def test_a_plugin_that_fails_to_import_is_named_in_one_line(monkeypatch):
    broken = importlib.metadata.EntryPoint(name="broken", value="certifier_broken_plugin_xyz", group="certifier")
    monkeypatch.setattr(plugins, "_entry_points", lambda: [broken])
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.delenv("CERTIFY_LOAD_PLUGINS", raising=False)
    with pytest.raises(certifier.CertifyError) as error:
        plugins.load_plugins()
    message = str(error.value)
    assert '"broken"' in message and "ModuleNotFoundError" in message and "\n" not in message
    assert "CERTIFY_LOAD_PLUGINS" in message


def test_the_switch_skips_external_plugins(monkeypatch):
    broken = importlib.metadata.EntryPoint(name="broken", value="certifier_broken_plugin_xyz", group="certifier")
    monkeypatch.setattr(plugins, "_entry_points", lambda: [broken])
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setenv("CERTIFY_LOAD_PLUGINS", "")
    plugins.load_plugins()  # the broken external plugin is not even imported
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setenv("CERTIFY_LOAD_PLUGINS", "other,broken")
    with pytest.raises(certifier.CertifyError, match="broken"), pytest.warns(UserWarning, match="names other"):
        plugins.load_plugins()


def test_a_plugin_that_crashes_while_registering_is_named(register_methods):
    class Exploding:
        __name__ = "exploding-plugin"

        @hookimpl
        def register_methods(self, register):
            raise RuntimeError("boom")

    pm.register(Exploding(), name="exploding-plugin")
    try:
        with pytest.raises(certifier.CertifyError, match="exploding-plugin.*boom"):
            certifier.plugins.get_methods()
    finally:
        pm.unregister(name="exploding-plugin")


def test_a_plugin_bug_while_certifying_is_one_line(register_methods, tmp_path):
    class Buggy(certifier.SmoothingMethod):
        name = "buggy"
        norm = "l2"

        def sample(self, x, rng, group):
            return x[:, :2]  # wrong shape

        def certify(self, selection, estimation, alpha):
            return certifier.Certificate(selection.top(), 0.0)

    class Crashing(Buggy):
        name = "crashing"

        def certify(self, selection, estimation, alpha):
            raise ZeroDivisionError("oops")

    register_methods(Buggy, Crashing)
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    np.save(tmp_path / "x.npy", np.full((1, 4), 0.5, dtype=np.float32))
    result = CliRunner().invoke(cli, ["--plugin", "buggy", "-s", "1", "-n", "10", str(path), "--data",
                                      str(tmp_path / "x.npy")])
    assert result.exit_code == 1
    assert "plugin buggy made views of shape" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["--plugin", "crashing", "-s", "1", "-n", "10", str(path), "--data",
                                      str(tmp_path / "x.npy")])
    assert result.exit_code == 1
    assert "plugin crashing failed in certify(): ZeroDivisionError: oops" in result.output
    assert "Traceback" not in result.output


def test_options_are_validated_with_one_line_messages(laplace_module):
    from certifier.api import make_method

    with pytest.raises(certifier.CertifyError, match="no option 'colour'; its options: scale"):
        make_method("laplace", 0.5, {"colour": "red"}, {})
    with pytest.raises(certifier.CertifyError, match="option scale='-1'"):
        make_method("laplace", 0.5, {"scale": "-1"}, {})
    assert make_method("laplace", None, {"scale": "0.7"}, {}).scale == 0.7


def test_defaults_come_from_the_models_metadata():
    from certifier.api import make_method

    metadata = {"certifier.plugin": "rs", "certifier.sigma": "0.4", "certifier.options": '{"bounds": "two"}'}
    method = make_method(None, None, {}, metadata)
    assert method.name == "rs" and method.sigma == 0.4 and method.options.bounds == "two"
    # options given on the command line win over the metadata
    assert make_method(None, None, {"bounds": "one"}, metadata).options.bounds == "one"
    # another plugin's metadata options are not applied, even an option of the same name
    other = make_method("pprs", None, {}, metadata)
    assert other.sigma == 0.4 and other.options.bounds == "one"
    with pytest.raises(certifier.CertifyError, match="needs --sigma"):
        make_method("rs", None, {}, {})
    with pytest.raises(certifier.CertifyError, match="no --plugin"):
        make_method(None, 0.5, {}, {})


# -- one public API: plugins import certifier, and the guide documents all of it ---------------------

PLUGIN_SOURCES = sorted((Path(__file__).resolve().parents[1] / "plugins").glob("*.py"))


#: Modules of certifier that are public too: the testing kit.
PUBLIC_MODULES = {"certifier.testing"}


def _internal_uses(source: str) -> list[str]:
    """Every use of certifier beyond its public names: certifier.<module> imports (but for the public
    modules), names imported from certifier that it does not export, and certifier.<name> attributes."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names
                      if alias.name.startswith("certifier.") and alias.name not in PUBLIC_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in PUBLIC_MODULES:
                found += [f"{node.module}.{a.name}" for a in node.names if a.name not in testing_kit.__all__]
            elif node.module.startswith("certifier."):
                found.append(node.module)
            elif node.module == "certifier":
                found += [f"certifier.{a.name}" for a in node.names if a.name not in certifier.__all__]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "certifier"
              and node.attr not in certifier.__all__):
            found.append(f"certifier.{node.attr}")
    return found


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=[p.name for p in PLUGIN_SOURCES])
def test_built_in_plugins_use_only_the_public_api(path):
    assert _internal_uses(path.read_text()) == []


def test_the_import_check_catches_internal_imports():
    assert _internal_uses("from certifier.cli import friendly_errors\nimport certifier.noise\n"
                          "from certifier import plugins, hookimpl\nimport certifier\ncertifier.api.load\n") == [
        "certifier.cli", "certifier.noise", "certifier.plugins", "certifier.api"]
    assert _internal_uses("from certifier.testing import check_soundness, _check\nimport certifier.testing\n") == [
        "certifier.testing._check"]


def test_every_public_name_is_documented_in_the_plugin_guide():
    text = DOCS.read_text()
    missing = [name for name in certifier.__all__ if f"`{name}" not in text and f"certifier.{name}" not in text]
    assert missing == []


def test_every_public_name_exists():
    assert all(hasattr(certifier, name) for name in certifier.__all__)


# -- the loader: unknown hooks, versions, what is built-in ---------------------------------------------


@pytest.fixture
def entry_point_module(monkeypatch):
    """Make a module importable and offer it as the only installed plugin: ``entry_point_module(name, **attributes)``."""
    names = []

    def install(name, **attributes):
        module = type(sys)(f"certifier_test_{name.replace('-', '_')}")
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, module.__name__, module)
        point = importlib.metadata.EntryPoint(name=name, value=module.__name__, group="certifier")
        monkeypatch.setattr(plugins, "_entry_points", lambda: [point])
        monkeypatch.setattr(plugins, "_loaded", False)
        monkeypatch.delenv("CERTIFY_LOAD_PLUGINS", raising=False)
        names.append(name)

    try:
        yield install
    finally:
        for name in names:
            if pm.get_plugin(name) is not None:
                pm.unregister(name=name)


def test_a_misspelled_hook_is_refused_in_one_line_naming_plugin_and_hook(entry_point_module):
    @hookimpl
    def register_method(register):  # register_methods, misspelled
        pass

    entry_point_module("misspelled", register_method=register_method)
    with pytest.raises(certifier.CertifyError) as error:
        plugins.load_plugins()
    message = str(error.value)
    assert message.startswith('plugin "misspelled" implements register_method, which is not a certifier hook '
                              "(the hooks: register_commands, register_methods)")
    assert "\n" not in message and "CERTIFY_LOAD_PLUGINS" in message


def test_a_hook_with_arguments_its_spec_does_not_give_is_one_line(entry_point_module):
    @hookimpl
    def register_methods(register, model):
        pass

    entry_point_module("greedy-hook", register_methods=register_methods)
    with pytest.raises(certifier.CertifyError, match=r'^plugin "greedy-hook": .*register_methods.*model') as error:
        plugins.load_plugins()
    assert "\n" not in str(error.value)


def test_certify_plugins_names_where_each_plugin_comes_from(register_methods):
    class Local(certifier.SmoothingMethod):
        name = "local-test"
        norm = "l2"

    register_methods(Local, name="local-plugin")
    listed = {p["name"]: p for p in json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).output)}
    version = importlib.metadata.version("onnx-certifier")
    assert (listed["rs"]["builtin"], listed["rs"]["distribution"], listed["rs"]["version"]) == (
        True, "onnx-certifier", version)
    # registered from code, not from an entry point: neither built-in nor from a distribution
    assert (listed["local-plugin"]["builtin"], listed["local-plugin"]["version"]) == (False, None)
    text = CliRunner().invoke(cli, ["plugins"]).output
    assert f"rs (built-in; hooks: register_methods), from onnx-certifier {version}" in text.splitlines()
    assert "local-plugin (installed; hooks: register_methods)" in text.splitlines()
