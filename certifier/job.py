"""A job: one certification of a data set, each input's record written to a results file as it finishes.

The command line, Python programs and any executor that spreads inputs over machines
run certifications through :class:`Job`: it selects the inputs, writes the header (or
resumes a results file and finds the inputs left), and writes and keeps every record.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from . import __version__
from .engine import Engine, InputResult, check_settings
from .errors import CertifyError
from .methods import threat_of
from .results import ResultsFile
from .sampling import SAMPLINGS, check_levels
from .summaries import prediction_summary, summarize
from .threats import ThreatModel

if TYPE_CHECKING:
    from .api import Run
    from .data import Dataset

MODES = ("certify", "predict")
#: Runs a job's engine over the inputs left and yields each one's result in their order;
#: the engine's own ``run`` unless an executor (Ray, say) runs whole inputs elsewhere.
Executor = Callable[["Job", list[int]], Iterator[InputResult]]
#: --threads and --workers beyond this are typing mistakes (each thread or batch in flight costs memory).
MAX_PARALLEL = 1024


def check_job_settings(*, n0: Any = 100, n: Any = 100_000, alpha: Any = 0.001, seed: Any = 0,
                       batch_size: Any = None, workers: Any = None, threads: Any = None, limit: Any = None,
                       skip: Any = 1, sampling: str = "fixed", levels: Any = None, mode: str = "certify") -> None:
    """Refuse, each in one line, settings no smoothing method can run with; cheap, so it
    can run before the model loads (the engine checks the rest once the method is known)."""
    for name, value in (("--limit", limit), ("--skip", skip), ("--workers", workers), ("--threads", threads),
                        ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise CertifyError(f"{name} must be at least 1, got {value}")
    for name, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and value > MAX_PARALLEL:
            raise CertifyError(f"{name} must be at most {MAX_PARALLEL}, got {value}")
    check_settings(n0=n0, n=n, alpha=alpha, seed=seed, batch_size=batch_size, deterministic=True)
    if sampling not in SAMPLINGS:
        raise CertifyError(f"--sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if sampling == "sequential":
        if mode == "predict":
            raise CertifyError("PREDICT draws a fixed n; --sampling sequential is for certify: drop it")
        if levels is not None:
            check_levels(levels)
    elif levels is not None:
        raise CertifyError("levels (--radius) belong to --sampling sequential; drop them or add --sampling sequential")


def select(count: int, *, indices: Sequence[int] | None = None, limit: int | None = None,
           skip: int = 1) -> list[int]:
    """The inputs a job certifies, in order: every ``skip``-th of the first ``count`` (Cohen's
    --skip), at most ``limit`` of them; or the ``indices`` given."""
    if indices is None:
        return list(range(0, count, skip)[:limit])  # a range sliced lazily: the data may declare 10^9 rows
    if limit is not None or skip != 1:
        raise CertifyError("give either indices or limit and skip, not both")
    chosen = [int(i) for i in indices]
    outside = [i for i in chosen if not 0 <= i < count]
    if outside:
        raise CertifyError(f"input index {outside[0]} is out of range: the data holds {count} inputs")
    if len(set(chosen)) != len(chosen):
        raise CertifyError("indices must not repeat: each input is certified once")
    return chosen


@dataclass
class Result:
    """One certified input, as written to the results file."""

    index: int
    label: int | None
    prediction: int | None
    radius: float
    norm: str
    correct: bool | None
    forward_passes: int
    seconds: float
    exact: bool = False
    conditional: str | None = None
    details: dict = field(default_factory=dict)
    #: the name of the threat model the radius is in (the header describes it)
    threat_model: str | None = None
    #: contrast-like threat models (a radius bounds a log factor): the factors certified, rounded inwards
    factor_range: tuple[float, float] | None = None

    @classmethod
    def of(cls, done: InputResult, norm: str, threat: ThreatModel | None = None) -> "Result":
        """The record of one input the engine finished; the engine has already checked the plugin's
        answer (a class index or None, a finite radius within the ceiling, plain JSON details)."""
        certificate = done.certificate
        return cls(
            index=done.index,
            label=done.label,
            prediction=done.prediction,
            radius=certificate.radius if certificate else 0.0,
            norm=norm,
            correct=None if done.label is None else done.prediction == done.label,
            forward_passes=done.forward_passes,
            seconds=done.seconds,
            exact=certificate.exact if certificate else False,
            conditional=certificate.conditional if certificate else None,
            details=dict(certificate.details) if certificate else {},
            threat_model=threat.name if threat else None,
            factor_range=(threat.factor_range(certificate.radius)
                          if threat and threat.display == "factor" and done.prediction is not None else None),
        )

    def record(self) -> dict:
        out = {"type": "result", **{k: v for k, v in self.__dict__.items() if k not in ("details", "factor_range")}}
        if self.factor_range is not None:
            out["factor_range"] = list(self.factor_range)
        if self.details:
            out["details"] = self.details
        return out


def _denoiser_fields(denoiser) -> dict[str, Any]:
    """The header's record of a denoiser: its file, hash and metadata (nothing without one,
    so headers of runs without a denoiser stay as they were)."""
    if denoiser is None:
        return {}
    return {"denoiser": str(denoiser.path), "denoiser_sha256": denoiser.sha256,
            "denoiser_metadata": denoiser.description()}


class Job:
    """The certification of some inputs of a data set, written to ``output`` as it goes.

    Open one with :meth:`certifier.Run.job`. Opening it checks the data, and with an
    ``output`` writes the results header, or resumes the file: the file is locked for
    the job, ``done`` holds the records it already has, ``todo`` the inputs left.
    Iterating certifies the inputs left in order, writing each record as soon as it
    is done, and yields it as a :class:`Result`::

        with run.job("images.npz", output="run.jsonl", n=10_000, limit=100) as job:
            for result in job:
                print(result.index, result.prediction, result.radius)
        print(job.summary())
    """

    def __init__(self, run: Run, engine: Engine, dataset: Dataset, indices: Iterable[int], *,
                 mode: str = "certify", output: str | Path | None = None, format: str = "jsonl",
                 executor: Executor | None = None):
        if mode not in MODES:
            raise CertifyError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.run, self.engine, self.dataset, self.mode = run, engine, dataset, mode
        #: what certifies the inputs (None: this process, through the engine)
        self.executor = executor
        #: the inputs this job certifies, in order
        self.indices = list(indices)
        self.output = Path(output) if output is not None else None
        self._file: ResultsFile | None = None
        self._closed = False
        if self.output is not None:
            if self.indices:
                dataset.batch(self.indices[:1])  # data is read lazily: refuse bad data before a file is written
            self._file = ResultsFile(self.output, self.header, format)
        stored = self._file.done if self._file is not None else {}
        #: records of these inputs the results file already held
        self.done = [stored[i] for i in self.indices if i in stored]
        #: the inputs left to certify when the job was opened
        self.todo = [i for i in self.indices if i not in stored]
        #: every record of these inputs so far: those resumed, then those certified now
        self.records: list[dict] = list(self.done)

    @functools.cached_property
    def header(self) -> dict[str, Any]:
        """Everything that determines the results, as the results file records it."""
        run, engine, method = self.run, self.engine, self.run.method
        plan = {"n0": None, "n": None, **engine.plan.settings()}
        header = {
            "certifier_version": __version__,
            "mode": self.mode,
            "plugin": method.name,
            "norm": method.norm,
            "threat_model": threat_of(method).as_dict(),
            "settings": method.settings(),
            "exact": method.deterministic,
            "n0": None if self.mode == "predict" else plan["n0"],
            "n": plan["n"],
            "alpha": None if method.deterministic else engine.alpha,
            "seed": engine.seed,
            # views are drawn batch by batch, one noise stream per batch: a resumed run must keep the batch size
            "batch_size": None if method.deterministic else engine.batch_size,
            "sampling": engine.plan.name,
            # a plan's settings beyond n0 and n (the fixed plans have none)
            "sampling_settings": {k: v for k, v in plan.items() if k not in ("n0", "n")} or None,
            "model": str(run.model.path),
            "model_sha256": run.model.sha256,
            "group_models": {g.name: g.model.sha256 for g in engine.groups if g.model is not run.model},
            **_denoiser_fields(run.denoiser),
            "output_name": run.model.output.name if run.output_name else None,
            "output_kind": run.model.output.requested,
            "input_space": engine.groups[0].adapter.space.as_dict(),
            "resize": list(run.resize) if run.resize else None,
            "data": self.dataset.source,
            "data_sha256": self.dataset.fingerprint(),
            "radius_ceiling": None if self.mode == "predict" else engine.radius_ceiling(),
            "device": getattr(self.executor, "device", None) or run.model.device,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # which views the seed gives (certifier.noise; absent: stream 1); last, so that a header of an
            # older version torn by a kill is still recognised as the start of this one
            "noise_stream": engine.noise_stream,
        }
        if header["sampling_settings"] is None:
            del header["sampling_settings"]  # results files of the fixed plans stay as they were
        return header

    @property
    def saved(self) -> int:
        """How many results the results file holds, counted from the file (0 without one)."""
        return len(self._file.done) if self._file is not None else 0

    def __iter__(self) -> Iterator[Result]:
        left = self.todo[len(self.records) - len(self.done):]
        if left and self._file is not None and self._closed:
            raise CertifyError(f"the job writing {self.output} is closed; open another one to resume it")
        norm, threat = self.run.method.norm, threat_of(self.run.method)
        if self.executor is not None:
            finished = self.executor(self, left)
        else:
            finished = self.engine.run(self.dataset, left, labels=self.dataset.label, mode=self.mode)
        try:
            for position, done in enumerate(finished):
                if position >= len(left) or done.index != left[position]:
                    due = left[position] if position < len(left) else "none"
                    raise CertifyError(f"internal error: input {done.index} came back where input {due} was due; "
                                       f"nothing was written for it")
                result = Result.of(done, norm, threat)
                record = result.record()
                if self._file is not None:
                    self._file.write(record)
                self.records.append(record)
                yield result
        finally:
            # Stopped early (Ctrl-C, an error): finish the engine's or executor's run now, not
            # when the garbage collector gets to it in the middle of another run.
            close = getattr(finished, "close", None)
            if close is not None:
                close()

    def summary(self, radii: Iterable[float] | None = None) -> dict[str, Any]:
        """What ``certify report`` says about the records so far (PREDICT: inputs, abstentions, accuracy),
        at ``radii`` (default: a sequential plan's levels, else the threat model's)."""
        if not self.records:
            raise CertifyError("no inputs to certify (check --limit and --skip)")
        if self.mode == "predict":
            return prediction_summary(self.records)
        if radii is None:
            radii = getattr(self.engine.plan, "levels", None)  # None: summarize takes the threat model's
        return summarize(self.records, radii, self.header)

    def close(self) -> None:
        """Release the results file (and its lock); the records stay on disk."""
        self._closed = True
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
