"""Empirical attacks on the smoothed classifier, to set beside its certificates.

:func:`attack` opens a :class:`certifier.AttackJob` with :class:`TorchSearch`, which finds, for
each input and each radius of the grid, a point within the radius where the smoothed
classifier may change its mind: SmoothAdv (Salman et al. 2019), PGD on -log of the smoothed
soft classifier's probability of the class, estimated on m fresh noisy views per step,
through the method's own noise, transform and denoiser, with the gradients of the ONNX model
converted to torch (onnx2torch); and, for reference, PGD on the bare model. A model or a
method without a torch form is attacked without gradients (SPSA through onnxruntime); a
transformation's parameter, one number, is scanned; translation tries every shift.

Nothing here decides an outcome: the job confirms every point with certify's own engine on
fresh samples (certifier.attack_job), so a bug or a weakness of the search can only make the
empirical robust accuracy higher, never a point count that the engine does not confirm.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator

import click
import numpy as np
from pydantic import BeforeValidator

from certifier import (
    AttackJob, CertifyError, InputSpace, JobSettings, ModelAdapter, ModelSettings, Range, RunSettings, Settings,
    flag, format_summary, hookimpl, load, settings_options, stopping_cleanly, takes,
)
from certifier_plugins._attack_views import PARAMETER, SHIFT, Surface, surface_for
from certifier_plugins._smoothadv import pgd, spsa
from certifier_plugins._torch import pick_device, require_torch

GRADIENTS = ("auto", "torch", "spsa")
INSTALL = "pip install 'onnx-certifier[attack]'"
#: The key of the search's random streams: never change it, or seeds give other attacks.
_ATTACK_STREAM = 0xA77AC
#: The exit status of ``certify attack`` when its soundness alarms are more than chance (1 is an error, 2 a
#: usage error).
ALARM_EXIT = 3
#: Classes at most, as certify takes them (certifier.metadata.MAX_CLASSES).
MAX_CLASSES = 1 << 20
_COUNT = Range(1, 100_000)
_POSITIVE = Range(0, math.inf, low_open=True, high_open=True, text="a positive number")


def _torch():
    return require_torch("certify attack", INSTALL)


def _gradient(value):
    if value not in GRADIENTS:
        raise CertifyError(f"--gradient must be one of {', '.join(GRADIENTS)}, got {value!r}")
    return value


class AttackSettings(Settings):
    """How ``certify attack`` searches and what it checks (each field is an option of the command,
    and a keyword of :func:`attack`; the results header records the search's).

    ``attack_steps`` PGD (or SPSA) steps per radius, of ``step_size * radius / attack_steps`` each (a scanned
    parameter: 2 steps + 1 values); ``noise_samples`` (m) noisy views per step; ``gradient``:
    torch (onnx2torch), spsa (no gradients), or auto (torch when the model and the method's views
    have a torch form); SPSA estimates each gradient from ``spsa_samples`` pairs of probes
    ``spsa_probe`` away. ``bare`` also attacks the bare model; ``certified``, the certify results
    file of the same inputs, whose certificates are checked (soundness alarms).
    """

    # --attack-steps, as certify train's SmoothAdv has it (--steps is a diffusion schedule's)
    attack_steps: Annotated[int, flag("--attack-steps", range=_COUNT, help="PGD (or SPSA) steps per radius.")] = 20
    noise_samples: Annotated[int, flag("-m", "--noise-samples", range=_COUNT,
                                       help="Noisy views per step (SmoothAdv's m).")] = 16
    step_size: Annotated[float, flag("--step-size", range=_POSITIVE,
                                     help="Each step moves STEP_SIZE * radius / ATTACK_STEPS.")] = 2.5
    gradient: Annotated[str, BeforeValidator(_gradient), flag(
        "--gradient", type=GRADIENTS, help="torch: the model's gradients (onnx2torch); spsa: estimated through "
                                           "onnxruntime; auto: torch when the model converts.")] = "auto"
    spsa_samples: Annotated[int, flag("--spsa-samples", range=_COUNT, help="SPSA: probe pairs per step.")] = 8
    spsa_probe: Annotated[float, flag("--spsa-probe", range=_POSITIVE, help="SPSA: how far each probe "
                                                                             "looks.")] = 0.01
    bare: Annotated[bool, flag("--bare/--no-bare", is_flag=True,
                               help="Also attack the bare model, for reference.")] = True
    certified: Annotated[Path | None, BeforeValidator(lambda v: None if v is None else Path(v)), flag(
        "--certified", type="file", help="The certify results file of these inputs: an attack confirmed within "
                                         "a certified radius is a soundness alarm.")] = None

    def record(self) -> dict:
        """The search's settings, as the results header records them (``gradient``: how it searched)."""
        # "steps": the key files written before --attack-steps was named so still resume with
        return {"steps": self.attack_steps, **{key: getattr(self, key) for key in (
            "noise_samples", "step_size", "spsa_samples", "spsa_probe")}}


def _split_values(values: dict) -> tuple[dict, dict]:
    """Keywords of :class:`AttackSettings`, and the rest."""
    ours = {k: v for k, v in values.items() if k in AttackSettings.model_fields}
    return ours, {k: v for k, v in values.items() if k not in ours}


@takes(AttackSettings, JobSettings)
def attack(run, data, labels=None, *, settings: AttackSettings | None = None, job: JobSettings | None = None,
           split: str | None = None, output=None, device: str = "cpu", **values) -> AttackJob:
    """A :class:`certifier.AttackJob` of ``run``'s model and method on ``data``, searching with
    :class:`TorchSearch` (on ``device``). ``values`` are :class:`AttackSettings`' and the job's
    (:class:`certifier.settings.JobSettings`: ``n0``, ``n``, ``alpha``, ``batch_size``, ``seed``,
    ``workers``, ``indices`` or ``limit`` and ``skip``, and ``radii``, the grid); or give the
    records as ``settings`` and ``job``. With ``output`` each record is written as it is done,
    and a file of the same settings is resumed."""
    ours, rest = _split_values(values)
    settings = AttackSettings.of(settings, ours, caller="attack")
    _torch()
    search = functools.partial(TorchSearch, settings=settings, device=device)
    return AttackJob(run, data, labels, search=search, bare=settings.bare, split=split, settings=job, output=output,
                     certified=settings.certified, **rest)


def open_attack(model, data, labels=None, *, settings: RunSettings | None = None,
                attack_settings: AttackSettings | None = None, split: str | None = None, output=None,
                on_load: Callable | None = None, **values) -> AttackJob:
    """The attack ``certify attack`` runs, in one call: the model opened with the model's settings
    (``values`` of :func:`certifier.load`, or ``settings.model``), then :func:`attack` with the
    job's and the attack's (``values``, or ``settings.job`` and ``attack_settings``); the search
    runs on the model's device. ``on_load`` is called with the run in between."""
    ours, rest = _split_values(values)
    attack_settings = AttackSettings.of(attack_settings, ours, caller="open_attack")
    settings = RunSettings.from_values(rest, settings, caller="open_attack")
    run = load(model, settings.model)
    if on_load is not None:
        on_load(run)
    return attack(run, data, labels, settings=attack_settings, job=settings.job, split=split, output=output,
                  device=settings.model.device)


@contextlib.contextmanager
def _threads(count: int):
    """torch's own threads for a block: they fight onnxruntime's, and any other load, for the cores."""
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchSearch:
    """Points within each radius where the smoothed classifier, or the bare model, may change its
    mind (the :class:`certifier.AttackJob` search protocol)."""

    def __init__(self, run, groups, input_shape: tuple[int, ...], seed: int, *, settings: AttackSettings,
                 device: str = "cpu"):
        self.run, self.groups, self.seed, self.options = run, list(groups), seed, settings
        self.surface: Surface = surface_for(run.method, tuple(input_shape))
        self.device = pick_device(device)
        self.threads = run.threads or 1
        self.readings = {group.name: _reading(group) for group in self.groups}
        self.networks, self.method, self.note = self._gradients()
        self.settings = settings.record()
        self.passes = 0

    # -- how gradients are had -------------------------------------------------------

    def _gradients(self) -> tuple[dict | None, str, str | None]:
        """The torch networks of the groups and how the search goes: torch (gradients), spsa (gradients
        estimated from losses), scan (a transformation's parameter, tried across the interval) or
        exact (every shift), with why when it could not follow gradients as asked."""
        wanted, method = self.options.gradient, self.run.method
        if self.surface.kind == SHIFT:
            return None, "exact", None
        if self.surface.kind == PARAMETER:
            return None, "scan", None
        if wanted == "spsa":
            return None, "spsa", None
        why = None
        if self.surface.gradient is None:
            why = (f"plugin {method.name}'s views have no torch form (certify attack has those of the built-in "
                   f"plugins and of plugins that declare additive_noise)")
        elif any(reading == "label" for reading in self.readings.values()):
            why = f"{self.run.model.path.name} gives class labels, not scores: there is no gradient to follow"
        else:
            try:
                return self._torch_networks(), "torch", None
            except CertifyError as error:
                if wanted == "torch":
                    raise
                why = str(error)
        if wanted == "torch":
            raise CertifyError(f"--gradient torch: {why}; use --gradient spsa (or auto), which needs no gradients")
        return None, "spsa", why

    def _torch_networks(self) -> dict[str, Any]:
        try:
            from certifier_plugins.denoise import convert_classifier, import_onnx2torch

            import_onnx2torch()
        except CertifyError:
            raise CertifyError(f"onnx2torch, which converts the model to torch for its gradients, is not installed "
                               f"({INSTALL})") from None
        instead = "use --gradient spsa, which needs no gradients"
        converted: dict[tuple, Any] = {}
        networks = {}
        for group in self.groups:
            key = (id(group.model), group.adapter.view_shape)
            if key not in converted:
                converted[key] = convert_classifier(group.model, group.adapter, self.device, purpose="certify attack",
                                                    instead=instead)
            classifier = converted[key]
            networks[group.name] = (classifier.raw if group.denoised is None
                                    else _denoised_network(self.run, group, classifier, self.device, instead))
        return networks

    # -- the search protocol ---------------------------------------------------------

    def begin(self, index: int, x: np.ndarray) -> None:
        self.index, self.x = index, x
        self._start = self._bare_start = None  # each radius starts from the point of the one before
        self._tried = self._bare_tried = -1.0  # shifts already tried reach this far

    def smoothed(self, target: int, radius: float, number: int) -> Iterator[tuple[np.ndarray, float, dict]]:
        if self.surface.kind == SHIFT:
            for shift in self.surface.shifts(radius, inside=self._tried):
                yield self.surface.shifted(self.x, shift), float(max(map(abs, shift))), {"shift": list(shift)}
            self._tried = radius  # only once every shift was looked at
            return
        with _threads(self.threads):
            delta = self._search(target, radius, number)
        self._start = delta
        point, distance, described = self._point_within(delta, radius)
        yield point, distance, described

    def bare(self, target: int, radius: float, number: int) -> Iterator[tuple[np.ndarray, float, dict]]:
        if self.surface.kind == SHIFT:  # every shift at once; the first that moves the class, if one does
            shifts, self._bare_tried = self.surface.shifts(radius, inside=self._bare_tried), radius
            if shifts:
                points = np.stack([self.surface.shifted(self.x, shift) for shift in shifts])
                moved = np.flatnonzero(self.bare_predictions(points) != target)
                if len(moved):
                    shift = shifts[int(moved[0])]
                    yield points[int(moved[0])], float(max(map(abs, shift))), {"shift": list(shift)}
            return
        with _threads(self.threads):
            delta = self._bare_search(target, radius, number)
        self._bare_start = delta
        point, distance, described = self._point_within(delta, radius)
        yield point, distance, described

    def bare_predictions(self, points: np.ndarray) -> np.ndarray | None:
        if self.surface.clean_view_numpy(points[:1], self.groups[0].name) is None:
            return None
        return np.argmax(self._bare_probabilities(points), axis=1)

    def _point_within(self, delta, radius: float) -> tuple[np.ndarray, float, dict]:
        """The attacked input of ``delta`` as the engine reads it (float32), its distance, never
        beyond ``radius`` (float32 rounding may carry a point on the ball's edge a hair past it,
        and then the perturbation is shrunk until the point is inside), and what the record keeps
        to rebuild it."""
        for _ in range(20):
            point = self.surface.point_numpy(self.x, delta)
            distance = self.surface.distance(self.x, point, delta)
            if distance <= radius:
                return point, distance, self.surface.described(delta)
            delta = delta * (radius / distance * (1 - 2.0**-20))
        raise CertifyError(f"internal error: no point of the radius-{radius} ball near the attack's; please report it")

    # -- the smoothed classifier ------------------------------------------------------

    def _rng(self, number: int, *more: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=(_ATTACK_STREAM, self.index, number, *more))

    def _search(self, target: int, radius: float, number: int):
        """The perturbation found within ``radius`` (a torch tensor with a batch axis of one)."""
        torch = _torch()
        options, surface, x = self.options, self.surface, self.x
        seed = self._rng(number)
        rng = np.random.Generator(np.random.PCG64(seed))
        groups = len(self.groups)
        if surface.kind == PARAMETER:  # one number: scan it
            candidates = _scan(radius, options.attack_steps)
            self.passes += len(candidates) * options.noise_samples * groups
            return candidates[int(torch.argmax(self._soft_losses_numpy(candidates, target, rng)))].reshape(1, 1)
        x_t = torch.from_numpy(x[None]).to(self.device)
        ball = surface.ball(x_t, radius)
        start = surface.zero().to(self.device) if self._start is None else self._start
        step = options.step_size * radius / options.attack_steps
        if self.method == "torch":
            self.passes += options.attack_steps * options.noise_samples * groups
            return pgd(lambda delta: self._soft_loss(surface.point(x_t, delta), target, rng), start, ball,
                       steps=options.attack_steps, step_size=step)
        generator = torch.Generator().manual_seed(int(seed.generate_state(1)[0]))
        self.passes += options.attack_steps * 2 * options.spsa_samples * options.noise_samples * groups
        return spsa(lambda deltas: self._soft_losses_numpy(deltas, target, rng), start, ball, steps=options.attack_steps,
                    step_size=step, samples=options.spsa_samples, probe=options.spsa_probe, generator=generator)

    def _soft_loss(self, point, target: int, rng):
        """-log of the smoothed soft classifier's probability of ``target`` at ``point``: the mean
        softmax over m fresh noisy views, averaged over the vote groups (torch, differentiable)."""
        torch = _torch()
        m = self.options.noise_samples
        terms = []
        for group in self.groups:
            views = self.surface.views(point, m, group.name, rng)
            scores = _log_probs_torch(self.networks[group.name](views), self.readings[group.name])
            terms.append(torch.logsumexp(torch.log_softmax(scores, dim=1)[:, target], dim=0) - math.log(m))
        return -(torch.logsumexp(torch.stack(terms), dim=0) - math.log(len(terms))).reshape(1)

    def _soft_losses_numpy(self, deltas, target: int, rng):
        """:meth:`_soft_loss` of a batch of perturbations through onnxruntime and the plugin's own
        ``sample``, every one with the same noise (common random numbers, for SPSA's differences)."""
        torch = _torch()
        m = self.options.noise_samples
        points = [self.surface.point_numpy(self.x, deltas[i : i + 1]) for i in range(len(deltas))]
        noise = np.random.SeedSequence(int(rng.integers(2**63)))  # this evaluation's noise, the same for every point
        losses = np.zeros(len(points))
        for group in self.groups:
            views = []
            for point in points:
                shared = np.random.Generator(np.random.PCG64(noise))
                views.append(self.surface.views_numpy(np.broadcast_to(point, (m, *point.shape)), group.name, shared))
            scores = _widened(_log_probs_numpy(_raw(group, np.concatenate(views)), self.readings[group.name]),
                              target + 1, -50.0)
            log_p = _log_softmax(scores)[:, target].reshape(len(points), m)
            losses = losses + np.exp(_logsumexp(log_p) - math.log(m))
        return torch.from_numpy(-np.log(np.maximum(losses / len(self.groups), 1e-300)))

    # -- the bare model -----------------------------------------------------------------

    def _bare_search(self, target: int, radius: float, number: int):
        torch = _torch()
        options, surface, x = self.options, self.surface, self.x
        groups = len(self.groups)
        if surface.kind == PARAMETER:
            candidates = _scan(radius, options.attack_steps)
            self.passes += len(candidates) * groups
            return candidates[int(torch.argmax(self._bare_losses_numpy(candidates, target)))].reshape(1, 1)
        x_t = torch.from_numpy(x[None]).to(self.device)
        ball = surface.ball(x_t, radius)
        start = surface.zero().to(self.device) if self._bare_start is None else self._bare_start
        step = options.step_size * radius / options.attack_steps
        if self.method == "torch":
            self.passes += options.attack_steps * groups
            return pgd(lambda delta: self._bare_loss(surface.point(x_t, delta), target), start, ball,
                       steps=options.attack_steps, step_size=step)
        generator = torch.Generator().manual_seed(int(self._rng(number, 1).generate_state(1)[0]))
        self.passes += options.attack_steps * 2 * options.spsa_samples * groups
        return spsa(lambda deltas: self._bare_losses_numpy(deltas, target), start, ball, steps=options.attack_steps,
                    step_size=step, samples=options.spsa_samples, probe=options.spsa_probe, generator=generator)

    def _bare_loss(self, point, target: int):
        torch = _torch()
        terms = []
        for group in self.groups:
            scores = _log_probs_torch(self.networks[group.name](self.surface.clean_view(point, group.name)),
                                      self.readings[group.name])
            terms.append(torch.log_softmax(scores, dim=1)[:, target])
        return -(torch.logsumexp(torch.stack(terms), dim=0) - math.log(len(terms)))

    def _bare_losses_numpy(self, deltas, target: int):
        points = np.stack([self.surface.point_numpy(self.x, deltas[i : i + 1]) for i in range(len(deltas))])
        probabilities = _widened(self._bare_probabilities(points), target + 1, 0.0)[:, target]
        return _torch().from_numpy(-np.log(np.maximum(probabilities, 1e-300)))

    def _bare_probabilities(self, points: np.ndarray) -> np.ndarray:
        """The bare model's class probabilities (averaged over the vote groups) for a batch of inputs (onnxruntime)."""
        found = []
        for group in self.groups:
            views = self.surface.clean_view_numpy(points, group.name)
            found.append(np.exp(_log_softmax(_log_probs_numpy(_raw(group, views), self.readings[group.name]))))
        self.passes += len(points) * len(self.groups)
        width = max(p.shape[1] for p in found)
        return sum(_widened(p, width, 0.0) for p in found) / len(found)


# -- models as scores ---------------------------------------------------------------------------


def _scan(radius: float, steps: int):
    """2 steps + 1 evenly spaced parameters from -radius to radius (the ends exactly), as a batch."""
    torch = _torch()
    return torch.linspace(-radius, radius, 2 * steps + 1, dtype=torch.float64).reshape(-1, 1)


def _raw(group, views: np.ndarray) -> np.ndarray:
    """The model's output for a batch of pixel-space views, by onnxruntime (through the denoiser when there is one)."""
    views = np.ascontiguousarray(views, dtype=np.float32)
    if group.denoised is not None:
        return group.denoised.raw_outputs(views)
    return group.model.raw_outputs(group.adapter(views))


def _reading(group) -> str:
    """How the chosen output reads as class scores: logits, probabilities, binary-probability,
    binary-logit, or label (no scores at all)."""
    output = (group.denoised or group.model).output
    if output.kind == "label":
        return "label"
    if output.kind == "binary":
        return "binary-probability" if output.threshold == 0.5 else "binary-logit"
    probe = np.random.default_rng(0).random((4, *group.adapter.view_shape), dtype=np.float32)
    raw = _raw(group, probe).astype(np.float64)
    probabilities = (raw >= 0).all() and np.allclose(raw.sum(axis=1), 1.0, atol=1e-4)
    return "probabilities" if probabilities else "logits"


def _log_probs_numpy(raw: np.ndarray, reading: str) -> np.ndarray:
    raw = raw.astype(np.float64)
    if reading == "logits":
        return raw
    if reading == "probabilities":
        return np.log(np.maximum(raw, 1e-12))
    if reading == "binary-probability":
        p = np.clip(raw[:, 0], 1e-12, 1 - 1e-12)
        return np.stack([np.log1p(-p), np.log(p)], axis=1)
    if reading == "binary-logit":
        return np.stack([np.zeros(len(raw)), raw[:, 0]], axis=1)
    labels = raw[:, 0].astype(np.int64)
    if labels.min() < 0 or labels.max() >= MAX_CLASSES:
        given = int(labels.min() if labels.min() < 0 else labels.max())
        raise CertifyError(f"the model's label output gave class {given}; labels are class indices from 0 to "
                           f"{MAX_CLASSES - 1}")
    classes = max(2, int(labels.max()) + 1)  # classes no view voted for get the same score as any unvoted one
    return np.where(np.arange(classes)[None, :] == labels[:, None], 0.0, -50.0)  # one vote each


def _widened(scores: np.ndarray, width: int, fill: float) -> np.ndarray:
    """``scores`` with at least ``width`` columns (classes a label output never gave get ``fill``)."""
    if scores.shape[1] >= width:
        return scores
    return np.concatenate([scores, np.full((len(scores), width - scores.shape[1]), fill)], axis=1)


def _log_probs_torch(raw, reading: str):
    torch = _torch()
    if reading == "logits":
        return raw
    if reading == "probabilities":
        return torch.log(raw.clamp_min(1e-12))
    if reading == "binary-probability":
        p = raw[:, 0].clamp(1e-12, 1 - 1e-12)
        return torch.stack([torch.log1p(-p), torch.log(p)], dim=1)
    return torch.stack([torch.zeros_like(raw[:, 0]), raw[:, 0]], dim=1)


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    from scipy.special import log_softmax

    return log_softmax(scores, axis=1)


def _logsumexp(values: np.ndarray) -> np.ndarray:
    from scipy.special import logsumexp

    return logsumexp(values, axis=1)


def _denoised_network(run, group, classifier, device, instead: str):
    """The denoiser (converted to torch), then the classifier, as the composed graph runs them;
    checked against that graph on random noisy views."""
    torch = _torch()
    from certifier_plugins.denoise import _first_line, import_onnx2torch

    denoiser = run.denoiser
    view_shape = tuple(group.adapter.view_shape)
    # how the denoiser lays out a view: as certify reads a model's input (the run checked it fits)
    layout = ModelAdapter(view_shape, denoiser.input_dims, np.float32, InputSpace()).layout
    try:
        network = import_onnx2torch().convert(denoiser.proto).to(device).eval().float()
    except Exception as error:  # noqa: BLE001 - the converter fails in many ways
        raise CertifyError(f"onnx2torch cannot convert the denoiser {denoiser.name} ({_first_line(error)}); "
                           f"{instead}") from None
    for parameter in network.parameters():
        parameter.requires_grad_(False)

    def raw(views):
        images = views
        if layout == "nhwc":
            images = images.permute(0, 2, 3, 1)
        elif layout == "hw":
            images = images[:, 0]
        elif layout == "flat":
            images = images.reshape(len(images), -1)
        out = network(images.contiguous())
        out = out[0] if isinstance(out, (tuple, list)) else out
        if layout == "nhwc":
            out = out.permute(0, 3, 1, 2)
        elif layout in ("hw", "flat"):
            out = out.reshape(len(out), *view_shape)
        return classifier.raw(out.float())

    probe = np.random.default_rng(0).normal(0.5, 0.5, size=(3, *view_shape)).astype(np.float32)
    expected = group.denoised.raw_outputs(probe).reshape(len(probe), -1).astype(np.float64)
    try:
        with torch.no_grad():
            got = raw(torch.from_numpy(probe).to(device)).double().cpu().numpy()
    except Exception as error:  # noqa: BLE001
        raise CertifyError(f"the denoiser {denoiser.name} converted to torch fails on 3 images "
                           f"({_first_line(error)}); {instead}") from None
    tolerance = 1e-3 * max(1.0, float(np.abs(expected).max()))
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-3, atol=tolerance):
        raise CertifyError(f"the denoiser {denoiser.name} and {group.model.path.name} converted to torch do not give "
                           f"onnxruntime's outputs; {instead}")
    return raw




# -- certify attack -------------------------------------------------------------------------------


def alarm_level(header: dict) -> float:
    """How improbable the alarms must be under sound certificates to fail the command: the
    attack's alpha (the default alpha for an exact method, whose alarms are never chance)."""
    alpha = header.get("alpha")
    return alpha if isinstance(alpha, float) and 0 < alpha < 1 else JobSettings.model_fields["alpha"].default


def _alarm_line(summary: dict, name: str, level: float) -> str:
    """The loud line of an alarm: the count and how likely sound certificates make it."""
    broken = (f"{summary['soundness_alarms']} of {summary['alarms_checked']} certificates checked were broken below "
              f"their radius, confirmed twice on fresh samples (inputs "
              f"{', '.join(map(str, summary['alarm_indices'][:10]))}; see \"alarm\" in {name})")
    chance = summary.get("alarm_p_value")
    if chance is None or chance <= level:
        odds = ("" if chance is None else "; an exact certificate is never wrong by chance" if chance == 0
                else f"; sound certificates raise that many with probability at most {chance:.2g}")
        return f"certify: SOUNDNESS ALARM: {broken}{odds}: check the plugin's certificate rule"
    return (f"certify: soundness alarm: {broken}; sound certificates raise that many with probability up to "
            f"{chance:.2g}, above alpha {level:g}, so this alone does not show the rule unsound: attack those "
            f"inputs again with another --seed or a larger -n")


@hookimpl
def register_commands(cli):
    @cli.command(name="attack")
    @click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
    @settings_options(ModelSettings, groups=["method"], help_values={"defaults": " (default: the model's metadata)"})
    @click.option("-d", "--data", "data_path", type=click.Path(path_type=Path), required=True,
                  help="Inputs: .npz (x, y or x_test, y_test), .npy, a folder of images or an image.")
    @click.option("--split", help="Use x_SPLIT / y_SPLIT from an .npz (e.g. test, train).")
    @settings_options(JobSettings, names=[n for n in AttackJob.job_fields if n != "indices"], changes={"radii": {
        "help": "The grid: each input is attacked within each of these radii (default: the threat model's)."}})
    @settings_options(AttackSettings)
    @click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
                  help="Results file (JSON lines); a rerun of the same command resumes it.")
    @settings_options(ModelSettings, exclude=["plugin", "sigma", "options"])
    @click.option("-q", "--quiet", is_flag=True, help="No progress bar or notes.")
    def attack_command(model_path, data_path, split, output, quiet, **values):
        """Attack the smoothed classifier (and the bare model) within each radius of a grid.

        For each input and radius: SmoothAdv PGD (m noisy views per step) on the smoothed
        classifier, in the method's threat model, with the model's gradients in torch, or SPSA
        without them; each point found counts only when certify's engine confirms its class on
        fresh samples (n0, n, alpha). With --certified, a point confirmed twice as another class
        within a certified radius is a soundness alarm: it is printed, and the exit status is 3
        when sound certificates would raise that many with probability at most alpha.
        `certify report` on the results (with the certify file) gives empirical_accuracy.

        \b
            certify run model.onnx -d x.npz -n 10000 --limit 50 --output certified.jsonl
            certify attack model.onnx -d x.npz -n 10000 --limit 50 --radii 0.25,0.5 \\
                --certified certified.jsonl --output attack.jsonl
            certify report certified.jsonl attack.jsonl
        """
        def loaded(run):
            if not quiet:
                click.echo(f"certify: {run.model.device_note}", err=True)

        started = time.perf_counter()
        with open_attack(model_path, data_path, split=split, output=output, on_load=loaded, **values) as job:
            if not quiet:
                if job.search.note:
                    click.echo(f"certify: searching without gradients (spsa): {job.search.note}", err=True)
                if job.done:
                    click.echo(f"certify: resuming {output}: {len(job.done)} of {len(job.indices)} inputs already "
                               f"done", err=True)
            _attack_all(job, output, quiet)
        summary = job.summary()
        name = output.name if output else "attack"
        click.echo(format_summary([summary], [name]))
        if not quiet:
            kept = "" if output else "; pass --output FILE to keep the results"
            click.echo(f"certify: {len(job.todo)} inputs in {time.perf_counter() - started:.1f} s{kept}", err=True)
        if summary["soundness_alarms"]:
            level = alarm_level(job.header)
            click.echo(_alarm_line(summary, name, level), err=True)
            chance = summary["alarm_p_value"]
            if chance is None or chance <= level:
                raise click.exceptions.Exit(ALARM_EXIT)


def _attack_all(job: AttackJob, output, quiet: bool) -> None:
    """Attack the inputs left, with a progress bar; Ctrl-C or SIGTERM stops with the records kept."""
    def kept() -> str:
        return f"; {len(job.records)} records are in {output}, rerun the same command to resume" if output else ""

    bar = None
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(job.indices), initial=len(job.done), unit="input", dynamic_ncols=True, file=sys.stderr)
    try:
        with stopping_cleanly(kept):
            for _ in job:
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
