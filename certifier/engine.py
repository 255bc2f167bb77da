"""The certification engine: views in, votes counted, certificates out.

The engine owns what every method shares: batches that each make their views and
run the model on worker threads, several at once (numpy, numba kernels and
onnxruntime all release the GIL), counting votes per group, keeping selection and
estimation samples apart, the confidence bounds and the results. A method only
says how to make views and how to turn votes into a certificate.
"""

from __future__ import annotations

import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .errors import CertifyError
from .methods import Certificate, SmoothingMethod, Votes
from .model import OnnxModel
from .space import ModelAdapter
from .stats import clopper_pearson_lower

SELECTION, ESTIMATION, PREDICTION, ENUMERATION = "selection", "estimation", "prediction", "enumeration"
_PHASE_KEYS = {SELECTION: 0, ESTIMATION: 1, PREDICTION: 2, ENUMERATION: 3}
#: Aim for batches of about this many bytes of float32 views.
BATCH_BYTES = 1 << 23
MAX_AUTO_BATCH = 4096


class FixedSampling:
    """Draw exactly n samples per phase; Clopper-Pearson bounds for a fixed n.

    A sequential rule would be another plan with its own anytime-valid
    ``lower_bound``; plugins only see bounds through :class:`Votes`, so they do not
    change.
    """

    name = "fixed"

    @staticmethod
    def lower_bound(successes: int, trials: int, alpha: float) -> float:
        return clopper_pearson_lower(successes, trials, alpha)


@dataclass
class Group:
    """Where one vote group's views go."""

    name: str
    model: OnnxModel
    adapter: ModelAdapter


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


def auto_batch_size(view_shape: Sequence[int]) -> int:
    per_view = 4 * int(np.prod(view_shape))
    return int(max(1, min(MAX_AUTO_BATCH, BATCH_BYTES // per_view)))


class Engine:
    """Runs one smoothing method on one or more models over many inputs."""

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
        plan=FixedSampling,
        input_shape: Sequence[int] | None = None,
    ):
        if set(groups) != set(method.groups):
            raise CertifyError(f"plugin {method.name} needs models for groups {method.groups}, got {tuple(groups)}")
        if not (0 < alpha < 1):
            raise CertifyError(f"--alpha must be between 0 and 1, got {alpha}")
        if not method.deterministic and (n0 < 1 or n < 1):
            raise CertifyError("--n0 and -n must be at least 1")
        self.method = method
        self.groups = [groups[name] for name in method.groups]
        self.n0, self.n, self.alpha, self.seed = int(n0), int(n), float(alpha), int(seed)
        self.batch_size = batch_size or min(auto_batch_size(g.adapter.view_shape) for g in self.groups)
        if self.batch_size < 1:
            raise CertifyError("--batch-size must be at least 1")
        #: batches in flight at once; by default what the models ask for
        self.workers = max(1, workers or max(getattr(g.model, "parallel_runs", 1) for g in self.groups))
        # Results are consumed in order; a deep queue keeps every worker busy while the
        # oldest batch finishes. A queued or finished job holds only its labels.
        self.prefetch = max(1, prefetch)
        self.plan = plan
        self._mode = "certify"
        self._num_views: int | None = None
        if method.deterministic and input_shape is not None:
            self._num_views = int(method.num_views(tuple(input_shape)))

    # -- building views ------------------------------------------------------

    def _rng(self, job: _Job) -> np.random.Generator:
        # One independent stream per (input, phase, group, batch): results do not
        # depend on thread scheduling, and selection never shares draws with estimation.
        key = (job.index, _PHASE_KEYS[job.phase], job.group, job.batch)
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=key)))

    def _make_views(self, job: _Job) -> np.ndarray:
        group = self.groups[job.group]
        size = job.stop - job.start
        x = np.broadcast_to(job.x, (size,) + job.x.shape)
        if job.phase == ENUMERATION:
            views = self.method.views(x, np.arange(job.start, job.stop), group.name)
        else:
            views = self.method.sample(x, self._rng(job), group.name)
        if views.shape != (size,) + group.adapter.view_shape:
            raise CertifyError(
                f"plugin {self.method.name} made views of shape {views.shape[1:]} for group "
                f"{group.name!r}; it declared {group.adapter.view_shape}"
            )
        return group.adapter(views)

    def _labels(self, job: _Job) -> np.ndarray:
        """Make one batch of views and label it (runs on a worker thread)."""
        batch = self._make_views(job)
        try:
            return self.groups[job.group].model.labels(batch)
        except CertifyError:
            raise
        except Exception as error:  # onnxruntime raises its own exception types
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CertifyError(f"onnxruntime failed on input {job.index}: {message[:300]}") from None

    def _phases(self) -> list[tuple[str, int]]:
        if self.method.deterministic:
            return [(ENUMERATION, self._num_views)]
        if self._mode == PREDICTION:
            return [(PREDICTION, self.n)]
        return [(SELECTION, self.n0), (ESTIMATION, self.n)]

    def _jobs(self, x: np.ndarray, index: int) -> Iterator[_Job]:
        for phase, count in self._phases():
            for group_number in range(len(self.groups)):
                for batch, start in enumerate(range(0, count, self.batch_size)):
                    yield _Job(index, phase, group_number, batch, start, min(start + self.batch_size, count), x)

    # -- running -------------------------------------------------------------

    def _input_jobs(self, load: Callable[[int], np.ndarray], indices: Iterable[int]) -> Iterator[_Job]:
        for index in indices:
            x = load(index)
            yield from self._jobs(x, index)
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
        self._mode = PREDICTION if mode == "predict" else "certify"
        indices = list(indices)
        if not indices:
            return
        method = self.method

        def load(index: int) -> np.ndarray:
            x = method.check_inputs(dataset.batch([index]))
            return np.ascontiguousarray(x[0], dtype=np.float32)

        if method.deterministic:
            self._num_views = int(method.num_views(tuple(dataset.shape)))
        for group in self.groups:
            # A model whose input shape is not all declared learns its class count on a first
            # run; votes are sized by that count.
            settle = getattr(group.model, "settle", None)
            if settle is not None:
                settle(group.adapter(np.zeros((1, *group.adapter.view_shape), np.float32)).shape[1:])
        classes = max(2, *((g.model.num_classes or 2) for g in self.groups))
        empty = lambda: [np.zeros(classes, dtype=np.int64) for _ in self.groups]  # noqa: E731
        votes: dict[str, list[np.ndarray]] = collections.defaultdict(empty)
        passes = 0
        last = time.perf_counter()
        jobs = self._input_jobs(load, indices)
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
                                           labels(job.index) if labels else None)
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

    def _votes(self, counts: list[np.ndarray]) -> Votes:
        return Votes({g.name: c for g, c in zip(self.groups, counts)}, self.plan.lower_bound)

    def _finish(self, index: int, votes, passes: int, seconds: float, label: int | None) -> InputResult:
        method = self.method
        if self._mode == PREDICTION and not method.deterministic:
            prediction = method.predict(self._votes(votes[PREDICTION]), self.alpha)
            return InputResult(index, label, None, prediction, passes, seconds)
        if method.deterministic:
            certificate = method.certify(None, self._votes(votes[ENUMERATION]), self.alpha)
        else:
            certificate = method.certify(self._votes(votes[SELECTION]), self._votes(votes[ESTIMATION]), self.alpha)
        _check_certificate(method, certificate)
        return InputResult(index, label, certificate, certificate.prediction, passes, seconds)

    def radius_ceiling(self, classes: int = 2) -> float:
        """The largest radius this method can certify with these settings (all votes agree)."""
        method = self.method

        def unanimous(count: int) -> Votes:
            counts = {g.name: np.array([count] + [0] * (classes - 1), dtype=np.int64) for g in self.groups}
            return Votes(counts, self.plan.lower_bound)

        if method.deterministic:
            if self._num_views is None:
                return float("nan")
            return method.certify(None, unanimous(self._num_views), self.alpha).radius
        return method.certify(unanimous(self.n0), unanimous(self.n), self.alpha).radius


def _check_certificate(method: SmoothingMethod, certificate: Certificate) -> None:
    if not isinstance(certificate, Certificate):
        raise CertifyError(f"plugin {method.name}: certify() must return a Certificate, not {certificate!r}")
    radius = certificate.radius
    if not (radius >= 0) or np.isnan(radius):
        raise CertifyError(f"plugin {method.name} returned an invalid radius {radius!r}")
    if certificate.prediction is None and radius != 0:
        raise CertifyError(f"plugin {method.name} abstained with a non-zero radius")
