"""Certifying on a local Ray instance (one for the test session, 2 CPUs: tests/conftest.py): the same records as a
local run, actors killed mid-run, drivers interrupted and resumed, two models shipped,
workers that cannot load the model."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

ray = pytest.importorskip("ray")

from click.testing import CliRunner  # noqa: E402

import certifier  # noqa: E402
from certifier.cli import cli  # noqa: E402
from certifier.errors import CertifyError  # noqa: E402
from certifier.ray_executor import RayExecutor  # noqa: E402

MODELS = Path(certifier.__file__).resolve().parents[1] / "models"
RS = MODELS / "fmnist-rs-0.25.onnx"
DRS = MODELS / "fmnist-drs-0.25.onnx"
DATA = MODELS / "fmnist-samples.npz"
SETTINGS = {"n0": 20, "n": 1500, "seed": 7}
FLAGS = ["--n0", "20", "-n", "1500", "--seed", "7"]


@pytest.fixture
def cluster(ray_cluster):
    return ray_cluster


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:] if line.startswith('{"type": "result"')]


def comparable(rows) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Local runs to compare with: rs on 12 inputs, drs with a second model on 6."""
    folder = tmp_path_factory.mktemp("local")
    run = certifier.load(RS, plugin="rs")
    with run.job(DATA, output=folder / "rs.jsonl", limit=12, **SETTINGS) as job:
        list(job)
    right = folder / "right.onnx"  # the same classifier in another file: two models to ship
    proto = onnx.load(DRS)
    proto.doc_string = "the right side's model"
    onnx.save(proto, right)
    run = certifier.load(DRS, plugin="drs", options={"model-r": str(right)})
    with run.job(DATA, output=folder / "drs.jsonl", limit=6, **SETTINGS) as job:
        list(job)
    return {"rs": comparable(records(folder / "rs.jsonl")), "drs": comparable(records(folder / "drs.jsonl")),
            "right": right}


def test_every_record_equals_the_local_runs(cluster, reference, tmp_path):
    notes = []
    with RayExecutor(note=notes.append) as executor:
        run = certifier.load(RS, plugin="rs")
        with run.job(DATA, output=tmp_path / "ray.jsonl", limit=12, executor=executor, **SETTINGS) as job:
            results = list(job)
    assert [r.index for r in results] == list(range(12))
    assert comparable(records(tmp_path / "ray.jsonl")) == reference["rs"]
    assert len(notes) == 1 and "2 actors" in notes[0] and cluster in notes[0]
    header = json.loads((tmp_path / "ray.jsonl").read_text().splitlines()[0])
    assert header["device"].startswith("cpu (ray")
    # certify report reads it as any other results file
    report = CliRunner().invoke(cli, ["report", "--json", str(tmp_path / "ray.jsonl")])
    assert report.exit_code == 0 and json.loads(report.output)[str(tmp_path / "ray.jsonl")]["inputs"] == 12


def test_drs_ships_both_models_and_reads_no_driver_path(cluster, reference, tmp_path):
    """The models are sent through the object store: the workers succeed although the
    driver's files are gone by the time they open them."""
    folder = tmp_path / "models"
    folder.mkdir()
    main, right = shutil.copy(DRS, folder / "drs.onnx"), shutil.copy(reference["right"], folder / "right.onnx")
    run = certifier.load(main, plugin="drs", options={"model-r": str(right)})

    class Vanishing(RayExecutor):
        def spec(self, job):
            spec, paths = super().spec(job)
            assert len(paths) == 2 and set(spec.group_models) == {"right"}
            parts = {sha: [p.read_bytes() for p in files] for sha, files in paths.items()}
            shutil.rmtree(folder)
            for sha, files in paths.items():  # read_parts reads from here, not the model folder
                staged = tmp_path / "staged" / sha
                staged.mkdir(parents=True)
                for file, data in zip(files, parts[sha]):
                    (staged / file.name).write_bytes(data)
                paths[sha] = [staged / f.name for f in files]
            return spec, paths

    with Vanishing() as executor:
        with run.job(DATA, output=tmp_path / "drs.jsonl", limit=6, executor=executor, **SETTINGS) as job:
            list(job)
    assert comparable(records(tmp_path / "drs.jsonl")) == reference["drs"]


def test_an_actor_killed_mid_run_loses_no_input_and_writes_none_twice(cluster, reference, tmp_path):
    notes = []
    output = tmp_path / "killed.jsonl"
    with RayExecutor(note=notes.append) as executor:
        run = certifier.load(RS, plugin="rs")
        with run.job(DATA, output=output, limit=12, executor=executor, **SETTINGS) as job:
            seen = []
            for result in job:
                seen.append(result.index)
                if len(seen) == 2:
                    busy = [a for a in executor.actors if a.tasks]
                    assert busy, "no actor had inputs in flight"
                    ray.kill(busy[0].handle)
    assert seen == list(range(12))
    assert [r["index"] for r in records(output)] == list(range(12))
    assert comparable(records(output)) == reference["rs"]
    assert any("was lost" in n and "re-run" in n for n in notes), notes


@pytest.mark.parametrize("how", ["hash", "library"])
def test_workers_that_cannot_load_the_model_are_named_and_the_run_stops_in_one_line(cluster, tmp_path, how):
    notes = []

    class Broken(RayExecutor):
        def spec(self, job):
            spec, paths = super().spec(job)
            if how == "hash":
                spec.model = type(spec.model)(spec.model.names, "0" * 64)
                paths = {"0" * 64: next(iter(paths.values()))}
            else:
                # no CUDA here: onnxruntime's CUDA libraries are missing
                spec.settings = spec.settings.replace(device="cuda")
            return spec, paths

    run = certifier.load(RS, plugin="rs")
    with Broken(note=notes.append) as executor:
        with pytest.raises(CertifyError) as error:
            with run.job(DATA, output=tmp_path / "x.jsonl", limit=4, executor=executor, **SETTINGS) as job:
                list(job)
    message = str(error.value)
    assert "\n" not in message and message.startswith("no Ray worker can run the model: ")
    assert ("SHA-256" if how == "hash" else "CUDA") in message
    failures = [n for n in notes if n.startswith("warning: a Ray worker cannot run the model")]
    assert len(failures) == 2 and all("(" in n and ")" in n for n in failures)  # host (address)
    assert all(len(n.splitlines()) == 1 for n in notes)


def start(arguments, output: Path) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != "CERTIFY_DEBUG"}
    script = "from certifier.cli import cli; cli(prog_name='certify')"
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, arguments), "--output", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def stop_mid_run(process: subprocess.Popen, output: Path, signum: int) -> tuple[int, str]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        if output.exists() and len(records(output)) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


@pytest.mark.parametrize("signum, resume_with_ray", [(signal.SIGINT, False), (signal.SIGKILL, True)],
                         ids=["ctrl-c-then-local", "sigkill-then-ray"])
def test_a_stopped_driver_leaves_a_file_that_a_rerun_resumes(cluster, reference, tmp_path, signum, resume_with_ray):
    output = tmp_path / "stopped.jsonl"
    command = ["--plugin", "rs", RS, "--data", DATA, "--limit", "12", *FLAGS]
    code, stderr = stop_mid_run(start([*command, "--ray", cluster], output), output, signum)
    written = len(records(output))
    assert 2 <= written < 12, (written, stderr)
    if signum == signal.SIGINT:
        assert code == 130 and "Traceback" not in stderr
        last = stderr.strip().splitlines()[-1]
        assert "interrupted" in last and "rerun the same command to resume" in last
    else:
        assert code == -signal.SIGKILL
    rerun = [*map(str, command), "--output", str(output), *(["--ray"] if resume_with_ray else [])]
    again = CliRunner().invoke(cli, rerun)
    assert again.exit_code == 0, again.output
    assert f"resuming {output}" in again.output
    assert comparable(records(output)) == reference["rs"]


def test_a_ray_head_answers_the_address_check(cluster):
    """The check that gives up on servers that are not Ray (tests/test_ray_plan.py) passes a real head node."""
    from certifier.ray_executor import check_address

    check_address(cluster, timeout=5)


def test_the_command_line_says_where_it_runs_in_one_quiet_line(cluster, reference, tmp_path):
    output = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(cli, ["--plugin", "rs", str(RS), "--data", str(DATA), "--limit", "4", *FLAGS,
                                      "--ray", "--output", str(output)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("certify:")]
    assert notes[0].startswith("certify: running on this process's Ray at ")
    assert "ray" not in "".join(notes[1:]).lower()  # nothing else from Ray
    assert comparable(records(output)) == reference["rs"][:4]


def test_predict_on_ray_writes_what_predict_writes_locally(cluster, tmp_path):
    arguments = ["predict", "--plugin", "rs", str(RS), "--data", str(DATA), "--limit", "4", *FLAGS, "-q"]
    for name, extra in (("local", []), ("ray", ["--ray"])):
        result = CliRunner().invoke(cli, [*arguments, *extra, "--output", str(tmp_path / f"{name}.jsonl")])
        assert result.exit_code == 0, result.output
    assert comparable(records(tmp_path / "ray.jsonl")) == comparable(records(tmp_path / "local.jsonl"))


# --denoiser (issue 11) and --sampling sequential (issue 12) land on their own branches: their
# tests here run once both are on the branch under test.
needs_denoiser = pytest.mark.skipif("denoiser" not in inspect.signature(certifier.load).parameters,
                                    reason="--denoiser is not on this branch yet")
needs_sequential = pytest.mark.skipif("sampling" not in inspect.signature(certifier.api.Run.job).parameters,
                                      reason="--sampling sequential is not on this branch yet")
PLAIN = MODELS / "fmnist-plain.onnx"
DENOISER = MODELS / "fmnist-denoiser-mse-0.25.onnx"


@needs_denoiser
def test_a_denoiser_travels_by_hash_and_gives_the_local_records(cluster, tmp_path):
    """--denoiser on Ray: the denoiser file is shipped beside the classifier (by SHA-256) and
    every view goes through it on the actors, as locally; drs ships three files."""
    base = ["--data", str(DATA), "--limit", "3", "--n0", "20", "-n", "300", "--seed", "7", "-q"]
    for name, command in (("rs", ["--plugin", "rs", "--sigma", "0.25", str(PLAIN)]),
                          ("drs", ["--plugin", "drs", "--sigma", "0.25", str(PLAIN), "-o", "model-r",
                                   str(reference_right(tmp_path))])):
        files = {}
        for where, extra in (("local", []), ("ray", ["--ray"])):
            files[where] = tmp_path / f"{name}-{where}.jsonl"
            result = CliRunner().invoke(cli, [*command, "--denoiser", str(DENOISER), *base, *extra,
                                              "--output", str(files[where])])
            assert result.exit_code == 0, result.output
        header = json.loads(files["ray"].read_text().splitlines()[0])
        assert header["denoiser_sha256"] == certifier.remote.file_sha256(DENOISER)
        assert comparable(records(files["ray"])) == comparable(records(files["local"]))


def reference_right(tmp_path: Path) -> Path:
    """The plain classifier in another file: a second model for drs's right side."""
    right = tmp_path / "right.onnx"
    if not right.exists():
        proto = onnx.load(PLAIN)
        proto.doc_string = "the right side's model"
        onnx.save(proto, right)
    return right


@needs_denoiser
def test_a_worker_without_the_denoiser_setting_refuses_to_run(cluster, tmp_path):
    """A recipe that lost the denoiser (an older driver, a bug) builds an engine without it:
    refused by the identity check, in one line naming the entry, never run without it."""
    notes = []

    class Forgetful(RayExecutor):
        def spec(self, job):
            spec, paths = super().spec(job)
            paths.pop(spec.denoiser.sha256)
            spec.denoiser = None
            return spec, paths

    run = certifier.load(PLAIN, plugin="rs", sigma=0.25, denoiser=DENOISER)
    with Forgetful(note=notes.append) as executor:
        with pytest.raises(CertifyError) as error:
            with run.job(DATA, limit=2, executor=executor, **SETTINGS) as job:
                list(job)
    message = str(error.value)
    assert "\n" not in message and message.startswith("no Ray worker can run the model: ")
    assert "refusing to run" in message and "differs from the driver's in denoiser_" in message


@needs_sequential
@pytest.mark.parametrize("plan", [["--sampling", "sequential", "--radii", "0,0.25,0.5"], ["--radius", "0.25"]],
                         ids=["levels", "radius"])
def test_sequential_sampling_on_ray_gives_the_local_records(cluster, tmp_path, plan):
    """The sequential plan travels in the recipe: each input's chunks, stopping point, votes and
    level are the local run's; the header records the same plan."""
    base = ["--plugin", "rs", str(RS), "--data", str(DATA), "--limit", "4", "--n0", "20", "-n", "4000",
            "--seed", "7", "-q", *plan]
    files = {}
    for where, extra in (("local", []), ("ray", ["--ray"])):
        files[where] = tmp_path / f"{where}.jsonl"
        result = CliRunner().invoke(cli, [*base, *extra, "--output", str(files[where])])
        assert result.exit_code == 0, result.output
    headers = [json.loads(files[w].read_text().splitlines()[0]) for w in ("local", "ray")]
    assert headers[0]["sampling"] == headers[1]["sampling"] == "sequential"
    assert headers[0]["sampling_settings"] == headers[1]["sampling_settings"]
    ray_records = comparable(records(files["ray"]))
    assert ray_records == comparable(records(files["local"]))
    assert any(r["forward_passes"] < 20 + 4000 for r in ray_records)  # some stopped early


@pytest.mark.parametrize("model, flags", [("fmnist-brightness-0.25.onnx", ["-n", "500"]),
                                          ("fmnist-translation-3.onnx", [])], ids=["brightness", "translation"])
def test_semantic_methods_on_ray_give_the_local_records(cluster, tmp_path, model, flags):
    """Methods with their own threat model (a parameter, exact shifts) travel as any other: the
    same records, threat model and all."""
    base = [str(MODELS / model), "--data", str(DATA), "--limit", "3", "--n0", "20", "--seed", "7", "-q", *flags]
    files = {}
    for where, extra in (("local", []), ("ray", ["--ray"])):
        files[where] = tmp_path / f"{where}.jsonl"
        result = CliRunner().invoke(cli, [*base, *extra, "--output", str(files[where])])
        assert result.exit_code == 0, result.output
    rows = comparable(records(files["ray"]))
    assert rows == comparable(records(files["local"])) and all(r["threat_model"] for r in rows)
