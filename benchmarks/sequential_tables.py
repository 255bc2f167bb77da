"""The tables of docs/results-sequential.md from the results files of benchmarks/sequential_evidence.sh.

    python benchmarks/sequential_tables.py                  # reads runs/sequential/
    python benchmarks/sequential_tables.py --runs DIR

Every comparison is on the same inputs (the indices both files hold) with the same seed, so
fixed n and the sequential plan see the same selection votes and, up to where the plan
stopped, the same estimation votes. A ratio is the fixed plan's forward passes per input
over the sequential plan's, both read from the records.
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from certifier.results import read_results  # noqa: E402

LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
PAIRS = [("fmnist-rs-0.25-gaussian", "fixed-rs-0.25", "seq-rs-0.25"),
         ("fmnist-rs-0.5-gaussian", "fixed-rs-0.5", "seq-rs-0.5"),
         ("fmnist-drs-0.25", "fixed-drs-0.25", "seq-drs-0.25")]
RADII = {"fmnist-rs-0.25-gaussian": ("fixed-rs-0.25", (0.25, 0.5, 0.75)),
         "fmnist-rs-0.5-gaussian": ("fixed-rs-0.5", (0.25, 0.5, 1.0, 1.5))}
TWO_BOUND = ["rs-0.25", "rs-0.5"]


def load(runs: Path, name: str) -> tuple[dict, dict[int, dict]] | None:
    path = runs / f"{name}.jsonl"
    if not path.exists():
        return None
    header, records = read_results(path)
    return header, {r["index"]: r for r in records}


def certified(records: list[dict], radius: float) -> np.ndarray:
    return np.array([bool(r["correct"]) and r["prediction"] is not None and r["radius"] >= radius for r in records])


def passes(records: list[dict]) -> np.ndarray:
    return np.array([r["forward_passes"] for r in records], dtype=np.float64)


def common(first: dict[int, dict], second: dict[int, dict]) -> tuple[list[dict], list[dict]]:
    indices = sorted(set(first) & set(second))
    return [first[i] for i in indices], [second[i] for i in indices]


def pct(mask: np.ndarray) -> str:
    return f"{100 * mask.mean():.1f}"


def comparison(name: str, fixed: list[dict], sequential: list[dict], levels, labels=("fixed n = 100,000",
               "sequential, budget 100,000")) -> list[str]:
    """Certified accuracy at each level and forward passes, the difference and the discordant inputs."""
    out = [f"**{name}**, {len(fixed)} test images:", "",
           "| plan | passes/input | median | 90th pct | " + " | ".join(f"r={r:g}" for r in levels) + " |",
           "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in levels) + " |"]
    for label, records in zip(labels, (fixed, sequential)):
        p = passes(records)  # (not seconds: the runs shared the machine; benchmarks/sequential_speed.py times it)
        out.append(f"| {label} | {p.mean():,.0f} | {np.median(p):,.0f} | {np.percentile(p, 90):,.0f} | "
                   + " | ".join(pct(certified(records, r)) for r in levels) + " |")
    differences, discordant = [], []
    for r in levels:
        a, b = certified(fixed, r), certified(sequential, r)
        differences.append(f"{100 * (b.mean() - a.mean()):+.1f}")
        discordant.append(f"{int((a & ~b).sum())}/{int((b & ~a).sum())}")
    out.append("| difference (points) | | | | " + " | ".join(differences) + " |")
    out.append("| inputs lost / gained | | | | " + " | ".join(discordant) + " |")
    ratio = passes(fixed).mean() / passes(sequential).mean()
    worst = max(100 * (certified(fixed, r).mean() - certified(sequential, r).mean()) for r in levels)
    out += ["", f"Ratio of forward passes {ratio:.1f}x; largest accuracy loss {worst:+.1f} points."]
    return out


def stop_reasons(sequential: list[dict]) -> str:
    reasons = collections.Counter(r["details"]["sequential"]["stopped"] for r in sequential if "details" in r
                                  and "sequential" in r["details"])
    total = sum(reasons.values())
    return "; ".join(f"{reason} {100 * count / total:.0f}%" for reason, count in reasons.most_common())


def summary_row(name: str, fixed: list[dict], sequential: list[dict], levels) -> str:
    ratio = passes(fixed).mean() / passes(sequential).mean()
    losses = [100 * (certified(fixed, r).mean() - certified(sequential, r).mean()) for r in levels]
    worst = int(np.argmax(losses))
    return (f"| {name} ({len(fixed)} images) | {passes(fixed).mean():,.0f} | {passes(sequential).mean():,.0f} | "
            f"**{ratio:.1f}x** | {losses[worst]:+.1f} (r={levels[worst]:g}) |")


def acr(records: list[dict]) -> float:
    return float(np.mean([r["radius"] if r["correct"] and r["prediction"] is not None else 0.0 for r in records]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "sequential")
    args = parser.parse_args(argv)
    runs = args.runs
    summary = ["| model | passes/input, fixed | sequential | ratio | largest loss (points) |",
               "| --- | ---: | ---: | ---: | --- |"]
    sections = []
    for name, fixed_name, seq_name in PAIRS:
        fixed, sequential = load(runs, fixed_name), load(runs, seq_name)
        if fixed is None or sequential is None:
            print(f"({name}: {fixed_name} or {seq_name} missing)", file=sys.stderr)
            continue
        levels = sequential[0]["sampling_settings"]["levels"]
        a, b = common(fixed[1], sequential[1])
        sections += comparison(name, a, b, levels) + ["", f"Why sequential sampling stopped: {stop_reasons(b)}.", ""]
        summary.append(summary_row(name, a, b, levels))
    print("\n".join(summary) + "\n\n" + "\n".join(sections))

    lines = ["| model | R | images | certified at R: fixed | `--radius R` | passes/input: fixed | `--radius R` | ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, (fixed_name, radii) in RADII.items():
        fixed = load(runs, fixed_name)
        for radius in radii:
            stem = f"radius-{name.removeprefix('fmnist-')}"
            one = load(runs, f"{stem}-{radius:g}") or load(runs, f"{stem}-{radius}")  # 1 or 1.0
            if fixed is None or one is None:
                continue
            a, b = common(fixed[1], one[1])
            lines.append(f"| {name} | {radius:g} | {len(a)} | {pct(certified(a, radius))} | {pct(certified(b, radius))} | "
                         f"{passes(a).mean():,.0f} | {passes(b).mean():,.0f} | "
                         f"**{passes(a).mean() / passes(b).mean():.0f}x** |")
    print("\n".join(lines) + "\n")

    for model in TWO_BOUND:
        rows = [f"**fmnist-{model}**, one-bound against two-bound (`-o bounds two`):", "",
                "| plan | radius | images | passes/input | " + " | ".join(f"r={r:g}" for r in LEVELS) + " | ACR |",
                "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in LEVELS) + " | ---: |"]
        found = False
        for plan, one_name, two_name in (("fixed", f"fixed-{model}", f"fixed-two-{model}"),
                                         ("sequential", f"seq-{model}", f"seq-two-{model}")):
            one, two = load(runs, one_name), load(runs, two_name)
            if one is None or two is None:
                continue
            found = True
            a, b = common(one[1], two[1])
            for label, records in (("one-bound", a), ("two-bound", b)):
                shown = f"{acr(records):.4f}" if plan == "fixed" else "-"
                rows.append(f"| {plan} | {label} | {len(records)} | {passes(records).mean():,.0f} | "
                            + " | ".join(pct(certified(records, r)) for r in LEVELS) + f" | {shown} |")
            if plan == "fixed":
                larger = np.mean([y["radius"] > x["radius"] for x, y in zip(a, b)])
                smaller = np.mean([y["radius"] < x["radius"] for x, y in zip(a, b)])
                rows.append(f"| | two-bound radius larger for {100 * larger:.1f}% of inputs, smaller for "
                            f"{100 * smaller:.1f}% | | | " + " | ".join("" for _ in LEVELS) + " | |")
        if found:
            print("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
