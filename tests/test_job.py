"""Runs in the API: a job selects inputs, writes and resumes results files, and summarizes them,
exactly as the command line does (the command line runs its jobs through it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import certifier
from certifier.cli import cli
from certifier.header import DataStamp, build_header
from certifier.job import Job
from certifier.sampling import FixedSampling

from onnx_models import hyperplane_model, save

SETTINGS = {"n0": 10, "n": 60, "seed": 3}


@pytest.fixture
def case(tmp_path):
    save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    x = np.full((6, 4), 0.5, dtype=np.float32)
    x[:, 0] = [0.0, 0.05, 0.95, 1.0, 0.5, 1.0]
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 0, 1, 1, 0, 0]))
    return tmp_path


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_times(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "started")} for r in records]


def test_a_python_job_writes_what_the_command_line_writes(case):
    run = certifier.load(case / "plane.onnx", plugin="rs", sigma=0.1)
    with run.job(case / "d.npz", output=case / "api.jsonl", skip=2, **SETTINGS) as job:
        assert job.indices == [0, 2, 4] and job.todo == [0, 2, 4] and job.done == []
        results = list(job)
    assert [r.index for r in results] == [0, 2, 4]
    result = CliRunner().invoke(cli, ["-p", "rs", "-s", "0.1", "--n0", "10", "-n", "60", "--seed", "3", "--skip", "2",
                                      "-q", str(case / "plane.onnx"), "--data", str(case / "d.npz"), "--output",
                                      str(case / "cli.jsonl")])
    assert result.exit_code == 0, result.output
    assert without_times(lines(case / "api.jsonl")) == without_times(lines(case / "cli.jsonl"))
    report = json.loads(CliRunner().invoke(cli, ["report", "--json", str(case / "cli.jsonl")]).output)
    assert job.summary()["certified_accuracy"] == report[str(case / "cli.jsonl")]["certified_accuracy"]


def test_a_job_resumes_its_file_and_certifies_only_the_inputs_left(case):
    run = certifier.load(case / "plane.onnx", plugin="rs", sigma=0.1)
    out = case / "r.jsonl"
    with run.job(case / "d.npz", output=out, limit=2, **SETTINGS) as job:
        first = list(job)
    with run.job(case / "d.npz", output=out, **SETTINGS) as job:
        assert [r["index"] for r in job.done] == [0, 1] and job.todo == [2, 3, 4, 5] and job.saved == 2
        rest = list(job)
        assert [r["index"] for r in job.records] == list(range(6))
    assert [r.index for r in rest] == [2, 3, 4, 5]
    fresh = run.certify(case / "d.npz", **SETTINGS)
    assert [(r.prediction, r.radius) for r in first + rest] == [(r.prediction, r.radius) for r in fresh]
    assert job.summary()["inputs"] == 6


def test_the_file_is_locked_while_the_job_is_open_and_released_after(case):
    run = certifier.load(case / "plane.onnx", plugin="rs", sigma=0.1)
    out = case / "r.jsonl"
    with run.job(case / "d.npz", output=out, limit=1, **SETTINGS):
        with pytest.raises(certifier.CertifyError, match="in use by another certify run"):
            run.job(case / "d.npz", output=out, limit=1, **SETTINGS)
    with run.job(case / "d.npz", output=out, limit=1, **SETTINGS) as job:
        assert job.todo == [0]


def test_the_checks_on_results_files_hold_for_python_jobs(case):
    foreign = case / "notes.jsonl"
    foreign.write_text("my notes\n")
    run = certifier.load(case / "plane.onnx", plugin="rs", sigma=0.1)
    with pytest.raises(certifier.CertifyError, match="not a certify results file"):
        run.job(case / "d.npz", output=foreign, **SETTINGS)
    assert foreign.read_text() == "my notes\n"
    with pytest.raises(certifier.CertifyError, match="--limit must be at least 1"):
        run.job(case / "d.npz", limit=0)


def test_explicit_indices(case):
    run = certifier.load(case / "plane.onnx", plugin="rs", sigma=0.1)
    job = run.job(case / "d.npz", indices=[3, 0], **SETTINGS)
    assert [r.index for r in job] == [3, 0]
    with pytest.raises(certifier.CertifyError, match="input index 6 is out of range: the data holds 6 inputs"):
        run.job(case / "d.npz", indices=[6])
    with pytest.raises(certifier.CertifyError, match="must not repeat"):
        run.job(case / "d.npz", indices=[1, 1])
    with pytest.raises(certifier.CertifyError, match="either indices or limit and skip"):
        run.job(case / "d.npz", indices=[1], limit=1)


class Halves(FixedSampling):
    name = "halves-test"

    def chunks(self, phase):
        yield from (self.budget(phase) // 2, self.budget(phase) - self.budget(phase) // 2)

    def settings(self):
        return {**super().settings(), "chunks": 2}


def header_of(run, engine, dataset):
    """The header a job of ``engine`` writes (what ``Run.job`` gives its jobs)."""
    return build_header(run, engine, mode="certify", data=DataStamp.of(dataset), device=run.model.device)


def test_the_header_records_the_engines_own_plan(case):
    run = certifier.load(case / "plane.onnx", plugin="rs", sigma=0.1)
    dataset = run.dataset(case / "d.npz")
    engine = certifier.engine.Engine.from_settings(run.method, run.groups(dataset.shape), sampling=Halves(10, 60))
    with Job(run, engine, dataset, [0], header=header_of(run, engine, dataset), output=case / "r.jsonl") as job:
        (result,) = job
    header = lines(case / "r.jsonl")[0]
    assert (header["sampling"], header["n0"], header["n"]) == ("halves-test", 10, 60)
    assert header["sampling_settings"] == {"chunks": 2}
    # a rerun with the same plan resumes; another plan's settings do not
    with Job(run, engine, dataset, [0], header=header_of(run, engine, dataset), output=case / "r.jsonl") as job:
        assert job.todo == []
    other = certifier.engine.Engine.from_settings(run.method, run.groups(dataset.shape), sampling=Halves(10, 60))
    other.plan.settings = lambda: {"n0": 10, "n": 60, "chunks": 3}
    with pytest.raises(certifier.CertifyError, match="sampling_settings"):
        Job(run, other, dataset, [0], header=header_of(run, other, dataset), output=case / "r.jsonl")
    assert result.forward_passes == 70
    # the deterministic methods' plan: every view, no n0, n or alpha
    dssn = certifier.load(case / "plane.onnx", plugin="dssn", options={"lambda": 0.02})
    header = dssn.job(case / "d.npz", limit=1).header
    assert (header["sampling"], header["n0"], header["n"], header["alpha"]) == ("enumeration", None, None, None)
    assert "sampling_settings" not in header and "sampling_settings" not in run.job(case / "d.npz", limit=1).header
    predict = run.job(case / "d.npz", mode="predict", limit=1, **SETTINGS)
    assert (predict.header["n0"], predict.header["n"], predict.header["radius_ceiling"]) == (None, 60, None)
    assert [r.radius for r in predict] == [0.0]
    assert predict.summary() == {"inputs": 1, "abstained": 0, "labeled": 1, "accuracy": 1.0}


def test_an_executor_runs_whole_inputs_and_its_results_are_checked_for_order(case):
    """An executor replaces the engine's run: the job writes what it yields, and refuses a
    result that is not the input due (nothing is written for it)."""
    run = certifier.load(case / "plane.onnx", plugin="rs", sigma=0.1)
    calls = []

    def in_order(job, indices):
        calls.append(list(indices))
        yield from job.engine.run(job.dataset, indices, labels=job.dataset.label)

    with run.job(case / "d.npz", output=case / "e.jsonl", executor=in_order, **SETTINGS) as job:
        list(job)
    with run.job(case / "d.npz", output=case / "local.jsonl", **SETTINGS) as job:
        list(job)
    assert calls == [[0, 1, 2, 3, 4, 5]]
    assert without_times(lines(case / "e.jsonl"))[1:] == without_times(lines(case / "local.jsonl"))[1:]

    def swapped(job, indices):
        results = list(job.engine.run(job.dataset, indices[:2], labels=job.dataset.label))
        yield from reversed(results)

    with run.job(case / "d.npz", output=case / "s.jsonl", executor=swapped, **SETTINGS) as job:
        with pytest.raises(certifier.CertifyError, match="input 1 came back where input 0 was due"):
            list(job)
    assert lines(case / "s.jsonl")[1:] == []


def test_a_job_stopped_inside_finishes_its_executor_at_once(case, monkeypatch):
    """Ctrl-C (here an error) while a record is written: the executor's run is finished
    before the error reaches the caller, not whenever the garbage collector finds it."""
    from certifier.results import ResultsFile

    closed = []

    def executor(job, indices):
        try:
            yield from job.engine.run(job.dataset, indices, labels=job.dataset.label)
        finally:
            closed.append(True)

    def failing_write(self, record):
        raise OSError(28, "No space left on device")

    run = certifier.load(case / "plane.onnx", plugin="rs", sigma=0.1)
    with run.job(case / "d.npz", output=case / "f.jsonl", executor=executor, **SETTINGS) as job:
        monkeypatch.setattr(ResultsFile, "write", failing_write)
        try:
            list(job)
        except OSError as error:
            assert error.__traceback__ is not None and closed == [True]
