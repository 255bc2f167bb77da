"""Attacks beside certificates: what decides an attack's outcome, and its results file.

A search (``certifier_plugins.attack`` gives one: SmoothAdv in torch, or without gradients)
proposes points within each radius of a grid; nothing it says decides anything. Each point is
certified by certify's own engine on fresh views (the attack's n0, n and alpha, from noise
streams of their own, never those of the search or of a certify run): the prediction held,
moved to another class, or the engine abstained. An input's smoothed prediction is decided
the same way at the input itself. So an outcome against the classifier is a confirmed one,
and empirical robust accuracy is an upper bound on the true robust accuracy, as certified
accuracy is a lower bound.

With the certify results of the same inputs, a point confirmed as another class within an
input's certified radius is a candidate soundness alarm; it becomes one when a second
confirmation, on views of its own, agrees. Under sound certificates an input raises one
with probability at most the certify run's alpha plus the attack's (the certificate is
wrong, or the second confirmation is); an abstention never raises one (near the edge of a
certificate the class has barely half the votes, and the test rightly will not decide).

Records and summaries: ``certifier.attack_results``.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from .attack_results import (
    ABSTAINED, FLIPPED, HELD, IMPLIED, RECORD_TYPE, classifier_difference, header_fingerprint, is_attack,
    record_problem, summarize_attack,
)
from .errors import CertifyError
from .files import check_output_file
from .header import build_attack_header
from .methods import threat_of
from .results import ResultsFile, is_index, load_any_results
from .settings import JobSettings
from .summaries import audit
from .threats import STANDARD

#: The key of the confirmations' noise streams: never change it, or seeds give other confirmations.
_CONFIRM_STREAM = 0xC0F1
#: A point a search found may sit this far (relatively) beyond its radius: float32 rounding.
_ROUNDING = 1e-6


class Search(Protocol):
    """What proposes the points an :class:`AttackJob` confirms (``certifier_plugins.attack``'s).

    ``method`` names how it searches ("torch", "spsa", ...), ``note`` why it could not search as
    asked (None), ``settings`` what the results header records of it; ``passes`` counts the
    forward passes it spent since it was last reset to 0.
    """

    method: str
    note: str | None
    settings: dict
    passes: int

    def begin(self, index: int, x: np.ndarray) -> None:
        """A new input (a search may start each radius from the point of the one before)."""

    def smoothed(self, target: int, radius: float, number: int) -> Iterator[tuple[np.ndarray, float, dict]]:
        """Points within ``radius`` (number ``number`` of the grid, from 1) where the smoothed
        classifier may not give ``target``, best first: (point, distance, what else to record)."""

    def bare(self, target: int, radius: float, number: int) -> Iterator[tuple[np.ndarray, float, dict]]:
        """The same for the bare model."""

    def bare_predictions(self, points: np.ndarray) -> np.ndarray | None:
        """The bare model's classes for a batch of inputs (None: the method has no bare model)."""


def confirmation_seed(seed: int) -> int:
    """The seed of the confirmations' noise: another than the certify run's, so the views that
    decide an attack are never the ones that made the certificate."""
    state = np.random.SeedSequence(seed, spawn_key=(_CONFIRM_STREAM,)).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)


class _Point:
    """One attacked input as a data set of one, for the engine."""

    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.shape = self.x.shape

    def batch(self, indices) -> np.ndarray:
        return self.x[None]


#: The job's settings an attack takes: how each point is confirmed (fixed n0 + n views), which
#: inputs, and the grid of radii; the sampling plans and PREDICT are certify's alone.
ATTACK_JOB_FIELDS = ("n0", "n", "alpha", "batch_size", "limit", "skip", "seed", "workers", "radii", "indices")


def attack_settings(job: JobSettings) -> JobSettings:
    """``job``, refused when it sets what an attack has no use for (its confirmations draw fixed n0 + n)."""
    unused = [name for name in sorted(job.model_fields_set) if name not in ATTACK_JOB_FIELDS
              and getattr(job, name) != JobSettings.model_fields[name].default]
    if unused:
        raise CertifyError(f"certify attack confirms each point with fixed n0 + n views and takes no {unused[0]}; "
                           f"give the grid of radii as radii (--radii)")
    return job


def _radii(radii) -> tuple[float, ...]:
    try:
        values = sorted({float(r) for r in radii})
    except (TypeError, ValueError):
        raise CertifyError(f"--radii must be numbers, got {radii!r}") from None
    if not values or not all(math.isfinite(r) and r >= 0 for r in values):
        raise CertifyError(f"--radii must be finite numbers >= 0, got {', '.join(map(str, radii)) or 'none'}")
    return tuple(values)


class AttackJob:
    """The attack of some inputs of a data set, each record written to ``output`` as it is done.

    ``search`` makes the :class:`Search` from (run, the engine's vote groups, the input shape,
    seed). The job's settings are ``settings`` (a :class:`certifier.settings.JobSettings`) with
    ``values`` changed: the inputs chosen as :meth:`certifier.Run.job` chooses them, ``radii``
    the grid (default: the threat model's radii), ``n0``, ``n``, ``alpha`` and ``batch_size``
    the confirmations' sampling settings; ``certified``, the certify results file of these
    inputs, whose certificates are checked; ``bare`` also attacks the bare model. As a
    :class:`certifier.Job`: the file is locked while the job is open, a file of the same
    settings is resumed (``done``, ``todo``), iterating attacks the inputs left and yields
    each record, ``summary()`` is what ``certify report`` says.
    """

    #: the job's settings it takes (the rest of :class:`certifier.settings.JobSettings` are certify's alone)
    job_fields = ATTACK_JOB_FIELDS

    def __init__(self, run, data, labels=None, *, search: Callable[..., Search], bare: bool = True,
                 split: str | None = None, settings: JobSettings | None = None, output=None, certified=None, **values):
        job = attack_settings(JobSettings.of(settings, values, caller="AttackJob"))
        self.run, self.method, self.seed, self.bare = run, run.method, job.seed, bool(bare)
        self.threat = threat_of(self.method)
        self.radii = _radii(self.threat.radii if job.radii is None else job.radii)
        paths = [("--data", data if isinstance(data, (str, Path)) else None), ("--certified", certified),
                 ("the model", run.model.path)]
        if output is not None:
            check_output_file(output, "--output", paths)
        confirmations = job.replace(seed=confirmation_seed(job.seed), radii=None)
        self._certify_job = run.job(data, labels, split=split, settings=confirmations)
        self.engine, self.dataset = self._certify_job.engine, self._certify_job.dataset
        self.indices = list(self._certify_job.indices)
        self.certified_path = Path(certified) if certified is not None else None
        self.certificates, self._certified_header = self._read_certificates()
        self.search = search(run, self.engine.groups, tuple(self.dataset.shape), job.seed)
        self.header = self._header()
        self.output = Path(output) if output is not None else None
        self._file = None
        if self.output is not None:
            if self.indices:
                self.dataset.batch(self.indices[:1])  # refuse bad data before a file is written
            self._file = ResultsFile(self.output, self.header, record_type=RECORD_TYPE, record_problem=record_problem)
        stored = self._file.done if self._file is not None else {}
        #: records of these inputs the results file already held
        self.done = [stored[i] for i in self.indices if i in stored]
        #: the inputs left to attack when the job was opened
        self.todo = [i for i in self.indices if i not in stored]
        #: every record of these inputs so far
        self.records: list[dict] = list(self.done)

    # -- setting up ----------------------------------------------------------------

    def _read_certificates(self) -> tuple[dict[int, dict], dict | None]:
        """The certificates of the certify results file given, by input index."""
        if self.certified_path is None:
            return {}, None
        try:
            header, records = load_any_results(self.certified_path)
        except CertifyError as error:
            raise CertifyError(f"--certified: {error}") from None
        if is_attack(header) or header.get("mode", "certify") != "certify":
            raise CertifyError(f"--certified {self.certified_path.name} is not the results file of a certify run (its "
                               f"mode is {header.get('mode')!r}); give the file certify wrote for these inputs")
        counted, problems = audit(records, header)
        if problems:  # such a record certifies nothing, so its certificate would go unchecked
            found = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in sorted(problems.items()))
            raise CertifyError(f"--certified {self.certified_path.name} holds records its certify run could not have "
                               f"written ({found}); certify report names them; give the file certify wrote")
        return {r["source"]["index"]: {"prediction": r["prediction"], "radius": r["radius"]}
                for r in counted if is_index(r["source"].get("index"))}, header

    def _header(self) -> dict[str, Any]:
        """The certify header of these settings (mode "attack"), with the attack's own under "attack"."""
        certified = self._certified_header
        attack = {"radii": list(self.radii), "bare": self.bare, "gradient": self.search.method,
                  **self.search.settings,
                  "certified": header_fingerprint(certified) if certified is not None else None,
                  "certified_alpha": certified.get("alpha") if certified is not None else None}
        header = build_attack_header(self._certify_job.header, seed=self.seed, attack=attack,
                                     certified=self.certified_path, gradient_note=self.search.note)
        if certified is not None:
            difference = classifier_difference(certified, json.loads(json.dumps(header)))
            if difference:
                raise CertifyError(f"--certified {self.certified_path.name} certified another classifier or other "
                                   f"inputs ({difference}); give the certify results of this model, plugin and data")
        return header

    # -- running ---------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict]:
        for index in self.todo[len(self.records) - len(self.done):]:
            record = self._attack_input(index)
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
        return summarize_attack(json.loads(json.dumps(self.header)), self.records)

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
        method = self.method
        x = np.ascontiguousarray(method.check_inputs(self.dataset.batch([index]))[0], dtype=np.float32)
        label = self.dataset.label(index)
        self.search.passes = 0
        self.search.begin(index, x)
        passes = [0]
        slots = len(self.radii) + 2  # the input, each radius, an alarm's second look
        confirm = functools.partial(self._confirm, index, slots, passes)
        prediction = confirm(0, x)
        certificate = self.certificates.get(index)
        record: dict[str, Any] = {"type": RECORD_TYPE, "index": index, "label": label, "prediction": prediction,
                                  "correct": None if label is None else prediction == label, "smoothed": []}
        if certificate is not None:
            record["certified"] = certificate
        checked = certificate is not None and certificate["prediction"] is not None and certificate["radius"] > 0
        flip = None
        if prediction is not None and (label is None or prediction == label or checked):
            record["smoothed"], flip = self._smoothed_outcomes(x, prediction, certificate, confirm)
        if self.bare:
            record["bare"] = self._bare_outcomes(x, label)
        if checked:
            kind, alarm = self._alarm(x, record, certificate, flip, confirm, slots - 1)
            if alarm is not None:
                record[kind] = alarm
        record["forward_passes"] = passes[0] + self.search.passes
        record["seconds"] = time.perf_counter() - started
        return record

    def _confirm(self, index: int, slots: int, passes: list, slot: int, point: np.ndarray) -> int | None:
        """The engine's certified class at ``point`` on fresh views (None: it abstained), from a
        noise stream of this input and ``slot`` alone."""
        (result,) = list(self.engine.run(_Point(point), [index * slots + slot]))
        passes[0] += result.forward_passes
        return result.prediction

    def _checked(self, x: np.ndarray, point: np.ndarray, distance: float, radius: float) -> float:
        """The distance of a point the search found, which must lie within ``radius``: recomputed
        here for the pixel norms (a search's bug cannot make a point count that is not in the ball)."""
        if STANDARD.get(self.threat.name) == self.threat:
            change = point.astype(np.float64).reshape(-1) - x.astype(np.float64).reshape(-1)
            distance = float(np.linalg.norm(change, ord={"l1": 1, "l2": 2, "linf": np.inf}[self.threat.name]))
        if not distance <= radius * (1 + _ROUNDING):
            raise CertifyError(f"internal error: the attack's search gave a point at distance {distance!r}, beyond "
                               f"radius {radius!r}; nothing was written for this input")
        return distance

    def _smoothed_outcomes(self, x, target: int, certificate: dict | None, confirm) -> tuple[list[dict], tuple | None]:
        """One outcome per radius above 0, smallest first, and the first point confirmed as another
        class, with its outcome (None: none was). The attack stops there; after an abstention it
        goes on only below the certified radius, where another class would be a soundness alarm."""
        outcomes: list[dict] = []
        flip, broken = None, False
        reach = certificate["radius"] if certificate and certificate["prediction"] is not None else None
        for number, radius in enumerate(self.radii, 1):
            if radius == 0:
                continue
            if flip is not None or (broken and not (reach is not None and self._within(radius, reach))):
                outcomes.append({"radius": radius, "outcome": IMPLIED})
                continue
            entry: dict[str, Any] = {"radius": radius, "outcome": HELD, "prediction": target}
            # a search may offer several points (every shift of the radius): an abstention at one is
            # kept, but the next may still move the class, which is what an alarm needs
            for point, distance, extra in self.search.smoothed(target, radius, number):
                found = confirm(number, point)
                seen = {"distance": self._checked(x, point, distance, radius), "prediction": found, **extra}
                if found not in (None, target):
                    entry.update(seen, outcome=FLIPPED)
                    break
                if entry["outcome"] == HELD:
                    entry.update(seen, outcome=HELD if found == target else ABSTAINED)
            outcomes.append(entry)
            broken = broken or entry["outcome"] != HELD
            if entry["outcome"] == FLIPPED:
                flip = (point, entry)
        return outcomes, flip

    def _bare_outcomes(self, x: np.ndarray, label: int | None) -> dict | None:
        """The bare model's class at the input and, if right (or unlabeled), one outcome per radius
        (its classes are exact: onnxruntime on the point, no sampling)."""
        found = self.search.bare_predictions(x[None])
        if found is None:
            return None
        prediction = int(found[0])
        outcomes: list[dict] = []
        if label is not None and prediction != label:
            return {"prediction": prediction, "outcomes": outcomes}
        broken = False
        for number, radius in enumerate(self.radii, 1):
            if radius == 0:
                continue
            if broken:
                outcomes.append({"radius": radius, "outcome": IMPLIED})
                continue
            entry: dict[str, Any] = {"radius": radius, "outcome": HELD, "prediction": prediction}
            for point, distance, extra in self.search.bare(prediction, radius, number):
                moved = int(self.search.bare_predictions(point[None])[0])
                entry.update(distance=self._checked(x, point, distance, radius), prediction=moved, **extra)
                if moved != prediction:
                    entry["outcome"] = FLIPPED
                    break
            outcomes.append(entry)
            broken = entry["outcome"] == FLIPPED
        return {"prediction": prediction, "outcomes": outcomes}

    def _within(self, size: float, certified: float) -> bool:
        """Whether a change of ``size`` is one a certificate of radius ``certified`` covers."""
        if self.threat.display == "shift":
            return math.floor(size) <= math.floor(certified)
        return size < certified

    def _alarm(self, x, record, certificate, flip, confirm, slot) -> tuple[str, dict | None]:
        """A soundness alarm: a point within the certified radius that the engine confirmed as another
        class than the certified one, confirmed again on views of its own. Returns the record's key
        ("alarm", or "unconfirmed_alarm" when the second look disagreed) and what it holds (None:
        there was no such point)."""
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
                 "certified_prediction": certified, "certified_radius": reach, "second_prediction": again}
        return ("alarm" if again not in (None, certified) else "unconfirmed_alarm"), alarm
