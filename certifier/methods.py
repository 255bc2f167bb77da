"""What a smoothing method is: the base class every plugin subclasses."""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict

from .errors import CertifyError
from .stats import binomial_pvalue, gaussian_quantile
from .threats import STANDARD, ThreatModel

#: Views are float32: a larger sigma cannot even be stored in them.
MAX_SIGMA = float(np.finfo(np.float32).max)
#: Signature of a one-sided lower confidence bound: (successes, trials, alpha) -> bound.
LowerBound = Callable[[int, int, float], float]


class Options(BaseModel):
    """Base for a method's ``-o NAME VALUE`` options (a pydantic model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Certificate:
    """The answer for one input.

    ``prediction`` is None when the method abstains (then ``radius`` is 0).
    ``exact`` is True when the certificate holds with probability 1.
    ``conditional`` names an unverified assumption the radius depends on.
    ``details`` holds what the rule used (bounds, counts), for the results file.
    """

    prediction: int | None
    radius: float
    exact: bool = False
    conditional: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def abstain(cls, **details: Any) -> "Certificate":
        return cls(prediction=None, radius=0.0, details=details)


#: The models of :class:`SoundnessCheck`, each a classifier whose smoothed classifier's exact robust
#: radius ``certify selftest`` knows (see its ``kind``).
CHECK_KINDS = ("linear", "mean", "pixel", "exhaustive")


@dataclass(frozen=True)
class SoundnessCheck:
    """A model on which ``certify selftest`` (and :mod:`certifier.testing`) can compare a method's
    radii with the exact robust radius of its smoothed classifier. A method lists the checks that
    hold for its views in :meth:`SmoothingMethod.soundness_checks`.

    ``kind`` is the model:

    - ``"linear"``: two classes split by a hyperplane w.x + b = 0 (random w). Its smoothed
      classifier keeps the hyperplane when the views are x plus noise symmetric about 0 and
      independent of x (Gaussian, Laplace, uniform), or x shifted as a whole (brightness) or
      scaled (contrast);
    - ``"mean"``: the mean intensity, [mean(x) > t]: also kept by transforms that keep the
      mean of a noisy view (averaging over a partition, as pprs does);
    - ``"pixel"``: one pixel, [x_k > threshold], whose smoothed classifier switches at
      x_k = ``boundary`` (default: the threshold; ``threshold`` None: random);
    - ``"exhaustive"``: deterministic methods, by brute force: the smoothed classifier is
      computed from every view of every input within reach on tiny inputs (on the 1/``grid``
      lattice for pixel norms), so the exact radius is known without a closed form.

    ``options`` are the option values the check certifies with (those it needs; the user's
    others apply). ``reason`` says in a few words why the check holds, for people.
    """

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    boundary: float | None = None
    grid: int | None = None
    reason: str = ""

    def __post_init__(self):
        if self.kind not in CHECK_KINDS:
            raise ValueError(f"unknown soundness check {self.kind!r}; the kinds: {', '.join(CHECK_KINDS)}")
        for name in ("threshold", "boundary"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise ValueError(f"a pixel check's {name} must be in (0, 1), got {value!r}")
        if (self.threshold is not None or self.boundary is not None) and self.kind != "pixel":
            raise ValueError("threshold and boundary belong to pixel checks")
        if self.grid is not None and (self.kind != "exhaustive" or isinstance(self.grid, bool)
                                      or not isinstance(self.grid, int) or self.grid < 1):
            raise ValueError(f"grid is a whole number of levels for exhaustive checks, got {self.grid!r}")
        object.__setattr__(self, "options", dict(self.options))


class Votes:
    """Vote counts of one sampling phase, per vote group.

    ``lower_bound`` is supplied by the engine and is valid for the way these votes
    were sampled (a fixed-n Clopper-Pearson bound today); certificate rules call it
    instead of computing bounds themselves, so a sequential sampling rule can swap
    in an anytime-valid bound without changing any plugin.
    """

    def __init__(self, counts: Mapping[str, np.ndarray], lower_bound: LowerBound):
        self.counts = {group: np.asarray(c, dtype=np.int64) for group, c in counts.items()}
        self._lower_bound = lower_bound

    def __getitem__(self, group: str) -> np.ndarray:
        return self.counts[group]

    def trials(self, group: str) -> int:
        return int(self.counts[group].sum())

    def total(self) -> np.ndarray:
        """Counts summed over all groups."""
        width = max(len(c) for c in self.counts.values())
        summed = np.zeros(width, dtype=np.int64)
        for c in self.counts.values():
            summed[: len(c)] += c
        return summed

    def count(self, group: str, label: int) -> int:
        c = self.counts[group]
        return int(c[label]) if label < len(c) else 0

    def top(self) -> int:
        """Class with the most summed votes; ties go to the lowest class index."""
        return int(np.argmax(self.total()))

    def lower_bound(self, group: str, label: int, alpha: float) -> float:
        """Lower confidence bound on P(view of this group is classified as label)."""
        return self._lower_bound(self.count(group, label), self.trials(group), alpha)

    def upper_bound(self, group: str, labels: int | Iterable[int], alpha: float) -> float:
        """Upper confidence bound on P(view of this group is classified as one of ``labels``).

        One minus the lower bound on the other classes' votes: the same bound (Clopper-Pearson
        for fixed n), so it holds wherever ``lower_bound`` does.
        """
        chosen = {int(labels)} if isinstance(labels, (int, np.integer)) else {int(c) for c in labels}
        counts = self.counts[group]
        inside = int(sum(int(counts[c]) for c in chosen if 0 <= c < len(counts)))
        trials = self.trials(group)
        # 1 - x rounds to nearest: one ulp up keeps the bound on the safe side
        return min(math.nextafter(1.0 - self._lower_bound(trials - inside, trials, alpha), 2.0), 1.0)


def is_broadcast(x: np.ndarray) -> bool:
    """Whether the batch ``x`` is one input repeated without copies, as the engine hands it to
    ``sample`` and ``views``: work that depends only on the input can then be done on ``x[:1]``."""
    return x.ndim > 0 and len(x) > 1 and x.strides[0] == 0


def lower_bound_certificate(selection: Votes, estimation: Votes, alpha: float, radius: Callable[[float], float], *,
                            conditional: str | None = None) -> Certificate:
    """The rule of most randomized methods with one vote group: the top class of the selection
    votes, a lower bound p on its probability from the fresh estimation votes, abstain unless
    p > 1/2 (at 1/2 a tie is not excluded), else ``radius(p)``."""
    if len(estimation.counts) != 1:
        raise CertifyError(f"lower_bound_certificate takes the votes of one vote group, got groups "
                           f"{', '.join(estimation.counts)}")
    (group,) = estimation.counts
    top = selection.top()
    p_lower = estimation.lower_bound(group, top, alpha)
    details = {"p_lower": p_lower, "top_votes": estimation.count(group, top)}
    if not p_lower > 0.5:
        return Certificate.abstain(**details)
    return Certificate(top, radius(p_lower), conditional=conditional, details=details)


def gaussian_certificate(selection: Votes, estimation: Votes, alpha: float, sigma: float, *,
                         scale: float = 1.0, conditional: str | None = None) -> Certificate:
    """Cohen et al.'s CERTIFY for a method whose views are a fixed function of x + N(0, sigma^2 I):
    :func:`lower_bound_certificate` with the L2 radius ``sigma * Phi^-1(p_lower) * scale``."""
    return lower_bound_certificate(selection, estimation, alpha, lambda p: sigma * gaussian_quantile(p) * scale,
                                   conditional=conditional)


def two_bound_gaussian_certificate(selection: Votes, estimation: Votes, alpha: float, sigma: float, *,
                                   group: str = "model", top_share: float = 0.5, runner_ups: int = 10,
                                   classes: int | None = None) -> Certificate:
    """Cohen et al.'s radius with both bounds: sigma / 2 (Phi^-1(pA_lower) - Phi^-1(pB_upper)).

    A is the top class of the selection votes. The other classes are split, on the
    selection votes alone, into the (at most ``runner_ups``) classes selection saw, each
    bounded on its own, and the rest, bounded together as P(f in rest). On the fresh
    estimation votes, with alpha split by Bonferroni:

    - pA_lower: lower bound on P(f = A) at top_share * alpha;
    - u_1, ..., u_m, u_rest: upper bounds, each at (1 - top_share) * alpha / (number of
      these bounds); no bound for the rest when ``classes`` says it is empty;
    - pB_upper = min(max(u_1, ..., u_m, u_rest), 1 - pA_lower).

    Why it holds. Selection and estimation votes are independent, so the classes and
    groups are fixed given the selection, and each bound holds with its own
    probability; by the union bound all hold at once with probability >= 1 - alpha.
    Then every class c other than A has P(f = c) <= pB_upper: a class selection saw
    through its own bound, any other through P(f = c) <= P(f in rest) <= u_rest (a class
    the votes never showed is covered here, never skipped), and every c through
    P(f = c) <= 1 - P(f = A) <= 1 - pA_lower. Cohen et al.'s Theorem 1 with
    pA_lower > pB_upper >= max over c != A of P(f = c) gives g(x + delta) = A for every
    ||delta||_2 below the radius. The bounds are the votes' own (Clopper-Pearson on
    fixed-n votes, anytime-valid on a sequential plan's), so the rule holds under
    either plan. The 1 - pA_lower term makes the radius at least
    sigma * Phi^-1(pA_lower): never worse than the one-bound radius at top_share * alpha.
    """
    if not 0 < top_share < 1:
        raise ValueError("top_share must be in (0, 1)")
    seen = selection[group]
    top = selection.top()
    order = [int(c) for c in np.argsort(-seen, kind="stable") if c != top and seen[c] > 0]
    named = order[: max(int(runner_ups), 0)]
    width = max(len(estimation[group]), len(seen), top + 1, classes or 0)
    rest = [c for c in range(width) if c != top and c not in named]
    # an unknown class count means classes past ``width`` may exist: they never voted,
    # so P(f in rest) counts the same votes, and the rest always gets a bound
    bound_rest = bool(rest) if classes is not None else True
    bounds = len(named) + int(bound_rest)
    if bounds == 0:
        raise ValueError("the two-bound radius needs at least two classes")
    alpha_top = top_share * alpha
    alpha_other = (1 - top_share) * alpha / bounds
    p_lower = estimation.lower_bound(group, top, alpha_top)
    uppers = [estimation.upper_bound(group, c, alpha_other) for c in named]
    if bound_rest:
        uppers.append(estimation.upper_bound(group, rest if rest else [width], alpha_other))
    p_upper = min(max(uppers), 1.0 - p_lower)
    runner_up = named[0] if named else None
    details = {"p_lower": p_lower, "p_upper_others": p_upper, "runner_up": runner_up,
               "top_votes": estimation.count(group, top), "other_bounds": bounds}
    if not p_lower > p_upper:
        return Certificate.abstain(**details)
    radius = 0.5 * sigma * (gaussian_quantile(p_lower) - gaussian_quantile(p_upper))
    return Certificate(top, max(radius, 0.0), details=details)


class SmoothingMethod:
    """A smoothing method: the views the model sees and the certificate rule.

    Subclass it, set the class attributes, implement ``sample`` (or, for a
    deterministic method, ``num_views`` and ``views``) and ``certify``, and
    register the class from the ``register_methods`` hook.

    Inputs arrive in pixel space ``[0, 1]`` as float32 arrays of shape
    ``(batch, *input_shape)`` where ``input_shape`` is ``(C, H, W)`` for images
    and ``(D,)`` for feature vectors. Views are returned the same way, in pixel
    space; the engine maps them to what the model expects.
    """

    #: Name used with ``--plugin``.
    name: ClassVar[str]
    #: The norm the radius is stated in: "l2", "l1" or "linf"; a method with a ``threat_model``
    #: may leave it out (it is then the threat model's name).
    norm: ClassVar[str]
    #: What the radius bounds, in which units, and how it is shown (a :class:`certifier.ThreatModel`);
    #: None: the distance in pixel space of ``norm``.
    threat_model: ClassVar[ThreatModel | None] = None
    #: One line for ``certify plugins``.
    description: ClassVar[str] = ""
    #: Vote groups; each group's views go to its own model (the main model by default).
    groups: ClassVar[tuple[str, ...]] = ("model",)
    #: True when the method enumerates a finite set of views instead of drawing them.
    deterministic: ClassVar[bool] = False
    #: Whether the method reads ``--sigma``.
    uses_sigma: ClassVar[bool] = True
    #: Whether ``--denoiser`` may clean the views: a method whose views are Gaussian-noisy
    #: images says True. False (the default) refuses a denoiser: a plugin opts in, so a method
    #: whose views are something else (uniform noise, shifts, none) never gets one by accident.
    denoisable: ClassVar[bool] = False
    #: Whether every view is the input plus noise drawn independently of it (views of the input's
    #: shape, ``sample(zeros)`` being the noise alone). Training losses that attack the input
    #: through the noise (``certify train --loss smoothadv``) need it; False (the default) refuses them.
    additive_noise: ClassVar[bool] = False

    class Options(Options):
        pass

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        threat = cls.__dict__.get("threat_model")
        if isinstance(threat, ThreatModel) and "norm" not in cls.__dict__:
            cls.norm = threat.name

    def __init__(self, sigma: float | None = None, options: Options | None = None):
        if self.uses_sigma:
            if sigma is None:
                raise CertifyError(
                    f"plugin {self.name} needs --sigma (the model's metadata records none)"
                )
            if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating, np.integer)):
                raise CertifyError(f"--sigma must be a number, got {sigma!r}")
            if not (sigma > 0 and np.isfinite(sigma)):
                raise CertifyError(f"--sigma must be a positive number, got {sigma}")
            if sigma > MAX_SIGMA:
                raise CertifyError(f"sigma {sigma:g} does not fit in float32, the type of the noisy views: lower "
                                   f"--sigma (or the plugin's noise option); pixels are in [0, 1], so a useful "
                                   f"sigma is at most a few units")
        self.sigma = float(sigma) if sigma is not None else None
        self.options = options if options is not None else self.Options()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sigma={self.sigma} {self.options!r}>"

    # -- shapes and models ------------------------------------------------

    def prepare(self, input_shape: tuple[int, ...], metadata: Mapping[str, str]) -> None:
        """Check the input shape and the model's metadata before certifying.

        Raise :class:`certifier.CertifyError` with a clear message to refuse.
        """

    def view_shape(self, input_shape: tuple[int, ...], group: str) -> tuple[int, ...]:
        """Shape of one view of ``group`` for an input of ``input_shape``."""
        return input_shape

    def group_model(self, group: str) -> str | None:
        """Path of a separate ONNX model for ``group``; None means the main model."""
        return None

    def check_inputs(self, x: np.ndarray) -> np.ndarray:
        """Validate (or adjust) a batch of clean inputs before certification."""
        return x

    # -- views --------------------------------------------------------------

    def sample(self, x: np.ndarray, rng: np.random.Generator, group: str) -> np.ndarray:
        """One independent random view of each input in the batch ``x``.

        The engine calls it with ``x`` broadcast from one input to get many views;
        training calls it with a batch of different inputs.
        """
        if self.deterministic:
            index = rng.integers(0, self.num_views(x.shape[1:]), size=len(x))
            return self.views(x, index, group)
        raise NotImplementedError(f"{type(self).__name__} must implement sample()")

    def num_views(self, input_shape: tuple[int, ...]) -> int:
        """Deterministic methods: how many views each input has."""
        raise NotImplementedError

    def views(self, x: np.ndarray, index: np.ndarray, group: str) -> np.ndarray:
        """Deterministic methods: view number ``index[i]`` of input ``x[i]``."""
        raise NotImplementedError

    def clean_view(self, x: np.ndarray, group: str) -> np.ndarray | None:
        """The view of each clean input in the batch ``x`` without noise, or None.

        ``certify train`` reports the model's accuracy on it as its clean accuracy.
        The default is the input itself when views have the input's shape.
        """
        if tuple(self.view_shape(tuple(x.shape[1:]), group)) == tuple(x.shape[1:]):
            return x
        return None

    def stages(self, x: np.ndarray, rng: np.random.Generator, group: str) -> list[tuple[str, np.ndarray]]:
        """Named intermediate images of one view, for ``certify show``.

        The default shows only the view; methods with several steps (noise, then a
        transform) override it to show each step.
        """
        return [(f"view ({group})" if len(self.groups) > 1 else "view", self.sample(x, rng, group))]

    # -- decisions ----------------------------------------------------------

    def certify(self, selection: Votes | None, estimation: Votes, alpha: float) -> Certificate:
        """The certificate from votes.

        Randomized methods get selection votes (to choose the class) and fresh
        estimation votes (to bound its probability). Deterministic methods get
        ``selection=None`` and the votes of all views in ``estimation``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement certify()")

    def predict(self, votes: Votes, alpha: float) -> int | None:
        """Cohen et al.'s PREDICT: the top class, or None unless a two-sided binomial
        test of the top two summed counts rejects a tie at level alpha."""
        total = votes.total()
        order = np.argsort(-total, kind="stable")
        top = int(order[0])
        runner_up = int(total[order[1]]) if len(order) > 1 else 0
        if binomial_pvalue(int(total[top]), int(total[top]) + runner_up) <= alpha:
            return top
        return None

    # -- description --------------------------------------------------------

    def training_metadata(self, input_shape: tuple[int, ...]) -> dict[str, str]:
        """Extra ONNX ``metadata_props`` that ``certify train`` stores in the model.

        Record here what certification must reproduce exactly (a seed, a view count,
        the input shape) and check it in :meth:`prepare`. Keys are namespaced by the
        caller's choice (``certifier.<name>...`` is the convention); the core's own
        keys (``certifier.plugin``, ``certifier.sigma``, ...) cannot be overridden.
        """
        return {}

    def soundness_checks(self) -> tuple[SoundnessCheck, ...]:
        """The models on which ``certify selftest`` can check this method's radii against the exact
        ones (:class:`certifier.SoundnessCheck`); none by default, and a method with none fails the
        selftest: say which hold for your views."""
        return ()

    def settings(self) -> dict[str, Any]:
        """Everything that determines the certificates, for the results header."""
        return {"sigma": self.sigma, "options": self.options.model_dump(mode="json")}

    @classmethod
    def option_help(cls) -> list[dict[str, Any]]:
        """Name, type, default and description of each option, for ``certify plugins``."""
        described = []
        for name, info in cls.Options.model_fields.items():
            described.append(
                {
                    "name": name.replace("_", "-"),
                    "type": _type_name(info.annotation),
                    "default": None if info.is_required() else info.get_default(call_default_factory=True),
                    "description": info.description or "",
                }
            )
        return described


def threat_of(method: SmoothingMethod | type[SmoothingMethod]) -> ThreatModel:
    """The threat model a method declares, or the pixel-space distance of its norm."""
    declared = getattr(method, "threat_model", None)
    if isinstance(declared, ThreatModel):
        return declared
    norm = getattr(method, "norm", None)
    if norm in STANDARD:
        return STANDARD[norm]
    raise CertifyError(f"smoothing method {getattr(method, 'name', method)!r} declares neither a threat model nor "
                       f"a norm of l1, l2 or linf")


def _type_name(annotation) -> str:
    """"float", "int", "slic|grid" (a Literal's choices); Optional[X] reads as X."""
    origin = typing.get_origin(annotation)
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Literal:
        return "|".join(str(a) for a in arguments)
    if origin in (typing.Union, types.UnionType) and len(arguments) == 1:
        return _type_name(arguments[0])
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
