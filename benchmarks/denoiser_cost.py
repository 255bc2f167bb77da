"""Cost of a denoiser per image against the classifier it serves, in onnxruntime, one process.

Certification with a denoiser runs it on every noisy sample (n = 10,000 or more per
input), so its cost adds to the classifier's. Command (repository root, project venv):

    python benchmarks/denoiser_cost.py models/fmnist-denoiser-*.onnx
    python benchmarks/denoiser_cost.py --size 5x32 --size 8x64   # untrained DnCNNs of those sizes

Each round times, on the same premade batches of noisy Fashion-MNIST test images, one
after another in a rotating order: the classifier alone, each denoiser alone, and each
denoiser followed by the classifier. Printed: microseconds per image (median over
rounds) and the ratio to the classifier alone, measured in the same round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLASSIFIER = ROOT / "models" / "fmnist-plain.onnx"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"


def session(path: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def untrained_denoiser(size: str, folder: Path) -> Path:
    """An ONNX DnCNN with random weights of DEPTHxFEATURES (cost does not depend on the weights)."""
    from certifier_plugins.denoise import build_denoiser
    from certifier_plugins._torch import export_onnx

    depth, features = (int(v) for v in size.lower().split("x"))
    path = folder / f"dncnn-{depth}x{features}.onnx"
    export_onnx(build_denoiser(1, depth, features).eval(), (1, 28, 28), path, {}, output_name="denoised")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("denoisers", nargs="*", type=Path, help="denoiser ONNX files")
    parser.add_argument("--size", action="append", default=[], help="an untrained DnCNN DEPTHxFEATURES, repeatable")
    parser.add_argument("--classifier", type=Path, default=DEFAULT_CLASSIFIER)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--samples", type=int, default=10_000, help="noisy images per timing (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all)")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp())
    paths = list(args.denoisers) + [untrained_denoiser(size, folder) for size in args.size]
    if not paths:
        parser.error("give denoiser files or --size")
    with np.load(args.data) as data:
        clean = data["x_test"][: args.samples].astype(np.float32)[:, None] / 255
    clean = np.resize(clean, (args.samples, 1, 28, 28))
    rng = np.random.default_rng(0)
    batches = [np.ascontiguousarray(b + rng.normal(0, args.sigma, b.shape).astype(np.float32))
               for b in np.split(clean, range(args.batch_size, args.samples, args.batch_size))]

    classifier = session(args.classifier, args.threads)
    classifier_input = classifier.get_inputs()[0].name
    denoisers = {path.name: session(path, args.threads) for path in paths}

    def run_classifier(batch):
        return classifier.run(None, {classifier_input: batch})[0]

    def runner(name, with_classifier):
        denoiser = denoisers[name]
        input_name = denoiser.get_inputs()[0].name

        def run(batch):
            out = denoiser.run(None, {input_name: batch})[0]
            return run_classifier(out) if with_classifier else out

        return run

    contenders = {"classifier": run_classifier}
    for name in denoisers:
        contenders[f"{name}"] = runner(name, False)
        contenders[f"{name} + classifier"] = runner(name, True)
    for run in contenders.values():  # warm up
        run(batches[0])
    timings = {name: [] for name in contenders}
    ratios = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        measured = {}
        for name in order:
            started = time.perf_counter()
            for batch in batches:
                contenders[name](batch)
            measured[name] = (time.perf_counter() - started) / args.samples
        for name in names:
            timings[name].append(measured[name])
            ratios[name].append(measured[name] / measured["classifier"])
    print(f"{args.samples} noisy 28x28 images per timing, batches of {args.batch_size}, {args.rounds} rounds, "
          f"onnxruntime {ort.__version__}, threads {args.threads or 'default'}; classifier {args.classifier.name}")
    print(f"{'':48s} {'us/image':>9s} {'x classifier':>13s} {'(range)':>15s}")
    for name in names:
        print(f"{name:48s} {1e6 * statistics.median(timings[name]):9.1f} {statistics.median(ratios[name]):13.2f} "
              f"({min(ratios[name]):5.2f}-{max(ratios[name]):5.2f})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
