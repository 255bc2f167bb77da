"""A run's settings as records, each checked once, when the record is made.

:class:`ModelSettings` is what :func:`certifier.load` takes (how the model is read, which
smoothing method, where it runs); :class:`JobSettings` what :meth:`certifier.Run.job` takes
(samples, confidence, batches, seed, the sampling plan, which inputs, the mode);
:class:`RunSettings` the two together, with the rules that join them; :class:`RaySettings`
where ``--ray`` sends a run. Each field is written once, with its default, its check and
how the command line shows it (:class:`Flag`): the commands build their options from the
records (``certifier.command_options``), so the command line, the Python API, resumed
results files and Ray workers all see one definition of every setting.
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from .data import check_resize
from .device import DEVICES, check_device
from .errors import CertifyError
from .outputs import OUTPUT_KINDS
from .sampling import SAMPLINGS, check_levels
from .space import LAYOUTS
from .threats import DEFAULT_RADII

#: Largest -n and --n0: far beyond any run that can finish, and vote counts stay exact
#: in the float64 arithmetic of the confidence bounds (up to 2^53).
MAX_SAMPLES = 10**15
#: Seeds are non-negative and fit in a signed 64-bit integer (what other tools read back).
MAX_SEED = 2**63 - 1
#: --threads and --workers beyond this are typing mistakes (each thread or batch in flight costs memory).
MAX_PARALLEL = 1024
#: What a job does with each input: certify it (a radius), or Cohen et al.'s PREDICT.
MODES = ("certify", "predict")


@dataclass(frozen=True)
class Range:
    """The values a number may take: above (or from) ``low``, below (or up to) ``high``. A
    record refuses others in one line; an option made from a field with a range refuses them
    as a usage error while the command line is read (click's IntRange or FloatRange)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    #: how messages say it ("a positive number of at most 10"); default: from the bounds
    text: str | None = None

    def holds(self, value) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self, whole: bool = False) -> str:
        """"a whole number from 1 to 100" for whole numbers; "above 0 and below 1" for others."""
        if self.text:
            return self.text
        if whole and self.low is not None and self.high is not None and not (self.low_open or self.high_open):
            return f"a whole number from {self.low:g} to {self.high:g}"
        parts = []
        if self.low is not None:
            parts.append(f"above {self.low:g}" if self.low_open else f"at least {self.low:g}")
        if self.high is not None:
            parts.append(f"below {self.high:g}" if self.high_open else f"at most {self.high:g}")
        return ("a whole number " if whole else "") + " and ".join(parts)


@dataclass(frozen=True)
class Flag:
    """How a settings field appears on the command line.

    ``declarations``: the option's names ("-n", "--n"); ``type``: a click type where the
    field's own is not enough (a choice, a pair, numbers separated by commas); ``group``:
    which shared block of options it belongs to (commands take whole blocks); ``help`` may
    hold ``{placeholders}`` a command fills in. The default is the field's own.
    """

    declarations: tuple[str, ...]
    help: str = ""
    type: Any = None
    metavar: str | None = None
    group: str = ""
    is_flag: bool = False
    multiple: bool = False
    show_default: bool = True
    #: the value of an option given without one (``--ray`` alone means "local")
    flag_value: Any = None
    #: a check while the command line is read: its refusal is a usage error
    callback: Callable | None = None
    #: the values the field takes (checked by the record, and by the option as a usage error)
    range: Range | None = None


def flag(*declarations: str, **details) -> Flag:
    return Flag(tuple(declarations), **details)


# -- the checks, one per kind of value ---------------------------------------------------------


def whole_number(name: str, value: Any) -> int:
    """``value`` as an int when it is a whole number (not a bool), else a one-line error."""
    if isinstance(value, (bool, np.bool_)):
        raise CertifyError(f"{name} must be a whole number, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise CertifyError(f"{name} must be a whole number, got {value!r}")


def _samples(name: str):
    def check(value):
        value = whole_number(name, value)
        if value > MAX_SAMPLES:
            raise CertifyError(f"{name} must be at most 10^15 (samples per input), got {value:.3g}")
        return value  # at least 1 for the methods that sample: the plan checks, once the method is known

    return BeforeValidator(check)


def _count(name: str, most: int | None = None):
    """A whole number >= 1 (at most ``most``), or None."""
    def check(value):
        if value is None:
            return None
        value = whole_number(name, value)
        if value < 1:
            raise CertifyError(f"{name} must be at least 1, got {value}")
        if most is not None and value > most:
            raise CertifyError(f"{name} must be at most {most}, got {value}")
        return value

    return BeforeValidator(check)


def _alpha(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not (0 < value < 1):
        raise CertifyError(f"--alpha must be between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def _seed(value):
    value = whole_number("--seed", value)
    if not 0 <= value <= MAX_SEED:
        raise CertifyError(f"--seed must be between 0 and 2^63 - 1, got {value}")
    return value


def _choice(name: str, choices: Sequence[str]):
    def check(value):
        if value is not None and value not in choices:
            raise CertifyError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    return BeforeValidator(check)


def _numbers_of(name: str, value) -> tuple[float, ...] | None:
    """Numbers as a tuple of floats (None stays None); the command line parses its text first."""
    if value is None:
        return None
    if isinstance(value, str):
        raise CertifyError(f"{name} takes numbers (a list or tuple), got the text {value!r}")
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise CertifyError(f"{name} takes numbers, got {value!r}") from None


def _numbers(value, info: ValidationInfo) -> tuple[float, ...] | None:
    return _numbers_of(f"--{info.field_name}", value)


def check_radii(value) -> tuple[float, ...] | None:
    """--radii: finite numbers >= 0 (None: the threat model's own)."""
    radii = _numbers_of("--radii", value)
    if radii is not None and not all(math.isfinite(r) and r >= 0 for r in radii):
        raise CertifyError(f"--radii must be finite numbers >= 0, got {','.join(f'{r:g}' for r in radii)}")
    return radii or None


def _radius(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and value >= 0):
        raise CertifyError(f"--radius must be a finite number >= 0, got {value}")
    return float(value)


def _levels(value) -> tuple[float, ...] | None:
    return None if value is None else check_levels(value)


def _indices(value) -> tuple[int, ...] | None:
    return None if value is None else tuple(whole_number("an input index", i) for i in value)


def _options(value) -> dict[str, Any]:
    """Plugin options: a mapping, or the command line's (NAME, VALUE) pairs."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    try:
        return dict(value)
    except (TypeError, ValueError):
        raise CertifyError(f"plugin options must be a mapping of names to values, got {value!r}") from None


def _path(value) -> Path | None:
    return None if value is None else Path(os.fspath(value))


def _device(value) -> str:
    check_device(value)
    return value


def _is_int(record: type["Settings"], name: str) -> bool:
    annotation = record.model_fields[name].annotation
    return int in (typing.get_args(annotation) or (annotation,))


# -- the records --------------------------------------------------------------------------------


class Settings(BaseModel):
    """A record of settings: frozen, checked when made, each field once."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    #: what the record is called in errors about unknown settings
    #: what fills the placeholders of its fields' help texts (``{defaults}``, ``{lr}``, ...)
    help_values: ClassVar[dict[str, str]] = {}
    #: options a command lists first and last (the rest in the record's order)
    leading: ClassVar[tuple[str, ...]] = ()
    trailing: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as error:  # a value of the wrong type: the checks above give the rest
            problem = error.errors()[0]
            name = str(problem["loc"][0]) if problem["loc"] else ""
            option = type(self).flags().get(name)
            shown = option.declarations[-1] if option else name
            if problem["type"] == "missing":
                raise CertifyError(f"{shown} is required") from None
            message = problem["msg"][:1].lower() + problem["msg"][1:]
            raise CertifyError(f"{shown}: {message}, got {problem.get('input')!r}") from None

    @model_validator(mode="before")
    @classmethod
    def _whole(cls, values: Any) -> Any:
        """Fields of whole numbers with a range take any whole number (3.0, numpy's), and nothing else."""
        if isinstance(values, dict):
            for name, option in cls.flags().items():
                if option.range is not None and values.get(name) is not None and _is_int(cls, name):
                    values = {**values, name: whole_number(option.declarations[-1], values[name])}
        return values

    @model_validator(mode="after")
    def _in_range(self) -> "Settings":
        for name, option in type(self).flags().items():
            value = getattr(self, name)
            if option.range is not None and value is not None and not option.range.holds(value):
                described = option.range.describe(whole=_is_int(type(self), name))
                raise CertifyError(f"{option.declarations[-1]} must be {described}, got {value!r}")
        return self

    @classmethod
    def of(cls, settings: "Settings | None" = None, values: Mapping[str, Any] | None = None, *,
           caller: str | None = None):
        """``settings`` (default: every field's default) with ``values`` changed, checked again.

        An unknown name is a TypeError naming ``caller``, as Python does for a keyword argument.
        """
        values = dict(values or {})
        unknown = [name for name in values if name not in cls.model_fields]
        if unknown:
            raise TypeError(f"{caller or cls.__name__}() got an unexpected keyword argument {unknown[0]!r}")
        if settings is None:
            return cls(**values)
        if not isinstance(settings, cls):
            raise TypeError(f"{caller or cls.__name__}() takes {cls.__name__}, not {type(settings).__name__}")
        return settings.replace(**values) if values else settings

    def replace(self, **changes) -> "Settings":
        """A copy with ``changes``, checked like a new record."""
        return type(self)(**{**self.given(), **changes})

    def given(self) -> dict[str, Any]:
        """The fields set when the record was made (the rest are defaults)."""
        return {name: getattr(self, name) for name in self.model_fields_set}

    @classmethod
    def flags(cls) -> dict[str, Flag]:
        """Each field's command-line option, by field name (fields without one are the API's alone)."""
        found = {}
        for name, info in cls.model_fields.items():
            for item in info.metadata:
                if isinstance(item, Flag):
                    found[name] = item
        return found


_RADII_TEXT = ",".join(f"{r:g}" for r in DEFAULT_RADII)


# -- fields more than one record has: each written once, default included ----------------------

Device = Annotated[str, BeforeValidator(_device),
                   flag("--device", type=DEVICES, group="device",
                        help="Where it runs: auto (CUDA when it works), cuda or cpu."), Field(default="auto")]
Seed = Annotated[int, BeforeValidator(_seed), flag("--seed", help="Seed of the random draws (the noise; when "
                                                                  "training also the weights and the data's order)."),
                 Field(default=0)]


class MethodSettings(Settings):
    """Which smoothing method, and its settings (``-p``, ``-s``, ``-o``): what a model is
    certified with, or trained for."""


    plugin: Annotated[str | None, flag("-p", "--plugin", group="method",
                                       help="Smoothing method{defaults}. See: certify plugins")] = None
    sigma: Annotated[float | None, flag("-s", "--sigma", group="method",
                                        help="Noise level in pixel space{defaults}.")] = None
    options: Annotated[dict[str, Any], BeforeValidator(_options),
                       flag("-o", "--option", type=(str, str), multiple=True, metavar="NAME VALUE", group="method",
                            help="A plugin option, repeatable (see: certify plugins).")] = {}


class InputSpaceSettings(Settings):
    """How pixels become a model's input, and which output holds its answer: what the user
    sets over the model's metadata (None: the metadata's, else the default)."""


    output_name: Annotated[str | None, flag("--output-name", group="model",
                                            help="Which model output holds the class scores or label.")] = None
    scale: Annotated[float | None, flag("--scale", group="space",
                                        help="Multiply pixels by this before the model: 255 for a float model that "
                                             "expects 0..255 (integer inputs get 255 without it).")] = None
    mean: Annotated[tuple[float, ...] | None, BeforeValidator(_numbers),
                    flag("--mean", type="numbers", group="space",
                         help="Per-channel mean subtracted after --scale, e.g. 0.485,0.456,0.406.")] = None
    std: Annotated[tuple[float, ...] | None, BeforeValidator(_numbers),
                   flag("--std", type="numbers", group="space",
                        help="Per-channel std divided by after --mean, e.g. 0.229,0.224,0.225.")] = None
    layout: Annotated[str | None, flag("--layout", type=LAYOUTS, group="space",
                                       help="How the model lays out images (default: auto); for a flat input, nhwc "
                                            "flattens H, W, C.")] = None

    @property
    def space_overrides(self) -> dict[str, Any]:
        """What the user set of the input space (None: the model's metadata, else the default)."""
        return {"scale": self.scale, "mean": self.mean, "std": self.std, "layout": self.layout}


class ModelSettings(MethodSettings, InputSpaceSettings):
    """How :func:`certifier.load` opens a model: the smoothing method, how inputs reach the
    model, a denoiser in front of it, and where it runs."""


    device: Device
    output_kind: Annotated[str | None, _choice("--output-kind", OUTPUT_KINDS),
                           flag("--output-kind", type=OUTPUT_KINDS, group="model",
                                help="What that output holds, where the graph does not show it (a single score: "
                                     "binary-probability or binary-logit).")] = None
    resize: Annotated[tuple[int, int] | None, BeforeValidator(check_resize),
                      flag("--resize", type=(int, int), metavar="H W", group="run",
                           help="Resize images to H x W before any noise (radii are then in the resized images' "
                                "pixels).")] = None
    denoiser: Annotated[Path | None, BeforeValidator(_path),
                        flag("--denoiser", type="file", group="run",
                             help="ONNX denoiser applied to every noisy view before the model (denoised smoothing; "
                                  "rs, pprs, drs); default sigma: the one it was trained for.")] = None
    allow_denoiser_sigma_mismatch: Annotated[bool, flag(
        "--allow-denoiser-sigma-mismatch", is_flag=True, group="run",
        help="Use a --denoiser trained for another sigma than --sigma (still sound, less accurate).")] = False
    threads: Annotated[int | None, _count("--threads", MAX_PARALLEL),
                       flag("--threads", group="run",
                            help="CPU threads: batches run side by side, one thread each up to 8 (default: one per "
                                 "core).")] = None
    #: run a model whose rows depend on their batch one input per call; None: only when the
    #: run's batch size is 1 (see :class:`RunSettings`), else refuse such a model
    allow_batch_coupling: bool | None = None


class JobSettings(Settings):
    """What :meth:`certifier.Run.job` certifies with: samples, confidence, batches, seed, the
    sampling plan, which inputs, and whether it certifies or predicts."""


    n0: Annotated[int, _samples("--n0"), flag("--n0", help="Selection samples per input.")] = 100
    n: Annotated[int, _samples("-n"), flag("-n", "--n", help="Estimation samples per input.")] = 100_000
    alpha: Annotated[float, BeforeValidator(_alpha),
                     flag("--alpha", help="Probability that a certificate is wrong.")] = 0.001
    batch_size: Annotated[int | None, _count("--batch-size"),
                          flag("--batch-size", help="Views per model call (default: about 8 MB of input); a results "
                                                    "file resumes only with the batch size that wrote it.")] = None
    limit: Annotated[int | None, _count("--limit"), flag("--limit", help="Only the first K inputs.")] = None
    skip: Annotated[int, _count("--skip"), flag("--skip", help="Every SKIP-th input (Cohen's --skip).")] = 1
    seed: Seed
    workers: Annotated[int | None, _count("--workers", MAX_PARALLEL),
                       flag("--workers", help="Batches in flight at once (default: --threads on CPU, 2 on "
                                              "CUDA).")] = None
    sampling: Annotated[str | None, _choice("--sampling", SAMPLINGS),
                        flag("--sampling", type=SAMPLINGS,
                             help="fixed: n0 + n views per input (default); sequential: estimation views in chunks "
                                  "until the largest --radii level the input can certify is decided (at most -n): "
                                  "the radius is that level.")] = None
    radius: Annotated[float | None, BeforeValidator(_radius),
                      flag("--radius", help="One decision per input, certified at R or not (sequential by itself): "
                                            "the radius is R or 0.")] = None
    radii: Annotated[tuple[float, ...] | None, BeforeValidator(check_radii),
                     flag("--radii", type="numbers",
                          help=f"Radii for the summary table (default: the threat model's; {_RADII_TEXT} for L1, L2, "
                               f"Linf); under --sampling sequential also the levels.")] = None
    #: the sequential plan's levels, given directly (the command line's are --radius or --radii)
    levels: Annotated[tuple[float, ...] | None, BeforeValidator(_levels)] = None
    #: the inputs to certify, by index (instead of limit and skip)
    indices: Annotated[tuple[int, ...] | None, BeforeValidator(_indices)] = None
    mode: Annotated[str, _choice("mode", MODES)] = "certify"

    @model_validator(mode="after")
    def _plan(self) -> "JobSettings":
        if self.radius is not None:
            if self.sampling == "fixed":
                raise CertifyError("--radius R is a sequential decision (certified at R or not): drop --sampling "
                                   "fixed")
            if self.radii is not None or self.levels is not None:
                raise CertifyError("give --radius R (one level) or --radii (several levels), not both")
        if self.plan == "sequential" and self.mode == "predict":
            raise CertifyError("PREDICT draws a fixed n; --sampling sequential is for certify: drop it")
        if self.levels is not None and self.plan != "sequential":
            raise CertifyError("levels (--radius) belong to --sampling sequential; drop them or add --sampling "
                               "sequential")
        if self.indices is not None and (self.limit is not None or self.skip != 1):
            raise CertifyError("give either indices or limit and skip, not both")
        return self

    @property
    def plan(self) -> str:
        """The sampling plan: --radius alone means sequential; else --sampling, by default fixed."""
        return "sequential" if self.radius is not None else self.sampling or "fixed"

    @property
    def plan_levels(self) -> tuple[float, ...] | None:
        """A sequential plan's levels (None: the threat model's radii; a fixed plan has none)."""
        if self.radius is not None:
            return (self.radius,)
        if self.levels is not None:
            return self.levels
        if self.plan == "sequential" and self.radii is not None:
            return check_levels(self.radii)
        return None

    @property
    def summary_radii(self) -> list[float] | None:
        """The radii the summary reports (None: a sequential plan's levels, else the threat model's)."""
        if self.radius is not None:
            return [self.radius]
        if self.radii is None:
            return None
        return sorted(set(self.radii)) if self.plan == "sequential" else list(self.radii)


#: Seconds a cluster's address may take to answer as a Ray server (``--ray-timeout``).
CONNECT_TIMEOUT = 10.0
ADDRESS_FORMS = ("HOST:PORT (the head node's GCS port, 6379 by default), ray://HOST:PORT (Ray Client), auto, or "
                 "no value to start Ray here")
#: A host name (underscores too: container names are used as host names), an IPv4 address or a
#: bracketed IPv6 one (with a zone), then the port.
_HOST_PORT = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|(?P<host>\w(?:[\w.-]*\w)?)):(?P<port>[0-9]{1,5})",
                        re.ASCII)


def parse_address(address: str) -> tuple[str, str | None, int | None]:
    """(form, host, port) of a ``--ray`` address: ("local" or "auto", None, None), ("gcs", host,
    port) for HOST:PORT, ("client", host, port) for ray://HOST:PORT; anything else is refused
    in one line (Ray would raise a ValueError of its own)."""
    if address in ("local", "auto"):
        return address, None, None
    scheme, separator, rest = address.partition("://")
    if not separator:
        scheme, rest = "", address
    match = _HOST_PORT.fullmatch(rest)
    if scheme not in ("", "ray") or match is None or not 0 < int(match["port"]) < 65536:
        raise CertifyError(f"--ray {address!r} is not a cluster address; give {ADDRESS_FORMS}")
    return ("client" if scheme else "gcs"), match["ipv6"] or match["host"], int(match["port"])


def check_ray_address(value: str | None) -> str | None:
    """--ray takes an optional address: a model file right after it is a misplaced --ray."""
    if value is None:
        return None
    if value.endswith(".onnx") or os.path.isfile(value):
        raise CertifyError(f"{value} is a file, not a cluster address; put --ray after the model, or give an "
                           f"address (--ray auto)")
    try:
        parse_address(value)
    except CertifyError:
        raise CertifyError(f"{value!r} is not a cluster address; give {ADDRESS_FORMS}") from None
    return value


class RaySettings(Settings):
    """Where ``--ray`` runs a job's inputs (:class:`certifier.ray_executor.RayExecutor`)."""


    ray_address: Annotated[str | None, flag(
        "--ray", flag_value="local", metavar="[ADDRESS]", group="ray", callback=check_ray_address,
        help="Certify on Ray actors: auto joins this machine's cluster, an address joins that one, no value starts "
             "Ray here (pip install 'onnx-certifier[ray]'; see docs/scale-out.md).")] = None
    ray_actors: Annotated[int | None, flag(
        "--ray-actors", group="ray", help="With --ray: at most this many actors (default: as many as the cluster "
                                          "holds: one per GPU, or one per --threads CPUs).")] = None
    ray_gpus: Annotated[float, flag(
        "--ray-gpus", group="ray", help="With --ray on CUDA: GPUs per actor (0.5 puts two actors on each "
                                        "GPU).")] = 1.0
    ray_timeout: Annotated[float, flag(
        "--ray-timeout", group="ray", range=Range(0, low_open=True),
        help="With --ray ADDRESS: seconds the cluster may take to answer before certify gives up.")] = CONNECT_TIMEOUT


class RunSettings(Settings):
    """A whole run's settings: the model's, the job's and where it runs, with the rules that join them."""


    model: ModelSettings = ModelSettings()
    job: JobSettings = JobSettings()
    ray: RaySettings = RaySettings()

    @model_validator(mode="after")
    def _join(self) -> "RunSettings":
        if self.model.allow_batch_coupling is None and self.job.batch_size == 1:
            # With one view per call a model whose rows depend on their batch is a per-input function again.
            object.__setattr__(self, "model", self.model.replace(allow_batch_coupling=True))
        return self

    @classmethod
    def from_values(cls, values: Mapping[str, Any], base: "RunSettings | None" = None, *,
                    caller: str | None = None) -> "RunSettings":
        """The records from one flat mapping of field names (a command's options, a call's
        keywords), each record's fields changed from ``base`` (default: the defaults)."""
        records = {"model": ModelSettings, "job": JobSettings, "ray": RaySettings}
        parts: dict[str, dict[str, Any]] = {key: {} for key in records}
        for name, value in values.items():
            part = next((key for key, record in records.items() if name in record.model_fields), None)
            if part is None:
                raise TypeError(f"{caller or 'certify'}() got an unexpected keyword argument {name!r}")
            parts[part][name] = value
        return cls(**{key: records[key].of(getattr(base, key) if base is not None else None, given, caller=caller)
                      for key, given in parts.items()})


# -- training ----------------------------------------------------------------------------------

#: Epochs at most (a sanity bound: a run of more would never end).
MAX_EPOCHS = 100_000
#: Learning rates at most: far above any that trains (SGD's are below 1, Adam's near 1e-3), and
#: low enough that the optimizers' steps stay within float32.
MAX_LR = 10.0

TrainingData = Annotated[Path, BeforeValidator(_path), flag("-d", "--data", type="existing", help="{data}")]
#: The learning rates training takes.
LEARNING_RATES = Range(0, MAX_LR, low_open=True, text=f"a positive number of at most {MAX_LR:g}")
#: a learning rate; each command says its optimizer in ``help_values`` and its default beside the field
LearningRate = Annotated[float, flag("--lr", range=LEARNING_RATES, help="{lr}")]
ValidationFraction = Annotated[float, flag("--validation-fraction", range=Range(0, 1, low_open=True, high_open=True),
                                           help="{validation}")]


class TrainingSettings(Settings):
    """What every training command takes (``certify train``, ``certify train-denoiser``, a
    plugin's own): a command's record adds its own fields, ``data`` (with its help in
    ``help_values["data"]``) and the defaults of ``lr`` and ``validation_fraction``."""

    leading: ClassVar[tuple[str, ...]] = ("plugin", "sigma", "options", "data", "out")
    trailing: ClassVar[tuple[str, ...]] = ("quiet",)

    out: Annotated[Path, BeforeValidator(_path), flag("--out", type="file", help="ONNX file to write.")]
    epochs: Annotated[int, flag("--epochs", range=Range(1, MAX_EPOCHS), help="Passes over the training data.")] = 10
    batch_size: Annotated[int, flag("--batch-size", range=Range(1), help="Inputs per training step.")] = 128
    seed: Seed
    device: Device
    dataset_name: Annotated[str | None, flag("--dataset-name", help="Name of the data set, recorded in the "
                                                                    "model.")] = None
    checkpoint: Annotated[Path | None, BeforeValidator(_path), flag(
        "--checkpoint", type="file", help="Checkpoint file (default: OUT.ckpt); an interrupted run resumes from "
                                          "it.")] = None
    restart: Annotated[bool, flag("--restart", is_flag=True, help="Ignore an existing checkpoint.")] = False
    quiet: Annotated[bool, flag("-q", "--quiet", is_flag=True, help="No progress bar or notes.")] = False

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint file: --checkpoint, else OUT.ckpt beside the model."""
        return self.checkpoint or self.out.with_name(self.out.name + ".ckpt")


def takes(*records: type[Settings]) -> Callable[[Callable], Callable]:
    """Give a function that takes ``**values`` of ``records`` a signature listing their fields
    (keyword-only, with their defaults), so help() and introspection show every setting."""
    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        taken = {p.name for p in own}
        fields = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info.default,
                                    annotation=info.annotation)
                  for record in records for name, info in record.model_fields.items() if name not in taken]
        function.__signature__ = signature.replace(parameters=own + fields)
        return function

    return decorate


__all__ = ["ADDRESS_FORMS", "CONNECT_TIMEOUT", "DEVICES", "Flag", "LEARNING_RATES", "InputSpaceSettings", "LearningRate", "MAX_EPOCHS",
           "MAX_LR", "MethodSettings", "Range",
           "TrainingData", "TrainingSettings", "ValidationFraction", "JobSettings", "LAYOUTS", "MAX_PARALLEL", "MAX_SAMPLES", "MAX_SEED", "MODES",
           "ModelSettings", "RaySettings", "RunSettings", "Settings", "check_radii", "parse_address", "takes", "whole_number"]
