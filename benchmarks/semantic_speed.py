"""Time per forward pass of the semantic plugins against rs and bare onnxruntime, in one process.

    python benchmarks/semantic_speed.py [--model models/fmnist-brightness-0.25.onnx] [--inputs 3] [-n 10000]
        [--shift-inputs 200] [--rounds 3]

Contenders, each on the first Fashion-MNIST test images, the same model, certify's automatic batch size:

* bare: a plain onnxruntime session (default options) runs premade batches of the same sizes,
  n0 + n samples per input: the limit, no view making, no counting;
* rs, brightness, contrast, gamma: ``certifier.load(model, plugin=..., sigma=0.25).results(...)``
  with n0 = 100 and n (Cohen's CERTIFY), ``--inputs`` images;
* translation (``-o k 3``, 49 exact views per image): ``--shift-inputs`` images, so that it runs
  about as many forward passes as the others.

Each round runs every contender once, in an order that rotates between rounds; the ratio of
each contender's seconds per forward pass to bare's is taken within the round, and the
medians over rounds are printed with the load average before and after. The machine is
shared: read ratios, not seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import certifier

from benchlib import load_average

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"
SMOOTHED = ("rs", "brightness", "contrast", "gamma")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "fmnist-brightness-0.25.onnx")
    parser.add_argument("--inputs", type=int, default=3)
    parser.add_argument("--shift-inputs", type=int, default=200)
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import onnxruntime

    print(f"load average before: {load_average()}; onnxruntime {onnxruntime.__version__}; "
          f"model {args.model.name}; n0 {args.n0}, n {args.n}; {args.inputs} inputs "
          f"({args.shift_inputs} for translation); {args.rounds} rounds")
    runs = {name: certifier.load(args.model, plugin=name, sigma=args.sigma) for name in SMOOTHED}
    runs["translation"] = certifier.load(args.model, plugin="translation", options={"k": 3})
    with np.load(DATA) as data:
        images = data["x_test"][:max(args.inputs, args.shift_inputs)].astype(np.float32)[:, None] / 255.0
    batch_size = runs["rs"].engine(images.shape[1:]).batch_size
    model = runs["rs"].model
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(model.path), options, providers=model.providers)
    sizes = [min(batch_size, args.n0 - s) for s in range(0, args.n0, batch_size)]
    sizes += [min(batch_size, args.n - s) for s in range(0, args.n, batch_size)]
    premade = {size: np.ascontiguousarray(np.repeat(images[:1], size, axis=0)) for size in set(sizes)}

    def bare() -> tuple[float, int]:
        start = time.perf_counter()
        for _ in range(args.inputs):
            for size in sizes:
                session.run([model.output.name], {model.input_name: premade[size]})
        return time.perf_counter() - start, args.inputs * sum(sizes)

    def smoothed(name: str, seed: int):
        def timed() -> tuple[float, int]:
            count = args.shift_inputs if name == "translation" else args.inputs
            start = time.perf_counter()
            passes = sum(result.forward_passes for result in runs[name].results(
                images[:count], n0=args.n0, n=args.n, alpha=0.001, seed=seed))
            return time.perf_counter() - start, passes
        return timed

    names = ["bare", *SMOOTHED, "translation"]
    ratios: dict[str, list[float]] = {name: [] for name in names}
    per_pass: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        order = names[round_number % len(names):] + names[:round_number % len(names)]
        seconds = {}
        for name in order:
            elapsed, passes = bare() if name == "bare" else smoothed(name, round_number)()
            seconds[name] = elapsed / passes
            per_pass[name].append(seconds[name])
        for name in names:
            ratios[name].append(seconds[name] / seconds["bare"])
    print(f"batch size {batch_size} (certify's automatic one)")
    print("| contender | microseconds per forward pass (median) | ratio to bare (median of rounds) |")
    print("| --- | --- | --- |")
    for name in names:
        print(f"| {name} | {1e6 * statistics.median(per_pass[name]):.1f} | {statistics.median(ratios[name]):.3f} |")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
