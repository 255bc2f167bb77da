"""Ray without a cluster: how actors are chosen for a cluster's resources (fake resource
tables, as certifier.device is tested with fake CUDA probes), the engine's recipe rebuilt
in this process, and --ray where Ray is missing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

import certifier
from certifier import ray_executor
from certifier.cli import cli
from certifier.errors import CertifyError
from certifier.ray_executor import ActorPlan, plan_actors
from certifier.remote import ModelFiles, ShippedInputs, _write_files, build_engine, certify_one, read_parts

MODELS = certifier.__file__.rsplit("/", 2)[0] + "/models"
GPU_NODE = {"CPU": 16.0, "GPU": 4.0, "memory": 1e11}
CPU_ONLY = {"CPU": 6.0, "memory": 1e10}


def test_auto_takes_one_gpu_per_actor_when_the_cluster_has_gpus():
    assert plan_actors("auto", GPU_NODE) == ActorPlan(4, 2.0, 1.0, "cuda")  # 2 CPUs make views
    assert plan_actors("cuda", GPU_NODE, threads=4) == ActorPlan(4, 4.0, 1.0, "cuda")
    # CPUs for making views can limit GPU actors too
    assert plan_actors("cuda", GPU_NODE, threads=8) == ActorPlan(2, 8.0, 1.0, "cuda")


def test_fractional_gpus_pack_several_actors_on_a_gpu():
    assert plan_actors("auto", GPU_NODE, gpus_per_actor=0.5) == ActorPlan(8, 2.0, 0.5, "cuda")
    assert plan_actors("auto", GPU_NODE, gpus_per_actor=0.25).actors == 8  # 16 CPUs, 2 each


def test_cpu_actors_are_sized_by_threads():
    assert plan_actors("auto", CPU_ONLY) == ActorPlan(6, 1.0, 0.0, "cpu")
    assert plan_actors("cpu", CPU_ONLY, threads=2) == ActorPlan(3, 2.0, 0.0, "cpu")
    assert plan_actors("cpu", CPU_ONLY, threads=4) == ActorPlan(1, 4.0, 0.0, "cpu")
    # --device cpu on a GPU cluster: CPU actors only
    assert plan_actors("cpu", GPU_NODE) == ActorPlan(16, 1.0, 0.0, "cpu")


def test_at_most_max_actors():
    assert plan_actors("auto", GPU_NODE, max_actors=3).actors == 3
    assert plan_actors("auto", CPU_ONLY, max_actors=100).actors == 6


@pytest.mark.parametrize("device, resources, settings, words", [
    ("cuda", CPU_ONLY, {}, ["--device cuda", "0 GPUs"]),
    ("cpu", CPU_ONLY, {"threads": 8}, ["6 CPUs", "--threads"]),
    ("auto", CPU_ONLY, {"max_actors": 0}, ["--ray-actors"]),
    ("auto", GPU_NODE, {"gpus_per_actor": 0.0}, ["--ray-gpus"]),
    ("tpu", CPU_ONLY, {}, ["--device"]),
])
def test_clusters_that_cannot_hold_an_actor_are_refused_in_one_line(device, resources, settings, words):
    with pytest.raises(CertifyError) as error:
        plan_actors(device, resources, **settings)
    assert "\n" not in str(error.value) and all(w in str(error.value) for w in words)


def test_without_ray_installed_ray_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(ray_executor, "ray", None)
    result = CliRunner().invoke(cli, ["--plugin", "rs", f"{MODELS}/fmnist-rs-0.25.onnx", "--data",
                                      f"{MODELS}/fmnist-samples.npz", "-n", "100", "--ray"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "pip install 'onnx-certifier[ray]'" in result.output.strip().splitlines()[-1]


def test_a_model_given_as_the_address_is_named(tmp_path):
    """--ray MODEL is --ray alone then the model (tests/test_scale.py); --ray=MODEL is a mistake."""
    result = CliRunner().invoke(cli, ["--plugin", "rs", f"--ray={MODELS}/fmnist-rs-0.25.onnx", "--data",
                                      f"{MODELS}/fmnist-samples.npz"])
    assert result.exit_code != 0 and "put --ray after the model" in result.output


def test_model_bytes_are_checked_by_sha256(tmp_path):
    data = np.frombuffer(b"not really a model", dtype=np.uint8)
    files = ModelFiles(("m.onnx",), "0" * 64)
    with pytest.raises(CertifyError, match="SHA-256.*corrupted"):
        _write_files(tmp_path, files, [data])
    assert not (tmp_path / "m.onnx").exists()


def test_the_recipe_rebuilds_an_engine_that_gives_the_same_records(tmp_path):
    """worker_spec and build_engine in one process: the rebuilt engine certifies every input
    (plan, batch size, seed and input space the driver's) exactly as the driver's engine."""
    from certifier.remote import worker_spec

    run = certifier.load(f"{MODELS}/fmnist-rs-0.25.onnx", plugin="rs", sigma=0.25, scale=1.0)
    with run.job(f"{MODELS}/fmnist-samples.npz", n0=20, n=300, seed=5, limit=3, batch_size=64) as job:
        local = list(job)
        spec, paths = worker_spec(job, device="cpu", threads=1, workers=None)
        engine = build_engine(spec, {sha: read_parts(p) for sha, p in paths.items()})
        inputs = ShippedInputs(job.dataset.shape)
        for result in local:
            shipped, messages = certify_one(engine, inputs, result.index, job.dataset.batch([result.index])[0],
                                            "certify")
            assert (shipped.prediction, shipped.certificate.radius, shipped.certificate.details,
                    shipped.forward_passes) == (result.prediction, result.radius, result.details,
                                                result.forward_passes)
    assert engine.batch_size == 64 and json.dumps(spec.identity, default=str)


def test_the_recipe_keeps_the_noise_stream_of_the_file_it_resumes(tmp_path):
    """A file written before noise streams were numbered resumes on workers drawing stream 1, as
    it would locally; a recipe that lost the stream is refused, never run on other views."""
    from pathlib import Path

    from certifier.remote import worker_spec

    fixture = Path(__file__).resolve().parent / "fixtures" / "fixed-rs.jsonl"
    header, first, *_ = fixture.read_text().splitlines(keepends=True)
    resumed = tmp_path / "resumed.jsonl"
    resumed.write_text(header + first)
    run = certifier.load(f"{MODELS}/fmnist-rs-0.25-gaussian.onnx", plugin="rs")
    with run.job(f"{MODELS}/fmnist-samples.npz", output=resumed, n0=50, n=1500, seed=3, limit=2,
                 batch_size=512) as job:
        assert job.engine.noise_stream == 1 and job.todo == [1]
        spec, paths = worker_spec(job, device="cpu", threads=1, workers=None)
        parts = {sha: read_parts(p) for sha, p in paths.items()}
        engine = build_engine(spec, parts)
        shipped, _ = certify_one(engine, ShippedInputs(job.dataset.shape), 1, job.dataset.batch([1])[0], "certify")
        (local,) = list(job)
    assert engine.noise_stream == 1
    expected = json.loads(fixture.read_text().splitlines()[2])
    assert (shipped.prediction, shipped.certificate.radius) == (local.prediction, local.radius) == (
        expected["prediction"], expected["radius"])
    spec.plan = spec.plan.replace(noise_stream=2)
    with pytest.raises(CertifyError, match="differs from the driver's in noise_stream"):
        build_engine(spec, parts)


def test_an_address_nobody_listens_on_is_one_line_at_once(tmp_path):
    pytest.importorskip("ray")
    done, _ = certify_in_a_process("127.0.0.1:1", cwd=tmp_path)
    assert one_error_line(done).startswith("Error: cannot reach the Ray cluster at 127.0.0.1:1 (")
    assert not (tmp_path / "results.jsonl").exists()


@pytest.mark.parametrize("address", ["not an address::", "http://127.0.0.1:8265", "127.0.0.1:99999", "127.0.0.1",
                                     ":6379", "ray://", "host name:6379"])
def test_a_malformed_address_is_a_usage_error_before_anything_runs(address, tmp_path):
    result = CliRunner().invoke(cli, ["--plugin", "rs", f"{MODELS}/fmnist-rs-0.25.onnx", "--data",
                                      f"{MODELS}/fmnist-samples.npz", "-n", "100", "--ray", address,
                                      "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2, result.output
    assert f"{address!r} is not a cluster address; give HOST:PORT" in result.output and "unexpected" not in result.output
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("address,parsed", [
    ("local", ("local", None, None)), ("auto", ("auto", None, None)), ("10.0.0.1:6379", ("gcs", "10.0.0.1", 6379)),
    ("head-node.example:6379", ("gcs", "head-node.example", 6379)), ("[::1]:6379", ("gcs", "::1", 6379)),
    ("ray://head:10001", ("client", "head", 10001)), ("ray_head:6379", ("gcs", "ray_head", 6379)),
    ("[fe80::1%eth0]:6379", ("gcs", "fe80::1%eth0", 6379)),
])
def test_addresses_ray_takes_are_parsed(address, parsed):
    assert ray_executor.parse_address(address) == parsed


def certify_in_a_process(address: str, *extra: str, preamble: str = "",
                         cwd=None) -> tuple[subprocess.CompletedProcess, float]:
    """certify --ray ADDRESS in a process of its own (Ray already running in this one would be
    used instead), and the seconds it took."""
    script = preamble + "from certifier.cli import cli; cli(prog_name='certify')"
    command = [sys.executable, "-c", script, "--plugin", "rs", f"{MODELS}/fmnist-rs-0.25.onnx", "--data",
               f"{MODELS}/fmnist-samples.npz", "-n", "100", "--ray", address, *extra]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)
    return done, time.monotonic() - started


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]  # nothing of Ray's own
    assert line.startswith("Error: ") and "unexpected" not in line, line
    return line


@pytest.fixture
def silent_server():
    """HOST:PORT of a server that accepts connections and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    thread = threading.Thread(target=lambda: accepted.extend(_accept_forever(server)), daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


def _accept_forever(server):
    while True:
        try:
            yield server.accept()[0]
        except OSError:  # closed
            return


def test_ray_client_without_its_extra_names_the_extra(silent_server):
    pytest.importorskip("ray")
    done, _ = certify_in_a_process(f"ray://{silent_server}", preamble="import sys; sys.modules['grpc'] = None; ")
    line = one_error_line(done)
    assert "Ray Client (ray://) needs Ray's client extra" in line and "pip install 'ray[client]'" in line


def test_a_server_that_says_nothing_is_given_up_on_in_seconds(silent_server):
    pytest.importorskip("ray")
    done, seconds = certify_in_a_process(silent_server, "--ray-timeout", "0.5")
    line = one_error_line(done)
    assert line == (f"Error: {silent_server} does not answer as a Ray cluster within 0.5 s; check the address (the "
                    f"head node's GCS port, 6379 by default), or wait longer with --ray-timeout")
    assert seconds < 60  # Ray itself retries for minutes (not a timing assertion: a hang would time out)


def test_a_web_server_is_not_taken_for_ray():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(CertifyError, match="answers, but not as a Ray cluster does"):
            ray_executor.check_address(f"127.0.0.1:{server.server_address[1]}", timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_auto_checks_the_cluster_ray_address_names(silent_server, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", silent_server)
    with pytest.raises(CertifyError, match="does not answer as a Ray cluster within 0.2 s"):
        ray_executor.check_address("auto", timeout=0.2)
    monkeypatch.setenv("RAY_ADDRESS", "nonsense::")
    with pytest.raises(CertifyError, match="RAY_ADDRESS='nonsense::' .* is not a cluster address"):
        ray_executor.check_address("auto")


def test_external_data_files_travel_with_the_model(tmp_path):
    """A model whose weights live in a file beside it (in a sub-folder) is sent as both files
    and hashed as the driver hashes it; the worker's folder is gone once the model is open."""
    from onnx_models import linear_model, with_external_weights, write

    from certifier.remote import worker_spec

    rng = np.random.default_rng(0)
    model, data = with_external_weights(linear_model(rng.normal(size=(4, 3)), np.zeros(3), (4,)), "w/W.bin")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "W.bin").write_bytes(data)
    path = write(model, tmp_path / "m.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.2, device="cpu")
    x = rng.random((3, 4)).astype(np.float32)
    with run.job(x, n0=10, n=200, seed=1) as job:
        local = list(job)
        spec, paths = worker_spec(job, device="cpu", threads=1, workers=None)
    assert spec.model.names == ("m.onnx", "w/W.bin") and spec.model.sha256 == run.model.sha256
    engine = build_engine(spec, {sha: read_parts(p) for sha, p in paths.items()})
    assert not engine.groups[0].model.path.exists()
    inputs = ShippedInputs((4,))
    assert [certify_one(engine, inputs, r.index, x[r.index], "certify")[0].certificate.details for r in local] == \
        [r.details for r in local]


def test_an_idle_actor_copies_the_oldest_input_a_straggler_holds(monkeypatch):
    """Dealing, with fake actors: new inputs first, then (nothing new within the window)
    a copy of the oldest input held by an actor whose input has run more than twice the
    usual time; never an input already copied or finished, never while the actor is busy."""
    from collections import deque
    from types import SimpleNamespace

    from certifier.ray_executor import _Actor, _Dispatch

    now = [1000.0]
    monkeypatch.setattr(ray_executor.time, "monotonic", lambda: now[0])
    slow, fast, idle = _Actor("slow"), _Actor("fast"), _Actor("idle")
    executor = SimpleNamespace(actors=[slow, fast, idle], plan=ActorPlan(3, 1.0, 0.0, "cpu"), in_flight=2)
    dispatch = _Dispatch(executor, job=None, indices=list(range(40)), spec=None, files=None)
    dispatch.todo = [30]  # beyond the window (16 + 4 * 3 * 2 = 24 from input 0)
    dispatch.copies = {0: 1, 1: 1, 2: 1, 30: 0}
    slow.tasks, slow.running_since = deque([("r0", 0), ("r1", 1)]), now[0] - 2.5
    fast.tasks, fast.running_since = deque([("r2", 2)]), now[0] - 1.0
    dispatch.durations = [1.0, 1.2, 0.8]
    assert dispatch._next_for(idle) is None  # 2.5 s is within 2 x 1 s (the median) + 1 s of slack
    now[0] += 1.0
    assert dispatch._next_for(idle) == 0
    assert dispatch._next_for(fast) is None  # busy actors take no copies
    dispatch.copies[0] = 2  # copied already: the next input the straggler holds
    assert dispatch._next_for(idle) == 1
    dispatch.finished[1] = object()
    assert dispatch._next_for(idle) is None
    dispatch.next_out = 10  # the window moved on: new inputs come first again
    assert dispatch._next_for(idle) == 30


def _driver_job(tmp_path, **load_settings):
    from certifier.remote import worker_spec

    run = certifier.load(f"{MODELS}/fmnist-drs-0.25.onnx", plugin="drs", **load_settings)
    job = run.job(f"{MODELS}/fmnist-samples.npz", n0=20, n=300, seed=5, limit=2, batch_size=64)
    spec, paths = worker_spec(job, device="cpu", threads=1, workers=None)
    return job, spec, {sha: read_parts(p) for sha, p in paths.items()}


@pytest.mark.parametrize("key, tamper", [
    ("seed", lambda spec: setattr(spec, "plan", spec.plan.replace(seed=6))),
    ("n", lambda spec: setattr(spec, "plan", spec.plan.replace(sampling=type(spec.plan.sampling)(20, 301)))),
    ("settings", lambda spec: setattr(spec, "settings", spec.settings.replace(sigma=0.3))),
    ("input_space", lambda spec: setattr(spec, "settings", spec.settings.replace(scale=255.0))),
    ("batch_size", lambda spec: setattr(spec, "plan", spec.plan.replace(batch_size=32))),
    ("plugin_origin", lambda spec: spec.identity.update(plugin_origin=["onnx-certifier", "0.0.1"])),
])
def test_a_worker_refuses_an_engine_that_differs_from_the_drivers(tmp_path, key, tamper):
    """A recipe that does not carry a setting (here: one changed after the identity was taken,
    as a recipe that dropped it would rebuild another engine) is refused in one line naming
    the setting, never run."""
    job, spec, parts = _driver_job(tmp_path)
    assert build_engine(spec, parts).seed == 5  # untouched, it builds
    tamper(spec)
    with pytest.raises(CertifyError) as error:
        build_engine(spec, parts)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"refusing to run: this worker's engine differs from the "
                                                      f"driver's in {key} (")


def test_the_identity_covers_every_header_entry_but_paths_data_and_device(tmp_path):
    from certifier.remote import WHERE_NOT_WHAT

    job, spec, _ = _driver_job(tmp_path)
    # paths only with --denoiser, and in certify attack's headers with --certified
    assert set(WHERE_NOT_WHAT) - {"denoiser", "certified"} <= set(job.header)
    assert set(job.header) - set(WHERE_NOT_WHAT) <= set(spec.identity)
    assert all(json.dumps(spec.identity[key]) == json.dumps(job.header[key])
               for key in set(job.header) - set(WHERE_NOT_WHAT))


def test_a_batch_coupled_model_allowed_at_batch_size_one_travels_so(tmp_path):
    """--batch-size 1 lets a model whose rows depend on their batch run one input per call; the
    worker opens it so too (without the setting it would refuse the model)."""
    from onnx_models import batch_mixing_model, save

    from certifier.remote import worker_spec

    path = save(batch_mixing_model(16, 4, 4), tmp_path / "coupled.onnx")
    x = np.random.default_rng(3).random((3, 16)).astype(np.float32)
    run = certifier.load(path, plugin="rs", sigma=0.5, device="cpu", allow_batch_coupling=True)
    with run.job(x, n0=10, n=100, seed=2, batch_size=1) as job:
        local = list(job)
        spec, paths = worker_spec(job, device="cpu", threads=1, workers=None)
    assert spec.settings.allow_batch_coupling and spec.identity["allow_batch_coupling"] is True
    engine = build_engine(spec, {sha: read_parts(p) for sha, p in paths.items()})
    inputs = ShippedInputs((16,))
    assert [certify_one(engine, inputs, r.index, x[r.index], "certify")[0].certificate.details for r in local] == \
        [r.details for r in local]
    spec.settings = spec.settings.replace(allow_batch_coupling=False)
    with pytest.raises(CertifyError):
        build_engine(spec, {sha: read_parts(p) for sha, p in paths.items()})


def test_a_worker_refuses_a_recipe_that_lost_the_sequential_plan(tmp_path):
    import inspect

    if "sampling" not in inspect.signature(certifier.api.Run.job).parameters:
        pytest.skip("--sampling sequential is not on this branch yet")
    from certifier.remote import worker_spec
    from certifier.sampling import FixedSampling

    run = certifier.load(f"{MODELS}/fmnist-rs-0.25.onnx", plugin="rs")
    with run.job(f"{MODELS}/fmnist-samples.npz", n0=20, n=2000, seed=5, limit=2, sampling="sequential",
                 levels=(0.25, 0.5)) as job:
        spec, paths = worker_spec(job, device="cpu", threads=1, workers=None)
    parts = {sha: read_parts(p) for sha, p in paths.items()}
    assert build_engine(spec, parts).plan.settings() == job.engine.plan.settings()
    spec.plan = spec.plan.replace(sampling=FixedSampling(20, 2000))
    with pytest.raises(CertifyError, match=r"^refusing to run: .* differs from the driver's in sampling \("):
        build_engine(spec, parts)
