"""PPRS: pixel-partition randomized smoothing (Goli and Farnia), L2 radius.

Each noisy sample u = x + Z is cut into superpixels and every pixel is replaced by
the mean of its superpixel before the model sees it: the base classifier is
f'(u) = f(A_S(u) u). By default the partition S(u) is computed from the noisy
sample itself, so f' is a fixed function of u and Cohen et al.'s certificate holds
unchanged: radius sigma * Phi^-1(pA_lower).

The paper's Theorem 2 reading (partition from the clean input, radius
(1 - rho) sigma Phi^-1(pA_lower)) assumes ||A_S(x) - A_S(x')|| <= rho ||x - x'||,
which no superpixel algorithm is known to satisfy; it is available only with
``-o partition-from clean -o rho R`` and its certificates are marked conditional.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

import certifier
from certifier import (
    Certificate, CertifyError, SmoothingMethod, SoundnessCheck, Votes, gaussian_certificate, gaussian_views, hookimpl,
    is_broadcast, two_bound_gaussian_certificate,
)
from certifier_plugins.rs import BOUNDS_HELP, without_default_bounds


def _superpixels():
    # numba and scipy.ndimage take a third of a second to import: only when segmenting
    from . import superpixels

    return superpixels


#: Default superpixel size in pixels for SLIC and the grid (49 segments on 28x28).
PIXELS_PER_SEGMENT = 16
# Grey pixels are in [0, 1]; skimage converts RGB to Lab (L in 0..100) for SLIC and
# quickshift, so colour distances there are about 100 times larger.
GREY_COMPACTNESS, LAB_COMPACTNESS = 0.5, 50.0
GREY_RATIO, LAB_RATIO = 1.0, 0.01


class PartitionSmoothing(SmoothingMethod):
    """f(A_S(u) u) with u = x + Z and S a superpixel partition of u; RS's certificate."""

    name = "pprs"
    norm = "l2"
    denoisable = True  # its views are Gaussian-noisy images
    description = (
        "superpixel-mean smoothing (Goli & Farnia): partition of the noisy sample, "
        "L2 radius sigma * Phi^-1(pA_lower)"
    )

    class Options(certifier.Options):
        method: Literal["slic", "quickshift", "felzenszwalb", "grid"] = Field(
            "slic", description="partition: slic, quickshift, felzenszwalb (as in scikit-image) or a fixed grid"
        )
        segments: int | None = Field(
            None, ge=1,
            description=f"slic: n_segments; grid: number of cells (default: one per {PIXELS_PER_SEGMENT} pixels)",
        )
        compactness: float | None = Field(
            None, gt=0,
            description=f"slic: weight of space against colour (default {GREY_COMPACTNESS} for grey images, "
            f"{LAB_COMPACTNESS} for RGB, which is converted to Lab: L runs 0..100)",
        )
        iterations: int = Field(5, ge=1, le=100, description="slic: k-means iterations (skimage: max_num_iter)")
        connectivity: bool = Field(
            True, description="slic: make segments connected, merging small pieces (skimage: enforce_connectivity)"
        )
        scale: float = Field(1.0, gt=0, description="felzenszwalb: observation scale; higher means larger segments")
        smoothing: float = Field(0.8, ge=0, description="felzenszwalb: Gaussian pre-smoothing width (skimage: sigma)")
        min_size: int = Field(20, ge=1, description="felzenszwalb: smallest segment in pixels")
        kernel_size: float = Field(1.0, ge=1, description="quickshift: width of the density kernel")
        max_dist: float = Field(3.0, gt=0, description="quickshift: cut links longer than this")
        ratio: float | None = Field(
            None, gt=0,
            description=f"quickshift: weight of colour against space (default {GREY_RATIO} for grey images, "
            f"{LAB_RATIO} for RGB in Lab)",
        )
        partition_from: Literal["noisy", "clean"] = Field(
            "noisy",
            description="noisy: partition each noisy sample (sound); clean: partition the input "
            "(the paper's Theorem 2, radius scaled by 1 - rho, conditional)",
        )
        rho: float | None = Field(
            None, ge=0, lt=1,
            description="partition-from clean only: the assumed Lipschitz constant of the partition map",
        )
        bounds: Literal["one", "two"] = Field("one", description=BOUNDS_HELP + " (partition-from noisy only)")

        @model_validator(mode="after")
        def _rho_only_for_clean(self):
            if self.partition_from == "clean" and self.rho is None:
                raise ValueError("partition-from clean needs -o rho R (0 <= R < 1), the assumed Lipschitz bound")
            if self.partition_from == "noisy" and self.rho is not None:
                raise ValueError("rho applies only with -o partition-from clean")
            if self.partition_from == "clean" and self.bounds == "two":
                raise ValueError("-o bounds two needs the sound rule, -o partition-from noisy")
            return self

    # -- shapes --------------------------------------------------------------

    def prepare(self, input_shape, metadata) -> None:
        if len(input_shape) != 3:
            raise CertifyError(
                f"pprs partitions images; this input has shape {tuple(input_shape)} (expected channels, height, width)"
            )
        channels, height, width = input_shape
        if height < 2 or width < 2:
            raise CertifyError(f"pprs needs images of at least 2x2 pixels, got {height}x{width}")
        if self.options.method in ("slic", "quickshift") and channels not in (1, 3):
            raise CertifyError(f"pprs -o method {self.options.method} needs 1 or 3 channels, got {channels}")

    def segments_for(self, height: int, width: int) -> int:
        return self.options.segments or max(1, round(height * width / PIXELS_PER_SEGMENT))

    # -- the transform ---------------------------------------------------------

    def partition(self, images: np.ndarray) -> np.ndarray:
        """Superpixel labels (B, H, W) of a batch of (B, C, H, W) images."""
        o = self.options
        batch, channels, height, width = images.shape
        if o.method == "grid":
            labels = _superpixels().grid_labels(height, width, self.segments_for(height, width))
            return np.broadcast_to(labels, (batch, height, width))
        last = np.ascontiguousarray(np.moveaxis(images, 1, -1), dtype=np.float32)
        if not np.isfinite(last).all():
            raise CertifyError(f"pprs: a noisy sample is not finite (sigma {self.sigma:g} overflows float32 "
                               f"views); lower --sigma")
        colour = channels == 3
        if o.method == "slic":
            compactness = o.compactness or (LAB_COMPACTNESS if colour else GREY_COMPACTNESS)
            return _superpixels().slic(
                last, n_segments=self.segments_for(height, width), compactness=compactness,
                max_num_iter=o.iterations, enforce_connectivity=o.connectivity,
            )
        if o.method == "felzenszwalb":
            return _superpixels().felzenszwalb(last, scale=o.scale, sigma=o.smoothing, min_size=o.min_size)
        ratio = o.ratio or (LAB_RATIO if colour else GREY_RATIO)
        return _superpixels().quickshift(last, ratio=ratio, kernel_size=o.kernel_size, max_dist=o.max_dist)

    def average(self, noisy: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Every pixel of ``noisy`` (B, C, H, W) replaced by the mean of its segment."""
        if self.options.method == "grid":
            height, width = noisy.shape[2:]
            side = _superpixels().grid_side(height, width, self.segments_for(height, width))
            return _superpixels().grid_means(noisy, side)
        means = _superpixels().segment_means(np.moveaxis(noisy, 1, -1), labels)
        return np.ascontiguousarray(np.moveaxis(means, -1, 1))

    def _labels_for(self, x: np.ndarray, noisy: np.ndarray) -> np.ndarray:
        if self.options.partition_from == "noisy":
            return self.partition(noisy)
        if is_broadcast(x):  # partition the one input once
            return np.broadcast_to(self.partition(x[:1])[0], (len(x),) + x.shape[2:])
        return self.partition(x)

    def sample(self, x: np.ndarray, rng: np.random.Generator, group: str) -> np.ndarray:
        noisy = gaussian_views(x, self.sigma, rng)
        return self.average(noisy, self._labels_for(x, noisy))

    def stages(self, x: np.ndarray, rng: np.random.Generator, group: str):
        noisy = gaussian_views(x, self.sigma, rng)
        labels = self._labels_for(x, noisy)
        view = self.average(noisy, labels)
        return [
            ("noisy sample", noisy),
            (f"{self.options.method} partition", _coloured_partition(np.clip(noisy, 0, 1), labels)),
            ("superpixel means (model input)", view),
        ]

    # -- certificate -------------------------------------------------------------

    @property
    def conditional(self) -> str | None:
        if self.options.partition_from == "clean":
            return (
                f"rho={self.options.rho} Lipschitz bound on the superpixel map of the clean input (unverified; "
                "no superpixel algorithm is known to satisfy it)"
            )
        return None

    def certify(self, selection: Votes, estimation: Votes, alpha: float) -> Certificate:
        if self.options.bounds == "two":
            return two_bound_gaussian_certificate(selection, estimation, alpha, self.sigma)
        # the clean-partition reading scales RS's radius by 1 - rho (conditional)
        scale = 1.0 - self.options.rho if self.options.partition_from == "clean" else 1.0
        return gaussian_certificate(selection, estimation, alpha, self.sigma, scale=scale,
                                    conditional=self.conditional)

    def settings(self) -> dict:
        return without_default_bounds(super().settings())

    def soundness_checks(self):
        # any partition's means keep the mean of the noisy view, so [mean > t] keeps its boundary
        return (SoundnessCheck("mean", reason="superpixel means keep the mean of a noisy view"),)


def _coloured_partition(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(B, 3, H, W): each segment in its own colour over the image, for ``certify show``."""
    grey = images.mean(axis=1) if images.shape[1] != 1 else images[:, 0]
    palette = np.random.default_rng(0).uniform(0.15, 1.0, (int(labels.max()) + 1, 3)).astype(np.float32)
    colours = np.moveaxis(palette[labels], -1, 1)
    return 0.6 * colours + 0.4 * grey[:, None]


@hookimpl
def register_methods(register):
    register(PartitionSmoothing)
