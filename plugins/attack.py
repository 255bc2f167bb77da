"""``certify attack``: empirical attacks on the smoothed classifier beside its certificates.

For each input and each radius of a grid, an attack in the method's threat model searches
the ball for a point where the smoothed classifier changes its mind (SmoothAdv, Salman et
al. 2019: PGD on -log of the smoothed soft classifier's probability of the class, estimated
with m fresh noisy views per step, through the method's own noise, transform and denoiser),
and, for reference, the same on the bare model. Gradients come from the ONNX model converted
to torch (onnx2torch); a model or a method without a torch form is attacked without gradients
(SPSA through onnxruntime), and translation by trying every shift.

A point counts only once certify's own engine, on fresh samples at the run's alpha, gives it
another class or abstains there: empirical robust accuracy is then a real upper bound. Given
the certify results of the same inputs, a point confirmed as another class below an input's
certified radius, and confirmed again on samples of its own, is a soundness alarm.
Results go to a results file like certify's (``certifier.attack_results`` describes it):
a header with the settings and hashes, one record per input, resumed after an interruption.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from certifier import CertifyError
from certifier.attack_results import (
    ABSTAINED, FLIPPED, HELD, IMPLIED, MODE, RECORD_TYPE, classifier_difference, header_fingerprint, is_attack,
    record_problem, summarize_attack,
)
from certifier.engine import Engine, Group, InputResult
from certifier.files import check_output_file
from certifier.job import Job, select
from certifier.methods import threat_of
from certifier.results import ResultsFile, load_any_results
from certifier.summaries import audit
from certifier_plugins._attack_views import PARAMETER, SHIFT, Surface, surface_for
from certifier_plugins._smoothadv import pgd, spsa
from certifier_plugins._torch import require_torch

GRADIENTS = ("auto", "torch", "spsa")
INSTALL = "pip install 'onnx-certifier[attack]'"
#: Keys of the attack's random streams (noise for the attack, and the seed of the confirmations):
#: never change them, or seeds give other attacks.
_ATTACK_STREAM, _CONFIRM_STREAM = 0xA77AC, 0xC0F1


@dataclass(frozen=True)
class AttackSettings:
    """How hard each attack tries; the results header records every field.

    ``steps`` PGD (or SPSA) steps per radius, of ``step_size * radius / steps`` each;
    ``noise_samples`` (m) noisy views per step for the smoothed classifier; ``bare`` also
    attacks the bare model; ``gradient``: torch (onnx2torch), spsa (no gradients), or auto
    (torch when the model and the method's views have a torch form); SPSA estimates each
    gradient from ``spsa_samples`` pairs of probes ``spsa_probe`` away.
    """

    radii: tuple[float, ...]
    steps: int = 20
    noise_samples: int = 16
    step_size: float = 2.5
    bare: bool = True
    gradient: str = "auto"
    spsa_samples: int = 8
    spsa_probe: float = 0.01

    def checked(self) -> "AttackSettings":
        try:
            radii = sorted({float(r) for r in self.radii})
        except (TypeError, ValueError):
            raise CertifyError(f"--radii must be numbers, got {self.radii!r}") from None
        if not radii or not all(math.isfinite(r) and r >= 0 for r in radii):
            raise CertifyError(f"--radii must be finite numbers >= 0, got {', '.join(map(str, self.radii)) or 'none'}")
        for name, value, low in (("--steps", self.steps, 1), ("--noise-samples", self.noise_samples, 1),
                                 ("--spsa-samples", self.spsa_samples, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 100_000:
                raise CertifyError(f"{name} must be a whole number from {low} to 100000, got {value!r}")
        for name, value in (("--step-size", self.step_size), ("--spsa-probe", self.spsa_probe)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise CertifyError(f"{name} must be a positive number, got {value!r}")
        if self.gradient not in GRADIENTS:
            raise CertifyError(f"--gradient must be one of {', '.join(GRADIENTS)}, got {self.gradient!r}")
        return AttackSettings(tuple(radii), self.steps, self.noise_samples, float(self.step_size), bool(self.bare),
                              self.gradient, self.spsa_samples, float(self.spsa_probe))


def attack(run, data, labels=None, *, split: str | None = None, indices: Sequence[int] | None = None,
           limit: int | None = None, skip: int = 1, output=None, certified=None, radii: Sequence[float] | None = None,
           n0: int = 100, n: int = 10_000, alpha: float = 0.001, batch_size: int | None = None, seed: int = 0,
           workers: int | None = None, device: str = "cpu", **settings) -> "AttackJob":
    """An :class:`AttackJob` attacking inputs of ``data`` with ``run``'s model and method.

    The inputs are chosen as :meth:`certifier.Run.job` chooses them; ``radii`` is the grid
    (default: the threat model's radii); ``n0``, ``n``, ``alpha``, ``batch_size`` are the
    confirmations' (certify's) sampling settings; ``certified`` the certify results file of
    these inputs, whose certificates are checked (soundness alarms); ``settings`` go to
    :class:`AttackSettings`. With ``output`` each record is written there as it is done,
    and a file of an earlier attack with the same settings is resumed.
    """
    require_torch("certify attack", INSTALL)
    threat = threat_of(run.method)
    attack_settings = AttackSettings(tuple(threat.radii if radii is None else radii), **settings).checked()
    dataset = run.dataset(data, labels, split=split)
    if output is not None:
        check_output_file(output, "--output", [("--data", data if isinstance(data, (str, Path)) else None),
                                               ("--certified", certified), ("the model", run.model.path)])
    engine = run.engine(dataset.shape, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=_confirm_seed(seed),
                        workers=workers)
    chosen = select(len(dataset), indices=indices, limit=limit, skip=skip)
    return AttackJob(run, engine, dataset, chosen, settings=attack_settings, seed=seed, output=output,
                     certified=certified, device=device)


def _stream_seed(seed: int, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(_ATTACK_STREAM, *key))


def _confirm_seed(seed: int) -> int:
    """The seed of the confirmations' noise: another than the certify run's, so the views that
    decide an attack are never the ones that made the certificate."""
    state = np.random.SeedSequence(seed, spawn_key=(_CONFIRM_STREAM,)).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)


class _Point:
    """One attacked input as a data set of one, for certify's engine."""

    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.shape = self.x.shape

    def batch(self, indices) -> np.ndarray:
        return self.x[None]


class AttackJob:
    """The attack of some inputs, written to ``output`` as it goes; iterate it for the records.

    Open one with :func:`attack`. As :class:`certifier.Job`: the file is locked for the job,
    ``done`` holds the records it already had, ``todo`` the inputs left, ``records`` all so far.
    """

    def __init__(self, run, engine: Engine, dataset, indices: Sequence[int], *, settings: AttackSettings,
                 seed: int = 0, output=None, certified=None, device: str = "cpu"):
        self.run, self.engine, self.dataset, self.settings, self.seed = run, engine, dataset, settings, seed
        self.indices = list(indices)
        self.method = run.method
        self.groups: list[Group] = engine.groups
        self.surface: Surface = surface_for(self.method, tuple(dataset.shape))
        self.threat = threat_of(self.method)
        self.certified_path = Path(certified) if certified is not None else None
        self.certificates, certified_header = self._read_certificates()
        self._certified_header = certified_header
        self.device = _device(device)
        self.readings = {group.name: _reading(group) for group in self.groups}
        self.networks, self.gradient, self.gradient_note = self._gradients()
        self._passes = 0  # forward passes spent on the input being attacked
        self.header  # checks the certify results given against these settings
        self.output = Path(output) if output is not None else None
        self._file = None
        if self.output is not None:
            if self.indices:
                dataset.batch(self.indices[:1])  # refuse bad data before a file is written
            self._file = ResultsFile(self.output, self.header, record_type=RECORD_TYPE, record_problem=record_problem)
        stored = self._file.done if self._file is not None else {}
        self.done = [stored[i] for i in self.indices if i in stored]
        self.todo = [i for i in self.indices if i not in stored]
        self.records: list[dict] = list(self.done)

    # -- setting up ----------------------------------------------------------------

    def _read_certificates(self) -> tuple[dict[int, dict], dict | None]:
        """The certificates of the certify results file given, by input index."""
        if self.certified_path is None:
            return {}, None
        header, records = load_any_results(self.certified_path)
        name = self.certified_path.name
        if is_attack(header) or header.get("mode", "certify") != "certify":
            raise CertifyError(f"--certified {name} is not the results file of a certify run (its mode is "
                               f"{header.get('mode')!r}); give the file certify wrote for these inputs")
        return {r["source"]["index"]: {"prediction": r["prediction"], "radius": r["radius"]}
                for r in audit(records, header)[0] if is_index_like(r["source"].get("index"))}, header

    def _gradients(self) -> tuple[dict | None, str, str | None]:
        """The torch networks of the groups and how the attack searches: torch (gradients), spsa
        (gradients estimated from losses), scan (a transformation's parameter, tried across the
        interval) or exact (every shift), with why when it could not have the gradients asked for."""
        wanted = self.settings.gradient
        if self.surface.kind == SHIFT:
            return None, "exact", None
        if self.surface.kind == PARAMETER:
            return None, "scan", None
        if wanted == "spsa":
            return None, "spsa", None
        if self.surface.gradient is None:
            why = f"plugin {self.method.name}'s views have no torch form (certify attack knows the built-in plugins' " \
                  f"and those of plugins that declare additive_noise)"
            if wanted == "torch":
                raise CertifyError(f"--gradient torch: {why}; use --gradient spsa (or auto), which needs no gradients")
            return None, "spsa", why
        unreadable = [name for name, reading in self.readings.items() if reading == "label"]
        if unreadable:
            why = f"{self.run.model.path.name} gives class labels, not scores: there is no gradient to follow"
            if wanted == "torch":
                raise CertifyError(f"--gradient torch: {why}; use --gradient spsa (or auto)")
            return None, "spsa", why
        try:
            from certifier_plugins.denoise import import_onnx2torch

            import_onnx2torch()
        except CertifyError:
            why = f"onnx2torch, which converts the model to torch for its gradients, is not installed ({INSTALL})"
            if wanted == "torch":
                raise CertifyError(f"--gradient torch: {why}") from None
            return None, "spsa", why
        try:
            return self._torch_networks(), "torch", None
        except CertifyError as error:
            if wanted == "torch":
                raise
            return None, "spsa", str(error)

    def _torch_networks(self) -> dict[str, Any]:
        from certifier_plugins.denoise import convert_classifier

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

    @functools.cached_property
    def header(self) -> dict[str, Any]:
        """The certify header of these settings, with the attack's own."""
        header = dict(Job(self.run, self.engine, self.dataset, [], mode="certify").header)
        header.pop("radius_ceiling", None)
        certified = self._certified_header
        header.update({
            "mode": MODE,
            "seed": self.seed,
            "attack": {**asdict(self.settings), "radii": list(self.settings.radii), "gradient": self.gradient,
                       "certified": header_fingerprint(certified) if certified is not None else None,
                       "certified_alpha": certified.get("alpha") if certified is not None else None},
        })
        if self.gradient_note:
            header["gradient_note"] = self.gradient_note
        if certified is not None:
            header["certified"] = str(self.certified_path)
            difference = classifier_difference(certified, json_round_trip(header))
            if difference:
                raise CertifyError(f"--certified {self.certified_path.name} certified another classifier or other "
                                   f"inputs ({difference}); give the certify results of this model, plugin and data")
        return header

    # -- running ---------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict]:
        torch = require_torch("certify attack", INSTALL)
        left = self.todo[len(self.records) - len(self.done):]
        for index in left:
            # torch's own threads fight onnxruntime's and any other load for the cores: as many
            # as --threads says (one by default), for the attack only
            threads = torch.get_num_threads()
            torch.set_num_threads(self.run.threads or 1)
            try:
                record = self._attack_input(index)
            finally:
                torch.set_num_threads(threads)
            problem = record_problem(record)
            if problem:
                raise CertifyError(f"internal error: the record of input {index} is malformed ({problem})")
            if self._file is not None:
                self._file.write(record)
            self.records.append(record)
            yield record

    def run_all(self) -> list[dict]:
        """Attack every input left; the records of all inputs of the job."""
        for _ in self:
            pass
        return self.records

    def summary(self) -> dict[str, Any]:
        if not self.records:
            raise CertifyError("no inputs to attack (check --limit and --skip)")
        return summarize_attack(json_round_trip(self.header), self.records)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> "AttackJob":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one input ---------------------------------------------------------------------

    def _attack_input(self, index: int) -> dict:
        started = time.perf_counter()
        x = np.ascontiguousarray(self.method.check_inputs(self.dataset.batch([index]))[0], dtype=np.float32)
        label = self.dataset.label(index)
        self._passes = 0
        slots = len(self.settings.radii) + 2  # the input, each radius, the alarm's second look
        confirm = functools.partial(self._confirm, index, slots)
        clean = confirm(0, x)
        prediction = clean.prediction
        certificate = self.certificates.get(index)
        record: dict[str, Any] = {"type": RECORD_TYPE, "index": index, "label": label, "prediction": prediction,
                                  "correct": None if label is None else prediction == label, "smoothed": []}
        if certificate is not None:
            record["certified"] = certificate
        hunting = certificate is not None and certificate["prediction"] is not None and certificate["radius"] > 0
        flip = None
        if prediction is not None and (label is None or prediction == label or hunting):
            record["smoothed"], flip = self._smoothed_outcomes(index, x, prediction, certificate, confirm)
        if self.settings.bare:
            record["bare"] = self._bare_outcomes(index, x)
        if hunting:
            kind, alarm = self._alarm(x, record, certificate, flip, confirm, slots - 1)
            if alarm is not None:
                record[kind] = alarm
        record["forward_passes"] = self._passes
        record["seconds"] = time.perf_counter() - started
        return record

    def _confirm(self, index: int, slots: int, slot: int, point: np.ndarray) -> InputResult:
        """Certify's engine on ``point`` with its own fresh views (one stream per input and slot)."""
        (result,) = list(self.engine.run(_Point(point), [index * slots + slot]))
        self._passes += result.forward_passes
        return result

    def _smoothed_outcomes(self, index: int, x: np.ndarray, target: int, certificate: dict | None,
                           confirm) -> tuple[list[dict], tuple | None]:
        """One outcome per radius above 0, smallest first, and the point first confirmed as another
        class with its outcome (None: none was). The attack stops there; after an abstention it
        goes on only below the certified radius, where another class would be a soundness alarm."""
        outcomes: list[dict] = []
        delta, flip, broken, tried = None, None, False, -1.0
        reach = certificate["radius"] if certificate and certificate["prediction"] is not None else None
        for number, radius in enumerate(self.settings.radii, 1):
            if radius == 0:
                continue
            if flip is not None or (broken and not (reach is not None and self._within(radius, reach))):
                outcomes.append({"radius": radius, "outcome": IMPLIED})
                continue
            entry: dict[str, Any] = {"radius": radius}
            if self.surface.kind == SHIFT:
                found = self._shift_search(x, target, radius, tried, confirm, number)
                tried = radius
                if found is None:
                    outcomes.append({**entry, "outcome": HELD, "prediction": target})
                    continue
                shift, point, result = found
                entry["shift"] = list(shift)
                distance = float(max(abs(shift[0]), abs(shift[1])))
            else:
                delta = self._search(index, x, target, radius, delta, number)
                point, distance = self._point_within(x, delta, radius)
                result = confirm(number, point)
            outcome = HELD if result.prediction == target else ABSTAINED if result.prediction is None else FLIPPED
            entry.update(outcome=outcome, distance=distance, prediction=result.prediction)
            outcomes.append(entry)
            broken = broken or outcome != HELD
            if outcome == FLIPPED:
                flip = (point, entry)
        return outcomes, flip

    def _point_within(self, x: np.ndarray, delta, radius: float) -> tuple[np.ndarray, float]:
        """The attacked input of ``delta`` as the engine reads it (float32), and its distance, never
        beyond ``radius``: float32 rounding may carry a point of the ball's edge a hair past it,
        and then the perturbation is shrunk until the point is inside."""
        for _ in range(20):
            point = self.surface.point_numpy(x, delta)
            distance = self.surface.distance(x, point, delta)
            if distance <= radius:
                return point, distance
            delta = delta * (radius / distance * (1 - 2.0**-20))
        raise AssertionError(f"no point of the radius-{radius} ball near the attack's")

    def _within(self, radius: float, certified: float) -> bool:
        """Whether a change of size ``radius`` is one the certificate of ``certified`` covers."""
        if self.threat.display == "shift":
            return math.floor(radius) <= math.floor(certified)
        return radius < certified

    def _alarm(self, x, record, certificate, flip, confirm, slot) -> tuple[str, dict | None]:
        """A soundness alarm: a point within the certified radius that the engine confirmed as
        another class than the certified one, confirmed again on views of its own, so that under
        a sound certificate an input raises one with probability at most the two runs' alphas.
        Returns the record's key ("alarm", or "unconfirmed_alarm" when the second look disagreed)
        and what it holds (None: no candidate)."""
        certified, reach = certificate["prediction"], certificate["radius"]
        if record["prediction"] not in (None, certified):  # the input itself
            candidate = (x, {"radius": 0.0, "distance": 0.0, "prediction": record["prediction"]})
        elif flip is not None and flip[1]["prediction"] != certified and self._within(flip[1]["distance"], reach):
            candidate = flip
        else:
            return "alarm", None
        point, entry = candidate
        again = confirm(slot, point)
        alarm = {"radius": entry["radius"], "distance": entry["distance"], "prediction": entry["prediction"],
                 "certified_prediction": certified, "certified_radius": reach, "second_prediction": again.prediction}
        return ("alarm" if again.prediction not in (None, certified) else "unconfirmed_alarm"), alarm

    # -- searching a ball ------------------------------------------------------------

    def _search(self, index: int, x: np.ndarray, target: int, radius: float, start, number: int):
        """The perturbation the attack found within ``radius`` (a torch tensor with a batch axis)."""
        torch = require_torch("certify attack", INSTALL)
        settings, surface = self.settings, self.surface
        seed = _stream_seed(self.seed, index, number)
        rng = np.random.Generator(np.random.PCG64(seed))
        x_t = torch.from_numpy(x[None]).to(self.device)
        ball = surface.ball(x_t, radius)
        if surface.kind == PARAMETER:  # one number: scan it
            candidates = _scan(radius, settings.steps)
            self._passes += len(candidates) * settings.noise_samples * len(self.groups)
            losses = self._soft_losses_numpy(x, candidates, target, rng)
            return candidates[int(torch.argmax(losses))].reshape(1, 1)
        start = surface.zero().to(self.device) if start is None else start
        step = settings.step_size * radius / settings.steps
        if self.gradient == "torch":
            groups = len(self.groups)
            self._passes += settings.steps * settings.noise_samples * groups
            return pgd(lambda delta: self._soft_loss(surface.point(x_t, delta), target, rng), start, ball,
                       steps=settings.steps, step_size=step)
        generator = torch.Generator().manual_seed(int(seed.generate_state(1)[0]))
        self._passes += settings.steps * 2 * settings.spsa_samples * settings.noise_samples * len(self.groups)
        return spsa(lambda deltas: self._soft_losses_numpy(x, deltas, target, rng), start, ball,
                    steps=settings.steps, step_size=step, samples=settings.spsa_samples, probe=settings.spsa_probe,
                    generator=generator)

    def _soft_loss(self, point, target: int, rng):
        """-log of the smoothed soft classifier's probability of ``target`` at ``point``: the mean
        softmax over m fresh noisy views, averaged over the vote groups (torch, differentiable)."""
        torch = require_torch("certify attack", INSTALL)
        m = self.settings.noise_samples
        terms = []
        for group in self.groups:
            views = self.surface.views(point, m, group.name, rng)
            scores = _log_probs_torch(self.networks[group.name](views), self.readings[group.name])
            terms.append(torch.logsumexp(torch.log_softmax(scores, dim=1)[:, target], dim=0) - math.log(m))
        return -(torch.logsumexp(torch.stack(terms), dim=0) - math.log(len(terms))).reshape(1)

    def _soft_losses_numpy(self, x: np.ndarray, deltas, target: int, rng) -> Any:
        """:meth:`_soft_loss` of a batch of perturbations through onnxruntime, every one with the
        same noise (common random numbers, for SPSA's differences)."""
        torch = require_torch("certify attack", INSTALL)
        m = self.settings.noise_samples
        points = [self.surface.point_numpy(x, deltas[i : i + 1]) for i in range(len(deltas))]
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

    def _shift_search(self, x, target, radius, tried, confirm, number):
        """The nearest cyclic shift within ``radius`` (beyond the radius ``tried``) that the engine
        gives another class: (shift, shifted input, the engine's result), or None."""
        for shift in self.surface.shifts(radius, inside=tried):
            point = self.surface.shifted(x, shift)
            result = confirm(number, point)
            if result.prediction != target:
                return shift, point, result
        return None

    # -- the bare model -----------------------------------------------------------------

    def _bare_outcomes(self, index: int, x: np.ndarray) -> dict | None:
        """The bare model's prediction at the input and, if right (or unlabeled), one outcome per radius."""
        if self.surface.clean_view_numpy(x[None], self.groups[0].name) is None:
            return None
        prediction = int(self._bare_predictions(x[None])[0])
        self._passes += len(self.groups)
        label = self.dataset.label(index)
        outcomes: list[dict] = []
        if label is not None and prediction != label:
            return {"prediction": prediction, "outcomes": outcomes}
        delta, broken = None, False
        tried = -1.0
        for number, radius in enumerate(self.settings.radii, 1):
            if radius == 0:
                continue
            if broken:
                outcomes.append({"radius": radius, "outcome": IMPLIED})
                continue
            if self.surface.kind == SHIFT:
                shifts = self.surface.shifts(radius, inside=tried)
                tried = radius
                points = np.stack([self.surface.shifted(x, s) for s in shifts]) if shifts else x[None]
                found = self._bare_predictions(points)
                self._passes += len(points) * len(self.groups)
                moved = np.flatnonzero(found != prediction)
                if not len(moved):
                    outcomes.append({"radius": radius, "outcome": HELD, "prediction": prediction})
                    continue
                shift = shifts[int(moved[0])]
                point, distance = points[int(moved[0])], float(max(abs(shift[0]), abs(shift[1])))
            else:
                delta = self._bare_search(index, x, prediction, radius, delta, number)
                point, distance = self._point_within(x, delta, radius)
            found = int(self._bare_predictions(point[None])[0])
            self._passes += len(self.groups)
            outcome = HELD if found == prediction else FLIPPED
            outcomes.append({"radius": radius, "outcome": outcome, "distance": distance, "prediction": found})
            broken = outcome == FLIPPED
        return {"prediction": prediction, "outcomes": outcomes}

    def _bare_search(self, index, x, target, radius, start, number):
        torch = require_torch("certify attack", INSTALL)
        settings, surface = self.settings, self.surface
        if surface.kind == PARAMETER:
            candidates = _scan(radius, settings.steps)
            self._passes += len(candidates) * len(self.groups)
            return candidates[int(torch.argmax(self._bare_losses_numpy(x, candidates, target)))].reshape(1, 1)
        x_t = torch.from_numpy(x[None]).to(self.device)
        ball = surface.ball(x_t, radius)
        start = surface.zero().to(self.device) if start is None else start
        step = settings.step_size * radius / settings.steps
        if self.gradient == "torch" and surface.gradient is not None:
            self._passes += settings.steps * len(self.groups)
            return pgd(lambda delta: self._bare_loss(surface.point(x_t, delta), target), start, ball,
                       steps=settings.steps, step_size=step)
        generator = torch.Generator().manual_seed(int(_stream_seed(self.seed, index, number, 1).generate_state(1)[0]))
        self._passes += settings.steps * 2 * settings.spsa_samples * len(self.groups)
        return spsa(lambda deltas: self._bare_losses_numpy(x, deltas, target), start, ball, steps=settings.steps,
                    step_size=step, samples=settings.spsa_samples, probe=settings.spsa_probe, generator=generator)

    def _bare_losses_numpy(self, x, deltas, target: int):
        torch = require_torch("certify attack", INSTALL)
        points = np.stack([self.surface.point_numpy(x, deltas[i : i + 1]) for i in range(len(deltas))])
        probabilities = _widened(self._bare_probabilities(points), target + 1, 0.0)[:, target]
        return torch.from_numpy(-np.log(np.maximum(probabilities, 1e-300)))

    def _bare_loss(self, point, target: int):
        torch = require_torch("certify attack", INSTALL)
        terms = []
        for group in self.groups:
            scores = _log_probs_torch(self.networks[group.name](self.surface.clean_view(point, group.name)),
                                      self.readings[group.name])
            terms.append(torch.log_softmax(scores, dim=1)[:, target])
        return -(torch.logsumexp(torch.stack(terms), dim=0) - math.log(len(terms)))

    def _bare_probabilities(self, points: np.ndarray) -> np.ndarray:
        """The bare model's class probabilities (averaged over the vote groups) for a batch of inputs (onnxruntime)."""
        found = []
        for group in self.groups:
            views = self.surface.clean_view_numpy(points, group.name)
            found.append(np.exp(_log_softmax(_log_probs_numpy(_raw(group, views), self.readings[group.name]))))
        width = max(p.shape[1] for p in found)
        return sum(_widened(p, width, 0.0) for p in found) / len(found)

    def _bare_predictions(self, points: np.ndarray) -> np.ndarray:
        return np.argmax(self._bare_probabilities(points), axis=1)


# -- models as scores ---------------------------------------------------------------------------


def _scan(radius: float, steps: int):
    """2 steps + 1 evenly spaced parameters from -radius to radius (the ends exactly), as a batch."""
    torch = require_torch("certify attack", INSTALL)
    return torch.linspace(-radius, radius, 2 * steps + 1, dtype=torch.float64).reshape(-1, 1)


def _device(device: str):
    from certifier_plugins._torch import pick_device

    return pick_device(device)


def _raw(group: Group, views: np.ndarray) -> np.ndarray:
    """The model's output for a batch of pixel-space views, by onnxruntime (through the denoiser when there is one)."""
    views = np.ascontiguousarray(views, dtype=np.float32)
    if group.denoised is not None:
        return group.denoised.raw_outputs(views)
    return group.model.raw_outputs(group.adapter(views))


def _reading(group: Group) -> str:
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
    classes = max(2, int(labels.max()) + 1)  # classes no view voted for get the same score as any unvoted one
    return np.where(np.arange(classes)[None, :] == labels[:, None], 0.0, -50.0)  # one vote each


def _widened(scores: np.ndarray, width: int, fill: float) -> np.ndarray:
    """``scores`` with at least ``width`` columns (classes a label output never gave get ``fill``)."""
    if scores.shape[1] >= width:
        return scores
    return np.concatenate([scores, np.full((len(scores), width - scores.shape[1]), fill)], axis=1)


def _log_probs_torch(raw, reading: str):
    torch = require_torch("certify attack", INSTALL)
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


def _denoised_network(run, group: Group, classifier, device, instead: str):
    """The denoiser (converted to torch), then the classifier, as the composed graph runs them;
    checked against that graph on random noisy views."""
    torch = require_torch("certify attack", INSTALL)
    from certifier.denoiser import denoiser_layout
    from certifier_plugins.denoise import _first_line, import_onnx2torch

    denoiser = run.denoiser
    view_shape = tuple(group.adapter.view_shape)
    layout = denoiser_layout(denoiser, view_shape, run.method.name)
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


def is_index_like(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def json_round_trip(value):
    import json

    return json.loads(json.dumps(value))
