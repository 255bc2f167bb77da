"""Markdown tables for docs/results-diffusion.md from the runs of benchmarks/diffusion_evidence.sh.

    python benchmarks/diffusion_tables.py runs/diffusion runs/denoised

The diffusion runs are read from the first folder; the runs they are compared with (no denoiser,
the per-sigma MSE and stability denoisers, the noise-trained models: benchmarks/denoised_evidence.sh's,
same settings) from the second, else the first. Runs of one sigma are compared on the images they
all have certified (a run still going has fewer): the "images" column says how many. Certified
accuracy, ACR and "gap recovered" at r = 0.5 are as in benchmarks/denoised_tables.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from certifier import summarize
from certifier.results import read_results
from denoised_tables import GAP_RADIUS, RADII, gap_recovered, pct

SIGMAS = ["0.12", "0.25", "0.5", "1.0"]
#: (run name pattern, what it is), {s} is the sigma
MAIN = [
    ("plain-{s}", "plain classifier, no denoiser"),
    ("plain-{s}-mse", "plain classifier + MSE denoiser for this sigma"),
    ("plain-{s}-stab", "plain classifier + stability denoiser for this sigma"),
    ("plain-{s}-diffusion", "plain classifier + the diffusion model (one file, every sigma)"),
    ("rs-model-{s}", "noise-trained RS model, no denoiser"),
]
TRANSFER = [
    ("other-{s}", "other plain classifier, no denoiser"),
    ("other-{s}-mse", "other plain classifier + MSE denoiser"),
    ("other-{s}-diffusion", "other plain classifier + the diffusion model"),
]


def load(folders: list[Path], name: str):
    for folder in folders:
        path = folder / f"{name}.jsonl"
        if path.exists():
            header, records = read_results(path)
            return header, sorted(records, key=lambda r: r["index"])
    return None


def table(folders: list[Path], runs: list[tuple[str, str]]) -> tuple[list[str], dict, list[str]]:
    lines = ["| sigma | run | images | " + " | ".join(f"r={r:g}" for r in RADII) + " | ACR | abstain | t* | alpha_bar |",
             "|---|---|---:|" + "---:|" * len(RADII) + "---:|---:|---:|---:|"]
    loaded, missing = {}, []
    for sigma in SIGMAS:
        found = {pattern.format(s=sigma): load(folders, pattern.format(s=sigma)) for pattern, _ in runs}
        present = {name: value for name, value in found.items() if value is not None}
        if not any(name.endswith("-diffusion") for name in present):
            missing += [name for name in found if name.endswith("-diffusion")]
            continue
        missing += [name for name, value in found.items() if value is None]
        shared = set.intersection(*({r["index"] for r in records} for _, records in present.values()))
        for pattern, what in runs:
            name = pattern.format(s=sigma)
            if name not in present:
                continue
            header, records = present[name]
            records = [r for r in records if r["index"] in shared]
            loaded[name] = records
            s = summarize(records, RADII, header)
            cells = " | ".join(pct(s["certified_accuracy"][str(r)]) for r in RADII)
            step = (f"{header['timestep']:g} | {header['alpha_bar']:.6f}" if header.get("denoiser_kind") == "diffusion"
                    else "- | -")
            lines.append(f"| {sigma} | {what} | {s['inputs']} | {cells} | {s['acr']:.3f} | {pct(s['abstain_rate'])} | "
                         f"{step} |")
    return lines, loaded, missing


def main(folders: list[Path]) -> None:
    lines, loaded, missing = table(folders, MAIN)
    if not loaded:
        sys.exit(f"no diffusion results in {', '.join(map(str, folders))}")
    print("Certified accuracy (%) at L2 radius r, ACR, abstention (%), and the diffusion step used:\n")
    print("\n".join(lines))
    print()
    for sigma in SIGMAS:
        for loss in ("diffusion", "mse", "stab"):
            text = gap_recovered(loaded, sigma, loss)
            if text:
                print(f"- {text}")
    transfer, found, missing_transfer = table(folders, TRANSFER)
    if found:
        print("\nA classifier the diffusion model and the denoisers never saw:\n")
        print("\n".join(transfer))
    absent = [name for name in missing + missing_transfer]
    if absent:
        print(f"\nNot run (no results file): {', '.join(absent)}.")
    print(f"\n(gap recovered at r = {GAP_RADIUS:g}: (denoised - plain) / (noise-trained - plain), on the images "
          f"every run of the sigma has.)")


if __name__ == "__main__":
    main([Path(p) for p in (sys.argv[1:] or ["runs/diffusion", "runs/denoised"])])
