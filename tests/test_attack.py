"""certify attack: closed forms the attack must meet exactly, soundness alarms, resuming, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import certifier
from certifier.attack_results import ABSTAINED, FLIPPED, HELD, read_attack_results, summarize_attack
from certifier_plugins.rs import GaussianSmoothing

from onnx_models import hyperplane_model, linear_model, save

pytest.importorskip("torch")
from certifier_plugins.attack import attack  # noqa: E402

SIGMA = 0.25
#: Distances of the inputs below to the hyperplane x_0 = 0.5 (class 1 beyond it).
DISTANCES = (0.2, 0.3)
#: A tenth of sigma either side of each distance: at n0 = n = 10,000 the engine decides both sides
#: (the probability of the class at the point is Phi(0.1) = 0.54 or 0.46), and far beyond.
RADII = (0.1, 0.175, 0.225, 0.275, 0.325, 0.45)


@pytest.fixture
def plane(tmp_path):
    return save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")


def inputs() -> tuple[np.ndarray, np.ndarray]:
    """Class 1 inputs at the distances of DISTANCES from the boundary, with room in [0, 1] to cross it."""
    x = np.full((len(DISTANCES), 4), 0.5, dtype=np.float32)
    x[:, 0] += np.array(DISTANCES, dtype=np.float32)
    return x, np.ones(len(x), dtype=np.int64)


def run_attack(path, plugin="rs", **settings):
    run = certifier.load(path, plugin=plugin, sigma=SIGMA, device="cpu")
    x, y = inputs()
    defaults = {"radii": RADII, "n0": 10_000, "n": 10_000, "attack_steps": 20, "noise_samples": 8}
    return attack(run, x, y, **{**defaults, **settings})


def outcomes(record, key="smoothed"):
    rows = record["smoothed"] if key == "smoothed" else record["bare"]["outcomes"]
    return {row["radius"]: row["outcome"] for row in rows}


def test_linear_model_is_flipped_exactly_beyond_its_distance(plane):
    """Under Gaussian noise the smoothed linear classifier keeps the hyperplane, so the exact
    robust radius is the distance to it and the optimal attack goes straight at it: the attack
    must hold below the distance and move the prediction (confirmed) just beyond it."""
    job = attack_job = run_attack(plane)
    assert attack_job.search.method == "torch"
    records = job.run_all()
    for distance, record in zip(DISTANCES, records):
        assert record["prediction"] == 1 and record["correct"]
        found = outcomes(record)
        below = [r for r in RADII if r < distance]
        first_beyond = min(r for r in RADII if r > distance)
        assert all(found[r] == "held" for r in below), found
        assert found[first_beyond] == "flipped", found
        assert all(found[r] == "implied" for r in RADII if r > first_beyond)
        flip = next(row for row in record["smoothed"] if row["outcome"] == "flipped")
        assert flip["prediction"] == 0 and flip["distance"] == pytest.approx(first_beyond, abs=1e-6)
        # the bare model (no noise) flips exactly at the distance too
        bare = outcomes(record, "bare")
        assert all(bare[r] == "held" for r in below) and bare[first_beyond] == "flipped"
    summary = job.summary()
    assert summary["empirical_accuracy"] == {str(r): sum(r < d for d in DISTANCES) / len(DISTANCES)
                                             for r in (0.0, *RADII)}


def test_gradient_free_attack_meets_the_same_closed_form(plane):
    job = run_attack(plane, gradient="spsa", attack_steps=30, bare=False)
    assert job.search.method == "spsa"
    for distance, record in zip(DISTANCES, job.run_all()):
        found = outcomes(record)
        assert all(found[r] == "held" for r in RADII if r < distance)
        assert found[min(r for r in RADII if r > distance)] in ("flipped", "abstained")


def test_a_model_without_scores_is_attacked_without_gradients(tmp_path):
    """A label output has no gradient to follow: auto falls back to SPSA on the votes and says why;
    --gradient torch is refused in one line."""
    direction = np.array([1, 0, 0, 0], dtype=np.float32)
    weights = np.stack([-direction / 2, direction / 2], axis=1)
    path = save(linear_model(weights, np.array([0.25, -0.25]), (4,), output="label"), tmp_path / "labels.onnx")
    job = run_attack(path, bare=False, attack_steps=30)
    assert job.search.method == "spsa" and "labels, not scores" in job.search.note
    records = job.run_all()
    assert all(outcomes(r)[0.1] == "held" for r in records)
    with pytest.raises(certifier.CertifyError, match="--gradient torch: .*gives class labels") as error:
        run_attack(path, gradient="torch")
    assert "\n" not in str(error.value)


class OverClaiming(GaussianSmoothing):
    """rs with every radius 50% larger than its rule allows."""

    name = "rs-overclaim"

    def certify(self, selection, estimation, alpha):
        answer = super().certify(selection, estimation, alpha)
        return certifier.Certificate(answer.prediction, answer.radius * 1.5, details=answer.details)


@pytest.mark.parametrize("plugin,alarms", [("rs-overclaim", len(DISTANCES)), ("rs", 0)])
def test_an_over_claiming_plugin_raises_the_soundness_alarm(plane, tmp_path, register_methods, plugin, alarms):
    """A certificate 50% too large covers points the attack moves (confirmed twice): an alarm
    per input, in the record and the summary; rs's own certificates raise none."""
    register_methods(OverClaiming)
    run = certifier.load(plane, plugin=plugin, sigma=SIGMA, device="cpu")
    x, y = inputs()
    with run.job(x, y, output=tmp_path / "certified.jsonl", n=10_000) as job:
        certified = list(job)
    job = run_attack(plane, plugin=plugin, certified=tmp_path / "certified.jsonl", output=tmp_path / "attack.jsonl")
    records = job.run_all()
    raised = [r for r in records if r.get("alarm")]
    assert len(raised) == alarms
    for record, certificate in zip(records, certified):
        assert record["certified"] == {"prediction": certificate.prediction, "radius": certificate.radius}
        alarm = record.get("alarm")
        if alarm:
            assert alarm["distance"] < certificate.radius and alarm["second_prediction"] == 0
    summary = summarize_attack(*read_attack_results(tmp_path / "attack.jsonl"))
    assert summary["soundness_alarms"] == alarms and summary["alarms_checked"] == len(DISTANCES)
    assert summary["alarm_bound"] == pytest.approx(0.002)
    assert (summary["problems"].get("soundness_alarm") or 0) == alarms


def _binomial_ceiling(trials: int, rate: float, tail: float = 1e-4) -> int:
    """The smallest k with P(Binomial(trials, rate) > k) <= tail."""
    total = 0.0
    for k in range(trials + 1):
        total += math.comb(trials, k) * rate**k * (1 - rate) ** (trials - k)
        if 1 - total <= tail:
            return k
    return trials


@pytest.mark.parametrize("plugin", ["rs", "rs-overclaim"])
def test_the_alarm_rate_stays_below_the_two_alphas_for_sound_certificates(tmp_path, plane, register_methods, plugin):
    """Many inputs near the boundary, certified and confirmed at alpha 0.05 (large, so a rate can
    be seen): sound certificates raise alarms on at most the two alphas' share of the inputs
    (a binomial bound at 1e-4), certificates 50% too large on more."""
    register_methods(OverClaiming)
    count = 24
    x = np.full((count, 4), 0.5, dtype=np.float32)
    x[:, 0] += np.linspace(0.15, 0.45, count, dtype=np.float32)
    y = np.ones(count, dtype=np.int64)
    run = certifier.load(plane, plugin=plugin, sigma=SIGMA, device="cpu")
    sampling = {"n0": 100, "n": 2000, "alpha": 0.05}
    with run.job(x, y, output=tmp_path / "certified.jsonl", **sampling) as job:
        list(job)
    job = attack(run, x, y, radii=tuple(np.round(np.linspace(0.05, 0.6, 12), 3)), attack_steps=10, noise_samples=8,
                 bare=False, certified=tmp_path / "certified.jsonl", **sampling)
    job.run_all()
    summary = job.summary()
    assert summary["alarm_bound"] == pytest.approx(0.1) and summary["alarms_checked"] == count
    ceiling = _binomial_ceiling(summary["alarms_checked"], summary["alarm_bound"])
    if plugin == "rs":
        assert summary["soundness_alarms"] <= ceiling
    else:
        assert summary["soundness_alarms"] > ceiling


def test_the_alarm_p_value_is_the_binomial_tail_at_the_bound():
    """How likely sound certificates raise k alarms among N: 1 - (1 - b)^N for one, the binomial
    tail for more, 0 for an exact method (bound 0), nothing without an alarm or a certify file."""
    from certifier.attack_results import alarm_p_value

    assert alarm_p_value(1, 200, 0.002) == pytest.approx(1 - 0.998**200)
    two = 1 - 0.998**200 - 200 * 0.002 * 0.998**199
    assert alarm_p_value(2, 200, 0.002) == pytest.approx(two)
    assert alarm_p_value(3, 4, 0.002) == pytest.approx(4 * 0.002**3 * 0.998 + 0.002**4)
    assert alarm_p_value(1, 50, 0.0) == 0.0
    assert alarm_p_value(0, 50, 0.002) is None and alarm_p_value(2, 50, None) is None


def test_attack_resumes_where_it_stopped_and_refuses_other_settings(plane, tmp_path):
    output = tmp_path / "attack.jsonl"
    whole = run_attack(plane, output=tmp_path / "whole.jsonl").run_all()
    with run_attack(plane, output=output) as job:
        first = next(iter(job))
    with run_attack(plane, output=output) as job:
        assert [r["index"] for r in job.done] == [0] and job.todo == [1]
        job.run_all()
    header, records = read_attack_results(output)
    assert header["mode"] == "attack" and header["attack"]["radii"] == list(RADII)
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in records] == [strip(r) for r in whole] and records[0] == first
    with pytest.raises(certifier.CertifyError, match="holds results for other settings") as error:
        run_attack(plane, output=output, attack_steps=5)
    assert "\n" not in str(error.value)
    with run_attack(plane, output=output):  # locked while a job writes it
        with pytest.raises(certifier.CertifyError, match="in use by another certify run"):
            run_attack(plane, output=output)


def test_refusals_are_one_line(plane, tmp_path, register_methods):
    from certifier import SmoothingMethod, ThreatModel

    class Blur(SmoothingMethod):
        name = "blur-test"
        threat_model = ThreatModel("blur", "a blur of the whole image", "width", "pixels")
        uses_sigma = False

        def sample(self, x, rng, group):
            return x

        def certify(self, selection, estimation, alpha):
            return certifier.Certificate(selection.top(), 0.0)

    register_methods(Blur)
    x, y = inputs()
    for call, message in [
        (lambda: attack(certifier.load(plane, plugin="blur-test", device="cpu"), x, y),
         "certify attack attacks L1, L2 and Linf balls"),
        (lambda: run_attack(plane, radii=(0.1, -1)), "--radii must be finite numbers >= 0"),
        (lambda: run_attack(plane, attack_steps=0), "--attack-steps must be a whole number"),
        (lambda: run_attack(plane, gradient="magic"), "--gradient must be one of"),
    ]:
        with pytest.raises(certifier.CertifyError, match=message) as error:
            call()
        assert "\n" not in str(error.value)
    other = save(hyperplane_model([0, 1, 0, 0], -0.5), tmp_path / "other.onnx")
    with certifier.load(other, plugin="rs", sigma=SIGMA).job(x, y, output=tmp_path / "other.jsonl", n=100) as job:
        list(job)
    with pytest.raises(certifier.CertifyError, match="certified another classifier or other inputs .model_sha256"):
        run_attack(plane, certified=tmp_path / "other.jsonl")
    not_results = tmp_path / "notes.jsonl"
    not_results.write_text("my notes\n")
    with pytest.raises(certifier.CertifyError, match="is not a certify results file"):
        run_attack(plane, output=not_results)
    assert not_results.read_text() == "my notes\n"


def test_brightness_is_attacked_in_its_parameter_to_the_closed_form(tmp_path):
    """A classifier of the mean intensity [mean(x) > t] keeps its boundary under brightness
    smoothing, and its exact radius is |mean(x) - t| (SPEC, closed-form checks): the attack on
    the brightness shift must meet it."""
    t = 0.5
    weights = np.stack([-np.full(4, 0.125), np.full(4, 0.125)], axis=1)  # logits +-(mean - t) / 2
    path = save(linear_model(weights, np.array([t / 2, -t / 2]), (4,)), tmp_path / "mean.onnx")
    run = certifier.load(path, plugin="brightness", sigma=0.1, device="cpu")
    x = np.array([[0.6, 0.7, 0.5, 0.6], [0.8, 0.9, 0.7, 0.8]], dtype=np.float32)  # means 0.6 and 0.8
    radii = (0.05, 0.09, 0.11, 0.2, 0.29, 0.31)
    records = attack(run, x, np.array([1, 1]), radii=radii, n0=10_000, n=10_000, attack_steps=20,
                     noise_samples=8).run_all()
    for distance, record in zip((0.1, 0.3), records):
        found = outcomes(record)
        assert all(found[r] == "held" for r in radii if r < distance), found
        first = min(r for r in radii if r > distance)
        assert found[first] == "flipped", found
        flip = next(row for row in record["smoothed"] if row["outcome"] == "flipped")
        assert flip["distance"] == pytest.approx(first, abs=1e-6)
        # the record keeps the shift itself (down, towards the boundary), so the point can be rebuilt
        assert flip["parameter"] == -flip["distance"]
        for row in record["smoothed"]:
            if row["outcome"] != "implied":
                assert abs(row["parameter"]) == row["distance"] <= row["radius"]


def test_summary_counts_only_confirmed_outcomes():
    header = {"mode": "attack", "alpha": 0.001, "attack": {"radii": [0.5, 1.0], "bare": True, "certified_alpha": 0.001}}
    def record(index, label, prediction, smoothed, bare=()):
        return {"type": "attack", "index": index, "label": label, "prediction": prediction,
                "correct": None if label is None else prediction == label,
                "smoothed": [{"radius": r, "outcome": o} for r, o in smoothed],
                "bare": {"prediction": prediction, "outcomes": [{"radius": r, "outcome": o} for r, o in bare]}}
    records = [
        record(0, 1, 1, [(0.5, "held"), (1.0, "held")], [(0.5, "held"), (1.0, "flipped")]),
        record(1, 1, 1, [(0.5, "abstained"), (1.0, "held")], [(0.5, "flipped"), (1.0, "implied")]),
        record(2, 1, None, []),
        record(3, 2, 1, []),
    ]
    summary = summarize_attack(header, records)
    assert summary["empirical_accuracy"] == {"0.0": 0.5, "0.5": 0.25, "1.0": 0.25}
    assert summary["bare_empirical_accuracy"] == {"0.0": 0.5, "0.5": 0.25, "1.0": 0.0}
    assert summary["abstain_rate"] == 0.25 and summary["soundness_alarms"] == 0


def test_report_puts_the_attack_beside_the_certificates(plane, tmp_path):
    from click.testing import CliRunner

    from certifier.cli import cli

    run = certifier.load(plane, plugin="rs", sigma=SIGMA, device="cpu")
    x, y = inputs()
    with run.job(x, y, output=tmp_path / "certified.jsonl", n=10_000) as job:
        list(job)
    run_attack(plane, certified=tmp_path / "certified.jsonl", output=tmp_path / "attack.jsonl").run_all()
    files = [str(tmp_path / "certified.jsonl"), str(tmp_path / "attack.jsonl")]
    result = CliRunner().invoke(cli, ["report", *files, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert list(report) == [files[0]]
    summary = report[files[0]]
    assert summary["empirical_accuracy"]["0.275"] == 0.5 and summary["attack_file"] == "attack.jsonl"
    assert summary["certified_accuracy"]["0.0"] == 1.0 and summary["soundness_alarms"] == 0
    table = CliRunner().invoke(cli, ["report", *files])
    assert "empirical robust accuracy r >= 0.275" in table.output and "soundness alarms" in table.output
    alone = json.loads(CliRunner().invoke(cli, ["report", files[1], "--json"]).output)
    assert alone[files[1]]["empirical_accuracy"] == summary["empirical_accuracy"]
    assert "certified_accuracy" not in alone[files[1]]
    # the page to send: the attack's rows beside the certificates, and its dashed curve
    page = tmp_path / "report.html"
    assert CliRunner().invoke(cli, ["report", *files, "--html", str(page), "--plot", str(tmp_path / "p.png")]
                              ).exit_code == 0
    html = page.read_text()
    assert 'data-key="empirical_accuracy" data-radius="0.275"' in html and 'stroke-dasharray' in html
    assert 'data-key="bare_empirical_accuracy"' in html and (tmp_path / "p.png").stat().st_size > 0
    refused = CliRunner().invoke(cli, ["report", files[1], "--html", str(tmp_path / "alone.html")])
    assert refused.exit_code == 1 and "holds an attack alone" in refused.output
    assert not (tmp_path / "alone.html").exists()


def test_an_alarm_needs_a_second_confirmation_of_its_own(plane):
    """A point confirmed as another class below the certified radius raises an alarm only when
    a second look, on views of its own, confirms it again; otherwise it is recorded as unconfirmed."""
    job = run_attack(plane)
    x = inputs()[0][0]
    record = {"prediction": 1}
    flip = (x, {"radius": 0.2, "distance": 0.2, "prediction": 0})
    certificate = {"prediction": 1, "radius": 0.3}
    for second, kind in ((0, "alarm"), (None, "unconfirmed_alarm"), (1, "unconfirmed_alarm")):
        looks = []

        def confirm(slot, point):
            looks.append(slot)
            return second

        found, alarm = job._alarm(x, record, certificate, flip, confirm, 7)
        assert (found, alarm["second_prediction"], looks) == (kind, second, [7])
    # at or beyond the certified radius there is nothing to check
    assert job._alarm(x, record, {"prediction": 1, "radius": 0.2}, flip, None, 7) == ("alarm", None)


def test_a_model_onnx2torch_cannot_convert_is_attacked_without_gradients(tmp_path):
    """An ONNX-ML classifier (as skl2onnx writes) has no torch form: SPSA through onnxruntime, and
    the header says why; --gradient torch refuses in one line."""
    from onnx_models import ml_classifier_model

    coefficients = np.zeros((4, 2), dtype=np.float32)
    coefficients[0], coefficients[1] = [-1, 1], [1, -1]  # class 1 where x_0 > x_1: distance (x_0 - x_1) / sqrt(2)
    path = save(ml_classifier_model(coefficients, [0, 1]), tmp_path / "ml.onnx")
    run = certifier.load(path, plugin="rs", sigma=SIGMA, device="cpu")
    x = np.array([[0.8, 0.2, 0.5, 0.5]], dtype=np.float32)  # distance 0.42
    job = attack(run, x, np.array([1]), radii=(0.2, 0.6), n0=10_000, n=10_000, attack_steps=30, noise_samples=8)
    assert job.search.method == "spsa" and "onnx2torch cannot convert ml.onnx" in job.search.note
    (record,) = job.run_all()
    assert outcomes(record) == {0.2: "held", 0.6: "flipped"}
    assert json.loads(json.dumps(job.header))["gradient_note"] == job.search.note
    with pytest.raises(certifier.CertifyError, match="onnx2torch cannot convert ml.onnx") as error:
        attack(run, x, np.array([1]), radii=(0.2,), gradient="torch")
    assert "\n" not in str(error.value)


def test_l1_attack_under_uniform_noise_meets_the_closed_form(plane):
    """Uniform noise is symmetric and independent of x, so the smoothed linear classifier keeps
    its hyperplane too, and in L1 the nearest point across it is one coordinate away: the
    sparse L1 attack must hold below the distance and flip just beyond it."""
    run = certifier.load(plane, plugin="uniform", options={"lambda": 0.5}, device="cpu")
    x, y = inputs()
    radii = (0.15, 0.25, 0.35, 0.45)  # 0.05 either side of the distances: the class has 55% of the votes
    job = attack(run, x, y, radii=radii, n0=10_000, n=10_000, attack_steps=20, noise_samples=8)
    assert job.search.method == "torch" and job.search.surface.norm == "l1"
    for distance, record in zip(DISTANCES, job.run_all()):
        found = outcomes(record)
        assert all(found[r] == "held" for r in radii if r < distance), found
        first = min(r for r in radii if r > distance)
        assert found[first] == "flipped", found
        flip = next(row for row in record["smoothed"] if row["outcome"] == "flipped")
        assert flip["distance"] == pytest.approx(first, abs=1e-6)


def test_an_abstention_at_one_point_of_a_radius_does_not_end_its_search(plane):
    """A search that offers several points within a radius (every shift, for translation): an
    abstention at the first is kept only until a later point is confirmed as another class,
    so a flip (and the alarm it may raise) is not missed behind an abstention."""
    job = run_attack(plane, radii=(0.1, 0.45))
    x = inputs()[0][0]
    near, far = x.copy(), x.copy()
    near[0] -= 0.05
    far[0] -= 0.08

    def points(target, radius, number):
        yield near, 0.05, {"shift": [0, 1]}
        yield far, 0.08, {"shift": [1, 1]}

    job.search.smoothed = points
    for answers, expected in (((None, 0), FLIPPED), ((None, 1), ABSTAINED), ((1, None), ABSTAINED), ((1, 1), HELD)):
        looks = iter(answers * 2)
        outcomes, flip = job._smoothed_outcomes(x, 1, None, lambda slot, point: next(looks))
        first = outcomes[0]
        assert first["outcome"] == expected
        assert (flip is not None) == (expected == FLIPPED)
        if expected == FLIPPED:
            assert first["shift"] == [1, 1] and first["prediction"] == 0 and outcomes[1]["outcome"] == "implied"
        elif expected == ABSTAINED:
            assert first["prediction"] is None and first["shift"] == ([0, 1] if answers[0] is None else [1, 1])
