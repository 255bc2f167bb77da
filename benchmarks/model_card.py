"""Measure a bundled model for its model card and print the card's tables in markdown.

    python benchmarks/model_card.py models/fmnist-rs-0.25.onnx

- base-model accuracy on the whole test split, on clean inputs (the plugin's view without
  noise, ``clean_view``) and on one noisy view per input drawn by the model's own plugin
  (its metadata), over all its vote groups;
- certified accuracy on the first --images test images with `certify` at n = --n,
  written to runs/<model>-n<N>.jsonl (a rerun resumes it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import certifier
from certifier import summarize
from certifier.metadata import recorded_loss
from certifier.results import read_results

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"


def base_accuracy(run: certifier.Run, x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Accuracy of the bare model on clean inputs and on one plugin view per input."""
    dataset = run.dataset(x, y)
    groups = run.groups(dataset.shape)
    rng = np.random.default_rng(seed)
    clean = noisy = clean_total = total = 0
    for start in range(0, len(dataset), 1000):
        batch = dataset.batch(range(start, min(start + 1000, len(dataset))))
        labels = y[start : start + len(batch)]
        for group in groups.values():
            clean_views = run.method.clean_view(batch, group.name)
            if clean_views is not None:
                clean += int((group.model.labels(group.adapter(clean_views)) == labels).sum())
                clean_total += len(batch)
            views = run.method.sample(batch, rng, group.name)
            noisy += int((group.model.labels(group.adapter(views)) == labels).sum())
            total += len(batch)
    return (clean / clean_total if clean_total else float("nan")), noisy / total


def describe_loss(loss: dict | None) -> str:
    """``consistency (m = 2, consistency_weight 10, entropy_weight 0.5)``; models trained before
    ``certify train`` recorded its loss were trained with the Gaussian one."""
    if loss is None:
        return "gaussian (not recorded: trained before certify train recorded its loss)"
    settings = ", ".join(f"{key} {value:g}" for key, value in loss.items() if key not in ("loss", "noise_copies"))
    return f"{loss.get('loss')} (m = {loss.get('noise_copies')}{', ' + settings if settings else ''})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--radii", default="0,0.25,0.5,0.75,1.0")
    parser.add_argument("--output", type=Path, help="results file (default: runs/<model>-n<N>.jsonl); "
                        "an existing one with the same settings is resumed, not rerun")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more certify options")
    args = parser.parse_args()

    run = certifier.load(args.model)
    with np.load(args.data) as data:
        x_test, y_test = data["x_test"], data["y_test"]
    clean, noisy = base_accuracy(run, x_test, y_test)

    output = args.output or ROOT / "runs" / f"{args.model.stem}-n{args.n}.jsonl"
    output.parent.mkdir(exist_ok=True)
    command = ["certify", str(args.model.relative_to(ROOT) if args.model.is_absolute() else args.model),
               "--data", str(args.data), "--limit", str(args.images), "-n", str(args.n), "--alpha", str(args.alpha),
               "--output", str(output), "-q", *args.extra]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    header, records = read_results(output)
    radii = [float(r) for r in args.radii.split(",")]
    summary = summarize(records, radii, header)

    metadata = run.model.metadata
    training = json.loads(metadata.get("certifier.training", "{}"))
    print(f"### {args.model.name}\n")
    print(f"- plugin `{metadata.get('certifier.plugin')}`, sigma {metadata.get('certifier.sigma')}, "
          f"options `{metadata.get('certifier.options')}`, data {metadata.get('certifier.dataset')}")
    print(f"- training: {training.get('epochs')} epochs, batch {training.get('batch_size')}, "
          f"peak lr {training.get('lr')}, width {training.get('width')}, seed {training.get('seed')}"
          + (f", {training['training_seconds'] / 60:.1f} minutes" if "training_seconds" in training else ""))
    print(f"- loss: {describe_loss(recorded_loss(metadata))}")
    print(f"- base model on the {len(y_test)} test images: clean accuracy {100 * clean:.2f}%, "
          f"accuracy on one noisy view per image {100 * noisy:.2f}%")
    print(f"- certified on the first {len(records)} test images: `{' '.join(command)}`\n")
    print("| radius | " + " | ".join(f"{r:g}" for r in radii) + " | ACR | abstain |")
    print("| --- " * (len(radii) + 3) + "|")
    values = " | ".join(f"{100 * summary['certified_accuracy'][str(r)]:.1f}%" for r in radii)
    print(f"| certified accuracy | {values} | {summary['acr']:.3f} | {100 * summary['abstain_rate']:.1f}% |")
    print(f"\nRadius ceiling at n = {args.n}, alpha = {args.alpha}: {summary['radius_ceiling']:.4f}; "
          f"{summary['seconds_per_input']:.2f} s per input.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
