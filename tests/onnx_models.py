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


# -- outputs that do not have one row of class scores per input ----------------------


def odd_output_model(weights: np.ndarray, bias: np.ndarray, input_shape: tuple[int, ...], how: str,
                     batch: int | str = "N", declared: list | None = None) -> onnx.ModelProto:
    """A linear model whose logits leave in another shape:

    "transposed" (C, N); "first-rows" only the first 3 rows; "doubled" every row twice;
    "nc11" (N, C, 1, 1), as model-zoo SqueezeNet and DenseNet-121 give; "map" (N, 2, C / 2).
    ``declared`` is the output shape the graph declares (default: the true one).
    """
    weights = np.asarray(weights, dtype=np.float32)
    classes = weights.shape[1]
    model = linear_model(weights, bias, input_shape, batch=batch)
    graph = model.graph
    shapes = {
        "transposed": [classes, batch], "first-rows": [None, classes], "doubled": [None, classes],
        "nc11": [batch, classes, 1, 1], "map": [batch, 2, classes // 2],
    }
    if how == "transposed":
        graph.node.append(helper.make_node("Transpose", ["logits"], ["scores"], perm=[1, 0]))
    elif how == "first-rows":
        graph.initializer.extend([numpy_helper.from_array(np.array([v], dtype=np.int64), n)
                                  for n, v in (("start", 0), ("stop", 3), ("axis", 0))])
        graph.node.append(helper.make_node("Slice", ["logits", "start", "stop", "axis"], ["scores"]))
    elif how == "doubled":
        graph.node.append(helper.make_node("Concat", ["logits", "logits"], ["scores"], axis=0))
    elif how in ("nc11", "map"):
        target = [-1, classes, 1, 1] if how == "nc11" else [-1, 2, classes // 2]
        graph.initializer.append(numpy_helper.from_array(np.array(target, dtype=np.int64), "target"))
        graph.node.append(helper.make_node("Reshape", ["logits", "target"], ["scores"]))
    else:
        raise ValueError(how)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, declared or shapes[how]))
    return model


def fixed_transposed_model(features: int, batch: int, reshape: bool = True) -> onnx.ModelProto:
    """Fixed batch B, B classes, output transposed to (C, N): its shape cannot tell it apart
    from (N, C). With ``reshape`` the graph only runs batches of B (a constant Reshape)."""
    rng = np.random.default_rng(3)
    if reshape:
        model = fixed_reshape_model(rng.normal(size=(features, batch)), np.zeros(batch), (features,), batch)
    else:
        model = linear_model(rng.normal(size=(features, batch)), np.zeros(batch), (features,), batch=batch)
    graph = model.graph
    graph.node.append(helper.make_node("Transpose", ["logits"], ["scores"], perm=[1, 0]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, batch]))
    return model


# -- single scores: probabilities, logits, or unknown -------------------------------------


def single_score_model(weights: np.ndarray, bias: np.ndarray, input_shape: tuple[int, ...],
                       how: str) -> onnx.ModelProto:
    """One score per input from a linear model with two columns:

    "sigmoid-gather" ``sigmoid(z)[:, 0]`` (N,); "sigmoid-slice" ``sigmoid(z)[:, :1]`` (N, 1);
    "sigmoid-doubled" ``2 * sigmoid(z)[:, 0]`` (no longer a probability); "relu" ``relu(z)[:, 0]``.
    """
    model = linear_model(weights, bias, input_shape)
    graph = model.graph
    graph.initializer.extend([
        numpy_helper.from_array(np.array(0, dtype=np.int64), "column"),
        numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "start"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "stop"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
    ])
    first = "Relu" if how == "relu" else "Sigmoid"
    graph.node.append(helper.make_node(first, ["logits"], ["activated"]))
    if how == "sigmoid-slice":
        graph.node.append(helper.make_node("Slice", ["activated", "start", "stop", "axis"], ["score"]))
        shape = ["N", 1]
    else:
        graph.node.append(helper.make_node("Gather", ["activated", "column"], ["picked"], axis=1))
        graph.node.append(helper.make_node("Mul" if how == "sigmoid-doubled" else "Identity",
                                           ["picked", "two"] if how == "sigmoid-doubled" else ["picked"], ["score"]))
        shape = ["N"]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, shape))
    return model


def chain_model(length: int, first: str = "Sigmoid") -> onnx.ModelProto:
    """(N, 1) -> ``first`` -> ``length`` Identity nodes -> (N, 1): a long walk back to the source."""
    nodes = [helper.make_node(first, ["input"], ["v0"])]
    nodes += [helper.make_node("Identity", [f"v{i}"], [f"v{i + 1}"]) for i in range(length)]
    return _model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info(f"v{length}", TensorProto.FLOAT, ["N", 1])],
    )


def nested_if_model(depth: int) -> onnx.ModelProto:
    """(N, 2) -> (N, 2) through ``depth`` If nodes, each inside the previous one's branch."""
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])]
    leaf = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "leaf", [], out)
    body = leaf
    for level in range(depth):
        node = helper.make_node("If", ["condition"], ["logits"], then_branch=body, else_branch=leaf)
        body = helper.make_graph([node], f"level{level}", [], out)
    return _model(
        list(body.node),
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2])],
        out,
        [numpy_helper.from_array(np.array(True), "condition")],
    )


# -- label outputs ---------------------------------------------------------------------------


def offset_label_model(weights: np.ndarray, offset: int, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    """label = argmax(x @ weights) + offset, an int64 (N,) output; no class count declared."""
    model = linear_model(weights, np.zeros(np.asarray(weights).shape[1]), input_shape, output="label")
    graph = model.graph
    for node in graph.node:
        if node.op_type == "ArgMax":
            node.output[0] = "argmax"
    graph.initializer.append(numpy_helper.from_array(np.array(offset, dtype=np.int64), "offset"))
    graph.node.append(helper.make_node("Add", ["argmax", "offset"], ["label"]))
    return model


def ml_classifier_model(coefficients: np.ndarray, classlabels: list[int]) -> onnx.ModelProto:
    """An ONNX-ML LinearClassifier, as skl2onnx writes: label (N,) and scores (N, C)."""
    coefficients = np.asarray(coefficients, dtype=np.float32)
    features, classes = coefficients.shape
    node = helper.make_node(
        "LinearClassifier", ["input"], ["label", "probabilities"], domain="ai.onnx.ml",
        coefficients=coefficients.T.reshape(-1).tolist(), intercepts=[0.0] * classes,
        classlabels_ints=list(classlabels),
    )
    return _model(
        [node],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        opsets=(("", OPSET), ("ai.onnx.ml", 1)),
    )


# -- sizes that exhaust memory ---------------------------------------------------------------


def huge_input_model(side: int) -> onnx.ModelProto:
    """Inputs (N, side, side) reduced to (N, side) scores: a tiny file, enormous inputs."""
    return _model(
        [helper.make_node("ReduceMean", ["input"], ["scores"], axes=[2], keepdims=0)],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", side, side])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", side])],
    )


def spatial_model(classes: int, declare_output: bool = True) -> onnx.ModelProto:
    """(N, 1, H, W) with H and W not declared -> mean brightness m -> (N, classes) scores
    m * classes * c - c * c / 2: the class nearest ``m * classes`` wins."""
    c = np.arange(classes, dtype=np.float32)
    return _model(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Unsqueeze", ["mean", "one"], ["column"]),
            helper.make_node("MatMul", ["column", "W"], ["product"]),
            helper.make_node("Add", ["product", "b"], ["scores"]),
        ],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", classes] if declare_output else None)],
        [
            numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
            numpy_helper.from_array(c[None, :] * classes, "W"),
            numpy_helper.from_array(-c * c / 2, "b"),
        ],
    )
