"""Reading inputs: npz/npy arrays, value ranges, labels, layouts, image folders and files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from certifier import CertifyError
from certifier.data import load_data, to_pixel_space


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


def test_range_errors_come_from_load_data(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.full((2, 3), 200.0))
    with pytest.raises(CertifyError, match=r"d.npz.*200..200.*0..255"):
        load_data(tmp_path / "d.npz")


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
    assert list(load_data(tmp_path).labels) == [0, 1, 2]
    # class names that do not cover the folders are ignored
    assert list(load_data(tmp_path, class_names=["ant", "zebra"]).labels) == [0, 1, 2]


def test_hidden_folders_and_files_are_not_classes(tmp_path):
    imsave(tmp_path / "cat" / "1.png", grey(1))
    imsave(tmp_path / "dog" / "2.png", grey(2))
    imsave(tmp_path / ".ipynb_checkpoints" / "3.png", grey(3))
    (tmp_path / "cat" / "._1.png").write_bytes(b"macOS resource fork, not an image")
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
    with pytest.raises(CertifyError, match=r"b.png is \(7, 5\).*first image is \(6, 5\).*same size"):
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
