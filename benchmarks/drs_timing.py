"""Time per input of DRS against RS on the same model, measured side by side.

    python benchmarks/drs_timing.py [--rounds 7] [--images 4] [-n 4000]

Each round certifies the same images once with every configuration, in a shuffled
order; the table gives the median over rounds of each configuration's time per input
and of its ratio to RS in the same round (so a busy machine slows both alike).
DRS draws n samples per side, twice RS's forward passes for the same n.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import certifier

ROOT = Path(__file__).resolve().parents[1]


def configurations(models: Path, sigma: float) -> dict[str, certifier.Run]:
    rs_model = models / f"fmnist-rs-{sigma}.onnx"
    runs = {
        "RS": certifier.load(rs_model, plugin="rs", sigma=sigma),
        "DRS bilinear, same model": certifier.load(rs_model, plugin="drs", sigma=sigma, options={"resize": "bilinear"}),
        "DRS nearest, same model": certifier.load(rs_model, plugin="drs", sigma=sigma, options={"resize": "nearest"}),
    }
    drs_model = models / f"fmnist-drs-{sigma}.onnx"
    if drs_model.exists():
        runs["DRS none, sub-image model"] = certifier.load(drs_model)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("-n", type=int, default=4000)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "fashion_mnist.npz"))
    parser.add_argument("--models", default=str(ROOT / "models"))
    parser.add_argument("--json", help="Also write the measurements here.")
    args = parser.parse_args()

    with np.load(args.data) as data:
        images = data["x_test"][: args.images].astype(np.float32) / 255.0
    runs = configurations(Path(args.models), args.sigma)
    for run in runs.values():  # warm up sessions and caches
        run.certify(images[:1], n0=10, n=200, seed=0)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    passes: dict[str, float] = {}
    order = list(runs)
    rng = np.random.default_rng(0)
    for round_number in range(args.rounds):
        rng.shuffle(order)
        this_round = {}
        for name in order:
            started = time.perf_counter()
            results = runs[name].certify(images, n0=100, n=args.n, seed=round_number)
            this_round[name] = (time.perf_counter() - started) / len(images)
            passes[name] = float(np.mean([r.forward_passes for r in results]))
        for name, value in this_round.items():
            seconds[name].append(value)
            ratios[name].append(value / this_round["RS"])

    table = {
        name: {
            "seconds_per_input": statistics.median(seconds[name]),
            "ratio_to_rs": statistics.median(ratios[name]),
            "forward_passes_per_input": passes[name],
            "ratio_per_forward_pass": statistics.median(ratios[name]) * passes["RS"] / passes[name],
        }
        for name in runs
    }
    print(f"sigma {args.sigma}, n = {args.n} (per side for DRS), n0 = 100, {args.images} images, "
          f"{args.rounds} interleaved rounds, medians")
    print("| configuration | s/input | x RS | passes/input | x RS per pass |")
    print("|---|---:|---:|---:|---:|")
    for name, row in table.items():
        print(f"| {name} | {row['seconds_per_input']:.3f} | {row['ratio_to_rs']:.2f} | "
              f"{row['forward_passes_per_input']:.0f} | {row['ratio_per_forward_pass']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "table": table}, indent=2))


if __name__ == "__main__":
    main()
