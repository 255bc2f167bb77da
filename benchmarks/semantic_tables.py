"""Tables for docs/results-semantic.md from the runs of benchmarks/semantic_evidence.sh.

    python benchmarks/semantic_tables.py [--plain models/fmnist-plain.onnx]

1. certified accuracy over parameter radii (brightness, contrast, gamma, cyclic shifts) from
   runs/semantic-*.jsonl, one table per threat model, a row per model;
2. the exact certified sets of the translation runs: for each shift (t_y, t_x), the share of
   the 500 images whose prediction is right and certified for it (from the records' details);
3. a brute-force check of the translation certificates on the real model: for every image and
   every shift in its certified set, the smoothed prediction of the shifted image, computed
   by running the model on all its views, must be the prediction of the image; and for the
   randomized methods, Cohen's PREDICT on images changed by 95% of their certified radius;
4. the base models (no smoothing) on all 4,988 test images under fixed changes: how much a
   plain model loses to a change of lighting or framing;
5. for which test images a shift that fills the uncovered edge with zeros gives the very image
   the cyclic shift gives (the pixels that wrap around are zero), so the certificate covers it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

import certifier
from certifier import summarize
from certifier.results import read_results
from certifier.stats import round_down

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"
RUNS = ROOT / "runs"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def model_rows(prefix: str) -> list[tuple[str, Path]]:
    """The runs of one plugin, trained model first."""
    paths = sorted(RUNS.glob(f"semantic-{prefix}-*.jsonl"))
    order = {"plain": 2, "rs": 3}
    return sorted(((p.stem.removeprefix(f"semantic-{prefix}-"), p) for p in paths),
                  key=lambda item: (order.get(item[0], 1 if item[0].startswith(prefix) else 1.5), item[0]))


def certified_table(prefix: str, radii: list[float]) -> str:
    rows = model_rows(prefix)
    if not rows:
        return f"(no runs/semantic-{prefix}-*.jsonl)\n"
    threat = None
    lines = []
    for name, path in rows:
        header, records = read_results(path)
        summary = summarize(records, radii, header)
        threat = certifier.ThreatModel.from_record(header.get("threat_model"), header.get("norm"))
        accuracy = [pct(summary["certified_accuracy"][str(r)]) for r in radii]
        lines.append(f"| {name} ({Path(header['model']).name}) | " + " | ".join(accuracy)
                     + f" | {round_down(summary['acr'], 4):.4f} | {pct(summary['abstain_rate'])} |"
                     + f" {threat.show(summary['radius_ceiling'])} |")
    columns = [threat.certified_set(r).replace("|", "\\|") for r in radii]  # | inside a markdown cell
    head = "| model | " + " | ".join(columns) + " | ACR | abstain | radius ceiling |\n"
    head += "| --- " * (len(columns) + 4) + "|\n"
    return head + "\n".join(lines) + "\n"


def paired_table(radii_by_prefix: dict[str, list[float]]) -> str:
    """Trained (first run of each plugin) against plain, image by image: how many images only one of the
    two certifies right at radius r, and the two-sided sign test on those (a difference beyond chance?)."""
    from scipy.stats import binomtest

    lines = ["| threat model | trained model | r | right and certified: trained / plain | only trained | only plain "
             "| sign test p |", "| --- " * 7 + "|"]
    for prefix, radii in radii_by_prefix.items():
        rows = dict(model_rows(prefix))
        if "plain" not in rows or not rows:
            continue
        trained_name, trained_path = model_rows(prefix)[0]
        trained = {r["index"]: r for r in read_results(trained_path)[1]}
        plain = {r["index"]: r for r in read_results(rows["plain"])[1]}
        common = trained.keys() & plain.keys()
        for radius in radii:
            def good(records):
                return {i for i in common if records[i]["correct"] and records[i]["radius"] >= radius}
            a, b = good(trained), good(plain)
            only_a, only_b = len(a - b), len(b - a)
            p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
            lines.append(f"| {prefix} | {trained_name} | {radius:g} | {len(a)} / {len(b)} of {len(common)} | {only_a} "
                         f"| {only_b} | {p_value:.2g} |")
    return "\n".join(lines) + "\n"


SHIFTS = [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 2), (0, 4), (3, 3)]


def translation_sets() -> str:
    rows = model_rows("translation")
    lines = ["| model | " + " | ".join(f"({a}, {b})" for a, b in SHIFTS) + " |",
             "| --- " * (len(SHIFTS) + 1) + "|"]
    for name, path in rows:
        header, records = read_results(path)
        shares = []
        for ty, tx in SHIFTS:
            good = 0
            for record in records:
                by_x = (record.get("details") or {}).get("largest_t_y_by_t_x") or []
                if record["correct"] and tx < len(by_x) and ty <= by_x[tx]:
                    good += 1
            shares.append(pct(good / len(records)))
        lines.append(f"| {name} | " + " | ".join(shares) + " |")
    return "\n".join(lines) + "\n"


def verify_translation(path: Path, limit: int) -> str:
    """Every certified shift of every image, checked by running the model on all views of the shifted image."""
    header, records = read_results(path)
    k = header["settings"]["options"]["k"]
    run = certifier.load(ROOT / header["model"] if not Path(header["model"]).is_absolute() else header["model"],
                         plugin="translation", options={"k": k})
    dataset = run.dataset(DATA, split="test")
    group = next(iter(run.groups(dataset.shape).values()))
    checked = shifted_images = broken = 0
    for record in records[:limit]:
        if record["prediction"] is None:
            continue
        by_x = record["details"]["largest_t_y_by_t_x"]
        x = dataset.batch([record["index"]])[0]
        # labels of every shift of x within reach: roll(x, u) for u in [-3K, 3K]^2
        reach = 3 * k
        shifts = [(uy, ux) for uy in range(-reach, reach + 1) for ux in range(-reach, reach + 1)]
        views = np.stack([np.roll(x, shift, axis=(1, 2)) for shift in shifts])
        labels = dict(zip(shifts, group.labels(views).tolist()))
        for ty in range(-2 * k, 2 * k + 1):
            for tx in range(-2 * k, 2 * k + 1):
                if not (abs(tx) < len(by_x) and abs(ty) <= by_x[abs(tx)]):
                    continue
                votes = np.zeros(16, dtype=np.int64)
                for sy in range(-k, k + 1):
                    for sx in range(-k, k + 1):
                        votes[labels[(ty + sy, tx + sx)]] += 1
                shifted_images += 1
                broken += int(np.argmax(votes)) != record["prediction"]
        checked += 1
    return (f"{Path(header['model']).name}: {checked} images, {shifted_images} certified shifted images "
            f"evaluated exactly, {broken} with another smoothed prediction")


def predict_inside(path: Path, count: int, fraction: float = 0.95, n: int = 2000, alpha: float = 0.001) -> str:
    """Cohen's PREDICT for images changed by +-fraction of their certified radius (brightness b', or a
    factor e^(+-fraction r)): a statistical look at the certificate on the real model, not a proof.

    Changed images may leave [0, 1] (the certificate is for unclipped changes), which certify's data
    path refuses: the views of psi_t(x), psi_{theta + t}(x), are made here with the plugin's transform."""
    from scipy.stats import binomtest

    header, records = read_results(path)
    plugin, sigma = header["plugin"], header["settings"]["sigma"]
    run = certifier.load(header["model"], plugin=plugin, sigma=sigma)
    dataset = run.dataset(DATA, split="test")
    group = next(iter(run.groups(dataset.shape).values()))
    rng = np.random.default_rng(1)
    chosen = [r for r in records if r["prediction"] is not None and r["radius"] > 0.05][:count]
    other = abstained = kept = 0
    for record in chosen:
        x = dataset.batch([record["index"]])
        for sign in (-1, 1):
            theta = sign * fraction * record["radius"] + sigma * rng.standard_normal(n)
            views = run.method.transform(np.broadcast_to(x, (n, *x.shape[1:])),
                                         theta.astype(np.float32).reshape(n, *([1] * (x.ndim - 1))))
            votes = np.bincount(group.labels(views), minlength=2)
            top, runner_up = np.argsort(-votes, kind="stable")[:2]
            if binomtest(int(votes[top]), int(votes[top] + votes[runner_up]), 0.5).pvalue > alpha:
                abstained += 1
            elif top != record["prediction"]:
                other += 1
            else:
                kept += 1
    return (f"{Path(header['model']).name}, {plugin} sigma {sigma}: {len(chosen)} certified images, each changed "
            f"by +-{fraction:g} of its radius; PREDICT (n = {n}, alpha = {alpha:g}) on the {2 * len(chosen)} changed "
            f"images: {kept} keep the prediction, {other} predict another class, {abstained} abstain")


def base_accuracy(models: dict[str, Path]) -> str:
    with np.load(DATA) as data:
        x = data["x_test"].astype(np.float32)[:, None] / 255.0
        y = data["y_test"]
    changes = [
        ("clean", lambda v: v),
        ("b = -0.25", lambda v: v - 0.25), ("b = -0.1", lambda v: v - 0.1),
        ("b = +0.1", lambda v: v + 0.1), ("b = +0.25", lambda v: v + 0.25),
        ("factor 0.5", lambda v: v * 0.5), ("factor 0.7", lambda v: v * 0.7), ("factor 1.4", lambda v: v * 1.4),
        ("exponent 0.5", lambda v: v ** 0.5), ("exponent 2", lambda v: v ** 2.0),
        ("roll (0, 2)", lambda v: np.roll(v, (0, 2), axis=(2, 3))),
        ("roll (2, 2)", lambda v: np.roll(v, (2, 2), axis=(2, 3))),
        ("roll (3, 3)", lambda v: np.roll(v, (3, 3), axis=(2, 3))),
    ]
    lines = ["| model | " + " | ".join(name for name, _ in changes) + " |", "| --- " * (len(changes) + 1) + "|"]
    for name, path in models.items():
        run = certifier.load(path, plugin="translation", options={"k": 0})  # any plugin: only the model runs
        group = next(iter(run.groups((1, 28, 28)).values()))
        row = []
        for _, change in changes:
            changed = change(x).astype(np.float32)
            predicted = np.concatenate([group.labels(changed[i:i + 1000]) for i in range(0, len(x), 1000)])
            row.append(pct(float((predicted == y).mean())))
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def zero_filled(x: np.ndarray, ty: int, tx: int) -> np.ndarray:
    """x shifted by (ty, tx) with the uncovered edge filled with zeros (images N x H x W)."""
    out = np.zeros_like(x)
    height, width = x.shape[1:]
    out[:, max(ty, 0):height + min(ty, 0), max(tx, 0):width + min(tx, 0)] = \
        x[:, max(-ty, 0):height - max(ty, 0), max(-tx, 0):width - max(tx, 0)]
    return out


ZERO_SHIFTS = [(0, 1), (0, -1), (1, 0), (-1, 0), (0, 2), (0, -2), (2, 0), (-2, 0), (1, 1), (2, 2), (0, 3), (3, 0)]


def zero_filled_shifts(limit: int) -> str:
    """Where a zero-filled shift is the very image the cyclic one is (the pixels that wrap are zero), and
    how many images the translation model is right and certified for on those exactly covered shifts."""
    with np.load(DATA) as data:
        x = data["x_test"][:limit]
    certified_runs = [(name, read_results(path)[1]) for name, path in model_rows("translation")[:1]]
    lines = ["| shift (t_y, t_x) | " + " | ".join(f"({a}, {b})" for a, b in ZERO_SHIFTS) + " |",
             "| --- " * (len(ZERO_SHIFTS) + 1) + "|"]
    same = {shift: (zero_filled(x, *shift) == np.roll(x, shift, axis=(1, 2))).all(axis=(1, 2)) for shift in ZERO_SHIFTS}
    lines.append("| zero-filled = cyclic | " + " | ".join(pct(float(same[t].mean())) for t in ZERO_SHIFTS) + " |")
    for name, records in certified_runs:
        row = []
        for ty, tx in ZERO_SHIFTS:
            good = 0
            for record in records[:limit]:
                by_x = (record.get("details") or {}).get("largest_t_y_by_t_x") or []
                covered = abs(tx) < len(by_x) and abs(ty) <= by_x[abs(tx)]
                good += bool(record["correct"] and covered and same[(ty, tx)][record["index"]])
            row.append(pct(good / len(records[:limit])))
        lines.append(f"| {name}: right, certified and zero-filled = cyclic | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plain", type=Path, default=ROOT / "models" / "fmnist-plain.onnx")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--predict-images", type=int, default=100,
                        help="certified images changed within their radius and predicted again")
    args = parser.parse_args()
    parameter_radii = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75]
    print("## Certified accuracy\n")
    for prefix in ("brightness", "contrast", "gamma"):
        print(f"### {prefix}\n\n{certified_table(prefix, parameter_radii)}")
    print(f"### translation\n\n{certified_table('translation', [0.0, 1.0, 2.0])}")
    print("### trained against plain, image by image\n")
    print(paired_table({"brightness": [0.25, 0.5, 0.75], "contrast": [0.25, 0.5, 0.75], "gamma": [0.25, 0.5, 0.75],
                        "translation": [1.0, 2.0]}))
    print("### translation: exact certified sets (share of images right and certified for the shift (t_y, t_x), "
          "and so for its sign and axis swaps)\n")
    print(translation_sets())
    print("### translation: brute force on the real models\n")
    for _, path in model_rows("translation"):
        print("- " + verify_translation(path, args.limit))
    print("\n### brightness, contrast, gamma: the smoothed prediction just inside the certified radius\n")
    for prefix in ("brightness", "contrast", "gamma"):
        for name, path in model_rows(prefix)[:1]:
            print("- " + predict_inside(path, args.predict_images))
    print("\n## Base models under fixed changes (no smoothing, all test images)\n")
    models = {"fmnist-brightness-0.25": ROOT / "models/fmnist-brightness-0.25.onnx",
              "fmnist-translation-3": ROOT / "models/fmnist-translation-3.onnx",
              "plain": args.plain, "fmnist-rs-0.25-gaussian": ROOT / "models/fmnist-rs-0.25-gaussian.onnx"}
    print(base_accuracy({k: v for k, v in models.items() if Path(v).exists()}))
    print("## Zero-filled shifts that are cyclic ones (first images of the test split)\n")
    print(zero_filled_shifts(args.limit))


if __name__ == "__main__":
    main()
