"""An ONNX classifier opened in onnxruntime, ready to label batches.

Opening a model: the file is read and vetted (``onnx_file``), its output chosen
(``outputs``), its threads planned (``resources``), then a session is opened and, where
the input shape is declared, probed on random inputs (batch axis, rows per input).
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from .device import CPU, choose_providers, probe_cuda
from .errors import CertifyError, first_line
from .diffusion import is_noise_predictor
from .metadata import CLASSES, DENOISER, DIFFUSION, is_denoiser, metadata_props, recorded_classes
from .onnx_file import (
    classifier_input, declared_dims, external_data_files, file_sha256, load_external_data, read_model,
)
from .outputs import UNDECLARED_LABEL_CLASSES, OutputChoice, choose_output, settle_classes, settle_kind
from .resources import format_size, memory_budget, parallelism


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


def _check_inferred_classes(proto: onnx.ModelProto, choice: OutputChoice, names: list[str]) -> None:
    """Refuse class names that do not match a score output whose width the file leaves open
    but onnx's shape inference finds (when the input shape is declared, the probe at load
    checks this too; when it is not, this is the only check before the first batch)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:  # inference is a bonus: a model it cannot follow is probed as usual
        return
    value = next((o for o in inferred.graph.output if o.name == choice.name), None)
    dims = declared_dims(value) if value is not None else None
    if not dims or any(d is None for d in dims[1:]):
        return
    width = math.prod(dims[1:])
    found = width if width > 1 else 2  # a single score tells two classes apart
    if found != len(names):
        raise CertifyError(
            f"the model's {CLASSES} metadata lists {len(names)} classes but its output "
            f"{choice.name!r} has {found}; fix the metadata"
        )


#: Relative score difference above which two runs of the same input disagree: far above the
#: float32 rounding of other kernels for other batch sizes (4e-7 measured), far below what
#: batch statistics cause (dynamic quantization: 4e-3 to 3e-2 measured).
BATCH_TOLERANCE = 1e-3
#: The same for half-precision inputs or outputs (their rounding is 1e-3).
HALF_BATCH_TOLERANCE = 1e-2


def _rows_differ(first: np.ndarray, second: np.ndarray, integer: bool, input_dtype: np.dtype) -> bool:
    """Whether two outputs for the same input disagree beyond rounding: a relative score
    difference above the tolerance, another top class without a near tie, or other labels."""
    if integer:
        return not np.array_equal(first, second)
    half = first.dtype.itemsize < 4 or (np.dtype(input_dtype).itemsize < 4 and np.issubdtype(input_dtype, np.floating))
    tolerance = HALF_BATCH_TOLERANCE if half else BATCH_TOLERANCE
    a, b = first.astype(np.float64), second.astype(np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)) or not np.array_equal(a[~finite], b[~finite], equal_nan=True):
        return True
    if not finite.any():
        return False
    a, b = a[finite], b[finite]
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()))
    room = tolerance * scale + 1e-30
    if float(np.abs(a - b).max()) > room:
        return True
    if a.size > 1 and a.argmax() != b.argmax():
        top = np.sort(a)[-2:], np.sort(b)[-2:]
        return all(t[1] - t[0] > room for t in top)
    return False


def _disagreeing_rows(first: np.ndarray, second: np.ndarray, integer: bool, input_dtype: np.dtype) -> list[int]:
    """The rows of two (inputs, values) outputs for the same inputs that disagree beyond rounding."""
    same = first == second
    if not integer:
        same |= np.isnan(first) & np.isnan(second)
    changed = np.flatnonzero(~same.reshape(len(first), -1).all(axis=1))
    return [int(i) for i in changed if _rows_differ(first[i], second[i], integer, input_dtype)]


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
    #: whether an input's output depends on the other inputs in its batch (None until probed):
    #: the smoothing theorem needs every view classified by the same function of that view alone
    batch_coupled: bool | None = None
    #: run a batch-coupled model one input per run (a function of each input again) instead of refusing it
    allow_batch_coupling: bool = False
    #: a denoiser composed with the classifier (``certifier.denoiser.ComposedParts``): tells which
    #: of the two networks a coupled or non-finite output comes from; None for a model file alone
    parts: object = field(default=None, repr=False)
    _names: list[str] | None = field(default=None, repr=False)
    #: opens a session on a changed copy of the model; kept until the batch handling is settled
    _reopen: object = field(default=None, repr=False)
    _settled: set = field(default_factory=set, repr=False)
    _lock: object = field(default_factory=threading.Lock, repr=False)
    #: batch sizes whose first batch of real inputs passed the coupling check (``_check_real_batch``)
    _checked_sizes: set = field(default_factory=set, repr=False)
    _check_lock: object = field(default_factory=threading.Lock, repr=False)

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
                f"{format_size(self._batch_bytes(batch, shape))} a batch, more than this machine has free "
                f"({format_size(budget)}); re-export it with a dynamic or smaller batch size"
            )
        if self._batch_bytes(3, shape) > budget:
            raise CertifyError(
                f"one input of shape {_shape_text(shape)} takes "
                f"{format_size(self._batch_bytes(1, shape))}, more than this machine can run batches of "
                f"({format_size(budget)} free); check the model's input shape"
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
        self._check_batch_coupling(shape)

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
            settle_kind(output)
            settle_classes(output, self._names)
        elif output.width != width:
            raise CertifyError(
                f"the model's output {output.name!r} should give {output.width} values per input but gives "
                f"{width}; re-export the model"
            )

    def _batch_compositions(self, shape: tuple[int, ...]) -> tuple[np.ndarray, list[list[int]]]:
        """Probe inputs, and batches of them (indices; -1 is the engine's zero padding) in which
        input 0 (and others) meet other companions, in other places and other batch sizes."""
        size = self.fixed_batch
        count = 4 if size is None else size  # a fixed batch: no more memory than one batch
        pool = _random_model_input((count, *shape), self.input_dtype, np.random.default_rng(1))
        if np.issubdtype(self.input_dtype, np.floating):
            # companions of another range: scales computed over the batch (dynamic quantization) show
            pool[count // 2 :] = (pool[count // 2 :].astype(np.float64) * 4 - 1.5).astype(self.input_dtype)
        if size is None:
            return pool, [[0], [0, 1, 2], [2, 0, 1], [3, 0], [1, 3]]
        if size == 1:
            return pool, []
        others = list(range(1, size))
        return pool, [[0, *others], [0] + [-1] * (size - 1), [*others, 0]]

    def _check_batch_coupling(self, shape: tuple[int, ...]) -> None:
        """Refuse (unless allowed) a model whose output for an input changes with the rest of its
        batch: the smoothing theorem needs each noisy view classified by one fixed function of
        that view (random or not), and certificates would otherwise depend on --batch-size.

        A model that answers the same batch differently twice is random (dropout left on):
        its randomness hides any dependence on the batch, so it counts as coupled too.
        """
        pool, compositions = self._batch_compositions(shape)
        if not compositions:
            self.batch_coupled = bool(self.batch_coupled)
            return
        padding = np.zeros((1, *shape), dtype=self.input_dtype)
        seen: dict[int, np.ndarray] = {}
        coupled = random = False
        for number, composition in enumerate([compositions[0], *compositions]):
            batch = np.concatenate([padding if i < 0 else pool[i : i + 1] for i in composition])
            try:
                rows = self._rows(_quiet_run(self.session, self.output.name, self.input_name, batch), len(batch))
            except Exception:  # e.g. a companion of another range the graph cannot take: not evidence
                continue
            for index, row in zip(composition, rows):
                if index < 0:
                    continue
                if index in seen and _rows_differ(seen[index], row, self.output.integer, self.input_dtype):
                    random |= number == 1  # the very batch run before
                    coupled = True
                seen.setdefault(index, row)
        self.batch_coupled = bool(self.batch_coupled)
        if coupled:
            self._coupling_found(pool, random=random)

    def _check_real_batch(self, batch: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Check the first batch of each size a run uses for coupling, before its outputs count: the
        probes at load try batches of 1 to 3 random inputs, and a graph may mix its rows only in
        larger batches, or only on real inputs. The batch runs again with its rows in another order
        and half of them replaced (so each row meets other companions), and its first and last rows
        run alone: every row must give the same output. Returns the batch's outputs."""
        count = len(batch)
        with self._check_lock:
            if self.batch_coupled:  # found coupled (and allowed) by another thread meanwhile
                return self._one_by_one(batch)
            if count in self._checked_sizes:
                return out
            coupled, random = self.coupling_on(batch, out)
            if coupled:
                self._coupling_found(batch, random=random, size=count)
                return self._one_by_one(batch)
            self._checked_sizes.add(count)
        return out

    def coupling_on(self, batch: np.ndarray, out: np.ndarray | None = None) -> tuple[bool, bool]:
        """(coupled, random): whether any row of ``batch`` gets another output (beyond rounding) when
        the batch runs again with its rows in another order and half of them replaced, or alone (its
        first and last rows); and whether the very same batch run again changes. ``out``: the
        batch's outputs, if already run."""
        count = len(batch)
        if out is None:
            self.settle(batch.shape[1:])
            out = self._outputs(batch)
        # rows 0 .. ceil(count / 2) - 1, each twice, the last first: each row meets other companions
        order = (count - 1 - np.arange(count)) // 2
        alone = sorted({0, count - 1})
        again = self._outputs(batch[order])
        singles = np.concatenate([self._outputs(batch[i : i + 1]) for i in alone])
        differ = functools.partial(_disagreeing_rows, integer=self.output.integer, input_dtype=self.input_dtype)
        if not differ(again, out[order]) and not differ(singles, out[alone]):
            return False, False
        return True, bool(differ(self._outputs(batch), out))

    def _coupling_found(self, batch: np.ndarray, *, random: bool, size: int | None = None) -> None:
        """Refuse a model whose output for an input changed with the rest of ``batch`` (or from run to
        run), unless coupling is allowed: then it runs one input at a time from now on."""
        if self.allow_batch_coupling:
            self.batch_coupled = True
            self.notes.append("outputs depend on the other inputs in a batch: running one input at a time")
            return
        name = self.parts.coupled(batch) if self.parts is not None else self.path.name
        seen = f"in this run's batches of {size}; " if size else ""
        why = (f"{name} gives other outputs each time it runs the same inputs ({seen}dropout left on?), so whether "
               f"an input's output also depends on the other inputs in its batch cannot be checked"
               if random else
               f"the output of {name} for an input depends on the other inputs in its batch ({seen}a normalization "
               f"over the batch, BatchNormalization in training mode, dynamic quantization?)")
        raise CertifyError(
            f"{why}, so its certificates could depend on --batch-size; export it in inference mode, or "
            f"certify with --batch-size 1 (each input then runs alone)"
        )

    # -- labelling batches ------------------------------------------------------------

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output.name], {self.input_name: batch})[0]

    def raw_outputs(self, batch: np.ndarray) -> np.ndarray:
        """The chosen output for a batch as (inputs, values per input), running fixed-size
        chunks when the graph needs it, and one input per run when outputs depend on the
        batch; refuses an output without one row per input."""
        self.settle(batch.shape[1:])
        if self.batch_coupled and len(batch) > 1:
            return self._one_by_one(batch)
        out = self._outputs(batch)
        if len(batch) > 1 and self.fixed_batch != 1 and len(batch) not in self._checked_sizes:
            out = self._check_real_batch(batch, out)
        return out

    def _one_by_one(self, batch: np.ndarray) -> np.ndarray:
        return np.concatenate([self._outputs(batch[i : i + 1]) for i in range(len(batch))])

    def _outputs(self, batch: np.ndarray) -> np.ndarray:
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
                raise CertifyError(self._nan_message(batch))
            return out.argmax(axis=1)
        out = out[:, 0]
        if output.kind == "binary":
            if np.isnan(out).any():
                raise CertifyError(self._nan_message(batch))
            if output.threshold == 0.5 and len(out) and not (out.min() >= 0 and out.max() <= 1):
                bad = out[(out < 0) | (out > 1)][0]
                raise CertifyError(
                    f"the model's output {output.name!r} gave {float(bad):g}, outside [0, 1], so it is not a "
                    f"probability; if it is a logit, say so with --output-kind binary-logit"
                )
            return (out > output.threshold).astype(np.int64)
        return self._checked_labels(out)

    def _nan_message(self, batch: np.ndarray) -> str:
        if self.parts is not None:
            return self.parts.non_finite(batch)
        return (f"the model output NaN (output {self.output.name!r}); check that the input space options (--scale, "
                f"--mean, --std) match what the model expects")

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


def _open_session(path: Path, proto: onnx.ModelProto, *, from_file: bool, providers: list[str],
                  threads: int | None, notes: list[str]):
    """An onnxruntime session for ``proto`` (read from ``path`` itself when ``from_file``). A model
    whose IR version is newer than onnxruntime reads is read at the newest it does, with a note."""
    source = str(path) if from_file else proto.SerializeToString()
    try:
        return _create_session(source, providers, threads)
    except Exception as error:
        limit = _IR_LIMIT.search(str(error))
        if limit and proto.ir_version > int(limit.group(1)):
            lowered = onnx.ModelProto()
            lowered.CopyFrom(proto)
            lowered.ir_version = int(limit.group(1))
            notes.append(f"IR version {proto.ir_version} read as {lowered.ir_version}")
            return _open_session(path, lowered, from_file=False, providers=providers, threads=threads, notes=notes)
        raise CertifyError(f"onnxruntime cannot load {path.name}: {first_line(error)}") from None


def load_model(
    path: str | os.PathLike,
    *,
    output_name: str | None = None,
    output_kind: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    cuda_probe=probe_cuda,
    allow_batch_coupling: bool = False,
    transform: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
    parts: object = None,
) -> OnnxModel:
    """Vet, inspect and open an ONNX classifier.

    ``output_kind`` (one of OUTPUT_KINDS) says what the output holds where the graph
    does not show it (a single score: probability or logit). A model whose output for an
    input depends on the rest of its batch is refused, unless ``allow_batch_coupling``:
    then it runs one input at a time (``batch_coupled`` records which it is).
    ``transform`` makes the graph to run from the vetted classifier's (with its external
    data): a denoiser in front of it (``certifier.denoiser``); the model keeps the file's
    hash and metadata, and ``parts`` (``certifier.denoiser.ComposedParts``) names the network
    at fault when the composed graph mixes its batch or gives NaN.
    """
    import onnxruntime as ort

    path = Path(path)
    proto, external = read_model(path)
    metadata = metadata_props(proto)
    if is_denoiser(metadata):
        raise CertifyError(f"{path.name} is a denoiser (its metadata has {DENOISER}* keys), not a classifier; "
                           f"give it with --denoiser and the classifier as the model")
    if is_noise_predictor(proto) or any(key.startswith(DIFFUSION) for key in metadata):
        raise CertifyError(f"{path.name} is a diffusion noise predictor (it takes images and a timestep), not a "
                           f"classifier; give it with --denoiser and the classifier as the model")
    model_input, dims, dtype = classifier_input(proto.graph)
    names = recorded_classes(metadata)
    output = choose_output(proto, output_name, output_kind, names)
    if names is not None and output.width is None and not output.integer:
        _check_inferred_classes(proto, output, names)
    providers, note = choose_providers(device, ort.get_available_providers(), cuda_probe)
    parallel_runs, session_threads = parallelism(providers[0] == CPU, threads)
    # The weights are part of the model's identity (results files resume only the same model).
    sha256 = file_sha256(path, *(path.parent / name for name in external_data_files(proto)))
    if external:
        load_external_data(proto, path)  # safe now: every location was checked to lie inside the model's folder
    if transform is not None:
        proto, external = transform(proto), True  # opened from memory, not from the file
        model_input, dims, dtype = classifier_input(proto.graph)
        output = choose_output(proto, output_name, output_kind, names)
    notes: list[str] = []
    open_session = functools.partial(_open_session, path, providers=providers, threads=session_threads, notes=notes)
    if _needs_symbolic_dims(proto, model_input.name):
        session = open_session(_symbolic_dims(proto, model_input.name), from_file=False)
    else:
        session = open_session(proto, from_file=not external)
    reopen = None
    if dims[0] is not None:
        size = dims[0]
        reopen = lambda: open_session(_symbolic_dims(proto, model_input.name, size), from_file=False)  # noqa: E731

    model = OnnxModel(
        path=path,
        sha256=sha256,
        metadata=metadata,
        input_name=model_input.name,
        input_dims=dims[1:],
        input_dtype=dtype,
        output=output,
        providers=session.get_providers(),
        device_note=note,
        notes=notes,
        session=session,
        parallel_runs=parallel_runs,
        declared_batch=dims[0],
        allow_batch_coupling=allow_batch_coupling,
        parts=parts,
        _names=names,
        _reopen=reopen,
    )
    if all(d is not None for d in model.input_dims):
        model.settle(model.input_dims)
    return model
