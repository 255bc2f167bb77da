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
import numbers
import operator
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .errors import DEBUG_VARIABLE, CertifyError, caused_by_interrupt, first_line, one_line
from .methods import Certificate, SmoothingMethod, Votes, threat_of
from .model import OnnxModel
from .noise import NOISE_STREAM, NOISE_STREAMS, stream_generator
from .sampling import (
    ENUMERATION, ESTIMATION, PREDICTION, SAMPLINGS, SELECTION, SEQUENTIAL_BATCH, Enumeration, FixedSampling,
    make_plan,
)
from .space import ModelAdapter

#: Each phase's part of the noise streams' keys: never change them, or seeds give other views.
_PHASE_KEYS = {SELECTION: 0, ESTIMATION: 1, PREDICTION: 2, ENUMERATION: 3}
#: Aim for batches of about this many bytes of float32 views.
BATCH_BYTES = 1 << 23
MAX_AUTO_BATCH = 4096
#: Largest -n and --n0: far beyond any run that can finish, and vote counts stay exact
#: in the float64 arithmetic of the confidence bounds (up to 2^53).
MAX_SAMPLES = 10**15
#: Seeds are non-negative and fit in a signed 64-bit integer (what other tools read back).
MAX_SEED = 2**63 - 1
#: Largest batch of views (float32 bytes) one model call may hold, whatever --batch-size says.
MAX_BATCH_BYTES = 1 << 31


def _whole_number(name: str, value: Any) -> int:
    """``value`` as an int when it is a whole number (not a bool), else a one-line error."""
    if isinstance(value, (bool, np.bool_)):
        raise CertifyError(f"{name} must be a whole number, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise CertifyError(f"{name} must be a whole number, got {value!r}")


def check_settings(*, n0: Any = 100, n: Any = 100_000, alpha: Any = 0.001, seed: Any = 0,
                   batch_size: Any = None, deterministic: bool = False) -> tuple[int, int, float, int]:
    """Refuse sampling settings that cannot work, each in one line; returns (n0, n, alpha, seed).

    Deterministic methods draw no samples: -n and --n0 are not used, only kept in bounds.
    """
    n0, n = _whole_number("--n0", n0), _whole_number("-n", n)
    for name, value in (("--n0", n0), ("-n", n)):
        if value < 1 and not deterministic:
            raise CertifyError("--n0 and -n must be at least 1")
        if value > MAX_SAMPLES:
            raise CertifyError(f"{name} must be at most 10^15 (samples per input), got {value:.3g}")
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real) or not (0 < alpha < 1):
        raise CertifyError(f"--alpha must be between 0 and 1 (exclusive), got {alpha!r}")
    seed = _whole_number("--seed", seed)
    if not 0 <= seed <= MAX_SEED:
        raise CertifyError(f"--seed must be between 0 and 2^63 - 1, got {seed}")
    if batch_size is not None and _whole_number("--batch-size", batch_size) < 1:
        raise CertifyError(f"--batch-size must be at least 1, got {batch_size}")
    return n0, n, float(alpha), seed


def plugin_call(method: SmoothingMethod, hook: str, function: Callable, *args, **kwargs):
    """Call one of a plugin's methods; any failure but a CertifyError becomes one line naming the plugin."""
    try:
        return function(*args, **kwargs)
    except CertifyError:
        raise
    except MemoryError:
        raise CertifyError(f"out of memory in plugin {method.name}'s {hook}(); lower --batch-size "
                           f"(or --workers)") from None
    except Exception as error:
        if caused_by_interrupt(error):
            raise KeyboardInterrupt from None
        if os.environ.get(DEBUG_VARIABLE):
            raise
        raise CertifyError(f"plugin {method.name} failed in {hook}(): {one_line(error)} (a bug in the plugin: "
                           f"report it to its author; {DEBUG_VARIABLE}=1 shows the traceback)") from None


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


def auto_batch_size(view_shape: Sequence[int]) -> int:
    per_view = 4 * int(np.prod(view_shape))
    return int(max(1, min(MAX_AUTO_BATCH, BATCH_BYTES // per_view)))


class Engine:
    """Runs one smoothing method on one or more models over many inputs.

    Everything here is a setting fixed when the engine is built: a run keeps its state
    to itself, so one engine may serve several runs, and an engine built elsewhere from
    the same settings gives the same results.
    """

    def __init__(
        self,
        method: SmoothingMethod,
        groups: Mapping[str, Group],
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int | None = None,
        seed: int = 0,
        workers: int | None = None,
        prefetch: int = 8,
        plan=None,
        sampling: str = "fixed",
        levels: Sequence[float] | None = None,
        input_shape: Sequence[int] | None = None,
        noise_stream: int = NOISE_STREAM,
    ):
        if set(groups) != set(method.groups):
            raise CertifyError(f"plugin {method.name} needs models for groups {method.groups}, got {tuple(groups)}")
        n0, n, self.alpha, self.seed = check_settings(
            n0=n0, n=n, alpha=alpha, seed=seed, batch_size=batch_size, deterministic=method.deterministic)
        if isinstance(noise_stream, bool) or noise_stream not in NOISE_STREAMS:
            raise CertifyError(f"noise stream {noise_stream!r} is not one this version draws "
                               f"({', '.join(map(str, NOISE_STREAMS))}); upgrade certifier to resume that file")
        #: which views a seed gives (``certifier.noise``); results files record it
        self.noise_stream = int(noise_stream)
        self.method = method
        self.groups = [groups[name] for name in method.groups]
        #: the shape of every input (C, H, W) or (D,); None: whatever the groups' views fit
        self.input_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        if sampling not in SAMPLINGS:
            raise CertifyError(f"--sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        adaptive = sampling != "fixed" or bool(getattr(plan, "adaptive", False))
        if method.deterministic and adaptive:
            raise CertifyError(f"plugin {method.name} is exact (it runs every view once, no sampling): "
                               f"--sampling sequential does not apply to it; drop it")
        auto = min(auto_batch_size(g.adapter.view_shape) for g in self.groups)
        if adaptive:
            auto = min(auto, SEQUENTIAL_BATCH)  # the engine looks at the votes after whole batches
        self.batch_size = _whole_number("--batch-size", batch_size) if batch_size is not None else auto
        if method.deterministic:
            if self.input_shape is None:
                raise ValueError(f"plugin {method.name} enumerates views: the engine needs the input shape")
            plan = Enumeration(self._num_views(self.input_shape))
        elif plan is None:
            if sampling == "sequential" and levels is None:
                levels = threat_of(method).radii  # the radii its summary reports
            plan = make_plan(sampling, n0=n0, n=n, alpha=self.alpha, levels=levels,
                             **({"granularity": self.batch_size} if sampling != "fixed" else {}))
        #: how many views each input gets, and the confidence bounds that are valid for them
        self.plan = plan
        #: batches in flight at once; by default what the models ask for
        self.workers = max(1, workers or max(getattr(g.model, "parallel_runs", 1) for g in self.groups))
        # Results are consumed in order; a deep queue keeps every worker busy while the
        # oldest batch finishes. A queued or finished job holds only its labels.
        self.prefetch = max(1, prefetch)
        #: radius ceilings by (predicted class, number of classes), for these settings
        self._ceilings: dict[tuple[int, int], float] = {}
        self._check_batch_memory()
        self.radius_ceiling()  # refuses settings whose best certificate overflows

    def _num_views(self, input_shape: tuple[int, ...]) -> int:
        method = self.method
        count = plugin_call(method, "num_views", method.num_views, input_shape)
        if isinstance(count, (bool, np.bool_)) or not isinstance(count, numbers.Integral):
            raise CertifyError(f"plugin {method.name}: num_views() must return an int, got {count!r}")
        count = int(count)
        if not 1 <= count <= MAX_SAMPLES:
            raise CertifyError(f"plugin {method.name}: num_views() gave {count} views per input; it must be "
                               f"between 1 and 10^15")
        return count

    def _check_batch_memory(self) -> None:
        """Refuse a --batch-size whose views alone would not fit in MAX_BATCH_BYTES."""
        largest = max(self.plan.budget(phase) for phase in (*self.plan.phases(), *self.plan.phases(predict=True)))
        per_view = 4 * max(int(np.prod(g.adapter.view_shape)) for g in self.groups)
        views = min(self.batch_size, largest)
        if views * per_view > MAX_BATCH_BYTES:
            fits = max(1, MAX_BATCH_BYTES // per_view)
            raise CertifyError(
                f"--batch-size {self.batch_size} would put {views * per_view / 2**30:.3g} GiB of views in one "
                f"batch; use at most {fits} (or leave it out for about 8 MB per batch)"
            )

    # -- building views ------------------------------------------------------

    def _rng(self, job: _Job) -> np.random.Generator:
        # One independent stream per (input, phase, group, batch): results do not
        # depend on thread scheduling, and selection never shares draws with estimation.
        key = (job.index, _PHASE_KEYS[job.phase], job.group, job.batch)
        return stream_generator(np.random.SeedSequence(self.seed, spawn_key=key), self.noise_stream)

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
        if not isinstance(views, np.ndarray):
            raise CertifyError(f"plugin {method.name}: {hook}() returned {_kind(views)}; it must return a numpy "
                               f"array of views")
        if views.shape != (size,) + group.adapter.view_shape:
            raise CertifyError(
                f"plugin {method.name} made views of shape {views.shape[1:]} for group "
                f"{group.name!r}; it declared {group.adapter.view_shape}"
            )
        if views.dtype.kind not in "biuf":
            raise CertifyError(f"plugin {method.name} made views of dtype {views.dtype}; views are real numbers "
                               f"in pixel space (float32)")
        # A finite sum proves every value finite; a sum can overflow, so only then look closer.
        if views.dtype.kind == "f" and not np.isfinite(views.sum()) and not np.isfinite(views).all():
            raise CertifyError(
                f"plugin {method.name} made views holding NaN or infinity (input {job.index}, group "
                f"{group.name!r}){self._overflow_hint()}"
            )
        return views

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
            x = plugin_call(method, "check_inputs", method.check_inputs, batch)
            if not isinstance(x, np.ndarray) or x.shape != batch.shape or x.dtype.kind not in "biuf":
                raise CertifyError(f"plugin {method.name}: check_inputs() must return an array like its input "
                                   f"(shape {batch.shape}), got {_kind(x)}")
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
            prediction = _class_index(method, "predict()", answer, classes)
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
        if not isinstance(answer, Certificate):
            raise CertifyError(f"plugin {method.name}: certify() must return a certifier.Certificate, "
                               f"not {_kind(answer)}")
        radius = _radius_value(method, answer.radius)
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


def _kind(value: Any) -> str:
    """How a wrong answer is named in an error: None, or its type ("a numpy.float64")."""
    if value is None:
        return "None"
    kind = type(value)
    return f"a {kind.__name__}" if kind.__module__ == "builtins" else f"a {kind.__module__}.{kind.__name__}"


def _class_index(method: SmoothingMethod, where: str, value: Any, classes: int) -> int | None:
    """A plugin's predicted class as an int in [0, classes), or None (abstain)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise CertifyError(f"plugin {method.name}: {where} gave the prediction {value!r} ({_kind(value)}); "
                           f"a prediction is a class index (an int) or None to abstain")
    value = int(value)
    if not 0 <= value < classes:
        raise CertifyError(f"plugin {method.name}: {where} predicted class {value}, but the model's classes are "
                           f"0..{classes - 1}; abstain with None")
    return value


def _radius_value(method: SmoothingMethod, radius: Any) -> float:
    if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, numbers.Real):
        raise CertifyError(f"plugin {method.name} gave the radius {radius!r} ({_kind(radius)}); a radius is a number")
    return float(radius)


def checked_certificate(method: SmoothingMethod, certificate: Any, classes: int) -> Certificate:
    """A plugin's certificate, validated and made of plain Python values (what results files hold)."""
    if not isinstance(certificate, Certificate):
        raise CertifyError(f"plugin {method.name}: certify() must return a certifier.Certificate, "
                           f"not {_kind(certificate)}")
    prediction = _class_index(method, "certify()", certificate.prediction, classes)
    radius = _radius_value(method, certificate.radius)
    if not (math.isfinite(radius) and radius >= 0):
        raise CertifyError(f"plugin {method.name} returned an invalid radius {radius!r} (a radius is a finite "
                           f"number >= 0)")
    if prediction is None and radius != 0:
        raise CertifyError(f"plugin {method.name} abstained with a non-zero radius")
    exact = certificate.exact
    if not isinstance(exact, (bool, np.bool_)):
        raise CertifyError(f"plugin {method.name}: a certificate's exact must be True or False, got {exact!r}")
    if exact and not method.deterministic:
        raise CertifyError(f"plugin {method.name} is randomized (it samples views) but marked a certificate "
                           f"exact; only deterministic methods give exact certificates")
    conditional = certificate.conditional
    if conditional is not None and not isinstance(conditional, str):
        raise CertifyError(f"plugin {method.name}: a certificate's conditional must be a string or None, "
                           f"got {conditional!r}")
    if not isinstance(certificate.details, Mapping):
        raise CertifyError(f"plugin {method.name}: a certificate's details must be a dict, "
                           f"got {_kind(certificate.details)}")
    details = _plain(method, certificate.details, "details")
    return Certificate(prediction, radius, bool(exact), conditional, details)


def _plain(method: SmoothingMethod, value: Any, where: str):
    """``value`` with numpy scalars and arrays made plain Python (JSON) values; NaN and inf become None."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _plain(method, value.tolist(), where)
    if isinstance(value, Mapping):
        return {str(k): _plain(method, v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(method, v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CertifyError(f"plugin {method.name} put {_kind(value)} in its certificate's {where}; details hold "
                       f"numbers, strings, lists and dicts")
