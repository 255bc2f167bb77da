"""Testing smoothing plugins: prove a method sound on models whose exact robust radius is known.

    from certifier.testing import assert_sound
    import certifier_laplace

    def test_laplace_is_sound():
        assert_sound("laplace", register=certifier_laplace)

:func:`check_soundness` certifies small ONNX classifiers whose smoothed classifier has a
known exact robust radius (closed forms for the randomized methods, brute force over every
input within reach for the deterministic ones; see :class:`certifier.SoundnessCheck` for
the models and SPEC's "Closed-form soundness checks"), through the public API as a user
would (:func:`certifier.load`, :meth:`certifier.Run.certify`), and counts violations:
certificates larger than the exact radius, or for the wrong class. A randomized certificate
may be wrong with probability alpha, so their rate is compared with alpha by a one-sided
binomial test; a deterministic method may have none. ``certify selftest`` is the same
check on the command line.

Also here: the model builders the checks use (:func:`hyperplane_model`, :func:`save_model`,
...), :func:`votes` for unit tests of a certificate rule, and :func:`registered` (and the
pytest fixture ``register_plugin``) to register a plugin module for a test whether or not
it is installed.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

# The check certifies through the public API, as a user would; the two internal names are the
# engine's fixed-n bound (so a rule's unit test sees the engine's numbers) and, in registered(),
# the plugin manager (registering a plugin for a test is what this module adds).
from . import Certificate, CertifyError, SmoothingMethod, SoundnessCheck, Votes, load, load_model, make_method
from .stats import clopper_pearson_lower

__all__ = [
    "assert_sound", "check_soundness", "SoundnessReport", "CheckResult", "SoundnessCheck",
    "hyperplane_model", "linear_model", "mean_model", "pixel_model", "save_model", "hyperplane_distance",
    "votes", "clopper_pearson_lower", "registered", "register_plugin", "DEFAULTS", "DEFAULT_SIGMA",
]

#: sigma for methods that need a noise level when neither --sigma nor the method's own option gives one.
DEFAULT_SIGMA = 0.25
#: Input shapes of the closed-form checks: feature vectors and images (even widths, so that
#: methods that split an image into 2x2 blocks keep every pixel).
SHAPES = ((2,), (12,), (1, 8, 8), (3, 4, 6))
#: Shapes of exhaustive checks on the 1/grid lattice (every lattice point is visited) and of cyclic shifts.
LATTICE_SHAPES = ((2,), (3,), (1, 1, 2))
SHIFT_SHAPES = ((1, 16, 16), (3, 12, 14))
#: Most views an exhaustive check computes for one input shape, and most images whose every shift it searches.
EXHAUSTIVE_BUDGET = 400_000
SHIFTED_IMAGES = 30
#: Defaults of the check; ``thorough`` multiplies inputs by 5 and samples by 4.
DEFAULTS = {"alpha": 0.1, "n0": 64, "n": 512, "inputs": 240, "level": 0.001}
PIXEL_NORMS = ("l1", "l2", "linf")
#: The norm whose unit ball's support function gives a norm's distance to a hyperplane.
DUAL = {"l2": "l2", "l1": "linf", "linf": "l1"}
#: A randomized certificate counts as too large only beyond this relative slack: the ONNX model
#: computes in float32, the exact radius in float64.
RELATIVE_SLACK = 1e-6


# -- models ------------------------------------------------------------------------------------------


def linear_model(weights, bias, input_shape: Sequence[int], *, metadata: Mapping[str, str] | None = None):
    """An ONNX classifier (opset 17) with scores flatten(x) @ weights + bias, x of ``input_shape``.

    ``weights`` is (features, classes) over x flattened in C, H, W order; ``bias`` (classes,).
    ``metadata`` becomes the model's metadata_props."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.asarray(weights, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32).reshape(-1)
    features = math.prod(int(d) for d in input_shape)
    if weights.ndim != 2 or weights.shape[0] != features or bias.shape != (weights.shape[1],):
        raise ValueError(f"weights must be ({features}, classes) and bias (classes,), got {weights.shape} and "
                         f"{bias.shape}")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "weights"], ["product"]),
         helper.make_node("Add", ["product", "bias"], ["scores"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *[int(d) for d in input_shape]])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(model)
    return model


def hyperplane_model(direction, offset: float, input_shape: Sequence[int], **settings):
    """Two classes: class 1 where direction . flatten(x) + offset > 0, else class 0."""
    direction = np.asarray(direction, dtype=np.float64).reshape(-1)
    weights = np.stack([-direction / 2, direction / 2], axis=1)
    return linear_model(weights, [-offset / 2, offset / 2], input_shape, **settings)


def mean_model(threshold: float, input_shape: Sequence[int], **settings):
    """Class 1 where the mean intensity of x is above ``threshold``."""
    size = math.prod(int(d) for d in input_shape)
    return hyperplane_model(np.full(size, 1.0 / size), -threshold, input_shape, **settings)


def pixel_model(pixel: int, threshold: float, input_shape: Sequence[int], **settings):
    """Class 1 where pixel number ``pixel`` of flatten(x) is above ``threshold``."""
    direction = np.zeros(math.prod(int(d) for d in input_shape))
    direction[pixel] = 1.0
    return hyperplane_model(direction, -threshold, input_shape, **settings)


def save_model(model, path) -> Path:
    """Write an ONNX model at an IR version onnxruntime reads; returns the path."""
    import onnx

    model.ir_version = min(model.ir_version, 8)
    onnx.save(model, str(path))
    return Path(path)


def hyperplane_distance(x, direction, offset: float, norm: str) -> np.ndarray:
    """Distance in ``norm`` (l1, l2, linf) from each row of x to the hyperplane direction . x + offset = 0:
    |direction . x + offset| / ||direction||_q, q the dual norm (L2-L2, L1-Linf, Linf-L1)."""
    direction = np.asarray(direction, dtype=np.float64).reshape(-1)
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.abs(flat @ direction + offset) / _norm(direction, DUAL[norm])


def _norm(v: np.ndarray, norm: str) -> float:
    return float({"l1": np.abs(v).sum(), "l2": np.sqrt((v * v).sum()), "linf": np.abs(v).max()}[norm])


# -- votes for unit tests of a rule ---------------------------------------------------------------


def votes(counts: Sequence[int] | None = None, **groups: Sequence[int]) -> Votes:
    """Votes as the engine hands them to ``certify`` with a fixed n (one-sided Clopper-Pearson
    bounds): ``votes([3, 97])`` for a method with one vote group, ``votes(left=[...], right=[...])``
    for named groups."""
    if counts is not None:
        if groups:
            raise TypeError("give the counts of one group, or named groups, not both")
        groups = {"model": counts}
    if not groups:
        raise TypeError("votes() needs counts")
    return Votes({name: np.asarray(c, dtype=np.int64) for name, c in groups.items()}, clopper_pearson_lower)


# -- registering a plugin for a test ----------------------------------------------------------------


@contextlib.contextmanager
def registered(*plugins) -> Iterator[None]:
    """Register plugin modules (or objects with hook implementations) for the block, and unregister
    them after. A plugin already registered, because it is installed and certify loaded it, is
    used as it is, so the same test runs before and after ``pip install``."""
    from .plugins import load_plugins, pm

    load_plugins()  # an installed copy registers under its entry-point name first
    added = []
    try:
        for plugin in plugins:
            if pm.is_registered(plugin):
                continue
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            pm.register(plugin, name=f"{name}-under-test")
            added.append(plugin)
        yield
    finally:
        for plugin in reversed(added):
            pm.unregister(plugin)


# -- the check ---------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """One check on one input shape: what was certified and how it compares with the exact radii."""

    check: str
    shape: tuple[int, ...]
    options: dict = field(default_factory=dict)
    inputs: int = 0
    certified: int = 0
    violations: int = 0
    #: violations a sound method may have: alpha * inputs (0 for deterministic methods)
    expected: float = 0.0
    #: one-sided binomial p-value of the violations against alpha (None: deterministic or not run)
    p_value: float | None = None
    #: mean certified / exact radius over correct certificates with an exact radius above 0
    tightness: float | None = None
    #: largest certified / exact radius
    worst: float | None = None
    #: "ok", "FAIL", "skipped" or "error"
    verdict: str = "ok"
    note: str = ""
    #: a few violating inputs: index, class, radius, exact radius
    examples: list = field(default_factory=list)

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["shape"] = list(self.shape)
        return out


@dataclass
class SoundnessReport:
    """What :func:`check_soundness` found: ``passed``, one :class:`CheckResult` per check and shape,
    the pooled result of the randomized ones, and ``problems`` (why it failed)."""

    plugin: str
    settings: dict
    deterministic: bool
    rows: list[CheckResult]
    total: CheckResult | None
    problems: list[str]
    level: float

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"plugin": self.plugin, "passed": self.passed, "settings": self.settings,
                "deterministic": self.deterministic, "level": self.level,
                "rows": [row.as_dict() for row in self.rows],
                "total": self.total.as_dict() if self.total else None, "problems": self.problems}

    def table(self) -> str:
        """The report for people: settings, one line per check and shape, the verdict and why."""
        settings = self.settings
        described = [f"{key} {value}" for key, value in settings.items() if key not in ("options",)]
        options = settings.get("options") or {}
        described += [f"-o {key} {value}" for key, value in options.items()]
        lines = [f"selftest of plugin {self.plugin} ({', '.join(described)})"]
        header = ("check", "shape", "inputs", "certified", "violations", "allowed", "p-value", "tightness", "verdict")
        body = [self._cells(row) for row in self.rows]
        if self.total is not None:
            body.append(self._cells(self.total))
        if body:
            widths = [max(len(str(cells[i])) for cells in [header, *body]) for i in range(len(header))]
            for cells in [header, *body]:
                lines.append("  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                                       for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
        for row in self.rows:
            if row.note:
                lines.append(f"  {row.check} {_shape(row.shape)}: {row.note}")
        if any(row.inputs for row in self.rows):
            if self.deterministic:
                lines += ["violations: certificates for the wrong class, or whose radius reaches an input where the "
                          "smoothed classifier changes (found by brute force); an exact method may have none.",
                          "tightness: mean certified / largest sound radius."]
            else:
                lines += ["violations: certificates for the wrong class or beyond the exact radius; a sound method "
                          "has them at rate alpha at most (allowed: alpha x inputs).",
                          f"p-value: P(Binomial(inputs, alpha) >= violations); a row fails below {self.level:g} / "
                          f"{self._tests()} (one test per row and the total). tightness: mean certified / exact "
                          f"radius."]
        lines.append("PASS" if self.passed else "FAIL: " + "; ".join(self.problems))
        return "\n".join(lines)

    def _tests(self) -> int:
        return sum(1 for row in self.rows if row.p_value is not None) + (self.total is not None)

    def _cells(self, row: CheckResult) -> tuple:
        if row.verdict in ("skipped", "error") and not row.inputs:
            return (row.check, _shape(row.shape), "-", "-", "-", "-", "-", "-", row.verdict)
        allowed = "0" if self.deterministic else f"{row.expected:.1f}"
        return (row.check, _shape(row.shape), row.inputs, row.certified, row.violations, allowed,
                "-" if row.p_value is None else f"{row.p_value:.3g}",
                "-" if row.tightness is None else f"{row.tightness:.3f}", row.verdict)


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) if shape else "all"


def assert_sound(plugin: str, **settings) -> SoundnessReport:
    """:func:`check_soundness`, raising AssertionError with the report's table when it fails."""
    report = check_soundness(plugin, **settings)
    if not report.passed:
        raise AssertionError("\n" + report.table())
    return report


def check_soundness(plugin: str, *, sigma: float | None = None, options: Mapping[str, Any] | None = None,
                    register=None, alpha: float | None = None, n0: int | None = None, n: int | None = None,
                    inputs: int | None = None, seed: int = 0, thorough: bool = False, level: float | None = None,
                    shapes: Sequence[Sequence[int]] | None = None) -> SoundnessReport:
    """Certify the checks smoothing method ``plugin`` declares (``soundness_checks()``) and compare
    every certificate with the exact radius of its smoothed classifier.

    ``sigma`` and ``options`` configure the method as ``--sigma`` and ``-o`` do (a method that
    needs a noise level and gets none certifies with sigma 0.25). ``register``: a plugin module
    (or a list) to register for the check when it is not registered already. ``alpha`` (0.1),
    ``n0`` (64), ``n`` (512) are the certification settings; ``inputs`` (240) is the number of
    inputs spread over the checks and shapes; ``thorough`` takes five times the inputs and four
    times the samples. A randomized row fails when the one-sided binomial test of its
    violations against alpha has a p-value below ``level`` (0.001) divided by the number of
    tests; a deterministic method fails at any violation. It also fails when no check applies,
    or when the plugin crashes or answers out of contract (the error is in the report).
    """
    modules = register if isinstance(register, (list, tuple)) else ([register] if register is not None else [])
    with registered(*modules):
        return _check(plugin, sigma=sigma, options=dict(options or {}), alpha=alpha, n0=n0, n=n, inputs=inputs,
                      seed=seed, thorough=thorough, level=level, shapes=shapes)


def _check(plugin, *, sigma, options, alpha, n0, n, inputs, seed, thorough, level, shapes) -> SoundnessReport:
    factor = (5, 4) if thorough else (1, 1)
    alpha = DEFAULTS["alpha"] if alpha is None else float(alpha)
    n0 = DEFAULTS["n0"] * factor[1] if n0 is None else int(n0)
    n = DEFAULTS["n"] * factor[1] if n is None else int(n)
    inputs = DEFAULTS["inputs"] * factor[0] if inputs is None else int(inputs)
    level = DEFAULTS["level"] if level is None else float(level)
    if not 0 < alpha < 1 or not 0 < level < 1:
        raise CertifyError(f"alpha and level must be between 0 and 1, got {alpha} and {level}")
    if n0 < 1 or n < 1 or inputs < 1:
        raise CertifyError("n0, n and the number of inputs must be at least 1")
    method, sigma = _configure(plugin, sigma, options)
    settings = {"sigma": method.sigma, "alpha": alpha, "n0": n0, "n": n, "seed": seed}
    if method.deterministic:
        settings = {"sigma": method.sigma, "seed": seed} if method.sigma is not None else {"seed": seed}
    settings["options"] = _set_options(method)
    try:
        declared = tuple(method.soundness_checks())
    except CertifyError:
        raise
    except Exception as error:
        raise CertifyError(f"plugin {plugin}: soundness_checks() failed: {type(error).__name__}: {error}") from None
    problems: list[str] = []
    if not all(isinstance(check, SoundnessCheck) for check in declared):
        raise CertifyError(f"plugin {plugin}: soundness_checks() must return certifier.SoundnessCheck objects")
    if not declared:
        problems.append(f"plugin {plugin} declares no soundness check for these settings: its soundness_checks() "
                        f"names none (a plugin says which of the kinds linear, mean, pixel, exhaustive hold for its "
                        f"views; see the plugin guide, docs/writing-a-plugin.md)")
    plans = []
    for check in declared:
        configured, conflict = _with_check_options(plugin, method, sigma, options, check)
        for shape in _shapes_for(check, configured, shapes):
            row = CheckResult(check.kind, tuple(shape), options=dict(check.options))
            if check.options:
                row.note = "with " + ", ".join(f"-o {key} {value}" for key, value in check.options.items())
            ceiling = None
            if conflict is not None:
                row.verdict, row.note = "skipped", conflict
            else:
                ceiling = _applies(row, check, configured, tuple(shape), n0=n0, n=n, alpha=alpha)
            plans.append((row, check, configured, ceiling))
    runnable = max(1, sum(1 for row, *_ in plans if row.verdict == "ok"))
    per_row = max(10, -(-inputs // runnable))
    with tempfile.TemporaryDirectory(prefix="certify-selftest-") as folder:
        for number, (row, check, configured, ceiling) in enumerate(plans):
            if row.verdict != "ok":
                continue
            rng = np.random.default_rng([seed, number])
            try:
                _run_row(row, check, configured, Path(folder) / f"check-{number}.onnx", rng, ceiling=ceiling,
                         per_row=per_row, alpha=alpha, n0=n0, n=n, seed=seed, plugin=plugin, sigma=sigma,
                         options={**options, **check.options})
            except CertifyError as error:
                row.verdict, row.note = "error", str(error)
    return _verdict(plugin, settings, method.deterministic, [row for row, *_ in plans], alpha, level, problems)


def _applies(row: CheckResult, check: SoundnessCheck, method: SmoothingMethod, shape, *, n0, n, alpha) -> float | None:
    """Whether the check can run on this shape (else the row says why), and the method's radius ceiling."""
    try:
        method.prepare(shape, {})
    except CertifyError as error:
        row.verdict, row.note = "skipped", f"the plugin does not take inputs of this shape ({error})"
        return None
    except Exception as error:
        row.verdict, row.note = "error", f"plugin {method.name} failed in prepare(): {type(error).__name__}: {error}"
        return None
    try:
        others = [group for group in method.groups if method.group_model(group) is not None]
    except Exception as error:
        row.verdict, row.note = "error", f"plugin {method.name} failed in group_model(): {type(error).__name__}: {error}"
        return None
    if others:
        row.verdict = "skipped"
        row.note = (f"an option names another model for vote group {others[0]}; the check's model must read every "
                    f"group: drop that option")
        return None
    if check.kind == "exhaustive":
        return None
    try:
        if method.deterministic:
            raise CertifyError(f"plugin {method.name} is deterministic: its checks are exhaustive, not {check.kind}")
        ceiling = _ceiling(method, n0, n, alpha, None)
    except CertifyError as error:
        row.verdict, row.note = "error", str(error)
        return None
    diameter = _diameter(method, shape)
    if diameter is not None and ceiling > diameter:
        row.verdict = "skipped"
        row.note = (f"its radius ceiling {ceiling:.3g} is beyond this shape's diameter {diameter:.3g}; lower sigma "
                    f"to check it")
    return ceiling


def _set_options(method: SmoothingMethod) -> dict:
    """The method's options that are not at their defaults, as -o names."""
    values = method.options.model_dump(mode="json")
    fields = type(method.options).model_fields
    return {name.replace("_", "-"): value for name, value in values.items()
            if name not in fields or fields[name].is_required()
            or value != fields[name].get_default(call_default_factory=True)}


def _configure(plugin: str, sigma: float | None, options: dict) -> tuple[SmoothingMethod, float | None]:
    """The method as the user configured it; one that needs a noise level and got none gets DEFAULT_SIGMA."""
    try:
        return make_method(plugin, sigma, options, {}), sigma
    except CertifyError:
        if sigma is not None:
            raise
        try:
            return make_method(plugin, DEFAULT_SIGMA, options, {}), DEFAULT_SIGMA
        except CertifyError:
            pass
        raise


def _with_check_options(plugin, method, sigma, options, check) -> tuple[SmoothingMethod, str | None]:
    """The method with the options the check needs; a conflict with an option the user gave says why it is skipped."""
    if not check.options:
        return method, None
    try:
        configured = make_method(plugin, sigma, {**options, **check.options}, {})
    except CertifyError as error:
        return method, f"the check's options do not apply: {error}"
    given = {key.replace("-", "_") for key in options}
    mine, theirs = method.options.model_dump(), configured.options.model_dump()
    clashes = [key for key in check.options if key.replace("-", "_") in given
               and mine.get(key.replace("-", "_")) != theirs.get(key.replace("-", "_"))]
    if clashes:
        needed = ", ".join(f"-o {key} {check.options[key]}" for key in clashes)
        return configured, f"this check runs with {needed}, and -o gave another value"
    return configured, None


def _shapes_for(check: SoundnessCheck, method: SmoothingMethod, shapes) -> list[tuple[int, ...]]:
    if shapes is not None:
        return [tuple(int(d) for d in s) for s in shapes]
    if check.kind != "exhaustive":
        return list(SHAPES)
    return list(SHIFT_SHAPES if _threat_name(method) == "cyclic-shift" else LATTICE_SHAPES)


def _threat_name(method: SmoothingMethod) -> str:
    threat = getattr(method, "threat_model", None)
    return threat.name if threat is not None else method.norm


def _diameter(method: SmoothingMethod, shape) -> float | None:
    threat = getattr(method, "threat_model", None)
    if threat is not None:
        return threat.diameter(shape)
    size = math.prod(shape)
    return {"l1": float(size), "l2": math.sqrt(size), "linf": 1.0}[method.norm]


def _ceiling(method: SmoothingMethod, n0: int, n: int, alpha: float, views: int | None) -> float:
    """The method's radius when every vote goes to one class: no certificate can be larger."""
    def unanimous(count):
        return Votes({group: np.array([count, 0]) for group in method.groups}, clopper_pearson_lower)

    try:
        if method.deterministic:
            answer = method.certify(None, unanimous(views), alpha)
        else:
            answer = method.certify(unanimous(n0), unanimous(n), alpha)
    except CertifyError:
        raise
    except Exception as error:
        raise CertifyError(f"plugin {method.name} failed in certify(): {type(error).__name__}: {error}") from None
    if not isinstance(answer, Certificate):
        raise CertifyError(f"plugin {method.name}: certify() must return a certifier.Certificate, not "
                           f"{type(answer).__name__}")
    try:
        radius = float(answer.radius)
    except (TypeError, ValueError):
        radius = math.nan
    if not (math.isfinite(radius) and radius >= 0):
        raise CertifyError(f"plugin {method.name}: certify() gives radius {answer.radius!r} when every vote agrees; "
                           f"a radius is a finite number >= 0")
    return radius if answer.prediction is not None else 0.0


# -- one row: build the model and inputs, certify, compare -------------------------------------------


@dataclass
class _Case:
    model: Any
    inputs: np.ndarray
    classes: np.ndarray
    #: the exact radius (closed forms), or the largest distance of an input that keeps the class (brute force)
    exact: np.ndarray
    #: brute force: the smallest distance at which the smoothed classifier changes (violation: radius >= it)
    reach: np.ndarray | None = None
    #: the model's offset b (closed forms), for a mean model rebuilt on the views' shape
    offset: float = 0.0


def _run_row(row: CheckResult, check: SoundnessCheck, method: SmoothingMethod, path: Path, rng: np.random.Generator,
             *, ceiling, per_row, alpha, n0, n, seed, plugin, sigma, options) -> None:
    shape = row.shape
    if check.kind == "exhaustive":
        case = _exhaustive_case(check, method, shape, path, rng, per_row, row)
    else:
        case = _closed_form_case(check, method, shape, rng, per_row, ceiling, row)
    if case is None:
        return
    save_model(case.model, path)
    run = load(path, plugin=plugin, sigma=sigma, options=options, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run.certify(case.inputs, n0=n0, n=n, alpha=alpha, seed=seed)
    _score(row, results, case, method.deterministic, alpha)


def _score(row: CheckResult, results, case: _Case, deterministic: bool, alpha: float) -> None:
    from scipy import stats

    row.inputs = len(results)
    ratios = []
    for result in results:
        if result.prediction is None:
            continue
        row.certified += 1
        i = result.index
        wrong = result.prediction != case.classes[i]
        if case.reach is not None:
            beyond = result.radius >= case.reach[i] * (1 - 1e-9)
        else:
            beyond = result.radius > case.exact[i] * (1 + RELATIVE_SLACK) + 1e-12
        if wrong or beyond:
            row.violations += 1
            if len(row.examples) < 3:
                row.examples.append({"input": i, "class": int(case.classes[i]), "prediction": result.prediction,
                                     "radius": result.radius, "exact": float(case.exact[i])})
        elif case.exact[i] > 0:
            ratios.append(result.radius / case.exact[i])
    if ratios:
        row.tightness, row.worst = float(np.mean(ratios)), float(np.max(ratios))
    if deterministic:
        row.expected = 0.0
        row.verdict = "FAIL" if row.violations else "ok"
    else:
        row.expected = alpha * row.inputs
        row.p_value = float(stats.binom.sf(row.violations - 1, row.inputs, alpha)) if row.inputs else 1.0


def _verdict(plugin, settings, deterministic, rows, alpha, level, problems) -> SoundnessReport:
    from scipy import stats

    ran = [row for row in rows if row.verdict not in ("skipped", "error")]
    for row in rows:
        if row.verdict == "error":
            problems.append(f"{row.check} {_shape(row.shape)}: {row.note}")
    if not ran and not problems:
        skipped = "; ".join(f"{row.check} {_shape(row.shape)}: {row.note}" for row in rows)
        problems.append(f"no check could run ({skipped})")
    total = None
    if not deterministic and ran:
        total = CheckResult("all", (), inputs=sum(r.inputs for r in ran), certified=sum(r.certified for r in ran),
                            violations=sum(r.violations for r in ran))
        total.expected = alpha * total.inputs
        total.p_value = float(stats.binom.sf(total.violations - 1, total.inputs, alpha)) if total.inputs else 1.0
        weights = [(r.tightness, r.certified) for r in ran if r.tightness is not None]
        if weights:
            total.tightness = float(sum(t * c for t, c in weights) / sum(c for _, c in weights))
        tests = len(ran) + 1
        for row in [*ran, total]:
            row.verdict = "FAIL" if row.p_value < level / tests else "ok"
            if row.verdict == "FAIL":
                problems.append(f"{row.check} {_shape(row.shape)}: {row.violations} violations in {row.inputs} "
                                f"inputs at alpha {alpha:g} (p-value {row.p_value:.3g})")
        total.verdict = "PASS" if not problems else "FAIL"
    elif deterministic:
        for row in ran:
            if row.violations:
                problems.append(f"{row.check} {_shape(row.shape)}: {row.violations} violations in {row.inputs} "
                                f"inputs of an exact method")
    return SoundnessReport(plugin, settings, deterministic, rows, total, problems, level)


# -- closed forms ------------------------------------------------------------------------------------


def _closed_form_case(check, method, shape, rng, count, ceiling, row) -> _Case | None:
    threat = _threat_name(method)
    views = {tuple(method.view_shape(shape, group)) for group in method.groups}
    if len(views) != 1:
        row.verdict, row.note = "skipped", "the vote groups' views have different shapes"
        return None
    (view_shape,) = views
    if check.kind != "mean" and view_shape != tuple(shape):
        row.verdict, row.note = "skipped", f"views of shape {_shape(view_shape)} are not the input's shape"
        return None
    if check.boundary is not None and check.boundary != check.threshold and threat not in PIXEL_NORMS:
        row.verdict, row.note = "skipped", "a pixel boundary other than the threshold is known for pixel norms only"
        return None
    size = math.prod(shape)
    if threat in PIXEL_NORMS or threat == "brightness":
        case = _shifted_case(check, threat, shape, size, rng, count, ceiling)
    elif threat == "contrast" and check.kind in ("linear", "mean", "pixel"):
        case = _scaled_case(check, shape, size, rng, count, ceiling)
    elif threat == "gamma" and check.kind == "pixel":
        case = _gamma_case(check, shape, size, rng, count, ceiling)
    else:
        row.verdict = "skipped"
        row.note = f"no closed form for a {check.kind} check under threat model {threat}"
        return None
    if case is None or not len(case.inputs):
        row.verdict, row.note = "skipped", "no input of this shape has its nearest boundary point in [0, 1]"
        return None
    if check.kind == "mean" and view_shape != tuple(shape):
        size = math.prod(view_shape)
        case.model = hyperplane_model(np.full(size, 1.0 / size), case.offset, view_shape)
    return case


def _direction(check, size, rng, *, positive=False) -> tuple[np.ndarray, float]:
    """The model's direction w and the threshold of a pixel or mean check (None: b comes from a point)."""
    if check.kind == "mean":
        return np.full(size, 1.0 / size), float(rng.uniform(0.3, 0.7))
    if check.kind == "pixel":
        w = np.zeros(size)
        w[rng.integers(size)] = 1.0
        threshold = check.threshold if check.threshold is not None else float(rng.uniform(0.25, 0.75))
        return w, threshold
    w = rng.normal(size=size)
    if positive:
        w = np.abs(w) + 0.1
    return w.astype(np.float32).astype(np.float64), None


def _radii(rng, count, ceiling, largest) -> np.ndarray:
    top = min(0.9 * ceiling, largest)
    return rng.uniform(0.02 * top, top, count)


def _shifted_case(check, threat, shape, size, rng, count, ceiling) -> _Case | None:
    """Threat models where an attack adds a vector: pixel norms (any direction of the norm's unit
    ball) and brightness (b times all ones). x = x0 + s r u with x0 on the boundary and u the
    direction that reaches it fastest, so x is at exact radius r."""
    w, threshold = _direction(check, size, rng, positive=threat == "brightness")  # sum(w) > 0 for brightness
    if threat == "brightness":
        u = np.ones(size)
    elif threat == "l2":
        u = w / np.linalg.norm(w)
    elif threat == "l1":
        top = np.abs(w) == np.abs(w).max()
        u = np.sign(w) * top / top.sum()
    else:
        u = np.sign(w)
    speed = float(w @ u)  # w . u: the dual norm of w (|sum w| for brightness)
    if threshold is not None:
        model_offset = -threshold
        boundary = check.boundary if check.kind == "pixel" and check.boundary is not None else threshold
        offset = -boundary
    else:
        center = rng.uniform(0.35, 0.65, size)
        model_offset = offset = float(np.float32(-(w @ center)))
    candidates = 400 * count
    y = _spread_points(rng, candidates, shape)
    x0 = y - ((y @ w + offset) / speed)[:, None] * u
    r = _radii(rng, candidates, ceiling, 1.0)
    sign = rng.choice([-1.0, 1.0], candidates)
    x = (x0 + (sign * r)[:, None] * u).astype(np.float32)
    inside = (x >= 0).all(1) & (x <= 1).all(1)
    if threat != "brightness":  # the nearest point of the boundary must be an input too (brightness is not clipped)
        inside &= (x0 >= 0).all(1) & (x0 <= 1).all(1)
    x = x[inside][:count]
    if not len(x):
        return None
    signed = (x.astype(np.float64) @ w + offset) / speed
    return _Case(hyperplane_model(w, model_offset, shape), x.reshape(len(x), *shape), (signed > 0).astype(int),
                 np.abs(signed), offset=model_offset)


def _spread_points(rng, count, shape) -> np.ndarray:
    """Points of [0, 1]^d, some spread over the whole cube, some near its centre (where a shift of every
    pixel stays inside); half the images carry a checkerboard, so that neighbouring pixels differ."""
    size = math.prod(shape)
    spread = rng.uniform(0.1, 1.0, (count, 1))
    points = 0.5 + (rng.uniform(0, 1, (count, size)) - 0.5) * spread
    if len(shape) == 3:
        rows, columns = np.indices(shape[1:])
        board = np.broadcast_to((-1.0) ** (rows + columns), shape).reshape(-1)
        amplitude = rng.uniform(-0.3, 0.3, (count, 1)) * (rng.random((count, 1)) < 0.5)
        points = np.clip(points + amplitude * board, 0, 1)
    return points


def _scaled_case(check, shape, size, rng, count, ceiling) -> _Case | None:
    """Contrast, e^c x: with w >= 0 and b < 0 the class is 1 while c > log(-b / w.x), so the exact radius is
    |log(w.x / -b)|: x = e^(s r) x0 with w.x0 = -b."""
    w, threshold = _direction(check, size, rng, positive=True)
    if threshold is None:
        threshold = float(np.float32(w @ rng.uniform(0.35, 0.65, size)))
    candidates = 200 * count
    y = rng.uniform(0.05, 1, (candidates, size))
    x0 = y * (threshold / (y @ w))[:, None]
    r = _radii(rng, candidates, ceiling, 3.0)
    sign = rng.choice([-1.0, 1.0], candidates)
    x = (x0 * np.exp(sign * r)[:, None]).astype(np.float32)
    x = x[((x > 0).all(1) & (x <= 1).all(1))][:count]
    if not len(x):
        return None
    signed = np.log((x.astype(np.float64) @ w) / threshold)
    return _Case(hyperplane_model(w, -threshold, shape), x.reshape(len(x), *shape), (signed > 0).astype(int),
                 np.abs(signed), offset=-threshold)


def _gamma_case(check, shape, size, rng, count, ceiling) -> _Case | None:
    """Gamma, x^(e^t), on one pixel: [x_k > tau] holds while t < log(log tau / log x_k), so the exact
    radius is |log(log tau / log x_k)|: x_k = tau^(e^(-s r))."""
    w, threshold = _direction(check, size, rng)
    k = int(np.argmax(w))
    x = rng.uniform(0.05, 0.95, (count, size))
    r = _radii(rng, count, ceiling, 3.0)
    sign = rng.choice([-1.0, 1.0], count)
    x[:, k] = threshold ** np.exp(-sign * r)
    x = x.astype(np.float32)
    x = x[(x[:, k] > 0) & (x[:, k] < 1)]
    signed = np.log(np.log(threshold) / np.log(x[:, k].astype(np.float64)))
    return _Case(hyperplane_model(w, -threshold, shape), x.reshape(len(x), *shape), (signed > 0).astype(int),
                 np.abs(signed))


# -- brute force ---------------------------------------------------------------------------------------


def _exhaustive_case(check, method, shape, path, rng, count, row) -> _Case | None:
    threat = _threat_name(method)
    if not method.deterministic:
        raise CertifyError(f"plugin {method.name} is randomized: exhaustive checks are for deterministic methods")
    if len(method.groups) != 1 or tuple(method.view_shape(shape, method.groups[0])) != tuple(shape):
        row.verdict, row.note = "skipped", "exhaustive checks take one vote group with views of the input's shape"
        return None
    views = int(method.num_views(shape))
    metadata = method.training_metadata(tuple(shape))
    if threat == "cyclic-shift":
        return _shift_case(method, shape, views, path, metadata, rng, count)
    if threat not in PIXEL_NORMS:
        row.verdict, row.note = "skipped", f"no exhaustive search for threat model {threat}"
        return None
    if check.grid is None:
        raise CertifyError(f"plugin {method.name}: an exhaustive check in a pixel norm needs grid (1/grid steps)")
    size = math.prod(shape)
    points = (check.grid + 1) ** size
    if points * views > EXHAUSTIVE_BUDGET:
        row.verdict = "skipped"
        row.note = f"{points} lattice points x {views} views is beyond the {EXHAUSTIVE_BUDGET} views searched"
        return None
    # one pixel leads (a method whose views move one vote per step is then as tight as it can be), the
    # others weigh a little, so the boundary is a tilted hyperplane
    direction = rng.normal(scale=0.3, size=size)
    direction[rng.integers(size)] = rng.choice([-1.0, 1.0])
    offset = -float(direction @ rng.uniform(0.3, 0.7, size))
    model = hyperplane_model(direction, offset, shape, metadata=metadata)
    save_model(model, path)
    classifier = load_model(path, device="cpu")
    levels = np.stack(np.meshgrid(*[np.arange(check.grid + 1)] * size, indexing="ij"), -1).reshape(-1, size)
    lattice = (levels / check.grid).astype(np.float32)
    smoothed = _smoothed(method, lattice.reshape(-1, *shape), views, classifier)
    chosen = rng.choice(len(lattice), size=min(count, len(lattice)), replace=False)
    steps = (levels[chosen][:, None, :] - levels[None, :, :]).astype(np.float64)
    distance = {"l1": np.abs(steps).sum(-1), "l2": np.sqrt((steps**2).sum(-1)),
                "linf": np.abs(steps).max(-1)}[threat] / check.grid
    exact, reach = _reach(distance, smoothed[None, :] != smoothed[chosen][:, None])
    return _Case(model, lattice[chosen].reshape(-1, *shape), smoothed[chosen], exact, reach)


def _waves(rng, count: int, shape, frequency: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """cos(2 pi (f . p) / side + phase) over the pixels p of an image, one per phase: stripes across the torus."""
    height, width = shape[-2:]
    rows, columns = np.meshgrid(np.arange(height) / height, np.arange(width) / width, indexing="ij")
    angle = 2 * np.pi * (frequency[0] * rows + frequency[1] * columns)
    return np.cos(angle[None] + phases.reshape(count, 1, 1))


def _shift_case(method, shape, views, path, metadata, rng, count) -> _Case:
    """Cyclic shifts: every shift of each image, each classified by the majority over all its views.

    Images and class weights are waves of one frequency, so the class of a shifted image changes in
    stripes across the torus, as a worst case of the vote counting needs; a little noise breaks ties."""
    channels, height, width = shape
    frequency = np.array([[1, 0], [0, 1], [1, 1]][rng.integers(3)])
    weights = _waves(rng, 2, shape, frequency, np.array([0.0, np.pi]) + rng.uniform(0, 0.5))
    weights = np.broadcast_to(weights[:, None], (2, channels, height, width)).reshape(2, -1).T
    model = linear_model(weights, np.zeros(2), shape, metadata=metadata)
    save_model(model, path)
    classifier = load_model(path, device="cpu")
    count = max(1, min(count, max(SHIFTED_IMAGES, count // 4), EXHAUSTIVE_BUDGET * 4 // (height * width * views)))
    images = 0.5 + 0.3 * _waves(rng, count, shape, frequency, rng.uniform(0, 2 * np.pi, count))[:, None]
    images = np.clip(images + rng.normal(scale=0.05, size=(count, *shape)), 0, 1).astype(np.float32)
    ty, tx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    ty, tx = ty.reshape(-1), tx.reshape(-1)
    distance = np.maximum(np.minimum(ty, height - ty), np.minimum(tx, width - tx)).astype(np.float64)
    classes, exact, reach = [], [], []
    for image in images:
        shifted = np.stack([np.roll(image, (a, b), axis=(-2, -1)) for a, b in zip(ty, tx)])
        smoothed = _smoothed(method, shifted, views, classifier)
        # the image itself is shift (0, 0), the first
        e, r = _reach(distance[None, :], (smoothed != smoothed[0])[None, :])
        classes.append(smoothed[0])
        exact.append(e[0])
        reach.append(r[0])
    return _Case(model, images, np.array(classes), np.array(exact), np.array(reach))


def _smoothed(method, inputs: np.ndarray, views: int, classifier) -> np.ndarray:
    """The deterministic smoothed classifier on each input: the majority over all its views, ties to the
    lower class index."""
    group = method.groups[0]
    inputs = method.check_inputs(inputs)
    classes = None
    out = np.empty(len(inputs), dtype=np.int64)
    chunk = max(1, 20_000 // views)
    for start in range(0, len(inputs), chunk):
        part = inputs[start:start + chunk]
        rows = np.repeat(part, views, axis=0)
        index = np.tile(np.arange(views), len(part))
        labels = classifier.labels(np.asarray(method.views(rows, index, group), dtype=np.float32))
        classes = max(classes or 0, int(labels.max()) + 1, 3)
        counts = np.zeros((len(part), classes), dtype=np.int64)
        np.add.at(counts, (np.repeat(np.arange(len(part)), views), labels), 1)
        out[start:start + len(part)] = counts.argmax(axis=1)
    return out


def _reach(distance: np.ndarray, changed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each input (row): the smallest distance at which the smoothed classifier changes (inf: nowhere),
    and the largest distance of a perturbation below it (the exact radius a certificate may reach)."""
    reach = np.where(changed, distance, np.inf).min(axis=1)
    exact = np.where(distance < reach[:, None], distance, -np.inf).max(axis=1)
    return exact, reach


# -- a pytest fixture, when pytest is there ------------------------------------------------------------

try:
    import pytest as _pytest
except ImportError:  # the kit works without pytest; only the fixture needs it
    _pytest = None

if _pytest is not None:
    @_pytest.fixture
    def register_plugin() -> Iterable:
        """Register plugin modules for one test, installed or not: ``register_plugin(certifier_laplace)``.
        Use it with ``from certifier.testing import register_plugin`` in a test module or conftest.py."""
        stack = contextlib.ExitStack()

        def register(*plugins):
            stack.enter_context(registered(*plugins))

        with stack:
            yield register
else:  # pragma: no cover
    def register_plugin(*args, **kwargs):
        raise RuntimeError("the register_plugin fixture needs pytest")
