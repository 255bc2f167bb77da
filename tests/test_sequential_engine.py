"""Sequential certification through the real engine: the plan wired in, its soundness on
models whose exact radius is known, the decisions it reports, and fixed n left as it was.

Failure-rate tests use a large alpha (0.1) and inputs placed where a wrong claim is most
likely (true pA just below a level's threshold), so a rate above alpha is measurable in
a few hundred inputs; the mutation beside them (a fixed-n Clopper-Pearson bound used at
every look) must make the same test fail.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

import certifier
from certifier.cli import cli
from certifier.engine import Engine, _Job
from certifier.results import INCIDENTAL_KEYS
from certifier.sampling import ESTIMATION, SELECTION, SequentialSampling

from onnx_models import hyperplane_model, linear_model, save
from sequential_mutants import PeekingClopperPearson

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ALPHA = 0.1


def invoke(*args, expect_ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if expect_ok:
        assert result.exit_code == 0, result.output
    return result


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- fixed n is what it was ---------------------------------------------------------------

#: Results files written by main's code without the sequential plan (rewritten after main's checked
#: Clopper-Pearson bound moved the last digits), and the commands that wrote them. They were drawn
#: before noise streams were numbered (noise stream 1); STREAM_2 are the same commands' files now.
BEFORE = {
    "fixed-rs.jsonl": ["--plugin", "rs", MODELS / "fmnist-rs-0.25-gaussian.onnx", "--n0", "50", "-n", "1500",
                       "--limit", "4", "--batch-size", "512", "--seed", "3"],
    "fixed-drs.jsonl": [MODELS / "fmnist-drs-0.25.onnx", "--n0", "50", "-n", "700", "--limit", "3",
                        "--batch-size", "256", "--seed", "4"],
    "fixed-uniform.tsv": [MODELS / "fmnist-uniform-1.0.onnx", "--n0", "50", "-n", "600", "--limit", "3", "--seed", "5",
                          "--format", "cohen"],
}
STREAM_2 = {name: f"stream2-{name}" for name in BEFORE}


def comparable(path: Path) -> tuple[dict, list]:
    """A results file without what legitimately differs between two runs (times, paths, version)."""
    if path.suffix == ".tsv":
        header = json.loads(path.with_name(path.name + ".header.json").read_text())
        rows = [line.split("\t")[:-1] for line in path.read_text().splitlines()]  # the time column goes
    else:
        header, *records = lines_of(path)
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    return {k: v for k, v in header.items() if k not in INCIDENTAL_KEYS}, rows


def copy_results(source: Path, target: Path, lines: int) -> None:
    """The first ``lines`` lines of a results file (and a Cohen file's settings beside it)."""
    if source.suffix == ".tsv":
        shutil.copy(source.with_name(source.name + ".header.json"), target.with_name(target.name + ".header.json"))
    target.write_text("".join(source.read_text().splitlines(keepends=True)[:lines]))


@pytest.mark.parametrize("name", BEFORE)
def test_fixed_n_writes_what_it_did_before_in_noise_stream_2(name, tmp_path):
    arguments = [*BEFORE[name], "--data", MODELS / "fmnist-samples.npz", "-q"]
    fresh = tmp_path / name
    invoke(*arguments, "--output", fresh)
    header, rows = comparable(fresh)
    # the header now records the batch size and the noise stream (fixtures from before do not)
    batch_size = int(arguments[arguments.index("--batch-size") + 1]) if "--batch-size" in arguments else 2674
    assert header.pop("batch_size") == batch_size
    assert header.pop("noise_stream") == 2
    before_header, before_rows = comparable(FIXTURES / name)
    assert header == before_header
    # the same inputs and predictions as stream 1 gave (radii differ: other views), and exactly the
    # records stream 2 has always given: a change to stream 2 would change what seeds mean
    assert [row["index"] if isinstance(row, dict) else row[0] for row in rows] == [
        row["index"] if isinstance(row, dict) else row[0] for row in before_rows]
    assert comparable(fresh) == comparable(FIXTURES / STREAM_2[name])


@pytest.mark.parametrize("lines", [1, -1], ids=["header-only", "all-but-the-last"])
@pytest.mark.parametrize("name", BEFORE)
def test_files_of_noise_stream_1_resume_with_the_views_they_were_written_with(name, lines, tmp_path):
    """A file written before noise streams were numbered resumes drawing stream 1: whatever
    it lacks comes out as the version that wrote it would have written it."""
    arguments = [*BEFORE[name], "--data", MODELS / "fmnist-samples.npz", "-q"]
    before = FIXTURES / name
    resumed = tmp_path / f"resumed-{name}"
    copy_results(before, resumed, lines)
    invoke(*arguments, "--output", resumed)
    assert comparable(resumed) == comparable(before)
    # and a file of stream 2 resumes drawing stream 2
    resumed = tmp_path / f"resumed-{STREAM_2[name]}"
    copy_results(FIXTURES / STREAM_2[name], resumed, lines)
    invoke(*arguments, "--output", resumed)
    assert comparable(resumed) == comparable(FIXTURES / STREAM_2[name])


# -- the engine under the sequential plan -------------------------------------------------


def hyperplane_run(tmp_path, direction=(1.0, 0.0, 0.0, 0.0), offset=-0.5, sigma=0.5, **options):
    path = save(hyperplane_model(np.asarray(direction), offset), tmp_path / "plane.onnx")
    return certifier.load(path, plugin="rs", sigma=sigma, options=options)


def sequential_engine(run, shape=(4,), *, levels, n=2000, n0=20, alpha=ALPHA, batch=32, seed=0, cs=None,
                      final_share=0.1, **tuning) -> Engine:
    """An engine on a sequential plan; ``cs`` swaps the bounds (the mutation)."""
    settings = dict(futility=1e-12, first_chunk=8, growth=1.1) | tuning  # many looks: most chances to err
    if cs is not None:
        settings["cs"] = cs
    plan = SequentialSampling(n0, n, alpha, levels, granularity=batch, final_share=final_share, **settings)
    return Engine.from_settings(run.method, run.groups(shape), n0=n0, n=n, alpha=alpha, batch_size=batch, seed=seed,
                                sampling=plan, input_shape=shape)


#: A point at distance 0.4 from the hyperplane x0 = 0.5: with sigma 0.5 the exact radius of
#: the smoothed classifier is 0.4 (pA = Phi(0.8)), and the level 0.4001 sits just above it.
DISTANCE, LEVEL = 0.4, 0.4001
INPUTS = 240
LIMIT = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / INPUTS)


def wrong_level_rate(tmp_path, **plan) -> float:
    """Fraction of inputs certified at LEVEL, beyond their exact radius (through the engine)."""
    run = hyperplane_run(tmp_path)
    engine = sequential_engine(run, levels=(0.0, LEVEL), **plan)
    points = np.tile(np.array([[0.5 + DISTANCE, 0.3, 0.6, 0.2]], dtype=np.float32), (INPUTS, 1))
    results = list(engine.run(run.dataset(points), range(INPUTS)))
    # a claim on the wrong side (selection can pick it) is wrong at any radius
    return float(np.mean([r.prediction is not None and (r.prediction != 1 or r.certificate.radius > DISTANCE)
                          for r in results]))


def test_sequential_certificates_beyond_the_exact_radius_stay_under_alpha(tmp_path):
    rate = wrong_level_rate(tmp_path)
    assert rate <= LIMIT, rate


def test_mutation_a_fixed_n_bound_at_every_look_fails_the_same_test(tmp_path):
    rate = wrong_level_rate(tmp_path, cs=PeekingClopperPearson(), final_share=0)
    assert rate > LIMIT, rate


@pytest.mark.parametrize("bounds", ["one", "two"])
def test_sequential_radii_on_a_linear_model_under_alpha_and_not_vacuous(tmp_path, bounds):
    """Random points, the usual kind of grid: a record claims a level its point's exact radius
    (the distance to the hyperplane) does not reach at a rate under alpha."""
    direction = np.array([3.0, -4.0, 0.0, 0.0]) / 5.0
    offset = -0.1
    run = hyperplane_run(tmp_path, direction, offset, sigma=0.5, bounds=bounds)
    levels = tuple(np.round(np.arange(0, 1.01, 0.1), 2))
    engine = sequential_engine(run, levels=levels, n=3000, alpha=0.05, futility=0.2, first_chunk=64, growth=1.25)
    rng = np.random.default_rng(7)
    points = rng.uniform(0, 1, size=(200, 4)).astype(np.float32)
    distance = np.abs(points @ direction + offset)
    side = (points @ direction + offset > 0).astype(int)
    results = list(engine.run(run.dataset(points), range(len(points))))
    wrong = sum(r.prediction is not None and (r.prediction != side[r.index] or r.certificate.radius > distance[r.index])
                for r in results)
    assert wrong <= stats.binom.ppf(0.999, len(points), 0.05)
    # radii are levels; far points get a level close to their distance, with far fewer samples than n
    assert all(r.certificate.radius in levels + (0.0,) for r in results)
    far = [r for r in results if distance[r.index] > 0.35 and r.prediction is not None]
    assert len(far) > 30 and np.mean([r.certificate.radius / distance[r.index] for r in far]) > 0.5
    assert np.mean([r.forward_passes for r in results]) < 0.5 * (20 + 3000)


def fmnist(run):
    return run.dataset(MODELS / "fmnist-samples.npz")


def replay(engine: Engine, x: np.ndarray, index: int, classes: int = 10):
    """The plan's decisions for one input rebuilt from the views the engine draws, batch by
    batch: (the final step, the counts at every look)."""
    size, plan = engine.batch_size, engine.plan

    def votes(phase, group, start, stop):
        labels = [engine._labels(_Job(index, phase, group, first // size, first, min(first + size, stop), x))
                  for first in range(start, stop, size)]
        return np.bincount(np.concatenate(labels), minlength=classes)

    groups = [g.name for g in engine.groups]
    selection = {name: votes(SELECTION, g, 0, plan.n0) for g, name in enumerate(groups)}
    state = plan.start(engine.method, plan.votes(selection))
    counts = {name: np.zeros(classes, dtype=np.int64) for name in groups}
    drawn, looks = 0, []
    step = state.step(counts)
    while not step.stop:
        stop = min(-(-(drawn + step.chunk) // size) * size, plan.n)
        counts = {name: counts[name] + votes(ESTIMATION, g, drawn, stop) for g, name in enumerate(groups)}
        drawn = stop
        looks.append((drawn, counts))
        step = state.step(counts)
    return selection, step, looks


@pytest.mark.parametrize("model", ["fmnist-rs-0.25", "fmnist-drs-0.25"])
def test_a_reported_level_is_proved_by_the_bounds_on_the_votes_drawn(model):
    """Replay each input from its views: the engine's record is the plan's decision on exactly
    those votes, and its radius is at most what the anytime bounds at the looks prove, by
    the method's formula computed here from the SPEC (never more)."""
    run = certifier.load(MODELS / f"{model}.onnx")
    dataset = fmnist(run)
    levels = (0.0, 0.25, 0.5, 0.75)
    engine = run.engine(dataset.shape, n0=50, n=6000, alpha=0.001, batch_size=128, sampling="sequential",
                        levels=levels, seed=2)
    results = list(engine.run(dataset, range(6)))
    bounds, sigma = engine.plan.plan.bounds, run.method.sigma
    groups = [g.name for g in engine.groups]
    for result in results:
        x = np.ascontiguousarray(dataset.batch([result.index])[0], dtype=np.float32)
        selection, step, looks = replay(engine, x, result.index)
        sequential = result.certificate.details["sequential"]
        assert sequential["samples"] == step.samples == looks[-1][0]
        assert result.forward_passes == len(groups) * (50 + step.samples)
        assert (result.prediction, result.certificate.radius) == (step.certificate.prediction,
                                                                  step.certificate.radius)
        assert result.certificate.radius in levels + (0.0,)
        if result.prediction is None:
            continue
        top = int(np.argmax(sum(selection.values())))
        share = ALPHA_SHARE[len(groups)] * 0.001
        best = {g: max(bounds.lower(int(c[g][top]), t, share) for t, c in looks) for g in groups}
        if len(groups) == 1:
            proved = sigma * stats.norm.ppf(best["model"])
        else:
            proved = sigma / math.sqrt(2) * (stats.norm.ppf(best["left"]) + stats.norm.ppf(best["right"]))
        assert result.certificate.radius <= proved
        assert sequential["certified_radius"] <= proved * (1 + 1e-12)
    assert any(r.certificate.radius >= 0.5 for r in results)


#: rs bounds its one group at alpha, drs each side at alpha / 2
ALPHA_SHARE = {1: 1.0, 2: 0.5}


def test_the_first_views_are_the_fixed_plans_however_the_chunks_fall():
    """Each input's first t estimation views (t where the plan stopped) are those a fixed run
    with n = t draws: the same top class and the same votes for it."""
    run = certifier.load(MODELS / "fmnist-rs-0.5.onnx")
    dataset = fmnist(run)
    sequential = list(run.results(dataset, indices=range(5), n0=40, n=5000, batch_size=256, sampling="sequential",
                                  seed=9))
    for result in sequential:
        samples = result.details["sequential"]["samples"]
        (fixed,) = run.results(dataset, indices=[result.index], n0=40, n=samples, batch_size=256, seed=9)
        assert fixed.details["top_votes"] == result.details["top_votes"]
        assert fixed.forward_passes == result.forward_passes
        if fixed.prediction is not None and result.prediction is not None:
            assert fixed.prediction == result.prediction


def test_results_come_in_order_and_do_not_depend_on_workers(tmp_path):
    run = certifier.load(MODELS / "fmnist-rs-0.25.onnx")
    settings = dict(indices=range(10), n0=30, n=4000, batch_size=64, sampling="sequential", levels=(0.0, 0.25, 0.5),
                    seed=1)
    one = list(run.results(MODELS / "fmnist-samples.npz", workers=1, **settings))
    many = list(run.results(MODELS / "fmnist-samples.npz", workers=4, **settings))
    assert [r.index for r in many] == list(range(10))
    assert [(r.prediction, r.radius, r.forward_passes, r.details) for r in one] == \
        [(r.prediction, r.radius, r.forward_passes, r.details) for r in many]
    # inputs stop at different counts: the engine did not hold every input to one schedule
    assert len({r.forward_passes for r in one}) > 2


def test_the_engine_never_draws_past_n_and_whole_batches_before(tmp_path):
    # pA = Phi(1.64) = 0.95: level 0.7 (p >= 0.919) is out of the anytime bound's reach at 1,000
    # views but not of the Clopper-Pearson look at exactly n, so inputs sample to the budget
    run = hyperplane_run(tmp_path, offset=-0.1)
    engine = sequential_engine(run, levels=(0.0, 0.7), n=1000, batch=96)
    points = np.tile(np.array([[0.92, 0.3, 0.6, 0.2]], dtype=np.float32), (12, 1))
    drawn = []
    original = engine._labels

    def spy(job):
        drawn.append((job.index, job.phase, job.start, job.stop))
        return original(job)

    engine._labels = spy
    results = list(engine.run(run.dataset(points), range(12)))
    estimation = [d for d in drawn if d[1] == ESTIMATION]
    assert max(stop for *_, stop in estimation) <= 1000
    assert all(start % 96 == 0 and (stop - start == 96 or stop == 1000) for *_, start, stop in estimation)
    for result in results:
        samples = result.certificate.details["sequential"]["samples"]
        assert samples <= 1000 and (samples % 96 == 0 or samples == 1000)
        mine = sorted((start, stop) for index, phase, start, stop in estimation if index == result.index)
        assert sum(stop - start for start, stop in mine) == samples  # every view drawn once, none wasted
    assert any(r.certificate.details["sequential"]["samples"] == 1000 for r in results)


# -- the command line -----------------------------------------------------------------------


def plane_data(tmp_path, distances, sigma_side=1):
    points = np.full((len(distances), 4), 0.5, dtype=np.float32)
    points[:, 0] = 0.5 + np.asarray(distances, dtype=np.float32)
    path = tmp_path / "plane.npz"
    np.savez(path, x=points, y=np.ones(len(distances), dtype=np.int64))
    return path


def test_radius_decides_certified_at_r_or_not(tmp_path):
    model = save(hyperplane_model(np.array([1.0, 0, 0, 0]), -0.5), tmp_path / "plane.onnx")
    distances = [0.45, 0.45, 0.3, 0.3, 0.05, 0.15, 0.2, 0.2]
    data = plane_data(tmp_path, distances)
    output = tmp_path / "r.jsonl"
    invoke("--plugin", "rs", "-s", "0.25", model, "--data", data, "--radius", "0.25", "--n0", "100", "-n", "100000",
           "--output", output, "-q")
    header, *records = lines_of(output)
    assert header["sampling"] == "sequential" and header["sampling_settings"]["levels"] == [0.25]
    for record, distance in zip(records, distances):
        assert record["radius"] in (0.0, 0.25)
        if distance >= 0.3:  # Phi(1.2) and above: certified at 0.25 after a few thousand views at most
            # (at 0.3 a quarter of inputs need more than 2000: the median is 1892, the largest of 120 3940)
            assert record["radius"] == 0.25 and record["forward_passes"] < 10_000
        if distance < 0.25:  # never certified beyond the exact radius
            assert record["radius"] == 0.0
    # settled in far fewer views than fixed n would draw
    assert np.mean([r["forward_passes"] for r in records]) < 100_100 / 20
    # a radius above what n views can certify is settled at the first look
    invoke("--plugin", "rs", "-s", "0.25", model, "--data", data, "--radius", "5", "--output", tmp_path / "5.jsonl",
           "-q")
    assert all(r["radius"] == 0.0 and r["forward_passes"] < 500 for r in lines_of(tmp_path / "5.jsonl")[1:])


def test_sequential_settings_are_refused_in_one_line(tmp_path):
    model = save(hyperplane_model(np.array([1.0, 0, 0, 0]), -0.5), tmp_path / "plane.onnx")
    data = plane_data(tmp_path, [0.3])
    base = ["--plugin", "rs", "-s", "0.25", model, "--data", data, "-n", "500", "-q"]
    one_line_error(invoke(*base, "--radius", "0.5", "--sampling", "fixed", expect_ok=False), "--radius",
                   "--sampling fixed")
    one_line_error(invoke(*base, "--radius", "0.5", "--radii", "0.1,0.2", expect_ok=False), "not both")
    one_line_error(invoke(*base, "--radius", "-1", expect_ok=False), "--radius")
    one_line_error(invoke(*base, "--sampling", "sequential", "--radii", "0,nan", expect_ok=False), "--radii")
    one_line_error(invoke("predict", *base, "--sampling", "sequential", expect_ok=False), "PREDICT")
    dssn = ["--plugin", "dssn", "-o", "lambda", "0.02", model, "--data", data, "-q"]
    one_line_error(invoke(*dssn, "--sampling", "sequential", expect_ok=False), "dssn", "exact",
                   "--sampling sequential")
    one_line_error(invoke(*dssn, "--radius", "0.1", expect_ok=False), "dssn", "exact")
    with pytest.raises(certifier.CertifyError, match="levels"):
        certifier.load(model, plugin="rs", sigma=0.25).job(data, sampling="fixed", levels=(0.5,))


def test_a_sequential_file_resumes_and_refuses_other_plan_settings(tmp_path):
    model = MODELS / "fmnist-rs-0.25.onnx"
    base = [model, "--data", MODELS / "fmnist-samples.npz", "--limit", "5", "--n0", "50", "-n", "3000", "-q"]
    whole, part = tmp_path / "whole.jsonl", tmp_path / "part.jsonl"
    invoke(*base, "--sampling", "sequential", "--radii", "0,0.25,0.5", "--output", whole)
    lines = whole.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:3]))
    result = invoke(*base, "--sampling", "sequential", "--radii", "0,0.25,0.5", "--output", part)
    strip = lambda path: [{k: v for k, v in r.items() if k != "seconds"} for r in lines_of(path)[1:]]  # noqa: E731
    assert strip(part) == strip(whole)
    # other levels, another plan: refused, the file untouched
    text = part.read_text()
    one_line_error(invoke(*base, "--sampling", "sequential", "--radii", "0,0.5", "--output", part,
                          expect_ok=False), "sampling_settings")
    one_line_error(invoke(*base, "--output", part, expect_ok=False), "sampling")
    one_line_error(invoke(*base, "--radius", "0.25", "--output", part, expect_ok=False), "sampling_settings")
    assert part.read_text() == text
    assert "sequential" in result.output


def test_report_shows_passes_and_levels(tmp_path):
    model = MODELS / "fmnist-rs-0.25.onnx"
    base = [model, "--data", MODELS / "fmnist-samples.npz", "--limit", "4", "--n0", "50", "-n", "3000", "-q"]
    invoke(*base, "--sampling", "sequential", "--radii", "0,0.3,0.6", "--output", tmp_path / "s.jsonl")
    invoke(*base, "--output", tmp_path / "f.jsonl")
    text = invoke("report", tmp_path / "s.jsonl", tmp_path / "f.jsonl").output
    assert "certified accuracy r >= 0.3" in text and "certified accuracy r >= 0.6" in text  # the levels
    assert "certified accuracy r >= 0.25" in text  # and the usual grid
    sampling = next(line for line in text.splitlines() if line.startswith("sampling"))
    assert sampling.split()[1:] == ["sequential", "fixed"]
    passes = next(line for line in text.splitlines() if line.startswith("forward passes per input"))
    sequential_passes, fixed_passes = (int(v) for v in passes.split()[-2:])
    assert fixed_passes == 3050 and sequential_passes < fixed_passes
    assert "s.jsonl: sequential, at most n = 3000 views per input" in text and "0, 0.3, 0.6" in text
    summary = json.loads(invoke("report", tmp_path / "s.jsonl", "--json").output)
    assert summary[str(tmp_path / "s.jsonl")]["levels"] == [0.0, 0.3, 0.6]


def test_two_bound_option_is_recorded_and_default_headers_are_unchanged(tmp_path):
    model = save(linear_model(np.eye(4, 3, dtype=np.float32) * 4, np.zeros(3), (4,)), tmp_path / "lin.onnx")
    run = certifier.load(model, plugin="rs", sigma=0.5)
    assert run.method.settings() == {"sigma": 0.5, "options": {}}
    two = certifier.load(model, plugin="rs", sigma=0.5, options={"bounds": "two"})
    assert two.method.settings() == {"sigma": 0.5, "options": {"bounds": "two"}}
    with pytest.raises(certifier.CertifyError, match="partition-from noisy"):
        certifier.load(model, plugin="pprs", sigma=0.5, options={"bounds": "two", "partition-from": "clean",
                                                                  "rho": 0.1})


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_inside_the_model_stops_cleanly_and_the_rerun_completes_the_file(tmp_path, monkeypatch, signum):
    """Several inputs are in flight at once: a signal from a worker thread finds a prefix of
    the results on disk, one line, exit 130, and the rerun gives what an uninterrupted run gives."""
    from certifier.model import OnnxModel

    base = [MODELS / "fmnist-rs-0.25.onnx", "--data", MODELS / "fmnist-samples.npz", "--limit", "8", "--n0", "50",
            "-n", "4000", "--batch-size", "64", "--radii", "0,0.25,0.5", "--sampling", "sequential", "-q"]
    whole, partial = tmp_path / "whole.jsonl", tmp_path / "partial.jsonl"
    invoke(*base, "--output", whole)
    real_labels, calls = OnnxModel.labels, []

    def labels(self, batch):
        answer = real_labels(self, batch)
        calls.append(len(batch))
        if len(calls) == 40:
            os.kill(os.getpid(), signum)
        return answer

    monkeypatch.setattr(OnnxModel, "labels", labels)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = invoke(*base, "--output", partial, expect_ok=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert "interrupted" in result.stderr and "rerun" in result.stderr
    kept = [r["index"] for r in lines_of(partial)[1:]]
    assert kept == list(range(len(kept))) and len(kept) < 8
    monkeypatch.setattr(OnnxModel, "labels", real_labels)
    invoke(*base, "--output", partial)
    strip = lambda path: [{k: v for k, v in r.items() if k != "seconds"} for r in lines_of(path)[1:]]  # noqa: E731
    assert strip(partial) == strip(whole)


#: Every randomized plugin, as a user runs it: the plan is the engine's, no plugin has code for it.
RANDOMIZED = {
    "rs": [MODELS / "fmnist-rs-0.25.onnx"],
    "pprs": [MODELS / "fmnist-pprs-grid-0.5.onnx"],
    "drs": [MODELS / "fmnist-drs-0.25.onnx"],
    "ssn": ["--plugin", "ssn", "-o", "lambda", "1.0", MODELS / "fmnist-uniform-1.0.onnx"],  # not the model's plugin
    "uniform": [MODELS / "fmnist-uniform-1.0.onnx"],
}


@pytest.mark.parametrize("plugin", RANDOMIZED)
def test_every_randomized_plugin_certifies_on_the_sequential_plan(plugin, tmp_path, monkeypatch):
    postfixes = []

    class Bar:  # the progress bar, as a terminal would show it
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, count):
            pass

        def set_postfix_str(self, text, refresh=True):
            postfixes.append(text)

    monkeypatch.setattr("certifier.cli._progress", lambda total, done, quiet: Bar())
    levels = [0.0, 0.25, 0.5]
    output = tmp_path / f"{plugin}.jsonl"
    invoke(*RANDOMIZED[plugin], "--data", MODELS / "fmnist-samples.npz", "--limit", "4", "--n0", "50", "-n", "4000",
           "--sampling", "sequential", "--radii", "0,0.25,0.5", "--output", output)
    header, *records = lines_of(output)
    assert header["plugin"] == plugin and header["sampling"] == "sequential"
    assert header["sampling_settings"]["levels"] == levels
    groups = 2 if plugin == "drs" else 1
    for record in records:
        sequential = record["details"]["sequential"]
        assert 0 < sequential["samples"] <= 4000
        assert record["forward_passes"] == groups * (50 + sequential["samples"])
        assert record["radius"] in levels
        if record["prediction"] is not None and record["radius"] > 0:
            assert sequential["certified_radius"] >= record["radius"]
    passes = [r["forward_passes"] for r in records]
    assert min(passes) < groups * 4050  # some input settled before the budget
    assert len(postfixes) == len(records) and postfixes[-1].startswith(f"{np.mean(passes):,.0f} passes/input")


def test_the_plan_travels_to_other_processes_and_is_rebuilt_from_the_runs_settings():
    """Executors that run inputs elsewhere (worker processes, remote workers) get the plan
    pickled, or rebuild it from the run's settings: either way it decides the same."""
    import pickle

    from certifier.sampling import FixedSampling, make_plan

    run = certifier.load(MODELS / "fmnist-drs-0.25.onnx")
    engine = run.engine((1, 28, 28), n0=50, n=3000, alpha=0.001, batch_size=128, sampling="sequential",
                        levels=(0.0, 0.25, 0.5))
    copied = pickle.loads(pickle.dumps(engine.plan))
    rebuilt = make_plan("sequential", n0=50, n=3000, alpha=0.001, levels=(0.0, 0.25, 0.5), granularity=128)
    assert copied.settings() == rebuilt.settings() == engine.plan.settings()
    counts = {"left": np.array([3, 0, 0, 0, 0, 0, 0, 0, 250, 3]), "right": np.array([0, 0, 0, 1, 0, 0, 0, 0, 255, 0])}
    top = np.eye(10, dtype=np.int64)[8] * 50
    selection = FixedSampling(50, 3000).votes({"left": top, "right": top})
    steps = [plan.start(run.method, selection).step(counts) for plan in (engine.plan, copied, rebuilt)]
    assert len({(s.stop, s.chunk, s.samples) for s in steps}) == 1
