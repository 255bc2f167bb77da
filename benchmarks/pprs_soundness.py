"""Empirical failure rate of PPRS certificates against a closed form.

A linear classifier f(v) = [w . v + b > 0] on 6x6 images under a fixed 2x2-cell grid
partition A: the composite f(A u) is the half-space [(A w) . u + b > 0], so the smoothed
classifier's exact L2 radius at x is |(A w) . x + b| / ||A w||. A certificate fails when
it predicts the wrong side or claims more than that radius; with probability at least
1 - alpha per input it must not.

    python benchmarks/pprs_soundness.py [--points 2000] [--repeats 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

import certifier
from certifier_plugins import superpixels

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from onnx_models import hyperplane_model, save  # noqa: E402

SHAPE = (1, 6, 6)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()

    labels = superpixels.grid_labels(6, 6, 9).ravel()
    same = labels[:, None] == labels[None, :]
    matrix = same / same.sum(axis=1, keepdims=True)
    direction = np.random.default_rng(12).integers(-2, 5, 36).astype(np.float64)
    effective = matrix @ direction
    offset = -0.5 * effective.sum()

    def margin(points):
        return (points.reshape(len(points), -1) @ effective + offset) / np.linalg.norm(effective)

    with tempfile.TemporaryDirectory() as folder:
        path = save(hyperplane_model(direction, offset, SHAPE), Path(folder) / "plane.onnx")
        options = {"method": "grid", "segments": 9}
        rows = []

        # 1. random inputs in [0, 1]^d
        sigma, alpha, n = 0.5, 0.05, 500
        run = certifier.load(path, plugin="pprs", sigma=sigma, options=options)
        points = np.random.default_rng(7).uniform(0, 1, size=(args.points, *SHAPE)).astype(np.float32)
        m = margin(points)
        results = run.certify(points, n0=50, n=n, alpha=alpha, batch_size=600, seed=3)
        fails = sum(1 for r in results if r.prediction is not None
                    and ((r.prediction == 1) != (m[r.index] > 0) or r.radius > abs(m[r.index])))
        certified = sum(r.prediction is not None for r in results)
        rows.append(("random inputs", sigma, alpha, n, len(points), certified, fails))

        # 2. one input at distance 0.05 from the boundary, many independent certifications
        sigma, alpha, n = 0.25, 0.1, 200
        run = certifier.load(path, plugin="pprs", sigma=sigma, options=options)
        base = np.full(36, 0.5)
        base += (0.05 - margin(base.reshape(1, *SHAPE))[0]) * effective / np.linalg.norm(effective)
        points = np.repeat(base.reshape(1, *SHAPE).astype(np.float32), args.repeats, axis=0)
        results = run.certify(points, n0=20, n=n, alpha=alpha, batch_size=256, seed=11)
        fails = sum(1 for r in results if r.prediction is not None and (r.prediction != 1 or r.radius > 0.05))
        certified = sum(r.prediction is not None for r in results)
        rows.append(("near the boundary (exact radius 0.05)", sigma, alpha, n, len(points), certified, fails))

    print("| experiment | sigma | alpha | n | inputs | certified | failures | failure rate | 99.9% binomial limit |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, sigma, alpha, n, inputs, certified, fails in rows:
        limit = stats.binom.ppf(0.999, inputs, alpha)
        print(f"| {name} | {sigma} | {alpha} | {n} | {inputs} | {certified} | {fails} | {fails / inputs:.4f} | "
              f"{int(limit)} |")


if __name__ == "__main__":
    main()
