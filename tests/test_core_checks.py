"""The core refuses what would make a wrong or unreadable certificate, in one line:
settings whose best radius overflows, plugin answers that are not certificates, and
views that are not finite; and it names only real plugins when something fails."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import norm

import certifier
from certifier import Certificate, CertifyError, SmoothingMethod, hookimpl, plugins
from certifier.cli import CertifyGroup, cli
from certifier.one_line import _blame
from certifier.engine import Engine
from certifier.sampling import FixedSampling
from certifier.settings import MAX_SAMPLES, JobSettings
from certifier.methods import Votes

from onnx_models import hyperplane_model, linear_model, save


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("CERTIFY_DEBUG", raising=False)


@pytest.fixture
def case(tmp_path):
    """A two-class model on 4-vectors (class 1 iff x0 > 0.5) and 3 inputs: 0 far left, 1 far
    right, 2 on the boundary."""
    save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    x = np.full((3, 4), 0.5, dtype=np.float32)
    x[:, 0] = [0.0, 1.0, 0.5]
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0]))
    return tmp_path


def certify_cli(folder: Path, *args, output: str | None = "r.jsonl"):
    out = [] if output is None else ["--output", str(folder / output)]
    return CliRunner().invoke(cli, [str(folder / "plane.onnx"), "--data", str(folder / "d.npz"), "--n0", "10",
                                    "-n", "50", "-q", *out, *map(str, args)], catch_exceptions=False)


def one_line_error(result, *fragments: str) -> str:
    """A non-zero exit, exactly one "Error: ..." line, nothing after it, no traceback."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert result.output.split(errors[0], 1)[1].strip() == "", result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def written_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["type"] == "result"]


# -- item 3: radius ceilings ---------------------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (["-p", "uniform", "-o", "lambda", "1e308"], "sigma 5.7735e+307 does not fit in float32"),
    (["-p", "ssn", "-o", "lambda", "1e308"], "sigma 5.7735e+307 does not fit in float32"),
    (["-p", "dssn", "-o", "lambda", "1e308"], "does not fit in float32"),
    (["-p", "drs", "-s", "1e308"], "does not fit in float32"),
    (["-p", "rs", "-s", "1e308"], "does not fit in float32"),
    (["-p", "uniform", "-o", "lambda", "1e307"], "does not fit in float32"),
])
def test_settings_whose_radius_overflows_are_refused_before_anything_is_written(case, args, fragment):
    result = certify_cli(case, *args)
    one_line_error(result, fragment)
    assert not (case / "r.jsonl").exists()


def test_a_plugin_whose_best_radius_is_infinite_is_refused_up_front(register_methods, case):
    class Overflowing(SmoothingMethod):
        name = "overflowing"
        norm = "l2"
        certified = []

        def sample(self, x, rng, group):
            return x + 0

        def certify(self, selection, estimation, alpha):
            share = estimation.count("model", selection.top()) / estimation.trials("model")
            return Certificate(selection.top(), self.sigma * 1e300 * share)

    register_methods(Overflowing)
    one_line_error(certify_cli(case, "-p", "overflowing", "-s", "1e10"), "plugin overflowing gives radius inf",
                   "sigma 1e+10", "n 50")
    assert not (case / "r.jsonl").exists()


class Boundless(SmoothingMethod):
    """A hostile rule: unanimous votes for class ``huge_for`` (every class when None) give radius 1e308,
    its own ceiling; other classes get sane radii."""

    name = "boundless"
    norm = "l2"
    huge_for = None

    def sample(self, x, rng, group):
        return x + 0

    def certify(self, selection, estimation, alpha):
        top = selection.top()
        share = estimation.count("model", top) / estimation.trials("model")
        huge = Boundless.huge_for is None or top == Boundless.huge_for
        return Certificate(top, (1e308 if huge else 0.5) * share)


@pytest.mark.parametrize("huge_for", [None, 1])
def test_a_radius_beyond_the_whole_input_space_is_refused_naming_the_plugin(register_methods, case, huge_for):
    """Beyond sqrt(d) an L2 radius certifies nothing more (every input of [0, 1]^4 is within 2): a rule
    whose ceiling goes beyond is refused before its first certificate is written, and nothing shows 1e308."""
    Boundless.huge_for = huge_for
    register_methods(Boundless)
    result = certify_cli(case, "-p", "boundless", "-s", "0.1")
    one_line_error(result, "plugin boundless can certify radius 1e+308", "l2 radius 2 already covers every input "
                   "of shape 4 in [0, 1]", "the plugin has a bug")
    # class 0 (input 0) was sane and is kept; input 1 (class 1) never written
    assert [r["index"] for r in written_results(case / "r.jsonl")] == ([] if huge_for is None else [0])


def test_a_built_in_whose_ceiling_is_beyond_the_input_space_is_refused_as_settings(case):
    """rs with sigma 2 on 4 features can certify 2.26 > sqrt(4) at n 50: not a bug, settings that
    cover the whole space; they are refused up front with what to change, and sigma 1 (ceiling 1.13) runs."""
    one_line_error(certify_cli(case, "-p", "rs", "-s", "2"), "plugin rs can certify radius 2.262",
                   "sigma 2, n 50, alpha 0.001", "l2 radius 2 already covers every input", "lower --sigma")
    assert not (case / "r.jsonl").exists()
    assert certify_cli(case, "-p", "rs", "-s", "1").exit_code == 0


def test_the_diameter_of_each_threat_model():
    from certifier.threats import STANDARD

    methods = plugins.get_methods()
    assert STANDARD["l2"].diameter((1, 6, 6)) == 6.0
    assert STANDARD["l1"].diameter((3, 2, 2)) == 12.0
    assert STANDARD["linf"].diameter((784,)) == 1.0
    assert methods["translation"].threat_model.diameter((1, 5, 9)) == 9.0  # every shift of a 9-px axis
    for semantic in ("brightness", "contrast", "gamma"):
        assert methods[semantic].threat_model.diameter((1, 6, 6)) is None  # unbounded: no clipping, any factor


class Decreasing(SmoothingMethod):
    """A buggy rule: the radius grows as the votes disagree (above its own unanimous radius)."""

    name = "decreasing"
    norm = "l2"

    def sample(self, x, rng, group):
        return x + self.sigma * rng.standard_normal(x.shape).astype(np.float32)

    def certify(self, selection, estimation, alpha):
        top = selection.top()
        share = estimation.count("model", top) / estimation.trials("model")
        return Certificate(top, 2.0 - share)


def test_a_radius_above_the_methods_own_ceiling_is_never_written(register_methods, case):
    register_methods(Decreasing)
    # inputs 0 and 1 get unanimous votes (radius 1.0, the ceiling); input 2 splits its votes
    result = certify_cli(case, "-p", "decreasing", "-s", "0.2")
    one_line_error(result, "plugin decreasing certified radius", "for input 2", "above 1.0", "every vote agrees")
    records = written_results(case / "r.jsonl")
    assert [r["index"] for r in records] == [0, 1]
    assert all(r["radius"] == 1.0 for r in records)


def test_a_unanimous_certificate_is_exactly_the_ceiling_and_accepted(case):
    result = certify_cli(case, "-p", "rs", "-s", "0.1", "--limit", "2")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (case / "r.jsonl").read_text().splitlines()]
    ceiling = lines[0]["radius_ceiling"]
    assert ceiling == pytest.approx(0.1 * norm.ppf(0.001 ** (1 / 50)), rel=1e-12)
    assert [r["radius"] for r in lines[1:]] == [ceiling, ceiling]


def _all_vote_splits(trials: int, classes: int):
    """Every count vector of ``trials`` votes over ``classes`` classes."""
    if classes == 1:
        yield (trials,)
        return
    for first in range(trials + 1):
        for rest in _all_vote_splits(trials - first, classes - 1):
            yield (first, *rest)


def _votes(counts, groups=("model",)):
    return Votes({g: np.array(counts, dtype=np.int64) for g in groups}, FixedSampling.lower_bound)


# scipy's beta.ppf warns when its root finding gives up at alpha 1e-300 on split votes (p_lower ~1e-50,
# an abstention either way); the bounds that can certify are checked by the assertion itself.
@pytest.mark.filterwarnings("ignore:Error in function boost")
@pytest.mark.parametrize("plugin, sigma, options", [
    ("rs", 0.25, {}), ("rs", 1e30, {}), ("uniform", None, {"lambda": "0.7"}), ("ssn", None, {"lambda": "3e37"}),
])
@pytest.mark.parametrize("n, alpha", [(1, 0.5), (7, 0.3), (25, 1e-3), (25, 1e-300)])
def test_no_legitimate_certificate_exceeds_the_ceiling(tmp_path, plugin, sigma, options, n, alpha):
    """Brute force over every vote count: the built-in rules never certify more than the
    ceiling, float rounding included, so the check (with no tolerance) rejects nothing true."""
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin=plugin, sigma=sigma, options=options)
    # no input shape: the engine does not refuse the huge sigmas' ceilings beyond the inputs' diameter
    engine = Engine.from_settings(run.method, run.groups((4,)), n0=3, n=n, alpha=alpha)
    for top in range(3):
        selection = _votes([3 if c == top else 0 for c in range(3)])
        ceiling = engine.radius_ceiling(top, 3)
        for counts in _all_vote_splits(n, 3):
            certificate = run.method.certify(selection, _votes(counts), alpha)
            assert certificate.radius <= ceiling, (top, counts)


def test_no_legitimate_drs_certificate_exceeds_the_ceiling(tmp_path):
    weights = np.zeros((16, 2), dtype=np.float32)
    weights[0, 1] = 1.0
    path = save(linear_model(weights, np.zeros(2), (1, 4, 4)), tmp_path / "image.onnx")
    run = certifier.load(path, plugin="drs", sigma=0.5)
    n, alpha = 12, 0.01
    engine = run.engine((1, 4, 4), n0=2, n=n, alpha=alpha)
    ceiling = engine.radius_ceiling(0, 2)
    assert ceiling > 0
    selection = Votes({"left": np.array([2, 0]), "right": np.array([2, 0])}, FixedSampling.lower_bound)
    for left in range(n + 1):
        for right in range(n + 1):
            estimation = Votes({"left": np.array([left, n - left]), "right": np.array([right, n - right])},
                               FixedSampling.lower_bound)
            assert run.method.certify(selection, estimation, alpha).radius <= ceiling


@pytest.mark.parametrize("lam", ["0.01", "0.02", "0.03"])
def test_no_legitimate_dssn_certificate_exceeds_the_ceiling_of_its_class(tmp_path, lam):
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="dssn", options={"lambda": lam})
    engine = run.engine((4,))
    views = run.method.levels
    for counts in _all_vote_splits(views, 3):
        certificate = run.method.certify(None, _votes(counts), 0.001)
        assert certificate.radius <= engine.radius_ceiling(certificate.prediction, 3), counts
    # the ceiling is reached: class 0 unanimous, and class 1 unanimous (one step less when L is odd)
    assert engine.radius_ceiling(0, 3) == (views // 2) / 255
    assert engine.radius_ceiling(1, 3) == ((views - 1) // 2) / 255


# -- item 4: plugin answers ------------------------------------------------------------------


class Answering(SmoothingMethod):
    """A randomized method whose answers each test sets."""

    name = "answering"
    norm = "l2"
    uses_sigma = False
    answer = staticmethod(lambda selection, estimation: Certificate(selection.top(), 0.0))
    predicted = staticmethod(lambda votes: votes.top())

    def sample(self, x, rng, group):
        return x + 0

    def certify(self, selection, estimation, alpha):
        return type(self).answer(selection, estimation)

    def predict(self, votes, alpha):
        return type(self).predicted(votes)


def _answering(register_methods, answer=None, predicted=None):
    method = type("Answering", (Answering,), {})
    if answer is not None:
        method.answer = staticmethod(answer)
    if predicted is not None:
        method.predicted = staticmethod(predicted)
    register_methods(method)


@pytest.mark.parametrize("bad, fragments", [
    (lambda s, e: Certificate(-1, 0.0), ["plugin answering", "predicted class -1", "0..1"]),
    (lambda s, e: Certificate(2, 0.0), ["plugin answering", "predicted class 2", "0..1"]),
    (lambda s, e: Certificate("1", 0.0), ["plugin answering", "prediction '1'", "a str"]),
    (lambda s, e: Certificate(1.0, 0.0), ["plugin answering", "prediction 1.0"]),
    (lambda s, e: Certificate(np.float64(1.0), 0.0), ["plugin answering", "numpy.float64"]),
    (lambda s, e: Certificate(True, 0.0), ["plugin answering", "prediction True"]),
    (lambda s, e: Certificate(s.top(), 0.5, exact=True), ["plugin answering is randomized", "exact"]),
    (lambda s, e: Certificate(s.top(), 0.5, exact="yes"), ["plugin answering", "exact must be True or False"]),
    (lambda s, e: Certificate(s.top(), float("nan")), ["plugin answering", "radius nan"]),
    (lambda s, e: Certificate(s.top(), -0.1), ["plugin answering", "invalid radius -0.1"]),
    (lambda s, e: Certificate(s.top(), "0.5"), ["plugin answering", "radius '0.5'"]),
    (lambda s, e: Certificate(None, 0.3), ["plugin answering abstained with a non-zero radius"]),
    (lambda s, e: Certificate(s.top(), 0.5, conditional=3), ["plugin answering", "conditional"]),
    (lambda s, e: Certificate(s.top(), 0.5, details={"when": object()}), ["plugin answering", "details['when']"]),
    (lambda s, e: None, ["plugin answering: certify() must return a certifier.Certificate, not None"]),
    (lambda s, e: (s.top(), 0.5), ["plugin answering: certify() must return a certifier.Certificate, not a tuple"]),
])
def test_wrong_certificates_are_refused_naming_the_plugin(register_methods, case, bad, fragments):
    _answering(register_methods, bad)
    result = certify_cli(case, "-p", "answering")
    one_line_error(result, *fragments)
    assert written_results(case / "r.jsonl") == []


def test_numpy_answers_are_written_as_plain_json(register_methods, case):
    def answer(selection, estimation):
        return Certificate(np.int64(selection.top()), np.float32(0.25), exact=np.bool_(False),
                           details={"p": np.float64(0.75), "counts": estimation["model"], np.int32(3): (np.int8(2),),
                                    "inf": np.float32("inf"), "ok": np.bool_(True)})

    _answering(register_methods, answer)
    result = certify_cli(case, "-p", "answering")
    assert result.exit_code == 0, result.output
    records = written_results(case / "r.jsonl")
    assert [r["prediction"] for r in records] == [0, 1, 0]
    first = records[0]
    assert type(first["prediction"]) is int and first["radius"] == 0.25 and first["exact"] is False
    assert first["details"] == {"p": 0.75, "counts": [50, 0], "3": [2], "inf": None, "ok": True}
    # the Python API gives the same plain values
    run = certifier.load(case / "plane.onnx", plugin="answering")
    result = run.certify(np.zeros((1, 4), dtype=np.float32), n0=2, n=5)[0]
    assert type(result.prediction) is int and type(result.radius) is float and type(result.exact) is bool


@pytest.mark.parametrize("answer, fragments", [
    (lambda votes: -1, ["plugin answering: predict() predicted class -1"]),
    (lambda votes: 7, ["plugin answering: predict() predicted class 7", "0..1"]),
    (lambda votes: "1", ["plugin answering: predict() gave the prediction '1'"]),
    (lambda votes: 1.5, ["plugin answering: predict() gave the prediction 1.5"]),
    (lambda votes: [1], ["plugin answering: predict() gave the prediction [1]"]),
])
def test_wrong_predictions_are_refused_naming_the_plugin(register_methods, case, answer, fragments):
    _answering(register_methods, predicted=answer)
    result = CliRunner().invoke(cli, ["predict", "-p", "answering", str(case / "plane.onnx"), "--data",
                                      str(case / "d.npz"), "-n", "20", "-q", "--output", str(case / "p.jsonl")])
    one_line_error(result, *fragments)
    assert written_results(case / "p.jsonl") == []


def test_numpy_and_none_predictions_are_accepted(register_methods, case):
    _answering(register_methods, predicted=lambda votes: np.int64(votes.top()) if votes.top() else None)
    result = CliRunner().invoke(cli, ["predict", "-p", "answering", str(case / "plane.onnx"), "--data",
                                      str(case / "d.npz"), "-n", "20", "-q", "--output", str(case / "p.jsonl")])
    assert result.exit_code == 0, result.output
    assert [r["prediction"] for r in written_results(case / "p.jsonl")] == [None, 1, None]


@pytest.mark.parametrize("views, fragments", [
    (lambda x: None, ["plugin viewing: sample() returned None"]),
    (lambda x: x.tolist(), ["plugin viewing: sample() returned a list"]),
    (lambda x: x[:, :2], ["plugin viewing made views of shape (2,)"]),
    (lambda x: x.astype(np.complex64), ["plugin viewing made views of dtype complex64"]),
    (lambda x: x.astype(object), ["plugin viewing made views of dtype object"]),
    (lambda x: np.where(np.arange(4) == 2, np.nan, x).astype(np.float32), ["plugin viewing", "NaN or infinity"]),
    (lambda x: np.where(np.arange(4) == 3, -np.inf, x).astype(np.float32), ["plugin viewing", "NaN or infinity"]),
    (lambda x: 1 / (x[:, :1] - x[:, :1]) + x, ["plugin viewing", "NaN or infinity"]),
    (lambda x: x[0, 7], ["plugin viewing failed in sample(): IndexError"]),
])
def test_wrong_views_are_refused_naming_the_plugin(register_methods, case, views, fragments):
    class Viewing(Answering):
        name = "viewing"

        def sample(self, x, rng, group):
            with np.errstate(all="ignore"):
                return views(x)

    register_methods(Viewing)
    one_line_error(certify_cli(case, "-p", "viewing"), *fragments)
    assert written_results(case / "r.jsonl") == []


def test_finite_views_that_overflow_a_float32_sum_are_accepted(register_methods, case):
    class Huge(Answering):
        name = "huge"

        def sample(self, x, rng, group):
            return np.full(x.shape, 3e38, dtype=np.float32)  # finite; the sum overflows

    register_methods(Huge)
    result = certify_cli(case, "-p", "huge")
    assert result.exit_code == 0, result.output


def test_integer_views_are_accepted(register_methods, case):
    class Binary(Answering):
        name = "binary"

        def sample(self, x, rng, group):
            return (x > 0.75).astype(np.uint8)

    register_methods(Binary)
    result = certify_cli(case, "-p", "binary")
    assert result.exit_code == 0, result.output
    assert [r["prediction"] for r in written_results(case / "r.jsonl")] == [0, 1, 0]


@pytest.mark.parametrize("hook", ["sample", "certify", "predict", "check_inputs", "prepare", "__init__"])
def test_a_plugin_raising_in_any_method_is_named_in_one_line(register_methods, case, hook):
    def crash(*args, **kwargs):
        raise KeyError("oops")

    class Raising(Answering):
        name = "raising"

        def __init__(self, sigma=None, options=None):
            if hook == "__init__":
                crash()
            super().__init__(sigma, options)

    if hook != "__init__":
        setattr(Raising, hook, lambda self, *args: crash())
    register_methods(Raising)
    command = ["predict"] if hook == "predict" else []
    result = CliRunner().invoke(cli, [*command, "-p", "raising", str(case / "plane.onnx"), "--data",
                                      str(case / "d.npz"), "-n", "20", "--n0", "5", "-q"])
    one_line_error(result, f"plugin raising failed in {hook}(): KeyError: 'oops'", "report it to its author")


def test_plugin_errors_show_the_traceback_with_debug(register_methods, case, monkeypatch):
    class Raising(Answering):
        name = "raising"

        def sample(self, x, rng, group):
            raise KeyError("oops")

    register_methods(Raising)
    monkeypatch.setenv("CERTIFY_DEBUG", "1")
    with pytest.raises(KeyError, match="oops"):
        certifier.load(case / "plane.onnx", plugin="raising").certify(np.zeros((1, 4), dtype=np.float32), n=5)


# -- item 13: settings and messages --------------------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (["--seed", "-1"], "--seed must be between 0 and 2^63 - 1, got -1"),
    (["--seed", str(2**63)], "--seed must be between 0 and 2^63 - 1"),
    (["-n", str(10**30)], "-n must be at most 10^15"),
    (["--n0", str(10**30)], "--n0 must be at most 10^15"),
    (["-n", str(10**15 + 1)], "-n must be at most 10^15"),
    (["-n", "-5"], "--n0 and -n must be at least 1"),
    (["--n0", str(-10**30)], "--n0 and -n must be at least 1"),
    (["--alpha", "0"], "--alpha must be between 0 and 1"),
    (["--alpha", "1"], "--alpha must be between 0 and 1"),
    (["--alpha", "nan"], "--alpha must be between 0 and 1"),
    (["--alpha", "-inf"], "--alpha must be between 0 and 1"),
    (["--batch-size", str(10**20), "-n", str(10**12)], "--batch-size 100000000000000000000 would put"),
    (["--batch-size", str(10**9), "-n", str(10**9)], "GiB of views in one batch; use at most"),
    (["--threads", str(10**6)], "--threads must be at most 1024"),
    (["--workers", str(10**6)], "--workers must be at most 1024"),
])
def test_hostile_settings_get_one_line(case, args, fragment):
    one_line_error(certify_cli(case, "-p", "rs", "-s", "0.1", *args, output=None), fragment)


def test_settings_at_their_bounds_are_accepted(case):
    result = certify_cli(case, "-p", "rs", "-s", "0.1", "--seed", str(2**63 - 1), "--batch-size", str(10**12),
                         "--alpha", "1e-320")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("recorded", ["nan", "inf", "-1", "0", "1e308", "abc"])
def test_a_recorded_sigma_that_is_not_usable_is_refused_naming_the_metadata(tmp_path, recorded):
    model = hyperplane_model([1, 0, 0, 0], -0.5, metadata={"certifier.plugin": "rs", "certifier.sigma": recorded})
    save(model, tmp_path / "plane.onnx")
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 4), dtype=np.float32))
    line = one_line_error(certify_cli(tmp_path, output=None), "certifier.sigma metadata is", "pass --sigma")
    assert "--sigma must be" not in line
    assert certify_cli(tmp_path, "-s", "0.2", output=None).exit_code == 0  # what the user gives wins


def test_the_api_checks_the_same_settings():
    with pytest.raises(CertifyError, match="--seed"):
        JobSettings(seed=-1)
    with pytest.raises(CertifyError, match="whole number"):
        JobSettings(n=1.5)
    with pytest.raises(CertifyError, match="whole number"):
        JobSettings(n0=True)
    with pytest.raises(CertifyError, match="--alpha"):
        JobSettings(alpha="0.1")
    settings = JobSettings(n0=np.int64(3), n=1e3, alpha=np.float32(0.5), seed=np.uint64(4))
    assert (settings.n0, settings.n, settings.alpha, settings.seed) == (3, 1000, 0.5, 4)
    settings = JobSettings(n=MAX_SAMPLES, n0=0)  # the deterministic methods' bounds: the plan asks for more
    assert (settings.n0, settings.n) == (0, MAX_SAMPLES)


def _raise_in_plugin_code():
    np.broadcast_to(np.zeros(2), (3,))  # numpy raises; this module's frame is the plugin's


def test_blame_names_the_plugin_whose_code_failed(register_methods):
    class Blamed(SmoothingMethod):
        name = "blamed"
        norm = "l2"

    register_methods(Blamed, name="blamed-plugin")
    with pytest.raises(ValueError) as error:
        _raise_in_plugin_code()  # numpy raises, called from the module Blamed comes from
    assert _blame(error.value) == " in plugin blamed-plugin"


def test_blame_never_names_numpy_or_certifier():
    # no plugin comes from this module now: only numpy's and certifier's frames remain to blame
    with pytest.raises(ValueError) as error:
        _raise_in_plugin_code()
    assert _blame(error.value) == ""
    with pytest.raises(CertifyError) as error:
        certifier.space.resolve_layout([1], (4,), "sideways")
    assert _blame(error.value) == ""


@pytest.mark.parametrize("wrapped", [True, False], ids=["friendly_errors", "bare"])
def test_a_crash_in_a_plugin_command_names_the_plugin(wrapped):
    class Commands:
        __name__ = "crashing-commands"

        @hookimpl
        def register_commands(self, cli):
            def crash():
                _raise_in_plugin_code()

            cli.command(name="crash-test")(certifier.cli.friendly_errors(crash) if wrapped else crash)

    plugin = Commands()
    plugins.pm.register(plugin, name="crashing-commands")
    try:
        plugins.add_commands(cli)
        result = CliRunner().invoke(cli, ["crash-test"])
        # the plugin object's module is this test module: that is the plugin's code
        one_line_error(result, "unexpected ValueError in plugin crashing-commands")
    finally:
        plugins.pm.unregister(plugin)
        cli.commands.pop("crash-test", None)


@pytest.fixture
def fresh_cli(monkeypatch):
    """The command group as on a fresh start: plugins' commands are added again."""
    monkeypatch.setattr(CertifyGroup, "_plugin_commands_added", False)
    monkeypatch.setattr(plugins, "command_failures", {})
    yield
    for name in ("hello-test",):
        cli.commands.pop(name, None)


def test_a_plugin_whose_register_commands_raises_is_one_warning(fresh_cli):
    class Broken:
        __name__ = "broken-commands"

        @hookimpl
        def register_commands(self, cli):
            raise RuntimeError("no commands today")

    class Working:
        __name__ = "working-commands"

        @hookimpl
        def register_commands(self, cli):
            @cli.command(name="hello-test")
            def hello():
                print("hello")

    broken, working = Broken(), Working()
    plugins.pm.register(broken, name="broken-commands")
    plugins.pm.register(working, name="working-commands")
    try:
        listed = CliRunner().invoke(cli, ["plugins"])
        assert listed.exit_code == 0 and "Traceback" not in listed.output
        warnings = [line for line in listed.output.splitlines() if line.startswith("certify: warning")]
        assert warnings == ["certify: warning: plugin broken-commands failed to add its commands (RuntimeError: no "
                            "commands today); they are unavailable until it is fixed or uninstalled"]
        entry = listed.output.split("broken-commands (", 1)[1].splitlines()
        assert entry[1].strip().startswith("note: register_commands failed (RuntimeError: no commands today)")
        hello = CliRunner().invoke(cli, ["hello-test"])
        assert hello.exit_code == 0 and hello.output.strip() == "hello"
        listed_json = json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).output)
        assert [p["notes"] for p in listed_json if p["name"] == "broken-commands"][0]
    finally:
        plugins.pm.unregister(broken)
        plugins.pm.unregister(working)


def test_a_plugin_whose_register_methods_raises_is_still_listed():
    class Exploding:
        __name__ = "exploding-methods"

        @hookimpl
        def register_methods(self, register):
            raise RuntimeError("boom")

    plugins.pm.register(Exploding(), name="exploding-methods")
    try:
        listed = CliRunner().invoke(cli, ["plugins"])
        assert listed.exit_code == 0, listed.output
        assert "note: plugin exploding-methods failed in register_methods: RuntimeError: boom" in listed.output
        assert "--plugin rs:" in listed.output
        with pytest.raises(CertifyError, match="exploding-methods.*boom"):
            plugins.get_method("rs")
    finally:
        plugins.pm.unregister(name="exploding-methods")


def test_ctrl_c_while_loading_plugins_exits_130_in_one_line(fresh_cli, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(certifier.cli, "load_plugins", interrupted)
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 130
    assert result.output.strip() == "certify: interrupted"


@pytest.mark.parametrize("where", ["load", "dataset"])
def test_ctrl_c_while_starting_a_run_exits_130_in_one_line(case, monkeypatch, where):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "load":
        monkeypatch.setattr(certifier.api, "load", interrupted)
    else:
        monkeypatch.setattr(certifier.api.Run, "dataset", interrupted)
    result = certify_cli(case, "-p", "rs", "-s", "0.1")
    assert result.exit_code == 130
    assert result.output.strip() == "certify: interrupted"


def test_ctrl_c_that_interrupts_an_extension_import_exits_130(case, monkeypatch):
    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("initialization failed")  # what an interrupted C extension raises

    monkeypatch.setattr(certifier.api, "load", interrupted)
    result = certify_cli(case, "-p", "rs", "-s", "0.1")
    assert result.exit_code == 130 and result.output.strip() == "certify: interrupted"


@pytest.mark.parametrize("program, handled", [("certify", True), ("python", False)])
def test_ctrl_c_while_the_command_imports_its_libraries(program, handled):
    """The console script exits 130 in one line if Ctrl-C comes while certifier is imported;
    a program that imports certifier keeps Python's own Ctrl-C."""
    code = (
        "import os, signal, sys\n"
        f"sys.argv[0] = {program!r}\n"
        "import certifier\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "signal.pause() if hasattr(signal, 'pause') else None\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if handled:
        assert done.returncode == 130 and done.stderr.strip() == "certify: interrupted", done.stderr
    else:
        assert "KeyboardInterrupt" in done.stderr and done.returncode != 130


@pytest.mark.parametrize("gap", [0.0, 0.05])
def test_a_second_ctrl_c_while_stopping_leaves_at_once_in_one_line(tmp_path, gap):
    rng = np.random.default_rng(0)
    save(linear_model(rng.normal(size=(784, 10)), np.zeros(10), (1, 28, 28)), tmp_path / "m.onnx")
    np.savez(tmp_path / "x.npz", x=rng.random((50, 28, 28)).astype(np.float32))
    output = tmp_path / "r.jsonl"
    script = "from certifier.cli import cli; cli(prog_name='certify')"
    environment = {k: v for k, v in os.environ.items() if k != "CERTIFY_DEBUG"}
    process = subprocess.Popen(
        [sys.executable, "-c", script, "-p", "rs", "-s", "0.2", str(tmp_path / "m.onnx"), "--data",
         str(tmp_path / "x.npz"), "-n", "2000000", "--batch-size", "20000", "-q", "--output", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not output.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # batches in flight
        process.send_signal(signal.SIGINT)
        time.sleep(gap)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    # -2: the second Ctrl-C came while Python was finalizing, with its default handler back (130 in a shell)
    assert process.returncode in (130, -signal.SIGINT), stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and "terminate" not in stderr
    assert len(lines) == 1 and "certify: interrupted" in lines[0], stderr
    for line in output.read_text().splitlines():
        json.loads(line)


def _custom_handler(signum, frame):
    pass


@pytest.mark.parametrize("before, installed", [
    ("importing", ["first", "stop"]),  # the console script: a late Ctrl-C must not interrupt Python's shutdown
    ("default", ["first", "default"]),  # a program calling the command group gets its handler back
    ("custom", []),  # a program with its own Ctrl-C handling keeps it
])
def test_the_command_group_handles_ctrl_c_only_when_it_owns_it(monkeypatch, before, installed):
    handlers = {"importing": certifier._interrupted_while_importing, "default": signal.default_int_handler,
                "custom": _custom_handler, "first": certifier.cli._first_interrupt, "stop": certifier.cli._stop_now}
    monkeypatch.setattr(signal, "getsignal", lambda signum: handlers[before])
    calls = []
    monkeypatch.setattr(signal, "signal", lambda signum, handler: calls.append((signum, handler)))
    CliRunner().invoke(cli, ["plugins"])
    assert calls == [(signal.SIGINT, handlers[name]) for name in installed]


def test_ctrl_c_in_a_plugin_command_exits_130(fresh_cli):
    class Commands:
        __name__ = "slow-commands"

        @hookimpl
        def register_commands(self, cli):
            @cli.command(name="hello-test")
            def hello():
                raise KeyboardInterrupt

    plugin = Commands()
    plugins.pm.register(plugin, name="slow-commands")
    try:
        result = CliRunner().invoke(cli, ["hello-test"])
        assert result.exit_code == 130 and result.output.strip() == "certify: interrupted"
    finally:
        plugins.pm.unregister(plugin)


def test_load_plugins_warns_about_names_that_are_not_installed(monkeypatch):
    real = importlib.metadata.EntryPoint(name="real-plugin", value="json", group="certifier")
    monkeypatch.setattr(plugins, "_entry_points", lambda: [real])
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setenv("CERTIFY_LOAD_PLUGINS", "real-plugin, ghost")
    try:
        with pytest.warns(UserWarning, match="CERTIFY_LOAD_PLUGINS names ghost, which is not installed; installed "
                                             "external plugins: real-plugin"):
            plugins.load_plugins()
    finally:
        plugins.pm.unregister(name="real-plugin")


def test_the_cli_prints_that_warning_in_one_line(fresh_cli, monkeypatch):
    builtins = [e for e in plugins._entry_points() if plugins._is_builtin(e)]
    monkeypatch.setattr(plugins, "_entry_points", lambda: builtins)
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setenv("CERTIFY_LOAD_PLUGINS", "ghost")
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0
    assert "certify: warning: CERTIFY_LOAD_PLUGINS names ghost, which is not installed; installed external " \
           "plugins: none" in result.output.splitlines()


# -- item 14: the README and the code agree on integer inputs ----------------------------------


def test_readme_says_integer_models_need_no_scale_and_the_code_agrees():
    from certifier.space import InputSpace, ModelAdapter

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    pixel_space = " ".join(readme.split("**Pixel space.**", 1)[1].split("\n- ", 1)[0].split())
    assert "a model with an integer input (uint8, say) gets pixels times 255" in pixel_space
    assert "`--scale 255` for a *float* model that expects 0..255" in pixel_space
    assert ModelAdapter((4,), [4], np.uint8, InputSpace()).space.scale == 255.0
    assert ModelAdapter((4,), [4], np.float32, InputSpace()).space.scale == 1.0


def test_one_helper_for_the_first_line_of_an_error():
    from certifier.errors import first_line, one_line

    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(ValueError("")) == "ValueError" and one_line(ValueError("")) == "ValueError"
    assert one_line(OSError("x" * 400)) == "OSError: " + "x" * 300
    sources = "".join(path.read_text() for path in sorted((Path(__file__).resolve().parents[1] / "certifier").glob("*.py"))
                      if path.name != "errors.py")
    assert "splitlines()[0]" not in sources
