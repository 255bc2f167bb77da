"""The figures of docs/results-attack.md: certified accuracy beside what an attack moves.

    python benchmarks/attack_evidence.py [run] [tables]      # from the repository root

``run`` certifies the first LIMIT (200) Fashion-MNIST test images with each configuration
below and attacks the same images (certifier_plugins.attack: SmoothAdv on the smoothed
classifier, PGD on the bare model, every point confirmed by certify's engine, the
certificates checked for soundness alarms), into runs/attack-NAME-certified.jsonl and
runs/attack-NAME-attack.jsonl; both resume when interrupted. Each configuration holds the
heavy lock ($LOCK, default /work/locks/heavy; LOCK= for none) while it runs, with
onnxruntime and torch on THREADS (1) threads. ``tables`` writes docs/results-attack.md from
those files. No argument: both.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"
RUNS = ROOT / "runs"
MODELS = ROOT / "models"
OUT = ROOT / "docs" / "results-attack.md"
LIMIT = int(os.environ.get("LIMIT", 200))
THREADS = int(os.environ.get("THREADS", 1))
LOCK = os.environ.get("LOCK", "/work/locks/heavy")
#: certify and the attack's confirmations: n0 = 100, n = 10,000, alpha = 0.001 (the README's defaults for
#: certify but n); the attack: 20 PGD steps of 2.5 r / 20, m = 16 noisy views per step
SAMPLING = {"n0": 100, "n": 10_000, "alpha": 0.001}
SEARCH = {"attack_steps": 20, "noise_samples": 16}
L2_RADII = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
BRIGHTNESS_RADII = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75)
#: name: (what it is, model, certifier.load options, radii)
CONFIGURATIONS = {
    "rs": ("rs, trained with Gaussian noise (sigma 0.25)", "fmnist-rs-0.25-gaussian.onnx", {}, L2_RADII),
    "drs": ("drs, trained on noisy sub-images (sigma 0.25)", "fmnist-drs-0.25.onnx", {}, L2_RADII),
    "brightness": ("brightness, trained on brightness views (sigma 0.25)", "fmnist-brightness-0.25.onnx", {},
                   BRIGHTNESS_RADII),
    "plain": ("the plain classifier (no noise in training) under rs, sigma 0.25", "fmnist-plain.onnx",
              {"plugin": "rs", "sigma": 0.25}, L2_RADII),
    "plain-denoised": ("the plain classifier behind its denoiser (stability loss) under rs, sigma 0.25",
                       "fmnist-plain.onnx",
                       {"plugin": "rs", "sigma": 0.25, "denoiser": MODELS / "fmnist-denoiser-stab-0.25.onnx"},
                       L2_RADII),
}


@contextlib.contextmanager
def heavy():
    """Hold the heavy lock (if any) for one configuration's runs."""
    if not LOCK:
        yield
        return
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def paths(name: str) -> tuple[Path, Path]:
    return RUNS / f"attack-{name}-certified.jsonl", RUNS / f"attack-{name}-attack.jsonl"


def run(names) -> None:
    import certifier
    from certifier_plugins.attack import attack

    RUNS.mkdir(exist_ok=True)
    for name in names:
        what, model, options, radii = CONFIGURATIONS[name]
        certified, attacked = paths(name)
        with heavy():
            load = os.getloadavg()[0]
            started = time.time()
            run_ = certifier.load(MODELS / model, device="cpu", threads=THREADS, **options)
            with run_.job(DATA, split="test", limit=LIMIT, output=certified, **SAMPLING) as job:
                for _ in job:
                    pass
            with attack(run_, DATA, split="test", limit=LIMIT, radii=radii, certified=certified, output=attacked,
                        **SAMPLING, **SEARCH) as job:
                for record in job:
                    print(f"{name} {record['index']}: {record['seconds']:.1f} s", file=sys.stderr, flush=True)
            print(f"{name}: {time.time() - started:.0f} s, load average {load:.2f} at the start, "
                  f"{os.getloadavg()[0]:.2f} at the end", file=sys.stderr)


def odds(p_value) -> str:
    """The alarm p-value as a table shows it: "-" when no alarm was raised."""
    return "-" if p_value is None else f"{p_value:.2g}"


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def tables() -> str:
    from certifier import summarize
    from certifier.attack_results import alarm_p_value, read_attack_results, summarize_attack
    from certifier.results import read_results

    parts = []
    cost_rows = []
    alarm_rows = []
    totals = []
    for name, (what, model, options, radii) in CONFIGURATIONS.items():
        certified, attacked = paths(name)
        if not (certified.exists() and attacked.exists()):
            parts.append(f"### {name}\n\n(no runs: python benchmarks/attack_evidence.py run)\n")
            continue
        header, records = read_results(certified)
        attack_header, attack_records = read_attack_results(attacked)
        grid = [0.0, *radii]
        cert = summarize(records, grid, header)
        emp = summarize_attack(attack_header, attack_records)
        threat = certifier_threat(header)
        lines = [f"### {name}: {what}", "",
                 f"`{model}`" + (f" with `{Path(str(options['denoiser'])).name}`" if "denoiser" in options else "")
                 + f", {cert['inputs']} test images, radius ceiling {threat.show(cert['radius_ceiling'])}.", "",
                 "| radius | certified accuracy | empirical robust accuracy (smoothed) | bare model under attack |",
                 "| --- | --- | --- | --- |"]
        for r in grid:
            key = str(float(r))
            lines.append(f"| {threat.certified_set(r).replace('|', chr(92) + '|')} | "
                         f"{pct(cert['certified_accuracy'][key])} | {pct(emp['empirical_accuracy'].get(key))} | "
                         f"{pct((emp.get('bare_empirical_accuracy') or {}).get(key))} |")
        parts.append("\n".join(lines) + "\n")
        unconfirmed = sum(1 for r in attack_records if r.get("unconfirmed_alarm"))
        alarm_rows.append(f"| {name} | {emp['alarms_checked']} | {emp['soundness_alarms']} | {unconfirmed} | "
                          f"{emp['abstained_below_certified']} | {emp['alarm_bound'] * emp['alarms_checked']:.2f} | "
                          f"{odds(emp['alarm_p_value'])} |")
        totals.append((emp["alarms_checked"], emp["soundness_alarms"], unconfirmed, emp["abstained_below_certified"],
                       emp["alarm_bound"]))
        cost_rows.append(f"| {name} | {cert['seconds_per_input']:.2f} | {emp['seconds_per_input']:.2f} | "
                         f"{emp['seconds_per_input'] / cert['seconds_per_input']:.1f}x | "
                         f"{cert['forward_passes_per_input']:,.0f} | {emp['forward_passes_per_input']:,.0f} | "
                         f"{attack_header['attack']['gradient']} |")
    if totals:
        checked, raised, unconfirmed, abstained = (sum(row[i] for row in totals) for i in range(4))
        bound = max(row[4] for row in totals)
        expected = sum(row[0] * row[4] for row in totals)
        alarm_rows.append(f"| all | {checked} | {raised} | {unconfirmed} | {abstained} | {expected:.2f} | "
                          f"{odds(alarm_p_value(raised, checked, bound))} |")
    alarms = ["| configuration | inputs with a certificate (radius > 0) | soundness alarms | unconfirmed by the "
              "second look | abstentions below the certified radius (no alarm) | alarms expected at most (sum of "
              "the two alphas per input) | probability of that many under sound certificates (at most) |",
              "| --- " * 7 + "|", *alarm_rows]
    cost = ["| configuration | certify s/input | attack s/input | attack / certify | certify forward passes/input "
            "| attack forward passes/input | search |", "| --- " * 7 + "|", *cost_rows]
    return "\n".join(parts) + "\n#### Soundness alarms\n\n" + "\n".join(alarms) + "\n\n#### Cost\n\n" + "\n".join(
        cost) + "\n"


def certifier_threat(header):
    from certifier import ThreatModel

    return ThreatModel.from_record(header.get("threat_model"), header.get("norm"))


def environment() -> str:
    import onnxruntime
    import torch

    return (f"Python {platform.python_version()}, numpy {np.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"torch {torch.__version__}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} when the "
            f"tables were written; THREADS={THREADS}")


def main(steps) -> None:
    steps = steps or ["run", "tables"]
    if "run" in steps:
        run(list(CONFIGURATIONS))
    if "tables" in steps:
        text = TEMPLATE.format(limit=LIMIT, sampling=json.dumps(SAMPLING), search=json.dumps(SEARCH),
                               tables=tables(), environment=environment())
        OUT.write_text(text)
        print(text)


TEMPLATE = """# Attacks beside certificates: how loose are the certificates?

Regenerate with `python benchmarks/attack_evidence.py` (from the repository root; one to two
hours on two busy cores; runs resume). Certify and attack the first {limit} Fashion-MNIST
test images with the bundled models. Sampling of certify and of the attack's confirmations:
`{sampling}`; the attack's search: `{search}`.

- **Certified accuracy** at r: right and certified at least r (a lower bound on the accuracy
  under any attack within r, with probability 1 - alpha per input).
- **Empirical robust accuracy (smoothed)** at r: the smoothed prediction at the image is right
  and every point SmoothAdv found within each radius up to r was confirmed by certify's engine
  (fresh views) as the same class. An outcome against the classifier counts only when
  confirmed (another class, or an abstention), so this is an upper bound on the true robust
  accuracy. The search is PGD on -log of the smoothed soft classifier over m noisy views per
  step (20 steps of 2.5 r / 20), through the method's noise and the denoiser, with onnx2torch
  gradients; the brightness parameter, one number, is scanned over [-r, r] (41 values).
- **Bare model under attack**: the method's base classifier on the view without noise (through
  the denoiser when there is one), PGD with the same steps; its class at the point is exact.
- **Soundness alarms**: a point within an image's certified radius confirmed as another class,
  and confirmed again on views of its own. Under sound certificates an image raises one with
  probability at most alpha (certify) + alpha (the attack's second look) = 0.002.

{tables}
{environment}.
"""

if __name__ == "__main__":
    main(sys.argv[1:])
