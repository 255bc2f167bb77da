"""Time per forward pass through a diffusion model used as a one-shot denoiser: certify's composed
graph against bare onnxruntime running the two networks, and the diffusion network against DnCNN.

Command (from the repository root, with the project's venv active, under the heavy lock; about
two minutes on a quiet 2-core machine):

    flock /work/locks/heavy python benchmarks/bench_diffusion.py

which is the same as

    python benchmarks/bench_diffusion.py --model models/fmnist-plain.onnx \\
        --diffusion models/fmnist-diffusion.onnx --dncnn models/fmnist-denoiser-mse-0.25.onnx \\
        --sigma 0.25 --batch-size 500 --batches 8 --rounds 3 --threads 1

Add ``--json summary.json`` (or ``--json -`` for stdout) for a machine-readable summary.

Every contender runs the same noisy batches (test images plus Gaussian noise of sigma, made in
advance), in one process, each with onnxruntime sessions of ``--threads`` intra-op threads:

* bare:      the limit. Two plain onnxruntime sessions: the noise predictor (the file as it is, fed
             x_t = sqrt(alpha_bar) (2 v - 1) and the timestep t* in numpy), the one-shot estimate
             clip(v - k eps, 0, 1) in numpy, then the classifier.
* composed:  certify's composed graph (one-shot step, noise predictor, input mapping and classifier
             in one onnxruntime session), as ``certifier.load(..., denoiser=...)`` builds it.
* diffusion: the noise predictor alone (its session of bare).
* dncnn:     a bundled DnCNN denoiser alone (the per-sigma denoisers of docs/results-denoised.md).
* classifier: the classifier alone.

Each round runs them one after another in a rotating order, so slow drifts of a busy machine hit
all of them alike; the figures are medians over rounds, and the load average before and after is
printed: on a loaded machine they are rough.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import Report, benchmark_parser, check_counts, load_average, medians

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "fmnist-plain.onnx"
DEFAULT_DIFFUSION = ROOT / "models" / "fmnist-diffusion.onnx"
DEFAULT_DNCNN = ROOT / "models" / "fmnist-denoiser-mse-0.25.onnx"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"
CONTENDERS = ("bare", "composed", "diffusion", "dncnn", "classifier")


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, model=DEFAULT_MODEL, data=DEFAULT_DATA, n=1, n0=1, alpha=None,
                              batch_size=False, data_help=".npz with x_test (uint8 images)")
    parser.add_argument("--diffusion", type=Path, default=DEFAULT_DIFFUSION,
                        help="ONNX noise predictor (default: %(default)s)")
    parser.add_argument("--dncnn", type=Path, default=DEFAULT_DNCNN, help="ONNX DnCNN denoiser (default: %(default)s)")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=500, help="views per batch (default: %(default)s)")
    parser.add_argument("--batches", type=int, default=8, help="batches per contender and round (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default: %(default)s)")
    return check_counts(parser, parser.parse_args(argv), ("batch_size", "batches", "rounds", "threads"))


def session(path_or_bytes, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path_or_bytes, options, providers=["CPUExecutionProvider"])


class Bench:
    def __init__(self, args):
        import certifier

        self.args = args
        run = certifier.load(args.model, plugin="rs", sigma=args.sigma, denoiser=args.diffusion, device="cpu",
                             threads=1)
        data = np.load(args.data)
        images = data["x_test"][: args.batch_size].astype(np.float32)[:, None] / 255.0
        (group,) = run.groups(tuple(images.shape[1:])).values()
        self.step = run.denoiser.step
        predictor = run.denoiser.predictor
        self.sample_name, self.timestep_name = predictor.sample_name, predictor.timestep_name
        self.timestep = np.full(args.batch_size, self.step.timestep, dtype=np.int64)
        self.composed = session(_composed_bytes(run, group), args.threads)
        self.diffusion = session(str(args.diffusion), args.threads)
        self.dncnn = session(str(args.dncnn), args.threads)
        self.classifier = session(str(args.model), args.threads)
        rng = np.random.default_rng(0)
        self.batches = [np.ascontiguousarray(images + args.sigma * rng.standard_normal(images.shape, np.float32))
                        for _ in range(args.batches)]
        self.x_t_gain = math.sqrt(self.step.alpha_bar) * 2
        self.x_t_offset = -math.sqrt(self.step.alpha_bar)
        self.k = math.sqrt((1 - self.step.alpha_bar) / self.step.alpha_bar) / 2
        self.check_same_scores()

    def noise(self, views: np.ndarray) -> np.ndarray:
        x_t = (views * np.float32(self.x_t_gain) + np.float32(self.x_t_offset)).astype(np.float32)
        return self.diffusion.run(None, {self.sample_name: x_t, self.timestep_name: self.timestep[: len(views)]})[0]

    def two_networks(self, views: np.ndarray) -> np.ndarray:
        denoised = np.clip(views - np.float32(self.k) * self.noise(views), 0, 1)
        return self.classifier.run(None, {self.classifier.get_inputs()[0].name: denoised})[0]

    def composed_scores(self, views: np.ndarray) -> np.ndarray:
        return self.composed.run(None, {self.composed.get_inputs()[0].name: views})[0]

    def check_same_scores(self) -> None:
        bare, composed = self.two_networks(self.batches[0]), self.composed_scores(self.batches[0])
        if not np.allclose(bare, composed, rtol=1e-3, atol=1e-3 * float(np.abs(bare).max())):
            raise SystemExit("bench_diffusion: the composed graph and the two networks disagree")

    def time(self, name: str) -> float:
        """Seconds per view of one contender over every batch."""
        run = {
            "bare": self.two_networks,
            "composed": self.composed_scores,
            "diffusion": self.noise,
            "dncnn": lambda v: self.dncnn.run(None, {self.dncnn.get_inputs()[0].name: v})[0],
            "classifier": lambda v: self.classifier.run(None, {self.classifier.get_inputs()[0].name: v})[0],
        }[name]
        start = time.perf_counter()
        for batch in self.batches:
            run(batch)
        return (time.perf_counter() - start) / sum(len(b) for b in self.batches)


def _composed_bytes(run, group) -> bytes:
    """The composed graph certify runs, rebuilt the way certifier.denoiser builds it."""
    from certifier.denoiser import compose, denoiser_layout
    from certifier.onnx_file import read_model

    view_shape = group.adapter.view_shape
    denoiser = run.denoiser.for_views(view_shape)
    proto, _ = read_model(run.model.path)
    return compose(denoiser, proto, group.adapter, denoiser_layout(denoiser, view_shape, "rs"), view_shape
                   ).SerializeToString()


def main(argv=None) -> int:
    args = parse_args(argv)
    report = Report(args.json)
    say = report.say
    say(f"bench_diffusion: {platform.processor() or platform.machine()}, python {sys.version.split()[0]}")
    say(f"load average before: {load_average()}")
    bench = Bench(args)
    step = bench.step
    say(f"sigma {args.sigma:g}: timestep {step.timestep:g}, alpha_bar {step.alpha_bar:.6g} ({step.schedule}); "
        f"{args.batches} batches of {args.batch_size} views, {args.threads} onnxruntime thread(s), {args.rounds} rounds")
    rows = []
    for round_number in range(args.rounds):
        order = CONTENDERS[round_number % len(CONTENDERS):] + CONTENDERS[: round_number % len(CONTENDERS)]
        row = {name: bench.time(name) for name in order}
        rows.append(row)
        say(f"round {round_number + 1}: " + ", ".join(f"{name} {1e6 * row[name]:.1f} us/view" for name in CONTENDERS))
    found = medians(rows, CONTENDERS)
    ratios = {
        "composed / bare": found["composed"] / found["bare"],
        "diffusion / dncnn": found["diffusion"] / found["dncnn"],
        "diffusion / classifier": found["diffusion"] / found["classifier"],
        "bare / (diffusion + classifier)": found["bare"] / (found["diffusion"] + found["classifier"]),
    }
    say("median per view: " + ", ".join(f"{name} {1e6 * found[name]:.1f} us" for name in CONTENDERS))
    for name, value in ratios.items():
        say(f"{name}: {value:.3f}")
    say(f"load average after: {load_average()}")
    report.write_json({"seconds_per_view": found, "ratios": ratios, "rounds": rows, "sigma": args.sigma,
                       "timestep": step.timestep, "alpha_bar": step.alpha_bar, "batch_size": args.batch_size,
                       "batches": args.batches, "threads": args.threads, "load_average": load_average()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
