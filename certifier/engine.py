"""The certification engine: views in, votes counted, certificates out.

The engine owns what every method shares: batches that each make their views and
run the model on worker threads, several at once (numpy, numba kernels and
onnxruntime all release the GIL), counting votes per group, keeping selection and
estimation samples apart, the confidence bounds and the results. A method only
says how to make views and how to turn votes into a certificate.
"""

from __future__ import annotations

import collections
import math
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .errors import CertifyError, first_line
from .guard import (
    checked_certificate, checked_inputs, checked_prediction, checked_views, is_certificate, plugin_call, radius_value,
)
from .methods import Certificate, SmoothingMethod, Votes, threat_of
from .model import OnnxModel
from .planning import EnginePlan, plan_engine
from .sampling import ENUMERATION, ESTIMATION, PREDICTION, SELECTION
from .settings import JobSettings
from .space import ModelAdapter

#: Each phase's part of the noise streams' keys: never change them, or seeds give other views.
_PHASE_KEYS = {SELECTION: 0, ESTIMATION: 1, PREDICTION: 2, ENUMERATION: 3}


@dataclass
class Group:
    """Where one vote group's views go: pixel-space views, mapped to the model's input, labelled by the model."""

    name: str
    model: OnnxModel
    adapter: ModelAdapter
    #: with a denoiser: the denoiser, the adapter's mapping and the model as one graph that
    #: reads pixel-space views (``certifier.denoiser``); None without one
    denoised: OnnxModel | None = None

    def labels(self, views: np.ndarray) -> np.ndarray:
        """The class the model gives each view of a batch (pixel space)."""
        if self.denoised is not None:
            return self.denoised.labels(np.ascontiguousarray(views, dtype=np.float32))
        return self.model.labels(self.adapter(views))

    def settle(self) -> None:
        """Let a model whose input shape is not all declared learn its class count from a first run."""
        settle = getattr(self.model, "settle", None)
        if settle is not None:
            settle(self.adapter(np.zeros((1, *self.adapter.view_shape), np.float32)).shape[1:])
        if self.denoised is not None:
            self.denoised.settle(self.adapter.view_shape)


@dataclass
class InputResult:
    index: int
    label: int | None
    certificate: Certificate | None
    prediction: int | None
    forward_passes: int
    seconds: float


@dataclass
class _Job:
    index: int
    phase: str
    group: int
    batch: int
    start: int
    stop: int
    x: np.ndarray


@dataclass
class _Input:
    """One input in flight under an adaptive plan."""

    index: int
    x: np.ndarray
    votes: dict[str, list[np.ndarray]]
    queue: collections.deque = field(default_factory=collections.deque)  # batches not yet submitted
    outstanding: int = 0  # batches submitted, not yet counted
    drawn: int = 0  # estimation views asked for, per group
    passes: int = 0
    sequential: Any = None  # the plan's state for this input, once selection is in
    certificate: Certificate | None = None  # set when the plan stops


class _CheckedRule:
    """A plugin's certify() as an adaptive plan calls it: failures are one line, answers checked."""

    def __init__(self, engine: "Engine", classes: int):
        self.method, self.classes = engine.method, classes

    def certify(self, selection: Votes, estimation: Votes, alpha: float) -> Certificate:
        method = self.method
        answer = plugin_call(method, "certify", method.certify, selection, estimation, alpha)
        return checked_certificate(method, answer, self.classes)


class Engine:
    """Runs one smoothing method on one or more models over many inputs.

    It takes a ready plan (``certifier.planning.EnginePlan``: the sampling plan, alpha, seed,
    batch size) and decides nothing about settings itself. Everything here is fixed when the
    engine is built: a run keeps its state to itself, so one engine may serve several runs,
    and an engine built elsewhere from the same plan gives the same results.
    """

    def __init__(self, method: SmoothingMethod, groups: Mapping[str, Group], plan: EnginePlan, *,
                 prefetch: int = 8):
        if set(groups) != set(method.groups):
            raise CertifyError(f"plugin {method.name} needs models for groups {method.groups}, got {tuple(groups)}")
        self.method = method
        self.groups = [groups[name] for name in method.groups]
        #: what the engine was made ready with (``certifier.planning``)
        self.engine_plan = plan
        #: how many views each input gets, and the confidence bounds that are valid for them
        self.plan = plan.sampling
        self.alpha, self.seed, self.batch_size = plan.alpha, plan.seed, plan.batch_size
        #: the shape of every input (C, H, W) or (D,); None: whatever the groups' views fit
        self.input_shape = plan.input_shape
        #: batches in flight at once; by default what the models ask for
        self.workers = max(1, plan.workers or max(getattr(g.model, "parallel_runs", 1) for g in self.groups))
        # Results are consumed in order; a deep queue keeps every worker busy while the
        # oldest batch finishes. A queued or finished job holds only its labels.
        self.prefetch = max(1, prefetch)
        #: radius ceilings by (predicted class, number of classes), for these settings
        self._ceilings: dict[tuple[int, int], float] = {}
        self.radius_ceiling()  # refuses settings whose best certificate overflows

    @classmethod
    def from_settings(cls, method: SmoothingMethod, groups: Mapping[str, Group], settings: JobSettings | None = None,
                      *, input_shape: Sequence[int] | None = None, sampling: Any = None, prefetch: int = 8,
                      **values) -> "Engine":
        """An engine planned from job settings (``settings`` with ``values`` changed; see
        :func:`certifier.planning.plan_engine`, which ``sampling`` passes a plan of one's own)."""
        settings = JobSettings.of(settings, values, caller="Engine.from_settings")
        plan = plan_engine(method, groups, settings, input_shape=input_shape, sampling=sampling)
        return cls(method, groups, plan, prefetch=prefetch)

    # -- building views ------------------------------------------------------

    def _rng(self, job: _Job) -> np.random.Generator:
        # One independent stream per (input, phase, group, batch): results do not
        # depend on thread scheduling, and selection never shares draws with estimation.
        key = (job.index, _PHASE_KEYS[job.phase], job.group, job.batch)
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=key)))

    def _make_views(self, job: _Job) -> np.ndarray:
        group = self.groups[job.group]
        method = self.method
        size = job.stop - job.start
        x = np.broadcast_to(job.x, (size,) + job.x.shape)
        # Overflow shows up as non-finite views, refused below in one line: no numpy warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            if job.phase == ENUMERATION:
                hook = "views"
                views = plugin_call(method, hook, method.views, x, np.arange(job.start, job.stop), group.name)
            else:
                hook = "sample"
                views = plugin_call(method, hook, method.sample, x, self._rng(job), group.name)
        return checked_views(method, hook, views, (size,) + group.adapter.view_shape, group.name, job.index,
                             self._overflow_hint)

    def _overflow_hint(self) -> str:
        sigma = self.method.sigma
        if sigma is not None and sigma * 16 > np.finfo(np.float32).max:
            return f"; sigma {sigma:g} overflows float32 views: lower --sigma (or -o lambda)"
        return "; if its settings are sane, the plugin has a bug: report it to its author"

    def _labels(self, job: _Job) -> np.ndarray:
        """Make one batch of views and label it (runs on a worker thread)."""
        views = self._make_views(job)
        try:
            return self.groups[job.group].labels(views)
        except CertifyError:
            raise
        except Exception as error:  # onnxruntime raises its own exception types
            raise CertifyError(f"onnxruntime failed on input {job.index}: {first_line(error)}") from None

    def _jobs(self, x: np.ndarray, index: int, phases: Sequence[str]) -> Iterator[_Job]:
        """The batches of one input, phase by phase, chunk by chunk as the plan says."""
        for phase in phases:
            start, batches = 0, 0
            for chunk in self.plan.chunks(phase):
                stop = start + chunk
                for group_number in range(len(self.groups)):
                    for batch, first in enumerate(range(start, stop, self.batch_size), batches):
                        yield _Job(index, phase, group_number, batch, first, min(first + self.batch_size, stop), x)
                batches += -(-chunk // self.batch_size)
                start = stop

    # -- running -------------------------------------------------------------

    def _input_jobs(self, load: Callable[[int], np.ndarray], indices: Iterable[int],
                    phases: Sequence[str]) -> Iterator[_Job]:
        for index in indices:
            x = load(index)
            yield from self._jobs(x, index, phases)
            yield _Job(index, "done", -1, -1, 0, 0, x)

    def _count(self, counts: list[np.ndarray], group: int, labels: np.ndarray) -> None:
        """Add a batch's labels to a group's votes, which are as long as the class count:
        a label's value never sizes an array (the model refuses labels outside its classes)."""
        votes = counts[group]
        if len(labels) and (labels.min() < 0 or labels.max() >= len(votes)):
            bad = labels.min() if labels.min() < 0 else labels.max()
            raise CertifyError(
                f"the model for group {self.groups[group].name!r} gave class {int(bad)}, "
                f"outside its {len(votes)} classes"
            )
        found = np.bincount(labels)  # as long as the largest label, at most the class count
        votes[: len(found)] += found

    def run(self, dataset, indices: Sequence[int], labels: Callable[[int], int | None] | None = None,
            mode: str = "certify") -> Iterator[InputResult]:
        """Certify (or, with mode="predict", predict) the inputs at ``indices`` in order."""
        predict = mode == "predict"
        indices = list(indices)
        if not indices:
            return
        method = self.method
        if self.input_shape is not None and tuple(dataset.shape) != self.input_shape:
            raise CertifyError(f"the engine was built for inputs of shape {'x'.join(map(str, self.input_shape))}, "
                               f"but the data's are {'x'.join(map(str, dataset.shape))}")

        def load(index: int) -> np.ndarray:
            batch = dataset.batch([index])
            x = checked_inputs(method, plugin_call(method, "check_inputs", method.check_inputs, batch), batch)
            return np.ascontiguousarray(x[0], dtype=np.float32)

        if self.plan.adaptive and predict:
            raise CertifyError(f"PREDICT draws a fixed n; --sampling {self.plan.name} is for certify: drop it")
        for group in self.groups:
            group.settle()  # votes are sized by the class count
        classes = max(2, *((g.model.num_classes or 2) for g in self.groups))
        if self.plan.adaptive:
            yield from self._run_adaptive(load, indices, labels, classes)
            return
        empty = lambda: [np.zeros(classes, dtype=np.int64) for _ in self.groups]  # noqa: E731
        votes: dict[str, list[np.ndarray]] = collections.defaultdict(empty)
        passes = 0
        last = time.perf_counter()
        jobs = self._input_jobs(load, indices, self.plan.phases(predict))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="certify-batch") as pool:
            pending: collections.deque = collections.deque()

            def refill() -> None:
                while len(pending) < self.prefetch + self.workers:
                    job = next(jobs, None)
                    if job is None:
                        return
                    future = None if job.phase == "done" else pool.submit(self._labels, job)
                    pending.append((job, future))

            refill()
            try:
                while pending:
                    job, future = pending.popleft()
                    refill()
                    if future is None:
                        now = time.perf_counter()
                        yield self._finish(job.index, votes, passes, now - last,
                                           labels(job.index) if labels else None, predict)
                        votes.clear()
                        passes, last = 0, now
                        continue
                    predicted = future.result()
                    self._count(votes[job.phase], job.group, predicted)
                    passes += len(predicted)
            finally:
                for _, future in pending:
                    if future is not None:
                        future.cancel()

    def _run_adaptive(self, load: Callable[[int], np.ndarray], indices: Sequence[int],
                      labels: Callable[[int], int | None] | None, classes: int) -> Iterator[InputResult]:
        """Certify the inputs in order under a plan that chooses each estimation chunk from the votes.

        An input's next chunk is asked for only once all its batches are counted, so
        several inputs are in flight at once to keep every worker busy: batches of the
        earliest inputs go first, a new input starts when no started one has a batch to
        give, and results come out in input order.
        """
        plan, size = self.plan, self.batch_size
        rule = _CheckedRule(self, classes)
        upcoming = iter(indices)
        window: collections.deque[_Input] = collections.deque()  # started inputs, in order, until yielded
        running: dict = {}  # future -> (input, job)
        in_flight = self.prefetch + self.workers
        last = time.perf_counter()

        def batches(state: _Input, phase: str, start: int, stop: int) -> Iterator[_Job]:
            # batch b holds views b * size .. (b + 1) * size of the phase, whatever chunk asked for it
            for group in range(len(self.groups)):
                for first in range(start, stop, size):
                    yield _Job(state.index, phase, group, first // size, first, min(first + size, stop), state.x)

        def start_next() -> bool:
            index = next(upcoming, None)
            if index is None:
                return False
            state = _Input(index, load(index), {phase: [np.zeros(classes, dtype=np.int64) for _ in self.groups]
                                                for phase in (SELECTION, ESTIMATION)})
            state.queue.extend(batches(state, SELECTION, 0, plan.budget(SELECTION)))
            window.append(state)
            return True

        def advance(state: _Input) -> None:
            """All the input's batches are counted: start its estimation, or draw the next chunk, or finish."""
            if state.sequential is None:
                state.sequential = plan.start(rule, self._votes(state.votes[SELECTION]))
            counts = {g.name: c.copy() for g, c in zip(self.groups, state.votes[ESTIMATION])}
            step = state.sequential.step(counts)
            if step.stop:
                state.certificate = step.certificate
                return
            budget = plan.budget(ESTIMATION)
            # whole batches, never past n
            stop = min(-(-(state.drawn + int(step.chunk)) // size) * size, budget)
            if not stop > state.drawn:
                raise AssertionError(f"the plan asked for {step.chunk} more views of input {state.index} "
                                     f"after {state.drawn} of {budget}")
            state.queue.extend(batches(state, ESTIMATION, state.drawn, stop))
            state.drawn = stop

        def submit() -> None:
            while len(running) < in_flight:
                state = next((s for s in window if s.queue), None)
                if state is None:
                    undecided = sum(s.certificate is None for s in window)
                    if undecided >= in_flight or len(window) >= 4 * in_flight or not start_next():
                        return
                    continue
                job = state.queue.popleft()
                running[pool.submit(self._labels, job)] = (state, job)
                state.outstanding += 1

        with ThreadPoolExecutor(self.workers, thread_name_prefix="certify-batch") as pool:
            try:
                while True:
                    submit()
                    while window and window[0].certificate is not None:
                        state = window.popleft()
                        now = time.perf_counter()
                        yield self._checked_result(state.index, state.certificate, classes,
                                                   labels(state.index) if labels else None, state.passes,
                                                   now - last)
                        last = now
                        submit()
                    if not running:
                        if window:
                            raise AssertionError("inputs started but nothing to wait for")
                        return
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        state, job = running.pop(future)
                        predicted = future.result()
                        self._count(state.votes[job.phase], job.group, predicted)
                        state.passes += len(predicted)
                        state.outstanding -= 1
                        if not state.outstanding and not state.queue:
                            advance(state)
            finally:
                for future in running:
                    future.cancel()

    def _votes(self, counts: list[np.ndarray]) -> Votes:
        return self.plan.votes({g.name: c for g, c in zip(self.groups, counts)})

    def _finish(self, index: int, votes, passes: int, seconds: float, label: int | None,
                predict: bool) -> InputResult:
        method = self.method
        classes = max((len(c) for counts in votes.values() for c in counts), default=2)
        if predict and not method.deterministic:
            answer = plugin_call(method, "predict", method.predict, self._votes(votes[PREDICTION]), self.alpha)
            prediction = checked_prediction(method, "predict()", answer, classes)
            return InputResult(index, label, None, prediction, passes, seconds)
        if method.deterministic:
            certificate = plugin_call(method, "certify", method.certify, None, self._votes(votes[ENUMERATION]),
                                      self.alpha)
        else:
            certificate = plugin_call(method, "certify", method.certify, self._votes(votes[SELECTION]),
                                      self._votes(votes[ESTIMATION]), self.alpha)
        return self._checked_result(index, certificate, classes, label, passes, seconds)

    def _checked_result(self, index: int, certificate: Any, classes: int, label: int | None, passes: int,
                        seconds: float) -> InputResult:
        """An input's result, once its certificate is checked and within the radius ceiling."""
        method = self.method
        certificate = checked_certificate(method, certificate, classes)
        if certificate.prediction is not None:
            ceiling = self.radius_ceiling(certificate.prediction, classes)
            # No tolerance: the ceiling is the method's own rule on the best votes possible, so a
            # true certificate comes from the same arithmetic on no better votes.
            if certificate.radius > ceiling:
                raise CertifyError(
                    f"plugin {method.name} certified radius {certificate.radius!r} for input {index}, above "
                    f"{ceiling!r}, what its own rule gives when every vote agrees: the plugin has a bug "
                    f"(report it to its author); nothing was written for this input"
                )
        return InputResult(index, label, certificate, certificate.prediction, passes, seconds)

    def radius_ceiling(self, prediction: int = 0, classes: int | None = None) -> float:
        """The largest radius this method certifies for class ``prediction`` with these settings.

        It is the method's own certificate when every vote (selection and estimation, every
        group) goes to that class, out of ``classes`` (default: the models' class count).
        Settings for which it is not a finite number, or is beyond the threat model's diameter
        (:meth:`_check_diameter`), are refused.
        """
        width = max(2, prediction + 1, classes or max((g.model.num_classes or 2) for g in self.groups))
        key = (prediction, width)
        if key in self._ceilings:
            return self._ceilings[key]
        method = self.method

        def unanimous(count: int) -> Votes:
            counts = np.zeros(width, dtype=np.int64)
            counts[prediction] = count
            return self.plan.votes({g.name: counts.copy() for g in self.groups})

        plan = self.plan
        if method.deterministic:
            answer = plugin_call(method, "certify", method.certify, None, unanimous(plan.budget(ENUMERATION)),
                                 self.alpha)
        else:
            answer = plugin_call(method, "certify", method.certify, unanimous(plan.budget(SELECTION)),
                                 unanimous(plan.budget(ESTIMATION)), self.alpha)
        radius = radius_value(method, is_certificate(method, answer).radius)
        if not math.isfinite(radius):
            raise CertifyError(
                f"plugin {method.name} gives radius {radius} when every vote agrees with these settings "
                f"({self._describe_settings()}): lower --sigma (or -o lambda) or -n"
            )
        self._check_diameter(radius)
        self._ceilings[key] = max(radius, 0.0) if answer.prediction is not None else 0.0
        return self._ceilings[key]

    def _check_diameter(self, ceiling: float) -> None:
        """Refuse settings whose best certificate covers more than the whole input space.

        Beyond the threat model's diameter a radius certifies nothing more (for L2, every
        input in [0, 1]^d is within sqrt(d)), yet it would count for more in ACR and mean
        radius. A correct rule reaches it only with noise wider than the inputs' whole range
        (rs with sigma 2 on 4 features at n = 50), a rule with sane settings never: so the
        settings are refused here, before anything runs, and since no radius may exceed the
        ceiling, no radius beyond the diameter is ever written (docs/writing-a-plugin.md).
        """
        threat = threat_of(self.method)
        diameter = threat.diameter(self.input_shape) if self.input_shape is not None else None
        if diameter is None or ceiling <= diameter:
            return
        shape = "x".join(map(str, self.input_shape))
        raise CertifyError(
            f"plugin {self.method.name} can certify radius {ceiling:.4g} with these settings "
            f"({self._describe_settings()}), but {threat.name} radius {diameter:.4g} already covers every input of "
            f"shape {shape} in [0, 1]: lower --sigma (or the plugin's noise option); if these settings are sane, "
            f"the plugin has a bug (report it to its author)"
        )

    def _describe_settings(self) -> str:
        method = self.method
        parts = [] if method.sigma is None else [f"sigma {method.sigma:g}"]
        options = getattr(method, "options", None)
        values = options.model_dump() if hasattr(options, "model_dump") else {}
        parts += [f"{name} {value:g}" for name, value in values.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool)]
        if not method.deterministic:
            parts += [f"n {self.plan.budget(ESTIMATION)}", f"alpha {self.alpha:g}"]
        return ", ".join(parts)
