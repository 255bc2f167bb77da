"""An engine rebuilt on another machine: a self-contained, picklable recipe and what rebuilds it.

An executor that spreads a job's inputs over machines (``certifier.ray_executor``) sends
each worker a :class:`WorkerSpec` and the bytes of the model files. The worker checks the
bytes against their SHA-256, opens the models, and builds an :class:`Engine` whose every
setting (method and options, input space, plan, batch size, seed) is the driver's, then
certifies whole inputs with it: each input's noise comes from its own streams, so every
record equals the one a local run writes. Nothing here needs Ray.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .engine import Engine, InputResult
from .errors import CertifyError
from .header import LOCATION_KEYS, DataStamp, build_header
from .onnx_file import external_data_files, file_sha256, read_model
from .planning import EnginePlan
from .settings import ModelSettings


@dataclass(frozen=True)
class ModelFiles:
    """A model as files: the .onnx file's name, then its external data files (relative paths),
    in the order its SHA-256 is computed over them."""

    names: tuple[str, ...]
    sha256: str


@dataclass
class WorkerSpec:
    """Everything a worker needs to build the driver's engine, except the model bytes."""

    model: ModelFiles
    #: vote groups with a model of their own (drs's -o model-r), by group name
    group_models: dict[str, ModelFiles]
    #: how the worker opens the model: the driver's settings, with the method resolved (plugin,
    #: sigma and options as the driver's model and denoiser gave them) and the worker's device
    #: and threads; the denoiser's path is the worker's own copy
    settings: ModelSettings
    #: the driver's engine plan (sampling plan, alpha, seed, batch size, input shape), with
    #: the batches in flight the worker keeps
    plan: EnginePlan
    mode: str
    #: what the driver's engine is, checked against the worker's (see :func:`engine_identity`)
    identity: dict[str, Any] = field(default_factory=dict)
    #: the denoiser every view goes through before the model (``--denoiser``), or None
    denoiser: ModelFiles | None = None


def model_files(path: str | Path) -> tuple[ModelFiles, list[Path]]:
    """The files that make up the model at ``path`` and their paths on this machine."""
    path = Path(path)
    proto, _ = read_model(path)
    externals = external_data_files(proto)
    paths = [path, *(path.parent / name for name in externals)]
    return ModelFiles((path.name, *externals), file_sha256(*paths)), paths


def read_parts(paths: Sequence[Path]) -> list[np.ndarray]:
    """A model's files as byte arrays (numpy: Ray's object store shares them without copies)."""
    return [np.fromfile(p, dtype=np.uint8) for p in paths]


#: Results-header entries a worker does not compare: where the job runs and what it reads
#: (the header table's locations), and the data's hash (a worker is sent inputs, never the data set).
WHERE_NOT_WHAT = (*LOCATION_KEYS, "data_sha256")


def engine_identity(run, engine: Engine, mode: str, method_origin: Any = None) -> dict[str, Any]:
    """What makes an engine's records: equal identities give equal records for equal inputs.

    It holds every entry of the results header (built by the one function that builds
    headers, so a setting added to the header later is compared without a change here) but
    those the header table calls locations and the data's hash, and what the header leaves
    out: the plugin's origin, the batch size, each vote group's model and input mapping.
    """
    header = build_header(run, engine, mode=mode, data=DataStamp(), device=None)
    identity = {key: value for key, value in header.items() if key not in WHERE_NOT_WHAT}
    identity.update({
        "plugin_origin": method_origin,
        "plan": [engine.plan.name, engine.plan.settings()],
        "batch_size": engine.batch_size,
        "allow_batch_coupling": bool(getattr(run, "allow_batch_coupling", False)),
        "groups": [
            {
                "name": g.name,
                "model_sha256": g.model.sha256,
                "view_shape": list(g.adapter.view_shape),
                "space": g.adapter.space.as_dict(),
                "layout": g.adapter.layout,
                "input_dtype": str(g.model.input_dtype),
                "output": [g.model.output.name, g.model.output.kind, g.model.num_classes],
                "denoised": getattr(g, "denoised", None) is not None,
            }
            for g in engine.groups
        ],
    })
    # as JSON has it: the driver's copy travels pickled, the worker's is computed there
    return json.loads(json.dumps(identity, default=str))


def method_origin(name: str) -> tuple[str | None, str | None]:
    """(distribution, version) of the plugin that provides smoothing method ``name``."""
    from .plugins import describe_plugins

    for plugin in describe_plugins():
        if any(m["name"] == name for m in plugin["methods"]):
            return plugin["distribution"], plugin["version"]
    return None, None


def worker_spec(job, *, device: str, threads: int | None,
                workers: int | None) -> tuple[WorkerSpec, dict[str, list[Path]]]:
    """The recipe of ``job``'s engine for workers running on ``device`` with ``threads`` CPU
    threads, and the files to send, by SHA-256."""
    run, engine = job.run, job.engine
    method = run.method
    main, main_paths = model_files(run.model.path)
    if main.sha256 != run.model.sha256:
        raise CertifyError(f"{run.model.path} changed since it was loaded; rerun the command")
    files = {main.sha256: main_paths}
    group_models = {}
    for group in engine.groups:
        if group.model is run.model:
            continue
        found, paths = model_files(group.model.path)
        if found.sha256 != group.model.sha256:
            raise CertifyError(f"{group.model.path} changed since it was loaded; rerun the command")
        group_models[group.name] = found
        files[found.sha256] = paths
    denoiser = run.denoiser
    denoiser_files = None
    if denoiser is not None:
        denoiser_files, paths = model_files(denoiser.path)
        if denoiser_files.sha256 != denoiser.sha256:
            raise CertifyError(f"{denoiser.path} changed since it was loaded; rerun the command")
        files[denoiser_files.sha256] = paths
    settings = run.settings.replace(
        plugin=method.name, sigma=method.sigma if method.uses_sigma else None, options=method.options.model_dump(),
        device=device, threads=threads, denoiser=None,
        # the driver has checked the denoiser against sigma; the identity check refuses any difference that remains
        allow_denoiser_sigma_mismatch=denoiser is not None,
        allow_batch_coupling=run.allow_batch_coupling)
    spec = WorkerSpec(model=main, group_models=group_models, settings=settings,
                      plan=engine.engine_plan.replace(workers=workers), mode=job.mode, denoiser=denoiser_files)
    spec.identity = engine_identity(run, engine, job.mode, method_origin(method.name))
    return spec, files


def _write_files(folder: Path, files: ModelFiles, parts: Sequence[np.ndarray]) -> Path:
    """Write a model's files under ``folder`` after checking their SHA-256; returns the .onnx path."""
    if len(parts) != len(files.names):
        raise CertifyError(f"{files.names[0]}: {len(parts)} files arrived, {len(files.names)} expected")
    digest = hashlib.sha256()
    for part in parts:
        digest.update(memoryview(np.ascontiguousarray(part, dtype=np.uint8)))
    if digest.hexdigest() != files.sha256:
        raise CertifyError(f"{files.names[0]} arrived with SHA-256 {digest.hexdigest()[:12]}..., not the driver's "
                           f"{files.sha256[:12]}...: the transfer corrupted it")
    for name, part in zip(files.names, parts):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        np.asarray(part, dtype=np.uint8).tofile(target)
    return folder / files.names[0]


def build_engine(spec: WorkerSpec, parts: Mapping[str, Sequence[np.ndarray]]) -> Engine:
    """The driver's engine, rebuilt from ``spec`` and the model files' bytes (by SHA-256).

    The files are written to a temporary folder (workers share no filesystem) and removed
    once the models are open. Warnings the driver has already shown (a plugin's notes on
    the model) are not repeated.
    """
    from .api import load
    from .model import load_model

    folder = Path(tempfile.mkdtemp(prefix="certify-model-"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = _write_files(folder / "main", spec.model, parts[spec.model.sha256])
            settings = spec.settings
            if spec.denoiser is not None:
                settings = settings.replace(
                    denoiser=_write_files(folder / "denoiser", spec.denoiser, parts[spec.denoiser.sha256]))
            run = load(path, settings)
            opened = {}
            for group, files in spec.group_models.items():
                if files.sha256 not in opened:
                    group_path = _write_files(folder / files.sha256[:16], files, parts[files.sha256])
                    opened[files.sha256] = load_model(group_path, device=settings.device, threads=settings.threads,
                                                      allow_batch_coupling=run.allow_batch_coupling)
                run.use_group_model(group, opened[files.sha256])
            engine = Engine(run.method, run.groups(spec.plan.input_shape), spec.plan)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    mine = engine_identity(run, engine, spec.mode, method_origin(run.method.name))
    differ = [key for key in {**spec.identity, **mine} if spec.identity.get(key) != mine.get(key)]
    if differ:
        key = differ[0]
        raise CertifyError(f"refusing to run: this worker's engine differs from the driver's in {key} "
                           f"({_short(mine.get(key))} here, {_short(spec.identity.get(key))} on the driver); "
                           f"install the same certifier and plugins on every node")
    return engine


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ShippedInputs:
    """The few inputs a worker was sent, looked up by their index in the job's data."""

    def __init__(self, shape: Sequence[int]):
        self.shape = tuple(shape)
        self._inputs: dict[int, np.ndarray] = {}

    def add(self, index: int, x: np.ndarray) -> None:
        self._inputs[index] = x

    def discard(self, index: int) -> None:
        self._inputs.pop(index, None)

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([self._inputs[int(i)] for i in indices])


def certify_one(engine: Engine, inputs: ShippedInputs, index: int, x: np.ndarray,
                mode: str) -> tuple[InputResult, list[str]]:
    """Certify one input through the engine's own code; its result (without a label: the
    driver has the labels) and the warnings it raised, for the driver to show."""
    inputs.add(index, x)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (result,) = engine.run(inputs, [index], mode=mode)
    finally:
        inputs.discard(index)
    return result, list(dict.fromkeys(str(w.message) for w in caught))
