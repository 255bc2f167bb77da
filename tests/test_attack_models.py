"""certify attack on the bundled models: every method's attack runs end to end, and sound
certificates raise no soundness alarm."""

from __future__ import annotations

from pathlib import Path

import pytest

import certifier

pytest.importorskip("torch")
from certifier_plugins.attack import attack  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"
SAMPLES = MODELS / "fmnist-samples.npz"
QUICK = {"n0": 100, "n": 500, "attack_steps": 4, "noise_samples": 4}


def certify_and_attack(tmp_path, model, limit, radii, certify_n=2000, **load):
    run = certifier.load(MODELS / model, device="cpu", threads=1, **load)
    with run.job(SAMPLES, output=tmp_path / "certified.jsonl", n=certify_n, limit=limit) as job:
        certified = {r.index: r for r in job}
    job = attack(run, SAMPLES, limit=limit, radii=radii, certified=tmp_path / "certified.jsonl",
                 output=tmp_path / "attack.jsonl", **QUICK)
    return certified, job, job.run_all()


def test_rs_certificates_of_the_bundled_model_raise_no_alarm(tmp_path):
    """Sound certificates: no attack is confirmed below a certified radius (alarms at a rate
    of at most twice alpha, here 0.2% of 12 inputs: none)."""
    certified, job, records = certify_and_attack(tmp_path, "fmnist-rs-0.25.onnx", 12, (0.25, 0.5, 0.75, 1.0))
    assert job.search.method == "torch"
    assert not [r["index"] for r in records if r.get("alarm")]
    summary = job.summary()
    assert summary["soundness_alarms"] == 0 and summary["alarms_checked"] > 0
    for record in records:
        certificate = certified[record["index"]]
        if certificate.correct:
            # what is certified at r is never broken (confirmed as another class) at r
            broken = [o["radius"] for o in record["smoothed"] if o["outcome"] == "flipped"]
            assert all(r >= certificate.radius for r in broken)


@pytest.mark.parametrize("model,radii,load,gradient", [
    ("fmnist-drs-0.25.onnx", (0.5, 1.0), {}, "torch"),
    ("fmnist-brightness-0.25.onnx", (0.2, 0.5), {}, "scan"),
    ("fmnist-uniform-1.0.onnx", (0.5, 2.0), {}, "torch"),
    ("fmnist-plain.onnx", (0.5,), {"plugin": "rs", "sigma": 0.25, "denoiser": MODELS / "fmnist-denoiser-mse-0.25.onnx"},
     "torch"),
    ("fmnist-pprs-grid-0.5.onnx", (0.5,), {}, "torch"),
])
def test_each_method_is_attacked_end_to_end(tmp_path, model, radii, load, gradient):
    _, job, records = certify_and_attack(tmp_path, model, 2, radii, certify_n=300, **load)
    assert job.search.method == gradient
    assert len(records) == 2 and all(r["forward_passes"] > 0 for r in records)
    assert job.summary()["soundness_alarms"] == 0


def test_translation_is_searched_exactly(tmp_path):
    """Every shift within the radius is tried and decided exactly: an input certified for
    shifts up to R holds at every radius up to R, and a shift found is another class."""
    certified, job, records = certify_and_attack(tmp_path, "fmnist-translation-3.onnx", 3, (1, 2))
    assert job.search.method == "exact"
    for record in records:
        certificate = certified[record["index"]]
        for outcome in record["smoothed"]:
            if outcome["radius"] <= certificate.radius:
                assert outcome["outcome"] == "held"
            if outcome["outcome"] == "flipped":
                assert outcome["prediction"] != record["prediction"] and max(map(abs, outcome["shift"])) <= 2
    summary = job.summary()
    # exact certificates, exact confirmations: under a sound rule no alarm can ever be raised
    assert summary["soundness_alarms"] == 0 and summary["alarm_bound"] == 0


def test_dssn_points_are_on_the_grid_and_decided_exactly(tmp_path):
    _, job, records = certify_and_attack(tmp_path, "fmnist-dssn-1.0.onnx", 2, (1.0, 4.0), certify_n=1)
    assert job.search.method == "torch" and job.search.surface.gradient == "straight-through"
    assert all(r["prediction"] is not None for r in records)
