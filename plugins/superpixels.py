"""Batched superpixel partitions and partition means, for PPRS.

scikit-image segments one image per call: about 0.6 ms for SLIC on a 28x28 image,
twenty times what a small model spends on it. The kernels here run the same
algorithms over a whole batch in compiled code (numba, without the GIL, so the
engine's worker threads run them side by side with onnxruntime):

- ``slic``: ``skimage.segmentation.slic`` (SLIC, not SLIC-zero, no mask, no
  pre-smoothing), including its per-image rescaling to [0, 1], Lab conversion of
  RGB images, fixed number of k-means iterations, float32 arithmetic and
  ``enforce_connectivity`` post-processing;
- ``felzenszwalb``: ``skimage.segmentation.felzenszwalb`` (Gaussian pre-smoothing,
  8-connected edge graph, greedy merging, small-segment post-processing);
- ``quickshift``: ``skimage.segmentation.quickshift`` (Parzen density with the same
  tie-breaking noise, links to the nearest denser pixel, ``max_dist`` cut);
- ``grid``: a fixed grid of square cells (an input-independent partition).

``tests/test_pprs_segmentation.py`` checks that the first three return the same
partition as scikit-image on the same float32 inputs, pixel for pixel. Labels are
numbered in order of first appearance in raster order, so equal partitions have
equal label arrays.

Images are ``(batch, H, W, C)`` float32 arrays; labels are ``(batch, H, W)`` int32
arrays with values ``0 .. count - 1`` per image.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from scipy import ndimage

_F32 = np.float32
#: pixels per vectorized block in the SLIC kernel
LANES = 16
#: window remainders this short are done pixel by pixel rather than as a masked block
SCALAR_TAIL = 2
_JIT = dict(nogil=True, cache=True)


# -- shared -----------------------------------------------------------------------


@numba.njit(**_JIT)
def _relabel_first_seen(labels, scratch):
    """Renumber one image's labels 0, 1, ... in order of first appearance; returns the count."""
    scratch[:] = -1
    count = 0
    flat = labels.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        if scratch[old] < 0:
            scratch[old] = count
            count += 1
        flat[i] = scratch[old]
    return count


@numba.njit(**_JIT)
def _means_kernel(values, labels, out):
    """out[b] = values[b] with every pixel replaced by the mean of its segment."""
    batch, height, width, channels = values.shape
    pixels = height * width
    sums = np.zeros((pixels, channels), dtype=np.float64)
    counts = np.zeros(pixels, dtype=np.int64)
    for b in range(batch):
        top = 0
        for y in range(height):
            for x in range(width):
                k = labels[b, y, x]
                if k + 1 > top:
                    top = k + 1
                counts[k] += 1
                for c in range(channels):
                    sums[k, c] += values[b, y, x, c]
        for k in range(top):
            if counts[k] > 0:
                for c in range(channels):
                    sums[k, c] /= counts[k]
        for y in range(height):
            for x in range(width):
                k = labels[b, y, x]
                for c in range(channels):
                    out[b, y, x, c] = sums[k, c]
        for k in range(top):
            counts[k] = 0
            for c in range(channels):
                sums[k, c] = 0.0


def segment_means(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Replace every pixel of ``values`` (B, H, W, C) by the mean of its segment in ``labels`` (B, H, W)."""
    values = np.ascontiguousarray(values, dtype=_F32)
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    if labels.size and (labels.min() < 0 or labels.max() >= values.shape[1] * values.shape[2]):
        raise ValueError("labels must lie in 0 .. H * W - 1")
    out = np.empty_like(values)
    _means_kernel(values, labels, out)
    return out


def _rescale_each(images: np.ndarray) -> np.ndarray:
    """skimage's per-image rescaling to [0, 1] (min over all pixels and channels), in float32."""
    images = np.array(images, dtype=_F32, copy=True)
    flat = images.reshape(len(images), -1)
    low = flat.min(axis=1)
    high = flat.max(axis=1)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError("images must be finite")
    images -= low[:, None, None, None]
    spread = high - low
    varying = spread != 0
    images[varying] /= spread[varying][:, None, None, None]
    return images


def _to_lab(images: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(images)


# -- SLIC -------------------------------------------------------------------------


@numba.njit(**_JIT)
def _window(center, reach, size):
    """skimage's search window [low, high) of a centre along one axis."""
    low = center - reach
    high = (center + reach) + _F32(1.0)
    return (int(low) if low > 0 else 0), (int(high) if high < size else size)


@numba.njit(**_JIT)
def _slic_image(image, plane, seeds, step_y, step_x, spatial_weight, iterations, labels, distance, centers, counts,
                windows, first_assignment, use_first):
    """skimage's ``_slic_cython`` for one 2D image (depth 1, unit spacing, no mask, SLIC not SLIC-zero).

    Arithmetic is float32 as in skimage for a float32 image, in the same order. Labels
    are 1 .. K, 0 for a pixel no cluster window ever covered (skimage's ``start_label - 1``).
    Clusters are visited in order and a pixel moves only to a strictly closer one, so
    ties go to the lowest-numbered cluster, as in skimage. The row loops store
    unconditionally (a select, not a branch) so that LLVM vectorizes them.

    ``plane`` holds a grey image, ``labels`` and ``distance`` the results, each
    ``LANES`` columns wider than the image.
    """
    height, width, channels = image.shape
    padded = plane.shape[1]
    plane_flat = plane.reshape(-1)
    distance_flat = distance.reshape(-1)
    labels_flat = labels.reshape(-1)
    clusters = seeds.shape[0]
    features = 2 + channels
    reach_y = _F32(2 * step_y)
    reach_x = _F32(2 * step_x)
    zero = _F32(0.0)
    for k in range(clusters):
        centers[k, 0] = seeds[k, 0]
        centers[k, 1] = seeds[k, 1]
        for c in range(channels):
            centers[k, 2 + c] = zero
    labels[:, :] = 0
    for iteration in range(iterations):
        for k in range(clusters):
            if centers[k, 0] == centers[k, 0]:
                windows[k, 0], windows[k, 1] = _window(centers[k, 0], reach_y, height)
                windows[k, 2], windows[k, 3] = _window(centers[k, 1], reach_x, width)
            else:  # an emptied cluster (0 / 0 in skimage) never wins a pixel
                windows[k, :] = 0
        if iteration == 0 and use_first:
            # the first assignment does not depend on the image (see SlicPlan.first_labels)
            labels[:, :width] = first_assignment
        else:
            distance[:, :] = np.inf
            for k in range(clusters):
                cy = centers[k, 0]
                cx = centers[k, 1]
                y_min, y_max, x_min, x_max = windows[k, 0], windows[k, 1], windows[k, 2], windows[k, 3]
                label = np.int32(k + 1)
                for y in range(y_min, y_max):
                    dy = cy - _F32(y)
                    dy = dy * dy
                    if channels == 1:
                        # Blocks of a fixed LANES pixels, masked at the window's end, let LLVM
                        # vectorize the whole block (the buffers are LANES wider than the image;
                        # unsigned flat indices spare it negative-index checks); a short tail
                        # is cheaper one pixel at a time.
                        grey = centers[k, 2]
                        start = x_min
                        row = y * padded
                        while x_max - start > SCALAR_TAIL:
                            base = np.uint64(row + start)
                            inside = _F32(x_max - start)
                            first = _F32(start)
                            for i in range(np.uint64(LANES)):
                                offset = _F32(i)
                                dx = cx - (first + offset)
                                dist = (dy + dx * dx) * spatial_weight
                                t = plane_flat[base + i] - grey
                                dist += t * t
                                old = distance_flat[base + i]
                                closer = (old > dist) & (offset < inside)
                                distance_flat[base + i] = dist if closer else old
                                labels_flat[base + i] = label if closer else labels_flat[base + i]
                            start += LANES
                        for x in range(start, x_max):
                            dx = cx - _F32(x)
                            dist = (dy + dx * dx) * spatial_weight
                            t = plane[y, x] - grey
                            dist += t * t
                            if distance[y, x] > dist:
                                labels[y, x] = label
                                distance[y, x] = dist
                    else:
                        for x in range(x_min, x_max):
                            dx = cx - _F32(x)
                            dist = (dy + dx * dx) * spatial_weight
                            color = zero
                            for c in range(channels):
                                t = image[y, x, c] - centers[k, 2 + c]
                                color += t * t
                            dist += color
                            old = distance[y, x]
                            closer = old > dist
                            distance[y, x] = dist if closer else old
                            labels[y, x] = label if closer else labels[y, x]
        if iteration == iterations - 1:
            break  # skimage also moves the centres after the last assignment; labels do not change
        centers[:, :] = zero
        counts[:] = 0
        if channels == 1:
            # Sums in raster order as skimage, but carried in registers along a run of
            # pixels of one cluster rather than through memory pixel by pixel.
            for y in range(height):
                fy = _F32(y)
                x = 0
                while x < width:
                    k = labels[y, x] - 1
                    if k < 0:
                        x += 1
                        continue
                    sum_y, sum_x, sum_grey, count = centers[k, 0], centers[k, 1], centers[k, 2], counts[k]
                    while x < width and labels[y, x] == k + 1:
                        count += 1
                        sum_y += fy
                        sum_x += _F32(x)
                        sum_grey += plane[y, x]
                        x += 1
                    centers[k, 0], centers[k, 1], centers[k, 2], counts[k] = sum_y, sum_x, sum_grey, count
        else:
            for y in range(height):
                for x in range(width):
                    k = labels[y, x] - 1
                    if k < 0:
                        continue
                    counts[k] += 1
                    centers[k, 0] += _F32(y)
                    centers[k, 1] += _F32(x)
                    for c in range(channels):
                        centers[k, 2 + c] += image[y, x, c]
        for k in range(clusters):
            if counts[k] == 0:
                for f in range(features):
                    centers[k, f] = np.nan
            else:
                n = _F32(counts[k])
                for f in range(features):
                    centers[k, f] = centers[k, f] / n


@numba.njit(**_JIT)
def _enforce_connectivity(segments, min_size, max_size, out, queue):
    """skimage's ``_enforce_label_connectivity_cython`` for one 2D image (start_label 1).

    Connected pieces of a label become segments of their own, numbered in raster
    order; a piece smaller than ``min_size`` joins the last neighbouring segment met
    by its breadth-first search (x+1, x-1, y+1, y-1), as in the SLIC paper.
    """
    height, width = segments.shape
    out[:, :] = 0
    new_label = 1
    for y in range(height):
        for x in range(width):
            if segments[y, x] == 0 or out[y, x] > 0:
                continue
            adjacent = new_label
            label = segments[y, x]
            out[y, x] = new_label
            size = 1
            visited = 0
            queue[0, 0] = y
            queue[0, 1] = x
            while visited < size and size < max_size:
                yy = queue[visited, 0]
                xx = queue[visited, 1]
                visited += 1
                for i in range(4):
                    if i == 0:
                        ny, nx = yy, xx + 1
                        if nx >= width:
                            continue
                    elif i == 1:
                        ny, nx = yy, xx - 1
                        if nx < 0:
                            continue
                    elif i == 2:
                        ny, nx = yy + 1, xx
                        if ny >= height:
                            continue
                    else:
                        ny, nx = yy - 1, xx
                        if ny < 0:
                            continue
                    seen = out[ny, nx]
                    if seen == 0 and segments[ny, nx] == label:
                        out[ny, nx] = new_label
                        queue[size, 0] = ny
                        queue[size, 1] = nx
                        size += 1
                        if size >= max_size:
                            break
                    elif seen > 0 and seen != new_label:
                        adjacent = seen
            if size < min_size:
                for i in range(size):
                    out[queue[i, 0], queue[i, 1]] = adjacent
            else:
                new_label += 1


@numba.njit(**_JIT)
def _slic_batch(images, seeds, step_y, step_x, spatial_weight, iterations, connect, min_size, max_size,
                first_assignment, use_first, out):
    batch, height, width, channels = images.shape
    clusters = seeds.shape[0]
    labels = np.zeros((height, width + LANES), dtype=np.int32)
    distance = np.empty((height, width + LANES), dtype=np.float32)
    plane = np.zeros((height, width + LANES), dtype=np.float32)
    windows = np.zeros((clusters, 4), dtype=np.int64)
    centers = np.empty((clusters, 2 + channels), dtype=np.float32)
    counts = np.empty(clusters, dtype=np.int64)
    queue = np.empty((max(max_size, 1) + 1, 2), dtype=np.int64)
    scratch = np.empty(max(clusters, height * width) + 2, dtype=np.int64)
    for b in range(batch):
        if channels == 1:
            plane[:, :width] = images[b, :, :, 0]
        _slic_image(images[b], plane, seeds, step_y, step_x, spatial_weight, iterations, labels, distance, centers,
                    counts, windows, first_assignment, use_first)
        if connect:
            _enforce_connectivity(labels[:, :width], min_size, max_size, out[b], queue)
        else:
            out[b] = labels[:, :width]
        _relabel_first_seen(out[b], scratch)


@numba.njit(**_JIT)
def _spatial_assignment(seeds, height, width, step_y, step_x, spatial_weight):
    """Cluster numbers (1 .. K) of the first assignment of a blank grey image: the spatial term alone."""
    clusters = seeds.shape[0]
    blank = np.zeros((height, width, 1), dtype=np.float32)
    plane = np.zeros((height, width + LANES), dtype=np.float32)
    labels = np.zeros((height, width + LANES), dtype=np.int32)
    distance = np.empty((height, width + LANES), dtype=np.float32)
    windows = np.zeros((clusters, 4), dtype=np.int64)
    centers = np.empty((clusters, 3), dtype=np.float32)
    counts = np.empty(clusters, dtype=np.int64)
    unused = np.zeros((height, width), dtype=np.int32)
    _slic_image(blank, plane, seeds, step_y, step_x, spatial_weight, 1, labels, distance, centers, counts, windows,
                unused, False)
    return labels[:, :width].copy()


class SlicPlan:
    """The input-independent part of skimage's ``slic`` for one image shape and setting."""

    def __init__(self, height: int, width: int, n_segments: int, compactness: float):
        from skimage.util import regular_grid

        slices = regular_grid((1, height, width), n_segments)
        grid_z, grid_y, grid_x = np.mgrid[:1, :height, :width]
        self.seeds = np.ascontiguousarray(
            np.stack([grid_y[slices].ravel(), grid_x[slices].ravel()], axis=1), dtype=_F32
        )
        steps = [float(s.step) if s.step is not None else 1.0 for s in slices]
        # skimage's kernel recomputes the grid for the number of seeds it got (which can
        # differ from n_segments) and uses its integer steps for the search windows
        window = regular_grid((1, height, width), len(self.seeds))
        self.step_y, self.step_x = (int(s.step if s.step is not None else 1) for s in window[1:])
        step = _F32(max(steps))
        # skimage: ``np_floats spatial_weight = 1.0 / (step * step)`` with a C float step
        self.spatial_weight = _F32(1.0 / float(step * step))
        self.ratio = 1.0 / compactness
        self.segment_size = height * width / len(self.seeds)
        self.height, self.width = height, width
        self._first: np.ndarray | None = None

    def spatial_terms(self) -> np.ndarray:
        """Every float32 spatial term ``(dy^2 + dx^2) * spatial_weight`` of the first
        assignment (seed to pixel of its search window), computed as the kernel does."""
        terms = []
        for cy, cx in self.seeds:
            y0, y1 = _window(cy, _F32(2 * self.step_y), self.height)
            x0, x1 = _window(cx, _F32(2 * self.step_x), self.width)
            dy = cy - np.arange(y0, y1, dtype=_F32)
            dx = cx - np.arange(x0, x1, dtype=_F32)
            terms.append(((dy * dy)[:, None] + (dx * dx)[None, :]) * self.spatial_weight)
        return np.concatenate([t.ravel() for t in terms])

    @functools.cached_property
    def _spatial_gap(self) -> tuple[float | None, float]:
        """The smallest gap between different spatial terms (None if all are equal) and the largest."""
        terms = np.unique(self.spatial_terms())
        return (float(np.diff(terms).min()) if len(terms) > 1 else None), float(terms[-1])

    def first_labels(self, colour_bound: float) -> np.ndarray | None:
        """The first assignment's cluster numbers when they cannot depend on the image.

        The seeds start with colour 0, so a pixel's first distance to every cluster is
        that cluster's spatial term plus one and the same colour term C <= colour_bound:
        the least spatial term wins, the lowest cluster on ties, as for a blank image,
        unless adding C rounds two different spatial terms to one float32. It cannot
        when they differ by more than twice the float32 spacing at their largest plus
        colour_bound; otherwise None (the kernel then assigns as usual).
        """
        gap, largest = self._spatial_gap
        if gap is not None and not gap > 2 * float(np.spacing(_F32(largest + colour_bound))):
            return None
        if self._first is None:
            self._first = _spatial_assignment(self.seeds, self.height, self.width, self.step_y, self.step_x,
                                              self.spatial_weight)
        return self._first

    def connectivity_sizes(self, min_size_factor: float, max_size_factor: float) -> tuple[int, int]:
        return int(min_size_factor * self.segment_size), int(max_size_factor * self.segment_size)


@functools.lru_cache(maxsize=32)
def slic_plan(height: int, width: int, n_segments: int, compactness: float) -> SlicPlan:
    return SlicPlan(height, width, n_segments, compactness)


def slic(images: np.ndarray, *, n_segments: int = 100, compactness: float = 10.0, max_num_iter: int = 10,
         enforce_connectivity: bool = True, min_size_factor: float = 0.5, max_size_factor: float = 3.0,
         convert2lab: bool | None = None) -> np.ndarray:
    """Labels of ``skimage.segmentation.slic`` for each image of a (B, H, W, C) float32 batch.

    Grey images (C = 1) match ``slic(image[..., 0], channel_axis=None, ...)``; colour
    images match ``slic(image, channel_axis=-1, ...)`` (RGB is converted to Lab
    unless ``convert2lab`` is False).
    """
    batch, height, width, channels = images.shape
    plan = slic_plan(height, width, int(n_segments), float(compactness))
    work = _rescale_each(images)
    if channels > 1 and (convert2lab or (convert2lab is None and channels == 3)):
        if channels != 3:
            raise ValueError("Lab conversion needs RGB images")
        work = _to_lab(work)
    work = np.ascontiguousarray(work * plan.ratio, dtype=_F32)
    min_size, max_size = plan.connectivity_sizes(min_size_factor, max_size_factor)
    out = np.empty((batch, height, width), dtype=np.int32)
    first = None
    if work.shape[-1] == 1:
        # grey values are rescaled to [0, 1], then scaled by the ratio
        ratio = float(_F32(plan.ratio))
        first = plan.first_labels(ratio * ratio * 1.001)
    _slic_batch(work, plan.seeds, plan.step_y, plan.step_x, plan.spatial_weight, int(max_num_iter),
                bool(enforce_connectivity), min_size, max_size,
                first if first is not None else np.zeros((height, width), dtype=np.int32), first is not None, out)
    return out


# -- Felzenszwalb -----------------------------------------------------------------


@numba.njit(**_JIT)
def _find_root(forest, node):
    root = node
    while forest[root] < root:
        root = forest[root]
    # path compression: every node on the way points at the root
    while forest[node] < node:
        parent = forest[node]
        forest[node] = root
        node = parent
    return root


@numba.njit(**_JIT)
def _felzenszwalb_batch(edges, order, costs, scale, min_size, out):
    """skimage's ``_felzenszwalb_cython`` merging loop for each image.

    ``costs[b]`` are one image's edge costs, ``order[b]`` their argsort (computed by
    numpy exactly as skimage does), ``edges`` the pixel pairs in skimage's order.
    Union-find roots are the smallest pixel index of a segment, as in skimage.
    """
    batch, height, width = out.shape
    pixels = height * width
    forest = np.empty(pixels, dtype=np.int64)
    size = np.empty(pixels, dtype=np.int64)
    inner = np.empty(pixels, dtype=np.float64)
    scratch = np.empty(pixels, dtype=np.int64)
    count = order.shape[1]
    for b in range(batch):
        for p in range(pixels):
            forest[p] = p
            size[p] = 1
            inner[p] = 0.0
        for i in range(count):
            e = order[b, i]
            seg0 = _find_root(forest, edges[e, 0])
            seg1 = _find_root(forest, edges[e, 1])
            if seg0 == seg1:
                continue
            # skimage keeps these two in C floats
            inner0 = np.float32(inner[seg0] + scale / size[seg0])
            inner1 = np.float32(inner[seg1] + scale / size[seg1])
            threshold = inner0 if inner0 < inner1 else inner1
            cost = costs[b, e]
            if cost < np.float64(threshold):
                root, child = (seg0, seg1) if seg0 < seg1 else (seg1, seg0)
                forest[child] = root
                size[root] = size[seg0] + size[seg1]
                inner[root] = cost
        for i in range(count):
            e = order[b, i]
            seg0 = _find_root(forest, edges[e, 0])
            seg1 = _find_root(forest, edges[e, 1])
            if seg0 == seg1:
                continue
            if size[seg0] < min_size or size[seg1] < min_size:
                root, child = (seg0, seg1) if seg0 < seg1 else (seg1, seg0)
                forest[child] = root
                size[root] = size[seg0] + size[seg1]
        flat = out[b].reshape(-1)
        for p in range(pixels):
            flat[p] = _find_root(forest, p)
        _relabel_first_seen(out[b], scratch)


_EDGE_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _felzenszwalb_edges(height: int, width: int) -> np.ndarray:
    """Pixel pairs in skimage's order: right, down, down-right, up-right neighbours."""
    key = (height, width)
    if key not in _EDGE_CACHE:
        index = np.arange(height * width, dtype=np.int64).reshape(height, width)
        pairs = [
            (index[:, 1:], index[:, :-1]),
            (index[1:, :], index[:-1, :]),
            (index[1:, 1:], index[:-1, :-1]),
            (index[:-1, 1:], index[1:, :-1]),
        ]
        _EDGE_CACHE[key] = np.ascontiguousarray(
            np.concatenate([np.stack([a.ravel(), b.ravel()], axis=1) for a, b in pairs]))
    return _EDGE_CACHE[key]


@numba.njit(**_JIT)
def _edge_costs_kernel(image, out):
    """Euclidean colour distance of every edge in ``_felzenszwalb_edges`` order, float64,
    summing channels in order as numpy's ``sum`` does for so few values."""
    batch, height, width, channels = image.shape
    for b in range(batch):
        e = 0
        for direction in range(4):
            # right, down, down-right, up-right: the pixel pairs of _felzenszwalb_edges
            y0 = 1 if direction == 3 else 0
            y1 = height if direction == 3 else (height - 1 if direction > 0 else height)
            for y in range(y0, y1):
                x1 = width if direction == 1 else width - 1
                for x in range(x1):
                    if direction == 0:
                        ya, xa, yb, xb = y, x + 1, y, x
                    elif direction == 1:
                        ya, xa, yb, xb = y + 1, x, y, x
                    elif direction == 2:
                        ya, xa, yb, xb = y + 1, x + 1, y, x
                    else:
                        ya, xa, yb, xb = y, x, y - 1, x + 1
                    total = 0.0
                    for c in range(channels):
                        d = image[b, ya, xa, c] - image[b, yb, xb, c]
                        total += d * d
                    out[b, e] = math.sqrt(total)
                    e += 1


def _edge_costs(image: np.ndarray) -> np.ndarray:
    """Euclidean colour distance of each edge, (B, E) float64, as skimage computes it."""
    batch, height, width, _ = image.shape
    out = np.empty((batch, len(_felzenszwalb_edges(height, width))), dtype=np.float64)
    _edge_costs_kernel(np.ascontiguousarray(image, dtype=np.float64), out)
    return out


def felzenszwalb(images: np.ndarray, *, scale: float = 1.0, sigma: float = 0.8, min_size: int = 20) -> np.ndarray:
    """Labels of ``skimage.segmentation.felzenszwalb`` for each image of a (B, H, W, C) batch.

    Grey images (C = 1) match ``felzenszwalb(image[..., 0], ...)``, colour images
    ``felzenszwalb(image, channel_axis=-1, ...)``.
    """
    batch, height, width, channels = images.shape
    image = np.asarray(images, dtype=np.float64)
    image = ndimage.gaussian_filter(image, [0, sigma, sigma, 0], mode="reflect", truncate=4.0)
    costs = _edge_costs(image)
    order = np.argsort(costs, axis=1)
    out = np.empty((batch, height, width), dtype=np.int32)
    _felzenszwalb_batch(_felzenszwalb_edges(height, width), order, costs, float(scale) / 255.0, int(min_size), out)
    return out


# -- Quickshift -------------------------------------------------------------------


@numba.njit(**_JIT)
def _quickshift_batch(images, noise, kernel_size, max_dist, out):
    """skimage's ``_quickshift_cython`` for each image (float32 arithmetic, C ``exp``).

    Each pair's squared distance and kernel value are computed once and reused for both
    pixels and both passes: they are bitwise the numbers skimage computes twice.
    """
    batch, height, width, channels = images.shape
    pixels = height * width
    inv_kernel = np.float32(-0.5 / np.float64(np.float32(kernel_size * kernel_size)))
    reach = int(math.ceil(np.float64(np.float32(3.0) * kernel_size)))
    side = 2 * reach + 1
    dist = np.empty((pixels, side * side), dtype=np.float32)
    kernel = np.empty((pixels, side * side), dtype=np.float64)
    density = np.empty(pixels, dtype=np.float32)
    parent = np.empty(pixels, dtype=np.int64)
    scratch = np.empty(pixels, dtype=np.int64)
    for b in range(batch):
        image = images[b]
        # squared distances to every pixel of the window, once per unordered pair
        for r in range(height):
            for c in range(width):
                p = r * width + c
                for dr in range(-reach, reach + 1):
                    r2 = r + dr
                    if r2 < 0 or r2 >= height:
                        continue
                    for dc in range(-reach, reach + 1):
                        c2 = c + dc
                        if c2 < 0 or c2 >= width:
                            continue
                        slot = (dr + reach) * side + (dc + reach)
                        q = r2 * width + c2
                        if q < p:
                            mirror = (reach - dr) * side + (reach - dc)
                            dist[p, slot] = dist[q, mirror]
                            kernel[p, slot] = kernel[q, mirror]
                            continue
                        d = np.float32(0.0)
                        for ch in range(channels):
                            t = image[r, c, ch] - image[r2, c2, ch]
                            d += t * t
                        t = np.float32(r - r2)
                        d += t * t
                        t = np.float32(c - c2)
                        d += t * t
                        dist[p, slot] = d
                        kernel[p, slot] = math.exp(np.float64(d * inv_kernel))
        for r in range(height):
            for c in range(width):
                p = r * width + c
                total = noise[r, c]
                for dr in range(-reach, reach + 1):
                    r2 = r + dr
                    if r2 < 0 or r2 >= height:
                        continue
                    for dc in range(-reach, reach + 1):
                        c2 = c + dc
                        if c2 < 0 or c2 >= width:
                            continue
                        total = np.float32(np.float64(total) + kernel[p, (dr + reach) * side + (dc + reach)])
                density[p] = total
        for r in range(height):
            for c in range(width):
                p = r * width + c
                own = density[p]
                closest = np.float32(np.inf)
                parent[p] = p
                for dr in range(-reach, reach + 1):
                    r2 = r + dr
                    if r2 < 0 or r2 >= height:
                        continue
                    for dc in range(-reach, reach + 1):
                        c2 = c + dc
                        if c2 < 0 or c2 >= width:
                            continue
                        q = r2 * width + c2
                        if density[q] > own:
                            d = dist[p, (dr + reach) * side + (dc + reach)]
                            if d < closest:
                                closest = d
                                parent[p] = q
                if np.float32(math.sqrt(np.float64(closest))) > max_dist:
                    parent[p] = p
        # each pixel's root is its tree's densest pixel
        flat = out[b].reshape(-1)
        for p in range(pixels):
            root = p
            while parent[root] != root:
                root = parent[root]
            flat[p] = root
        _relabel_first_seen(out[b], scratch)


def quickshift(images: np.ndarray, *, ratio: float = 1.0, kernel_size: float = 5.0, max_dist: float = 10.0,
               convert2lab: bool | None = None, seed: int = 42) -> np.ndarray:
    """Labels of ``skimage.segmentation.quickshift`` for each image of a (B, H, W, C) float32 batch.

    Grey images (C = 1) match ``quickshift(image[..., None], convert2lab=False, ...)``;
    RGB images are converted to Lab unless ``convert2lab`` is False. ``seed`` is
    skimage's ``rng``: it draws the same tie-breaking noise for every image.
    """
    batch, height, width, channels = images.shape
    if kernel_size < 1:
        raise ValueError("kernel_size must be at least 1")
    work = np.asarray(images, dtype=_F32)
    if convert2lab or (convert2lab is None and channels == 3):
        if channels != 3:
            raise ValueError("Lab conversion needs RGB images")
        work = _to_lab(work).astype(_F32, copy=False)
    work = np.ascontiguousarray(work * ratio, dtype=_F32)
    noise = np.random.default_rng(seed).normal(scale=0.00001, size=(height, width)).astype(_F32)
    out = np.empty((batch, height, width), dtype=np.int32)
    _quickshift_batch(work, noise, _F32(kernel_size), _F32(max_dist), out)
    return out


# -- fixed grid -------------------------------------------------------------------


def grid_side(height: int, width: int, n_segments: int) -> int:
    """Side of the square cells that cut an H x W image into about ``n_segments`` cells."""
    return max(1, int(round(math.sqrt(height * width / max(1, n_segments)))))


def grid_labels(height: int, width: int, n_segments: int) -> np.ndarray:
    """A fixed partition into square cells of side ``grid_side`` (the last row and column may be narrower)."""
    side = grid_side(height, width, n_segments)
    columns = -(-width // side)
    rows = np.arange(height) // side
    cols = np.arange(width) // side
    return np.ascontiguousarray(rows[:, None] * columns + cols[None, :], dtype=np.int32)


def grid_means(values: np.ndarray, side: int) -> np.ndarray:
    """Means over square cells of ``side`` pixels for (B, C, H, W) arrays, by reshaping."""
    batch, channels, height, width = values.shape
    pad_h, pad_w = -height % side, -width % side
    if pad_h or pad_w:
        padded = np.zeros((batch, channels, height + pad_h, width + pad_w), dtype=np.float32)
        padded[:, :, :height, :width] = values
        ones = np.zeros((height + pad_h, width + pad_w), dtype=np.float32)
        ones[:height, :width] = 1
    else:
        padded, ones = values, None
    rows, cols = padded.shape[2] // side, padded.shape[3] // side
    sums = padded.reshape(batch, channels, rows, side, cols, side).sum(axis=(3, 5), dtype=np.float32)
    if ones is None:
        sums /= np.float32(side * side)
    else:
        sums /= ones.reshape(rows, side, cols, side).sum(axis=(1, 3))
    expanded = np.repeat(np.repeat(sums, side, axis=2), side, axis=3)
    return np.ascontiguousarray(expanded[:, :, :height, :width])
