"""Reading inputs to certify: npz/npy arrays, a folder of images or one image."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import CertifyError
from .space import canonical_shape

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def to_pixel_space(values: np.ndarray, source: str) -> np.ndarray:
    """float32 in [0, 1] from uint8 0..255, integers 0..255 or floats in [0, 1]."""
    values = np.asarray(values)
    if values.dtype == bool:  # black and white: True is white, 1.0
        return values.astype(np.float32)
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(255)
    if np.issubdtype(values.dtype, np.integer):
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 255:
            raise CertifyError(
                f"{source}: integer pixel values range {low}..{high}; expected 0..255 (8-bit) "
                f"or floats in [0, 1]"
            )
        return values.astype(np.float32) / np.float32(255)
    if not np.issubdtype(values.dtype, np.floating):
        raise CertifyError(f"{source}: cannot read values of type {values.dtype}; expected uint8 or float")
    if values.size and not np.isfinite(values).all():
        raise CertifyError(f"{source}: the data contains NaN or infinite values")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0 or high > 1:
        if low >= 0 and high <= 255:
            hint = " (it looks like 0..255: store it as uint8 or divide by 255)"
        elif low < 0:
            hint = " (it looks normalized: store pixels in [0, 1] and give the model's --mean and --std)"
        else:
            hint = ""
        raise CertifyError(
            f"{source}: pixel values range {low:g}..{high:g}, outside [0, 1]{hint}; "
            f"certify works in pixel space [0, 1]"
        )
    return values.astype(np.float32, copy=False)


class Dataset:
    """Inputs in certify's canonical form: float32 (C, H, W) or (D,) in [0, 1]."""

    def __init__(self, items: Sequence | np.ndarray, labels: np.ndarray | None, source: str,
                 class_names: list[str] | None = None, prefer_channels_last: bool = False):
        self.source = source
        self.class_names = class_names
        self._items = items
        self._paths = None if isinstance(items, np.ndarray) else list(items)
        if self._paths is None:
            if items.ndim < 2:
                raise CertifyError(f"{source}: expected an array of inputs (N, ...), got shape {items.shape}")
            self._raw_shape = tuple(items.shape[1:])
            self._pixels = to_pixel_space(items, source)
        else:
            self._raw_shape = _read_image(self._paths[0]).shape
            self._pixels = None
        self.shape, self._convert = canonical_shape(self._raw_shape, prefer_channels_last)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim != 1 or len(labels) != len(self):
                raise CertifyError(f"{source}: y has shape {labels.shape}; expected one label per input ({len(self)})")
            if not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
                raise CertifyError(f"{source}: labels must be non-negative integers (class indices)")
            labels = labels.astype(np.int64)
        self.labels = labels

    def __len__(self) -> int:
        return len(self._paths) if self._paths is not None else len(self._items)

    def label(self, index: int) -> int | None:
        return None if self.labels is None else int(self.labels[index])

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        """Inputs at ``indices`` in canonical form."""
        if self._pixels is not None:
            raw = self._pixels[np.asarray(indices)]
        else:
            images = []
            for i in indices:
                image = _read_image(self._paths[i])
                if image.shape != self._raw_shape:
                    raise CertifyError(
                        f"{self._paths[i]} is {image.shape} but the first image is {self._raw_shape}; "
                        f"all images must have the same size"
                    )
                images.append(image)
            raw = to_pixel_space(np.stack(images), str(self.source))
        return np.ascontiguousarray(self._convert(raw))

    def fingerprint(self) -> str:
        """A hash of the inputs and labels, to tell data sets apart in results files."""
        digest = hashlib.sha256()
        if self._pixels is not None:
            digest.update(np.ascontiguousarray(self._items).tobytes())
        else:
            for path in self._paths:
                digest.update(Path(path).name.encode())
                digest.update(Path(path).read_bytes())
        if self.labels is not None:
            digest.update(self.labels.tobytes())
        return digest.hexdigest()


def _read_image(path) -> np.ndarray:
    from skimage import io

    try:
        image = np.asarray(io.imread(str(path)))
    except Exception as error:
        raise CertifyError(f"cannot read image {path}: {type(error).__name__}: {error}") from None
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]  # drop alpha
    if image.dtype == np.uint16:
        raise CertifyError(f"{path} is a 16-bit image; convert it to 8 bits")
    return image


def _load_arrays(path: Path, split: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            candidates = [(f"x_{split}", f"y_{split}")] if split else [("x", "y"), ("x_test", "y_test")]
            for x_key, y_key in candidates:
                if x_key in keys:
                    return archive[x_key], archive[y_key] if y_key in keys else None
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise CertifyError(f"cannot read {path} as a numpy file: {error}") from None
    wanted = f"x_{split}" if split else "x (or x_test)"
    raise CertifyError(f"{path} has no array named {wanted}; it holds: {', '.join(sorted(keys))}")


def load_data(path: str | Path, *, split: str | None = None, class_names: list[str] | None = None,
              prefer_channels_last: bool = False) -> Dataset:
    """Open ``path``: an .npz (x, y; or x_test, y_test), an .npy, an image folder or one image.

    In a folder, sub-folders are classes: named after the model's class names when
    it records them, else numbered in sorted order.
    """
    path = Path(path)
    if not path.exists():
        raise CertifyError(f"data not found: {path}")
    if path.is_dir():
        return _load_folder(path, class_names, prefer_channels_last)
    if path.suffix.lower() in (".npz", ".npy"):
        x, y = _load_arrays(path, split)
        return Dataset(x, y, str(path), class_names, prefer_channels_last)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return Dataset([path], None, str(path), class_names, prefer_channels_last)
    raise CertifyError(f"cannot read {path}: give an .npz or .npy file, a folder of images or an image file")


def _load_folder(folder: Path, class_names: list[str] | None, prefer_channels_last: bool) -> Dataset:
    # Hidden entries are tool litter (.ipynb_checkpoints, macOS ._ files), not classes or images.
    def images_in(directory: Path) -> list[Path]:
        return sorted(p for p in directory.iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))

    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        paths = images_in(folder)
        if not paths:
            raise CertifyError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Dataset(paths, None, str(folder), class_names, prefer_channels_last)
    names = [p.name for p in subfolders]
    if class_names and set(names) <= set(class_names):
        index_of = {name: class_names.index(name) for name in names}
    elif all(name.isdigit() for name in names):
        index_of = {name: int(name) for name in names}
    else:
        index_of = {name: i for i, name in enumerate(names)}
    paths, labels = [], []
    for sub in subfolders:
        found = images_in(sub)
        paths += found
        labels += [index_of[sub.name]] * len(found)
    if not paths:
        raise CertifyError(f"the class folders in {folder} hold no images")
    return Dataset(paths, np.asarray(labels, dtype=np.int64), str(folder), class_names, prefer_channels_last)
