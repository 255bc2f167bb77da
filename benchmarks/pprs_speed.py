"""Seconds per certified input: PPRS (each partition) against RS, on the same model, in one process.

Methods are interleaved round by round and the medians compared, so a change in the
machine's load hits all of them alike. Also times the superpixel kernels against
scikit-image's per-image functions on the same noisy samples.

    python benchmarks/pprs_speed.py MODEL.onnx --images 4 -n 10000 --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import certifier
from certifier_plugins import superpixels

METHODS = ["slic", "grid", "felzenszwalb", "quickshift"]


def certify_seconds(run, x, n, workers):
    started = time.perf_counter()
    run.certify(x, n0=100, n=n, alpha=0.001, seed=0, workers=workers)
    return (time.perf_counter() - started) / len(x)


def kernels(x, sigma, rounds):
    """Microseconds per image: our batched kernels and skimage's per-image calls."""
    import skimage.segmentation as skseg

    noisy = (x[:, 0, :, :, None] + sigma * np.random.default_rng(0).standard_normal(
        x[:, 0, :, :, None].shape)).astype(np.float32)
    pairs = {
        "slic": (lambda: superpixels.slic(noisy, n_segments=49, compactness=0.5, max_num_iter=5),
                 lambda: [skseg.slic(i[..., 0], n_segments=49, compactness=0.5, max_num_iter=5, channel_axis=None)
                          for i in noisy]),
        "felzenszwalb": (lambda: superpixels.felzenszwalb(noisy),
                         lambda: [skseg.felzenszwalb(i[..., 0]) for i in noisy]),
        "quickshift": (lambda: superpixels.quickshift(noisy, kernel_size=1, max_dist=3),
                       lambda: [skseg.quickshift(i, kernel_size=1, max_dist=3, convert2lab=False) for i in noisy]),
    }
    times = {}
    for _ in range(rounds):
        for name, (ours, theirs) in pairs.items():
            for label, call in (("batched", ours), ("skimage", theirs)):
                started = time.perf_counter()
                call()
                times.setdefault(f"{name} {label}", []).append((time.perf_counter() - started) / len(noisy) * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", default="../shared/data/fashion_mnist.npz")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with np.load(args.data) as data:
        x = data["x_test"][: args.images].astype(np.float32)[:, None] / 255
    runs = {"rs": certifier.load(args.model, plugin="rs", threads=args.threads)}
    sigma = runs["rs"].method.sigma
    for method in args.methods.split(","):
        runs[f"pprs-{method}"] = certifier.load(args.model, plugin="pprs", sigma=sigma,
                                                 options={"method": method}, threads=args.threads)
    for run in runs.values():  # compile the kernels and warm onnxruntime up
        run.certify(x[:1], n0=10, n=200, seed=1)
    seconds = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            seconds[name].append(certify_seconds(run, x, args.n, args.workers))
    median = {name: statistics.median(v) for name, v in seconds.items()}
    report = {
        "model": args.model, "n": args.n, "images": args.images, "rounds": args.rounds, "threads": args.threads,
        "workers": args.workers, "seconds_per_input": median,
        "ratio_to_rs": {name: median[name] / median["rs"] for name in median},
        # the ratio within each round, then its median: robust to slow drifts of the machine
        "median_round_ratio_to_rs": {name: statistics.median(s / r for s, r in zip(v, seconds["rs"]))
                                     for name, v in seconds.items()},
        "kernel_us_per_image": kernels(x.repeat(max(1, 256 // len(x)), axis=0), sigma, args.rounds),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.model}: n = {args.n}, {args.images} inputs, median of {args.rounds} interleaved rounds, "
          f"threads {args.threads}, workers {args.workers}")
    print(f"{'method':20s} {'s / input':>10s} {'x RS':>6s} {'x RS per round (median, min-max)':>34s}")
    for name in runs:
        per_round = [s / r for s, r in zip(seconds[name], seconds["rs"])]
        print(f"{name:20s} {median[name]:10.3f} {median[name] / median['rs']:6.2f} "
              f"{statistics.median(per_round):>14.2f} ({min(per_round):.2f}-{max(per_round):.2f})")
    print("superpixel kernels, microseconds per 28x28 image:")
    for name, value in report["kernel_us_per_image"].items():
        print(f"  {name:26s} {value:8.1f}")


if __name__ == "__main__":
    main()
