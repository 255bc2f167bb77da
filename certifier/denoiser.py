"""Denoised smoothing (Salman et al. 2020): a denoiser D in front of a frozen classifier f.

D is part of the base classifier (SPEC, "Denoised smoothing"): every view goes noise ->
D -> the classifier's input mapping -> f, and the wrapped method's own certificate holds
unchanged, whatever D is and however it was trained. A denoiser is any ONNX model that
takes a batch of pixel-space images (values in [0, 1], N x C x H x W, or N x H x W x C,
N x H x W for grey images, N x D flattened) and returns images of the same shape.

Why one composed ONNX graph (denoiser, then the input mapping as ONNX nodes, then the
classifier) rather than two sessions joined by onnxruntime's I/O binding:

- On CUDA each batch is one session run: the views are copied to the device once, the
  denoised images and the mapped model inputs never leave it, the scores come back once.
  With I/O binding the input mapping (scale, mean/std, rounding, layout, dtype) would
  still need device code of its own (a third session, or device arrays outside
  onnxruntime), and every worker thread would juggle device buffers per batch.
- The composed graph is opened by the same ``load_model`` as any classifier, so
  everything certify does to a model (batch-axis probes, fixed-batch chunking, the
  output choice, parallel runs, label checks) applies to it unchanged: no second copy
  of that logic for the denoised path. On the CPU it costs what the two networks cost.
- The price: opsets must agree (the older of the two graphs is raised to the newer
  opset by onnx's version converter, which converts upwards far more reliably than
  down) and names must not collide (the denoiser's and the mapping's get a prefix).
  Once built, the composed graph is checked against running the two networks one after
  the other on random images, so a conversion that changed anything is refused.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .diffusion import (
    DEFAULT_STEPS, NoisePredictor, OneShotStep, Schedule, as_noise_predictor, betas_schedule, check_image_shape,
    choose_step, fed_timestep, is_noise_predictor, one_shot_denoiser, recorded_settings, resolve_schedule,
    schedule_option,
)
from .errors import CertifyError, first_line
from .metadata import (
    DENOISER_CLASSIFIER_SHA256, denoiser_description, metadata_props, recorded_denoiser_sigma,
)
from .onnx_file import (
    _real_inputs, classifier_input, declared_dims, external_data_files, file_sha256, graphs, load_external_data,
    read_model,
)
from .space import ModelAdapter, resolve_layout

if TYPE_CHECKING:
    from .methods import SmoothingMethod
    from .model import OnnxModel

#: The option that accepts a denoiser trained for another sigma.
SIGMA_OVERRIDE = "--allow-denoiser-sigma-mismatch"
_FLOATS = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}
#: The lowest opset the mapping's nodes need (Reshape with a shape input, broadcasting Mul
#: and Add); Round needs 11.
_MIN_OPSET, _ROUND_OPSET = 7, 11
#: A graph composed in memory is serialized for onnxruntime: protobuf holds at most 2 GB.
PROTO_LIMIT = 2**31 - 1


def _shape(dims) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


@dataclass
class Denoiser:
    """A vetted denoiser file, ready to be put in front of a classifier."""

    path: Path
    sha256: str
    metadata: dict[str, str]
    input_name: str
    output_name: str
    #: declared dims after the batch axis; None where symbolic
    input_dims: list[int | None]
    #: declared dims of the output after the batch axis (None when not declared)
    output_dims: list[int | None] | None
    #: the batch size the graph declares (None: dynamic)
    batch: int | None
    input_type: int
    output_type: int
    #: the graph, with its external data, as composing needs it
    proto: onnx.ModelProto = field(repr=False)
    #: a diffusion noise predictor used as a one-shot denoiser (None: a denoiser of images)
    predictor: NoisePredictor | None = field(default=None, repr=False)
    #: what its file records of how to use it (schedule, timestep convention, data range)
    recorded: dict = field(default_factory=dict, repr=False)
    #: the one-shot step for the run's sigma, once chosen (:meth:`at_sigma`)
    step: OneShotStep | None = None

    @property
    def kind(self) -> str:
        """gaussian (a denoiser of images) or diffusion (a noise predictor)."""
        return "gaussian" if self.predictor is None else "diffusion"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sigma(self) -> float | None:
        """The sigma it was trained for, as its metadata records (None: not recorded; a
        diffusion model serves every sigma of its schedule)."""
        if self.predictor is not None:
            return None
        return recorded_denoiser_sigma(self.metadata)

    def at_sigma(self, sigma: float | None, *, schedule: str | tuple[float, ...] | None = None,
                 steps: int | None = None, data_range: tuple[float, float] | None = None) -> Denoiser:
        """A diffusion noise predictor set up for noise of ``sigma``: its schedule (the file's,
        else ``schedule`` and ``steps``), data range (likewise) and the step t* matching sigma."""
        if self.predictor is None:
            raise CertifyError("--schedule, --steps and --data-range are for a diffusion noise predictor; "
                               f"the denoiser {self.name} is a denoiser of images (drop them)")
        if sigma is None:
            raise CertifyError(f"the diffusion model {self.name} serves every sigma of its schedule: give --sigma")
        if steps is not None and schedule not in ("linear", "cosine"):
            raise CertifyError("--steps goes with --schedule linear or cosine")
        if schedule is None or isinstance(schedule, str):
            requested = None if schedule is None else schedule_option(schedule, steps or DEFAULT_STEPS)
        else:
            requested = betas_schedule(schedule, "the --schedule betas")
        chosen = resolve_schedule(self.recorded["schedule"], requested, self.name)
        recorded_range = self.recorded["data_range"] if self.recorded["range_recorded"] else None
        if data_range is not None and recorded_range is not None and tuple(data_range) != tuple(recorded_range):
            raise CertifyError(f"the diffusion model {self.name} records the data range {list(recorded_range)}, not "
                               f"the {list(data_range)} of --data-range; drop --data-range to use the file's")
        used = tuple(recorded_range or data_range or self.recorded["data_range"])
        step = choose_step(chosen, float(sigma), used, self.recorded["convention"])
        # the header records the timestep the model is fed, as its input type holds it
        fed = float(fed_timestep(step.timestep, self.predictor.timestep_type, self.name))
        return Denoiser(**{**self.__dict__, "step": dataclasses.replace(step, timestep=fed)})

    @property
    def schedule(self) -> Schedule | None:
        return None if self.step is None else self.step.schedule

    def for_views(self, view_shape: tuple[int, ...]) -> Denoiser:
        """The denoiser that cleans views of ``view_shape``: itself, or a diffusion model's
        one-shot denoiser graph (pixel-space images in and out) for its step."""
        if self.predictor is None:
            return self
        if self.step is None:
            raise CertifyError(f"the diffusion model {self.name} has no step chosen for a sigma yet")
        graph = one_shot_denoiser(self.predictor, self.step, tuple(view_shape))
        dims = declared_dims(graph.graph.input[0])
        return Denoiser(**{**self.__dict__, "proto": graph, "input_name": "noisy", "output_name": "denoised",
                           "input_dims": dims[1:], "output_dims": dims[1:], "batch": dims[0],
                           "input_type": TensorProto.FLOAT, "output_type": TensorProto.FLOAT})

    def trained_through_another(self, classifier_sha256: str) -> str | None:
        """A note when the denoiser was trained through a classifier (stability loss) other than
        the one it is used with: still sound, usually less accurate (None otherwise)."""
        recorded = self.metadata.get(DENOISER_CLASSIFIER_SHA256, "").strip().lower()
        if not recorded or recorded == classifier_sha256:
            return None
        return (f"the denoiser {self.name} was trained through another classifier (sha256 {recorded[:12]}...), not "
                f"this one ({classifier_sha256[:12]}...): the certificates hold, accuracy is usually lower")

    def description(self) -> dict[str, str]:
        """What a results header records of its metadata."""
        return denoiser_description(self.metadata)

    def header_fields(self) -> dict:
        """What a results header records of a diffusion model's one-shot step (nothing for a
        denoiser of images, so those headers stay as they were)."""
        if self.step is None:
            return {}
        step = self.step
        return {"denoiser_kind": "diffusion", "schedule": step.schedule.description(), "timestep": step.timestep,
                "alpha_bar": step.alpha_bar, "data_range": list(step.data_range),
                "timestep_convention": self.recorded["convention"].record()}


def load_denoiser(path, kind: str = "auto") -> Denoiser:
    """Read and vet a denoiser file as certify vets every model: one float image input, one
    float output of the same declared shape; or (``kind`` diffusion, or auto and a model taking
    images and a timestep) a diffusion noise predictor."""
    path = Path(path)
    try:
        proto, external = read_model(path)
    except CertifyError as error:
        raise CertifyError(f"--denoiser: {error}") from None
    if kind == "diffusion" or (kind == "auto" and is_noise_predictor(proto)):
        return _load_predictor(path, proto, external)
    inputs = _real_inputs(proto.graph)
    if len(inputs) != 1:
        listed = ", ".join(i.name for i in inputs) or "none"
        hint = "" if kind == "gaussian" or len(inputs) != 2 else (
            "; if it is a diffusion noise predictor (images and a timestep), add --denoiser-kind diffusion")
        raise CertifyError(f"a denoiser takes exactly one input (a batch of images); {path.name} takes: "
                           f"{listed}{hint}")
    if len(proto.graph.output) != 1:
        listed = ", ".join(o.name for o in proto.graph.output)
        raise CertifyError(f"a denoiser gives exactly one output (the denoised images); {path.name} gives: {listed}")
    (image,), (output,) = inputs, proto.graph.output
    for role, value in (("input", image), ("output", output)):
        kind = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else None
        if kind not in _FLOATS:
            shown = TensorProto.DataType.Name(kind) if kind else "not a tensor"
            raise CertifyError(f"the denoiser {path.name}'s {role} {value.name!r} is {shown}; a denoiser reads and "
                               f"writes float images in pixel space [0, 1]")
    dims = declared_dims(image)
    if not dims or len(dims) < 2:
        raise CertifyError(f"the denoiser {path.name}'s input {image.name!r} declares no image shape "
                           f"(a batch axis and an image's axes)")
    out_dims = declared_dims(output)
    sha256 = file_sha256(path, *(path.parent / name for name in external_data_files(proto)))
    if external:
        load_external_data(proto, path)
    return Denoiser(
        path=path, sha256=sha256, metadata=metadata_props(proto), input_name=image.name, output_name=output.name,
        input_dims=dims[1:], output_dims=out_dims[1:] if out_dims else None, batch=dims[0],
        input_type=image.type.tensor_type.elem_type, output_type=output.type.tensor_type.elem_type, proto=proto,
    )


def _load_predictor(path: Path, proto: onnx.ModelProto, external: bool) -> Denoiser:
    predictor = as_noise_predictor(proto, path.name)
    recorded = recorded_settings(predictor.metadata)
    sha256 = file_sha256(path, *(path.parent / name for name in external_data_files(proto)))
    if external:
        load_external_data(proto, path)
        _check_size(proto, f"the diffusion model {path.name}")
    dims = predictor.image_dims
    return Denoiser(
        path=path, sha256=sha256, metadata=predictor.metadata, input_name=predictor.sample_name,
        output_name=predictor.output_name, input_dims=dims, output_dims=dims, batch=predictor.sample_dims[0],
        input_type=TensorProto.FLOAT, output_type=TensorProto.FLOAT, proto=proto, predictor=predictor,
        recorded=recorded,
    )


def _check_size(proto: onnx.ModelProto, what: str) -> None:
    """Refuse a graph too large to be composed in memory (protobuf's 2 GB) in one line."""
    size = proto.ByteSize()
    if size > PROTO_LIMIT:
        raise CertifyError(f"{what} holds {size / 2**30:.1f} GiB of weights; a graph composed in memory holds at most "
                           f"2 GiB (protobuf's limit): use a smaller model, or export it in float16")


def check_denoiser(denoiser: Denoiser, method: SmoothingMethod, *, allow_sigma_mismatch: bool = False) -> None:
    """Refuse a denoiser for a method whose views it is not made for, or trained for another sigma."""
    if not method.denoisable:
        from .plugins import get_methods

        usable = ", ".join(sorted(name for name, m in get_methods().items() if m.denoisable)) or "none"
        raise CertifyError(f"plugin {method.name} does not take a denoiser (its views are not Gaussian-noisy "
                           f"images); --denoiser works with: {usable}")
    if allow_sigma_mismatch:
        return
    trained = denoiser.sigma
    if trained is not None and method.sigma is not None and not math.isclose(trained, method.sigma, rel_tol=1e-9):
        raise CertifyError(
            f"the denoiser {denoiser.name} was trained for sigma {trained:g} but --sigma is {method.sigma:g}; "
            f"use a denoiser trained for {method.sigma:g}, or {SIGMA_OVERRIDE} to use this one anyway (still "
            f"sound, usually less accurate)"
        )


def denoiser_layout(denoiser: Denoiser, view_shape: tuple[int, ...], plugin: str) -> str:
    """How the denoiser lays out a view (nchw, nhwc, hw or flat); refuses a denoiser that does
    not take the views' shape or whose declared output is another shape than its input."""
    if len(view_shape) != 3:
        raise CertifyError(f"plugin {plugin} makes views of shape {_shape(view_shape)}, not images (C x H x W): "
                           f"a denoiser cleans images")
    if denoiser.predictor is not None:
        check_image_shape(denoiser.predictor, view_shape)
    try:
        layout = resolve_layout(denoiser.input_dims, view_shape)
    except CertifyError:
        raise CertifyError(
            f"the denoiser {denoiser.name} takes images of shape {_shape(denoiser.input_dims)}, but plugin {plugin}'s "
            f"views are {_shape(view_shape)} (C x H x W); use a denoiser made for these images"
        ) from None
    declared_in, declared_out = denoiser.input_dims, denoiser.output_dims
    if declared_out is not None and (
        len(declared_out) != len(declared_in)
        or any(a is not None and b is not None and a != b for a, b in zip(declared_in, declared_out))
    ):
        raise CertifyError(
            f"the denoiser {denoiser.name} changes the shape of an image: it takes {_shape(declared_in)} and returns "
            f"{_shape(declared_out)}; a denoiser returns images of the shape it takes"
        )
    return layout


# -- composing the graph -------------------------------------------------------------


def _versions(proto: onnx.ModelProto) -> dict[str, int]:
    return {("" if entry.domain == "ai.onnx" else entry.domain): entry.version for entry in proto.opset_import}


def _names(proto: onnx.ModelProto) -> set[str]:
    """Every name in a graph (nodes, values, initializers, functions), subgraphs included."""
    names = {f.name for f in proto.functions}
    for body in [proto.graph, *proto.functions]:
        for graph in graphs(body):
            for node in graph.node:
                names.update((node.name, *node.input, *node.output))
            for values in ("input", "output", "value_info", "initializer"):
                names.update(v.name for v in getattr(graph, values, ()))
    return names


def _raised(proto: onnx.ModelProto, version: int, what: str) -> onnx.ModelProto:
    """``proto`` converted to opset ``version`` of the default domain."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, version)
    except Exception as error:  # the converter raises RuntimeError or ValueError with C++ text
        raise CertifyError(
            f"cannot compose the denoiser with the classifier: converting {what} from opset "
            f"{_versions(proto).get('')} to {version} failed ({first_line(error)[:160]}); export both with the same "
            f"ONNX opset"
        ) from None


class _Nodes:
    """The nodes certify adds around the denoiser, named under one prefix."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes, self.constants = prefix, [], []
        self.count = 0

    def _name(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}{self.count}_{what}"

    def add(self, op: str, inputs: list[str], **attributes) -> str:
        output = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def constant(self, name: str, value: np.ndarray) -> str:
        full = name if name.startswith(self.prefix) else self.prefix + name
        self.constants.append(numpy_helper.from_array(value, full))
        return full

    def reshape(self, value: str, shape: tuple[int, ...]) -> str:
        return self.add("Reshape", [value, self.constant(self._name("shape"), np.array(shape, np.int64))])

    def to_layout(self, value: str, layout: str, view_shape: tuple[int, ...]) -> str:
        """(N, C, H, W) images into a model's layout, as ModelAdapter lays them out."""
        size = int(np.prod(view_shape))
        if layout in ("nhwc", "flat-hwc"):
            value = self.add("Transpose", [value], perm=[0, 2, 3, 1])
        if layout == "hw":
            value = self.reshape(value, (-1, *view_shape[1:]))
        elif layout in ("flat", "flat-hwc"):
            value = self.reshape(value, (-1, size))
        return value

    def from_layout(self, value: str, layout: str, view_shape: tuple[int, ...]) -> str:
        """Images in a denoiser's layout back to (N, C, H, W)."""
        if layout == "nhwc":
            return self.add("Transpose", [value], perm=[0, 3, 1, 2])
        if layout in ("hw", "flat"):
            return self.reshape(value, (-1, *view_shape))
        return value

    def cast(self, value: str, to: int, current: int) -> str:
        return value if to == current else self.add("Cast", [value], to=to)

    def rename(self, value: str, name: str) -> None:
        """Make ``value`` available as ``name`` (an input of the next network)."""
        self.nodes.append(helper.make_node("Identity", [value], [name], name=self._name("to")))


def compose(denoiser: Denoiser, classifier: onnx.ModelProto, adapter: ModelAdapter, layout: str,
            view_shape: tuple[int, ...], notes: list[str] | None = None) -> onnx.ModelProto:
    """One graph: pixel-space views (N, C, H, W, float32) -> the denoiser -> the classifier's input
    mapping (``adapter``, as ONNX nodes doing what it does in numpy) -> the classifier, whose
    outputs, metadata and names stay as they are."""
    model_input, classifier_dims, _ = classifier_input(classifier.graph)
    mine, theirs = _versions(denoiser.proto), _versions(classifier)
    for domain in set(mine) & set(theirs) - {""}:
        if mine[domain] != theirs[domain]:
            raise CertifyError(f"cannot compose the denoiser with the classifier: they use opsets {mine[domain]} and "
                               f"{theirs[domain]} of the operator domain {domain!r}; export both with the same one")
    target = max(mine.get("", 0), theirs.get("", 0), _ROUND_OPSET if adapter.integer else _MIN_OPSET)
    own = denoiser.proto
    if mine.get("", target) != target:
        own = _raised(own, target, f"the denoiser {denoiser.name}")
    if theirs.get("", target) != target:
        classifier = _raised(classifier, target, "the classifier")
        if notes is not None:
            notes.append(f"the classifier's opset {theirs['']} raised to {target} to compose it with the denoiser "
                         f"(checked against the original)")
    taken = _names(classifier)
    base = "certify"
    while any(name.startswith(base + ".") for name in taken):
        base += "_"
    prefix = base + ".denoiser/"
    own = onnx.compose.add_prefix(own, prefix)
    image, views = prefix + denoiser.input_name, base + ".views"
    batch = _batch(denoiser, classifier_dims[0])
    nodes = _Nodes(base + ".mapping/")

    # into the denoiser: its layout and dtype
    value = nodes.to_layout(views, layout, view_shape)
    nodes.rename(nodes.cast(value, denoiser.input_type, TensorProto.FLOAT), image)
    before, nodes.nodes = nodes.nodes, []
    # out of the denoiser, then what ModelAdapter.__call__ does: x * gain + offset, rint and
    # clip for integer inputs, the layout, the dtype
    value = nodes.cast(prefix + denoiser.output_name, TensorProto.FLOAT, denoiser.output_type)
    value = nodes.from_layout(value, layout, view_shape)
    if not adapter.identity:
        value = nodes.add("Mul", [value, nodes.constant("gain", adapter.gain)])
        value = nodes.add("Add", [value, nodes.constant("offset", adapter.offset)])
    if adapter.integer:
        value = nodes.add("Round", [value])
        low, high = (np.array(limit, dtype=np.float32) for limit in adapter.limits)
        value = nodes.add("Max", [value, nodes.constant("low", low)])
        value = nodes.add("Min", [value, nodes.constant("high", high)])
    value = nodes.to_layout(value, adapter.layout, view_shape)
    nodes.rename(nodes.cast(value, helper.np_dtype_to_tensor_dtype(adapter.dtype), TensorProto.FLOAT),
                 model_input.name)

    c, d = classifier.graph, own.graph
    # Besides the image, only inputs an initializer feeds (older exporters list them as inputs).
    kept = [i for i in d.input if i.name != image] + [i for i in c.input if i.name != model_input.name]
    graph = helper.make_graph(
        before + list(d.node) + nodes.nodes + list(c.node),
        f"{d.name or 'denoiser'}+{c.name or 'classifier'}",
        [helper.make_tensor_value_info(views, TensorProto.FLOAT, [batch, *view_shape]), *kept],
        list(c.output),
        initializer=list(d.initializer) + nodes.constants + list(c.initializer),
        value_info=list(d.value_info) + list(c.value_info),
    )
    graph.sparse_initializer.extend(list(d.sparse_initializer) + list(c.sparse_initializer))
    versions = {**_versions(own), **_versions(classifier), "": target}
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(domain, version) for domain, version in sorted(versions.items())],
        ir_version=max(own.ir_version, classifier.ir_version),
    )
    model.functions.extend(list(own.functions) + list(classifier.functions))
    model.metadata_props.extend(classifier.metadata_props)
    _check_size(model, f"the denoiser {denoiser.name} and the classifier together")
    return model


def _batch(denoiser: Denoiser, classifier_batch: int | None) -> int | str:
    """The composed graph's batch axis: a size either network insists on, else symbolic."""
    sizes = {size for size in (denoiser.batch, classifier_batch) if size is not None}
    if len(sizes) > 1:
        raise CertifyError(f"the denoiser {denoiser.name} takes batches of exactly {denoiser.batch} images and the "
                           f"classifier of exactly {classifier_batch}; re-export one of them with a dynamic batch axis")
    return sizes.pop() if sizes else "batch"


# -- opening it ----------------------------------------------------------------------


def _to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    if layout == "nhwc":
        return images.transpose(0, 2, 3, 1)
    if layout == "hw":
        return images[:, 0]
    if layout == "flat":
        return images.reshape(len(images), -1)
    return images


def _from_layout(images: np.ndarray, layout: str, view_shape: tuple[int, ...]) -> np.ndarray:
    if layout == "nhwc":
        images = images.transpose(0, 3, 1, 2)
    elif layout in ("hw", "flat"):
        images = images.reshape(len(images), *view_shape)
    return np.ascontiguousarray(images, dtype=np.float32)


class ComposedParts:
    """The denoiser and the classifier of a composed graph, run apart: what the composed graph
    is checked against, and how a failure of the composed graph is traced to one of them."""

    def __init__(self, denoiser: Denoiser, model: OnnxModel, adapter: ModelAdapter, layout: str,
                 threads: int | None = None):
        self.denoiser, self.model, self.adapter, self.layout = denoiser, model, adapter, layout
        self.threads = threads
        self._session = None

    def denoised(self, views: np.ndarray, per_run: int | None = None) -> np.ndarray:
        """The denoiser alone on (N, C, H, W) pixel-space views, ``per_run`` views a run (default:
        all at once), padded with zero images to the batch size the denoiser insists on; refuses a
        denoiser that returns another shape than it takes."""
        from .model import _needs_symbolic_dims, _open_session, _symbolic_dims

        denoiser = self.denoiser
        if self._session is None:
            proto = denoiser.proto
            if _needs_symbolic_dims(proto, denoiser.input_name):
                proto = _symbolic_dims(proto, denoiser.input_name)
            self._session = _open_session(denoiser.path, proto, from_file=False, providers=self.model.providers,
                                          threads=self.threads, notes=[])
        step = per_run or denoiser.batch or len(views)
        pieces = []
        for start in range(0, len(views), step):
            chunk = views[start : start + step]
            if denoiser.batch is not None and len(chunk) < denoiser.batch:
                chunk = np.concatenate([chunk, np.zeros((denoiser.batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            pieces.append(self._run(chunk)[: min(step, len(views) - start)])
        return np.concatenate(pieces)

    def _run(self, images: np.ndarray) -> np.ndarray:
        denoiser = self.denoiser
        batch = np.ascontiguousarray(_to_layout(images, self.layout), dtype=_FLOATS[denoiser.input_type])
        try:
            out = self._session.run([denoiser.output_name], {denoiser.input_name: batch})[0]
        except Exception as error:  # onnxruntime raises its own exception types
            raise CertifyError(f"onnxruntime cannot run the denoiser {denoiser.name} on {len(batch)} images of shape "
                               f"{_shape(batch.shape[1:])}: {first_line(error)}") from None
        if out.shape != batch.shape:
            raise CertifyError(
                f"the denoiser {denoiser.name} returns {_shape(out.shape)} for a batch of {_shape(batch.shape)}: it "
                f"changes the shape of an image; a denoiser returns images of the shape it takes"
            )
        return _from_layout(out, self.layout, images.shape[1:])

    def coupled(self, views: np.ndarray) -> str:
        """Which network to name when the composed graph's outputs for ``views`` depend on their
        batch: the classifier if it does so on the denoised images too, else the denoiser."""
        coupled, _ = self.model.coupling_on(self.adapter(self.denoised(views)))
        return self.model.path.name if coupled else f"the denoiser {self.denoiser.name}"

    def non_finite(self, views: np.ndarray) -> str:
        """Why the composed graph gave NaN for ``views``: the denoiser's images, or the classifier on them."""
        images = self.denoised(views)
        bad = int((~np.isfinite(images.reshape(len(images), -1)).all(axis=1)).sum())
        if bad:
            return (f"the denoiser {self.denoiser.name} returned NaN or infinity for {bad} of {len(views)} noisy "
                    f"views; a denoiser must return finite images: check how it was trained and exported")
        return (f"the model output NaN (output {self.model.output.name!r}) on the images the denoiser "
                f"{self.denoiser.name} returned; check that the input space options (--scale, --mean, --std) match "
                f"what the model expects")


def open_denoised(denoiser: Denoiser, model: OnnxModel, adapter: ModelAdapter, plugin: str, *,
                  threads: int | None = None, allow_batch_coupling: bool = False) -> OnnxModel:
    """The denoiser, ``adapter`` and ``model`` as one onnxruntime model reading pixel-space views
    of the adapter's view shape, checked against running them one after the other."""
    from .model import load_model

    view_shape = adapter.view_shape
    if denoiser.predictor is not None:
        denoiser_layout(denoiser, view_shape, plugin)
        denoiser = denoiser.for_views(view_shape)
    layout = denoiser_layout(denoiser, view_shape, plugin)
    parts = ComposedParts(denoiser, model, adapter, layout, threads)
    # A few noisy-looking images, in the denoiser's batch size if it insists on one.
    probe = np.random.default_rng(0).normal(0.5, 0.5, size=(denoiser.batch or 3, *view_shape)).astype(np.float32)
    if not np.isfinite(parts.denoised(probe)).all():
        raise CertifyError(f"the denoiser {denoiser.name} returns NaN or infinity for noisy test images; a denoiser "
                           f"must return finite images: check how it was trained and exported")
    notes: list[str] = []
    composed = load_model(
        model.path, output_name=model.output.name, output_kind=model.output.requested, device=model.device,
        threads=threads, allow_batch_coupling=allow_batch_coupling, parts=parts,
        transform=lambda proto: compose(denoiser, proto, adapter, layout, view_shape, notes),
    )
    if composed.sha256 != model.sha256:
        raise CertifyError(f"{model.path.name} changed on disk while certify was loading it; rerun the command")
    composed.notes.extend(notes)
    if (other := denoiser.trained_through_another(model.sha256)) is not None:
        composed.notes.append(other)
    if denoiser.step is not None:
        step = denoiser.step
        composed.notes.append(step.note or f"the diffusion model {denoiser.name} denoises sigma {step.sigma:g} at "
                                           f"timestep {step.timestep:g} (alpha_bar {step.alpha_bar:.6g}) of its "
                                           f"{step.schedule}")
    got = composed.raw_outputs(probe)
    # the two networks one after the other, as the composed graph runs: one image a run when it mixes its batch
    expected = model.raw_outputs(adapter(parts.denoised(probe, per_run=1 if composed.batch_coupled else None)))
    if expected.dtype.kind == "f":
        scale = float(np.nanmax(np.abs(expected), initial=1.0))
        same = expected.shape == got.shape and np.allclose(got, expected, rtol=1e-3, atol=1e-4 * scale, equal_nan=True)
    else:
        same = np.array_equal(expected, got)
    if not same:
        raise CertifyError(
            f"the denoiser {denoiser.name} and {model.path.name} composed into one graph disagree with the two run one "
            f"after the other on {len(probe)} test images; report this with both files (exporting them with the "
            f"same ONNX opset may avoid it)"
        )
    return composed
