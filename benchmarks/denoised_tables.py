"""Markdown tables for docs/results-denoised.md from the runs of benchmarks/denoised_evidence.sh.

    python benchmarks/denoised_tables.py runs/denoised

Certified accuracy at r = share of images classified correctly, not abstained, with radius
>= r; ACR = mean radius, 0 for wrong or abstained images (certify's own summary). "Gap
recovered" at r = 0.5 is (denoised - plain) / (noise-trained - plain), with a 95% interval
from a paired bootstrap over the images. Runs of one sigma are compared on the images they
all have certified (a run still going has fewer): the "images" column says how many.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from certifier import summarize
from certifier.results import read_results

RADII = [0.0, 0.25, 0.5, 0.75, 1.0]
SIGMAS = ["0.25", "0.5"]
#: (run name pattern, what it is), {s} is the sigma
MAIN = [
    ("plain-{s}", "plain classifier, no denoiser"),
    ("plain-{s}-mse", "plain classifier + MSE denoiser"),
    ("plain-{s}-stab", "plain classifier + stability denoiser"),
    ("rs-model-{s}", "noise-trained RS model, no denoiser"),
]
TRANSFER = [
    ("other-{s}", "other plain classifier, no denoiser"),
    ("other-{s}-mse", "other plain classifier + MSE denoiser"),
]
GAP_RADIUS = 0.5
BOOTSTRAP = 4000


def load(folder: Path, name: str):
    path = folder / f"{name}.jsonl"
    if not path.exists():
        return None
    header, records = read_results(path)
    return header, sorted(records, key=lambda r: r["index"])


def shared_images(folder: Path, runs: list[tuple[str, str]], sigma: str) -> set[int] | None:
    """The images every run of a sigma has certified (runs still going have fewer): the tables
    compare runs on the same images only."""
    found = [load(folder, pattern.format(s=sigma)) for pattern, _ in runs]
    sets = [{r["index"] for r in records} for header, records in filter(None, found)]
    return set.intersection(*sets) if sets else None


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def table(folder: Path, runs: list[tuple[str, str]]) -> tuple[list[str], dict]:
    lines = ["| sigma | run | images | " + " | ".join(f"r={r:g}" for r in RADII) + " | ACR | abstain |",
             "|---|---|---:|" + "---:|" * len(RADII) + "---:|---:|"]
    loaded = {}
    for sigma in SIGMAS:
        shared = shared_images(folder, runs, sigma)
        for pattern, what in runs:
            name = pattern.format(s=sigma)
            found = load(folder, name)
            if found is None:
                continue
            header, records = found
            records = [r for r in records if r["index"] in shared]
            loaded[name] = records
            s = summarize(records, RADII, header)
            cells = " | ".join(pct(s["certified_accuracy"][str(r)]) for r in RADII)
            denoiser = f" (`{s['denoiser']}`)" if s.get("denoiser") else ""
            lines.append(f"| {sigma} | {what}{denoiser} | {s['inputs']} | {cells} | {s['acr']:.3f} | "
                         f"{pct(s['abstain_rate'])} |")
    return lines, loaded


def certified_at(records: list[dict], radius: float) -> np.ndarray:
    return np.array([bool(r.get("correct")) and r["prediction"] is not None and r["radius"] >= radius
                     for r in records], dtype=float)


def gap_recovered(loaded: dict, sigma: str, loss: str) -> str | None:
    names = [f"plain-{sigma}", f"plain-{sigma}-{loss}", f"rs-model-{sigma}"]
    if not all(n in loaded for n in names):
        return None
    runs = [loaded[n] for n in names]
    if len({tuple(r["index"] for r in records) for records in runs}) != 1:
        return f"sigma {sigma}, {loss}: the runs certify different images"
    none, denoised, trained = (certified_at(records, GAP_RADIUS) for records in runs)
    if trained.mean() <= none.mean():
        return (f"sigma {sigma}, {loss} denoiser: no gap to recover at r = {GAP_RADIUS:g} on these "
                f"{len(none)} images ({pct(none.mean())} without a denoiser, {pct(trained.mean())} noise-trained)")
    point = (denoised.mean() - none.mean()) / (trained.mean() - none.mean())
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(none), size=(BOOTSTRAP, len(none)))
    gaps = trained[picks].mean(1) - none[picks].mean(1)
    ok = gaps > 0
    ratios = (denoised[picks].mean(1)[ok] - none[picks].mean(1)[ok]) / gaps[ok]
    if len(ratios) < 0.9 * BOOTSTRAP:  # too few images for the interval to mean anything
        return f"sigma {sigma}, {loss} denoiser: {pct(point)}% of the gap at r = {GAP_RADIUS:g} ({len(none)} images)"
    low, high = np.percentile(ratios, [2.5, 97.5])
    return (f"sigma {sigma}, {loss} denoiser: {pct(point)}% of the gap at r = {GAP_RADIUS:g} "
            f"({pct(denoised.mean())} - {pct(none.mean())}) / ({pct(trained.mean())} - {pct(none.mean())}); "
            f"95% paired bootstrap interval {pct(low)}% to {pct(high)}%")


def main(folder: Path) -> None:
    lines, loaded = table(folder, MAIN)
    if not loaded:
        sys.exit(f"no results in {folder}")
    print("Certified accuracy (%) at L2 radius r, ACR, abstention (%):\n")
    print("\n".join(lines))
    print()
    for sigma in SIGMAS:
        for loss in ("stab", "mse"):
            text = gap_recovered(loaded, sigma, loss)
            if text:
                print(f"- {text}")
    transfer, found = table(folder, TRANSFER)
    if found:
        print("\nA classifier the denoisers were not trained with:\n")
        print("\n".join(transfer))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/denoised"))
