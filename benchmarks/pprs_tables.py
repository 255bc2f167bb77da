"""Markdown tables of the PPRS evidence runs (runs/pprs-evidence-*.jsonl) for docs/results-pprs.md.

    python benchmarks/pprs_tables.py [--sigmas 0.25,0.5] [--first 200]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from certifier import summarize
from certifier.results import load_any_results
from certifier.stats import round_down

RADII = [0.0, 0.25, 0.5, 0.75, 1.0]
RUNS = ["rs", "slic", "grid", "felzenszwalb", "quickshift", "slic-clean"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigmas", default="0.25,0.5")
    parser.add_argument("--folder", default="runs")
    parser.add_argument("--first", type=int, help="only the first K test images (to compare runs on the same inputs)")
    args = parser.parse_args()
    for sigma in args.sigmas.split(","):
        scope = f", first {args.first} test images" if args.first else ""
        print(f"\n### sigma = {sigma}{scope}\n")
        print("| run | model | inputs | " + " | ".join(f"r = {r}" for r in RADII)
              + " | ACR | abstain | s / input |")
        print("| --- | --- | --- | " + " | ".join("---" for _ in RADII) + " | --- | --- | --- |")
        for name in RUNS:
            path = Path(args.folder) / f"pprs-evidence-{name}-{sigma}.jsonl"
            if not path.exists():
                continue
            header, records = load_any_results(path)
            if args.first:
                records = [r for r in records if r["index"] < args.first]
            summary = summarize(records, RADII, header)
            model = Path(header.get("model", "?")).name
            label = "RS" if name == "rs" else f"PPRS {name}"
            if summary.get("conditional"):
                label = "PPRS slic, clean partition, rho = 0: CONDITIONAL, not a certificate"
            cells = " | ".join(f"{100 * summary['certified_accuracy'][str(r)]:.1f}" for r in RADII)
            print(f"| {label} | {model} | {summary['inputs']} | {cells} | {round_down(summary['acr'], 4):.4f} | "
                  f"{100 * summary['abstain_rate']:.1f}% | {summary['seconds_per_input']:.2f} |")


if __name__ == "__main__":
    main()
