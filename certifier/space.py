"""From pixel space, where noise is added and radii are stated, to what the model reads.

Inside certify an image is (C, H, W) and a feature vector is (D,), with values in
[0, 1]. The model may want another layout (NHWC, HW, flat), another range
(0..255), per-channel normalization or another dtype; that mapping is applied to
each noisy view, so the certificate stays in pixel space.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .errors import CertifyError
from .metadata import INPUT_SPACE as METADATA_KEY

LAYOUTS = ("auto", "nchw", "nhwc", "flat")
#: Largest magnitude a clean pixel may take in the model's input space: above it, float32
#: arithmetic overflows as soon as a model squares a value (a norm, a variance).
MAX_INPUT_MAGNITUDE = math.sqrt(float(np.finfo(np.float32).max))


def read_metadata_json(raw: str, what: str):
    """A metadata entry's JSON; any failure, however deeply the text nests, is one line."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise CertifyError(f"the model's {what} metadata is not valid JSON; fix or remove it") from None


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _finite(value) -> bool:
    """A real number that is finite as a float (a 400-digit JSON integer is not)."""
    try:
        return _is_number(value) and math.isfinite(float(value))
    except OverflowError:
        return False


@dataclass(frozen=True)
class InputSpace:
    """model input = (pixel * scale - mean) / std, per channel, then cast."""

    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "auto"
    #: the settings read from the model's metadata rather than given by the user (for messages)
    from_model: frozenset = field(default=frozenset(), compare=False)

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> "InputSpace":
        """The model's recorded settings, unchecked until :meth:`checked` (the user may override them)."""
        raw = metadata.get(METADATA_KEY)
        if not raw:
            return cls()
        values = read_metadata_json(raw, METADATA_KEY)
        if not isinstance(values, dict):
            raise CertifyError(f"the model's {METADATA_KEY} metadata is not a JSON object of settings; "
                               f"fix or remove it")
        given = {key: values[key] for key in ("scale", "mean", "std", "layout") if values.get(key) is not None}
        return cls(**given, from_model=frozenset(given))

    def overridden(self, **given) -> "InputSpace":
        """A checked copy with the options the user gave (None means not given)."""
        values = {k: v for k, v in given.items() if v is not None}
        merged = {**self.as_dict(), **values}
        return InputSpace(**merged, from_model=self.from_model - set(values)).checked()

    def as_dict(self) -> dict:
        return {"scale": self.scale, "mean": self.mean, "std": self.std, "layout": self.layout}

    def source(self, name: str) -> str:
        """Where a setting came from, as messages name it."""
        return f"{name} from the model's {METADATA_KEY} metadata" if name in self.from_model else f"--{name}"

    def describe(self, scale: float | None = None) -> str:
        """The settings in force, each with its source: "--scale 255 and --std 0.5"."""
        parts = []
        for name in ("scale", "mean", "std"):
            value = scale if name == "scale" and scale is not None else getattr(self, name)
            if value is None:
                continue
            shown = ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"
            if name in self.from_model:
                parts.append(f"{name} {shown} from the model's {METADATA_KEY} metadata")
            elif getattr(self, name) is not None:
                parts.append(f"--{name} {shown}")
            elif value != 1.0:
                parts.append(f"the default {name} {shown}")
        return " and ".join(parts)

    def checked(self) -> "InputSpace":
        """This space with every setting a usable number (or list of numbers), each problem one line."""
        def bad(name: str, value, wanted: str) -> CertifyError:
            fix = (f"; fix the metadata or override it with --{name}" if name in self.from_model else "")
            values = " values" if name in ("mean", "std") else ""
            return CertifyError(f"{self.source(name)}{values} must be {wanted}, got {_short(value)}{fix}")

        scale = self.scale
        if scale is not None and not (_finite(scale) and scale > 0):
            raise bad("scale", scale, "a positive number")
        scale = None if scale is None else float(scale)
        per_channel = {}
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is None:
                per_channel[name] = None
                continue
            items = value.tolist() if isinstance(value, np.ndarray) else value
            items = list(items) if isinstance(items, (list, tuple)) else [items]
            if not items or not all(_finite(v) for v in items):
                raise bad(name, value, "finite numbers, one per channel (or one for all)")
            if name == "std" and not all(v > 0 for v in items):
                raise bad(name, value, "positive numbers")
            per_channel[name] = tuple(float(v) for v in items)
        if self.layout not in LAYOUTS:
            raise bad("layout", self.layout, f"one of {', '.join(LAYOUTS)}")
        return InputSpace(scale, per_channel["mean"], per_channel["std"], self.layout, self.from_model)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _matches(declared: Sequence[int | None], actual: Sequence[int]) -> bool:
    return len(declared) == len(actual) and all(d is None or d == a for d, a in zip(declared, actual))


def _describe(shape: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def prefers_channels_last(declared: Sequence[int | None]) -> bool:
    """Whether a model's declared per-input shape reads as H x W x C.

    Decides data and model shapes that fit both layouts, the same way for both.
    """
    return len(declared) == 3 and declared[-1] in (1, 3, 4) and declared[0] not in (1, 3, 4)


def resolve_layout(declared: Sequence[int | None], view_shape: tuple[int, ...], layout: str = "auto",
                   source: str = "--layout") -> str:
    """Which layout turns a (C, H, W) or (D,) view into the model's declared input.

    Returns "nchw", "nhwc", "hw" (channel dropped), "flat" (C, H, W order) or
    "flat-hwc" (H, W, C order: asked for with layout "nhwc"). ``source`` names where
    ``layout`` came from, for messages.
    """
    if layout not in LAYOUTS:
        raise CertifyError(f"{source} must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    size = int(np.prod(view_shape))
    rank = len(declared)
    found = []
    if rank == 3 and len(view_shape) == 3:
        c, h, w = view_shape
        if _matches(declared, (c, h, w)):
            found.append("nchw")
        if _matches(declared, (h, w, c)):
            found.append("nhwc")
    elif rank == 2 and len(view_shape) == 3 and view_shape[0] == 1:
        if _matches(declared, view_shape[1:]):
            found.append("hw")
    elif rank == 1 and _matches(declared, (size,)):
        found.append("flat")
    fits = found
    if layout != "auto":
        if rank == 1 and layout == "nhwc" and fits == ["flat"] and len(view_shape) == 3:
            return "flat-hwc"
        if rank == 1 and layout in ("flat", "nchw"):
            fits = [f for f in fits if f == "flat"]
        else:
            fits = [f for f in fits if f == layout or (f == "hw" and layout in ("nchw", "nhwc"))]
    if not fits:
        view = _describe(view_shape) + (" (C x H x W)" if len(view_shape) == 3 else "")
        if found:
            # The data fits the model, only not in the layout asked for.
            reading = _reading(found[0] if len(found) == 1 else ("nhwc" if prefers_channels_last(declared) else "nchw"))
            named = f"{source} {layout}" if source.startswith("--") else f"{source}, {layout},"
            raise CertifyError(
                f"{named} does not fit the model: it takes {_describe(declared)} inputs, which fit the "
                f"data ({view.replace(' (', ', ').rstrip(')')}) read {reading}; set --layout to match the model, "
                f"or leave it out (auto)"
            )
        raise CertifyError(
            _image_mismatch(declared, view_shape, layout)
            or f"the model takes inputs of shape {_describe(declared)} but the data gives {view}; "
               f"check --data, or set --layout if the channel axis is misread"
        )
    if len(fits) > 1:
        # Both fit when the declared shape is symbolic, or a cube such as 3 x 3 x 3.
        return "nhwc" if prefers_channels_last(declared) else "nchw"
    return fits[0]


def _reading(fit: str) -> str:
    return {
        "nchw": "as channels first (--layout nchw)",
        "nhwc": "as channels last (--layout nhwc)",
        "hw": "as H x W images without a channel axis (--layout auto)",
        "flat": "as flat vectors (--layout flat)",
    }[fit]


def _image_readings(declared: Sequence[int | None], layout: str) -> list[tuple[int | None, ...]]:
    """(channels, height, width) of a declared image input, for each layout it may have."""
    readings = []
    if len(declared) == 3:
        chw, hwc = tuple(declared), (declared[2], declared[0], declared[1])
        order = [hwc, chw] if prefers_channels_last(declared) else [chw, hwc]
        allowed = {"auto": order, "nchw": [chw], "nhwc": [hwc]}.get(layout, [])
        readings = [r for r in allowed if r[0] is None or r[0] in (1, 3, 4)]
    elif len(declared) == 2 and layout != "flat":
        readings = [(1, declared[0], declared[1])]
    return readings


def _channel_words(count: int | None) -> str:
    return {1: "grey images (1 channel)", 3: "colour images (3 channels)"}.get(count, f"{count}-channel images")


def _image_mismatch(declared: Sequence[int | None], view_shape: tuple[int, ...], layout: str) -> str | None:
    """Why images do not fit the model when it is their size or channels (None otherwise)."""
    if len(view_shape) != 3:
        return None
    if layout != "auto":
        try:
            resolve_layout(declared, view_shape, "auto")
            return None  # they fit in another layout: the generic message points at --layout
        except CertifyError:
            pass
    c, h, w = view_shape
    readings = _image_readings(declared, layout)
    same = lambda want, have: want is None or want == have  # noqa: E731
    for channels, height, width in readings:
        if same(channels, c) and not (same(height, h) and same(width, w)):
            size = f"{height or '?'} x {width or '?'}"
            fix = f"--resize {height} {width}" if height and width else "--resize H W"
            return (f"the model takes {size} images but the data's are {h} x {w}; certify does not resize "
                    f"on its own: pass {fix} to resize them before the noise (radii are then in the resized "
                    f"images' pixel space)")
    for channels, height, width in readings:
        if not same(channels, c):
            if channels == 3 and c == 1:
                advice = ("store them with 3 channels (the grey channel repeated, e.g. np.repeat(x, 3, axis=1)) "
                          "if that is how the model was trained; the certificate is then about those images")
            elif channels == 1 and c == 3:
                advice = ("convert them to grey the way the model was trained (e.g. skimage.color.rgb2gray); "
                          "which weighting of red, green and blue that was, certify cannot know")
            else:
                advice = f"store them with {channels} channels"
            size = "" if same(height, h) and same(width, w) else (
                f", and the model's are {height or '?'} x {width or '?'} pixels while the data's are {h} x {w} "
                f"(--resize H W resizes them)")
            return (f"the model takes {_channel_words(channels)} but the data's are {_channel_words(c)}{size}; "
                    f"certify does not convert channels: {advice}")
    return None


def _check_mapping(space: InputSpace, scale: float, gain: np.ndarray, offset: np.ndarray, dtype: np.dtype) -> None:
    """Refuse an input space whose float32 mapping of pixels in [0, 1] overflows, loses the
    pixels, or feeds the model values its arithmetic cannot hold."""
    named = space.describe(scale)
    verb = "give" if " and " in named else "gives"
    with np.errstate(over="ignore", invalid="ignore"):
        gain32, offset32 = gain.astype(np.float32), offset.astype(np.float32)
        ends = np.abs(np.concatenate([offset32, offset32 + gain32])).astype(np.float64)
    if not (np.isfinite(gain32).all() and np.isfinite(offset32).all() and np.isfinite(ends).all()):
        raise CertifyError(f"{named} {verb} model inputs beyond float32's range (infinities); pixels are in "
                           f"[0, 1]: check the values")
    if (np.abs(gain32) < np.finfo(np.float32).tiny).any() or ((offset32 + gain32) == offset32).any():
        raise CertifyError(f"{named} {verb} model inputs in which the pixels vanish in float32 rounding (every "
                           f"input would look the same to the model); check the values")
    limit = MAX_INPUT_MAGNITUDE
    if np.issubdtype(dtype, np.floating):
        limit = min(limit, float(np.finfo(dtype).max))
    largest = float(ends.max())
    if largest > limit and not np.issubdtype(dtype, np.integer):
        raise CertifyError(
            f"{named} {verb} model inputs up to {largest:.3g}, beyond {limit:.3g}, where the model's "
            f"{np.dtype(dtype).name} arithmetic overflows; pixels are in [0, 1] (--scale 255 is for a model "
            f"that expects 0..255): check the values")


class ModelAdapter:
    """Maps a batch of pixel-space views to the model's input tensor."""

    def __init__(self, view_shape: tuple[int, ...], declared: Sequence[int | None], dtype: np.dtype, space: InputSpace):
        space = space.checked()
        self.layout = resolve_layout(declared, view_shape, space.layout, space.source("layout"))
        self.dtype = np.dtype(dtype)
        integer = np.issubdtype(self.dtype, np.integer)
        scale = space.scale if space.scale is not None else (255.0 if integer else 1.0)
        channels = view_shape[0] if len(view_shape) == 3 else 1
        mean = np.asarray(space.mean if space.mean is not None else (0.0,), dtype=np.float64)
        std = np.asarray(space.std if space.std is not None else (1.0,), dtype=np.float64)
        for name, values in (("mean", mean), ("std", std)):
            if values.size not in (1, channels):
                wanted = "1 value (the data has one channel)" if channels == 1 else f"1 or {channels} values (one per channel)"
                raise CertifyError(f"{space.source(name)} needs {wanted}, got {values.size}")
        # One fused multiply-add: x * gain + offset.
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            gain = scale / std
            offset = -mean / std
        _check_mapping(space, scale, gain, offset, self.dtype)
        shape = (1, -1, 1, 1) if len(view_shape) == 3 else (1, -1)
        self.identity = bool(np.all(gain == 1.0) and np.all(offset == 0.0))
        self.gain = gain.astype(np.float32).reshape(shape)
        self.offset = offset.astype(np.float32).reshape(shape)
        self.integer = integer
        if integer:
            info = np.iinfo(self.dtype)
            self.limits = (info.min, info.max)
        self.view_shape = view_shape
        self.space = InputSpace(scale=scale, mean=tuple(mean.tolist()), std=tuple(std.tolist()), layout=self.layout)

    def __call__(self, views: np.ndarray) -> np.ndarray:
        if not self.identity:
            views = views * self.gain
            views += self.offset
        if self.integer:
            views = np.clip(np.rint(views), *self.limits)
        if self.layout == "nhwc":
            views = views.transpose(0, 2, 3, 1)
        elif self.layout == "hw":
            views = views[:, 0]
        elif self.layout == "flat":
            views = views.reshape(len(views), -1)
        elif self.layout == "flat-hwc":
            views = views.transpose(0, 2, 3, 1).reshape(len(views), -1)
        return np.ascontiguousarray(views, dtype=self.dtype)


def canonical_shape(sample_shape: tuple[int, ...], prefer_channels_last: bool = False) -> tuple[tuple[int, ...], Callable[[np.ndarray], np.ndarray]]:
    """The (C, H, W) or (D,) shape of one data item, and a function converting a batch to it."""
    rank = len(sample_shape)
    if rank == 1:
        return sample_shape, lambda x: x
    if rank == 2:
        return (1,) + sample_shape, lambda x: x[:, None]
    if rank == 3:
        first, last = sample_shape[0] in (1, 3, 4), sample_shape[2] in (1, 3, 4)
        if last and (not first or prefer_channels_last):
            h, w, c = sample_shape
            return (c, h, w), lambda x: x.transpose(0, 3, 1, 2)
        if first:
            return sample_shape, lambda x: x
    raise CertifyError(
        f"cannot read data items of shape {_describe(sample_shape)}: expected H x W, H x W x C, "
        f"C x H x W (C = 1, 3 or 4) or a flat feature vector"
    )
