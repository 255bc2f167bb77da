"""The batched superpixel kernels return scikit-image's partitions, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.segmentation as skseg

from certifier_plugins import superpixels


def first_seen(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0, 1, ... in order of first appearance (raster order)."""
    values, first = np.unique(labels.ravel(), return_index=True)
    mapping = np.empty(values.max() + 1, dtype=np.int64)
    mapping[values[np.argsort(first)]] = np.arange(len(values))
    return mapping[labels]


def same_partitions(reference: list[np.ndarray], ours: np.ndarray) -> list[int]:
    """Indices of the images whose partitions differ."""
    return [i for i, (r, o) in enumerate(zip(reference, ours)) if not np.array_equal(first_seen(r), o)]


def noisy_images(count: int, size: int, channels: int, sigma: float, seed: int) -> np.ndarray:
    """Blobs and bars plus Gaussian noise, float32 (B, H, W, C), unclipped like PPRS samples."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images = []
    for _ in range(count):
        image = np.zeros((size, size, channels))
        for _ in range(3):
            cy, cx, radius = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < radius**2
            image[blob] = rng.uniform(0.3, 1.0, channels)
        image[:, int(rng.integers(size)), :] = rng.uniform(0, 1, channels)
        images.append(image)
    images = np.stack(images) + sigma * rng.standard_normal((count, size, size, channels))
    return images.astype(np.float32)


@pytest.fixture(scope="module")
def grey():
    return noisy_images(12, 28, 1, 0.5, seed=1)


@pytest.fixture(scope="module")
def colour():
    return noisy_images(4, 32, 3, 0.25, seed=2)


@pytest.mark.parametrize(
    "settings",
    [
        dict(),  # scikit-image's defaults
        dict(n_segments=49, compactness=0.5, max_num_iter=5),  # the plugin's defaults on 28x28
        dict(n_segments=30, compactness=0.1, enforce_connectivity=False),
        dict(n_segments=200, compactness=3.0, max_num_iter=3),
        dict(n_segments=7, compactness=0.05, min_size_factor=0.2, max_size_factor=1.5),
    ],
)
def test_slic_matches_skimage_on_grey_images(grey, settings):
    reference = [skseg.slic(image[..., 0], channel_axis=None, **settings) for image in grey]
    assert same_partitions(reference, superpixels.slic(grey, **settings)) == []


def test_slic_matches_skimage_on_colour_images(colour):
    settings = dict(n_segments=60, compactness=5.0)
    reference = [skseg.slic(image, **settings) for image in colour]
    assert same_partitions(reference, superpixels.slic(colour, **settings)) == []
    # not square, and without the Lab conversion
    wide = colour[:, :20, :]
    reference = [skseg.slic(image, n_segments=25, compactness=0.3, convert2lab=False) for image in wide]
    assert same_partitions(reference, superpixels.slic(wide, n_segments=25, compactness=0.3, convert2lab=False)) == []


def test_slic_on_fashion_mnist_noise(fashion):
    x = fashion["x_test"][:16].astype(np.float32)[..., None] / 255
    noisy = x + np.float32(0.25) * np.random.default_rng(3).standard_normal(x.shape, dtype=np.float32)
    settings = dict(n_segments=49, compactness=0.5, max_num_iter=5)
    reference = [skseg.slic(image[..., 0], channel_axis=None, **settings) for image in noisy]
    assert same_partitions(reference, superpixels.slic(noisy, **settings)) == []


@pytest.mark.parametrize("settings", [dict(), dict(scale=100, sigma=0.5, min_size=5), dict(scale=10, sigma=0, min_size=1)])
def test_felzenszwalb_matches_skimage(grey, colour, settings):
    reference = [skseg.felzenszwalb(image[..., 0], **settings) for image in grey]
    assert same_partitions(reference, superpixels.felzenszwalb(grey, **settings)) == []
    reference = [skseg.felzenszwalb(image, channel_axis=-1, **settings) for image in colour]
    assert same_partitions(reference, superpixels.felzenszwalb(colour, **settings)) == []


@pytest.mark.parametrize("settings", [dict(kernel_size=1, max_dist=3, ratio=1.0), dict(kernel_size=2, max_dist=6, ratio=0.5)])
def test_quickshift_matches_skimage(grey, colour, settings):
    reference = [skseg.quickshift(image, convert2lab=False, **settings) for image in grey]
    assert same_partitions(reference, superpixels.quickshift(grey, **settings)) == []
    reference = [skseg.quickshift(image, **settings) for image in colour[:2]]
    assert same_partitions(reference, superpixels.quickshift(colour[:2], **settings)) == []


def test_segment_means_by_brute_force():
    rng = np.random.default_rng(4)
    values = rng.standard_normal((3, 5, 6, 2)).astype(np.float32)
    labels = rng.integers(0, 4, (3, 5, 6)).astype(np.int32)
    means = superpixels.segment_means(values, labels)
    for b in range(3):
        for k in np.unique(labels[b]):
            inside = labels[b] == k
            np.testing.assert_allclose(means[b][inside], np.broadcast_to(values[b][inside].mean(0), means[b][inside].shape),
                                       rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size,segments", [((28, 28), 49), ((28, 28), 100), ((7, 10), 6), ((5, 5), 1)])
def test_grid_means_match_the_grid_partition(size, segments):
    height, width = size
    rng = np.random.default_rng(5)
    values = rng.standard_normal((4, 2, height, width)).astype(np.float32)
    labels = np.broadcast_to(superpixels.grid_labels(height, width, segments), (4, height, width))
    side = superpixels.grid_side(height, width, segments)
    expected = np.moveaxis(superpixels.segment_means(np.moveaxis(values, 1, -1), labels), -1, 1)
    np.testing.assert_allclose(superpixels.grid_means(values, side), expected, rtol=1e-5, atol=1e-6)


def test_partition_mean_is_an_orthogonal_projection():
    """A_S is symmetric and idempotent, so ||A_S v|| <= ||v|| (SPEC)."""
    rng = np.random.default_rng(6)
    labels = superpixels.slic(noisy_images(1, 12, 1, 0.3, seed=7), n_segments=9, compactness=0.5)
    d = labels.size
    basis = np.eye(d, dtype=np.float32).reshape(d, 12, 12, 1)
    matrix = superpixels.segment_means(basis, np.broadcast_to(labels[0], (d, 12, 12))).reshape(d, d)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-6)
    np.testing.assert_allclose(matrix @ matrix, matrix, atol=1e-5)
    v = rng.standard_normal(d)
    assert np.linalg.norm(matrix @ v) <= np.linalg.norm(v) + 1e-6


def test_slic_first_assignment_shortcut_and_its_guard(grey):
    """The first assignment is taken from a blank image only when float32 rounding of the
    colour term cannot reorder the spatial terms; both paths match scikit-image."""
    plan = superpixels.slic_plan(28, 28, 49, 0.5)
    assert plan.first_labels(4.0) is not None
    assert plan.first_labels(1e12) is None  # the colour term would swamp the spatial gaps
    for compactness in (0.5, 1e-6):  # shortcut on; off (ratio 1e6, colour terms up to 1e12)
        settings = dict(n_segments=49, compactness=compactness, max_num_iter=3)
        reference = [skseg.slic(image[..., 0], channel_axis=None, **settings) for image in grey]
        assert same_partitions(reference, superpixels.slic(grey, **settings)) == []
