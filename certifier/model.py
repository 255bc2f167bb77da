"""Loading an ONNX classifier safely and running it on batches."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper

from .device import CPU, choose_providers, probe_cuda
from .errors import CertifyError

#: Operator domains onnxruntime implements itself; anything else needs a custom-op library.
STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
ONNX_MAGIC_HINT = "export it with torch.onnx.export, tf2onnx or skl2onnx"

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
_INT_TYPES = {
    TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8,
    TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
}
_SCORE_NAME = re.compile(r"prob|logit|score|output|pred|softmax", re.IGNORECASE)


def file_sha256(path: str | os.PathLike, *more: str | os.PathLike) -> str:
    """SHA-256 of a file, followed by ``more`` files (a model's external data)."""
    digest = hashlib.sha256()
    for name in (path, *more):
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# -- reading and vetting the file ---------------------------------------------------


def _graphs(graph: onnx.GraphProto | onnx.FunctionProto):
    """The graph (or function body) and every subgraph (If, Loop, Scan bodies) inside it."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _graphs(sub)


def _sparse_tensors(proto: onnx.ModelProto):
    """Every sparse tensor: sparse initializers and sparse attributes, in every graph and function."""
    for body in [proto.graph, *proto.functions]:
        for graph in _graphs(body):
            yield from getattr(graph, "sparse_initializer", ())
            for node in graph.node:
                for attribute in node.attribute:
                    if attribute.HasField("sparse_tensor"):
                        yield attribute.sparse_tensor
                    yield from attribute.sparse_tensors


def _external_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Tensors whose data lives in another file, dense and sparse (onnx's helper skips sparse ones)."""
    tensors = list(external_data_helper._get_all_tensors(proto))
    for sparse in _sparse_tensors(proto):
        tensors += [sparse.values, sparse.indices]
    return [t for t in tensors if external_data_helper.uses_external_data(t)]


def _check_external_data(proto: onnx.ModelProto, folder: Path) -> bool:
    """Refuse tensors whose external data lies outside the model's folder."""
    root = folder.resolve()
    found = False
    for tensor in _external_tensors(proto):
        found = True
        info = external_data_helper.ExternalDataInfo(tensor)
        location = info.location
        target = (root / location).resolve()
        if not location or os.path.isabs(location) or (target != root and root not in target.parents):
            raise CertifyError(
                f"refusing the model: tensor {tensor.name!r} points at external data "
                f"{location!r} outside the model's folder; keep external data files beside the model"
            )
        if not target.is_file():
            raise CertifyError(
                f"the model's external data file {location!r} (tensor {tensor.name!r}) is missing; "
                f"copy it next to the model"
            )
    return found


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Read vetted external data into the proto, so onnxruntime never opens another file."""
    try:
        for tensor in _external_tensors(proto):
            external_data_helper.load_external_data_for_tensor(tensor, str(path.parent))
    except Exception as error:  # a short, unreadable or odd data file
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise CertifyError(
            f"cannot read the external data of {path.name}: {first}; re-export the model with its data files"
        ) from None


def _check_domains(proto: onnx.ModelProto) -> None:
    local = {function.domain for function in proto.functions}
    for graph in _graphs(proto.graph):
        for node in graph.node:
            if node.domain not in STANDARD_DOMAINS and node.domain not in local:
                raise CertifyError(
                    f"refusing the model: node {node.name or node.op_type!r} uses operator "
                    f"{node.op_type!r} from the custom domain {node.domain!r}, which needs a "
                    f"custom-op library; export the model with standard ONNX operators"
                )
    for function in proto.functions:
        for body in _graphs(function):
            for node in body.node:
                if node.domain not in STANDARD_DOMAINS and node.domain not in local:
                    raise CertifyError(
                        f"refusing the model: function {function.name!r} uses the custom domain "
                        f"{node.domain!r}; export the model with standard ONNX operators"
                    )


def read_model(path: str | os.PathLike) -> tuple[onnx.ModelProto, bool]:
    """Parse and vet an ONNX file; returns the proto (without external data) and
    whether it has external data."""
    path = Path(path)
    if not path.exists():
        raise CertifyError(f"model file not found: {path}")
    if not path.is_file():
        raise CertifyError(f"the model path is not a file: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise CertifyError(
            f"{path} is not an ONNX model ({type(error).__name__}); {ONNX_MAGIC_HINT}"
        ) from None
    if proto.ir_version <= 0 or not proto.graph.node or not proto.graph.output:
        raise CertifyError(f"{path} is not an ONNX model (no graph found); {ONNX_MAGIC_HINT}")
    _check_domains(proto)
    external = _check_external_data(proto, path.parent)
    return proto, external


# -- describing inputs and outputs --------------------------------------------------


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None] | None:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


@dataclass
class OutputChoice:
    name: str
    #: "scores" (argmax over classes), "label" (class index), or "binary" (one score)
    kind: str
    threshold: float = 0.0
    num_classes: int | None = None


def _producer(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    for node in graph.node:
        if name in node.output:
            return node
    return None


#: Operators that only reshape or relabel a tensor: a probability stays a probability.
_SHAPE_ONLY = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast"}


def _comes_from_sigmoid(graph: onnx.GraphProto, name: str) -> bool:
    """Whether ``name`` is a Sigmoid's output, possibly reshaped (``sigmoid(x).squeeze(1)``)."""
    producer = _producer(graph, name)
    for _ in graph.node:  # bounded: a malformed graph may have a cycle
        if producer is None or producer.op_type not in _SHAPE_ONLY or not producer.input:
            break
        producer = _producer(graph, producer.input[0])
    return producer is not None and producer.op_type == "Sigmoid"


def _choose_output(proto: onnx.ModelProto, wanted: str | None) -> OutputChoice:
    graph = proto.graph
    outputs = list(graph.output)
    names = [o.name for o in outputs]
    if wanted is not None:
        if wanted not in names:
            raise CertifyError(f"--output-name {wanted!r} is not an output of the model; it has: {', '.join(names)}")
        outputs = [o for o in outputs if o.name == wanted]
    scores, labels, binaries = [], [], []
    for output in outputs:
        if not output.type.HasField("tensor_type"):
            continue
        elem = output.type.tensor_type.elem_type
        dims = _dims(output)
        rank = None if dims is None else len(dims)
        if elem in _FLOAT_TYPES:
            if rank == 2 and dims[1] == 1 or rank == 1:
                binaries.append(output)
            elif rank == 2 or rank is None:
                scores.append((output, dims[1] if dims else None))
        elif elem in _INT_TYPES and (rank == 1 or rank == 2 and dims[1] == 1):
            labels.append(output)
    if len(scores) > 1:
        named = [s for s in scores if _SCORE_NAME.search(s[0].name)]
        if len(named) != 1:
            raise CertifyError(
                f"the model has several score outputs ({', '.join(s[0].name for s in scores)}); "
                f"choose one with --output-name"
            )
        scores = named
    if scores:
        output, classes = scores[0]
        return OutputChoice(output.name, "scores", num_classes=classes if classes and classes > 1 else None)
    if labels:
        return OutputChoice(labels[0].name, "label")
    if binaries:
        output = binaries[0]
        threshold = 0.5 if _comes_from_sigmoid(graph, output.name) else 0.0
        return OutputChoice(output.name, "binary", threshold=threshold, num_classes=2)
    raise CertifyError(
        "found no classifier output (class scores (N, C), labels (N,) or one score (N, 1)) "
        f"among the model's outputs: {', '.join(names)}"
    )


def _real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


_NUMPY_TYPES = {
    TensorProto.FLOAT: np.float32,
    TensorProto.FLOAT16: np.float16,
    TensorProto.DOUBLE: np.float64,
    TensorProto.UINT8: np.uint8,
    TensorProto.INT8: np.int8,
    TensorProto.INT16: np.int16,
    TensorProto.INT32: np.int32,
    TensorProto.INT64: np.int64,
    TensorProto.UINT16: np.uint16,
}


# -- the runnable model -------------------------------------------------------------


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


#: at most this many batches run at once on the CPU (each holds its activations)
MAX_CPU_RUNS = 8


def cpu_runs(threads: int) -> tuple[int, int]:
    """How to spend ``threads`` CPU threads: (runs side by side, threads per run).

    Several runs side by side beat one run spread over all cores: nothing waits at a
    barrier while another thread makes noise. Past MAX_CPU_RUNS, runs get more threads
    each instead, so memory stays bounded on machines with many cores.
    """
    runs = max(1, min(threads, MAX_CPU_RUNS))
    return runs, max(1, threads // runs)


def _session_options(threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def _create_session(source: str | bytes, providers: list[str], threads: int | None):
    import onnxruntime as ort

    return ort.InferenceSession(source, _session_options(threads), providers=providers)


_IR_LIMIT = re.compile(r"max supported IR version:\s*(\d+)")


@dataclass
class OnnxModel:
    """An ONNX classifier ready to label batches of model-space inputs."""

    path: Path
    sha256: str
    metadata: dict[str, str]
    input_name: str
    #: per-input dims after the batch axis; None where symbolic
    input_dims: list[int | None]
    input_dtype: np.dtype
    output: OutputChoice
    providers: list[str]
    device_note: str
    #: None when any batch size works, else the batch size the graph insists on
    fixed_batch: int | None = None
    notes: list[str] = field(default_factory=list)
    session: object = field(default=None, repr=False)
    #: batches the engine should run at once: on the CPU one per thread up to
    #: MAX_CPU_RUNS (each also makes its own views); on a GPU two, so views overlap inference
    parallel_runs: int = 1

    @property
    def num_classes(self) -> int | None:
        names = self.class_names
        if names:
            return len(names)
        return self.output.num_classes

    @property
    def class_names(self) -> list[str] | None:
        raw = self.metadata.get("certifier.classes")
        if not raw:
            return None
        try:
            names = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return [str(n) for n in names] if isinstance(names, list) else None

    @property
    def device(self) -> str:
        return "cuda" if self.providers[0].startswith("CUDA") else "cpu"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output.name], {self.input_name: batch})[0]

    def raw_outputs(self, batch: np.ndarray) -> np.ndarray:
        """The chosen output for a batch, running fixed-size chunks when the graph needs it."""
        if self.fixed_batch is None:
            return self._run(batch)
        size = self.fixed_batch
        pieces = []
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            if len(chunk) < size:
                padding = np.zeros((size - len(chunk),) + chunk.shape[1:], dtype=chunk.dtype)
                pieces.append(self._run(np.concatenate([chunk, padding]))[: len(chunk)])
            else:
                pieces.append(self._run(chunk))
        return np.concatenate(pieces)

    def labels(self, batch: np.ndarray) -> np.ndarray:
        """Class index the model assigns to each input of a model-space batch."""
        out = self.raw_outputs(batch)
        kind = self.output.kind
        if kind == "scores":
            out = out.reshape(len(batch), -1)
            if np.isnan(out).any():
                raise CertifyError(
                    f"the model output NaN (output {self.output.name!r}); check that the input "
                    f"space options (--scale, --mean, --std) match what the model expects"
                )
            return out.argmax(axis=1)
        out = out.reshape(len(batch))
        if kind == "binary":
            if np.isnan(out).any():
                raise CertifyError(f"the model output NaN (output {self.output.name!r}); check the input space options")
            return (out > self.output.threshold).astype(np.int64)
        labels = out.astype(np.int64)
        if (labels < 0).any():
            raise CertifyError(f"the model's label output {self.output.name!r} is negative; choose a score output with --output-name")
        return labels


def _make_batch_dynamic(proto: onnx.ModelProto, input_name: str, size: int) -> onnx.ModelProto:
    dynamic = onnx.ModelProto()
    dynamic.CopyFrom(proto)
    graph = dynamic.graph
    targets = [v for v in graph.input if v.name == input_name] + list(graph.output)
    for value in targets:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == size:
            dims[0].dim_param = "batch"
    del graph.value_info[:]
    return dynamic


def _random_model_input(shape: Sequence[int], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 256, size=shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def load_model(
    path: str | os.PathLike,
    *,
    output_name: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    cuda_probe=probe_cuda,
) -> OnnxModel:
    """Vet, inspect and open an ONNX classifier."""
    import onnxruntime as ort

    path = Path(path)
    proto, external = read_model(path)
    graph = proto.graph
    inputs = _real_inputs(graph)
    if len(inputs) != 1:
        listed = ", ".join(i.name for i in inputs) or "none"
        raise CertifyError(f"a classifier must take exactly one input tensor; this model takes: {listed}")
    model_input = inputs[0]
    if not model_input.type.HasField("tensor_type"):
        raise CertifyError(f"the model's input {model_input.name!r} is not a tensor")
    elem = model_input.type.tensor_type.elem_type
    if elem not in _NUMPY_TYPES:
        raise CertifyError(
            f"the model's input {model_input.name!r} has type {TensorProto.DataType.Name(elem)}, "
            f"which certify cannot feed; expected a float or integer tensor"
        )
    dims = _dims(model_input)
    if not dims:
        raise CertifyError(f"the model's input {model_input.name!r} has no declared shape (need at least a batch axis)")
    output = _choose_output(proto, output_name)
    metadata = {p.key: p.value for p in proto.metadata_props}

    providers, note = choose_providers(device, ort.get_available_providers(), cuda_probe)
    on_cpu = providers[0] == CPU
    if on_cpu:
        parallel_runs, session_threads = cpu_runs(threads or usable_cores())
    else:
        parallel_runs, session_threads = 2, threads
    notes: list[str] = []
    modified = False
    # The weights are part of the model's identity (results files resume only the same model).
    data_files = sorted({external_data_helper.ExternalDataInfo(t).location for t in _external_tensors(proto)})
    if external:
        # Safe now: every location was checked to lie inside the model's folder.
        _load_external_data(proto, path)

    def open_session(model_proto: onnx.ModelProto, changed: bool):
        source = model_proto.SerializeToString() if (changed or external) else str(path)
        try:
            return _create_session(source, providers, session_threads)
        except Exception as error:
            message = str(error)
            limit = _IR_LIMIT.search(message)
            if limit and model_proto.ir_version > int(limit.group(1)):
                lowered = onnx.ModelProto()
                lowered.CopyFrom(model_proto)
                lowered.ir_version = int(limit.group(1))
                notes.append(f"IR version {model_proto.ir_version} read as {lowered.ir_version}")
                return open_session(lowered, True)
            first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
            raise CertifyError(f"onnxruntime cannot load {path.name}: {first[:300]}") from None

    session = open_session(proto, modified)
    fixed_batch = None
    if dims[0] is not None:
        size = dims[0]
        dynamic_proto = _make_batch_dynamic(proto, model_input.name, size)
        try:
            dynamic_session = open_session(dynamic_proto, True)
            rng = np.random.default_rng(0)
            per_input = [d if d is not None else 1 for d in dims[1:]]
            probe = _random_model_input([size * 3] + per_input, _NUMPY_TYPES[elem], rng)
            batched = dynamic_session.run([output.name], {model_input.name: probe})[0]
            single = np.concatenate(
                [session.run([output.name], {model_input.name: probe[i : i + size]})[0] for i in range(0, 3 * size, size)]
            )
            if batched.shape != single.shape or not np.allclose(batched, single, rtol=1e-4, atol=1e-5):
                raise ValueError("batched outputs differ from single runs")
            session = dynamic_session
            notes.append(f"fixed batch size {size} made dynamic (checked against single runs)")
        except (CertifyError, Exception):
            fixed_batch = size
            notes.append(f"the graph needs batches of exactly {size}; running in chunks")

    return OnnxModel(
        path=path,
        sha256=file_sha256(path, *(path.parent / name for name in data_files)),
        metadata=metadata,
        input_name=model_input.name,
        input_dims=dims[1:],
        input_dtype=np.dtype(_NUMPY_TYPES[elem]),
        output=output,
        providers=session.get_providers(),
        device_note=note,
        fixed_batch=fixed_batch,
        notes=notes,
        session=session,
        parallel_runs=parallel_runs,
    )
