"""Which output of a classifier holds its answer, and how to read it.

Class scores (argmax), a class label, or a single score (a probability or a logit):
chosen from the graph where it shows, from ``--output-name`` and ``--output-kind``
where it does not; never guessed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import onnx
from onnx import TensorProto, numpy_helper

from .errors import CertifyError
from .metadata import CLASSES, MAX_CLASSES
from .onnx_file import declared_dims

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
_INT_TYPES = {
    TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8,
    TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
}
_SCORE_NAME = re.compile(r"prob|logit|score|output|pred|softmax", re.IGNORECASE)


#: Classes a label output may name when nothing declares how many the model has.
UNDECLARED_LABEL_CLASSES = 1 << 16
#: What ``--output-kind`` may say the chosen output holds.
OUTPUT_KINDS = ("logits", "probabilities", "label", "binary-probability", "binary-logit")
_BINARY_KINDS = ("binary-probability", "binary-logit")


@dataclass
class OutputChoice:
    """The output certify reads, and how."""

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
        dims = declared_dims(scores) if scores is not None and scores.type.HasField("tensor_type") else None
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
    dims = declared_dims(output)
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


def choose_output(proto: onnx.ModelProto, wanted: str | None = None, kind: str | None = None,
                  class_names: list[str] | None = None) -> OutputChoice:
    """The output to read: ``wanted`` (--output-name) or the one classifier output, read as
    ``kind`` (--output-kind) says where the graph does not show it; ``class_names``, the model's,
    must be as many as the output's classes."""
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
    if choice.width is not None:  # otherwise the first run tells
        settle_kind(choice)
    settle_classes(choice, class_names)
    return choice


def settle_kind(choice: OutputChoice) -> None:
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


def settle_classes(choice: OutputChoice, names: list[str] | None) -> None:
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

