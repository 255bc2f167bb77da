"""Diffusion one-shot denoising (Carlini et al., ICLR 2023): a noise predictor as a denoiser.

A DDPM noise predictor eps(x_t, t), trained once on data in [-1, 1] (or another range)
for every noise level of its schedule, becomes a denoiser for pixel noise of one sigma
(SPEC, "Diffusion one-shot denoising"): the step t* whose alpha_bar is closest to
1 / (1 + (sigma * width)^2) (width: the data range's, 2 for [-1, 1]), then for a noisy
view v in pixel space

    u = v * width + low,  x_t = sqrt(alpha_bar) u,  eps = model(x_t, t*),
    x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar), clipped to the range,
    denoised = (x0 - low) / width.

:func:`one_shot_denoiser` writes that as an ordinary ONNX denoiser graph (pixel-space
images in, pixel-space images out, one input), so ``certifier.denoiser`` composes it
with a classifier as it composes any denoiser. The certificate does not depend on it:
a denoiser is part of the base classifier and the noise comes before it.

Timestep conventions differ between exports: the value fed to the model for step
index i (0-based, alpha_bar[i] = prod_{s<=i} (1 - beta_s)) is (first + i) * scale,
with first 0 (DDPM's and diffusers' code) or 1 (the DDPM paper's t = 1..T) and scale
1 for integer steps or 1 / T for continuous time; the input's own type (int64, int32,
float) is kept.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import CertifyError, first_line
from .metadata import (
    DATASET, DENOISER, DENOISER_SIGMA, DIFFUSION_DATA_RANGE, DIFFUSION_PREDICTION, DIFFUSION_SCHEDULE,
    DIFFUSION_TIMESTEP, metadata_props,
)
from .onnx_file import _real_inputs, declared_dims

#: DDPM (Ho et al. 2020) and improved DDPM (Nichol and Dhariwal 2021) defaults.
DEFAULT_STEPS = 1000
LINEAR_BETAS = (1e-4, 0.02)
COSINE_OFFSET = 0.008
MAX_BETA = 0.999
#: Refused above this many steps: a schedule is a table the graph and the header carry.
MAX_STEPS = 100_000
DEFAULT_RANGE = (-1.0, 1.0)
SCHEDULES = ("linear", "cosine")

_FLOATS = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}
_TIMESTEP_TYPES = {**_FLOATS, TensorProto.INT64: np.int64, TensorProto.INT32: np.int32}
#: Slice with its bounds as inputs (opset 10) is the newest operator the wrapper adds.
_MIN_OPSET = 10


def _type_name(kind: int) -> str:
    return TensorProto.DataType.Name(kind) if kind else "not a tensor"


def _shape(dims) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


# -- schedules ---------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A discrete noise schedule: beta_i for the steps i = 0 .. T - 1."""

    kind: str
    betas: np.ndarray = field(repr=False, compare=False)
    #: what defines it besides the kind (steps and the formula's constants)
    parameters: tuple[tuple[str, Any], ...] = ()

    @property
    def steps(self) -> int:
        return len(self.betas)

    @property
    def alpha_bar(self) -> np.ndarray:
        """alpha_bar[i] = prod_{s<=i} (1 - beta_s), float64."""
        return np.cumprod(1.0 - self.betas)

    def description(self) -> dict[str, Any]:
        """What identifies it, as JSON (explicit betas by their SHA-256: a header stays short)."""
        found: dict[str, Any] = {"kind": self.kind, "steps": self.steps, **dict(self.parameters)}
        if self.kind == "betas":
            found["sha256"] = hashlib.sha256(np.ascontiguousarray(self.betas, "<f8").tobytes()).hexdigest()
        return found

    def record(self) -> dict[str, Any]:
        """What a model's metadata records (:func:`schedule_from_record` reads it back)."""
        found = {"kind": self.kind, "steps": self.steps, **dict(self.parameters)}
        if self.kind == "betas":
            found["betas"] = [float(b) for b in self.betas]
        return found

    def same_as(self, other: Schedule) -> bool:
        return self.steps == other.steps and np.allclose(self.betas, other.betas, rtol=1e-6, atol=1e-9)

    def __str__(self) -> str:
        if self.kind == "linear":
            p = dict(self.parameters)
            return f"linear schedule of {self.steps} steps (beta {p['beta_start']:g} to {p['beta_end']:g})"
        if self.kind == "cosine":
            return f"cosine schedule of {self.steps} steps"
        return f"schedule of {self.steps} explicit betas"


def linear_schedule(steps: int = DEFAULT_STEPS, beta_start: float = LINEAR_BETAS[0],
                    beta_end: float = LINEAR_BETAS[1]) -> Schedule:
    """DDPM's: beta rises linearly from ``beta_start`` to ``beta_end`` over ``steps`` steps."""
    _check_steps(steps)
    if not (0 <= beta_start <= beta_end < 1):
        raise CertifyError(f"a linear schedule needs 0 <= beta_start <= beta_end < 1, got {beta_start:g} and "
                           f"{beta_end:g}")
    betas = np.linspace(beta_start, beta_end, steps, dtype=np.float64)
    return Schedule("linear", betas, (("beta_start", float(beta_start)), ("beta_end", float(beta_end))))


def cosine_schedule(steps: int = DEFAULT_STEPS, offset: float = COSINE_OFFSET, max_beta: float = MAX_BETA) -> Schedule:
    """Improved DDPM's: alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t / T) + s) / (1 + s) pi / 2),
    beta_i = 1 - alpha_bar(i + 1) / alpha_bar(i) capped at ``max_beta``."""
    _check_steps(steps)
    if not (math.isfinite(offset) and offset >= 0 and 0 < max_beta < 1):
        raise CertifyError(f"a cosine schedule needs s >= 0 and 0 < max_beta < 1, got {offset:g} and {max_beta:g}")
    t = np.arange(steps + 1, dtype=np.float64) / steps
    f = np.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = np.minimum(1 - f[1:] / f[:-1], max_beta)
    return Schedule("cosine", betas, (("s", float(offset)), ("max_beta", float(max_beta))))


def betas_schedule(betas: Sequence[float] | np.ndarray, source: str = "the betas") -> Schedule:
    """A schedule of explicit betas (each in [0, 1))."""
    try:
        values = np.asarray(betas, dtype=np.float64)
    except (TypeError, ValueError):
        raise CertifyError(f"{source} are not numbers; give one beta per step") from None
    if values.ndim != 1:
        raise CertifyError(f"{source} have shape {values.shape}; give one beta per step (a list of numbers)")
    _check_steps(len(values), source)
    bad = ~(np.isfinite(values) & (values >= 0) & (values < 1))
    if bad.any():
        index = int(np.argmax(bad))
        raise CertifyError(f"{source}: beta {index} is {float(values[index])!r}; every beta must be at least 0 and "
                           f"below 1")
    return Schedule("betas", values)


def _check_steps(steps: int, what: str = "a schedule") -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_STEPS:
        raise CertifyError(f"{what}: the number of steps must be between 1 and {MAX_STEPS}, got {steps!r}")


def read_betas(path: str | Path) -> Schedule:
    """Explicit betas from a file: a .npy array, or text (a JSON list, or numbers separated by
    commas or white space)."""
    path = Path(path)
    source = f"the betas in {path.name}"
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            text = path.read_text(encoding="utf-8")
            values = json.loads(text) if text.lstrip().startswith("[") else text.replace(",", " ").split()
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise CertifyError(f"cannot read betas from {path}: {first_line(error)}") from None
    return betas_schedule(values, source)


def schedule_option(value: str, steps: int = DEFAULT_STEPS) -> Schedule:
    """A schedule named on the command line: ``linear``, ``cosine`` (their defaults over ``steps``)
    or a file of betas."""
    if value == "linear":
        return linear_schedule(steps)
    if value == "cosine":
        return cosine_schedule(steps)
    if not Path(value).is_file():
        raise CertifyError(f"--schedule must be linear, cosine or a file of betas; {value!r} is none of them")
    return read_betas(value)


def schedule_from_record(record: Mapping[str, Any], where: str = DIFFUSION_SCHEDULE) -> Schedule:
    """The schedule a model's metadata records (as :meth:`Schedule.record` writes it)."""
    kind = record.get("kind")
    try:
        if kind == "linear":
            return linear_schedule(record.get("steps", DEFAULT_STEPS), float(record.get("beta_start", LINEAR_BETAS[0])),
                                   float(record.get("beta_end", LINEAR_BETAS[1])))
        if kind == "cosine":
            return cosine_schedule(record.get("steps", DEFAULT_STEPS), float(record.get("s", COSINE_OFFSET)),
                                   float(record.get("max_beta", MAX_BETA)))
        if kind == "betas":
            schedule = betas_schedule(record.get("betas"), f"the betas of {where}")
            if "steps" in record and record["steps"] != schedule.steps:
                raise CertifyError(f"{where} says {record['steps']!r} steps but lists {schedule.steps} betas")
            return schedule
    except (TypeError, ValueError):
        pass
    except CertifyError as error:
        raise CertifyError(f"the model's {where} metadata: {error}") from None
    raise CertifyError(f"the model's {where} metadata is not a usable schedule (kind linear, cosine or betas, with "
                       f"its steps and constants); fix or remove it and give the schedule as an option")


def resolve_schedule(recorded: Schedule | None, requested: Schedule | None, name: str) -> Schedule:
    """The schedule to use for the model ``name``: the one its file records, else the one asked
    for; a requested schedule that differs from the recorded one is refused."""
    if recorded is None and requested is None:
        raise CertifyError(f"the noise predictor {name} records no noise schedule; give the one it was trained with "
                           f"(linear, cosine or a file of betas)")
    if recorded is None:
        return requested
    if requested is not None and not requested.same_as(recorded):
        raise CertifyError(f"the noise predictor {name} was trained with the {recorded}, which does not match the "
                           f"{requested} asked for; drop the schedule option to use the file's")
    return recorded


# -- the step that matches sigma -------------------------------------------------------


@dataclass(frozen=True)
class TimestepConvention:
    """The value an export takes for step index i: (first + i) * scale."""

    first: int = 0
    scale: float = 1.0

    def value(self, index: int) -> float:
        return (self.first + index) * self.scale

    def record(self) -> dict[str, Any]:
        return {"first": self.first, "scale": self.scale}


def convention_from_record(record: Mapping[str, Any] | None, where: str = DIFFUSION_TIMESTEP) -> TimestepConvention:
    if record is None:
        return TimestepConvention()
    first, scale = record.get("first", 0), record.get("scale", 1.0)
    if (isinstance(first, bool) or first not in (0, 1) or isinstance(scale, bool)
            or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0)):
        raise CertifyError(f"the model's {where} metadata must be {{\"first\": 0 or 1, \"scale\": a positive "
                           f"number}}, got {json.dumps(dict(record))[:80]}")
    return TimestepConvention(int(first), float(scale))


def data_range_from_record(value: Any, where: str = DIFFUSION_DATA_RANGE) -> tuple[float, float]:
    if value is None:
        return DEFAULT_RANGE
    if (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            and math.isfinite(v) for v in value)
            and value[0] < value[1]):
        return float(value[0]), float(value[1])
    raise CertifyError(f"the model's {where} metadata must be [low, high] with low < high, got "
                       f"{json.dumps(value)[:60]}")


@dataclass(frozen=True)
class OneShotStep:
    """The step used to denoise noise of one sigma."""

    sigma: float
    index: int
    #: the timestep fed to the model (the convention applied to the index)
    timestep: float
    alpha_bar: float
    #: the pixel-space sigma this step's noise level matches
    step_sigma: float
    data_range: tuple[float, float]
    schedule: Schedule = field(repr=False)
    #: said when sigma lies between two steps
    note: str | None = None


def noise_level(sigma: float, data_range: tuple[float, float] = DEFAULT_RANGE) -> float:
    """alpha_bar whose noise matches pixel noise of ``sigma``: 1 / (1 + (sigma * width)^2)."""
    scaled = sigma * (data_range[1] - data_range[0])
    return 1.0 / (1.0 + scaled * scaled)  # not ** 2: a huge sigma gives 0, not an OverflowError


def step_sigma(alpha_bar: float, data_range: tuple[float, float] = DEFAULT_RANGE) -> float:
    """The pixel-space sigma whose noise a step of ``alpha_bar`` matches (inverse of :func:`noise_level`)."""
    if alpha_bar <= 0:
        return math.inf  # a step whose signal is gone matches no finite noise level
    return math.sqrt((1.0 - alpha_bar) / alpha_bar) / (data_range[1] - data_range[0])


def choose_step(schedule: Schedule, sigma: float, data_range: tuple[float, float] = DEFAULT_RANGE,
                convention: TimestepConvention = TimestepConvention()) -> OneShotStep:
    """t*: the step whose alpha_bar is closest to :func:`noise_level` (the less noisy step on a tie);
    a sigma whose noise lies outside the schedule's is refused, one between two steps takes the
    nearest and says so."""
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise CertifyError(f"sigma must be a positive number, got {sigma!r}")
    alpha_bar = schedule.alpha_bar
    target = noise_level(sigma, data_range)
    first, last = float(alpha_bar[0]), float(alpha_bar[-1])
    if target > first or target < last:
        side = "below" if target > first else "above"
        raise CertifyError(
            f"sigma {sigma:g} is {side} the noise levels of the model's {schedule} (sigma "
            f"{step_sigma(first, data_range):.4g} at its first step to {step_sigma(last, data_range):.4g} at its "
            f"last); choose a sigma in that range"
        )
    index = int(np.argmin(np.abs(alpha_bar - target)))
    chosen = float(alpha_bar[index])
    if not chosen > 0:
        raise CertifyError(f"step {index} of the model's {schedule} has alpha_bar {chosen:g}: no signal is left to "
                           f"denoise at sigma {sigma:g}; choose a smaller sigma, or check the schedule")
    note = None
    if not math.isclose(chosen, target, rel_tol=1e-9, abs_tol=0.0):
        # alpha_bar never increases: the neighbours are the steps before and after the target.
        after = int(np.searchsorted(-alpha_bar, -target, side="left"))
        before = after - 1
        note = (f"sigma {sigma:g} (alpha_bar {target:.6g}) lies between steps {convention.value(before):g} (alpha_bar "
                f"{alpha_bar[before]:.6g}) and {convention.value(after):g} (alpha_bar {alpha_bar[after]:.6g}) of the "
                f"{schedule}; took the nearest, {convention.value(index):g}, whose noise matches sigma "
                f"{step_sigma(chosen, data_range):.6g}")
    return OneShotStep(sigma=float(sigma), index=index, timestep=convention.value(index), alpha_bar=chosen,
                       step_sigma=step_sigma(chosen, data_range), data_range=tuple(data_range), schedule=schedule,
                       note=note)


# -- recognizing a noise predictor ---------------------------------------------------


@dataclass
class NoisePredictor:
    """An ONNX noise predictor eps(x_t, t): an image input, a timestep input, one output."""

    name: str
    proto: onnx.ModelProto = field(repr=False)
    metadata: dict[str, str]
    sample_name: str
    sample_type: int
    #: declared dims of the sample input (batch, C, H, W), None where symbolic
    sample_dims: list[int | None]
    timestep_name: str
    timestep_type: int
    #: declared dims of the timestep: [] (a scalar) or [size] (None: symbolic)
    timestep_dims: list[int | None]
    output_name: str
    output_type: int
    output_dims: list[int | None] | None

    @property
    def image_dims(self) -> list[int | None]:
        return self.sample_dims[1:]


def is_noise_predictor(proto: onnx.ModelProto) -> bool:
    """Whether a model takes an image and a timestep (two inputs, exactly one of rank 4), as noise predictors do."""
    inputs = _real_inputs(proto.graph)
    return len(inputs) == 2 and sum(len(declared_dims(i) or ()) == 4 for i in inputs) == 1


def _sample_and_timestep(inputs, name: str):
    by_name = {i.name.lower(): i for i in inputs}
    for sample_name, timestep_name in (("sample", "timestep"), ("sample", "timesteps"), ("x", "t"),
                                       ("x", "timesteps"), ("x_t", "t")):
        if sample_name in by_name and timestep_name in by_name:
            return by_name[sample_name], by_name[timestep_name]
    images = [i for i in inputs if len(declared_dims(i) or ()) == 4]
    if len(images) != 1:
        listed = ", ".join(f"{i.name} ({_shape(declared_dims(i) or ['?'])})" for i in inputs)
        raise CertifyError(f"cannot tell the image input of the noise predictor {name} from its timestep: it takes "
                           f"{listed}; name them sample and timestep when exporting it")
    (image,) = images
    return image, next(i for i in inputs if i is not image)


def as_noise_predictor(proto: onnx.ModelProto, name: str) -> NoisePredictor:
    """Vet a model as a noise predictor: a float image input N x C x H x W, a timestep input of an
    integer or float type that is a scalar, [1] or [N], and one float output."""
    inputs = _real_inputs(proto.graph)
    if len(inputs) != 2:
        listed = ", ".join(i.name for i in inputs) or "none"
        raise CertifyError(f"a diffusion noise predictor takes two inputs (the noisy images and the timestep); "
                           f"{name} takes: {listed}")
    sample, timestep = _sample_and_timestep(inputs, name)
    sample_type = sample.type.tensor_type.elem_type if sample.type.HasField("tensor_type") else 0
    sample_dims = declared_dims(sample)
    if sample_type not in _FLOATS:
        raise CertifyError(f"the noise predictor {name}'s image input {sample.name!r} is {_type_name(sample_type)}; "
                           f"it must take float images")
    if sample_dims is None or len(sample_dims) != 4:
        shown = "no shape" if sample_dims is None else _shape(sample_dims)
        raise CertifyError(f"the noise predictor {name}'s image input {sample.name!r} declares {shown}; it must take "
                           f"images N x C x H x W")
    timestep_type = timestep.type.tensor_type.elem_type if timestep.type.HasField("tensor_type") else 0
    if timestep_type not in _TIMESTEP_TYPES:
        raise CertifyError(f"the noise predictor {name}'s timestep input {timestep.name!r} is "
                           f"{_type_name(timestep_type)}; a timestep is an integer (int64, int32) or a float")
    timestep_dims = declared_dims(timestep)
    if timestep_dims is None or len(timestep_dims) > 1:
        shown = "no shape" if timestep_dims is None else f"rank {len(timestep_dims)} ({_shape(timestep_dims)})"
        raise CertifyError(f"the noise predictor {name}'s timestep input {timestep.name!r} declares {shown}; a "
                           f"timestep is a scalar, [1] or [N] (one per image): re-export it so")
    if timestep_dims and timestep_dims[0] not in (None, 1, sample_dims[0]) and sample_dims[0] is not None:
        raise CertifyError(f"the noise predictor {name} takes batches of {sample_dims[0]} images but "
                           f"{timestep_dims[0]} timesteps; re-export it with one timestep per image")
    if len(proto.graph.output) != 1:
        listed = ", ".join(o.name for o in proto.graph.output)
        raise CertifyError(f"a noise predictor gives one output (the predicted noise); {name} gives: {listed}")
    (output,) = proto.graph.output
    output_type = output.type.tensor_type.elem_type if output.type.HasField("tensor_type") else 0
    if output_type not in _FLOATS:
        raise CertifyError(f"the noise predictor {name}'s output {output.name!r} is {_type_name(output_type)}; it "
                           f"must give float noise")
    return NoisePredictor(
        name=name, proto=proto, metadata=metadata_props(proto), sample_name=sample.name, sample_type=sample_type,
        sample_dims=sample_dims, timestep_name=timestep.name, timestep_type=timestep_type,
        timestep_dims=timestep_dims, output_name=output.name, output_type=output_type,
        output_dims=declared_dims(output),
    )


def check_image_shape(predictor: NoisePredictor, view_shape: tuple[int, ...]) -> None:
    """Refuse a predictor made for images of another shape than the views (C x H x W)."""
    if len(view_shape) != 3:
        raise CertifyError(f"the views have shape {_shape(view_shape)}, not images (C x H x W): a diffusion model "
                           f"denoises images")
    declared = predictor.image_dims
    if any(d is not None and d != v for d, v in zip(declared, view_shape)):
        raise CertifyError(f"the noise predictor {predictor.name} takes images of {_shape(declared)} (C x H x W), "
                           f"but the views are {_shape(view_shape)}; use a diffusion model trained on images of "
                           f"this size")
    channels = view_shape[0]
    out = predictor.output_dims
    if out is not None:
        if len(out) != 4:
            raise CertifyError(f"the noise predictor {predictor.name}'s output declares {_shape(out)}; it must "
                               f"give noise N x C x H x W")
        if out[1] is not None and out[1] not in (channels, 2 * channels):
            raise CertifyError(f"the noise predictor {predictor.name} gives {out[1]} channels for images of "
                               f"{channels}; a noise predictor gives C (the noise) or 2C (noise and variances)")
        if any(d is not None and d != v for d, v in zip(out[2:], view_shape[1:])):
            raise CertifyError(f"the noise predictor {predictor.name} gives {_shape(out[1:])} for images of "
                               f"{_shape(view_shape)}; it must give noise of the images' size")


def fed_timestep(timestep: float, timestep_type: int, name: str) -> np.ndarray:
    """``timestep`` as the predictor's timestep input holds it (a float16 input holds 2049 as 2048),
    or a one-line refusal when that type cannot hold it at all."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            value = np.array(timestep, dtype=_TIMESTEP_TYPES[timestep_type]) if math.isfinite(timestep) else None
    except OverflowError:
        value = None
    if value is None or not np.isfinite(value) or abs(float(value) - timestep) > max(1.0, abs(timestep)) / 2:
        raise CertifyError(f"the noise predictor {name}'s timestep input ({_type_name(timestep_type)}) cannot hold "
                           f"timestep {timestep:g}; give the convention it was trained with, or re-export it with an "
                           f"int64 or float32 timestep")
    return value


def recorded_settings(metadata: Mapping[str, str]) -> dict[str, Any]:
    """What a noise predictor's metadata records of how to use it: its schedule (None when it
    records none), timestep convention, data range and prediction; a value that cannot be
    used is refused in one line."""
    from .metadata import recorded_json

    schedule = recorded_json(metadata, DIFFUSION_SCHEDULE)
    raw_range = metadata.get(DIFFUSION_DATA_RANGE)
    try:
        data_range = json.loads(raw_range) if raw_range else None
    except (ValueError, RecursionError):
        raise CertifyError(f"the model's {DIFFUSION_DATA_RANGE} metadata is not JSON [low, high]; fix or remove "
                           f"it") from None
    prediction = metadata.get(DIFFUSION_PREDICTION, "epsilon").strip() or "epsilon"
    if prediction != "epsilon":
        raise CertifyError(f"the model's {DIFFUSION_PREDICTION} metadata is {prediction[:40]!r}; certify uses "
                           f"noise predictors (epsilon) only")
    return {
        "schedule": None if schedule is None else schedule_from_record(schedule),
        "convention": convention_from_record(recorded_json(metadata, DIFFUSION_TIMESTEP)),
        "data_range": data_range_from_record(data_range),
        # an empty entry records nothing: --data-range may then say what the file does not
        "range_recorded": data_range is not None,
    }


# -- the one-shot denoiser graph -----------------------------------------------------


def _copy(message):
    """A detached copy of a small message (a node, a value info) of a graph about to be rebuilt."""
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _versions(proto: onnx.ModelProto) -> dict[str, int]:
    return {("" if entry.domain == "ai.onnx" else entry.domain): entry.version for entry in proto.opset_import}


def _at_least(proto: onnx.ModelProto, version: int, name: str) -> onnx.ModelProto:
    if _versions(proto).get("", version) >= version:
        return proto
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, version)
    except Exception as error:  # the converter raises RuntimeError or ValueError with C++ text
        raise CertifyError(f"cannot convert the noise predictor {name} from opset {_versions(proto).get('')} to "
                           f"{version} ({first_line(error)[:160]}); export it with opset {version} or newer") from None


def one_shot_denoiser(predictor: NoisePredictor, step: OneShotStep, view_shape: tuple[int, ...],
                      dataset: str | None = None) -> onnx.ModelProto:
    """An ONNX denoiser for noise of ``step.sigma``: pixel-space views (N x C x H x W, float32) in,
    the one-shot estimate of the clean images in pixel space out (input ``noisy``, output
    ``denoised``); the predictor's graph inside it under the prefix ``diffusion/``."""
    check_image_shape(predictor, view_shape)
    channels = view_shape[0]
    low, high = step.data_range
    width = high - low
    root = math.sqrt(step.alpha_bar)
    # denoised = clip(v - k eps, 0, 1) is (clip(x0, low, high) - low) / width: x0 = u - sqrt((1 - ab) / ab) eps.
    k = math.sqrt((1.0 - step.alpha_bar) / step.alpha_bar) / width
    timestep_type = predictor.timestep_type
    if timestep_type in (TensorProto.INT64, TensorProto.INT32) and step.timestep != round(step.timestep):
        raise CertifyError(f"the noise predictor {predictor.name} takes an integer timestep, but its convention "
                           f"gives {step.timestep:g} for step {step.index}; give the convention it was trained with")

    proto = _at_least(predictor.proto, _MIN_OPSET, predictor.name)
    prefix = "diffusion/"
    # the one copy of the weights this makes: the graph below is built inside it
    inner = onnx.compose.add_prefix(proto, prefix, inplace=proto is not predictor.proto)
    nodes, constants = [], []

    def constant(name: str, value: np.ndarray) -> str:
        constants.append(numpy_helper.from_array(value, "one_shot/" + name))
        return "one_shot/" + name

    def node(op: str, inputs: list[str], output: str, **attributes) -> str:
        output = "one_shot/" + output
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    f32 = lambda value: np.array(value, dtype=np.float32)  # noqa: E731
    sample_type = predictor.sample_type
    x_t = node("Mul", ["noisy", constant("x_t_gain", f32(root * width))], "scaled")
    x_t = node("Add", [x_t, constant("x_t_offset", f32(root * low))], "x_t")
    if sample_type != TensorProto.FLOAT:
        x_t = node("Cast", [x_t], "x_t_cast", to=sample_type)
    nodes.append(helper.make_node("Identity", [x_t], [prefix + predictor.sample_name], name="one_shot/to_sample"))

    value = fed_timestep(step.timestep, timestep_type, predictor.name)
    if not predictor.timestep_dims:
        timestep = constant("timestep", value)
    elif predictor.timestep_dims[0] == 1:
        timestep = constant("timestep", value.reshape(1))
    else:  # one per image: as many as the batch has
        shape = node("Shape", ["noisy"], "shape")
        batch = node("Slice", [shape, constant("zero", np.array([0], np.int64)),
                               constant("one", np.array([1], np.int64))], "batch")
        timestep = node("Expand", [constant("timestep", value.reshape(1)), batch], "timesteps")
    nodes.append(helper.make_node("Identity", [timestep], [prefix + predictor.timestep_name], name="one_shot/to_t"))
    before, nodes = nodes, []

    # The first C channels: the noise (a model that also predicts variances gives 2C).
    eps = node("Slice", [prefix + predictor.output_name, constant("start", np.array([0], np.int64)),
                         constant("end", np.array([channels], np.int64)), constant("axis", np.array([1], np.int64))],
               "eps")
    if predictor.output_type != TensorProto.FLOAT:
        eps = node("Cast", [eps], "eps_float", to=TensorProto.FLOAT)
    estimate = node("Sub", ["noisy", node("Mul", [eps, constant("k", f32(k))], "scaled_eps")], "estimate")
    estimate = node("Max", [estimate, constant("low", f32(0.0))], "at_least_0")
    nodes.append(helper.make_node("Min", [estimate, constant("high", f32(1.0))], ["denoised"], name="one_shot/clip"))

    g = inner.graph
    batch_dim = predictor.sample_dims[0] or (
        predictor.timestep_dims[0] if predictor.timestep_dims and predictor.timestep_dims[0] not in (None, 1)
        else "batch")
    fed = (prefix + predictor.sample_name, prefix + predictor.timestep_name)
    views = [batch_dim, *view_shape]
    rebuilt = {
        "node": [*before, *map(_copy, g.node), *nodes],
        "input": [helper.make_tensor_value_info("noisy", TensorProto.FLOAT, views),
                  *(_copy(i) for i in g.input if i.name not in fed)],
        "output": [helper.make_tensor_value_info("denoised", TensorProto.FLOAT, views)],
    }
    for name, values in rebuilt.items():
        field = getattr(g, name)
        del field[:]
        field.extend(values)
    g.initializer.extend(constants)
    g.name = f"one-shot({g.name or 'noise predictor'})"
    versions = {**_versions(inner)}
    versions[""] = max(versions.get("", _MIN_OPSET), _MIN_OPSET)
    opsets = [helper.make_opsetid(domain, version) for domain, version in sorted(versions.items())]
    del inner.opset_import[:]
    inner.opset_import.extend(opsets)
    inner.ir_version = max(inner.ir_version, helper.find_min_ir_version_for(opsets, True))
    del inner.metadata_props[:]
    described = {
        DENOISER + "kind": "diffusion",
        DENOISER_SIGMA: repr(float(step.sigma)),
        DENOISER + "schedule": json.dumps(step.schedule.description()),
        DENOISER + "timestep": repr(step.timestep),
        DENOISER + "alpha_bar": repr(step.alpha_bar),
        DENOISER + "data_range": json.dumps(list(step.data_range)),
        DENOISER + "predictor": predictor.name,
    }
    if dataset or predictor.metadata.get(DATASET):
        described[DATASET] = dataset or predictor.metadata[DATASET]
    for key, text in described.items():
        entry = inner.metadata_props.add()
        entry.key, entry.value = key, text
    return inner
