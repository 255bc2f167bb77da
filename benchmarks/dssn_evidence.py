"""Evidence for the DSSN plugin (docs/results-dssn.md); run through benchmarks/dssn_evidence.sh.

    python benchmarks/dssn_evidence.py bruteforce            # exhaustive check of the rule on tiny inputs
    python benchmarks/dssn_evidence.py timing MODEL          # DSSN vs SSN vs uniform, seconds per input
    python benchmarks/dssn_evidence.py card MODEL [MODEL..]  # clean / one-view accuracy for the model cards

bruteforce certifies every input on the 1/q grid (d = 2..4 pixels) through the shipped
engine path with lookup-table base classifiers (tests/test_dssn.py's helpers), then checks
every grid perturbation within the certified radius, and builds worst-case classifiers to
show the radius is attained (one more step of 1/q flips the prediction).

timing certifies the same inputs with the same model under dssn (all L views), ssn and
uniform (n0 + n forward passes), interleaved in one process, and reports medians of the
seconds per input and of the per-input ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import certifier
from certifier.stats import round_down

from benchlib import load_average

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"


# -- exhaustive check on tiny inputs --------------------------------------------------------


def bruteforce(args) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_dssn import TableModel, certify_all, dssn, grid, random_table, worst_case_table

    configs = [(8, 0.25, 3), (8, 0.5, 3), (6, 1.0, 3), (6, 1.5, 3), (5, 0.3, 3), (7, 0.2, 3), (4, 0.75, 4),
               (4, 2.0, 4), (16, 0.5, 2), (16, 0.125, 2), (12, 2.5, 2)]
    rows = []
    for q, lam, d in configs:
        rng = np.random.default_rng(q * 1000 + d)
        inputs = grid(q, d)
        distance = np.abs(inputs[:, None, :] - inputs[None, :, :]).sum(-1)
        pairs = violations = positive = attained = classifiers = 0
        views = None
        for trial, (classes, flip) in enumerate(itertools.product((2, 3, 5), (0.0, 0.05, 0.3))):
            model = TableModel(random_table(q, d, classes, rng, flip), q)
            method = dssn(q, lam, seed=trial)
            views = method.levels
            predictions, steps, _ = certify_all(method, model, inputs, q, batch_size=256)
            within = distance <= steps[:, None]
            changed = predictions[None, :] != predictions[:, None]
            pairs += int(within.sum())
            violations += int((within & changed).sum())
            positive += int((steps > 0).sum())
            nearest = np.where(changed, distance, np.iinfo(np.int64).max).min(axis=1)
            attained += int((steps == nearest - 1).sum())
            classifiers += 1
        # tightness: worst-case classifiers for single-pixel moves of every size
        method = dssn(q, lam)
        method.prepare((d,), {})
        tried = witnessed = 0
        for k in inputs[rng.permutation(len(inputs))[: args.tight_inputs]]:
            for pixel, direction, size in itertools.product(range(d), (-1, 1), range(1, method.levels // 2 + 2)):
                moved = k.copy()
                moved[pixel] += direction * size
                if not 0 <= moved[pixel] <= q:
                    continue
                top, other = (0, 1) if tried % 2 == 0 else (1, 0)
                tried += 1
                model = worst_case_table(method, k, moved, top, other, q)
                if model is None:
                    continue
                predictions, steps, _ = certify_all(method, model, np.stack([k, moved]), q)
                if predictions[0] == top and steps[0] == size - 1 and predictions[1] != top:
                    witnessed += 1
                else:
                    raise SystemExit(f"tightness construction failed at {k} -> {moved}: {predictions}, {steps}")
        rows.append({"q": q, "lambda": lam, "L": views, "d": d, "inputs": len(inputs), "classifiers": classifiers,
                     "pairs_within_radius": pairs, "violations": violations,
                     "inputs_with_radius_gt_0": positive, "radius_equals_brute_force_robustness": attained,
                     "tightness_moves_tried": tried, "tightness_witnessed": witnessed})
        print(json.dumps(rows[-1]), file=sys.stderr)
    header = ("| q | lambda | L | d | grid inputs | classifiers | (input, x') pairs within radius | violations "
              "| radius > 0 | radius = brute-force robustness | single-pixel moves tried | worst-case classifiers "
              "built: radius exact and x' one step beyond flips |")
    print(header)
    print("|" + " --- |" * 12)
    for r in rows:
        print(f"| {r['q']} | {r['lambda']:g} | {r['L']} | {r['d']} | {r['inputs']} | {r['classifiers']} | "
              f"{r['pairs_within_radius']} | {r['violations']} | {r['inputs_with_radius_gt_0']} | "
              f"{r['radius_equals_brute_force_robustness']} | {r['tightness_moves_tried']} | "
              f"{r['tightness_witnessed']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if any(r["violations"] for r in rows):
        raise SystemExit("VIOLATIONS FOUND")


# -- time per input ---------------------------------------------------------------------------


def timing(args) -> None:
    import onnxruntime

    with np.load(args.data) as data:
        x = data["x_test"][: args.inputs]
    model = str(args.model)
    dssn = certifier.load(model, plugin="dssn", threads=args.threads)
    sigma = dssn.method.sigma
    runs = {
        "dssn": dssn,
        "ssn": certifier.load(model, plugin="ssn", sigma=sigma, threads=args.threads),
        "uniform": certifier.load(model, plugin="uniform", sigma=sigma, threads=args.threads),
    }
    print(f"model {model}, sigma {sigma:.6g} (lambda {dssn.method.lam:.6g}, L = {dssn.method.levels}), "
          f"{args.inputs} inputs, n0 = {args.n0}, n = {args.n}, onnxruntime {onnxruntime.__version__}, "
          f"threads {args.threads or 'default'}, load average before {load_average()}")
    for run in runs.values():  # warm-up
        run.certify(x[:1], n0=10, n=1000, alpha=args.alpha)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    passes: dict[str, int] = {}
    outcome: dict[str, list] = {name: [] for name in runs}
    order = list(runs)
    for i in range(args.inputs):
        for name in order[i % 3:] + order[: i % 3]:  # rotate the order from input to input
            started = time.perf_counter()
            (result,) = runs[name].certify(x[i : i + 1], n0=args.n0, n=args.n, alpha=args.alpha, seed=i)
            seconds[name].append(time.perf_counter() - started)
            passes[name] = result.forward_passes
            outcome[name].append((result.prediction, round_down(result.radius, 4)))
    print(f"load average after {load_average()}")
    print()
    print("| method | forward passes per input | median seconds per input | median ratio to dssn (per input) |")
    print("| --- | --- | --- | --- |")
    for name in runs:
        ratios = [a / b for a, b in zip(seconds[name], seconds["dssn"])]
        print(f"| {name} | {passes[name]} | {statistics.median(seconds[name]):.3f} | "
              f"{statistics.median(ratios):.1f}x |")
    print()
    for name in runs:
        print(f"{name}: per input seconds {[round(s, 3) for s in seconds[name]]}, (prediction, radius rounded down) {outcome[name]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": seconds, "passes": passes}, indent=1))


# -- model cards --------------------------------------------------------------------------------


def card(args) -> None:
    with np.load(args.data) as data:
        x_test, y_test = data["x_test"], data["y_test"]
    for path in args.models:
        run = certifier.load(path)
        dataset = run.dataset(x_test, y_test)
        groups = run.groups(dataset.shape)
        (group,) = groups.values()
        rng = np.random.default_rng(0)
        clean = noisy = 0
        for start in range(0, len(dataset), 1000):
            batch = run.method.check_inputs(dataset.batch(range(start, min(start + 1000, len(dataset)))))
            labels = y_test[start : start + len(batch)]
            clean += int((group.model.labels(group.adapter(batch)) == labels).sum())
            views = run.method.sample(batch, rng, group.name)
            noisy += int((group.model.labels(group.adapter(views)) == labels).sum())
        metadata = run.model.metadata
        training = json.loads(metadata.get("certifier.training", "{}"))
        print(f"{path}: plugin {metadata.get('certifier.plugin')}, sigma {run.method.sigma:.6g}, "
              f"lambda {getattr(run.method, 'lam', float('nan')):.6g}; test split ({len(dataset)} images): clean {100 * clean / len(dataset):.2f}%, "
              f"one noisy view {100 * noisy / len(dataset):.2f}%; training-time validation: clean "
              f"{100 * training.get('validation_clean_accuracy', float('nan')):.2f}%, noisy "
              f"{100 * training.get('validation_noisy_accuracy', float('nan')):.2f}%; "
              f"size {Path(path).stat().st_size / 1e6:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    brute = sub.add_parser("bruteforce")
    brute.add_argument("--tight-inputs", type=int, default=60)
    brute.add_argument("--json")
    timed = sub.add_parser("timing")
    timed.add_argument("model", type=Path)
    timed.add_argument("--data", type=Path, default=DATA)
    timed.add_argument("--inputs", type=int, default=5)
    timed.add_argument("--n0", type=int, default=100)
    timed.add_argument("-n", type=int, default=100_000)
    timed.add_argument("--alpha", type=float, default=0.001)
    timed.add_argument("--threads", type=int)
    timed.add_argument("--json")
    cards = sub.add_parser("card")
    cards.add_argument("models", nargs="+")
    cards.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    {"bruteforce": bruteforce, "timing": timing, "card": card}[args.command](args)


if __name__ == "__main__":
    main()
