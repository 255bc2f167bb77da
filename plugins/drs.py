"""DRS: dual randomized smoothing (Xia, Yu, Jiang and Ding, ICLR 2024), L2 radius.

Each image is split into two sub-images along the diagonals of its 2x2 blocks
(a checkerboard: pixel (i, j) goes to the left sub-image when i + j is even, to the
right one when it is odd). Each sub-image gets its own Gaussian noise and its own
classifier; the smoothed classifier takes the class with the largest summed
probability over the two sides.

Certificate (SPEC, section DRS): the class comes from the summed selection votes;
lower bounds pl, pr on the two sides' probabilities of that class are taken on fresh
votes at alpha / 2 each, and the L2 radius is sigma / sqrt(2) * (Phi^-1(pl) +
Phi^-1(pr)) when pl + pr >= 1. Why: moving x by d moves the sides by d_l and d_r,
and RS's theorem on each side keeps the class as long as ||d_l|| + ||d_r|| <
sigma (Phi^-1(pl) + Phi^-1(pr)); since ||d_l|| + ||d_r|| <= sqrt(2) ||d||, the
radius above suffices. (Combining the two RS radii as sqrt(r_l^2 + r_r^2), with
alpha on each side, over-claims and is not what this plugin does.)

Layout of a sub-image array: every row of the image keeps its W/2 pixels of that
side, in order, so a sub-image is C x H x W/2:

    left[c, i, k]  = x[c, i, 2k + (i mod 2)]
    right[c, i, k] = x[c, i, 2k + 1 - (i mod 2)]
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

import certifier
from certifier import (
    Certificate, CertifyError, SmoothingMethod, SoundnessCheck, Votes, gaussian_quantile, gaussian_views, hookimpl,
    is_broadcast, recorded_group,
)

LEFT, RIGHT = "left", "right"
SIDES = (LEFT, RIGHT)


def _first_column(side: str) -> int:
    """Column (0 or 1) of the side's pixel in the even rows of each 2x2 block."""
    if side not in SIDES:
        raise ValueError(f"unknown DRS side {side!r}")
    return 0 if side == LEFT else 1


def sub_width(width: int) -> int:
    """Width of a sub-image: half the image width, after padding an odd width by one column."""
    return (width + 1) // 2


def split(x: np.ndarray, side: str) -> np.ndarray:
    """The side's sub-image of each image in the batch x (B, C, H, W) -> (B, C, H, ceil(W / 2)).

    An odd width is padded with one column of zeros on the right first. The padding
    is a constant, so a perturbation of x has the same L2 norm as its two sub-image
    parts together, and the certificate is unchanged.
    """
    if x.ndim != 4:
        raise ValueError(f"split expects a batch of images (B, C, H, W), got shape {x.shape}")
    if is_broadcast(x):  # split the one input once
        one = split(x[:1], side)
        return np.broadcast_to(one, (len(x),) + one.shape[1:])
    batch, channels, height, width = x.shape
    if width % 2:
        x = np.concatenate([x, np.zeros((batch, channels, height, 1), dtype=x.dtype)], axis=-1)
    pairs = x.reshape(batch, channels, height, -1, 2)
    first = _first_column(side)
    out = np.empty(pairs.shape[:-1], dtype=np.float32)
    out[:, :, 0::2] = pairs[:, :, 0::2, :, first]
    out[:, :, 1::2] = pairs[:, :, 1::2, :, 1 - first]
    return out


def _interleave(own: np.ndarray, filled: np.ndarray, side: str, width: int) -> np.ndarray:
    """Full-width images with ``own`` at the side's pixels and ``filled`` at the others."""
    batch, channels, height, half = own.shape
    first = _first_column(side)
    full = np.empty((batch, channels, height, half, 2), dtype=np.float32)
    full[:, :, 0::2, :, first] = own[:, :, 0::2]
    full[:, :, 0::2, :, 1 - first] = filled[:, :, 0::2]
    full[:, :, 1::2, :, 1 - first] = own[:, :, 1::2]
    full[:, :, 1::2, :, first] = filled[:, :, 1::2]
    return full.reshape(batch, channels, height, 2 * half)[..., :width]


_WEIGHTS: dict[tuple[int, int, str], np.ndarray] = {}


def _neighbour_weights(height: int, half: int, side: str) -> np.ndarray:
    """1 / (number of same-side neighbours) of each missing pixel, as an (H, W/2) array."""
    key = (height, half, side)
    if key not in _WEIGHTS:
        counts = np.ones((height, half))  # the neighbour in the same block row always exists
        counts[1:] += 1  # above
        counts[:-1] += 1  # below
        own_first, own_second = _rows(side)
        counts[own_first, :-1] += 1
        counts[own_second, 1:] += 1
        _WEIGHTS[key] = (1.0 / counts).astype(np.float32)
    return _WEIGHTS[key]


def _rows(side: str) -> tuple[slice, slice]:
    """Rows where the side's pixel comes first in each pair of columns, and rows where it comes second."""
    first = _first_column(side)
    return slice(first, None, 2), slice(1 - first, None, 2)


def merge(sub: np.ndarray, side: str, width: int, mode: str) -> np.ndarray:
    """Sub-images (B, C, H, W/2) back to full images (B, C, H, width).

    ``nearest`` copies each pixel into the missing pixel beside it in its 2x2 block
    row (the nearest-neighbour resize of the H x W/2 array along its width).
    ``bilinear`` keeps each pixel where it was and fills every missing pixel with the
    mean of its same-side neighbours above, below, left and right (2 to 4 of them):
    the side's pixels form a square lattice turned by 45 degrees, and a missing pixel
    sits at the centre of one of its cells, where bilinear interpolation is the mean
    of the four corners.
    """
    if mode == "nearest":
        return np.repeat(sub, 2, axis=-1)[..., :width]
    if mode != "bilinear":
        raise ValueError(f"unknown resize mode {mode!r}")
    height, half = sub.shape[-2:]
    missing = np.array(sub, dtype=np.float32, copy=True)
    missing[:, :, 1:] += sub[:, :, :-1]
    missing[:, :, :-1] += sub[:, :, 1:]
    own_first, own_second = _rows(side)
    # where the side's pixel comes first in its pair, the missing pixel's other
    # horizontal neighbour is the next pair's pixel; where it comes second, the previous one
    missing[:, :, own_first, :-1] += sub[:, :, own_first, 1:]
    missing[:, :, own_second, 1:] += sub[:, :, own_second, :-1]
    missing *= _neighbour_weights(height, half, side)
    return _interleave(sub, missing, side, width)


def scatter(sub: np.ndarray, side: str, width: int, fill: float = 0.0) -> np.ndarray:
    """Sub-images placed at their own pixels of a full image, ``fill`` elsewhere (for pictures)."""
    return _interleave(sub, np.full_like(sub, fill), side, width)


def drs_radius(sigma: float, p_left: float, p_right: float) -> float:
    """sigma / sqrt(2) * (Phi^-1(p_left) + Phi^-1(p_right)), the L2 radius for pl + pr >= 1."""
    radius = sigma / math.sqrt(2.0) * (gaussian_quantile(p_left) + gaussian_quantile(p_right))
    # pl + pr >= 1 makes the exact value >= 0; at pl + pr = 1 float rounding can
    # leave a tiny negative number, which is reported as 0.
    return max(radius, 0.0)


class DualSmoothing(SmoothingMethod):
    """Two diagonal sub-images, independent noise, one classifier per side; SPEC's DRS certificate."""

    name = "drs"
    norm = "l2"
    denoisable = True  # its views are Gaussian-noisy images
    description = (
        "Dual randomized smoothing (Xia et al. 2024): two diagonal sub-images; "
        "L2 radius sigma/sqrt(2) * (Phi^-1(pl) + Phi^-1(pr)), alpha/2 per side"
    )
    groups = SIDES

    class Options(certifier.Options):
        resize: Literal["bilinear", "nearest", "none"] = Field(
            "bilinear",
            description="How the model reads a noisy sub-image: resized back to H x W (bilinear or nearest, "
            "for full-resolution models) or as is, C x H x W/2 (none, for models trained on sub-images)",
        )
        model_r: str | None = Field(
            None, description="ONNX model for the right sub-images (default: the main model reads both sides)"
        )

    @property
    def resize(self) -> str:
        return self.options.resize

    # -- shapes and models ----------------------------------------------------

    def prepare(self, input_shape, metadata) -> None:
        if len(input_shape) != 3:
            raise CertifyError(
                f"plugin drs splits images into 2x2 blocks; the data gives inputs of shape "
                f"{'x'.join(map(str, input_shape))}, not images (C x H x W)"
            )
        _, height, width = input_shape
        if height < 2 or width < 2:
            raise CertifyError(f"plugin drs needs images of at least 2 x 2 pixels, got {height} x {width}")
        trained_on = recorded_group(metadata, self.name)
        if trained_on == RIGHT:
            raise CertifyError(
                "the model was trained on right sub-images only: pass it with -o model-r PATH and give the "
                "left model as the main model"
            )
        if trained_on == LEFT and self.options.model_r is None:
            raise CertifyError(
                "the model was trained on left sub-images only: give the right model with -o model-r PATH"
            )

    def view_shape(self, input_shape, group):
        if self.resize == "none":
            channels, height, width = input_shape
            return (channels, height, sub_width(width))
        return tuple(input_shape)

    def group_model(self, group):
        return self.options.model_r if group == RIGHT else None

    # -- views ----------------------------------------------------------------

    def _noisy_sub_images(self, x: np.ndarray, rng: np.random.Generator, group: str) -> np.ndarray:
        return gaussian_views(split(x, group), self.sigma, rng)

    def _to_model(self, noisy: np.ndarray, group: str, width: int) -> np.ndarray:
        if self.resize == "none":
            return noisy
        return merge(noisy, group, width, self.resize)

    def sample(self, x, rng, group):
        return self._to_model(self._noisy_sub_images(x, rng, group), group, x.shape[-1])

    def clean_view(self, x, group):
        return self._to_model(split(x, group), group, x.shape[-1])

    def stages(self, x, rng, group):
        width = x.shape[-1]
        noisy = self._noisy_sub_images(x, rng, group)
        stages = [
            (f"{group} pixels", scatter(split(x, group), group, width, fill=0.5)),
            (f"noisy {group} sub-image", noisy),
        ]
        if self.resize != "none":
            stages.append((f"{self.resize} view ({group})", self._to_model(noisy, group, width)))
        return stages

    # -- decisions --------------------------------------------------------------

    def soundness_checks(self):
        # A side's view of [mean > t] is 1 with probability Phi((mean(x_side) - t) / (sigma / sqrt(d / 2))) when the
        # model reads the sub-image as it is or repeated (nearest); the sum of the two sides' probabilities is
        # above 1 exactly when mean(x) > t, so the smoothed classifier keeps that boundary. Bilinear resizing
        # weighs the border pixels differently and has no such closed form.
        options = {"resize": "nearest"} if self.resize == "bilinear" else {}
        return (SoundnessCheck("mean", options=options,
                               reason="each side's mean of a noisy sub-image (as is or repeated) keeps mean(x) = t"),)

    def certify(self, selection: Votes, estimation: Votes, alpha: float) -> Certificate:
        top = selection.top()
        # two bounds hold together with probability >= 1 - alpha (Bonferroni)
        p_left = estimation.lower_bound(LEFT, top, alpha / 2)
        p_right = estimation.lower_bound(RIGHT, top, alpha / 2)
        details = {
            "top": top,
            "p_lower_left": p_left,
            "p_lower_right": p_right,
            "top_votes_left": estimation.count(LEFT, top),
            "top_votes_right": estimation.count(RIGHT, top),
        }
        if p_left + p_right < 1:
            return Certificate.abstain(**details)
        return Certificate(top, drs_radius(self.sigma, p_left, p_right), details=details)


@hookimpl
def register_methods(register):
    register(DualSmoothing)
