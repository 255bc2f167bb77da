"""The ONNX metadata certify reads and writes: the ``certifier.*`` keys of a model's metadata_props.

``certify train`` writes them (:func:`model_metadata`); loading a model reads them as
defaults (plugin, sigma, options, class names, input space), and plugins read what
they recorded. A recorded value that cannot be used is refused in one line naming
the key.
"""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .errors import CertifyError
from .methods import MAX_SIGMA
from .onnx_file import read_model

if TYPE_CHECKING:
    import onnx

    from .methods import SmoothingMethod

PLUGIN = "certifier.plugin"
SIGMA = "certifier.sigma"
OPTIONS = "certifier.options"
CLASSES = "certifier.classes"
INPUT_SPACE = "certifier.input_space"
#: the vote groups a model was trained on, comma-separated
GROUP = "certifier.group"
DATASET = "certifier.dataset"
TRAINING = "certifier.training"
#: the training loss and its settings (``certify train --loss``): a JSON object naming the loss
#: (``gaussian``, ``consistency``, ``smoothadv``) with the noisy copies per input and its weights
LOSS = "certifier.loss"
#: ``certify train-denoiser`` records what a denoiser was trained for under this prefix.
DENOISER = "certifier.denoiser."
#: the sigma a denoiser was trained for
DENOISER_SIGMA = DENOISER + "sigma"
#: the hash of the classifier a denoiser was trained through (stability loss)
DENOISER_CLASSIFIER_SHA256 = DENOISER + "classifier_sha256"
#: A diffusion noise predictor eps(x_t, t) records how to use it under this prefix
#: (``certifier.diffusion``): its noise schedule, the timestep convention of its export,
#: the range of the data it was trained on and what it predicts.
DIFFUSION = "certifier.diffusion."
#: JSON: {"kind": "linear", "steps": T, "beta_start": b0, "beta_end": b1}, {"kind": "cosine",
#: "steps": T, "s": s, "max_beta": m} or {"kind": "betas", "betas": [...]}
DIFFUSION_SCHEDULE = DIFFUSION + "schedule"
#: JSON {"first": 0 or 1, "scale": c}: the model takes (first + i) * c for step index i (0-based)
DIFFUSION_TIMESTEP = DIFFUSION + "timestep"
#: JSON [low, high]: the range the images were mapped to for training (default [-1, 1])
DIFFUSION_DATA_RANGE = DIFFUSION + "data_range"
#: what the network predicts; certify takes "epsilon" (the noise) only
DIFFUSION_PREDICTION = DIFFUSION + "prediction"
#: A results header keeps at most this many characters of each denoiser metadata value.
MAX_RECORDED_VALUE = 4096

#: Refused above this many classes: every input keeps arrays of votes this long.
MAX_CLASSES = 1 << 20


def metadata_props(proto: onnx.ModelProto) -> dict[str, str]:
    """A model's metadata_props as a dict."""
    return {p.key: p.value for p in proto.metadata_props}


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of the ONNX file at ``path``, vetted as certify vets every model, without running it."""
    proto, _ = read_model(path)
    return metadata_props(proto)


def _json(raw: str | None) -> Any:
    """The value a JSON text holds; None when there is no text or it is not JSON."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def recorded_plugin(metadata: Mapping[str, str]) -> str | None:
    """The smoothing method the model was trained for."""
    return metadata.get(PLUGIN) or None


def recorded_sigma(metadata: Mapping[str, str]) -> float | None:
    """The sigma ``certify train`` recorded; a recorded value that is not a usable sigma is refused."""
    return _usable_sigma(metadata, SIGMA, "the model's", "pass --sigma (or -o lambda) yourself")


def _usable_sigma(metadata: Mapping[str, str], key: str, whose: str, advice: str) -> float | None:
    raw = metadata.get(key)
    if raw is None or not raw.strip():
        return None
    try:
        sigma = float(raw)
    except ValueError:
        sigma = math.nan
    if not (0 < sigma <= MAX_SIGMA):
        raise CertifyError(f"{whose} {key} metadata is {raw[:40]!r}, not a usable sigma; {advice}")
    return sigma


def recorded_options(metadata: Mapping[str, str], plugin: str) -> dict[str, Any]:
    """The options the model was trained with, when it was trained for ``plugin`` (else none)."""
    value = _json(metadata.get(OPTIONS)) if metadata.get(PLUGIN) == plugin else None
    return value if isinstance(value, dict) else {}


def recorded_classes(metadata: Mapping[str, str]) -> list[str] | None:
    """The class names, in class order."""
    if not metadata.get(CLASSES):
        return None
    names = _json(metadata[CLASSES])
    if (not isinstance(names, list) or not 1 <= len(names) <= MAX_CLASSES
            or not all(isinstance(n, (str, int, float)) for n in names)):
        raise CertifyError(
            f"the model's {CLASSES} metadata is not a JSON list of class names "
            f"(at most {MAX_CLASSES}); fix or remove it"
        )
    return [str(n) for n in names]


def recorded_group(metadata: Mapping[str, str], plugin: str) -> str | None:
    """The vote group(s) the model was trained on, when it was trained for ``plugin``
    (one name, or several joined by commas)."""
    return metadata.get(GROUP) if metadata.get(PLUGIN) == plugin else None


def recorded_json(metadata: Mapping[str, str], key: str) -> dict[str, Any] | None:
    """The JSON object a plugin recorded under ``key`` (None when there is none); anything
    else there is refused in one line."""
    if not metadata.get(key):
        return None
    value = _json(metadata[key])
    if not isinstance(value, dict):
        raise CertifyError(f"the model's {key} metadata is not a JSON object; retrain it or remove that entry")
    return value


def recorded_loss(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """The training loss and its settings ``certify train`` recorded (None for a model
    trained before losses were recorded, or not by ``certify train``)."""
    return recorded_json(metadata, LOSS)


def is_denoiser(metadata: Mapping[str, str]) -> bool:
    """Whether the metadata is a denoiser's (``certify train-denoiser`` wrote it)."""
    return any(key.startswith(DENOISER) for key in metadata)


def recorded_denoiser_sigma(metadata: Mapping[str, str]) -> float | None:
    """The sigma a denoiser was trained for (None when it records none); a recorded value
    that is not a usable sigma is refused."""
    return _usable_sigma(metadata, DENOISER_SIGMA, "the denoiser's",
                         "pass --allow-denoiser-sigma-mismatch to use the denoiser without that check")


def denoiser_description(metadata: Mapping[str, str]) -> dict[str, str]:
    """What a results header records of a denoiser's metadata: its ``certifier.denoiser.*``
    keys and the data set, as recorded (a very long value is cut short)."""
    keys = sorted(k for k in metadata if (k.startswith(DENOISER) or k == DATASET) and len(k) <= 200)
    return {key: _shortened(metadata[key]) for key in keys[:64]}


def _shortened(value: str) -> str:
    return value if len(value) <= MAX_RECORDED_VALUE else value[: MAX_RECORDED_VALUE - 3] + "..."


def model_metadata(method: SmoothingMethod | None, *, input_shape: Sequence[int], view_shape: Sequence[int],
                   dataset: str, classes: Sequence[str], groups: Sequence[str],
                   training: Mapping[str, Any], loss: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The metadata ``certify train`` writes into a model trained on ``method``'s views:
    the method's own :meth:`~certifier.SmoothingMethod.training_metadata`, then the core's
    keys, which it cannot replace. ``loss`` is the training loss and its settings.

    ``method`` None is a plain classifier trained on clean images: it records no plugin,
    sigma, options, input space or group, so certify applies no smoothing defaults to it.
    """
    described = {DATASET: dataset, CLASSES: json.dumps(list(classes)), TRAINING: json.dumps(dict(training))}
    if loss is not None:
        described[LOSS] = json.dumps(dict(loss))
    if method is None:
        return described
    extra = {str(k): str(v) for k, v in method.training_metadata(tuple(input_shape)).items()}
    return {
        **extra,
        PLUGIN: method.name,
        SIGMA: "" if method.sigma is None else repr(method.sigma),
        OPTIONS: json.dumps(method.options.model_dump(mode="json")),
        INPUT_SPACE: json.dumps({"scale": 1.0, "mean": None, "std": None,
                                 "layout": "flat" if len(view_shape) == 1 else "nchw"}),
        GROUP: ",".join(groups),
        **described,
    }


def denoiser_metadata(*, sigma: float, loss: str, input_shape: Sequence[int], architecture: Mapping[str, Any],
                      training: Mapping[str, Any], dataset: str, classifier_sha256: str | None = None,
                      classifier: str | None = None) -> dict[str, str]:
    """The metadata ``certify train-denoiser`` writes: the sigma and loss a denoiser was
    trained with, its image shape and network, and (for the stability loss) the
    classifier it was trained through."""
    written = {
        DENOISER_SIGMA: repr(float(sigma)),
        DENOISER + "loss": loss,
        DENOISER + "input_shape": json.dumps(list(input_shape)),
        DENOISER + "architecture": json.dumps(dict(architecture)),
        DENOISER + "training": json.dumps(dict(training)),
        DATASET: dataset,
    }
    if classifier_sha256 is not None:
        written[DENOISER_CLASSIFIER_SHA256] = classifier_sha256
        written[DENOISER + "classifier"] = classifier or ""
    return written


def diffusion_metadata(*, schedule: Mapping[str, Any], timestep: Mapping[str, Any], data_range: Sequence[float],
                       input_shape: Sequence[int], architecture: Mapping[str, Any], training: Mapping[str, Any],
                       dataset: str) -> dict[str, str]:
    """The metadata ``certify train-denoiser --kind diffusion`` writes into a noise predictor:
    how to use it (schedule, timestep convention, data range, prediction) and how it was made."""
    return {
        DIFFUSION_SCHEDULE: json.dumps(dict(schedule)),
        DIFFUSION_TIMESTEP: json.dumps(dict(timestep)),
        DIFFUSION_DATA_RANGE: json.dumps([float(v) for v in data_range]),
        DIFFUSION_PREDICTION: "epsilon",
        DIFFUSION + "input_shape": json.dumps(list(input_shape)),
        DIFFUSION + "architecture": json.dumps(dict(architecture)),
        DIFFUSION + "training": json.dumps(dict(training)),
        DATASET: dataset,
    }
