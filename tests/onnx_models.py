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


def hyperplane_model(direction: np.ndarray, offset: float, input_shape=(4,), **options) -> onnx.ModelProto:
    """Two-class model: class 1 where direction . x + offset > 0, else class 0.

    ``options`` go to :func:`linear_model` (e.g. ``input_type``)."""
    direction = np.asarray(direction, dtype=np.float32).reshape(-1)
    weights = np.stack([-direction / 2, direction / 2], axis=1)
    bias = np.array([-offset / 2, offset / 2], dtype=np.float32)
    return linear_model(weights, bias, input_shape, **options)


# -- odd and hostile models for the loader tests -----------------------------------


def write(model: onnx.ModelProto, path: Path, ir_version: int = IR_VERSION) -> Path:
    """Save without the checker, for models the checker (rightly) dislikes."""
    model.ir_version = ir_version
    Path(path).write_bytes(model.SerializeToString())
    return Path(path)


def _model(nodes, inputs, outputs, initializers=(), opsets=(("", OPSET),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "odd", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def fixed_reshape_model(weights: np.ndarray, bias: np.ndarray, input_shape: tuple[int, ...], batch: int) -> onnx.ModelProto:
    """A linear model whose graph reshapes to the constant shape [batch, -1]: only that batch size runs."""
    weights = np.asarray(weights, dtype=np.float32)
    classes = weights.shape[1]
    return _model(
        [
            helper.make_node("Reshape", ["input", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["product"]),
            helper.make_node("Add", ["product", "b"], ["logits"]),
        ],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        [
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "b"),
            numpy_helper.from_array(np.array([batch, -1], dtype=np.int64), "shape"),
        ],
    )


def batch_mixing_model(features: int, classes: int, batch: int) -> onnx.ModelProto:
    """Fixed batch; each output depends on the whole batch (x minus the batch mean),
    so running a bigger batch gives other answers."""
    rng = np.random.default_rng(1)
    return _model(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["input", "mean"], ["centered"]),
            helper.make_node("MatMul", ["centered", "W"], ["logits"]),
        ],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "W")],
        opsets=(("", 13),),
    )


def multi_output_model(weights: np.ndarray, bias: np.ndarray, input_shape: tuple[int, ...], names: list[str]) -> onnx.ModelProto:
    """A linear model with several (N, C) float outputs: logits, then negated logits, then ..."""
    model = linear_model(weights, bias, input_shape)
    classes = np.asarray(weights).shape[1]
    graph = model.graph
    del graph.output[:]
    for number, name in enumerate(names):
        graph.node.append(helper.make_node("Identity" if number == 0 else "Neg", ["logits"], [name]))
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", classes]))
    return model


def squeezed_sigmoid_model(weights: np.ndarray, bias: np.ndarray, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    """One probability per input, (N,): Sigmoid then Squeeze, as torch exports ``sigmoid(x).squeeze(1)``."""
    model = linear_model(weights, bias, input_shape, output="sigmoid")
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"))
    graph.node.append(helper.make_node("Squeeze", ["probability", "axes"], ["p"]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N"]))
    return model


def nan_model(features: int, classes: int, how: str = "log") -> onnx.ModelProto:
    """Scores that are NaN for inputs in [0, 1]: log(x - 2), or (x - x) / 0."""
    if how == "log":
        nodes = [helper.make_node("Sub", ["input", "two"], ["shifted"]), helper.make_node("Log", ["shifted"], ["bad"])]
    else:
        nodes = [helper.make_node("Sub", ["input", "input"], ["zeros"]), helper.make_node("Div", ["zeros", "zero"], ["bad"])]
    nodes.append(helper.make_node("MatMul", ["bad", "W"], ["logits"]))
    return _model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [
            numpy_helper.from_array(np.ones((features, classes), dtype=np.float32), "W"),
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        ],
    )


def custom_domain_model(domain: str = "evil.ops", nested: bool = False) -> onnx.ModelProto:
    """(N, 4) -> (N, 2) through an operator of a custom domain, optionally inside an If branch."""
    evil = helper.make_node("Pwn", ["input"], ["logits"], domain=domain)
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])]
    opsets = (("", OPSET), (domain, 1))
    if not nested:
        return _model([evil], inputs, outputs, opsets=opsets)
    branch = helper.make_graph([evil], "branch", [], outputs)
    condition = numpy_helper.from_array(np.array(True), "condition")
    node = helper.make_node("If", ["condition"], ["logits"], then_branch=branch, else_branch=branch)
    return _model([node], inputs, outputs, [condition], opsets=opsets)


def two_input_model() -> onnx.ModelProto:
    return _model(
        [helper.make_node("Add", ["a", "b"], ["logits"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
    )


def with_external_weights(model: onnx.ModelProto, location: str, tensor: str = "W") -> tuple[onnx.ModelProto, bytes]:
    """Mark ``tensor`` as stored at ``location``; returns the model and the bytes that belong there."""
    for initializer in model.graph.initializer:
        if initializer.name == tensor:
            data = numpy_helper.to_array(initializer).tobytes()
            initializer.ClearField("raw_data")
            del initializer.float_data[:]
            initializer.data_location = TensorProto.EXTERNAL
            entry = initializer.external_data.add()
            entry.key, entry.value = "location", location
            return model, data
    raise KeyError(tensor)
