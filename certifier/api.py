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

import numbers
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from pydantic import ValidationError

from .data import Dataset, check_resize, load_data
from .denoiser import Denoiser, check_denoiser, load_denoiser, open_denoised
from .engine import Engine, Group, plugin_call
from .errors import CertifyError
from .job import Job, Result, check_job_settings, select
from .metadata import recorded_options, recorded_plugin, recorded_sigma
from .methods import SmoothingMethod
from .model import OnnxModel, load_model
from .noise import NOISE_STREAM
from .plugins import get_method
from .results import recorded_noise_stream
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

    def __init__(
        self,
        model: OnnxModel,
        method: SmoothingMethod,
        *,
        space: InputSpace,
        device: str = "auto",
        threads: int | None = None,
        overrides: Mapping[str, Any] | None = None,
        resize: Sequence[int] | None = None,
        output_name: str | None = None,
        allow_batch_coupling: bool = False,
        denoiser: Denoiser | None = None,
    ):
        self.model = model
        #: whether models whose rows depend on their batch are run one input per call
        self.allow_batch_coupling = allow_batch_coupling
        #: the denoiser every view goes through before the model (None: none)
        self.denoiser = denoiser
        self._denoised: dict[tuple, OnnxModel] = {}
        #: the model output the user chose (None: certify chose it)
        self.output_name = output_name
        #: (H, W) images are resized to when read, before any noise; None: as they are
        self.resize = check_resize(resize)
        self.method = method
        self.space = space
        #: what the user set (--scale, --mean, --std); None: everything in ``space``
        self.overrides = dict(overrides) if overrides is not None else space.as_dict()
        self.device = device
        self.threads = threads
        self._group_models: dict[str, OnnxModel] = {}

    @property
    def plugin(self) -> str:
        return self.method.name

    def use_group_model(self, group: str, model: OnnxModel) -> None:
        """Let vote group ``group`` use a model already open (a worker that received the
        group's model file under another path than the plugin's option names)."""
        self._group_models[group] = model

    def _model_for(self, group: str) -> OnnxModel:
        path = plugin_call(self.method, "group_model", self.method.group_model, group)
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise CertifyError(f"plugin {self.method.name}: group_model() must return a path or None, got {path!r}")
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
            view_shape = _view_shape(method, plugin_call(method, "view_shape", method.view_shape,
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

    def engine(self, input_shape, *, n0=100, n=100_000, alpha=0.001, batch_size=None, seed=0,
               workers=None, sampling: str = "fixed", levels: Sequence[float] | None = None,
               noise_stream: int = NOISE_STREAM) -> Engine:
        return Engine(self.method, self.groups(input_shape), n0=n0, n=n, alpha=alpha,
                      batch_size=batch_size, seed=seed, workers=workers, sampling=sampling, levels=levels,
                      input_shape=input_shape, noise_stream=noise_stream)

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

    def job(self, data, labels=None, *, split: str | None = None, indices: Sequence[int] | None = None,
            limit: int | None = None, skip: int = 1, output: str | os.PathLike | None = None,
            format: str = "jsonl", mode: str = "certify", n0: int = 100, n: int = 100_000, alpha: float = 0.001,
            batch_size: int | None = None, seed: int = 0, workers: int | None = None, sampling: str = "fixed",
            levels: Sequence[float] | None = None, executor=None) -> Job:
        """A :class:`Job` certifying inputs of ``data`` (a path, or an array and optional labels).

        It takes the inputs at ``indices``, or every ``skip``-th input up to ``limit`` of
        them. With ``output`` each record is written to that file (``format`` jsonl, or
        cohen for Cohen et al.'s TSV) as it finishes, and a file of an earlier job with
        the same settings is resumed. ``mode="predict"`` runs Cohen et al.'s PREDICT.
        ``sampling="sequential"`` draws each input's estimation views in chunks until the
        largest of ``levels`` (radii; default the threat model's) it can certify is decided,
        with at most ``n`` views: the radius is that level. ``executor`` runs the engine
        elsewhere (see :class:`Job`; e.g. a ``certifier.ray_executor.RayExecutor``).
        """
        check_job_settings(n0=n0, n=n, alpha=alpha, seed=seed, batch_size=batch_size, workers=workers, limit=limit,
                           skip=skip, sampling=sampling, levels=levels, mode=mode)
        dataset = self.dataset(data, labels, split=split)
        # a file being resumed keeps drawing the noise stream it was written with
        stream = recorded_noise_stream(output, format) if output is not None else NOISE_STREAM
        engine = self.engine(dataset.shape, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed,
                             workers=workers, sampling=sampling, levels=levels, noise_stream=stream)
        chosen = select(len(dataset), indices=indices, limit=limit, skip=skip)
        return Job(self, engine, dataset, chosen, mode=mode, output=output, format=format, executor=executor)

    def results(self, data, labels=None, *, indices: Sequence[int] | None = None, n0=100, n=100_000,
                alpha=0.001, batch_size=None, seed=0, workers=None, mode="certify", sampling="fixed",
                levels=None) -> Iterator[Result]:
        """Certify each input, yielding :class:`Result` as soon as it is done."""
        yield from self.job(data, labels, indices=indices, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed,
                            workers=workers, mode=mode, sampling=sampling, levels=levels)

    def certify(self, data, labels=None, **settings) -> list[Result]:
        """Certify every input of ``data`` (an array, or a path) and return the results."""
        return list(self.results(data, labels, **settings))


def _view_shape(method: SmoothingMethod, shape) -> tuple[int, ...]:
    """A plugin's view shape as a tuple of positive ints."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if not dims or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise CertifyError(f"plugin {method.name}: view_shape() must return a tuple of positive ints, got {shape!r}")
    return tuple(int(d) for d in dims)


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


def load(
    model: str | os.PathLike,
    *,
    plugin: str | None = None,
    sigma: float | None = None,
    options: Mapping[str, Any] | None = None,
    output_name: str | None = None,
    output_kind: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    scale: float | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    layout: str | None = None,
    resize: Sequence[int] | None = None,
    allow_batch_coupling: bool = False,
    denoiser: str | os.PathLike | None = None,
    allow_denoiser_sigma_mismatch: bool = False,
) -> Run:
    """Open an ONNX model and configure a smoothing method for it.

    ``resize`` (H, W) resizes images to H x W when they are read, before any noise:
    radii are then in the resized images' pixel space. ``allow_batch_coupling`` accepts
    a model whose output for an input depends on the rest of its batch by running it one
    input per call (the CLI sets it for ``--batch-size 1``). ``denoiser`` (an ONNX file)
    cleans every noisy view before the model (denoised smoothing; the certificate is the
    method's own); one trained for another sigma than the method's is refused unless
    ``allow_denoiser_sigma_mismatch``. Without a sigma from the caller or the model, the
    denoiser's is used.
    """
    resize = check_resize(resize)
    onnx_model = load_model(Path(model), output_name=output_name, output_kind=output_kind, device=device,
                            threads=threads, allow_batch_coupling=allow_batch_coupling)
    cleaner = load_denoiser(denoiser) if denoiser is not None else None
    if sigma is None and cleaner is not None and recorded_sigma(onnx_model.metadata) is None:
        sigma = _trained_sigma(cleaner)
    method = make_method(plugin, sigma, options, onnx_model.metadata)
    if cleaner is not None:
        check_denoiser(cleaner, method, allow_sigma_mismatch=allow_denoiser_sigma_mismatch)
    overrides = {"scale": scale, "mean": tuple(mean) if mean is not None else None,
                 "std": tuple(std) if std is not None else None, "layout": layout}
    space = InputSpace.from_metadata(onnx_model.metadata).overridden(**overrides)
    return Run(onnx_model, method, space=space, device=device, threads=threads, overrides=overrides, resize=resize,
               output_name=output_name, allow_batch_coupling=allow_batch_coupling, denoiser=cleaner)


def _trained_sigma(denoiser: Denoiser) -> float | None:
    """The denoiser's sigma as a default for --sigma; None when it records no usable one."""
    try:
        return denoiser.sigma
    except CertifyError:
        return None


def certify(model, data, labels=None, *, plugin: str | None = None, sigma: float | None = None,
            options: Mapping[str, Any] | None = None, **settings) -> list[Result]:
    """Certify ``data`` (an array of inputs or a path) with ``model`` in one call."""
    load_keys = {"output_name", "output_kind", "device", "threads", "scale", "mean", "std", "layout", "resize",
                 "allow_batch_coupling", "denoiser", "allow_denoiser_sigma_mismatch"}
    run = load(model, plugin=plugin, sigma=sigma, options=options,
               **{k: settings.pop(k) for k in list(settings) if k in load_keys})
    return run.certify(data, labels, **settings)


__all__ = ["Job", "Result", "Run", "certify", "load", "make_method", "parse_options"]
