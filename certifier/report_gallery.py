"""The HTML report's gallery: some inputs of a run (certified, abstained, wrong), found again
where its header says the data and model are, with a few views made afresh by the run's own
plugin with the header's settings. Whatever is gone or changed is said, never guessed around."""

from __future__ import annotations

import base64
import io
import math
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .data import load_data
from .errors import CertifyError
from .onnx_file import external_data_files, file_sha256
from .results import is_index, is_number

#: Inputs shown per kind (certified, abstained, wrong).
PER_KIND = 4
#: Views shown per input, shared among the method's vote groups.
VIEWS = 3
#: Pictures are stored at most this many pixels a side (the page shows them small).
LARGEST_SIDE = 160
KINDS = ("certified", "abstained", "wrong")


@dataclass
class Picture:
    caption: str
    #: a data: URI of a PNG
    source: str


@dataclass
class Shown:
    """One input of the gallery: its counted record (see ``summaries.audit``) and its pictures."""

    kind: str
    record: dict
    pictures: list[Picture] = field(default_factory=list)


@dataclass
class Gallery:
    inputs: list[Shown]
    #: what kept pictures out (data or plugin gone), one sentence each
    notes: list[str] = field(default_factory=list)
    #: how the views were made, for the caption
    views_made_by: str | None = None
    #: whether some picture holds values outside [0, 1], drawn clipped
    clipped: bool = False


@dataclass
class ModelFile:
    """What is left of the model a header names: ``status`` "present" (its SHA-256 is the
    recorded one), "changed", "missing" or "unreadable"; metadata only when present."""

    path: Path | None
    status: str
    sha256: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    problem: str | None = None


def locate(recorded: Any, results_path: Path) -> Path | None:
    """Where a path a header records is now: as recorded (relative to here), or, for a relative
    path, beside the results file; None when neither exists."""
    if not isinstance(recorded, str) or not recorded:
        return None
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [path, results_path.parent / path]
    return next((p for p in candidates if p.exists()), None)


def open_model(header: Mapping, results_path: Path) -> ModelFile:
    """The model file the header names, checked against its recorded SHA-256."""
    from .metadata import metadata_props
    from .onnx_file import read_model

    recorded = header.get("model")
    path = locate(recorded, results_path)
    if path is None:
        return ModelFile(None, "missing", problem=f"the model is no longer at {recorded}" if recorded
                         else "the header names no model file")
    try:
        proto, _ = read_model(path)
        sha256 = file_sha256(path, *(path.parent / name for name in external_data_files(proto)))
    except (CertifyError, OSError) as error:
        return ModelFile(path, "unreadable", problem=f"{path} cannot be read: {error}")
    if sha256 != header.get("model_sha256"):
        return ModelFile(path, "changed", sha256, problem=f"{path} is not the model the run certified (its SHA-256 is "
                         f"now {sha256}); its metadata is not shown")
    graph = proto.graph
    initializers = {i.name for i in graph.initializer}
    facts = {
        "producer": " ".join(filter(None, [proto.producer_name, proto.producer_version])) or "-",
        "ONNX IR version": str(proto.ir_version),
        "opsets": ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import),
        "inputs": ", ".join(f"{i.name} {_dims(i)}" for i in graph.input if i.name not in initializers),
        "outputs": ", ".join(f"{o.name} {_dims(o)}" for o in graph.output),
        "nodes": str(len(graph.node)),
    }
    return ModelFile(path, "present", sha256, metadata_props(proto), facts)


def _dims(value_info) -> str:
    shape = value_info.type.tensor_type.shape
    return "[" + ", ".join(d.dim_param or str(d.dim_value) if (d.dim_param or d.HasField("dim_value")) else "?"
                           for d in shape.dim) + "]"


def choose(counted: Sequence[dict], per_kind: int = PER_KIND) -> list[Shown]:
    """Inputs worth a look: certified ones across their radii (largest, smallest and between),
    abstentions, and wrong predictions, the most confidently wrong first. Only records the
    summary trusted (``valid``) count as certified or wrong."""
    def index_of(record):
        return record["source"].get("index")

    usable = [r for r in counted if is_index(index_of(r))]
    right = sorted((r for r in usable if r["valid"] and r["prediction"] is not None and r["correct"] is not False),
                   key=lambda r: (-r["radius"], index_of(r)))
    if len(right) > per_kind:  # evenly over the radii, the largest and the smallest included
        right = [right[round(i * (len(right) - 1) / (per_kind - 1))] for i in range(per_kind)]
    abstained = [r for r in usable if r["prediction"] is None][:per_kind]
    wrong = sorted((r for r in usable if r["valid"] and r["correct"] is False and r["prediction"] is not None),
                   key=lambda r: (-r["radius"], index_of(r)))[:per_kind]
    return ([Shown("certified", r) for r in right] + [Shown("abstained", r) for r in abstained]
            + [Shown("wrong", r) for r in wrong])


def make_gallery(header: Mapping, counted: Sequence[dict], results_path: Path, model: ModelFile,
                 class_names: list[str] | None) -> Gallery:
    """The gallery of one run: the inputs ``choose`` picks, each with its clean picture and a few
    views, when the data is where the header says and is the data the run certified."""
    gallery = Gallery(choose(counted))
    if not gallery.inputs:
        return gallery
    dataset = _find_data(header, results_path, class_names, gallery.notes)
    if dataset is None:
        return gallery
    indices = [s.record["source"]["index"] for s in gallery.inputs]
    if max(indices) >= len(dataset):
        gallery.notes.append(f"the data holds {len(dataset)} inputs but the results name input {max(indices)}: "
                             f"no pictures")
        return gallery
    clean = dataset.batch(indices)
    method = _method(header, model, tuple(clean.shape[1:]), gallery.notes)
    if method is not None:
        gallery.views_made_by = _describe(header, method)
    seed = header.get("seed") if is_index(header.get("seed")) else 0
    for shown, x in zip(gallery.inputs, clean):
        shown.pictures.append(_picture("input", x))
        if method is None:
            continue
        try:
            for name, view in _views(method, x, np.random.default_rng([seed, shown.record["source"]["index"]])):
                shown.pictures.append(_picture(name, view))
                gallery.clipped = gallery.clipped or not (np.nanmin(view) >= 0 and np.nanmax(view) <= 1)
        except Exception as error:  # a plugin's own code: say what failed, keep the rest of the report
            gallery.notes.append(f"plugin {header.get('plugin')} could not make views: {_one_line(error)}")
            gallery.views_made_by, method = None, None
            for other in gallery.inputs:
                other.pictures[1:] = []
    return gallery


def _find_data(header, results_path, class_names, notes: list[str]):
    """The run's data set, opened as the run opened it, or None (with a note saying why)."""
    recorded = header.get("data")
    if recorded == "array":
        notes.append("the run's inputs were given to Python as an array, not a file: no pictures")
        return None
    path = locate(recorded, results_path)
    if path is None:
        notes.append(f"the data is no longer at {recorded} (the path the results header records): no pictures"
                     if recorded else "the results header names no data file: no pictures")
        return None
    wanted = header.get("data_sha256")
    if not isinstance(wanted, str):
        # only the fingerprint says the file there now is the run's (and not, say, other pictures of
        # the reader's that a results file points at)
        notes.append("the results header records no fingerprint of its data: no pictures")
        return None
    if not (path.is_file() or path.is_dir()):
        notes.append(f"the data path {path} is not a file or folder: no pictures")
        return None
    input_space = header.get("input_space") if isinstance(header.get("input_space"), dict) else {}
    resize = header.get("resize") if isinstance(header.get("resize"), list) else None
    problem = None
    for split in [None, *_splits(path)]:  # the header does not record --split: the fingerprint tells
        try:
            with warnings.catch_warnings():  # how folders are labeled was said when the run started
                warnings.simplefilter("ignore")
                dataset = load_data(path, split=split, class_names=class_names, resize=resize,
                                    prefer_channels_last=input_space.get("layout") == "nhwc")
        except CertifyError as error:
            problem = problem or str(error)
            continue
        if dataset.fingerprint() == wanted:
            return dataset
        problem = "fingerprint"
    if problem == "fingerprint":
        notes.append(f"the data at {path} is not the data the run certified (its fingerprint differs): no pictures")
    else:
        notes.append(f"the data at {path} cannot be read now ({problem}): no pictures")
    return None


def _splits(path: Path) -> list[str]:
    """The splits (x_SPLIT arrays) of an .npz, for finding the one a run read."""
    if path.suffix.lower() != ".npz":
        return []
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return []
    return sorted(n[2:-4] for n in names if n.startswith("x_") and n.endswith(".npy"))


def _method(header, model: ModelFile, input_shape: tuple[int, ...], notes: list[str]):
    """The run's smoothing method with the header's settings, ready for inputs of ``input_shape``; None
    (with a note) when the plugin is not installed or refuses."""
    from .api import make_method

    plugin = header.get("plugin")
    settings = header.get("settings") if isinstance(header.get("settings"), dict) else {}
    options = settings.get("options") if isinstance(settings.get("options"), dict) else {}
    sigma = settings.get("sigma") if is_number(settings.get("sigma")) else None
    try:
        method = make_method(plugin if isinstance(plugin, str) else None, sigma, options, model.metadata)
        method.prepare(input_shape, model.metadata)
    except Exception as error:  # an uninstalled or broken plugin: the clean pictures stay
        notes.append(f"no noisy views: plugin {plugin} cannot be set up with the header's settings here "
                     f"({_one_line(error)})")
        return None
    return method


def _describe(header, method) -> str:
    settings = [f"sigma {method.sigma:g}"] if method.sigma is not None else []
    settings += [f"{name.replace('_', '-')} {value}" for name, value in method.options.model_dump().items()]
    text = f"plugin {method.name}" + (f" ({', '.join(settings)})" if settings else "")
    if header.get("denoiser"):
        text += "; shown before the denoiser"
    return text


def _views(method, x: np.ndarray, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """A few views of ``x`` as the model reads them (each method's last stage), spread over its
    groups, with the method's name for each."""
    groups = tuple(method.groups)
    per_group = max(1, VIEWS // len(groups))
    views = []
    for group in groups:
        for _ in range(per_group):
            name, view = method.stages(x[None], rng, group)[-1]
            views.append((str(name), np.asarray(view[0], dtype=np.float32)))
    return views


def _picture(caption: str, image: np.ndarray) -> Picture:
    """A PNG of a (C, H, W) or (D,) pixel-space array as a data: URI, values outside [0, 1] clipped."""
    from PIL import Image

    shown = _displayable(image)
    pixels = np.round(np.nan_to_num(np.clip(shown, 0, 1)) * 255).astype(np.uint8)
    picture = Image.fromarray(pixels)
    if max(picture.size) > LARGEST_SIDE:
        picture.thumbnail((LARGEST_SIDE, LARGEST_SIDE))
    encoded = io.BytesIO()
    picture.save(encoded, format="PNG", optimize=True)
    return Picture(caption, "data:image/png;base64," + base64.b64encode(encoded.getvalue()).decode("ascii"))


def _displayable(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) from a (C, H, W) image; a feature vector as a square, zero-padded."""
    if image.ndim == 1:
        side = math.isqrt(max(image.size - 1, 0)) + 1
        padded = np.zeros(side * side, dtype=np.float32)
        padded[: image.size] = image
        return padded.reshape(side, side)
    if image.ndim == 3 and image.shape[0] == 1:
        return image[0]
    if image.ndim == 3:
        rgb = np.moveaxis(image[:3], 0, -1)
        return rgb if rgb.shape[-1] == 3 else rgb[..., 0]  # two channels: the first
    return image


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__
