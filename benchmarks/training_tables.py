"""Markdown tables for docs/results-training.md from the runs of benchmarks/training_evidence.sh.

    python benchmarks/training_tables.py runs/training

For each sigma, one row per model in runs/training/rs-SIGMA-*.onnx: its loss and settings
(the model's certifier.loss metadata), training time (certifier.training), clean accuracy on
the whole test split (measured at the end of training), certified accuracy on the first 500
test images at each radius, ACR and its change against the Gaussian model of the same sigma,
paired over the same images with a 95% interval (1.96 standard errors of the mean per-image
difference). Then the same comparison on test images 500-999 for the runs named *-next500.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from certifier import summarize
from certifier.metadata import read_metadata, recorded_loss
from certifier.results import read_results

RADII = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5]
SETTING_NAMES = {"noise_copies": "m", "consistency_weight": "lambda", "entropy_weight": "eta",
                 "attack_radius": "eps", "attack_steps": "steps", "attack_warmup": "warm-up"}


def loss_text(loss: dict | None) -> str:
    if loss is None:
        return "gaussian"
    settings = ", ".join(f"{SETTING_NAMES.get(k, k)} {v:g}" for k, v in loss.items()
                         if k != "loss" and not (loss["loss"] == "gaussian" and k == "noise_copies"))
    return f"{loss['loss']}" + (f" ({settings})" if settings else "")


def radii(records: list[dict]) -> np.ndarray:
    """Per-image certified radius, 0 for wrong or abstained images."""
    return np.array([r["radius"] if r.get("correct") else 0.0 for r in records])


def paired(ours: np.ndarray, theirs: np.ndarray) -> str:
    """ACR change against the baseline, in %, with the 95% interval of the mean difference."""
    difference = ours - theirs
    half = 1.96 * difference.std(ddof=1) / np.sqrt(len(difference))
    base = theirs.mean()
    return f"{100 * difference.mean() / base:+.1f}% ({100 * (difference.mean() - half) / base:+.1f} to " \
           f"{100 * (difference.mean() + half) / base:+.1f})"


def row_of(folder: Path, name: str, results: Path, baseline: np.ndarray | None) -> tuple[str, np.ndarray]:
    header, records = read_results(results)
    summary = summarize(records, RADII, header)
    metadata = read_metadata(folder / f"{name}.onnx")
    training = json.loads(metadata.get("certifier.training", "{}"))
    mine = radii(records)
    minutes = training.get("training_seconds")
    cells = [f"`{name}`", loss_text(recorded_loss(metadata)),
             "-" if minutes is None else f"{minutes / 60:.1f}",
             f"{100 * training.get('validation_clean_accuracy', float('nan')):.1f}%"]
    cells += [f"{100 * summary['certified_accuracy'][str(r)]:.1f}" for r in RADII]
    cells += [f"**{summary['acr']:.3f}**", "-" if baseline is None else paired(mine, baseline),
              f"{100 * summary['abstain_rate']:.1f}%", f"{summary['seconds_per_input']:.2f}"]
    return "| " + " | ".join(cells) + " |", mine


def table(folder: Path, sigma: str, suffix: str) -> list[str]:
    names = sorted((p.stem for p in folder.glob(f"rs-{sigma}-*.onnx")),
                   key=lambda n: (not n.endswith("-gaussian"), n))
    runs = [(n, folder / f"{n}{suffix}.jsonl") for n in names if (folder / f"{n}{suffix}.jsonl").exists()]
    if not runs:
        return []
    lines = ["| model | loss | training (min) | clean accuracy (test split) | "
             + " | ".join(f"r = {r:g}" for r in RADII) + " | ACR | ACR vs gaussian (95% interval) | abstain | "
             "s/input |", "| --- " * (len(RADII) + 8) + "|"]
    baseline = None
    for name, results in runs:
        line, mine = row_of(folder, name, results, baseline)
        if name.endswith("-gaussian"):
            baseline = mine
        lines.append(line)
    header, records = read_results(runs[0][1])
    ceiling = summarize(records, RADII, header)["radius_ceiling"]
    lines.append(f"\n{len(records)} images; radius ceiling at n = {header['n']}, alpha = {header['alpha']}: "
                 f"{ceiling:.4f}.")
    return lines


def main(folder: Path) -> None:
    for suffix, title in (("", "first 500 test images"), ("-next500", "test images 500-999 (confirmation)")):
        for sigma in ("0.25", "0.5"):
            lines = table(folder, sigma, suffix)
            if lines:
                print(f"### sigma {sigma}, {title}\n")
                print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/training"))
