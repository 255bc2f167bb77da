"""Tiny ONNX classifiers built by hand, with known behaviour, for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8
OPSET = 17


def save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def linear_model(
    weights: np.ndarray,
    bias: np.ndarray,
    input_shape: tuple[int, ...],
    *,
    batch: int | str = "N",
    layout: str = "nchw",
    output: str = "logits",
    input_type: int = TensorProto.FLOAT,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """logits = flatten(x) @ weights + bias, with the variations the loader must handle.

    ``input_shape`` is the per-input shape the model declares (e.g. (1, 28, 28),
    (28, 28, 1), (784,)); ``batch`` is a fixed int or a symbolic name;
    ``output`` is "logits", "probabilities", "label", "label+probabilities" or "sigmoid".
    ``weights`` has shape (features, classes) over x flattened as declared.
    """
    weights = np.asarray(weights, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32)
    features = int(np.prod(input_shape))
    assert weights.shape[0] == features
    nodes = []
    current = "input"
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [current], ["input_float"], to=TensorProto.FLOAT))
        current = "input_float"
    nodes.append(helper.make_node("Flatten", [current], ["flat"], axis=1))
    nodes.append(helper.make_node("MatMul", ["flat", "W"], ["product"]))
    nodes.append(helper.make_node("Add", ["product", "b"], ["logits"]))
    classes = weights.shape[1]
    outputs = []
    batch_dim = batch
    if output == "logits":
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch_dim, classes]))
    elif output == "probabilities":
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch_dim, classes]))
    elif output in ("label", "label+probabilities"):
        nodes.append(helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0))
        outputs.append(helper.make_tensor_value_info("label", TensorProto.INT64, [batch_dim]))
        if output == "label+probabilities":
            nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
            outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch_dim, classes]))
    elif output == "sigmoid":
        assert classes == 1
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["probability"]))
        outputs.append(helper.make_tensor_value_info("probability", TensorProto.FLOAT, [batch_dim, 1]))
    else:
        raise ValueError(output)
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("input", input_type, [batch_dim, *input_shape])],
        outputs,
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def hyperplane_model(direction: np.ndarray, offset: float, input_shape=(4,)) -> onnx.ModelProto:
    """Two-class model: class 1 where direction . x + offset > 0, else class 0."""
    direction = np.asarray(direction, dtype=np.float32).reshape(-1)
    weights = np.stack([-direction / 2, direction / 2], axis=1)
    bias = np.array([-offset / 2, offset / 2], dtype=np.float32)
    return linear_model(weights, bias, input_shape)
