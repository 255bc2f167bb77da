"""Markdown tables for docs/results-drs.md from the runs of benchmarks/drs_evidence.sh.

    python benchmarks/drs_tables.py runs/drs

Certified accuracy at r = share of images classified correctly, not abstained, with
radius >= r; ACR = mean radius, 0 for wrong or abstained images. Differences between two
runs are paired over the same images, with a 95% interval (1.96 standard errors of the
mean per-image difference).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from certifier import summarize
from certifier.results import read_results
from certifier.stats import round_down

RADII = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5]
#: (run, what it is) in table order; runs that are missing are left out
RUNS = [
    ("rs-0.25", "RS, sigma 0.25"),
    ("drs-0.25", "DRS, sigma 0.25, sub-image model"),
    ("drs-0.25-bilinear-on-rs-model", "DRS, sigma 0.25, RS 0.25 model, bilinear"),
    ("rs-0.3536", "RS, sigma 0.3536 (= 0.25 sqrt 2)"),
    ("rs-0.5", "RS, sigma 0.5"),
    ("drs-0.5", "DRS, sigma 0.5, sub-image model"),
    ("drs-0.5-bilinear-on-rs-model", "DRS, sigma 0.5, RS 0.5 model, bilinear"),
    ("rs-0.7071", "RS, sigma 0.7071 (= 0.5 sqrt 2)"),
]
PAIRS = [
    ("drs-0.25", "rs-0.25", "equal sigma 0.25"),
    ("drs-0.25", "rs-0.3536", "DRS 0.25 vs RS 0.25 sqrt 2"),
    ("drs-0.5", "rs-0.5", "equal sigma 0.5"),
    ("drs-0.5", "rs-0.7071", "DRS 0.5 vs RS 0.5 sqrt 2"),
    ("drs-0.25-bilinear-on-rs-model", "rs-0.25", "RS 0.25 model, DRS bilinear vs RS"),
    ("drs-0.5-bilinear-on-rs-model", "rs-0.5", "RS 0.5 model, DRS bilinear vs RS"),
]
ENVELOPES = [
    ("RS, best of sigma 0.25, 0.5", ["rs-0.25", "rs-0.5"]),
    ("RS, best of sigma 0.3536, 0.7071", ["rs-0.3536", "rs-0.7071"]),
    ("DRS, best of sigma 0.25, 0.5", ["drs-0.25", "drs-0.5"]),
]


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def certified_matrix(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(images x radii) 0/1 certified-correct indicators and per-image radii (0 unless correct)."""
    correct = np.array([bool(r.get("correct")) for r in records])
    radius = np.array([r["radius"] for r in records]) * correct
    return np.stack([(radius >= r) & correct for r in RADII], axis=1).astype(float), radius


def main(folder: Path) -> None:
    loaded = {}
    for name, _ in RUNS:
        path = folder / f"{name}.jsonl"
        if path.exists():
            header, records = read_results(path)
            loaded[name] = (header, sorted(records, key=lambda r: r["index"]))
    if not loaded:
        sys.exit(f"no results in {folder}")

    radii_head = " | ".join(f"r={r:g}" for r in RADII)
    # seconds per input are left out: on a shared machine they measure the neighbours;
    # benchmarks/drs_timing.py measures speed side by side
    print(f"| run | images | {radii_head} | ACR | abstain | passes/input |")
    print("|---|---:|" + "---:|" * len(RADII) + "---:|---:|---:|")
    for name, what in RUNS:
        if name not in loaded:
            continue
        header, records = loaded[name]
        s = summarize(records, RADII, header)
        cells = " | ".join(pct(s["certified_accuracy"][str(r)]) for r in RADII)
        print(f"| {what} | {s['inputs']} | {cells} | {round_down(s['acr'], 3):.3f} | {pct(s['abstain_rate'])} | "
              f"{s['forward_passes_per_input']:.0f} |")

    print("\nDRS minus RS on the same images, in percentage points (95% paired interval); ACR difference last.\n")
    print(f"| comparison | {radii_head} | ACR |")
    print("|---|" + "---:|" * (len(RADII) + 1))
    for drs, rs, what in PAIRS:
        if drs not in loaded or rs not in loaded:
            continue
        a, b = loaded[drs][1], loaded[rs][1]
        if [r["index"] for r in a] != [r["index"] for r in b]:
            print(f"| {what} | (different images) |")
            continue
        (ca, ra), (cb, rb) = certified_matrix(a), certified_matrix(b)
        diff, rdiff = ca - cb, ra - rb
        half = 1.96 * diff.std(axis=0, ddof=1) / np.sqrt(len(diff))
        cells = " | ".join(f"{100 * m:+.1f} ± {100 * h:.1f}" for m, h in zip(diff.mean(axis=0), half))
        acr_half = 1.96 * rdiff.std(ddof=1) / np.sqrt(len(rdiff))
        print(f"| {what} | {cells} | {rdiff.mean():+.3f} ± {acr_half:.3f} |")

    print("\nBest of two sigmas at each radius (how the paper's tables report RS and DRS).\n")
    print(f"| envelope | {radii_head} |")
    print("|---|" + "---:|" * len(RADII))
    for what, names in ENVELOPES:
        if not all(n in loaded for n in names):
            continue
        if len({tuple(r["index"] for r in loaded[n][1]) for n in names}) > 1:
            print(f"| {what} | (different images) |")
            continue
        best = np.max([certified_matrix(loaded[n][1])[0].mean(axis=0) for n in names], axis=0)
        print(f"| {what} | " + " | ".join(pct(v) for v in best) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/drs"))
