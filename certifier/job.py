"""A job: one certification of a data set, each input's record written to a results file as it finishes.

The command line, Python programs and any executor that spreads inputs over machines
run certifications through :class:`Job`: it selects the inputs, writes the header (or
resumes a results file and finds the inputs left), and writes and keeps every record.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from .engine import Engine, InputResult
from .errors import CertifyError
from .methods import threat_of
from .results import ResultsFile
from .summaries import prediction_summary, summarize
from .threats import ThreatModel

if TYPE_CHECKING:
    from .api import Run
    from .data import Dataset

#: Runs a job's engine over the inputs left and yields each one's result in their order;
#: the engine's own ``run`` unless an executor (Ray, say) runs whole inputs elsewhere.
Executor = Callable[["Job", list[int]], Iterator[InputResult]]


def select(count: int, *, indices: Sequence[int] | None, limit: int | None, skip: int) -> list[int]:
    """The inputs a job certifies, in order: every ``skip``-th of the first ``count`` (Cohen's
    --skip), at most ``limit`` of them; or the ``indices`` given (``JobSettings`` allows one or the other)."""
    if indices is None:
        return list(range(0, count, skip)[:limit])  # a range sliced lazily: the data may declare 10^9 rows
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

    ``header`` is the results header (``certifier.header.build_header``), or a function that
    makes it when first needed; ``radii`` are the radii ``summary`` reports by default.
    """

    def __init__(self, run: Run, engine: Engine, dataset: Dataset, indices: Iterable[int], *,
                 header: Mapping[str, Any] | Callable[[], Mapping[str, Any]], mode: str = "certify",
                 output: str | Path | None = None, format: str = "jsonl", executor: Executor | None = None,
                 radii: Iterable[float] | None = None):
        self.run, self.engine, self.dataset, self.mode = run, engine, dataset, mode
        #: the radii :meth:`summary` reports by default (None: a sequential plan's levels, else the threat model's)
        self.radii = list(radii) if radii is not None else None
        #: what certifies the inputs (None: this process, through the engine)
        self.executor = executor
        #: the inputs this job certifies, in order
        self.indices = list(indices)
        self.output = Path(output) if output is not None else None
        self._header = header
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
        """Everything that determines the results, as the results file records it
        (``certifier.header``); made when first asked for (the data's hash takes a read)."""
        return dict(self._header() if callable(self._header) else self._header)

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
        at ``radii`` (default: the job's, else a sequential plan's levels, else the threat model's)."""
        if not self.records:
            raise CertifyError("no inputs to certify (check --limit and --skip)")
        if self.mode == "predict":
            return prediction_summary(self.records)
        if radii is None:
            radii = self.radii if self.radii is not None else getattr(self.engine.plan, "levels", None)
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
