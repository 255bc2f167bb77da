"""Certify on a Ray cluster: whole inputs dealt out to actors, results written by the driver.

The driver keeps the job (selection, header, resume, writing, summary: ``certifier.job``);
a :class:`RayExecutor` replaces the local engine's run. Each actor receives the engine's
recipe (``certifier.remote``) and the model files through Ray's object store, checks them
by SHA-256, opens the models once and certifies whole inputs through the same engine
code, so every record equals a local run's. Inputs are dealt out as actors ask for them,
a few in flight per actor; an actor that dies has its unfinished inputs re-run elsewhere.

Ray is an optional extra: ``pip install 'onnx-certifier[ray]'``.
"""

from __future__ import annotations

import dataclasses
import heapq
import importlib.util
import logging
import math
import os
import socket
import statistics
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from .device import check_device
from .engine import InputResult
from .errors import CertifyError, first_line
from .settings import ADDRESS_FORMS, CONNECT_TIMEOUT, parse_address
from .remote import ShippedInputs, build_engine, certify_one, read_parts, worker_spec

try:
    import ray
    import ray.exceptions
except ImportError:  # pragma: no cover - the message is tested through the command line
    ray = None

INSTALL_HINT = "--ray needs Ray on this machine and every node: pip install 'onnx-certifier[ray]'"
#: Inputs queued on one actor beyond the one it runs: it never waits for the driver between inputs.
IN_FLIGHT = 2
#: An input whose workers died this many times stops the run (it may not fit in a worker's memory).
MAX_DEATHS_PER_INPUT = 3
#: CPUs a GPU actor reserves without --threads: one per batch the engine keeps in flight on CUDA.
GPU_ACTOR_CPUS = 2
#: An input running this much longer than twice the usual time is copied to an idle actor.
STRAGGLER_SLACK_SECONDS = 1.0
#: How long to wait for actors before saying so (a busy cluster places them when resources free up).
PLACEMENT_NOTE_SECONDS = 30.0
#: What an HTTP/2 client sends first (RFC 9113, 3.4): the preface, then its SETTINGS frame (empty).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS = 4


def require_ray():
    if ray is None:
        raise CertifyError(INSTALL_HINT)
    return ray


@dataclass(frozen=True)
class ActorPlan:
    """How many actors to start and what each one reserves."""

    actors: int
    num_cpus: float
    num_gpus: float
    #: the device each actor opens its models on: "cuda" (one GPU each) or "cpu"
    device: str


def plan_actors(device: str, resources: Mapping[str, float], *, threads: int | None = None,
                max_actors: int | None = None, gpus_per_actor: float = 1.0) -> ActorPlan:
    """Actors for ``device`` (auto, cuda, cpu) on a cluster with ``resources`` (Ray's totals).

    GPU actors (``gpus_per_actor`` GPUs each, and ``--threads`` CPUs, default 2: the engine
    keeps two batches in flight on CUDA, each making its noisy views on a CPU thread) when
    CUDA is asked for, or with auto when the cluster has GPUs; otherwise CPU actors of
    ``--threads`` CPUs each (default 1: single-threaded actors keep every core busy, as
    the local engine's one batch per thread does). As many as the cluster holds, at most
    ``max_actors``.
    """
    check_device(device)
    if max_actors is not None and max_actors < 1:
        raise CertifyError(f"--ray-actors must be at least 1, got {max_actors}")
    if not (gpus_per_actor > 0 and math.isfinite(gpus_per_actor)):
        raise CertifyError(f"--ray-gpus must be a positive number of GPUs per actor, got {gpus_per_actor}")
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    use_gpu = device == "cuda" or (device == "auto" and gpus >= gpus_per_actor)
    per_cpu = float(threads or (GPU_ACTOR_CPUS if use_gpu else 1))
    if device == "cuda" and gpus < gpus_per_actor:
        raise CertifyError(f"--device cuda: the Ray cluster has {gpus:g} GPUs, and each actor needs "
                           f"{gpus_per_actor:g}; add GPU nodes or use --device cpu")
    if use_gpu:
        count = min(math.floor(gpus / gpus_per_actor + 1e-9), math.floor(cpus / per_cpu + 1e-9))
        plan = ActorPlan(count, per_cpu, gpus_per_actor, "cuda")
    else:
        plan = ActorPlan(math.floor(cpus / per_cpu + 1e-9), per_cpu, 0.0, "cpu")
    if plan.actors < 1:
        raise CertifyError(f"the Ray cluster has {cpus:g} CPUs; each actor needs {per_cpu:g} (--threads): "
                           f"lower --threads or add nodes")
    if max_actors is not None:
        plan = dataclasses.replace(plan, actors=min(plan.actors, max_actors))
    return plan


def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse, in one line, an address certify cannot join: malformed, Ray Client without its
    extra, nobody listening, or a server that does not answer as Ray does within ``timeout``
    seconds (Ray itself would retry for minutes, logging to the terminal). "auto" is checked
    when RAY_ADDRESS names the cluster."""
    if not (timeout > 0 and math.isfinite(timeout)):
        raise CertifyError(f"--ray-timeout must be a positive number of seconds, got {timeout}")
    form, host, port = parse_address(address)
    if form == "auto" and os.environ.get("RAY_ADDRESS", "auto") not in ("", "auto"):
        address = os.environ["RAY_ADDRESS"]
        try:
            form, host, port = parse_address(address)
        except CertifyError:
            raise CertifyError(f"RAY_ADDRESS={address!r} (the cluster --ray auto joins) is not a cluster address; "
                               f"give {ADDRESS_FORMS.replace(', auto, or no value to start Ray here', '')}") from None
    if form == "client" and importlib.util.find_spec("grpc") is None:
        raise CertifyError(f"--ray {address}: Ray Client (ray://) needs Ray's client extra on this machine: "
                           f"pip install 'ray[client]'; or give the head node's HOST:PORT")
    if host is not None:
        _check_ray_answers(address, host, port, timeout)


def _check_ray_answers(address: str, host: str, port: int, timeout: float) -> None:
    """Connect and start an HTTP/2 connection: a Ray head node (and a Ray Client server) speaks
    gRPC, whose first frame back is SETTINGS. A server that says nothing, or anything else
    (an HTTP/1 web server, say), is not Ray. Under RAY_USE_TLS the handshake is TLS's, so only
    the connection is checked."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return
            connection.sendall(_HTTP2_PREFACE)
            answer = b""
            while len(answer) < 9:
                connection.settimeout(max(deadline - time.monotonic(), 1e-3))
                chunk = connection.recv(9 - len(answer))
                if not chunk:
                    break
                answer += chunk
    except TimeoutError:
        raise CertifyError(f"{address} does not answer as a Ray cluster within {timeout:g} s; check the address "
                           f"(the head node's GCS port, 6379 by default), or wait longer with --ray-timeout") from None
    except OSError as error:
        raise CertifyError(f"cannot reach the Ray cluster at {address} ({error.strerror or error}); check the "
                           f"address, or start the cluster with `ray start --head` (see docs/scale-out.md)") from None
    if len(answer) < 9 or answer[3] != _HTTP2_SETTINGS:
        raise CertifyError(f"{address} answers, but not as a Ray cluster does (gRPC); give the head node's GCS port "
                           f"(6379 by default; the dashboard's, 8265, is not it)")


def _node() -> str:
    """This machine as messages name it: host name and IP address."""
    try:
        address = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - a name is enough
        address = "?"
    return f"{socket.gethostname()} ({address})"


class CertifyWorker:
    """A Ray actor: opens a job's engine once, then certifies the inputs it is sent."""

    def __init__(self):
        self.node = _node()
        self.engine = None
        self.inputs = None
        self.mode = "certify"

    def where(self) -> tuple[str, str | None]:
        """This node, and what keeps it from running certify (None: nothing). Imports the
        libraries now, while the driver is still opening the model and the data."""
        try:
            import onnxruntime  # noqa: F401
            import scipy.stats  # noqa: F401  (the confidence bounds: a second or two to import)

            from .plugins import get_methods

            get_methods()
        except Exception as error:  # noqa: BLE001 - a missing library, a broken install: one line
            return self.node, f"{type(error).__name__}: {first_line(error)}"
        return self.node, None

    def load(self, spec, files: Mapping[str, Any]) -> str:
        """Build the job's engine; returns its device note. Failures are one line naming this node."""
        self.engine = None
        try:
            parts = {sha: ray.get(ref) for sha, ref in files.items()}
            self.engine = build_engine(spec, parts)
        except CertifyError as error:
            raise CertifyError(f"{self.node}: {error}") from None
        except MemoryError:
            raise CertifyError(f"{self.node}: out of memory while opening the model") from None
        except Exception as error:  # noqa: BLE001 - a missing library, a broken install: one line
            raise CertifyError(f"{self.node}: {type(error).__name__}: {first_line(error)}") from None
        self.mode = spec.mode
        self.inputs = ShippedInputs(spec.plan.input_shape)
        return self.engine.groups[0].model.device_note

    def certify(self, index: int, x) -> tuple[InputResult, list[str]]:
        return certify_one(self.engine, self.inputs, index, x, self.mode)


_remote_worker = None


@dataclass(eq=False)
class _Actor:
    handle: Any
    where_ref: Any = None
    load_ref: Any = None
    node: str | None = None
    ready: bool = False
    #: (task reference, position) of the inputs sent to it, oldest (the one it runs) first
    tasks: deque = field(default_factory=deque)
    #: when it started the input it runs (its tasks run one after another, in order)
    running_since: float = 0.0


class RayExecutor:
    """Runs jobs' inputs on Ray actors; use as ``run.job(..., executor=RayExecutor(...))``.

    ``address``: "local" (default) starts a Ray instance on this machine, "auto" joins the
    cluster this machine belongs to, or a cluster's address (HOST:PORT or ray://HOST:PORT), which
    must answer within ``connect_timeout`` seconds. When Ray is already initialized in this
    process, its cluster is used. ``device``, ``threads`` and
    ``workers`` are the actors' (see :func:`plan_actors`); ``note`` receives one-line
    messages (where the run goes, workers that cannot run).
    """

    def __init__(self, address: str | None = "local", *, device: str = "auto", threads: int | None = None,
                 workers: int | None = None, max_actors: int | None = None, gpus_per_actor: float = 1.0,
                 in_flight: int = IN_FLIGHT, num_cpus: int | None = None, connect_timeout: float = CONNECT_TIMEOUT,
                 note: Callable[[str], None] = lambda message: None):
        require_ray()
        parse_address(address or "local")
        #: the actors, started below so they import their libraries while the driver opens the model
        #: (tests kill one to see a run survive)
        self.actors: list[_Actor] = []
        self.note = note
        self.threads, self.workers, self.in_flight = threads, workers, max(1, in_flight)
        self._owned = False
        if ray.is_initialized():
            where = "this process's Ray"
        else:
            address = address or "local"
            settings = dict(logging_level=logging.ERROR, log_to_driver=False)
            if address == "local":
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                settings.update(include_dashboard=False, num_cpus=num_cpus)
            else:
                check_address(address, connect_timeout)
            try:
                ray.init(address=address, **settings)
            except ConnectionError as error:
                raise CertifyError(f"cannot reach the Ray cluster at {address}: {first_line(error)}; start it with "
                                   f"`ray start --head` (see docs/scale-out.md) or drop the address to start one "
                                   f"here") from None
            self._owned = True
            where = "a Ray instance started here" if address == "local" else "the Ray cluster"
        resources = ray.cluster_resources()
        try:
            self.plan = plan_actors(device, resources, threads=threads, max_actors=max_actors,
                                    gpus_per_actor=gpus_per_actor)
        except CertifyError:
            self.close()
            raise
        #: what the results header records as the device
        self.device = f"{self.plan.device} (ray, {self.plan.actors} actors)"
        self.address = ray.get_runtime_context().gcs_address
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        each = f"{self.plan.num_cpus:g} CPU" + (f" + {self.plan.num_gpus:g} GPU" if self.plan.num_gpus else "")
        self.note(f"running on {where} at {self.address}: {self.plan.actors} actors ({each} each, "
                  f"{self.plan.device}) on a cluster of {nodes} node{'s' * (nodes != 1)}, "
                  f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
        for _ in range(self.plan.actors):
            self._start()
        #: seconds the last job waited until its first actors had opened the model (for benchmarks)
        self.startup_seconds: float | None = None

    @classmethod
    def for_run(cls, settings, note: Callable[[str], None] = lambda message: None) -> "RayExecutor":
        """The executor ``settings`` (a :class:`certifier.settings.RunSettings`) ask for: the
        cluster of ``settings.ray``, actors on the device and threads of ``settings.model``, each
        keeping ``settings.job.workers`` batches in flight."""
        ray_settings = settings.ray
        return cls(ray_settings.ray_address, device=settings.model.device, threads=settings.model.threads,
                   workers=settings.job.workers, max_actors=ray_settings.ray_actors,
                   gpus_per_actor=ray_settings.ray_gpus, connect_timeout=ray_settings.ray_timeout, note=note)

    def driver_settings(self, settings):
        """How this process opens a run's model (``certifier.load(..., executor=...)``): on the
        CPU with one thread, since the driver only reads it (its header, its input shape); the
        actors run it on their own device."""
        return settings.replace(device="cpu", threads=1)

    # -- actors ----------------------------------------------------------------

    def _start(self) -> _Actor:
        global _remote_worker
        if _remote_worker is None:
            _remote_worker = ray.remote(CertifyWorker)
        remote = _remote_worker.options(
            num_cpus=self.plan.num_cpus, num_gpus=self.plan.num_gpus, scheduling_strategy="SPREAD",
            max_restarts=0, max_task_retries=0)
        actor = _Actor(remote.remote())
        actor.where_ref = actor.handle.where.remote()
        self.actors.append(actor)
        return actor

    def wait_started(self, timeout: float | None = None) -> int:
        """Wait until the actors have started and imported their libraries (at most ``timeout``
        seconds); returns how many have. Jobs need not wait: they deal inputs to actors as they come."""
        refs = [a.where_ref for a in self.actors if a.where_ref is not None]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout)
        return sum(1 for a in self.actors if a.where_ref is None or ray.wait([a.where_ref], timeout=0)[0])

    def _load(self, actor: _Actor, spec, files) -> None:
        actor.ready = False
        actor.load_ref = actor.handle.load.remote(spec, files)

    def _stop_actors(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor.handle)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []

    def spec(self, job):
        """The recipe workers rebuild the job's engine from, and the files to send (by SHA-256)."""
        return worker_spec(job, device=self.plan.device, threads=self.threads or int(self.plan.num_cpus),
                           workers=self.workers)

    # -- running a job -----------------------------------------------------------

    def __call__(self, job, indices: list[int]) -> Iterator[InputResult]:
        if not indices:
            return
        spec, paths = self.spec(job)
        files = {sha: ray.put(read_parts(parts)) for sha, parts in paths.items()}
        while len(self.actors) < self.plan.actors:  # those a former job lost
            self._start()
        for actor in self.actors:
            self._load(actor, spec, files)
        yield from _Dispatch(self, job, list(indices), spec, files).results()

    def close(self) -> None:
        self._stop_actors()
        if self._owned and ray.is_initialized():
            ray.shutdown()
        self._owned = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Dispatch:
    """One job's inputs dealt out to actors, results handed back in the job's order."""

    def __init__(self, executor: RayExecutor, job, indices: list[int], spec, files):
        self.executor, self.job, self.indices = executor, job, indices
        self.spec, self.files = spec, files
        self.todo = list(range(len(indices)))  # positions not yet sent, a heap
        self.copies: dict[int, int] = {}  # position -> tasks running it
        self.finished: dict[int, InputResult] = {}
        self.next_out = 0
        self.deaths: dict[int, int] = {}
        self.failures: list[str] = []
        self.replacements = executor.plan.actors
        self.window = max(16, 4 * executor.plan.actors * executor.in_flight)
        self.shown_warnings: set[str] = set()
        #: seconds each input took on its actor, to tell a straggler
        self.durations: list[float] = []

    def results(self) -> Iterator[InputResult]:
        executor = self.executor
        executor.startup_seconds = None
        self.started = started = time.monotonic()
        waited_note, complete = False, False
        try:
            while self.next_out < len(self.indices):
                self._deal()
                refs = self._refs()
                if not refs:
                    raise CertifyError(self._nobody_can_run())
                ready, _ = ray.wait(refs, num_returns=1, timeout=5.0)
                if not ready:
                    if (not waited_note and not any(a.ready for a in executor.actors)
                            and time.monotonic() - started > PLACEMENT_NOTE_SECONDS):
                        waited_note = True
                        executor.note(f"waiting for Ray to place actors ({executor.plan.num_cpus:g} CPU, "
                                      f"{executor.plan.num_gpus:g} GPU each); the cluster is busy or too small")
                    continue
                seen = set(ready)
                rest = [r for r in refs if r not in seen]
                if rest:
                    ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
                for ref in ready:
                    self._settle(ref)
                while self.next_out in self.finished:
                    yield self.finished.pop(self.next_out)
                    self.next_out += 1
            complete = True
        finally:
            if complete:
                # Actors still running a copy of an input that another finished are restarted,
                # so the next job finds every actor free.
                for actor in [a for a in executor.actors if a.tasks]:
                    self._remove(actor)
            else:  # stopped by an error or Ctrl-C: nothing may go on running
                executor._stop_actors()

    # -- what is waited on -----------------------------------------------------

    def _refs(self) -> list:
        refs = []
        self.owner: dict = {}
        for actor in self.executor.actors:
            if not actor.ready:
                for ref in (actor.where_ref, actor.load_ref):
                    if ref is not None:
                        refs.append(ref)
                        self.owner[ref] = actor
            for ref, _ in actor.tasks:
                refs.append(ref)
                self.owner[ref] = actor
        return refs

    def _settle(self, ref) -> None:
        actor = self.owner[ref]
        if actor not in self.executor.actors:
            return  # removed while settling an earlier reference
        if ref is actor.where_ref:
            actor.where_ref = None
            try:
                actor.node, problem = ray.get(ref)
            except ray.exceptions.RayError as error:
                self._lost(actor, error, loading=True)
                return
            if problem:
                self._cannot_load(actor, f"{actor.node}: {problem}")
            return
        if ref is actor.load_ref:
            try:
                ray.get(ref)
            except ray.exceptions.RayTaskError as error:
                self._cannot_load(actor, str(error.cause) if isinstance(error.cause, CertifyError) else
                                  f"{actor.node or 'a node'}: {_summary(error)}")
            except ray.exceptions.RayError as error:
                self._lost(actor, error, loading=True)
            else:
                actor.ready = True
                if self.executor.startup_seconds is None and all(a.ready for a in self.executor.actors):
                    self.executor.startup_seconds = time.monotonic() - self.started
            return
        position = next(p for r, p in actor.tasks if r is ref)
        try:
            result, messages = ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = error.cause
            where = actor.node or "a Ray worker"
            if isinstance(cause, CertifyError):
                raise CertifyError(f"{cause} (on {where})") from None
            raise CertifyError(f"the Ray worker on {where} failed on input {self.indices[position]}: "
                               f"{_summary(error)}") from None
        except ray.exceptions.RayError as error:
            self._lost(actor, error)
            return
        now = time.monotonic()
        if actor.tasks[0][0] is ref:
            self.durations.append(now - actor.running_since)
        actor.tasks = deque((r, p) for r, p in actor.tasks if r is not ref)
        actor.running_since = now
        self.copies[position] -= 1
        for message in messages:
            if message not in self.shown_warnings:
                self.shown_warnings.add(message)
                warnings.warn(message, stacklevel=1)
        if position >= self.next_out and position not in self.finished:
            index = self.indices[position]
            self.finished[position] = dataclasses.replace(result, label=self.job.dataset.label(index))

    # -- failures ----------------------------------------------------------------

    def _cannot_load(self, actor: _Actor, message: str) -> None:
        self.failures.append(message)
        self.executor.note(f"warning: a Ray worker cannot run the model: {message}")
        self._remove(actor)

    def _lost(self, actor: _Actor, error: BaseException, loading: bool = False) -> None:
        """An actor died (its node went away, it was killed, it ran out of memory)."""
        where = actor.node or "a node"
        if loading or not actor.ready:
            self._cannot_load(actor, f"{where}: the worker died while opening the model ({_summary(error)})")
            return
        if actor.tasks:
            running = actor.tasks[0][1]
            self.deaths[running] = self.deaths.get(running, 0) + 1
            if self.deaths[running] >= MAX_DEATHS_PER_INPUT:
                raise CertifyError(
                    f"input {self.indices[running]}: {self.deaths[running]} Ray workers died while certifying it "
                    f"(last on {where}: {_summary(error)}); it may need more memory than a worker has: lower "
                    f"--batch-size")
        self._remove(actor)
        self.executor.note(f"warning: the Ray worker on {where} was lost ({_summary(error)}); its inputs are "
                           f"re-run on the others")
        if self.replacements > 0:
            self.replacements -= 1
            self.executor._load(self.executor._start(), self.spec, self.files)

    def _remove(self, actor: _Actor) -> None:
        """Take an actor out of the run; the inputs it had go back to the queue."""
        self.executor.actors.remove(actor)
        for _, position in actor.tasks:
            self.copies[position] -= 1
            if self.copies[position] == 0 and position >= self.next_out and position not in self.finished:
                heapq.heappush(self.todo, position)
        actor.tasks.clear()
        try:
            ray.kill(actor.handle)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _nobody_can_run(self) -> str:
        if self.failures:
            more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            return f"no Ray worker can run the model: {self.failures[0]}{more}"
        return "every Ray worker was lost; rerun the same command to resume"

    # -- dealing inputs ------------------------------------------------------------

    def _deal(self) -> None:
        """Send inputs to ready actors with room, oldest first, at most ``window`` ahead of the
        oldest unfinished input; an idle actor with nothing new to take runs a copy of an
        input a straggling actor holds (a slow or stuck worker then delays nothing)."""
        for actor in self.executor.actors:
            if not actor.ready:
                continue
            while len(actor.tasks) < self.executor.in_flight:
                position = self._next_for(actor)
                if position is None:
                    break
                self._send(actor, position)

    def _next_for(self, actor: _Actor) -> int | None:
        while self.todo and (self.todo[0] < self.next_out or self.todo[0] in self.finished
                             or self.copies.get(self.todo[0], 0) > 0):
            heapq.heappop(self.todo)  # finished or already running again
        if self.todo and self.todo[0] < self.next_out + self.window:
            return heapq.heappop(self.todo)
        return None if actor.tasks else self._straggling()

    def _straggling(self) -> int | None:
        """The oldest input held by an actor whose current input has run more than twice as long
        as inputs usually take (a slow or stuck worker): an idle actor runs a copy of it."""
        if not self.durations:
            return None
        typical = statistics.median(self.durations[-100:])
        now = time.monotonic()
        held = [position for other in self.executor.actors
                if other.tasks and now - other.running_since > 2 * typical + STRAGGLER_SLACK_SECONDS
                for _, position in other.tasks
                if self.copies.get(position) == 1 and position not in self.finished]
        return min(held, default=None)

    def _send(self, actor: _Actor, position: int) -> None:
        if not actor.tasks:
            actor.running_since = time.monotonic()
        index = self.indices[position]
        x = self.job.dataset.batch([index])[0]
        actor.tasks.append((actor.handle.certify.remote(index, x), position))
        self.copies[position] = self.copies.get(position, 0) + 1


def _summary(error: BaseException) -> str:
    """One line about a Ray error: the innermost Python error it carries, else its first line."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Killed")) and " " not in head:
            return line[:300]
    return first_line(error)
