"""The Python API; the command line is a thin layer over it.

    import certifier
    run = certifier.load("model.onnx", plugin="rs", sigma=0.25)
    results = run.certify(images, n=10_000)

    with run.job("images.npz", output="run.jsonl", n=10_000) as job:  # resumes run.jsonl
        for result in job:
            ...
    print(job.summary())
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from pydantic import ValidationError

from .data import Dataset, load_data
from .denoiser import Denoiser, check_denoiser, load_denoiser, open_denoised
from .engine import Engine, Group
from .errors import CertifyError
from .guard import checked_group_model, checked_view_shape, plugin_call
from .header import DataStamp, build_header
from .job import Job, Result, select
from .metadata import recorded_options, recorded_plugin, recorded_sigma
from .methods import SmoothingMethod
from .model import OnnxModel, load_model
from .planning import plan_engine
from .plugins import get_method
from .settings import JobSettings, ModelSettings, RunSettings, takes
from .space import InputSpace, ModelAdapter, prefers_channels_last, resolve_layout


def parse_options(method_class: type[SmoothingMethod], given: Mapping[str, Any],
                  defaults: Mapping[str, Any] | None = None):
    """Validate ``-o NAME VALUE`` pairs against the method's Options model."""
    fields = method_class.Options.model_fields
    values: dict[str, Any] = {}
    for source, pairs in (("the model's metadata", defaults or {}), ("-o", given)):
        for raw_name, value in pairs.items():
            name = raw_name.replace("-", "_")
            if name not in fields:
                if source == "-o":
                    known = ", ".join(f.replace("_", "-") for f in fields) or "none"
                    raise CertifyError(
                        f"plugin {method_class.name} has no option {raw_name!r}; its options: {known}"
                    )
                continue  # stale metadata from another version of the plugin
            values[name] = value
    try:
        return method_class.Options(**values)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]).replace("_", "-") or "options"
        value = problem.get("input")
        raise CertifyError(
            f"plugin {method_class.name}, option {where}={value!r}: {problem['msg']}"
        ) from None


class Run:
    """A model and a smoothing method, ready to certify arrays or data sets."""

    def __init__(self, model: OnnxModel, method: SmoothingMethod, *, space: InputSpace,
                 settings: ModelSettings | None = None, denoiser: Denoiser | None = None,
                 sigma_source: str | None = None, executor=None):
        self.model = model
        self.method = method
        self.space = space
        #: what the model was opened with (:class:`certifier.settings.ModelSettings`)
        self.settings = settings if settings is not None else ModelSettings()
        #: the denoiser every view goes through before the model (None: none)
        self.denoiser = denoiser
        #: where the method's sigma came from: "given", "model" or "denoiser" (their metadata); None: no sigma
        self.sigma_source = sigma_source
        #: what runs jobs' engines by default (None: this process; see :class:`certifier.job.Job`)
        self.executor = executor
        self._denoised: dict[tuple, OnnxModel] = {}
        self._group_models: dict[str, OnnxModel] = {}

    @property
    def plugin(self) -> str:
        return self.method.name

    @property
    def device(self) -> str:
        return self.settings.device

    @property
    def threads(self) -> int | None:
        return self.settings.threads

    @property
    def resize(self) -> tuple[int, int] | None:
        """(H, W) images are resized to when read, before any noise; None: as they are."""
        return self.settings.resize

    @property
    def output_name(self) -> str | None:
        """The model output the user chose (None: certify chose it)."""
        return self.settings.output_name

    @property
    def allow_batch_coupling(self) -> bool:
        """Whether models whose rows depend on their batch are run one input per call."""
        return bool(self.settings.allow_batch_coupling)

    @property
    def overrides(self) -> dict[str, Any]:
        """What the user set of the input space (--scale, --mean, --std, --layout; None: not set)."""
        return self.settings.space_overrides

    def use_group_model(self, group: str, model: OnnxModel) -> None:
        """Let vote group ``group`` use a model already open (a worker that received the
        group's model file under another path than the plugin's option names)."""
        self._group_models[group] = model

    def _model_for(self, group: str) -> OnnxModel:
        method = self.method
        path = checked_group_model(method, plugin_call(method, "group_model", method.group_model, group))
        if path is None:
            return self.model
        if group not in self._group_models:
            self._group_models[group] = load_model(
                path, device=self.device, threads=self.threads, output_name=None,
                allow_batch_coupling=self.allow_batch_coupling,
            )
        return self._group_models[group]

    def groups(self, input_shape: tuple[int, ...]) -> dict[str, Group]:
        """The model and input adapter for each of the method's vote groups."""
        method = self.method
        plugin_call(method, "prepare", method.prepare, tuple(input_shape), self.model.metadata)
        groups = {}
        for name in method.groups:
            model = self._model_for(name)
            view_shape = checked_view_shape(method, plugin_call(method, "view_shape", method.view_shape,
                                                                tuple(input_shape), name))
            # A group's own model reads its own metadata; only what the user set applies
            # to every model (the layout is resolved per model).
            space = self.space if model is self.model else InputSpace.from_metadata(model.metadata).overridden(
                **{k: v for k, v in self.overrides.items() if k != "layout"})
            try:
                adapter = ModelAdapter(view_shape, model.input_dims, model.input_dtype, space)
            except CertifyError:
                if view_shape == tuple(input_shape) or _fits(view_shape, model.input_dims):
                    raise  # not a shape problem: the adapter's own message says what is wrong
                # the data is fine; the plugin's views do not fit this model
                declared = "x".join("?" if d is None else str(d) for d in model.input_dims)
                raise CertifyError(
                    f"plugin {self.method.name} makes views of shape {'x'.join(map(str, view_shape))} "
                    f"(group {name!r}) but {model.path.name} takes {declared}; check the plugin's options"
                ) from None
            groups[name] = Group(name, model, adapter, self._denoised_model(model, adapter))
        return groups

    def _denoised_model(self, model: OnnxModel, adapter: ModelAdapter) -> OnnxModel | None:
        """The denoiser, the adapter's mapping and ``model`` as one graph (None without a denoiser)."""
        if self.denoiser is None:
            return None
        key = (id(model), adapter.view_shape, adapter.space, adapter.dtype.str)
        if key not in self._denoised:
            self._denoised[key] = open_denoised(self.denoiser, model, adapter, self.method.name, threads=self.threads,
                                                allow_batch_coupling=self.allow_batch_coupling)
        return self._denoised[key]

    @takes(JobSettings)
    def engine(self, input_shape, settings: JobSettings | None = None, **values) -> Engine:
        """An engine for inputs of ``input_shape`` with these job settings (``settings``, with
        ``values`` changed)."""
        settings = JobSettings.of(settings, values, caller="engine")
        groups = self.groups(input_shape)
        return Engine(self.method, groups, plan_engine(self.method, groups, settings, input_shape=input_shape))

    def dataset(self, data, labels=None, *, split: str | None = None) -> Dataset:
        """A Dataset from a path (``split`` picks x_SPLIT from an .npz), or from an
        array of inputs (N, ...) and optional labels."""
        prefer_last = prefers_channels_last(self.model.input_dims)
        if isinstance(data, Dataset):
            return data
        if isinstance(data, (str, os.PathLike)):
            return load_data(data, split=split, class_names=self.model.class_names, prefer_channels_last=prefer_last,
                             resize=self.resize)
        return Dataset(np.asarray(data), labels, "array", self.model.class_names, prefer_last, resize=self.resize)

    @takes(JobSettings)
    def job(self, data, labels=None, *, settings: JobSettings | None = None, split: str | None = None,
            output: str | os.PathLike | None = None, format: str = "jsonl", executor=None, **values) -> Job:
        """A :class:`Job` certifying inputs of ``data`` (a path, or an array and optional labels).

        The job's settings are ``settings`` (a :class:`certifier.settings.JobSettings`) with
        ``values`` changed, or ``values`` alone: ``n0``, ``n``, ``alpha``, ``batch_size``,
        ``seed``, ``workers``; which inputs (``indices``, or every ``skip``-th up to ``limit``
        of them); ``mode="predict"`` for Cohen et al.'s PREDICT; ``sampling="sequential"``
        draws each input's estimation views in chunks until the largest of ``radii`` (or
        ``levels``; default the threat model's radii) it can certify is decided, with at most
        ``n`` views: the radius is that level; ``radius=R`` decides each input at R alone.
        With ``output`` each record is written to that file (``format`` jsonl, or cohen for
        Cohen et al.'s TSV) as it finishes, and a file of an earlier job with the same
        settings is resumed. ``executor`` runs the engine elsewhere (default: the run's; see
        :class:`Job`, e.g. a ``certifier.ray_executor.RayExecutor``).
        """
        settings = JobSettings.of(settings, values, caller="job")
        dataset = self.dataset(data, labels, split=split)
        engine = self.engine(dataset.shape, settings)
        chosen = select(len(dataset), indices=settings.indices, limit=settings.limit, skip=settings.skip)
        executor = executor if executor is not None else self.executor
        device = getattr(executor, "device", None) or self.model.device

        def header() -> dict[str, Any]:
            return build_header(self, engine, mode=settings.mode, data=DataStamp.of(dataset), device=device)

        return Job(self, engine, dataset, chosen, header=header, mode=settings.mode, output=output, format=format,
                   executor=executor, radii=settings.summary_radii)

    @takes(JobSettings)
    def results(self, data, labels=None, *, settings: JobSettings | None = None, **values) -> Iterator[Result]:
        """Certify each input, yielding :class:`Result` as soon as it is done."""
        yield from self.job(data, labels, settings=settings, **values)

    @takes(JobSettings)
    def certify(self, data, labels=None, *, settings: JobSettings | None = None, **values) -> list[Result]:
        """Certify every input of ``data`` (an array, or a path) and return the results."""
        return list(self.results(data, labels, settings=settings, **values))


def _fits(view_shape: tuple[int, ...], declared) -> bool:
    """Whether views of this shape fit the model's declared input in some layout."""
    try:
        resolve_layout(declared, view_shape, "auto")
    except CertifyError:
        return False
    return True


def make_method(plugin: str | None, sigma: float | None, options: Mapping[str, Any] | None,
                metadata: Mapping[str, str]) -> SmoothingMethod:
    """The configured smoothing method, with defaults from the model's metadata."""
    name = plugin or recorded_plugin(metadata)
    if not name:
        raise CertifyError("no --plugin given and the model's metadata names none (see: certify plugins)")
    method_class = get_method(name)
    parsed = parse_options(method_class, options or {}, recorded_options(metadata, name))
    if sigma is None and method_class.uses_sigma:
        sigma = recorded_sigma(metadata)
    return plugin_call(method_class, "__init__", method_class, sigma=sigma if method_class.uses_sigma else None,
                       options=parsed)


@takes(ModelSettings)
def load(model: str | os.PathLike, settings: ModelSettings | None = None, *, executor=None, **values) -> Run:
    """Open an ONNX model and configure a smoothing method for it.

    The settings are ``settings`` (a :class:`certifier.settings.ModelSettings`) with ``values``
    changed, or ``values`` alone: ``plugin``, ``sigma`` and ``options`` (default: the model's
    metadata); ``resize`` (H, W) resizes images to H x W when they are read, before any
    noise: radii are then in the resized images' pixel space. ``allow_batch_coupling``
    accepts a model whose output for an input depends on the rest of its batch by running
    it one input per call (:class:`certifier.settings.RunSettings` sets it for a batch size
    of 1). ``denoiser`` (an ONNX file) cleans every noisy view before the model (denoised
    smoothing; the certificate is the method's own); one trained for another sigma than the
    method's is refused unless ``allow_denoiser_sigma_mismatch``. Without a sigma from the
    caller or the model, the denoiser's is used. ``executor`` (a Ray executor, say) runs the
    run's jobs elsewhere, and chooses how this process opens the model.
    """
    settings = ModelSettings.of(settings, values, caller="load")
    if executor is not None and hasattr(executor, "driver_settings"):
        settings = executor.driver_settings(settings)
    onnx_model = load_model(Path(model), output_name=settings.output_name, output_kind=settings.output_kind,
                            device=settings.device, threads=settings.threads,
                            allow_batch_coupling=bool(settings.allow_batch_coupling))
    cleaner = load_denoiser(settings.denoiser) if settings.denoiser is not None else None
    sigma, source = settings.sigma, "given"
    if sigma is None:
        source = "model"
        if cleaner is not None and recorded_sigma(onnx_model.metadata) is None:
            sigma, source = _trained_sigma(cleaner), "denoiser"
    method = make_method(settings.plugin, sigma, settings.options, onnx_model.metadata)
    if cleaner is not None:
        check_denoiser(cleaner, method, allow_sigma_mismatch=settings.allow_denoiser_sigma_mismatch)
    space = InputSpace.from_metadata(onnx_model.metadata).overridden(**settings.space_overrides)
    return Run(onnx_model, method, space=space, settings=settings, denoiser=cleaner,
               sigma_source=source if method.uses_sigma else None, executor=executor)


def _trained_sigma(denoiser: Denoiser) -> float | None:
    """The denoiser's sigma as a default for --sigma; None when it records no usable one."""
    try:
        return denoiser.sigma
    except CertifyError:
        return None


@takes(ModelSettings, JobSettings)
def certify(model, data, labels=None, *, settings: RunSettings | None = None, **values) -> list[Result]:
    """Certify ``data`` (an array of inputs or a path) with ``model`` in one call; ``values``
    are those of :func:`load` and :meth:`Run.job` (or ``settings``, a
    :class:`certifier.settings.RunSettings`)."""
    settings = RunSettings.from_values(values, settings, caller="certify")
    with open_job(model, data, labels, settings=settings) as job:
        return list(job)


def open_job(model, data, labels=None, *, settings: RunSettings, split: str | None = None,
             output: str | os.PathLike | None = None, format: str = "jsonl", executor=None,
             on_load: Callable[[Run], None] | None = None) -> Job:
    """The job a whole run's settings describe, as ``certify run`` opens it: the model opened
    with ``settings.model`` (as the executor wants it, if any), then the job of
    ``settings.job``. ``on_load`` is called with the run in between (the command line
    prints its notes)."""
    run = load(model, settings.model, executor=executor)
    if on_load is not None:
        on_load(run)
    return run.job(data, labels, settings=settings.job, split=split, output=output, format=format)


__all__ = ["Job", "Result", "Run", "certify", "load", "make_method", "open_job", "parse_options"]
