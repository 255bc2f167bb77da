"""Reading inputs to certify: npz/npy arrays, a folder of images or one image.

Data is read lazily: opening a file reads only its headers, and ``Dataset.batch``
reads and converts only the inputs asked for. A small file that declares, or
expands to, a huge array therefore cannot exhaust memory: declared sizes are checked
against the file and against the memory available before anything is allocated.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import CertifyError
from .resources import available_memory
from .space import canonical_shape

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
#: One read may take at most this share of the memory available.
MEMORY_SHARE = 0.5
#: Pixel values certify reads: booleans, integers (0..255) and floats ([0, 1]).
PIXEL_KINDS = "biuf"


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{value:.0f} bytes" if unit == "bytes" else f"{value:.3g} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _ensure_fits(nbytes: int, what: str) -> None:
    """Refuse, in one line, to allocate more than a share of the memory available."""
    available = available_memory()
    if nbytes > MEMORY_SHARE * available:
        raise CertifyError(
            f"{what} would take {_size(nbytes)} of memory, more than is available ({_size(available)} free); "
            f"select fewer inputs (--limit) or use smaller data"
        )


def _describe(shape: Sequence[int]) -> str:
    return " x ".join(str(d) for d in shape)


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


# -- arrays read row by row ----------------------------------------------------------------


class _ArrayRows:
    """Rows of an array in memory or memory-mapped from a file."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = array.dtype

    def rows(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.array[indices])

    def read_all(self) -> np.ndarray:
        return np.asarray(self.array)


class _StreamRows:
    """Rows of a compressed .npz member, decompressed only up to the last row asked for.

    Reads in increasing order (how inputs are certified) decompress the member once;
    a row before the current position restarts the stream.
    """

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, data_start: int,
                 shape: tuple[int, ...], dtype: np.dtype, where: str):
        self.shape, self.dtype, self.where = shape, dtype, where
        self._archive, self._info, self._data_start = archive, info, data_start
        self._row_bytes = math.prod(shape[1:]) * dtype.itemsize
        self._stream = None
        self._lock = threading.Lock()

    def rows(self, indices: np.ndarray) -> np.ndarray:
        ordered = np.sort(indices)
        wanted = ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered
        found = np.empty((len(wanted),) + self.shape[1:], dtype=self.dtype)
        if len(wanted) and self._row_bytes:
            # consecutive rows are read in one piece
            runs = np.split(wanted, np.flatnonzero(np.diff(wanted) != 1) + 1)
            with self._lock:
                done = 0
                for run in runs:
                    data = self._read(int(run[0]), len(run))
                    found[done:done + len(run)] = np.frombuffer(data, dtype=self.dtype).reshape(
                        (len(run),) + self.shape[1:])
                    done += len(run)
        return found[np.searchsorted(wanted, indices)]

    def read_all(self) -> np.ndarray:
        if not self.shape[0] or not self._row_bytes:
            return np.empty(self.shape, dtype=self.dtype)
        with self._lock:
            return np.frombuffer(self._read(0, self.shape[0]), dtype=self.dtype).reshape(self.shape)

    def _read(self, first: int, count: int) -> bytes:
        size = count * self._row_bytes
        try:
            if self._stream is None:
                self._stream = self._archive.open(self._info)
                self._stream.MAX_SEEK_READ = 1 << 20  # rows skipped are decompressed 1 MB at a time
            self._stream.seek(self._data_start + first * self._row_bytes)
            data = self._stream.read(size)
        except Exception as error:  # zlib, bz2, lzma and zipfile each raise their own errors
            self._stream = None
            raise CertifyError(f"{self.where}: cannot read input {first}: {type(error).__name__}: {error}") from None
        if len(data) != size:
            raise CertifyError(f"{self.where}: the file ends before input {first + len(data) // self._row_bytes}; "
                               f"it is truncated")
        return data


def _read_npy_header(handle, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from an .npy header, checked before any data is read."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = npy.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy.read_array_header_2_0(handle)
        else:
            raise ValueError(f"npy format version {version[0]}.{version[1]} is not supported")
    except Exception as error:  # numpy raises ValueError, SyntaxError, EOFError... for a bad header
        raise CertifyError(f"cannot read {where} as a numpy file: {error}") from None
    if dtype.hasobject:
        raise CertifyError(f"cannot read {where}: it holds Python objects (a pickled array); "
                           f"certify reads arrays of numbers only")
    if any(d < 0 for d in shape):
        raise CertifyError(f"cannot read {where}: it declares a negative shape {shape}")
    return tuple(shape), bool(fortran_order), dtype


def _check_declared_size(shape, dtype: np.dtype, held: int, where: str) -> int:
    """The array's size in bytes, refused when the file holds less than the header declares."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > held:
        raise CertifyError(
            f"cannot read {where}: it declares {_describe(shape)} values of type {dtype} "
            f"({_size(nbytes)}) but holds only {_size(held)}; the file is truncated or corrupt"
        )
    return nbytes


def _map(path: Path, offset: int, shape, fortran_order: bool, dtype: np.dtype) -> np.ndarray:
    if math.prod(shape) == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C")


def _open_npy(path: Path) -> _ArrayRows:
    where = str(path)
    with open(path, "rb") as handle:
        shape, fortran_order, dtype = _read_npy_header(handle, where)
        offset = handle.tell()
        held = os.fstat(handle.fileno()).st_size - offset
    _check_declared_size(shape, dtype, held, where)
    return _ArrayRows(_map(path, offset, shape, fortran_order, dtype))


def _open_member(path: Path, archive: zipfile.ZipFile, key: str) -> _ArrayRows | _StreamRows:
    """The array ``key`` of an .npz: memory-mapped when stored, streamed when compressed."""
    info = archive.getinfo(f"{key}.npy")
    where = f"{path} (array {key})"
    if info.flag_bits & 0x1:
        raise CertifyError(f"cannot read {where}: it is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as handle:
            handle.seek(info.header_offset)
            local = handle.read(zipfile.sizeFileHeader)
            if len(local) != zipfile.sizeFileHeader or local[:4] != zipfile.stringFileHeader:
                raise CertifyError(f"cannot read {where}: the zip file is corrupt")
            # the local header's own name and extra-field lengths (APPNOTE 4.3.7) end it
            name_length, extra_length = struct.unpack("<2H", local[26:30])
            start = info.header_offset + zipfile.sizeFileHeader + name_length + extra_length
            handle.seek(start)
            shape, fortran_order, dtype = _read_npy_header(handle, where)
            offset = handle.tell()
            file_size = os.fstat(handle.fileno()).st_size
        held = min(info.file_size - (offset - start), file_size - offset)
        _check_declared_size(shape, dtype, held, where)
        return _ArrayRows(_map(path, offset, shape, fortran_order, dtype))
    try:
        with archive.open(info) as stream:
            shape, fortran_order, dtype = _read_npy_header(stream, where)
            data_start = stream.tell()
    except CertifyError:
        raise
    except Exception as error:
        raise CertifyError(f"cannot read {where}: {type(error).__name__}: {error}") from None
    nbytes = _check_declared_size(shape, dtype, info.file_size - data_start, where)
    rows = _StreamRows(archive, info, data_start, shape, dtype, where)
    if fortran_order and len(shape) > 1 and nbytes:
        # Rows of a Fortran-ordered array are scattered through the stream: read it whole.
        _ensure_fits(nbytes, f"{where}, stored in Fortran order, must be read whole: it")
        return _ArrayRows(np.frombuffer(rows._read(0, shape[0]), dtype=dtype).reshape(shape, order="F"))
    return rows


def _read_labels(rows, count: int, where: str) -> np.ndarray:
    """Every label, checked (shape, type, size against memory, values) before and after reading."""
    shape, dtype = rows.shape, rows.dtype
    if len(shape) == 2 and shape[1] == 1:
        shape = shape[:1]
    if len(shape) != 1 or shape[0] != count:
        raise CertifyError(f"{where}: y has shape {rows.shape}; expected one label per input ({count})")
    if dtype.kind not in "iu":
        raise CertifyError(f"{where}: labels must be non-negative integers (class indices), not {dtype}")
    _ensure_fits(count * (dtype.itemsize + 8), f"{where}: reading the {count} labels")
    labels = rows.read_all().reshape(count)
    return _checked_labels(labels, where)


def _checked_labels(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.dtype.kind not in "iu":
        raise CertifyError(f"{where}: labels must be non-negative integers (class indices), not {labels.dtype}")
    bad = np.flatnonzero(labels < 0)
    if labels.dtype == np.uint64:
        bad = np.flatnonzero(labels > np.iinfo(np.int64).max)
    if len(bad):
        raise CertifyError(f"{where}: labels must be non-negative integers (class indices); "
                           f"label {int(bad[0])} is {labels[bad[0]]}")
    return labels.astype(np.int64)


# -- images ----------------------------------------------------------------------------------

#: Pillow modes read as they are; the others are converted as named, or refused.
_IMAGE_MODES = {"1": None, "L": None, "I": None, "F": None, "RGB": None,
                "LA": "L", "La": "L", "P": "RGB", "PA": "RGB", "RGBA": "RGB", "RGBa": "RGB", "RGBX": "RGB",
                "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


def _open_image(path: Path):
    """The image at ``path``, opened (its header read, its pixels not yet decoded)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            image = Image.open(path)
    except Image.DecompressionBombError:
        raise CertifyError(f"cannot read image {path}: it declares more pixels than Pillow's safety limit "
                           f"(a decompression bomb?)") from None
    except Image.UnidentifiedImageError:
        raise CertifyError(f"cannot read image {path}: not an image file Pillow can read") from None
    except OSError as error:
        raise CertifyError(f"cannot read image {path}: {error.strerror or error}") from None
    except Exception as error:  # Pillow's format plugins raise SyntaxError, ValueError... on broken headers
        raise CertifyError(f"cannot read image {path}: {type(error).__name__}: {error}") from None
    width, height = image.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        image.close()
        raise CertifyError(f"cannot read image {path}: it declares {width} x {height} pixels, more than "
                           f"Pillow's safety limit of {limit} (a decompression bomb?)")
    if image.mode.startswith("I;16"):
        image.close()
        raise CertifyError(f"{path} is a 16-bit image; convert it to 8 bits")
    if image.mode not in _IMAGE_MODES:
        image.close()
        raise CertifyError(f"cannot read image {path}: Pillow mode {image.mode} is not supported")
    if getattr(image, "is_animated", False):  # looks for a second frame only, not all of them
        image.close()
        raise CertifyError(f"{path} holds several frames (an animation or a multi-page file); "
                           f"certify reads one image per file")
    return image


def _image_shape(image) -> tuple[int, ...]:
    """(H, W) or (H, W, 3): the shape of the image's array once read."""
    width, height = image.size
    mode = _IMAGE_MODES[image.mode] or image.mode
    return (height, width, 3) if mode == "RGB" else (height, width)


def _read_image(path: Path, like: tuple[int, ...] | None = None, first: Path | None = None,
                any_size: bool = False) -> np.ndarray:
    """The pixels of one image. With ``like`` (the first image's shape) it must have the
    same size (unless ``any_size``) and channels, checked before its pixels are decoded."""
    image = _open_image(path)
    with image:
        shape = _image_shape(image)
        if like is not None:
            other = first or "the first image"
            if not any_size and shape[:2] != like[:2]:
                raise CertifyError(f"{path} is {shape[0]} x {shape[1]} pixels but {other} is {like[0]} x {like[1]}; "
                                   f"all images must have the same size (or pass --resize H W)")
            if shape[2:] != like[2:]:
                raise CertifyError(f"{path} has {_channels(shape)} but {other} has {_channels(like)}; all images "
                                   f"must have the same channels (certify does not convert them)")
        _ensure_fits(math.prod(shape) * 16, f"decoding image {path}")
        target = _IMAGE_MODES[image.mode]
        try:
            pixels = np.asarray(image.convert(target) if target else image)
        except Exception as error:  # Pillow's decoders raise OSError, SyntaxError, ValueError...
            raise CertifyError(f"cannot read image {path}: {error}") from None
    return pixels


def _channels(shape: tuple[int, ...]) -> str:
    return "3 channels (colour)" if len(shape) == 3 else "1 channel (grey)"


def _resized(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) images resized to ``size`` with anti-aliasing (deterministic)."""
    from skimage.transform import resize

    out = np.empty(batch.shape[:2] + tuple(size), dtype=np.float32)
    for k, image in enumerate(batch):
        out[k] = resize(image.transpose(1, 2, 0), size, order=1, anti_aliasing=True).transpose(2, 0, 1)
    return out


def check_resize(resize) -> tuple[int, int] | None:
    """--resize H W as a pair of positive integers (None: no resizing)."""
    if resize is None:
        return None
    try:
        height, width = (int(v) for v in resize)
    except (TypeError, ValueError):
        raise CertifyError(f"--resize needs two integers H W, got {resize!r}") from None
    if height < 1 or width < 1 or (height, width) != tuple(resize):
        raise CertifyError(f"--resize needs two positive integers H W, got {' '.join(map(str, resize))}")
    return height, width


# -- data sets ---------------------------------------------------------------------------------


class Dataset:
    """Inputs in certify's canonical form: float32 (C, H, W) or (D,) in [0, 1].

    ``items`` is an array (N, ...) or a list of image files; only the inputs asked for
    are read. With ``resize`` (H, W), images are resized in pixel space when read.
    """

    def __init__(self, items, labels: np.ndarray | None, source: str,
                 class_names: list[str] | None = None, prefer_channels_last: bool = False,
                 *, resize: Sequence[int] | None = None, origin: tuple[Path, tuple[str, ...]] | None = None):
        self.source = source
        self.class_names = class_names
        self.resize = check_resize(resize)
        #: the file the arrays come from and the keys read, which identify the data
        self._origin = origin
        if isinstance(items, (_ArrayRows, _StreamRows)):
            self._rows, self._paths = items, None
        elif isinstance(items, np.ndarray):
            self._rows, self._paths = _ArrayRows(items), None
        else:
            self._rows, self._paths = None, [Path(p) for p in items]
        if self._rows is not None:
            if len(self._rows.shape) < 2:
                raise CertifyError(f"{source}: expected an array of inputs (N, ...), got shape {self._rows.shape}")
            if self._rows.dtype.kind not in PIXEL_KINDS:
                raise CertifyError(f"{source}: cannot read values of type {self._rows.dtype}; expected uint8 or float")
            self._raw_shape = tuple(self._rows.shape[1:])
        else:
            with _open_image(self._paths[0]) as first:
                self._raw_shape = _image_shape(first)
            prefer_channels_last = True  # an image file is H x W (x C)
        shape, self._convert = canonical_shape(self._raw_shape, prefer_channels_last)
        if self.resize is not None:
            if len(shape) != 3:
                raise CertifyError(f"--resize applies to images; {source} holds vectors of {shape[0]} values")
            shape = (shape[0],) + self.resize
        self.shape = shape
        if labels is not None:
            if isinstance(labels, (_ArrayRows, _StreamRows)):
                labels = _read_labels(labels, len(self), source)
            else:
                labels = np.asarray(labels)
                if labels.ndim == 2 and labels.shape[1] == 1:
                    labels = labels[:, 0]
                if labels.ndim != 1 or len(labels) != len(self):
                    raise CertifyError(f"{source}: y has shape {labels.shape}; expected one label per input ({len(self)})")
                labels = _checked_labels(labels, source)
        self.labels = labels

    def __len__(self) -> int:
        return len(self._paths) if self._paths is not None else self._rows.shape[0]

    def label(self, index: int) -> int | None:
        return None if self.labels is None else int(self.labels[index])

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        """Inputs at ``indices`` in canonical form, read and checked now."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise CertifyError(f"{self.source}: input index out of range (it holds {len(self)} inputs)")
        stored = self._rows.dtype.itemsize if self._rows is not None else 1
        values = len(indices) * max(math.prod(self._raw_shape), math.prod(self.shape))
        _ensure_fits(values * (stored + 8), f"reading {len(indices)} inputs of {self.source}")
        if self._paths is not None:
            images = [self._image(int(i)) for i in indices]
            return np.stack(images) if images else np.empty((0,) + self.shape, np.float32)
        raw = self._rows.rows(indices)
        try:
            pixels = to_pixel_space(raw, self.source)
        except CertifyError:
            for index, row in zip(indices, raw):  # name the first input at fault
                to_pixel_space(row, f"{self.source}, input {index}")
            raise
        pixels = self._convert(pixels)
        if self.resize is not None:
            pixels = _resized(pixels, self.resize)
        return np.ascontiguousarray(pixels)

    def _image(self, index: int) -> np.ndarray:
        """Image file ``index`` in canonical form; its size is checked before it is decoded."""
        path, first = self._paths[index], self._paths[0]
        image = _read_image(path, self._raw_shape, first, any_size=self.resize is not None)
        pixels = self._convert(to_pixel_space(image, str(path))[None])
        if self.resize is not None:
            pixels = _resized(pixels, self.resize)
        return np.ascontiguousarray(pixels[0])

    def fingerprint(self) -> str:
        """A hash that tells data sets apart in results files.

        Files are hashed as stored (plus the arrays read from them), in-memory
        arrays as values; memory use stays bounded whatever the size.
        """
        digest = hashlib.sha256()
        if self._origin is not None:
            path, keys = self._origin
            digest.update(b"file\0" + "\0".join(keys).encode() + b"\0")
            _hash_file(digest, path)
        elif self._rows is not None:
            array = self._rows.array
            digest.update(f"array\0{array.dtype.str}\0{array.shape}\0".encode())
            step = max(1, (1 << 24) // max(1, array[:1].nbytes))
            for start in range(0, len(array), step):
                digest.update(np.ascontiguousarray(array[start:start + step]).tobytes())
        else:
            root = Path(self.source)
            digest.update(b"images\0")
            for path in self._paths:
                name = path.relative_to(root) if path != root and root in path.parents else Path(path.name)
                digest.update(os.fsencode(name) + b"\0")
                _hash_file(digest, path)
        if self.labels is not None:
            digest.update(b"labels\0" + self.labels.tobytes())
        return digest.hexdigest()


def _hash_file(digest, path: Path) -> None:
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as error:
        raise CertifyError(f"cannot read {path}: {error.strerror or error}") from None


def _load_arrays(path: Path, split: str | None, resize, class_names, prefer_channels_last) -> Dataset:
    if path.suffix.lower() == ".npy":
        return Dataset(_open_npy(path), None, str(path), class_names, prefer_channels_last,
                       resize=resize, origin=(path, ("npy",)))
    try:
        archive = zipfile.ZipFile(path)
        members = archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as error:
        raise CertifyError(f"cannot read {path} as a numpy file: {error}") from None
    keys = {name[:-4] for name in members if name.endswith(".npy")}
    candidates = [(f"x_{split}", f"y_{split}")] if split else [("x", "y"), ("x_test", "y_test")]
    for x_key, y_key in candidates:
        if x_key in keys:
            x = _open_member(path, archive, x_key)
            y = _open_member(path, archive, y_key) if y_key in keys else None
            read = (x_key, y_key) if y is not None else (x_key,)
            if not any(isinstance(rows, _StreamRows) for rows in (x, y)):
                archive.close()  # memory-mapped members need no archive
            return Dataset(x, y, str(path), class_names, prefer_channels_last, resize=resize, origin=(path, read))
    archive.close()
    wanted = f"x_{split}" if split else "x (or x_test)"
    raise CertifyError(f"{path} has no array named {wanted}; it holds: {', '.join(sorted(keys))}")


def load_data(path: str | Path, *, split: str | None = None, class_names: list[str] | None = None,
              prefer_channels_last: bool = False, resize: Sequence[int] | None = None,
              folders_name_classes: bool = False) -> Dataset:
    """Open ``path``: an .npz (x, y; or x_test, y_test), an .npy, an image folder or one image.

    In a folder, sub-folders are classes: named after the model's class names when
    it records them, or class numbers, else numbered in sorted order (with a warning:
    that order is a guess, unless ``folders_name_classes`` says the folders define the
    classes, as in training). A lone sub-folder that is neither gives unlabeled images.
    ``resize`` (H, W) resizes images when they are read.
    """
    path = Path(path)
    if not path.exists():
        raise CertifyError(f"data not found: {path}")
    if path.is_dir():
        try:
            return _load_folder(path, class_names, resize, folders_name_classes)
        except OSError as error:
            raise CertifyError(f"cannot read {error.filename or path}: {error.strerror or error}") from None
    if path.suffix.lower() in (".npz", ".npy"):
        try:
            return _load_arrays(path, split, resize, class_names, prefer_channels_last)
        except OSError as error:
            raise CertifyError(f"cannot read {path}: {error.strerror or error}") from None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return Dataset([path], None, str(path), class_names, resize=resize)
    raise CertifyError(f"cannot read {path}: give an .npz or .npy file, a folder of images or an image file")


def _load_folder(folder: Path, class_names: list[str] | None, resize, folders_name_classes: bool = False) -> Dataset:
    # Hidden entries are tool litter (.ipynb_checkpoints, macOS ._ files), not classes or images.
    def images_in(directory: Path) -> list[Path]:
        return sorted(p for p in directory.iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))

    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        paths = images_in(folder)
        if not paths:
            raise CertifyError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Dataset(paths, None, str(folder), class_names, resize=resize)
    names = [p.name for p in subfolders]
    paths, labels = [], []
    for sub in subfolders:
        found = images_in(sub)
        paths += found
        labels += [sub.name] * len(found)
    if not paths:
        raise CertifyError(f"the class folders in {folder} hold no images")
    if class_names and set(names) <= set(class_names):
        index_of = {name: class_names.index(name) for name in names}
    elif all(_is_class_number(name) for name in names):
        index_of = {name: int(name) for name in names}
    elif len(names) == 1:
        # One folder whose name says nothing: "class 0 of 1" would make every prediction of
        # class 0 correct. Unlabeled is the honest reading.
        warnings.warn(
            f"{folder} holds one class folder, {_short_name(names[0])}, which is {_not_a_class(class_names)}: its images "
            f"are read as unlabeled; name the folder after its class to have them labeled")
        return Dataset(paths, None, str(folder), class_names, resize=resize)
    else:
        index_of = {name: i for i, name in enumerate(names)}
        if folders_name_classes:
            class_names = class_names or names
        else:
            order = ", ".join(f"{_short_name(name)} = {i}" for i, name in enumerate(names[:3]))
            warnings.warn(
                f"the labels of {folder} come from its class folders in sorted order ({order}"
                f"{', ...' if len(names) > 3 else ''}), as the folders are {_not_a_class(class_names, many=True)}; "
                f"if the model orders its classes otherwise, accuracies are wrong (name the folders 0, 1, ...)")
    return Dataset(paths, np.asarray([index_of[name] for name in labels], dtype=np.int64), str(folder), class_names,
                   resize=resize)


def _is_class_number(name: str) -> bool:
    """A folder name read as a class index: ASCII digits, not absurdly many."""
    return name.isascii() and name.isdigit() and len(name) <= 9


def _short_name(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:37] + "...")


def _not_a_class(class_names: list[str] | None, many: bool = False) -> str:
    numbers = "class numbers" if many else "a class number"
    if class_names:
        return f"neither among the model's class names ({', '.join(map(_short_name, class_names[:3]))}" \
               f"{', ...' if len(class_names) > 3 else ''}) nor {numbers}"
    return f"not {numbers} and the model records no class names"
