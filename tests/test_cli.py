"""The ``certify`` command line end to end: commands, results files, resuming, interruptions, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import certifier
from certifier import Certificate, SmoothingMethod
from certifier.cli import cli
from certifier.results import COHEN_COLUMNS

from onnx_models import hyperplane_model, linear_model, nan_model, save

SIGMA = "0.1"
#: A small, fast run: 6 inputs, 10 + 60 views each.
SMALL = ["-s", SIGMA, "--n0", "10", "-n", "60", "-q"]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("CERTIFY_DEBUG", raising=False)


def invoke(*args, expect_ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if expect_ok:
        assert result.exit_code == 0, result.output
    return result


def assert_one_line_error(result, *fragments: str) -> str:
    """A non-zero exit, one single-line "Error: ..." and no traceback; returns the error line."""
    assert result.exit_code != 0, result.output
    output = result.output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    after = output.split(errors[0], 1)[1]
    assert after.strip() == "", f"the error goes on after its first line: {output!r}"
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def results_of(path: Path) -> list[dict]:
    """Result records of a JSONL file by index, checking that no input appears twice."""
    records = [r for r in lines_of(path) if r["type"] == "result"]
    indices = [r["index"] for r in records]
    assert len(indices) == len(set(indices)), f"inputs written twice: {indices}"
    return sorted(records, key=lambda r: r["index"])


def without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture
def case(tmp_path):
    """A two-class hyperplane model on 4-vectors and 6 labelled inputs: 2 far from the boundary
    on each side, 1 on it (abstains) and 1 with a wrong label."""
    save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    x = np.full((6, 4), 0.5, dtype=np.float32)
    x[:, 0] = [0.0, 0.05, 0.95, 1.0, 0.5, 1.0]
    y = np.array([0, 0, 1, 1, 0, 0])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.savez(tmp_path / "unlabelled.npz", x=x)
    return tmp_path


# -- commands ----------------------------------------------------------------------------


def test_default_command_certifies(case):
    out = case / "r.jsonl"
    result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", out)
    assert "certified accuracy r >= 0.0" in result.output and "ACR" in result.output
    records = results_of(out)
    assert [r["index"] for r in records] == list(range(6))


def test_run_command_gives_the_same_records(case):
    invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", case / "a.jsonl")
    invoke("run", "--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", case / "b.jsonl")
    assert without_seconds(results_of(case / "a.jsonl")) == without_seconds(results_of(case / "b.jsonl"))


def test_results_records(case):
    out = case / "r.jsonl"
    invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", out)
    header, *records = lines_of(out)
    assert header["type"] == "header"
    assert (header["plugin"], header["norm"], header["n0"], header["n"], header["alpha"], header["seed"]) == (
        "rs", "l2", 10, 60, 0.001, 0)
    assert header["settings"]["sigma"] == 0.1
    assert len(header["model_sha256"]) == 64 and len(header["data_sha256"]) == 64
    ceiling = header["radius_ceiling"]
    assert 0 < ceiling < 1
    for record in records:
        assert record["type"] == "result"
        for key in ("index", "label", "prediction", "radius", "norm", "correct", "forward_passes", "seconds"):
            assert key in record
        assert record["norm"] == "l2"
        assert record["forward_passes"] == 70
        assert isinstance(record["seconds"], float) and record["seconds"] >= 0
        assert 0 <= record["radius"] <= ceiling
    by_index = {r["index"]: r for r in records}
    assert sorted(by_index) == list(range(6))  # 0-based
    assert [by_index[i]["prediction"] for i in (0, 1, 2, 3)] == [0, 0, 1, 1]
    assert all(by_index[i]["radius"] > 0 and by_index[i]["correct"] is True for i in (0, 1, 2, 3))
    on_boundary = by_index[4]
    assert on_boundary["prediction"] is None and on_boundary["radius"] == 0 and on_boundary["correct"] is False
    wrong = by_index[5]
    assert (wrong["label"], wrong["prediction"], wrong["correct"]) == (0, 1, False)
    assert by_index[3]["radius"] == ceiling  # all votes agree far from the boundary


def test_records_without_labels(case):
    out = case / "r.jsonl"
    result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "unlabelled.npz", *SMALL, "--output", out)
    assert "certified fraction r >= 0.0" in result.output
    assert "certified accuracy" not in result.output and "ACR" not in result.output
    for record in results_of(out):
        assert record["label"] is None and record["correct"] is None


def test_limit_and_skip(case):
    out = case / "r.jsonl"
    invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--skip", 2, "--limit", 2, "--output", out)
    assert [r["index"] for r in results_of(out)] == [0, 2]


def test_tiny_images_whose_axes_read_either_way(tmp_path):
    """A 3 x 4 x 4 model (NCHW) and 3 x 4 x 4 data: three channels, so three means fit."""
    rng = np.random.default_rng(2)
    space = '{"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}'
    model = save(linear_model(rng.normal(size=(48, 3)), np.zeros(3), (3, 4, 4),
                              metadata={"certifier.input_space": space}), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=rng.random((2, 3, 4, 4)).astype(np.float32))
    invoke("--plugin", "rs", model, "--data", tmp_path / "d.npz", *SMALL, "--output", tmp_path / "r.jsonl")
    header = lines_of(tmp_path / "r.jsonl")[0]
    assert header["input_space"]["layout"] == "nchw" and header["input_space"]["mean"] == [0.5, 0.4, 0.3]


def test_plugins_lists_rs_and_train_with_their_hooks():
    text = invoke("plugins").output
    assert "rs (built-in; hooks: register_methods)" in text
    assert "--plugin rs:" in text
    assert "train (built-in; hooks: register_commands)" in text
    described = {p["name"]: p for p in json.loads(invoke("plugins", "--json").output)}
    assert described["rs"]["hooks"] == ["register_methods"]
    assert [m["name"] for m in described["rs"]["methods"]] == ["rs"]
    assert described["rs"]["methods"][0]["norm"] == "l2"
    assert described["train"]["hooks"] == ["register_commands"]
    assert described["train"]["methods"] == []


def test_report(case):
    first, second = case / "a.jsonl", case / "b.jsonl"
    invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", first)
    invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", "-s", "0.5", "--n0", "10", "-n", "60", "-q",
           "--output", second)
    table = invoke("report", first).output
    assert "a.jsonl" in table and "ACR" in table and "abstain rate" in table
    assert "16.7%" in table  # one input of six abstains
    both = invoke("report", first, second).output
    header = both.splitlines()[0]
    assert "a.jsonl" in header and "b.jsonl" in header
    sigma_row = next(line for line in both.splitlines() if line.startswith("sigma"))
    assert "0.1" in sigma_row and "0.5" in sigma_row
    summaries = json.loads(invoke("report", first, second, "--json").output)
    assert set(summaries) == {str(first), str(second)}
    summary = summaries[str(first)]
    assert summary["inputs"] == 6 and summary["abstain_rate"] == pytest.approx(1 / 6)
    assert summary["certified_accuracy"]["0.0"] == pytest.approx(4 / 6)
    records = results_of(first)
    assert summary["acr"] == pytest.approx(sum(r["radius"] for r in records if r["correct"]) / 6)
    plot = case / "plot.png"
    invoke("report", first, second, "--plot", plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_plot_of_a_run_without_labels(case):
    import warnings

    out = case / "r.jsonl"
    invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "unlabelled.npz", *SMALL, "--output", out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's "No artists with labels found"
        invoke("report", out, "--plot", case / "plot.png")
    assert (case / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_report_errors(case):
    assert_one_line_error(invoke("report", case / "missing.jsonl", expect_ok=False), "not found")
    (case / "notes.txt").write_text("hello\nworld\n")
    assert_one_line_error(invoke("report", case / "notes.txt", expect_ok=False), "certify results file")
    for binary in ("plane.onnx", "d.npz"):
        assert_one_line_error(invoke("report", case / binary, expect_ok=False), "certify results file")
    (case / "bad.tsv").write_text("\t".join(COHEN_COLUMNS) + "\n0\t1\n")
    assert_one_line_error(invoke("report", case / "bad.tsv", expect_ok=False), "bad.tsv, line 2", "Cohen-format")


@pytest.mark.parametrize("seconds", [0.0, 0.123456, 3725.5, 90061.25])
def test_cohen_times_read_back(seconds):
    import datetime

    from certifier.results import _parse_timedelta

    assert _parse_timedelta(str(datetime.timedelta(seconds=seconds))) == pytest.approx(seconds)


# -- Cohen's format --------------------------------------------------------------------------


def test_cohen_format_and_resume(case):
    tsv, jsonl = case / "r.tsv", case / "r.jsonl"
    command = ["--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL]
    invoke(*command, "--output", tsv, "--format", "cohen")
    invoke(*command, "--output", jsonl)
    lines = tsv.read_text().splitlines()
    assert lines[0] == "idx\tlabel\tpredict\tradius\tcorrect\ttime"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == len(COHEN_COLUMNS) for row in rows)
    records = results_of(jsonl)
    for row, record in zip(rows, records):
        assert int(row[0]) == record["index"]
        assert int(row[1]) == record["label"]
        assert int(row[2]) == (-1 if record["prediction"] is None else record["prediction"])
        assert float(row[3]) == record["radius"]  # full precision
        assert row[4] == str(int(record["correct"]))
        assert row[5].count(":") == 2  # H:MM:SS.ffffff
    assert json.loads((case / "r.tsv.header.json").read_text())["plugin"] == "rs"

    before = tsv.read_bytes()
    invoke(*command, "--output", tsv, "--format", "cohen")
    assert tsv.read_bytes() == before  # nothing redone

    tsv.write_text("\n".join(lines[:3]) + "\n" + lines[3][:7])  # two rows and a torn third
    invoke(*command, "--output", tsv, "--format", "cohen")
    resumed = tsv.read_text().splitlines()
    assert resumed[:3] == lines[:3]
    assert [row.split("\t")[:5] for row in resumed] == [row.split("\t")[:5] for row in lines]

    printed = invoke("report", "--format", "cohen", jsonl).output.splitlines()
    assert [row.split("\t")[:5] for row in printed] == [row.split("\t")[:5] for row in lines]
    assert "ACR" in invoke("report", tsv).output


# -- resuming --------------------------------------------------------------------------------


@pytest.fixture
def finished(case):
    """A complete run, and the command that made it."""
    out = case / "r.jsonl"
    command = ["--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", out]
    invoke(*command)
    return command, out


def test_rerun_of_a_finished_run_redoes_nothing(finished):
    command, out = finished
    before = out.read_bytes()
    result = invoke(*command[:-3], "--output", out)  # without -q: the note says what was resumed
    assert "resuming" in result.output and "6 of 6 inputs already done" in result.output
    assert out.read_bytes() == before


def test_rerun_completes_a_partial_file(finished):
    command, out = finished
    complete = results_of(out)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]))  # header and two results
    invoke(*command)
    assert out.read_text().splitlines(keepends=True)[:3] == lines[:3]  # kept as they were
    assert without_seconds(results_of(out)) == without_seconds(complete)


def test_rerun_with_a_bigger_limit_adds_the_rest(finished, case):
    command, out = finished
    complete = results_of(out)
    partial = case / "partial.jsonl"
    invoke(*command[:-1], partial, "--limit", 2)
    assert len(results_of(partial)) == 2
    invoke(*command[:-1], partial)
    assert without_seconds(results_of(partial)) == without_seconds(complete)


@pytest.mark.parametrize("tail", [
    '{"type": "result", "index": 2, "label": 1, "predic',  # torn in the middle
    '{"type": "result", "index": 2, "label": 1, "prediction": 1, "radius": 0.1, "norm": "l2", "correct": true, '
    '"forward_passes": 70, "seconds": 0.1}',  # complete JSON, but its newline never made it
])
def test_a_torn_last_line_is_redone(finished, tail):
    command, out = finished
    complete = results_of(out)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + tail)
    invoke(*command)
    assert without_seconds(results_of(out)) == without_seconds(complete)


def test_a_torn_header_starts_afresh(finished):
    command, out = finished
    complete = results_of(out)
    header = out.read_text().splitlines()[0]
    out.write_text(header[:-10])  # torn past the model's hash: provably certify's (see test_results.py)
    invoke(*command)
    assert without_seconds(results_of(out)) == without_seconds(complete)


@pytest.mark.parametrize("change, named", [
    (["-s", "0.5"], "settings"),
    (["--seed", "1"], "seed"),
    (["-n", "61"], "(n 60 there, 61 now)"),
    (["--alpha", "0.01"], "alpha"),
])
def test_rerun_with_other_settings_is_refused(finished, change, named):
    command, out = finished
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:20])  # even a torn line stays as it is
    before = out.read_bytes()
    result = invoke(*command, *change, expect_ok=False)
    error = assert_one_line_error(result, "holds results for other settings", "choose another --output")
    assert named in error
    assert out.read_bytes() == before


def test_other_data_is_refused(finished, case):
    command, out = finished
    before = out.read_bytes()
    index = command.index("--data")
    changed = command[:index + 1] + [case / "unlabelled.npz"] + command[index + 2:]
    assert_one_line_error(invoke(*changed, expect_ok=False), "data_sha256")
    assert out.read_bytes() == before


def test_output_that_is_not_a_results_file_is_left_alone(case):
    victim = case / "d.npz"
    before = victim.read_bytes()
    result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "unlabelled.npz", *SMALL,
                    "--output", victim, expect_ok=False)
    assert_one_line_error(result, "is not a certify results file")
    assert victim.read_bytes() == before
    tsv = case / "notes.tsv"
    tsv.write_text("my own notes\nwithout a final newline")
    result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL,
                    "--output", tsv, "--format", "cohen", expect_ok=False)
    assert_one_line_error(result, "is not a Cohen-format results file")
    assert tsv.read_text() == "my own notes\nwithout a final newline"


# -- interruptions (real processes) ------------------------------------------------------------

LONG = ["-s", SIGMA, "--n0", "20", "-n", "3000", "--threads", "1", "--device", "cpu", "-q"]
LONG_INPUTS = 20


@pytest.fixture(scope="module")
def long_case(tmp_path_factory):
    """A 28x28 model and 20 inputs, and the records of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(3)
    w = rng.normal(size=(784, 3))
    w -= w.mean(axis=0)
    model = save(linear_model(w, np.zeros(3), (1, 28, 28)), folder / "m.onnx")
    x = rng.random((LONG_INPUTS, 28, 28)).astype(np.float32)
    np.savez(folder / "d.npz", x=x, y=(x.reshape(LONG_INPUTS, -1) @ w).argmax(axis=1))
    command = ["--plugin", "rs", model, "--data", folder / "d.npz", *LONG]
    invoke(*command, "--output", folder / "reference.jsonl")
    return command, without_seconds(results_of(folder / "reference.jsonl"))


def _reset_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(command, output: Path) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != "CERTIFY_DEBUG"}
    environment["CERTIFY_LOAD_PLUGINS"] = ""
    script = "from certifier.cli import cli; cli(prog_name='certify')"
    return subprocess.Popen(
        [sys.executable, "-c", script, *[str(c) for c in command], "--output", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, preexec_fn=_reset_sigint,
    )


def result_lines(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.startswith('{"type": "result"'))


@pytest.fixture(scope="module")
def interrupted(long_case, tmp_path_factory):
    """Runs stopped mid-run by SIGKILL and SIGTERM: {signal name: (exit code, stderr, results file)}."""
    command, _ = long_case
    folder = tmp_path_factory.mktemp("interrupted")
    signals = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}
    runs = {name: (start(command, folder / f"{name}.jsonl"), folder / f"{name}.jsonl") for name in signals}
    outcome = {}
    try:
        waiting = dict(runs)
        deadline = time.monotonic() + 120
        while waiting and time.monotonic() < deadline:
            for name, (process, output) in list(waiting.items()):
                if result_lines(output) >= 2 or process.poll() is not None:
                    process.send_signal(signals[name])
                    del waiting[name]
            time.sleep(0.01)
        for name, (process, output) in runs.items():
            _, stderr = process.communicate(timeout=60)
            outcome[name] = (process.returncode, stderr, output)
    finally:
        for process, _ in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return outcome


def check_resume(long_case, output: Path) -> None:
    command, reference = long_case
    written = result_lines(output)
    assert 2 <= written < LONG_INPUTS, "the run was not stopped mid-run"
    invoke(*command, "--output", output)
    assert without_seconds(results_of(output)) == reference


def assert_interrupted_message(code: int, stderr: str, output: Path) -> None:
    assert code == 130, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "interrupted" in lines[0] and str(output) in lines[0] and "rerun" in lines[0]


def test_sigkill_mid_run_then_rerun_loses_nothing(long_case, interrupted):
    code, _, output = interrupted["SIGKILL"]
    assert code == -signal.SIGKILL
    with open(output, "a") as handle:
        handle.write('{"type": "result", "index": 19, "lab')  # a torn write
    check_resume(long_case, output)


def test_sigterm_exits_130_with_one_line_then_resumes(long_case, interrupted):
    code, stderr, output = interrupted["SIGTERM"]
    assert_interrupted_message(code, stderr, output)
    check_resume(long_case, output)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("where", ["after-a-write", "inside-the-model"])
def test_signal_at_a_chosen_moment(finished, monkeypatch, signum, where):
    """The signal arrives in this process just after the second result is on disk, or from a
    worker thread while the model labels the first batch of the third input."""
    from certifier.model import OnnxModel
    from certifier.results import ResultsFile

    command, out = finished
    complete = results_of(out)
    partial = out.with_name("partial.jsonl")
    real_write, real_labels = ResultsFile.write, OnnxModel.labels
    written, labelled = [], []

    def write(self, record):
        real_write(self, record)
        written.append(record["index"])
        if where == "after-a-write" and len(written) == 2:
            os.kill(os.getpid(), signum)

    def labels(self, batch):
        answer = real_labels(self, batch)
        labelled.append(len(batch))
        # SMALL runs two batches per input (selection, estimation): call 5 starts input 2.
        if where == "inside-the-model" and len(labelled) == 5:
            os.kill(os.getpid(), signum)
        return answer

    monkeypatch.setattr(ResultsFile, "write", write)
    monkeypatch.setattr(OnnxModel, "labels", labels)
    # Ctrl-C as on a terminal, even where the test runner was started with SIGINT ignored
    # (a background job of a non-interactive shell).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = invoke(*command[:-1], partial, expect_ok=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert_interrupted_message(result.exit_code, result.stderr, partial)
    kept = [r["index"] for r in results_of(partial)]
    if where == "after-a-write":
        assert "2 results are in" in result.stderr and kept == [0, 1]
    else:
        # workers run ahead of the writes, so the signal finds some prefix of the results on disk
        assert kept == list(range(len(kept))) and len(kept) < len(complete)
        assert f"{len(kept)} results are in" in result.stderr
    monkeypatch.setattr(ResultsFile, "write", real_write)
    monkeypatch.setattr(OnnxModel, "labels", real_labels)
    invoke(*command[:-1], partial)
    assert without_seconds(results_of(partial)) == without_seconds(complete)


# -- bad input -----------------------------------------------------------------------------------


@pytest.fixture
def image_case(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(784, 3))
    save(linear_model(w, np.zeros(3), (1, 28, 28)), tmp_path / "m28.onnx")
    np.savez(tmp_path / "x28.npz", x=rng.random((2, 28, 28)).astype(np.float32))
    np.savez(tmp_path / "x32.npz", x=rng.random((2, 32, 32)).astype(np.float32))
    np.savez(tmp_path / "x255.npz", x=np.full((2, 28, 28), 200.0, dtype=np.float32))
    save(nan_model(784, 3, "log"), tmp_path / "nan.onnx")
    save(nan_model(784, 3, "div"), tmp_path / "div.onnx")
    (tmp_path / "notes.onnx").write_text("not a model\n")
    return tmp_path


def run_on(folder, *args, model="m28.onnx", data="x28.npz", plugin="rs"):
    data_args = [] if data is None else ["--data", folder / data]
    return invoke("--plugin", plugin, folder / model, *data_args, "-s", SIGMA, "--n0", "2", "-n", "8", "-q", *args,
                  expect_ok=False)


class Stretched(SmoothingMethod):
    """A throwaway method with a typed option."""

    name = "stretched"
    norm = "l2"

    class Options(certifier.Options):
        copies: int = 1

    def sample(self, x, rng, group):
        return x

    def certify(self, selection, estimation, alpha):
        return Certificate(selection.top(), 0.0)


@pytest.mark.parametrize("args, kwargs, fragments", [
    ([], {"plugin": "nope"}, ["unknown plugin 'nope'", "rs"]),
    (["-o", "width", "3"], {}, ["plugin rs has no option 'width'"]),
    ([], {"model": "missing.onnx"}, ["model file not found"]),
    ([], {"model": "notes.onnx"}, ["is not an ONNX model"]),
    ([], {"data": "x255.npz"}, ["outside [0, 1]", "0..255"]),
    ([], {"data": "x32.npz"}, ["takes 28 x 28 images", "32 x 32", "--resize 28 28"]),
    ([], {"model": "nan.onnx"}, ["output NaN"]),
    ([], {"model": "div.onnx"}, ["output NaN"]),
    (["--device", "cuda"], {}, ["--device cuda", "--device cpu"]),
    ([], {"data": None}, ["no --data given"]),
    ([], {"data": "missing.npz"}, ["data not found"]),
    (["--limit", "0"], {}, ["--limit must be at least 1"]),
    (["--skip", "0"], {}, ["--skip must be at least 1"]),
    (["--batch-size", "0"], {}, ["--batch-size must be at least 1"]),
    (["-s", "-1"], {}, ["--sigma must be a positive number"]),
    (["--alpha", "1.5"], {}, ["--alpha must be between 0 and 1"]),
    (["--n0", "0"], {}, ["--n0 and -n must be at least 1"]),
    (["--mean", "0.1,0.2"], {}, ["--mean needs 1 value (the data has one channel), got 2"]),
    (["--std", "0"], {}, ["--std values must be positive"]),
    (["--layout", "nhwc"], {}, ["set --layout"]),
    (["--output-name", "nope"], {}, ["--output-name 'nope' is not an output"]),
])
def test_bad_input_gives_a_one_line_error(image_case, args, kwargs, fragments):
    assert_one_line_error(run_on(image_case, *args, **kwargs), *fragments)


@pytest.mark.parametrize("args, fragment", [
    (["-s", "abc"], "Invalid value for '-s'"),
    (["--format", "xml"], "Invalid value for '--format'"),
    (["--mean", "a,b"], "expected numbers separated by commas"),
    (["--frobnicate"], "No such option '--frobnicate'"),
])
def test_malformed_options_give_one_error_line(image_case, args, fragment):
    assert_one_line_error(run_on(image_case, *args), fragment)


def test_bad_option_value_for_a_plugin(image_case, register_methods):
    register_methods(Stretched)
    result = run_on(image_case, "-o", "copies", "many", plugin="stretched")
    assert_one_line_error(result, "plugin stretched, option copies='many'", "integer")
    ok = run_on(image_case, "-o", "copies", "2", plugin="stretched")
    assert ok.exit_code == 0, ok.output
