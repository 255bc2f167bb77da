"""Translation smoothing: every cyclic shift in a (2K+1) x (2K+1) window is one view, exact.

The views of an image x are roll(x, s) for every shift s = (s_y, s_x) in W = [-K, K]^2
(numpy's roll: a pixel leaving one edge comes back at the opposite one). The smoothed
classifier is the majority vote over all |W| views, ties to the lower class index.

Cyclic shifts compose: the views of an attacked image roll(x, t) are roll(x, s + t), s in W.
All but m(t) = |W| - (2K + 1 - |t_x|)(2K + 1 - |t_y|) of them are views of x too, so the
attacker changes at most m(t) votes, each moving at most one vote from the top class A
to the runner-up B. A keeps the majority while nA - m(t) > nB + m(t), or at equality when
index(A) < index(B): while m(t) <= floor((nA - nB - [index(B) < index(A)]) / 2).

Only cyclic shifts are covered. A shift that fills the uncovered edge with zeros
(or anything else) does not compose and is not certified, except that it is the same
image as the cyclic one when the pixels that would wrap around are zero already.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

import certifier
from certifier import (
    Certificate, CertifyError, SmoothingMethod, SoundnessCheck, ThreatModel, Votes, hookimpl, is_broadcast,
)


def changed_views(k: int, t_y: np.ndarray | int, t_x: np.ndarray | int) -> np.ndarray:
    """m(t): how many of the (2K + 1)^2 views a cyclic shift t = (t_y, t_x) can change."""
    side = 2 * k + 1
    kept_y = np.maximum(side - np.abs(t_y), 0)
    kept_x = np.maximum(side - np.abs(t_x), 0)
    return side * side - kept_y * kept_x


def vote_budget(top: int, top_votes: int, runner_up: int, runner_up_votes: int) -> int:
    """How many views an attacker may change without moving the majority from the top class:
    nA - m > nB + m, or nA - m = nB + m with index(A) < index(B) (the lowest-index tie-break)."""
    return (top_votes - runner_up_votes - int(runner_up < top)) // 2


def certified_shifts(k: int, budget: int) -> tuple[int, list[int]]:
    """The shifts a vote budget certifies (every t with m(t) <= budget).

    Returns the largest s with every shift of max(|t_y|, |t_x|) <= s certified, and for
    each |t_x| = 0..2K the largest certified |t_y| (-1: none); the set is that staircase,
    the same with the axes swapped, and symmetric in the signs.
    """
    shifts = np.arange(2 * k + 1)
    allowed = changed_views(k, shifts[None, :], shifts[:, None]) <= budget  # [|t_x|, |t_y|]
    largest_y = [int(np.flatnonzero(row).max()) if row.any() else -1 for row in allowed]
    diagonal = np.flatnonzero(np.diagonal(allowed))
    return int(diagonal.max()), largest_y


class Translation(SmoothingMethod):
    """All (2K+1)^2 cyclic shifts of an image; exact votes, exact certified set of shifts."""

    name = "translation"
    description = ("every cyclic shift in a (2K+1) x (2K+1) window is a view: exact certificate for cyclic "
                   "shifts t while nA - nB - [B < A] >= 2 m(t)")
    threat_model = ThreatModel(
        "cyclic-shift", "cyclic shift of the image (a pixel leaving one edge comes back at the opposite one)",
        "max(|t_x|, |t_y|)", "pixels", "shift", (0, 1, 2, 3, 4))
    deterministic = True
    uses_sigma = False

    class Options(certifier.Options):
        k: int = Field(3, ge=0, le=64, description="shifts of up to K pixels on each axis: (2K+1)^2 views")

    def __init__(self, sigma: float | None = None, options=None):
        super().__init__(sigma=None, options=options)
        self.k = int(self.options.k)
        self.side = 2 * self.k + 1

    def prepare(self, input_shape: tuple[int, ...], metadata) -> None:
        if len(input_shape) != 3:
            raise CertifyError(f"plugin translation shifts images (channels, height, width), but the inputs have "
                               f"shape {'x'.join(map(str, input_shape))}")
        height, width = input_shape[1:]
        if self.side > min(height, width):
            raise CertifyError(f"plugin translation: -o k {self.k} makes a {self.side}x{self.side} window of shifts, "
                               f"larger than the {height}x{width} image; use -o k {(min(height, width) - 1) // 2} "
                               f"or less")

    def settings(self) -> dict:
        return {**super().settings(), "views": self.side * self.side}

    def num_views(self, input_shape: tuple[int, ...]) -> int:
        return self.side * self.side

    def soundness_checks(self):
        return (SoundnessCheck("exhaustive", reason="the smoothed classifier on every cyclic shift, by brute force"),)

    def shift(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shift (s_y, s_x) of view number ``index``: row-major over [-K, K]^2."""
        index = np.asarray(index, dtype=np.int64)
        return index // self.side - self.k, index % self.side - self.k

    def views(self, x: np.ndarray, index: np.ndarray, group: str) -> np.ndarray:
        if x.ndim != 4:
            raise CertifyError(f"plugin translation shifts images (channels, height, width), got a batch of shape "
                               f"{x.shape}")
        count, channels, height, width = x.shape
        s_y, s_x = self.shift(index)
        # view[c, h, w] = x[c, h - s_y, w - s_x] (mod the image size): numpy's roll by (s_y, s_x)
        rows = (np.arange(height)[None, :] - s_y[:, None]) % height
        columns = (np.arange(width)[None, :] - s_x[:, None]) % width
        source = np.zeros(count, dtype=np.int64) if is_broadcast(x) else np.arange(count)
        return x[source[:, None, None, None], np.arange(channels)[None, :, None, None],
                 rows[:, None, :, None], columns[:, None, None, :]]

    def stages(self, x: np.ndarray, rng: np.random.Generator, group: str) -> list[tuple[str, np.ndarray]]:
        index = rng.integers(0, self.side * self.side, size=len(x))
        s_y, s_x = self.shift(index[:1])
        return [(f"shift down {int(s_y[0]):+d}, right {int(s_x[0]):+d}", self.views(x, index, group))]

    def certify(self, selection: Votes | None, estimation: Votes, alpha: float) -> Certificate:
        counts = estimation.total()
        views = self.side * self.side
        if int(counts.sum()) != views:
            raise CertifyError(f"plugin translation got {int(counts.sum())} votes for one input; it needs all "
                               f"(2K+1)^2 = {views} views exactly once")
        order = np.argsort(-counts, kind="stable")  # the engine's top class: ties go to the lower index
        top = int(order[0])
        runner_up = int(order[1]) if len(order) > 1 else top + 1
        top_votes = int(counts[top])
        runner_up_votes = int(counts[runner_up]) if len(order) > 1 else 0
        budget = vote_budget(top, top_votes, runner_up, runner_up_votes)
        largest, by_x = certified_shifts(self.k, budget)
        return Certificate(
            top, float(largest), exact=True,
            details={"votes": top_votes, "runner_up": runner_up, "runner_up_votes": runner_up_votes, "views": views,
                     "changed_views_allowed": budget, "largest_t_y_by_t_x": by_x},
        )


@hookimpl
def register_methods(register):
    register(Translation)
