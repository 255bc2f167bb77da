"""Does the sequential plan keep the engine as busy as fixed n? Forward passes per second, both plans, one process.

    python benchmarks/sequential_speed.py     # fmnist-rs-0.25-gaussian, about 2 minutes on a quiet machine
    python benchmarks/sequential_speed.py --model models/fmnist-rs-0.5-gaussian.onnx --rounds 5

Each round certifies the same inputs with fixed n (``--fixed-inputs`` of them, n0 + n views
each) and with the sequential plan (``--inputs`` of them, budget n), one after the other in
alternating order, so a busy machine slows both alike. The sequential plan spends far fewer
views per input, in chunks, with a decision after each; what matters for the engine is that
its workers stay busy meanwhile: passes per second, sequential over fixed (1.0 = as busy).
The time per input is printed too: that is the saving the user sees.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchlib import load_average

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "fmnist-rs-0.25-gaussian.onnx")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fashion_mnist.npz")
    parser.add_argument("--inputs", type=int, default=60, help="inputs certified sequentially per round")
    parser.add_argument("--fixed-inputs", type=int, default=3, help="inputs certified at fixed n per round")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import certifier

    run = certifier.load(args.model)
    data = run.dataset(args.data, split="test")
    plans = {
        "fixed": dict(indices=range(args.fixed_inputs), sampling="fixed"),
        "sequential": dict(indices=range(args.inputs), sampling="sequential"),
    }
    rates = {name: [] for name in plans}
    per_input = {name: [] for name in plans}
    passes = {name: [] for name in plans}
    for number in range(args.rounds):
        order = list(plans) if number % 2 == 0 else list(reversed(plans))
        for name in order:
            started = time.perf_counter()
            results = list(run.results(data, n=args.n, **plans[name]))
            elapsed = time.perf_counter() - started
            total = sum(r.forward_passes for r in results)
            rates[name].append(total / elapsed)
            per_input[name].append(elapsed / len(results))
            passes[name].append(total / len(results))
        print(f"round {number + 1}: " + ", ".join(f"{name} {rates[name][-1]:,.0f} passes/s "
                                                 f"({per_input[name][-1]:.3f} s/input)" for name in plans), flush=True)
    ratio = statistics.median(s / f for s, f in zip(rates["sequential"], rates["fixed"]))
    time_ratio = statistics.median(f / s for s, f in zip(per_input["sequential"], per_input["fixed"]))
    print(f"model {args.model.name}, n = {args.n}, load average {load_average()} at the end")
    print(f"passes per input: fixed {statistics.mean(passes['fixed']):,.0f}, "
          f"sequential {statistics.mean(passes['sequential']):,.0f}")
    print(f"passes per second, sequential / fixed (median over rounds): {ratio:.2f}")
    print(f"time per input, fixed / sequential (median over rounds): {time_ratio:.1f}x")


if __name__ == "__main__":
    main()
