"""Time per certified input with a denoiser: certify against bare onnxruntime running the two networks.

Command (from the repository root, with the project's venv active; about a minute on a quiet
2-core machine):

    python benchmarks/bench_denoised.py

which is the same as

    python benchmarks/bench_denoised.py --model models/fmnist-plain.onnx \\
        --denoiser models/fmnist-denoiser-stab-0.25.onnx --sigma 0.25 --inputs 3 -n 10000 --n0 100 \\
        --alpha 0.001 --rounds 3

Add ``--json summary.json`` (or ``--json -`` for stdout) for a machine-readable summary.

Measurements, on the same first K Fashion-MNIST test images with the same batch size:

* bare:     the limit. Two plain onnxruntime sessions with default options (what running the
            networks alone gives, one run spread over every core): the denoiser, then the
            classifier on its output, for n0 + n samples per input from noisy batches made in
            advance; no noise drawing, no counting.
* certify:  ``certifier.load(model, plugin="rs", sigma=..., denoiser=...).certify(x, n0=, n=, ...)``:
            the whole public API call (engine setup included).
* parallel: not a contender: bare's premade batches on certify's own composed session
            (denoiser, input mapping and classifier in one graph), as many runs side by side
            as certify runs. What certify's way of running the networks costs without views.
* plain:    not a contender: certify without the denoiser, the same classifier: what the
            denoiser adds to a certification.

Each round runs them one after another in a rotating order, so slow drifts of a busy machine hit
all of them alike; the summary is the median over rounds of the per-round ratios, and the load
average before and after is printed: on a loaded machine the figures are rough.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import Report, benchmark_parser, check_counts, load_average, medians

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "fmnist-plain.onnx"
DEFAULT_DENOISER = ROOT / "models" / "fmnist-denoiser-stab-0.25.onnx"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"
MEASUREMENTS = ("bare", "certify", "parallel", "plain")


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, model=DEFAULT_MODEL, data=DEFAULT_DATA, inputs=3, n=10_000,
                              inputs_help="first K test images", data_help=".npz with x_test (uint8 images)")
    parser.add_argument("--denoiser", type=Path, default=DEFAULT_DENOISER, help="ONNX denoiser (default: %(default)s)")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level (default: %(default)s)")
    return check_counts(parser, parser.parse_args(argv))


def batch_sizes(count: int, batch_size: int) -> list[int]:
    return [min(batch_size, count - start) for start in range(0, count, batch_size)]


class Bench:
    def __init__(self, args, run, plain, images: np.ndarray, batch_size: int):
        import onnxruntime

        self.args, self.run, self.plain, self.images, self.batch_size = args, run, plain, images, batch_size
        model = run.model
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.denoiser_session = onnxruntime.InferenceSession(str(args.denoiser), options, providers=model.providers)
        self.classifier_session = onnxruntime.InferenceSession(str(args.model), options, providers=model.providers)
        (group,) = run.groups(tuple(images.shape[1:])).values()
        self.composed = group.denoised
        rng = np.random.default_rng(2)
        full = images[0] + args.sigma * rng.standard_normal((batch_size, *images.shape[1:]), dtype=np.float32)
        self.premade = {batch_size: np.ascontiguousarray(full, dtype=np.float32)}
        self.check_same_labels()

    def premade_batch(self, size: int) -> np.ndarray:
        if size not in self.premade:
            self.premade[size] = self.premade[self.batch_size][:size].copy()
        return self.premade[size]

    def schedule(self, n: int) -> list[np.ndarray]:
        sizes = batch_sizes(self.args.n0, self.batch_size) + batch_sizes(n, self.batch_size)
        return [self.premade_batch(size) for size in sizes]

    def two_networks(self, batch: np.ndarray) -> np.ndarray:
        denoiser, classifier = self.denoiser_session, self.classifier_session
        denoised = denoiser.run(None, {denoiser.get_inputs()[0].name: batch})[0]
        return classifier.run(None, {classifier.get_inputs()[0].name: denoised})[0]

    def check_same_labels(self) -> None:
        """The two bare sessions and certify's composed graph give the same classes."""
        batch = self.premade_batch(min(self.batch_size, 512))
        bare = self.two_networks(batch).argmax(1)
        composed = self.composed.labels(batch)
        if not np.array_equal(bare, composed):
            raise SystemExit(f"bench_denoised: the composed graph and the two networks disagree on "
                             f"{int((bare != composed).sum())} of {len(batch)} views")

    def bare(self, round_number: int, n: int) -> list[float]:
        batches, seconds = self.schedule(n), []
        for _ in self.images:
            start = time.perf_counter()
            for batch in batches:
                self.two_networks(batch)
            seconds.append(time.perf_counter() - start)
        return seconds

    def _certify(self, run, round_number: int, n: int) -> list[float]:
        args, seconds = self.args, []
        start = time.perf_counter()
        for _ in run.results(self.images, n0=args.n0, n=n, alpha=args.alpha, batch_size=self.batch_size,
                             seed=round_number):
            now = time.perf_counter()
            seconds.append(now - start)  # the first one includes the engine's setup
            start = now
        return seconds

    def certify(self, round_number: int, n: int) -> list[float]:
        return self._certify(self.run, round_number, n)

    def plain_run(self, round_number: int, n: int) -> list[float]:
        return self._certify(self.plain, round_number, n)

    def parallel(self, round_number: int, n: int) -> list[float]:
        from concurrent.futures import ThreadPoolExecutor

        composed, batches, seconds = self.composed, self.schedule(n), []
        with ThreadPoolExecutor(composed.parallel_runs) as pool:
            for _ in self.images:
                start = time.perf_counter()
                list(pool.map(composed.labels, batches))
                seconds.append(time.perf_counter() - start)
        return seconds

    def measurement(self, name: str):
        return {"bare": self.bare, "certify": self.certify, "parallel": self.parallel, "plain": self.plain_run}[name]


def main(argv=None) -> int:
    args = parse_args(argv)
    report = Report(args.json)
    say = report.say

    import onnxruntime

    import certifier

    for role, path in (("model", args.model), ("denoiser", args.denoiser), ("data", args.data)):
        if not path.is_file():
            raise SystemExit(f"bench_denoised: no {role} at {path}")
    run = certifier.load(args.model, plugin="rs", sigma=args.sigma, denoiser=args.denoiser,
                         allow_denoiser_sigma_mismatch=True)
    plain = certifier.load(args.model, plugin="rs", sigma=args.sigma)
    with np.load(args.data, allow_pickle=False) as archive:
        raw = archive["x_test"][: args.inputs]
    images = (raw.astype(np.float32) / np.float32(255))[:, None]
    batch_size = args.batch_size or run.engine(tuple(images.shape[1:])).batch_size
    bench = Bench(args, run, plain, images, batch_size)
    model = run.model
    say(f"denoised smoothing benchmark: {args.model.name} behind {args.denoiser.name}, sigma {args.sigma:g}")
    say(f"  inputs: {args.data.name} x_test[0:{args.inputs}]; n0 {args.n0}, n {args.n}, alpha {args.alpha:g}, "
        f"batch {batch_size}{' (certify auto)' if args.batch_size is None else ''}, rounds {args.rounds}")
    say(f"  threads: bare: one run at a time, onnxruntime's default threads; certify and parallel: "
        f"{bench.composed.parallel_runs} runs side by side, one thread each; cores {os.cpu_count()}")
    say(f"  versions: python {platform.python_version()}, numpy {np.__version__}, onnxruntime "
        f"{onnxruntime.__version__} {model.providers[0]}")
    say(f"  load average before: {load_average()}")

    for name in MEASUREMENTS:  # warm-up: thread pools, kernels, lazy imports
        bench.measurement(name)(10_000, batch_size)

    rounds = []
    say()
    say(f"seconds per certified input ({args.n0 + args.n} samples each)")
    say(f"{'round':>5}  {'order':<30}" + "".join(f"{m:>9}" for m in MEASUREMENTS)
        + f"{'certify/bare':>14}{'certify/parallel':>18}{'certify/plain':>15}")
    for number in range(args.rounds):
        shift = number % len(MEASUREMENTS)
        order = MEASUREMENTS[shift:] + MEASUREMENTS[:shift]
        seconds = {}
        for name in order:
            seconds[name] = bench.measurement(name)(number, args.n)
            time.sleep(0.2)
        per_input = {name: sum(values) / len(values) for name, values in seconds.items()}
        ratios = {"certify/bare": per_input["certify"] / per_input["bare"],
                  "certify/parallel": per_input["certify"] / per_input["parallel"],
                  "certify/plain": per_input["certify"] / per_input["plain"]}
        rounds.append({"order": list(order), "per_input_seconds": per_input, "ratios": ratios})
        say(f"{number + 1:>5}  {','.join(order):<30}" + "".join(f"{per_input[m]:>9.3f}" for m in MEASUREMENTS)
            + f"{ratios['certify/bare']:>14.2f}{ratios['certify/parallel']:>18.2f}{ratios['certify/plain']:>15.2f}")
    ratios = medians([r["ratios"] for r in rounds])
    seconds_median = medians([r["per_input_seconds"] for r in rounds], MEASUREMENTS)
    say()
    say("median over rounds: " + ", ".join(f"{key} {value:.2f}" for key, value in ratios.items()))
    say("median seconds per input: " + ", ".join(f"{m} {v:.3f}" for m, v in seconds_median.items()))
    say(f"load average after: {load_average()}")
    report.write_json({"model": str(args.model), "denoiser": str(args.denoiser), "sigma": args.sigma,
                       "inputs": args.inputs, "n0": args.n0, "n": args.n, "batch_size": batch_size,
                       "rounds": rounds, "median_ratios": ratios, "median_seconds": seconds_median,
                       "load_average_after": load_average()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
