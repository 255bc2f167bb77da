"""Reading an ONNX file safely: parsed without its external data, vetted, hashed.

Nothing here runs the model: a file is refused, in one line, before onnxruntime sees it
when it is not ONNX, needs a custom-op library, or points at external data outside its
folder or larger than memory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper

from .errors import CertifyError, first_line
from .resources import format_size, memory_budget

#: Operator domains onnxruntime implements itself; anything else needs a custom-op library.
STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
ONNX_MAGIC_HINT = "export it with torch.onnx.export, tf2onnx or skl2onnx"


def file_sha256(path: str | os.PathLike, *more: str | os.PathLike) -> str:
    """SHA-256 of a file, followed by ``more`` files (a model's external data)."""
    digest = hashlib.sha256()
    for name in (path, *more):
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def graphs(graph: onnx.GraphProto | onnx.FunctionProto):
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


def all_tensors(proto: onnx.ModelProto):
    """Every tensor in the model: initializers and attribute tensors, dense and sparse,
    in every graph, subgraph and function (onnx's own helper recurses and skips sparse ones)."""
    for body in [proto.graph, *proto.functions]:
        for graph in graphs(body):
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


def external_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Tensors whose data lives in another file."""
    return [t for t in all_tensors(proto) if external_data_helper.uses_external_data(t)]


def check_external_data(proto: onnx.ModelProto, folder: Path) -> bool:
    """Refuse tensors whose external data lies outside the model's folder, or more
    external data than fits in memory (it is read into memory and hashed)."""
    root = folder.resolve()
    files: set[Path] = set()
    for tensor in external_tensors(proto):
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
            f"the model's external data files hold {format_size(total)}, more than this machine can read in "
            f"({format_size(memory_budget())} available for it); check the files beside the model"
        )
    return bool(files)


def load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Read vetted external data into the proto, so onnxruntime never opens another file."""
    try:
        for tensor in external_tensors(proto):
            external_data_helper.load_external_data_for_tensor(tensor, str(path.parent))
    except Exception as error:  # a short, unreadable or odd data file
        raise CertifyError(
            f"cannot read the external data of {path.name}: {first_line(error)}; re-export the model with its "
            f"data files"
        ) from None


def check_domains(proto: onnx.ModelProto) -> None:
    local = {function.domain for function in proto.functions}
    for graph in graphs(proto.graph):
        for node in graph.node:
            if node.domain not in STANDARD_DOMAINS and node.domain not in local:
                raise CertifyError(
                    f"refusing the model: node {node.name or node.op_type!r} uses operator "
                    f"{node.op_type!r} from the custom domain {node.domain!r}, which needs a "
                    f"custom-op library; export the model with standard ONNX operators"
                )
    for function in proto.functions:
        for body in graphs(function):
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
    check_domains(proto)
    external = check_external_data(proto, path.parent)
    return proto, external


def declared_dims(value_info: onnx.ValueInfoProto) -> list[int | None] | None:
    """Declared dims; None where symbolic, or stored as 0 or negative (PaddlePaddle writes -1)."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]


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


def classifier_input(graph: onnx.GraphProto) -> tuple[onnx.ValueInfoProto, list[int | None], np.dtype]:
    """The one input tensor of a classifier, its declared dims (batch axis first) and its dtype."""
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
    dims = declared_dims(model_input)
    if not dims:
        raise CertifyError(f"the model's input {model_input.name!r} has no declared shape (need at least a batch axis)")
    return model_input, dims, np.dtype(_NUMPY_TYPES[elem])


def external_data_files(proto: onnx.ModelProto) -> list[str]:
    """The files, beside the model, that hold its external data."""
    return sorted({external_data_helper.ExternalDataInfo(t).location for t in external_tensors(proto)})
