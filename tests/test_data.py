"""Reading inputs: npz/npy arrays, value ranges, labels, layouts, image folders and files,
hostile and huge files, and resizing."""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

from certifier import CertifyError
from certifier import data as data_module
from certifier.cli import cli
from certifier.data import load_data, to_pixel_space
from certifier.space import resolve_layout

from onnx_models import linear_model, save


def imsave(path, image) -> None:
    from skimage import io

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        io.imsave(str(path), image, check_contrast=False)


def everything(dataset) -> np.ndarray:
    return dataset.batch(range(len(dataset)))


@pytest.fixture
def rng():
    return np.random.default_rng(5)


# -- numpy files -----------------------------------------------------------------------


def test_npz_with_x_and_y(tmp_path, rng):
    x = rng.integers(0, 256, size=(5, 6, 7), dtype=np.uint8)
    y = np.array([3, 1, 4, 1, 5])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_data(tmp_path / "d.npz")
    assert len(data) == 5
    assert data.shape == (1, 6, 7)
    assert data.labels.dtype == np.int64 and list(data.labels) == [3, 1, 4, 1, 5]
    assert [data.label(i) for i in range(5)] == [3, 1, 4, 1, 5]
    batch = everything(data)
    assert batch.dtype == np.float32 and batch.shape == (5, 1, 6, 7)
    np.testing.assert_array_equal(batch[:, 0], x.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(data.batch([4, 0]), batch[[4, 0]])


def test_npz_with_only_test_arrays(tmp_path, rng):
    x = rng.random((4, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_test=x, y_test=np.array([0, 1, 0, 1]), x_train=np.zeros((9, 3)), y_train=np.zeros(9, int))
    data = load_data(tmp_path / "d.npz")
    assert len(data) == 4 and list(data.labels) == [0, 1, 0, 1]
    np.testing.assert_array_equal(everything(data), x)


def test_npz_without_labels(tmp_path, rng):
    np.savez(tmp_path / "d.npz", x_test=rng.random((3, 4)))
    data = load_data(tmp_path / "d.npz")
    assert data.labels is None and data.label(0) is None


def test_split_train(tmp_path, rng):
    np.savez(tmp_path / "d.npz", x_train=rng.random((6, 3)), y_train=np.arange(6), x_test=rng.random((2, 3)), y_test=[0, 1])
    data = load_data(tmp_path / "d.npz", split="train")
    assert len(data) == 6 and list(data.labels) == list(range(6))
    with pytest.raises(CertifyError, match=r"no array named x_valid.*x_test, x_train, y_test, y_train"):
        load_data(tmp_path / "d.npz", split="valid")


def test_npz_without_inputs(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 3)))
    with pytest.raises(CertifyError, match=r"no array named x \(or x_test\); it holds: images"):
        load_data(tmp_path / "d.npz")


def test_npy(tmp_path, rng):
    x = rng.random((3, 2, 2)).astype(np.float32)
    np.save(tmp_path / "d.npy", x)
    data = load_data(tmp_path / "d.npy")
    assert len(data) == 3 and data.labels is None and data.shape == (1, 2, 2)
    np.testing.assert_array_equal(everything(data)[:, 0], x)


def test_upper_case_suffix(tmp_path, rng):
    np.save(tmp_path / "d.npy", rng.random((3, 4)))
    (tmp_path / "d.npy").rename(tmp_path / "D.NPY")
    assert len(load_data(tmp_path / "D.NPY")) == 3


@pytest.mark.parametrize("name, content", [
    ("d.npz", b"not a zip file at all"),
    ("d.npy", b"\x93NUMPY garbage"),
])
def test_corrupt_numpy_files(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CertifyError, match="cannot read"):
        load_data(tmp_path / name)


def test_pickled_arrays_are_not_loaded(tmp_path):
    np.save(tmp_path / "d.npy", np.array([{"evil": 1}, {"evil": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(CertifyError, match="cannot read"):
        load_data(tmp_path / "d.npy")


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(CertifyError, match="data not found"):
        load_data(tmp_path / "nothing.npz")
    (tmp_path / "d.csv").write_text("1,2,3\n")
    with pytest.raises(CertifyError, match=r"\.npz or \.npy file, a folder of images or an image"):
        load_data(tmp_path / "d.csv")


def test_a_single_vector_is_not_a_data_set(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(CertifyError, match=r"expected an array of inputs \(N, ...\)"):
        load_data(tmp_path / "d.npy")


# -- value ranges ------------------------------------------------------------------------


def test_uint8_is_divided_by_255():
    values = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(to_pixel_space(values, "x"), np.array([[0, 1, 128, 255]], np.float32) / 255)


def test_floats_in_unit_range_are_kept():
    values = np.array([[0.0, 0.123456789, 1.0]], dtype=np.float64)
    out = to_pixel_space(values, "x")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, values.astype(np.float32))


def test_floats_that_look_like_bytes_are_refused_with_a_hint():
    with pytest.raises(CertifyError) as raised:
        to_pixel_space(np.array([[0.0, 17.0, 254.0]]), "data.npz")
    message = str(raised.value)
    assert "data.npz" in message and "0..254" in message and "outside [0, 1]" in message
    assert "0..255" in message and ("uint8" in message or "divide by 255" in message)


def test_normalized_floats_are_refused_with_a_hint():
    with pytest.raises(CertifyError) as raised:
        to_pixel_space(np.array([[-2.1, 0.0, 2.6]]), "data.npz")
    message = str(raised.value)
    assert "-2.1..2.6" in message and "outside [0, 1]" in message
    assert "--mean" in message and "--std" in message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_infinity_are_refused(bad):
    with pytest.raises(CertifyError, match="NaN or infinite"):
        to_pixel_space(np.array([[0.5, bad]]), "x")


def test_integers_are_bytes():
    np.testing.assert_array_equal(to_pixel_space(np.array([[0, 51, 255]], dtype=np.int64), "x"),
                                  np.array([[0, 0.2, 1]], dtype=np.float32))
    for bad in ([[0, 256]], [[-1, 3]]):
        with pytest.raises(CertifyError, match="expected 0..255"):
            to_pixel_space(np.array(bad, dtype=np.int32), "x")


def test_booleans_are_black_and_white():
    np.testing.assert_array_equal(to_pixel_space(np.array([[False, True]]), "x"), np.array([[0.0, 1.0]], np.float32))


def test_other_types_are_refused():
    with pytest.raises(CertifyError, match="cannot read values of type"):
        to_pixel_space(np.array([[1 + 1j]]), "x")


def test_range_errors_name_the_input(tmp_path):
    x = np.full((3, 4), 0.5)
    x[1, 2] = 200.0
    np.savez(tmp_path / "d.npz", x=x)
    data = load_data(tmp_path / "d.npz")  # read lazily: only the inputs asked for are checked
    data.batch([0, 2])
    for indices in ([1], [0, 1, 2], [2, 1]):
        with pytest.raises(CertifyError, match=r"d.npz, input 1: pixel values range .*200.*0..255"):
            data.batch(indices)


def test_nan_names_the_input(tmp_path):
    x = np.zeros((4, 3), np.float32)
    x[3, 0] = np.nan
    np.save(tmp_path / "d.npy", x)
    data = load_data(tmp_path / "d.npy")
    data.batch([0, 1, 2])
    with pytest.raises(CertifyError, match=r"d.npy, input 3: the data contains NaN"):
        data.batch([2, 3])


# -- labels --------------------------------------------------------------------------------


@pytest.mark.parametrize("labels, message", [
    (np.array([0.0, 1.0, 2.0]), "non-negative integers"),
    (np.array([0, -1, 2]), "non-negative integers"),
    (np.array([0, 1]), r"y has shape \(2,\); expected one label per input \(3\)"),
    (np.array([[0, 1, 2]]), r"y has shape \(1, 3\)"),
    (np.array(["a", "b", "c"]), "non-negative integers"),
])
def test_bad_labels(tmp_path, labels, message):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4), np.uint8), y=labels)
    with pytest.raises(CertifyError, match=message):
        load_data(tmp_path / "d.npz")


def test_column_of_labels_and_small_integer_types(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4), np.uint8), y=np.array([[2], [0], [1]], dtype=np.uint8))
    data = load_data(tmp_path / "d.npz")
    assert data.labels.dtype == np.int64 and list(data.labels) == [2, 0, 1]


# -- layouts -------------------------------------------------------------------------------


def dataset_of(tmp_path, x, **options):
    np.save(tmp_path / "d.npy", x)
    return load_data(tmp_path / "d.npy", **options)


def test_hwc_becomes_chw(tmp_path, rng):
    x = rng.random((2, 8, 6, 3)).astype(np.float32)
    data = dataset_of(tmp_path, x)
    assert data.shape == (3, 8, 6)
    np.testing.assert_array_equal(everything(data), x.transpose(0, 3, 1, 2))
    assert everything(data).flags.c_contiguous


def test_chw_stays(tmp_path, rng):
    x = rng.random((2, 3, 8, 6)).astype(np.float32)
    data = dataset_of(tmp_path, x)
    assert data.shape == (3, 8, 6)
    np.testing.assert_array_equal(everything(data), x)


@pytest.mark.parametrize("shape", [(2, 8, 6), (2, 8, 6, 1), (2, 1, 8, 6)])
def test_grey_images_get_one_channel(tmp_path, rng, shape):
    x = rng.random(shape).astype(np.float32)
    data = dataset_of(tmp_path, x)
    assert data.shape == (1, 8, 6)
    np.testing.assert_array_equal(everything(data).reshape(2, -1), x.reshape(2, -1))


def test_vectors_stay_flat(tmp_path, rng):
    x = rng.random((4, 10)).astype(np.float32)
    data = dataset_of(tmp_path, x)
    assert data.shape == (10,)
    np.testing.assert_array_equal(everything(data), x)


def test_ambiguous_channels_follow_the_model(tmp_path, rng):
    x = rng.random((2, 3, 5, 3)).astype(np.float32)  # C x H x W or H x W x C
    assert dataset_of(tmp_path, x).shape == (3, 5, 3)
    channels_last = dataset_of(tmp_path, x, prefer_channels_last=True)
    assert channels_last.shape == (3, 3, 5)
    np.testing.assert_array_equal(everything(channels_last), x.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("shape", [(2, 2, 5, 5), (2, 5, 5, 2), (2, 1, 3, 5, 5)])
def test_unreadable_item_shapes(tmp_path, shape):
    with pytest.raises(CertifyError, match="cannot read data items of shape"):
        dataset_of(tmp_path, np.zeros(shape, np.float32))


# -- images ----------------------------------------------------------------------------------


def grey(value: int, size=(6, 5)) -> np.ndarray:
    image = np.full(size, value, dtype=np.uint8)
    image[0, 0] = 255 - value  # not a constant image
    return image


def test_folder_with_digit_class_names(tmp_path):
    imsave(tmp_path / "7" / "a.png", grey(10))
    imsave(tmp_path / "3" / "b.png", grey(20))
    imsave(tmp_path / "3" / "c.png", grey(30))
    data = load_data(tmp_path)
    assert len(data) == 3 and data.shape == (1, 6, 5)
    assert list(data.labels) == [3, 3, 7]  # folders in sorted order, images sorted inside
    batch = everything(data)
    np.testing.assert_array_equal(batch[:, 0, 1, 1] * 255, np.array([20, 30, 10], np.float32))
    np.testing.assert_array_equal(batch[2, 0], grey(10).astype(np.float32) / 255)


def test_folder_labels_follow_the_model_class_names(tmp_path):
    imsave(tmp_path / "cat" / "1.png", grey(1))
    imsave(tmp_path / "bird" / "2.png", grey(2))
    data = load_data(tmp_path, class_names=["cat", "dog", "bird"])
    assert list(data.labels) == [2, 0]  # bird, then cat


def test_folder_labels_in_sorted_order_otherwise(tmp_path):
    imsave(tmp_path / "zebra" / "1.png", grey(1))
    imsave(tmp_path / "ant" / "2.png", grey(2))
    imsave(tmp_path / "moth" / "3.png", grey(3))
    with pytest.warns(UserWarning, match="sorted order"):
        assert list(load_data(tmp_path).labels) == [0, 1, 2]
    # class names that do not cover the folders are ignored
    with pytest.warns(UserWarning, match="neither among the model's class names"):
        assert list(load_data(tmp_path, class_names=["ant", "zebra"]).labels) == [0, 1, 2]


def test_hidden_folders_and_files_are_not_classes(tmp_path):
    imsave(tmp_path / "cat" / "1.png", grey(1))
    imsave(tmp_path / "dog" / "2.png", grey(2))
    imsave(tmp_path / ".ipynb_checkpoints" / "3.png", grey(3))
    (tmp_path / "cat" / "._1.png").write_bytes(b"macOS resource fork, not an image")
    with pytest.warns(UserWarning, match="sorted order \\('cat' = 0, 'dog' = 1\\)"):
        data = load_data(tmp_path)
    assert len(data) == 2 and list(data.labels) == [0, 1]


def test_folder_of_colour_images(tmp_path, rng):
    image = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    imsave(tmp_path / "0" / "a.png", image)
    rgba = np.concatenate([image, np.full((6, 5, 1), 128, np.uint8)], axis=2)
    imsave(tmp_path / "1" / "b.png", rgba)
    data = load_data(tmp_path)
    assert data.shape == (3, 6, 5)
    expected = image.transpose(2, 0, 1).astype(np.float32) / 255
    np.testing.assert_array_equal(everything(data), np.stack([expected, expected]))  # alpha dropped


def test_folder_without_class_folders(tmp_path):
    imsave(tmp_path / "b.png", grey(2))
    imsave(tmp_path / "a.png", grey(1))
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_data(tmp_path)
    assert len(data) == 2 and data.labels is None
    assert everything(data)[0, 0, 1, 1] * 255 == 1


def test_empty_folders(tmp_path):
    with pytest.raises(CertifyError, match="holds no images"):
        load_data(tmp_path)
    (tmp_path / "cats").mkdir()
    with pytest.raises(CertifyError, match="class folders .* hold no images"):
        load_data(tmp_path)


def test_single_image_file(tmp_path):
    imsave(tmp_path / "one.png", grey(40))
    data = load_data(tmp_path / "one.png")
    assert len(data) == 1 and data.labels is None and data.shape == (1, 6, 5)
    np.testing.assert_array_equal(everything(data)[0, 0], grey(40).astype(np.float32) / 255)


def test_black_and_white_png_is_read_as_0_and_1(tmp_path):
    from PIL import Image

    image = np.zeros((4, 4), dtype=np.uint8)
    image[:2] = 255
    Image.fromarray(image).convert("1").save(tmp_path / "bw.png")
    np.testing.assert_array_equal(everything(load_data(tmp_path / "bw.png"))[0, 0], image / 255.0)


def test_images_of_different_sizes(tmp_path):
    imsave(tmp_path / "0" / "a.png", grey(1, (6, 5)))
    imsave(tmp_path / "0" / "b.png", grey(2, (7, 5)))
    data = load_data(tmp_path)
    data.batch([0])
    with pytest.raises(CertifyError, match=r"b.png is 7 x 5 pixels but .*a.png is 6 x 5.*same size.*--resize"):
        data.batch([0, 1])


def test_unreadable_and_16_bit_images(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(CertifyError, match="cannot read image"):
        load_data(tmp_path / "broken.png")
    imsave(tmp_path / "deep.png", np.full((4, 4), 1000, dtype=np.uint16))
    with pytest.raises(CertifyError, match="16-bit"):
        load_data(tmp_path / "deep.png")


# -- fingerprints ----------------------------------------------------------------------------


def test_fingerprint_changes_with_pixels_and_labels(tmp_path):
    x = np.zeros((3, 4), np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=[0, 1, 2])
    np.savez(tmp_path / "b.npz", x=x, y=[0, 1, 2])
    np.savez(tmp_path / "c.npz", x=x, y=[0, 1, 1])
    x2 = x.copy()
    x2[1, 2] = 1
    np.savez(tmp_path / "d.npz", x=x2, y=[0, 1, 2])
    prints = [load_data(tmp_path / f"{n}.npz").fingerprint() for n in "abcd"]
    assert prints[0] == prints[1]
    assert len({prints[0], prints[2], prints[3]}) == 3


def test_fingerprint_of_an_image_folder_sees_pixel_changes(tmp_path):
    imsave(tmp_path / "0" / "a.png", grey(1))
    before = load_data(tmp_path).fingerprint()
    assert load_data(tmp_path).fingerprint() == before
    imsave(tmp_path / "0" / "a.png", grey(2))
    assert load_data(tmp_path).fingerprint() != before


def test_fingerprint_tells_arrays_of_other_shapes_and_types_apart():
    from certifier.data import Dataset

    values = np.arange(24, dtype=np.uint8)
    prints = {Dataset(values.reshape(shape), None, "array").fingerprint() for shape in [(2, 12), (3, 8), (4, 6)]}
    prints.add(Dataset(values.astype(np.int8).reshape(2, 12), None, "array").fingerprint())
    assert len(prints) == 4
    assert Dataset(values.reshape(2, 12), None, "array").fingerprint() in prints


def test_fingerprint_of_a_file_is_its_bytes_and_the_arrays_read(tmp_path, rng):
    x = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    np.savez_compressed(tmp_path / "a.npz", x_test=x, y_test=[0, 1, 0, 1], x_train=x, y_train=[0, 1, 0, 1])
    np.savez(tmp_path / "stored.npz", x_test=x, y_test=[0, 1, 0, 1], x_train=x, y_train=[0, 1, 0, 1])
    test = load_data(tmp_path / "a.npz").fingerprint()
    assert load_data(tmp_path / "a.npz", split="test").fingerprint() == test
    assert load_data(tmp_path / "a.npz", split="train").fingerprint() != test  # same values, another array
    # Same values stored another way: told apart (a rerun cannot resume), never the reverse.
    assert load_data(tmp_path / "stored.npz").fingerprint() != test
    changed = x.copy()
    changed[3, 2] ^= 1
    np.savez_compressed(tmp_path / "b.npz", x_test=changed, y_test=[0, 1, 0, 1], x_train=x, y_train=[0, 1, 0, 1])
    assert load_data(tmp_path / "b.npz").fingerprint() != test


def test_fingerprint_of_a_folder_with_names_that_are_not_utf8(tmp_path):
    imsave(tmp_path / "a.png", grey(1))
    (tmp_path / "a.png").rename(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png"))
    data = load_data(tmp_path)
    assert len(data) == 1 and len(data.fingerprint()) == 64


# -- hostile and huge files: nothing is allocated before it is checked ----------------------------


def write_npy_header(handle, shape, dtype=np.uint8, fortran_order=False) -> None:
    from numpy.lib import format as npy

    header = {"descr": npy.dtype_to_descr(np.dtype(dtype)), "fortran_order": fortran_order, "shape": tuple(shape)}
    npy.write_array_header_1_0(handle, header)


def write_zeros(handle, nbytes: int) -> None:
    chunk = bytes(1 << 22)
    for start in range(0, nbytes, len(chunk)):
        handle.write(chunk[: nbytes - start])


def zip_bomb(path, rows: int, row_shape=(64, 64), labels: bool = True) -> None:
    """An .npz whose x (uint8 zeros) expands about 200 times; with labels 0, 1, 2, ..."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            write_npy_header(member, (rows,) + row_shape)
            write_zeros(member, rows * int(np.prod(row_shape)))
        if labels:
            with archive.open("y.npy", "w") as member:
                np.save(member, np.arange(rows) % 10)


def peak_memory(action) -> int:
    """The most memory Python and numpy held at once while ``action`` ran (bytes)."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_zip_bomb_is_read_only_as_far_as_the_inputs_asked_for(tmp_path):
    rows = 32768  # 128 MB of pixels (512 MB as float32) in a file of about 600 kB
    zip_bomb(tmp_path / "bomb.npz", rows)
    assert (tmp_path / "bomb.npz").stat().st_size < 2_000_000

    def certify_three():
        data = load_data(tmp_path / "bomb.npz")
        assert len(data) == rows and data.shape == (1, 64, 64)
        for index in (0, 1, 2, rows - 1):  # the engine reads one input at a time, in order
            assert data.batch([index]).shape == (1, 1, 64, 64)
        assert data.label(rows - 1) == (rows - 1) % 10
        data.fingerprint()

    assert peak_memory(certify_three) < 16_000_000


def test_rows_of_a_compressed_member_in_any_order(tmp_path, rng):
    x = rng.integers(0, 256, size=(50, 3, 4), dtype=np.uint8)
    np.savez_compressed(tmp_path / "d.npz", x=x)
    data = load_data(tmp_path / "d.npz")
    for indices in ([7], [3, 4, 5, 9], [9, 3, 3, 0], [49, 0], list(range(50))):
        np.testing.assert_array_equal(data.batch(indices)[:, 0], x[indices].astype(np.float32) / 255)


def test_an_npy_is_memory_mapped(tmp_path):
    path = tmp_path / "big.npy"
    with open(path, "wb") as handle:
        write_npy_header(handle, (16384, 128, 128))
        handle.truncate(handle.tell() + 16384 * 128 * 128)  # 256 MB of zeros, sparse on disk

    def read_three():
        data = load_data(path)
        assert data.batch([0, 1, 16383]).shape == (3, 1, 128, 128)

    assert peak_memory(read_three) < 8_000_000


def test_a_stored_npz_member_is_memory_mapped(tmp_path, rng):
    x = rng.integers(0, 256, size=(4000, 64, 64), dtype=np.uint8)  # 16 MB
    np.savez(tmp_path / "d.npz", y=np.arange(4000), x=x)
    holder = {}

    def read_two():
        holder["data"] = data = load_data(tmp_path / "d.npz")
        holder["batch"] = data.batch([3999, 5])

    assert peak_memory(read_two) < 2_000_000
    np.testing.assert_array_equal(holder["batch"][:, 0], x[[3999, 5]] / np.float32(255))
    assert holder["data"].label(3999) == 3999


def test_reading_more_than_memory_allows_is_refused(tmp_path, monkeypatch):
    zip_bomb(tmp_path / "bomb.npz", 4096)
    data = load_data(tmp_path / "bomb.npz")
    monkeypatch.setattr(data_module, "available_memory", lambda: 20_000_000)
    data.batch([0, 1, 2])
    with pytest.raises(CertifyError, match=r"reading 4096 inputs of .*bomb.npz would take .* MB of memory, "
                                           r"more than is available \(20 MB free\)"):
        data.batch(range(4096))


@pytest.mark.parametrize("shape", [(10**12, 28, 28), (2**62, 2**62, 2**62), (3, 10**15)])
def test_an_npy_declaring_a_huge_shape_is_refused_before_allocating(tmp_path, shape):
    with open(tmp_path / "huge.npy", "wb") as handle:
        write_npy_header(handle, shape, np.float32)
        handle.write(bytes(64))
    with pytest.raises(CertifyError, match=r"huge.npy: it declares .* values of type float32 \(.*\) but holds only "
                                           r"64 bytes; the file is truncated or corrupt"):
        load_data(tmp_path / "huge.npy")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_an_npz_member_declaring_more_than_it_holds(tmp_path, compression):
    with zipfile.ZipFile(tmp_path / "d.npz", "w", compression=compression) as archive:
        with archive.open("x.npy", "w") as member:
            write_npy_header(member, (10**9, 28, 28))
            member.write(bytes(1000))
    with pytest.raises(CertifyError, match=r"array x\): it declares 1000000000 x 28 x 28 values .* \(784 GB\) but holds only 1 kB"):
        load_data(tmp_path / "d.npz")


def test_a_negative_shape_is_refused(tmp_path):
    with open(tmp_path / "d.npy", "wb") as handle:
        handle.write(b"\x93NUMPY\x01\x00")
        header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (-3, 4), }"
        header += b" " * (118 - len(header)) + b"\n"
        handle.write(len(header).to_bytes(2, "little") + header + bytes(12))
    with pytest.raises(CertifyError, match="cannot read .*d.npy"):
        load_data(tmp_path / "d.npy")


def test_a_truncated_npz(tmp_path, rng):
    np.savez_compressed(tmp_path / "d.npz", x=rng.integers(0, 256, size=(100, 8, 8), dtype=np.uint8))
    content = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(content[: len(content) // 2])
    with pytest.raises(CertifyError, match="cannot read .*d.npz as a numpy file"):
        load_data(tmp_path / "d.npz")


def test_corrupt_compressed_data_names_the_input(tmp_path, rng):
    np.savez_compressed(tmp_path / "d.npz", x=rng.integers(0, 256, size=(200, 16, 16), dtype=np.uint8))
    content = bytearray((tmp_path / "d.npz").read_bytes())
    content[len(content) // 2: len(content) // 2 + 64] = b"\xff" * 64  # the deflate stream, not the directory
    (tmp_path / "d.npz").write_bytes(bytes(content))
    data = load_data(tmp_path / "d.npz")
    data.batch([0])
    with pytest.raises(CertifyError, match=r"d.npz \(array x\): cannot read input \d+: \w+"):
        data.batch([199])


def test_object_arrays_in_an_npz_are_not_unpickled(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"evil": 1}, None], dtype=object))
    with pytest.raises(CertifyError, match=r"array x\): it holds Python objects"):
        load_data(tmp_path / "d.npz")


@pytest.mark.parametrize("values", [np.array([["a", "b"]]), np.array([[1 + 1j]]),
                                    np.zeros((2, 2), dtype=[("r", "u1"), ("g", "u1")])])
def test_values_that_are_not_pixels_are_refused_on_opening(tmp_path, values):
    np.savez(tmp_path / "d.npz", x=values)
    with pytest.raises(CertifyError, match="cannot read values of type"):
        load_data(tmp_path / "d.npz")


# -- hostile labels ------------------------------------------------------------------------------


def test_huge_labels_are_refused_before_reading(tmp_path, monkeypatch):
    rows = 1 << 24
    with zipfile.ZipFile(tmp_path / "d.npz", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name in ("x", "y"):
            with archive.open(f"{name}.npy", "w") as member:
                write_npy_header(member, (rows, 1) if name == "x" else (rows,))
                write_zeros(member, rows)
    monkeypatch.setattr(data_module, "available_memory", lambda: 100_000_000)
    with pytest.raises(CertifyError, match=r"reading the 16777216 labels would take 151 MB of memory"):
        peak = peak_memory(lambda: load_data(tmp_path / "d.npz"))
    monkeypatch.undo()
    peak = peak_memory(lambda: load_data(tmp_path / "d.npz"))
    assert peak > 16_000_000  # read when they fit


def test_labels_declaring_another_length_are_refused_unread(tmp_path):
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        with archive.open("x.npy", "w") as member:
            np.save(member, np.zeros((3, 4), np.uint8))
        with archive.open("y.npy", "w") as member:
            write_npy_header(member, (10**9,), np.int64)
            write_zeros(member, 8 * 10**9 if False else 0)
    with pytest.raises(CertifyError, match="y.*declares 1000000000 values"):
        load_data(tmp_path / "d.npz")


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 2**63 + 5, 1], dtype=np.uint64), r"label 1 is 9223372036854775813"),
    (np.array([0, 1, -7]), r"label 2 is -7"),
    (np.array([True, False, True]), "non-negative integers .*not bool"),
])
def test_labels_out_of_range_name_the_label(tmp_path, labels, message):
    np.savez_compressed(tmp_path / "d.npz", x=np.zeros((3, 4), np.uint8), y=labels)
    with pytest.raises(CertifyError, match=message):
        load_data(tmp_path / "d.npz")
    from certifier.data import Dataset

    with pytest.raises(CertifyError, match=message):
        Dataset(np.zeros((3, 4), np.uint8), labels, "array")


# -- hostile images --------------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A grey PNG that declares width x height pixels and holds almost none."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [100_000, 10_000])  # above twice Pillow's limit, and between once and twice
def test_an_image_bomb_is_refused_in_one_line(tmp_path, side):
    (tmp_path / "bomb.png").write_bytes(png_header(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        with pytest.raises(CertifyError, match=r"cannot read image .*bomb.png: .*safety limit .*decompression bomb"):
            load_data(tmp_path / "bomb.png")


def test_a_huge_image_among_small_ones_is_refused_before_decoding(tmp_path):
    imsave(tmp_path / "a.png", grey(1))
    (tmp_path / "b.png").write_bytes(png_header(9000, 9000))
    data = load_data(tmp_path)
    with pytest.raises(CertifyError, match=r"b.png is 9000 x 9000 pixels but .*a.png is 6 x 5"):
        data.batch([1])


def test_files_that_are_not_images(tmp_path):
    (tmp_path / "text.png").write_text("a note, not a picture\n")
    with pytest.raises(CertifyError, match=r"cannot read image .*text.png: not an image file"):
        load_data(tmp_path / "text.png")
    imsave(tmp_path / "folder" / "a.png", grey(1))
    (tmp_path / "folder" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    data = load_data(tmp_path / "folder")
    data.batch([0])
    with pytest.raises(CertifyError, match=r"cannot read image .*b.png"):
        data.batch([1])


def test_a_truncated_image(tmp_path, rng):
    imsave(tmp_path / "full.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    content = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(content[: len(content) // 2])
    data = load_data(tmp_path / "cut.png")  # its header is whole
    with pytest.raises(CertifyError, match=r"cannot read image .*cut.png: .*truncated"):
        data.batch([0])


def test_an_animation_is_refused(tmp_path):
    from PIL import Image

    frames = [Image.fromarray(grey(v)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(CertifyError, match="anim.gif holds several frames"):
        load_data(tmp_path / "anim.gif")


def test_a_one_pixel_image(tmp_path):
    imsave(tmp_path / "dot.png", np.array([[77]], dtype=np.uint8))
    data = load_data(tmp_path / "dot.png")
    assert data.shape == (1, 1, 1)
    np.testing.assert_array_equal(everything(data), np.full((1, 1, 1, 1), 77 / 255, np.float32))
    with pytest.raises(CertifyError, match="the model takes 28 x 28 images but the data's are 1 x 1.*--resize 28 28"):
        resolve_layout((1, 28, 28), data.shape)
    resized = load_data(tmp_path / "dot.png", resize=(4, 4))
    np.testing.assert_allclose(everything(resized), np.full((1, 1, 4, 4), 77 / 255), atol=1e-6)


def test_colour_images_of_a_few_rows_are_read_as_height_width_channels(tmp_path, rng):
    image = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)  # would read as 3 x 4 x 3 C, H, W
    imsave(tmp_path / "strip.png", image)
    data = load_data(tmp_path / "strip.png")
    assert data.shape == (3, 3, 4)
    np.testing.assert_array_equal(everything(data)[0], image.transpose(2, 0, 1) / np.float32(255))


def test_cmyk_and_palette_images_become_rgb(tmp_path, rng):
    from PIL import Image

    rgb = Image.fromarray(rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8))
    rgb.convert("CMYK").save(tmp_path / "cmyk.tiff")
    rgb.convert("P").save(tmp_path / "palette.png")
    for name, source in (("cmyk.tiff", rgb.convert("CMYK")), ("palette.png", rgb.convert("P"))):
        data = load_data(tmp_path / name)
        assert data.shape == (3, 5, 6)
        expected = np.asarray(source.convert("RGB")).transpose(2, 0, 1) / np.float32(255)
        np.testing.assert_array_equal(everything(data)[0], expected)


def test_a_folder_of_many_files_reads_only_the_images_asked_for(tmp_path):
    imsave(tmp_path / "0000.png", grey(1))
    good = (tmp_path / "0000.png").read_bytes()
    for i in range(1, 3000):
        (tmp_path / f"{i:04d}.png").write_bytes(good if i % 1000 else b"broken")
    data = load_data(tmp_path)
    assert len(data) == 3000
    assert everything_of(data, [0, 1, 2, 2999]).shape == (4, 1, 6, 5)
    with pytest.raises(CertifyError, match=r"cannot read image .*1000.png: not an image file"):
        data.batch([999, 1000])
    assert len(data.fingerprint()) == 64


def everything_of(data, indices):
    return data.batch(indices)


# -- sizes and channels that differ from the model's ------------------------------------------------


@pytest.mark.parametrize("declared, view, fragments", [
    ((1, 32, 32), (1, 28, 28), ["takes 32 x 32 images but the data's are 28 x 28", "--resize 32 32", "resized"]),
    ((32, 32, 3), (3, 28, 28), ["takes 32 x 32 images but the data's are 28 x 28", "--resize 32 32"]),
    ((224, 224), (1, 28, 28), ["takes 224 x 224 images", "--resize 224 224"]),
    ((3, None, 64), (3, 28, 28), ["takes ? x 64 images", "--resize H W"]),
    ((3, 28, 28), (1, 28, 28), ["takes colour images (3 channels) but the data's are grey images (1 channel)",
                                "does not convert", "np.repeat"]),
    ((28, 28, 3), (1, 28, 28), ["takes colour images (3 channels) but the data's are grey"]),
    ((1, 28, 28), (3, 28, 28), ["takes grey images (1 channel) but the data's are colour images (3 channels)",
                                "rgb2gray"]),
    ((28, 28), (3, 28, 28), ["takes grey images (1 channel)"]),
    ((3, 32, 32), (1, 28, 28), ["takes colour images", "the data's are grey", "32 x 32", "28 x 28", "--resize"]),
    ((3, 28, 28), (4, 28, 28), ["takes colour images (3 channels) but the data's are 4-channel images"]),
])
def test_size_and_channel_mismatches_are_named(declared, view, fragments):
    with pytest.raises(CertifyError) as raised:
        resolve_layout(declared, view)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_other_mismatches_keep_the_layout_advice():
    with pytest.raises(CertifyError, match="set --layout"):
        resolve_layout((None, None, 3), (3, 8, 8), "nchw")  # fits as nhwc
    with pytest.raises(CertifyError, match="takes inputs of shape 3072 but the data gives 1x28x28"):
        resolve_layout((3072,), (1, 28, 28))


def test_resize_happens_in_pixel_space_with_anti_aliasing(tmp_path):
    from skimage.transform import resize

    checkerboard = (np.indices((28, 28)).sum(axis=0) % 2 * 255).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=np.stack([checkerboard, 255 - checkerboard]), y=[1, 0])
    data = load_data(tmp_path / "d.npz", resize=(14, 14))
    assert data.shape == (1, 14, 14) and list(data.labels) == [1, 0]
    batch = everything(data)
    assert batch.dtype == np.float32 and batch.min() >= 0 and batch.max() <= 1
    # Anti-aliased, a fine checkerboard halved is about mid-grey (plain sampling keeps one colour).
    assert abs(float(batch[0].mean()) - 0.5) < 0.05 and batch[0].std() < 0.1
    expected = resize((checkerboard / np.float32(255))[:, :, None], (14, 14), order=1, anti_aliasing=True)
    np.testing.assert_array_equal(batch[0, 0], expected[:, :, 0].astype(np.float32))
    np.testing.assert_array_equal(everything(load_data(tmp_path / "d.npz", resize=(14, 14))), batch)  # deterministic
    assert load_data(tmp_path / "d.npz", resize=(40, 30)).batch([1]).shape == (1, 1, 40, 30)


def test_resize_takes_images_of_any_size_but_not_other_channels(tmp_path, rng):
    imsave(tmp_path / "a.png", grey(1, (6, 5)))
    imsave(tmp_path / "b.png", grey(2, (90, 70)))
    data = load_data(tmp_path, resize=(8, 8))
    assert everything(data).shape == (2, 1, 8, 8)
    imsave(tmp_path / "c.png", rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8))
    with pytest.raises(CertifyError, match=r"c.png has 3 channels \(colour\) but .*a.png has 1 channel \(grey\)"):
        load_data(tmp_path, resize=(8, 8)).batch([2])


@pytest.mark.parametrize("resize, message", [
    ((0, 5), "two positive integers"), ((5,), "two integers"), ((2.5, 3), "two positive integers"),
])
def test_bad_resize_values(tmp_path, resize, message):
    np.save(tmp_path / "d.npy", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(CertifyError, match=message):
        load_data(tmp_path / "d.npy", resize=resize)


def test_vectors_are_not_resized(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((2, 10), np.uint8))
    with pytest.raises(CertifyError, match="--resize applies to images; .* holds vectors of 10 values"):
        load_data(tmp_path / "d.npy", resize=(2, 5))


@pytest.fixture
def sized_case(tmp_path):
    """A model on 28 x 28 grey images and 32 x 32 data."""
    w = np.random.default_rng(0).normal(size=(784, 3))
    save(linear_model(w, np.zeros(3), (1, 28, 28)), tmp_path / "m28.onnx")
    x = (np.random.default_rng(1).random((3, 32, 32)) * 255).astype(np.uint8)
    np.savez(tmp_path / "x32.npz", x=x, y=[0, 1, 2])
    return tmp_path


def certify_command(folder, *args):
    return CliRunner().invoke(cli, ["--plugin", "rs", str(folder / "m28.onnx"), "--data", str(folder / "x32.npz"),
                                    "-s", "0.25", "--n0", "4", "-n", "16", "-q", *map(str, args)])


def test_resize_on_the_command_line_is_recorded_and_resumes_only_unchanged(sized_case):
    refused = certify_command(sized_case)
    assert refused.exit_code != 0 and "--resize 28 28" in refused.output
    out = sized_case / "r.jsonl"
    done = certify_command(sized_case, "--resize", "28", "28", "--output", out)
    assert done.exit_code == 0, done.output
    header = json.loads(out.read_text().splitlines()[0])
    assert header["resize"] == [28, 28]
    again = certify_command(sized_case, "--resize", "28", "28", "--output", out)
    assert again.exit_code == 0, again.output
    np.savez(sized_case / "x32.npz", x=np.zeros((3, 28, 28), np.uint8), y=[0, 1, 2])
    out28 = sized_case / "r28.jsonl"
    assert certify_command(sized_case, "--output", out28).exit_code == 0
    other = certify_command(sized_case, "--resize", "28", "28", "--output", out28)
    assert other.exit_code != 0 and "resize null there, [28, 28] now" in other.output, other.output
    predicted = CliRunner().invoke(cli, ["predict", "--plugin", "rs", str(sized_case / "m28.onnx"), "--data",
                                         str(sized_case / "x32.npz"), "-s", "0.25", "-n", "16", "-q",
                                         "--resize", "28", "28"])
    assert predicted.exit_code == 0, predicted.output


def test_resize_in_the_api(sized_case):
    import certifier

    x = np.load(sized_case / "x32.npz")["x"]
    run = certifier.load(sized_case / "m28.onnx", plugin="rs", sigma=0.25, resize=(28, 28))
    results = run.certify(x, n0=4, n=16)
    assert len(results) == 3
    assert run.dataset(x).batch([0]).shape == (1, 1, 28, 28)
    with pytest.raises(CertifyError, match="--resize 28 28"):
        certifier.certify(sized_case / "m28.onnx", x, plugin="rs", sigma=0.25, n0=4, n=16)


def test_bad_data_is_refused_before_a_results_file_is_written(sized_case):
    x = np.full((3, 28, 28), 0.5)
    x[0, 0, 0] = 7.0
    np.savez(sized_case / "x32.npz", x=x)
    out = sized_case / "r.jsonl"
    result = certify_command(sized_case, "--output", out)
    assert result.exit_code != 0 and "input 0: pixel values range" in result.output
    assert not out.exists()


def test_limit_on_data_declaring_many_rows_lists_only_what_it_selects(sized_case):
    rows = 20_000_000  # 20 million inputs of 4 bytes: a sparse 80 MB file
    with open(sized_case / "many.npy", "wb") as handle:
        write_npy_header(handle, (rows, 2, 2))
        handle.truncate(handle.tell() + rows * 4)
    save(linear_model(np.ones((4, 2)), np.zeros(2), (1, 2, 2)), sized_case / "m4.onnx")
    result = {}

    def run():
        result["run"] = CliRunner().invoke(cli, ["--plugin", "rs", str(sized_case / "m4.onnx"), "--data",
                                                 str(sized_case / "many.npy"), "-s", "0.25", "--n0", "4", "-n", "16",
                                                 "-q", "--limit", "2"])

    assert peak_memory(run) < 100_000_000  # a list of every index would take 700 MB
    assert result["run"].exit_code == 0, result["run"].output
