"""A run's settings are one thing (issue 19): records checked once, the command line made from
them, the Python API with everything the command line has, one header table read by resume
and by Ray workers, and no import circles."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

import certifier
from certifier.cli import cli
from certifier.header import (
    DERIVED, HEADER_KEYS, IDENTITY, IDENTITY_KEYS, IMPLIED_WHEN_ABSENT, INCIDENTAL_KEYS, LOCATION, RECORDED_LATER,
)
from certifier.settings import (
    DEVICES, JobSettings, ModelSettings, RaySettings, RunSettings, TrainingSettings,
)

from onnx_models import batch_mixing_model, hyperplane_model, save
from test_denoiser import identity_denoiser, sigma_metadata

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
SAMPLES = MODELS / "fmnist-samples.npz"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def invoke(*args, expect_ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if expect_ok:
        assert result.exit_code == 0, result.output
    return result


def header_of(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[0])


@pytest.fixture
def plane(tmp_path):
    save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 0] > 0.5).astype(int))
    return tmp_path


# -- item 3: one header table ------------------------------------------------------------------


def _headers(tmp_path: Path) -> list[dict]:
    """Headers of runs that write every kind of entry: fixed and sequential plans, PREDICT, an exact
    method, a vote group with a model of its own, a denoiser, a diffusion noise predictor."""
    rs = certifier.load(MODELS / "fmnist-rs-0.25.onnx")
    drs = certifier.load(MODELS / "fmnist-drs-0.25.onnx", options={"model-r": str(MODELS / "fmnist-drs-0.5.onnx")})
    dssn = certifier.load(MODELS / "fmnist-dssn-1.0.onnx")
    denoiser = save(identity_denoiser(shape=(1, 28, 28)), tmp_path / "identity.onnx")
    denoised = certifier.load(MODELS / "fmnist-rs-0.25.onnx", denoiser=denoiser)
    diffusion = certifier.load(MODELS / "fmnist-rs-0.25.onnx", denoiser=MODELS / "fmnist-diffusion.onnx")
    jobs = [rs.job(SAMPLES, limit=1, n0=10, n=100), rs.job(SAMPLES, limit=1, n0=10, n=300, radius=0.25),
            rs.job(SAMPLES, limit=1, n=100, mode="predict"), dssn.job(SAMPLES, limit=1),
            drs.job(SAMPLES, limit=1, n0=10, n=100), denoised.job(SAMPLES, limit=1, n0=10, n=100),
            diffusion.job(SAMPLES, limit=1, n0=10, n=100)]
    return [job.header for job in jobs] + _attack_headers(tmp_path)


def _attack_headers(tmp_path: Path) -> list[dict]:
    """Headers of certify attack: one checking a certify file's certificates, one whose search
    fell back to SPSA (a model onnx2torch cannot convert) and says why."""
    from certifier_plugins.attack import attack

    from onnx_models import ml_classifier_model

    x = np.random.default_rng(0).random((1, 4)).astype(np.float32)
    plane = certifier.load(save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx"), plugin="rs",
                           sigma=0.25)
    with plane.job(x, output=tmp_path / "certified.jsonl", n0=10, n=100) as job:
        list(job)
    ml = certifier.load(save(ml_classifier_model(np.eye(4, 2, dtype=np.float32), [0, 1]), tmp_path / "ml.onnx"),
                        plugin="rs", sigma=0.25)
    jobs = [attack(plane, x, n0=10, n=100, radii=(0.1,), certified=tmp_path / "certified.jsonl"),
            attack(ml, x, n0=10, n=100, radii=(0.1,))]
    assert jobs[1].search.note
    return [json.loads(json.dumps(job.header)) for job in jobs]


def test_every_header_key_written_is_classified(tmp_path):
    headers = _headers(tmp_path)
    written = set().union(*headers)
    assert written - set(HEADER_KEYS) == set()
    # and the table names nothing no header holds (the denoiser's keys only with a denoiser)
    assert set(HEADER_KEYS) - written == set()
    assert set(HEADER_KEYS.values()) == {IDENTITY, DERIVED, LOCATION}
    # the results files of earlier versions hold no key outside the table either
    for fixture in ("fixed-rs.jsonl", "fixed-drs.jsonl"):
        assert set(header_of(FIXTURES / fixture)) - {"type"} <= set(HEADER_KEYS)
    assert set(json.loads((FIXTURES / "fixed-uniform.tsv.header.json").read_text())) <= set(HEADER_KEYS)


def test_resume_and_workers_read_the_one_table():
    from certifier.remote import WHERE_NOT_WHAT
    from certifier.results import settings_differ

    identity = {k for k, kind in HEADER_KEYS.items() if kind == IDENTITY}
    assert set(IDENTITY_KEYS) | set(RECORDED_LATER) | set(IMPLIED_WHEN_ABSENT) == identity
    base = {key: f"value of {key}" for key in HEADER_KEYS}
    for key, kind in HEADER_KEYS.items():
        differs = bool(settings_differ(base, {**base, key: "another"}))
        assert differs == (kind == IDENTITY), key  # resume: identity keys alone
    # a worker compares every key but the locations (and the data's hash: it only gets inputs)
    assert set(WHERE_NOT_WHAT) == {k for k, kind in HEADER_KEYS.items() if kind == LOCATION} | {"data_sha256"}
    assert set(INCIDENTAL_KEYS) == set(WHERE_NOT_WHAT) - {"data_sha256"} | {"certifier_version"}


def test_a_newer_certify_resumes_an_older_file_but_a_worker_of_another_version_refuses(plane):
    """certifier_version is derived: resume does not compare it, a Ray worker does."""
    from certifier.remote import build_engine, read_parts, worker_spec

    out = plane / "r.jsonl"
    base = ["--plugin", "rs", "--sigma", "0.25", plane / "plane.onnx", "--data", plane / "d.npz", "-n", "50",
            "--n0", "10", "-q", "--output", out]
    invoke(*base, "--limit", "2")
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])
    header["certifier_version"] = "0.0.1"
    out.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    invoke(*base)
    assert len(out.read_text().splitlines()) == 6
    run = certifier.load(plane / "plane.onnx", plugin="rs", sigma=0.25)
    with run.job(plane / "d.npz", n0=10, n=50, limit=1) as job:
        spec, paths = worker_spec(job, device="cpu", threads=1, workers=None)
    spec.identity["certifier_version"] = "0.0.1"
    with pytest.raises(certifier.CertifyError, match="differs from the driver's in certifier_version"):
        build_engine(spec, {sha: read_parts(p) for sha, p in paths.items()})


# -- item 1: records checked once ------------------------------------------------------------------


@pytest.mark.parametrize("args, values", [
    (["--limit", "0"], {"limit": 0}),
    (["--skip", "0"], {"skip": 0}),
    (["--seed", "-1"], {"seed": -1}),
    (["--alpha", "1.5"], {"alpha": 1.5}),
    (["-n", str(10**16)], {"n": 10**16}),
    (["--threads", "0"], {"threads": 0}),
    (["--workers", "2000"], {"workers": 2000}),
    (["--radius", "0.5", "--sampling", "fixed"], {"radius": 0.5, "sampling": "fixed"}),
    (["--radius", "-1"], {"radius": -1.0}),
    (["--radii", "0,inf", "--sampling", "sequential"], {"radii": (0, float("inf")), "sampling": "sequential"}),
])
def test_the_command_line_and_the_api_refuse_a_setting_in_the_same_words(plane, args, values):
    result = invoke("-p", "rs", "-s", "0.25", plane / "plane.onnx", "--data", plane / "d.npz", *args,
                    expect_ok=False)
    with pytest.raises(certifier.CertifyError) as error:
        certifier.certify(plane / "plane.onnx", plane / "d.npz", plugin="rs", sigma=0.25, **values)
    assert result.exit_code == 1 and f"Error: {error.value}" in result.output.splitlines()


def test_records_say_which_setting_is_unknown_or_of_the_wrong_type(plane):
    run = certifier.load(plane / "plane.onnx", plugin="rs", sigma=0.25)
    with pytest.raises(TypeError, match=r"job\(\) got an unexpected keyword argument 'nn'"):
        run.job(plane / "d.npz", nn=5)
    with pytest.raises(TypeError, match=r"load\(\) got an unexpected keyword argument 'sigmaa'"):
        certifier.load(plane / "plane.onnx", sigmaa=0.25)
    with pytest.raises(certifier.CertifyError, match=r"^--sigma: input should be a valid number"):
        ModelSettings(sigma="a quarter")
    settings = JobSettings(n=1e3, seed=np.uint64(4))
    assert (settings.n, settings.seed) == (1000, 4) and settings.replace(n=10).seed == 4
    with pytest.raises(certifier.CertifyError, match="--n0 must be a whole number"):
        settings.replace(n0=2.5)


def test_api_signatures_list_the_records_fields():
    import inspect

    for function, records in ((certifier.load, [ModelSettings]), (certifier.Run.job, [JobSettings]),
                              (certifier.certify, [ModelSettings, JobSettings])):
        parameters = inspect.signature(function).parameters
        for record in records:
            for name, field in record.model_fields.items():
                assert name in parameters, (function.__name__, name)
                if name not in ("settings",):
                    assert parameters[name].default == field.default, (function.__name__, name)


def test_each_default_is_written_once():
    """n = 100,000 and alpha = 0.001 were written seven times each, in the signatures the settings
    went through; now no function of the core or the built-in plugins gives a job setting a
    default of its own (None, "not given", aside): the record's field is the one place."""
    job_fields = {"n0", "n", "alpha", "skip", "sampling"}  # ("limit", "seed": other functions have their own)
    found = []
    for path in [*(ROOT / "certifier").glob("*.py"), *(ROOT / "plugins").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            positional = node.args.posonlyargs + node.args.args
            pairs = [*zip(positional[len(positional) - len(node.args.defaults):], node.args.defaults),
                     *zip(node.args.kwonlyargs, node.args.kw_defaults)]
            found += [f"{path.name}:{node.name}({arg.arg}={ast.unparse(default)})" for arg, default in pairs
                      if arg.arg in job_fields and default is not None
                      and not (isinstance(default, ast.Constant) and default.value is None)]
    assert found == []
    assert (JobSettings().n, JobSettings().alpha, JobSettings().n0) == (100_000, 0.001, 100)


# -- item 2: options made from the records -------------------------------------------------------


def _options(command_name: str) -> dict[str, click.Option]:
    ctx = click.Context(cli)
    command = cli.get_command(ctx, command_name)
    return {p.name: p for p in command.params if isinstance(p, click.Option)}


@pytest.mark.parametrize("command, records", [
    ("run", [ModelSettings, JobSettings, RaySettings]), ("predict", [ModelSettings, JobSettings, RaySettings]),
    ("train", [TrainingSettings]), ("train-denoiser", [TrainingSettings]),
])
def test_every_option_is_its_fields(command, records):
    options = _options(command)
    for record in records:
        for name, flag in record.flags().items():
            option = options[name]
            assert set(option.opts) | set(option.secondary_opts) == set(flag.declarations), name
            field = record.model_fields[name]
            if not field.is_required() and not flag.multiple and field.default is not None:
                assert option.default == field.default, name
            if flag.range is not None:
                assert isinstance(option.type, (click.IntRange, click.FloatRange)), name
                assert (option.type.min, option.type.max) == (flag.range.low, flag.range.high), name


def test_device_and_training_options_are_one_list_and_one_text():
    run, train, denoise = _options("run"), _options("train"), _options("train-denoiser")
    for options in (run, train, denoise):
        assert tuple(options["device"].type.choices) == DEVICES
    for name in TrainingSettings.flags():
        assert train[name].help == denoise[name].help, name
    for name in ("scale", "mean", "std", "layout", "output_name"):
        assert denoise[name].help == run[name].help, name
    assert run["seed"].help == train["seed"].help == denoise["seed"].help


def test_training_seeds_are_refused_as_run_seeds_are(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.arange(4) % 2)
    common = ["--data", tmp_path / "d.npz", "--out", tmp_path / "m.onnx", "--seed", str(2**63)]
    train = invoke("train", "-p", "rs", "-s", "0.1", *common, expect_ok=False)
    denoise = invoke("train-denoiser", "-s", "0.1", *common, expect_ok=False)
    for result in (train, denoise):
        assert result.exit_code == 1 and "Error: --seed must be between 0 and 2^63 - 1" in result.output
    assert list(tmp_path.iterdir()) == [tmp_path / "d.npz"]


# -- item 2: the Python API has what the command line has ----------------------------------------


def test_radius_in_the_api_is_the_command_lines(plane):
    cli_out, api_out = plane / "cli.jsonl", plane / "api.jsonl"
    invoke("-p", "rs", "-s", "0.25", plane / "plane.onnx", "--data", plane / "d.npz", "-n", "500", "--n0", "10",
           "--radius", "0.1", "-q", "--output", cli_out)
    run = certifier.load(plane / "plane.onnx", plugin="rs", sigma=0.25)
    with run.job(plane / "d.npz", n=500, n0=10, radius=0.1, output=api_out) as job:
        results = list(job)
    assert job.header["sampling"] == "sequential" and job.header["sampling_settings"]["levels"] == [0.1]
    assert {r.radius for r in results} <= {0.0, 0.1}
    assert list(job.summary()["certified_accuracy"]) == ["0.1"]  # the summary's radii: the decision's

    def comparable(path):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        header = {k: v for k, v in rows[0].items() if k not in INCIDENTAL_KEYS}
        return header, [{k: v for k, v in r.items() if k != "seconds"} for r in rows[1:]]

    assert comparable(api_out) == comparable(cli_out)


def test_a_batch_size_of_one_lets_the_api_run_a_batch_coupled_model_as_the_command_line_does(tmp_path):
    path = save(batch_mixing_model(16, 4, 4), tmp_path / "coupled.onnx")
    x = np.random.default_rng(3).random((2, 16)).astype(np.float32)
    with pytest.raises(certifier.CertifyError, match="--batch-size 1"):
        certifier.load(path, plugin="rs", sigma=0.5)
    results = certifier.certify(path, x, plugin="rs", sigma=0.5, n0=10, n=50, batch_size=1)
    assert len(results) == 2
    assert RunSettings.from_values({"batch_size": 1}).model.allow_batch_coupling is True
    assert RunSettings.from_values({"batch_size": 2}).model.allow_batch_coupling is None


class _HereExecutor:
    """An executor that runs the engine here, but says how the driver opens the model, as Ray's does."""

    device = "elsewhere (test)"

    def __init__(self):
        self.calls = 0

    def driver_settings(self, settings):
        return settings.replace(device="cpu", threads=1)

    def __call__(self, job, indices):
        self.calls += 1
        yield from job.engine.run(job.dataset, indices, labels=job.dataset.label, mode=job.mode)


def test_the_executor_chooses_how_the_driver_opens_the_model(plane):
    executor = _HereExecutor()
    run = certifier.load(plane / "plane.onnx", plugin="rs", sigma=0.25, device="auto", threads=2, executor=executor)
    assert (run.settings.device, run.settings.threads, run.model.device) == ("cpu", 1, "cpu")
    with run.job(plane / "d.npz", n0=10, n=50) as job:  # the run's executor by default
        results = list(job)
    assert executor.calls == 1 and len(results) == 5 and job.header["device"] == executor.device


def test_the_run_says_where_sigma_came_from(plane, tmp_path):
    assert certifier.load(plane / "plane.onnx", plugin="rs", sigma=0.25).sigma_source == "given"
    assert certifier.load(MODELS / "fmnist-rs-0.25.onnx").sigma_source == "model"
    assert certifier.load(MODELS / "fmnist-translation-3.onnx").sigma_source is None  # a method without sigma
    denoiser = save(identity_denoiser(shape=(1, 28, 28), metadata=sigma_metadata(0.5)), tmp_path / "identity.onnx")
    run = certifier.load(MODELS / "fmnist-plain.onnx", plugin="rs", denoiser=denoiser)
    assert (run.sigma_source, run.method.sigma) == ("denoiser", 0.5)
    result = invoke(MODELS / "fmnist-plain.onnx", "-p", "rs", "--denoiser", denoiser, "--data", SAMPLES, "--limit",
                    "1", "-n", "20", "--n0", "5")
    assert "certify: sigma 0.5 from the denoiser's metadata" in result.output


# -- item 4: the command line only reads options and prints ---------------------------------------


def test_the_command_line_decides_nothing_the_api_lacks():
    source = (ROOT / "certifier" / "cli.py").read_text()
    imported = _imports(ROOT / "certifier" / "cli.py", {p.stem for p in (ROOT / "certifier").glob("*.py")})
    assert not imported & {"metadata", "job", "engine", "model", "sampling", "space", "outputs", "data"}
    assert "rest.update" not in source and "recorded_sigma" not in source and "allow_batch_coupling" not in source
    assert len(source.splitlines()) < 300


# -- item 5: layers --------------------------------------------------------------------------------


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The certifier modules ``path`` imports at run time (inside functions too; not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            found |= {name if name in modules else "__init__" for name in names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("certifier"):
            parts = node.module.split(".")
            found.add(parts[1] if len(parts) > 1 and parts[1] in modules else "__init__")
    return found


def test_certifier_has_no_import_circles():
    """No module imports one that imports it back, directly or through others (the package's
    __init__ included: job.py -> certifier/__init__ -> api.py -> job.py was one)."""
    paths = {(p.stem if p.stem != "__init__" else "__init__"): p for p in (ROOT / "certifier").glob("*.py")}
    graph = {name: _imports(path, set(paths)) & set(paths) for name, path in paths.items()}
    circles = []

    def visit(name, trail):
        for target in graph[name]:
            if target in trail:
                circles.append(trail[trail.index(target):] + [target])
            elif target not in done:
                visit(target, trail + [target])
        done.add(name)

    done: set[str] = set()
    for name in graph:
        if name not in done:
            visit(name, [name])
    assert circles == []


def test_plugin_calls_are_guarded_below_the_api_and_the_engine():
    guard = ROOT / "certifier" / "guard.py"
    assert _imports(guard, {"api", "engine", "job", "planning"}) & {"api", "engine", "job", "planning"} == set()
    for name in ("api.py", "engine.py", "planning.py"):
        assert "guard" in _imports(ROOT / "certifier" / name, {"guard"})


def test_the_core_holds_no_copies_of_plugin_rules():
    """The vectorized simulator's radius formulas (copies of rs's and uniform's) are a test helper."""
    import certifier.sequential

    for name in ("gaussian_radius_of", "l1_radius_of", "simulate_one_bound", "earliest_proof"):
        assert not hasattr(certifier.sequential, name)
    from certifier import data, resources

    assert data.available_memory is resources.available_memory
