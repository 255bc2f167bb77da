"""Loading an ONNX classifier safely and running it on batches."""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper, numpy_helper

from .device import CPU, choose_providers, probe_cuda
from .errors import CertifyError, first_line
from .metadata import CLASSES, MAX_CLASSES, metadata_props, recorded_classes

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


# -- memory --------------------------------------------------------------------------


def available_memory() -> int:
    """Bytes of memory this process may still take (a cgroup limit counts)."""
    found = []
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (AttributeError, ValueError, OSError):
            found.append(1 << 33)
    return min(found)


def memory_budget() -> int:
    """Bytes one batch of model inputs and outputs may take: half the available memory."""
    return available_memory() // 2


def _size(count: int) -> str:
    return f"{count / (1 << 30):.1f} GiB" if count >= 1 << 28 else f"{count / (1 << 20):.1f} MiB"


# -- reading and vetting the file ---------------------------------------------------


def _graphs(graph: onnx.GraphProto | onnx.FunctionProto):
    """The graph (or function body) and every subgraph (If, Loop, Scan bodies) inside it.

    Iterative: how deeply subgraphs nest is up to the file, not Python's recursion limit.
    """
    stack = [graph]
    while stack:
        current = stack.pop()
        yield current
        for node in current.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    stack.append(attribute.g)
                stack.extend(attribute.graphs)


def _all_tensors(proto: onnx.ModelProto):
    """Every tensor in the model: initializers and attribute tensors, dense and sparse,
    in every graph, subgraph and function (onnx's own helper recurses and skips sparse ones)."""
    for body in [proto.graph, *proto.functions]:
        for graph in _graphs(body):
            yield from getattr(graph, "initializer", ())
            for sparse in getattr(graph, "sparse_initializer", ()):
                yield from (sparse.values, sparse.indices)
            for node in graph.node:
                for attribute in node.attribute:
                    if attribute.HasField("t"):
                        yield attribute.t
                    yield from attribute.tensors
                    sparse_tensors = list(attribute.sparse_tensors)
                    if attribute.HasField("sparse_tensor"):
                        sparse_tensors.append(attribute.sparse_tensor)
                    for sparse in sparse_tensors:
                        yield from (sparse.values, sparse.indices)


def _external_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Tensors whose data lives in another file."""
    return [t for t in _all_tensors(proto) if external_data_helper.uses_external_data(t)]


def _check_external_data(proto: onnx.ModelProto, folder: Path) -> bool:
    """Refuse tensors whose external data lies outside the model's folder, or more
    external data than fits in memory (it is read into memory and hashed)."""
    root = folder.resolve()
    files: set[Path] = set()
    for tensor in _external_tensors(proto):
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
        files.add(target)
    total = sum(f.stat().st_size for f in files)
    if total > memory_budget():
        raise CertifyError(
            f"the model's external data files hold {_size(total)}, more than this machine can read in "
            f"({_size(memory_budget())} available for it); check the files beside the model"
        )
    return bool(files)


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Read vetted external data into the proto, so onnxruntime never opens another file."""
    try:
        for tensor in _external_tensors(proto):
            external_data_helper.load_external_data_for_tensor(tensor, str(path.parent))
    except Exception as error:  # a short, unreadable or odd data file
        raise CertifyError(
            f"cannot read the external data of {path.name}: {first_line(error)}; re-export the model with its "
            f"data files"
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
    """Declared dims; None where symbolic, or stored as 0 or negative (PaddlePaddle writes -1)."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]


#: Classes a label output may name when nothing declares how many the model has.
UNDECLARED_LABEL_CLASSES = 1 << 16
#: What ``--output-kind`` may say the chosen output holds.
OUTPUT_KINDS = ("logits", "probabilities", "label", "binary-probability", "binary-logit")
_BINARY_KINDS = ("binary-probability", "binary-logit")


@dataclass
class OutputChoice:
    name: str
    #: "scores" (argmax over classes), "label" (class index), or "binary" (one score)
    kind: str
    threshold: float = 0.0
    #: the model's class count, once known
    num_classes: int | None = None
    #: values per input (class scores; 1 for a label or a single score); None until probed
    width: int | None = None
    #: an integer output (class labels) rather than float scores
    integer: bool = False
    #: a single score the graph proves is a probability (a Sigmoid seen through value-keeping ops)
    proven_probability: bool = False
    #: what --output-kind said, if anything
    requested: str | None = None


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """The node that computes each value of the graph: built once, so graph walks stay linear."""
    producers: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        for name in node.output:
            producers.setdefault(name, node)
    return producers


#: Operators whose (first) output holds values of their first input: reshaped, reordered,
#: repeated or some of them, but not changed.
_VALUE_KEEPING = {
    "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Expand", "Tile",
    "Gather", "GatherElements", "GatherND", "Slice", "Split", "Cast",
}
#: Operators whose outputs are probabilities (in [0, 1]; 0.5 is the even odds).
_PROBABILITY_SOURCES = {"Sigmoid", "HardSigmoid", "Softmax"}
_CAST_KEEPS_PROBABILITIES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
#: ONNX-ML classifiers; their first output is the label, drawn from their classlabels attribute.
_ML_CLASSIFIERS = {"LinearClassifier", "SVMClassifier", "TreeEnsembleClassifier"}


def _attribute(node: onnx.NodeProto, name: str):
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute
    return None


def _source(producers: dict[str, onnx.NodeProto], name: str, keeps) -> tuple[onnx.NodeProto | None, str]:
    """The node whose values ``name`` holds, looking back through nodes ``keeps`` accepts,
    and which of its outputs it is. One dictionary look-up per step; a cycle ends the walk."""
    seen = {name}
    node = producers.get(name)
    while node is not None and node.input and keeps(node):
        name = node.input[0]
        if name in seen:
            return None, name
        seen.add(name)
        node = producers.get(name)
    return node, name


def _keeps_probabilities(node: onnx.NodeProto) -> bool:
    if node.op_type == "Cast":
        to = _attribute(node, "to")
        return to is not None and to.i in _CAST_KEEPS_PROBABILITIES
    return node.op_type in _VALUE_KEEPING and node.domain in ("", "ai.onnx")


def _keeps_labels(node: onnx.NodeProto) -> bool:
    return node.op_type in _VALUE_KEEPING and node.domain in ("", "ai.onnx")


def _proves_probability(producers: dict[str, onnx.NodeProto], name: str) -> bool:
    """Whether the graph shows ``name`` holds probabilities: ``sigmoid(x)``, ``sigmoid(x)[:, 0]``..."""
    node, _ = _source(producers, name, _keeps_probabilities)
    return node is not None and node.op_type in _PROBABILITY_SOURCES and node.domain in ("", "ai.onnx")


def _count_of_labels(values) -> int | None:
    values = [int(v) for v in values]
    return max(values) + 1 if values and min(values) >= 0 else None


def _label_classes(graph: onnx.GraphProto, producers: dict[str, onnx.NodeProto], name: str) -> int | None:
    """How many classes a label output can name, when the graph says: the classlabels of an
    ONNX-ML classifier, the integer table an ArrayFeatureExtractor reads, or the width of the
    scores an ArgMax reduces."""
    node, value = _source(producers, name, _keeps_labels)
    if node is None:
        return None
    if node.op_type in _ML_CLASSIFIERS and node.output and node.output[0] == value:
        for key in ("classlabels_ints", "classlabels_int64s"):
            attribute = _attribute(node, key)
            if attribute is not None and attribute.ints:
                return _count_of_labels(attribute.ints)
        return None
    if node.op_type == "ArrayFeatureExtractor" and node.input:
        table = next((t for t in graph.initializer if t.name == node.input[0]), None)
        if table is None or table.data_type not in _INT_TYPES or math.prod(table.dims) > MAX_CLASSES:
            return None
        try:
            return _count_of_labels(numpy_helper.to_array(table).reshape(-1))
        except Exception:  # data that does not match its declared shape
            return None
    if node.op_type == "ArgMax" and node.input:
        declared = {v.name: v for v in (*graph.input, *graph.value_info, *graph.output)}
        scores = declared.get(node.input[0])
        dims = _dims(scores) if scores is not None and scores.type.HasField("tensor_type") else None
        if not dims:
            return None
        axis = _attribute(node, "axis")
        axis = axis.i if axis is not None else 0
        if -len(dims) <= axis < len(dims):
            return dims[axis]
    return None


def _classifier_label_output(producers: dict[str, onnx.NodeProto], name: str) -> tuple[str, list[int]] | None:
    """For the scores of an ONNX-ML classifier whose integer class labels are not 0, 1, ...,
    C - 1 in order (argmax would give a column number, not a label): its label output and
    those labels."""
    node, value = _source(producers, name, _keeps_labels)
    if node is None or node.op_type not in _ML_CLASSIFIERS or list(node.output[1:2]) != [value]:
        return None
    for key in ("classlabels_ints", "classlabels_int64s"):
        attribute = _attribute(node, key)
        if attribute is not None and attribute.ints:
            classlabels = [int(v) for v in attribute.ints]
            return None if classlabels == list(range(len(classlabels))) else (node.output[0], classlabels)
    return None


def _short_list(values: list[int]) -> str:
    return "[" + ", ".join(map(str, values[:5])) + (", ...]" if len(values) > 5 else "]")


def _output_width(output: onnx.ValueInfoProto) -> tuple[bool, int | None] | None:
    """(integer output?, values per input or None if not declared), or None when the output
    cannot be a classifier's (not a number tensor, a scalar, or several values per input
    along more than one axis, such as a feature map)."""
    if not output.type.HasField("tensor_type"):
        return None
    elem = output.type.tensor_type.elem_type
    if elem not in _FLOAT_TYPES and elem not in _INT_TYPES:
        return None
    integer = elem in _INT_TYPES
    dims = _dims(output)
    if dims is None:
        return integer, None
    if not dims:
        return None
    rest = dims[1:]
    if sum(1 for d in rest if d is not None and d > 1) > 1:
        return None
    width = math.prod(rest) if all(d is not None for d in rest) else None
    if integer and width not in (None, 1):
        return None
    return integer, width


def _choose_output(proto: onnx.ModelProto, wanted: str | None, kind: str | None = None) -> OutputChoice:
    graph = proto.graph
    names = [o.name for o in graph.output]
    if kind is not None and kind not in OUTPUT_KINDS:
        raise CertifyError(f"--output-kind must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")
    outputs = list(graph.output)
    if wanted is not None:
        if wanted not in names:
            raise CertifyError(f"--output-name {wanted!r} is not an output of the model; it has: {', '.join(names)}")
        outputs = [o for o in outputs if o.name == wanted]
    scores, labels, binaries = [], [], []
    for output in outputs:
        described = _output_width(output)
        if described is None:
            if wanted is not None:
                raise CertifyError(
                    f"--output-name {wanted!r} is not a classifier output (class scores (N, C), "
                    f"labels (N,) or one score (N, 1))"
                )
            continue
        integer, width = described
        if integer:
            labels.append((output, width))
        elif width == 1:
            binaries.append((output, width))
        else:  # class scores, or an undeclared width the probe will settle
            scores.append((output, width))
    if kind is not None and wanted is None:
        # Prefer outputs that can hold what --output-kind says; if none can, the usual
        # choice is made and refused with the reason it does not fit.
        if kind == "label":
            fitting = ([], labels, [])
        elif kind in _BINARY_KINDS:
            fitting = ([s for s in scores if s[1] is None], [], binaries)
        else:
            fitting = (scores, [], [])
        if any(fitting):
            scores, labels, binaries = fitting
    if len(scores) > 1:
        named = [s for s in scores if _SCORE_NAME.search(s[0].name)]
        if len(named) != 1:
            raise CertifyError(
                f"the model has several score outputs ({', '.join(s[0].name for s in scores)}); "
                f"choose one with --output-name"
            )
        scores = named
    chosen = (scores or labels or binaries or [None])[0]
    if chosen is None:
        raise CertifyError(
            "found no classifier output (class scores (N, C), labels (N,) or one score (N, 1)) "
            f"among the model's outputs: {', '.join(names)}"
        )
    output, width = chosen
    producers = _producers(graph)
    integer = bool(labels) and chosen is labels[0]
    if not integer and width != 1:
        relabelled = _classifier_label_output(producers, output.name)
        if relabelled is not None:
            label_name, classlabels = relabelled
            label = next((entry for entry in labels if entry[0].name == label_name), None)
            if wanted is not None or label is None or kind not in (None, "label"):
                raise CertifyError(
                    f"the model's output {output.name!r} scores the classes {_short_list(classlabels)} in "
                    f"that order, so its column numbers are not the class labels; use the classifier's "
                    f"label output ({label_name!r}) with --output-name"
                )
            (output, width), integer = label, True
    choice = OutputChoice(
        output.name, "label" if integer else "scores", width=width, integer=integer, requested=kind,
        proven_probability=not integer and _proves_probability(producers, output.name),
    )
    if integer:
        choice.num_classes = _label_classes(graph, producers, output.name)
    return choice


def _settle_kind(choice: OutputChoice) -> None:
    """Decide how to read the output once its width is known; refuse what does not fit
    --output-kind, and a single score nothing shows to be a probability or a logit."""
    name, width, asked = choice.name, choice.width, choice.requested
    if choice.integer:
        if width != 1:
            raise CertifyError(
                f"the model's integer output {name!r} holds {width} values per input; a label output "
                f"holds one class index per input; choose another output with --output-name"
            )
        if asked not in (None, "label"):
            raise CertifyError(
                f"--output-kind {asked} does not fit output {name!r}: it holds integer class labels "
                f"(--output-kind label)"
            )
        choice.kind = "label"
        return
    if asked == "label":
        hint = "logits or probabilities" if width > 1 else "binary-logit or binary-probability"
        raise CertifyError(
            f"--output-kind label does not fit output {name!r}: it holds float scores, "
            f"{width} per input (--output-kind {hint})"
        )
    if width > 1:
        if asked in _BINARY_KINDS:
            raise CertifyError(
                f"--output-kind {asked} does not fit output {name!r}: it holds {width} class scores "
                f"per input, not one (--output-kind logits or probabilities)"
            )
        choice.kind = "scores"
        choice.num_classes = width
        return
    if asked in ("logits", "probabilities"):
        raise CertifyError(
            f"--output-kind {asked} does not fit output {name!r}: it holds one score per input "
            f"(--output-kind binary-logit or binary-probability)"
        )
    if asked == "binary-logit" and choice.proven_probability:
        raise CertifyError(
            f"--output-kind binary-logit contradicts the model: output {name!r} comes from a Sigmoid, "
            f"so it is a probability (--output-kind binary-probability)"
        )
    if asked is None and not choice.proven_probability:
        raise CertifyError(
            f"the model's output {name!r} holds one score per input and its graph does not show "
            f"whether it is a probability or a logit; say which with --output-kind binary-probability "
            f"(class 1 above 0.5) or --output-kind binary-logit (class 1 above 0)"
        )
    choice.kind = "binary"
    choice.threshold = 0.0 if asked == "binary-logit" else 0.5
    choice.num_classes = 2


def _settle_classes(choice: OutputChoice, names: list[str] | None) -> None:
    """The class count: declared ones must agree, and none may exceed MAX_CLASSES."""
    found = choice.num_classes
    if names is not None:
        if found is not None and found != len(names):
            raise CertifyError(
                f"the model's {CLASSES} metadata lists {len(names)} classes but its output "
                f"{choice.name!r} has {found}; fix the metadata"
            )
        found = len(names)
    if found is not None and found > MAX_CLASSES:
        raise CertifyError(
            f"the model's output {choice.name!r} has {found} classes; certify handles at most {MAX_CLASSES}"
        )
    choice.num_classes = found


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
    # Every failure reaches the user as an exception, in one line; onnxruntime's own log
    # would add red lines, even for the probes that are expected to fail.
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def _create_session(source: str | bytes, providers: list[str], threads: int | None):
    import onnxruntime as ort

    return ort.InferenceSession(source, _session_options(threads), providers=providers)


_IR_LIMIT = re.compile(r"max supported IR version:\s*(\d+)")


def _quiet_run(session, output: str, input_name: str, batch: np.ndarray) -> np.ndarray:
    """One probe run that logs nothing: its failure is an answer, not an error to show."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    return session.run([output], {input_name: batch}, options)[0]


def _shape_text(shape) -> str:
    """1x28x28, ? where not declared; a hostile rank stays short."""
    shown = ["?" if d is None else str(d) for d in list(shape)[:8]]
    return "x".join(shown + (["..."] if len(shape) > 8 else [])) or "()"


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
    #: the batch size the graph declares (None: dynamic)
    declared_batch: int | None = None
    _names: list[str] | None = field(default=None, repr=False)
    #: opens a session on a changed copy of the model; kept until the batch handling is settled
    _reopen: object = field(default=None, repr=False)
    _settled: set = field(default_factory=set, repr=False)
    _lock: object = field(default_factory=threading.Lock, repr=False)

    @property
    def num_classes(self) -> int | None:
        """How many classes the model tells apart (None until a first run settles the output).

        A label output whose class count nothing declares may name UNDECLARED_LABEL_CLASSES.
        """
        if self.output.num_classes is None and self.output.kind == "label" and self.output.width is not None:
            return UNDECLARED_LABEL_CLASSES
        return self.output.num_classes

    @property
    def class_names(self) -> list[str] | None:
        return self._names

    @property
    def device(self) -> str:
        return "cuda" if self.providers[0].startswith("CUDA") else "cpu"

    # -- settling the output on real runs -------------------------------------------

    def settle(self, shape: Sequence[int]) -> None:
        """Probe the model on inputs of this per-input shape, once: whether a fixed batch can
        be made dynamic, that the output has one row per input, and how wide a row is.

        Runs at load when the input shape is declared, else on the first batch of a shape.
        """
        shape = tuple(int(d) for d in shape)
        if shape in self._settled:
            return
        with self._lock:
            if shape in self._settled:
                return
            self._probe(shape)
            self._settled.add(shape)

    def _batch_bytes(self, count: int, shape: tuple[int, ...]) -> int:
        inputs = math.prod(shape) * self.input_dtype.itemsize
        outputs = (self.output.width or 1) * 8
        return count * (inputs + outputs)

    def _random_inputs(self, count: int, shape: tuple[int, ...]) -> np.ndarray:
        return _random_model_input((count, *shape), self.input_dtype, np.random.default_rng(0))

    def _probe_run(self, session, batch: np.ndarray) -> np.ndarray:
        try:
            return _quiet_run(session, self.output.name, self.input_name, batch)
        except Exception as error:  # onnxruntime raises its own exception types
            raise CertifyError(
                f"onnxruntime cannot run {self.path.name} on {len(batch)} random inputs of shape "
                f"{_shape_text(batch.shape[1:])}: {first_line(error)}"
            ) from None

    def _probe(self, shape: tuple[int, ...]) -> None:
        declared = self.input_dims
        if len(shape) != len(declared) or any(d is not None and d != s for d, s in zip(declared, shape)):
            raise CertifyError(
                f"inputs of shape {_shape_text(shape)} do not fit the model's input {_shape_text(declared)}"
            )
        budget = memory_budget()
        batch = self.declared_batch
        if batch is not None and self._batch_bytes(batch, shape) > budget:
            raise CertifyError(
                f"the model only takes batches of exactly {batch} inputs of shape {_shape_text(shape)}, "
                f"{_size(self._batch_bytes(batch, shape))} a batch, more than this machine has free "
                f"({_size(budget)}); re-export it with a dynamic or smaller batch size"
            )
        if self._batch_bytes(3, shape) > budget:
            raise CertifyError(
                f"one input of shape {_shape_text(shape)} takes "
                f"{_size(self._batch_bytes(1, shape))}, more than this machine can run batches of "
                f"({_size(budget)} free); check the model's input shape"
            )
        if self._reopen is not None:
            if batch is not None:
                self._try_dynamic(batch, shape, budget)
            self._reopen = None  # the copy of the model is no longer needed
        if self.fixed_batch is not None:
            size = self.fixed_batch
            x = self._random_inputs(size, shape)
            out = self._probe_run(self.session, x)
            width = self._row_width(out, size)
            if size > 1 and width == size:
                # A (C, N) output looks like (N, C) when C == N: reordering the inputs must
                # reorder the rows, not the columns.
                rolled = self._probe_run(self.session, np.roll(x, 1, axis=0))
                if not np.allclose(rolled, np.roll(out, 1, axis=0), rtol=1e-3, atol=1e-5, equal_nan=True):
                    raise CertifyError(
                        f"the model's output {self.output.name!r} does not follow its inputs: reordering a "
                        f"batch of {size} inputs does not reorder the output's rows (a transposed (C, N) "
                        f"output?); choose another output with --output-name"
                    )
        else:
            # Two batch sizes: a row axis that follows the batch, not a transposed (C, N) output.
            x = self._random_inputs(3, shape)
            widths = {self._row_width(self._probe_run(self.session, x[:count]), count) for count in (2, 3)}
            if len(widths) > 1:
                raise CertifyError(
                    f"the model's output {self.output.name!r} gives rows of {sorted(widths)} values for "
                    f"batches of 2 and 3 inputs; a classifier gives each input the same number of scores"
                )
            (width,) = widths
        self._settle_width(width)

    def _try_dynamic(self, size: int, shape: tuple[int, ...], budget: int) -> None:
        """Use a copy of the graph with a dynamic batch axis if it gives the same answers."""
        fits = self._batch_bytes(3 * size, shape) <= budget
        if fits:
            try:
                dynamic = self._reopen()
                probe = self._random_inputs(3 * size, shape)
                batched = _quiet_run(dynamic, self.output.name, self.input_name, probe)
                single = np.concatenate([
                    _quiet_run(self.session, self.output.name, self.input_name, probe[i : i + size])
                    for i in range(0, 3 * size, size)
                ])
                if batched.shape == single.shape and batched.shape[:1] == (3 * size,) and np.allclose(
                    batched, single, rtol=1e-4, atol=1e-5
                ):
                    self.session = dynamic
                    self.notes.append(f"fixed batch size {size} made dynamic (checked against single runs)")
                    return
            except Exception:  # the graph insists on its batch size
                pass
        self.fixed_batch = size
        self.notes.append(f"the graph needs batches of exactly {size}; running in chunks")
        if self.device == "cpu":
            self.parallel_runs = max(1, min(self.parallel_runs, budget // self._batch_bytes(size, shape)))

    def _row_width(self, out: np.ndarray, count: int) -> int:
        """Values per input in a probe's output, which must have one row per input."""
        name = self.output.name
        if count == 1 and out.size >= 1 and sum(1 for d in out.shape if d > 1) <= 1:
            return int(out.size)
        if out.ndim == 0 or out.shape[0] != count:
            raise CertifyError(
                f"the model's output {name!r} has shape {tuple(out.shape)} for a batch of {count} inputs; "
                f"certify needs one row per input (a transposed (C, N) output?); choose another output "
                f"with --output-name"
            )
        row = out.shape[1:]
        if sum(1 for d in row if d > 1) > 1 or out.size == 0:
            raise CertifyError(
                f"the model's output {name!r} gives each input values of shape {tuple(row)}, not one row "
                f"of class scores; choose the classifier output with --output-name"
            )
        return int(math.prod(row))

    def _settle_width(self, width: int) -> None:
        output = self.output
        if output.width is None:  # not declared: now the kind and the class count can be decided
            output.width = width
            _settle_kind(output)
            _settle_classes(output, self._names)
        elif output.width != width:
            raise CertifyError(
                f"the model's output {output.name!r} should give {output.width} values per input but gives "
                f"{width}; re-export the model"
            )

    # -- labelling batches ------------------------------------------------------------

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output.name], {self.input_name: batch})[0]

    def raw_outputs(self, batch: np.ndarray) -> np.ndarray:
        """The chosen output for a batch as (inputs, values per input), running fixed-size
        chunks when the graph needs it; refuses an output without one row per input."""
        self.settle(batch.shape[1:])
        size = self.fixed_batch
        if size is None:
            return self._rows(self._run(batch), len(batch))
        pieces = []
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            if len(chunk) < size:
                padded = np.zeros((size,) + chunk.shape[1:], dtype=chunk.dtype)
                padded[: len(chunk)] = chunk
                pieces.append(self._rows(self._run(padded), size)[: len(chunk)])
            else:
                pieces.append(self._rows(self._run(chunk), size))
        return np.concatenate(pieces)

    def _rows(self, out: np.ndarray, count: int) -> np.ndarray:
        width = self.output.width
        if out.ndim >= 1 and out.shape[0] == count and out.size == count * width:
            return out.reshape(count, width)
        if count == 1 and out.size == width:
            return out.reshape(1, width)
        raise CertifyError(
            f"the model's output {self.output.name!r} has shape {tuple(out.shape)} for a batch of {count} "
            f"inputs; certify needs one row of {width} values per input; choose another output with --output-name"
        )

    def labels(self, batch: np.ndarray) -> np.ndarray:
        """Class index the model assigns to each input of a model-space batch."""
        out = self.raw_outputs(batch)
        output = self.output
        if output.kind == "scores":
            if np.isnan(out).any():
                raise CertifyError(
                    f"the model output NaN (output {output.name!r}); check that the input "
                    f"space options (--scale, --mean, --std) match what the model expects"
                )
            return out.argmax(axis=1)
        out = out[:, 0]
        if output.kind == "binary":
            if np.isnan(out).any():
                raise CertifyError(f"the model output NaN (output {output.name!r}); check the input space options")
            if output.threshold == 0.5 and len(out) and not (out.min() >= 0 and out.max() <= 1):
                bad = out[(out < 0) | (out > 1)][0]
                raise CertifyError(
                    f"the model's output {output.name!r} gave {float(bad):g}, outside [0, 1], so it is not a "
                    f"probability; if it is a logit, say so with --output-kind binary-logit"
                )
            return (out > output.threshold).astype(np.int64)
        return self._checked_labels(out)

    def _checked_labels(self, out: np.ndarray) -> np.ndarray:
        """Labels as int64, each within the model's classes."""
        classes = self.num_classes
        if out.dtype == np.uint64 and len(out) and out.max() >= classes:
            bad = int(out.max())
        else:
            labels = out.astype(np.int64)
            outside = (labels < 0) | (labels >= classes)
            if not outside.any():
                return labels
            bad = int(labels[outside][0])
        name = self.output.name
        if self.output.num_classes is None:
            raise CertifyError(
                f"the model's label output {name!r} gave class {bad}; with no class count declared, "
                f"certify accepts labels 0 to {UNDECLARED_LABEL_CLASSES - 1}: list the classes in the "
                f"model's {CLASSES} metadata (a JSON list of names), or choose a score output "
                f"with --output-name"
            )
        raise CertifyError(
            f"the model's label output {name!r} gave class {bad}, outside its {classes} classes "
            f"(0 to {classes - 1}); choose a score output with --output-name"
        )


def _symbolic_dims(proto: onnx.ModelProto, input_name: str, size: int | None = None) -> onnx.ModelProto:
    """A copy whose input and output dims stored as 0 or negative (and, with ``size``, a
    leading dim of ``size``) are symbolic, so onnxruntime takes any size there."""
    dynamic = onnx.ModelProto()
    dynamic.CopyFrom(proto)
    graph = dynamic.graph
    for value in [v for v in graph.input if v.name == input_name] + list(graph.output):
        for position, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and (dim.dim_value <= 0 or position == 0 and dim.dim_value == size):
                dim.dim_param = "batch" if position == 0 else f"dim{position}"
    if size is not None:
        del graph.value_info[:]
    return dynamic


def _needs_symbolic_dims(proto: onnx.ModelProto, input_name: str) -> bool:
    values = [v for v in proto.graph.input if v.name == input_name] + list(proto.graph.output)
    return any(d.HasField("dim_value") and d.dim_value <= 0 for v in values for d in v.type.tensor_type.shape.dim)


def _random_model_input(shape: Sequence[int], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 256, size=shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def load_model(
    path: str | os.PathLike,
    *,
    output_name: str | None = None,
    output_kind: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    cuda_probe=probe_cuda,
) -> OnnxModel:
    """Vet, inspect and open an ONNX classifier.

    ``output_kind`` (one of OUTPUT_KINDS) says what the output holds where the graph
    does not show it (a single score: probability or logit).
    """
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
    metadata = metadata_props(proto)
    names = recorded_classes(metadata)
    output = _choose_output(proto, output_name, output_kind)
    if output.width is not None:  # otherwise the first probe tells
        _settle_kind(output)
    _settle_classes(output, names)

    providers, note = choose_providers(device, ort.get_available_providers(), cuda_probe)
    on_cpu = providers[0] == CPU
    if on_cpu:
        parallel_runs, session_threads = cpu_runs(threads or usable_cores())
    else:
        parallel_runs, session_threads = 2, threads
    notes: list[str] = []
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
            raise CertifyError(f"onnxruntime cannot load {path.name}: {first_line(error)}") from None

    if _needs_symbolic_dims(proto, model_input.name):
        session = open_session(_symbolic_dims(proto, model_input.name), True)
    else:
        session = open_session(proto, False)
    reopen = None
    if dims[0] is not None:
        size = dims[0]
        reopen = lambda: open_session(_symbolic_dims(proto, model_input.name, size), True)  # noqa: E731

    model = OnnxModel(
        path=path,
        sha256=file_sha256(path, *(path.parent / name for name in data_files)),
        metadata=metadata,
        input_name=model_input.name,
        input_dims=dims[1:],
        input_dtype=np.dtype(_NUMPY_TYPES[elem]),
        output=output,
        providers=session.get_providers(),
        device_note=note,
        notes=notes,
        session=session,
        parallel_runs=parallel_runs,
        declared_batch=dims[0],
        _names=names,
        _reopen=reopen,
    )
    if all(d is not None for d in model.input_dims):
        model.settle(model.input_dims)
    return model
