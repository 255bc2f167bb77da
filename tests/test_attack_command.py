"""certify attack on the command line: the same options as certify run, made from the settings
records; a resumable results file that certify report reads; refusals in one line; a soundness
alarm is loud and fails the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import certifier
from certifier.attack_results import read_attack_results
from certifier.cli import cli
from certifier.header import HEADER_KEYS

from onnx_models import hyperplane_model, save

pytest.importorskip("torch")
from certifier_plugins.attack import ALARM_EXIT, AttackSettings, open_attack  # noqa: E402

#: Class 1 inputs at distances 0.2, 0.3, 0.25 and 0.35 from the hyperplane x_0 = 0.5 (sigma 0.25).
DISTANCES = (0.2, 0.3, 0.25, 0.35)
RADII = "0.1,0.45"
QUICK = ["-n", "5000", "--n0", "1000", "--device", "cpu", "-q"]
SEARCH = ["--attack-steps", "10", "-m", "8"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def plane(tmp_path):
    save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    x = np.full((len(DISTANCES), 4), 0.5, dtype=np.float32)
    x[:, 0] += np.array(DISTANCES, dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.ones(len(x), dtype=np.int64))
    return tmp_path


def model_and_data(tmp_path):
    return [tmp_path / "plane.onnx", "-p", "rs", "-s", "0.25", "-d", tmp_path / "d.npz"]


def certify_file(tmp_path) -> str:
    result = invoke("run", *model_and_data(tmp_path), *QUICK, "--output", tmp_path / "certified.jsonl")
    assert result.exit_code == 0, result.output
    return str(tmp_path / "certified.jsonl")


def attack_args(tmp_path, *more):
    return ["attack", *model_and_data(tmp_path), *QUICK, *SEARCH, "--radii", RADII, *more]


def test_certify_then_attack_then_report(plane):
    certified = certify_file(plane)
    output = plane / "attack.jsonl"
    result = invoke(*attack_args(plane, "--certified", certified, "--output", output))
    assert result.exit_code == 0, result.output
    assert "empirical robust accuracy r >= 0.45" in result.output and "SOUNDNESS" not in result.output
    header, records = read_attack_results(output)
    # every key of the attack's header is classified (identity, derived, location) for resume
    assert set(header) - {"type"} <= set(HEADER_KEYS) and HEADER_KEYS["attack"] == "identity"
    assert header["attack"]["steps"] == 10 and header["attack"]["noise_samples"] == 8 and header["n"] == 5000
    assert header["attack"]["radii"] == [0.1, 0.45] and header["certified"] == certified
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    report = invoke("report", certified, output, "--json")
    assert report.exit_code == 0, report.output
    summary = json.loads(report.output)[certified]
    # every input is 0.35 or less from the boundary: certified at 0.1, moved (confirmed) within 0.45
    assert summary["certified_accuracy"]["0.0"] == 1.0
    assert summary["empirical_accuracy"] == {"0.0": 1.0, "0.1": 1.0, "0.45": 0.0}
    assert summary["soundness_alarms"] == 0 and summary["alarms_checked"] == 4


def test_the_command_is_one_call_of_the_api(plane):
    """open_attack with the command's settings writes the same records."""
    invoke(*attack_args(plane, "--no-bare", "--output", plane / "cli.jsonl"))
    with open_attack(plane / "plane.onnx", plane / "d.npz", plugin="rs", sigma=0.25, n=5000, n0=1000,
                     device="cpu", attack_steps=10, noise_samples=8, radii=(0.1, 0.45), bare=False,
                     output=plane / "api.jsonl") as job:
        job.run_all()
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    cli_header, cli_records = read_attack_results(plane / "cli.jsonl")
    api_header, api_records = read_attack_results(plane / "api.jsonl")
    assert [strip(r) for r in cli_records] == [strip(r) for r in api_records]
    assert cli_header["attack"] == api_header["attack"] and cli_header["attack"]["bare"] is False


def test_an_interrupted_attack_resumes(plane):
    output = plane / "attack.jsonl"
    assert invoke(*attack_args(plane, "--output", plane / "whole.jsonl")).exit_code == 0
    assert invoke(*attack_args(plane, "--limit", "2", "--output", output)).exit_code == 0
    # killed while writing the third record: half a line
    third = (plane / "whole.jsonl").read_text().splitlines()[3]
    with output.open("a") as file:
        file.write(third[:len(third) // 2])
    result = invoke(*attack_args(plane, "--output", output))
    assert result.exit_code == 0, result.output
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert ([strip(r) for r in read_attack_results(output)[1]]
            == [strip(r) for r in read_attack_results(plane / "whole.jsonl")[1]])
    other = invoke(*attack_args(plane, "--attack-steps", "5", "--output", output))
    assert other.exit_code == 1 and "holds results for other settings" in other.output


def test_a_certify_file_with_inflated_radii_sounds_the_alarm(plane):
    """A mutant certify file, every radius 60% larger: the attack moves each input within its
    claimed radius, confirms it twice, and the command says so loudly and exits 3."""
    certified = certify_file(plane)
    lines = (plane / "certified.jsonl").read_text().splitlines()
    mutant = [lines[0]]
    for line in lines[1:]:
        record = json.loads(line)
        record["radius"] *= 1.6
        mutant.append(json.dumps(record))
    (plane / "mutant.jsonl").write_text("\n".join(mutant) + "\n")
    result = invoke(*attack_args(plane, "--certified", plane / "mutant.jsonl", "--output", plane / "a.jsonl"))
    assert result.exit_code == ALARM_EXIT
    loud = [line for line in result.output.splitlines() if "SOUNDNESS ALARM" in line]
    assert len(loud) == 1 and "certificates checked were broken below their radius" in loud[0]
    _, records = read_attack_results(plane / "a.jsonl")
    assert sum(bool(r.get("alarm")) for r in records) >= 2
    assert read_summary(plane / "a.jsonl")["alarm_p_value"] < 0.001
    # the honest file raises none
    assert invoke(*attack_args(plane, "--certified", certified, "--output", plane / "b.jsonl")).exit_code == 0


def test_one_alarm_that_sound_certificates_raise_by_chance_is_loud_but_does_not_fail(plane):
    """One inflated radius of four (the input farthest from the plane, whose radius grows past
    the grid's 0.45, where the attack crosses): one alarm, which sound certificates at the two alphas
    (0.002) raise among four inputs with probability up to 0.008, more than alpha 0.001: printed
    with its odds, exit 0. Two or more alarms (the test above) are below alpha and fail."""
    certify_file(plane)
    lines = (plane / "certified.jsonl").read_text().splitlines()
    last = json.loads(lines[4])
    assert last["index"] == 3
    last["radius"] *= 1.6
    (plane / "one.jsonl").write_text("\n".join([*lines[:4], json.dumps(last)]) + "\n")
    result = invoke(*attack_args(plane, "--certified", plane / "one.jsonl", "--output", plane / "a.jsonl"))
    summary = read_summary(plane / "a.jsonl")
    assert summary["soundness_alarms"] == 1 and summary["alarms_checked"] == 4
    assert summary["alarm_p_value"] == pytest.approx(1 - 0.998**4)
    assert result.exit_code == 0, result.output
    line = [line for line in result.output.splitlines() if line.lower().startswith("certify: soundness alarm")]
    assert "1 (4, p 0.008)" in result.output
    assert len(line) == 1 and "SOUNDNESS" not in line[0] and "probability up to 0.008" in line[0]
    assert "inputs 3;" in line[0]


@pytest.mark.parametrize("change,problem", [
    ({"attack": 5}, "attack is not a JSON object"),
    ({"attack": {"radii": "0.1"}}, 'attack radii "0.1" is not a list of non-negative numbers'),
    ({"attack": {"radii": [0.1, None]}}, "attack radii [0.1, null] is not a list"),
    ({"attack": {"radii": [0.1], "certified_alpha": 2}}, "attack certified_alpha 2 is not a probability"),
])
def test_report_refuses_a_malformed_attack_header_in_one_line(plane, change, problem):
    output = plane / "attack.jsonl"
    assert invoke(*attack_args(plane, "--output", output)).exit_code == 0
    lines = output.read_text().splitlines()
    header = {**json.loads(lines[0]), **change}
    output.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    result = invoke("report", output)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert problem in result.output and "line 1" in result.output and "Traceback" not in result.output


def read_summary(path):
    from certifier.attack_results import summarize_attack

    return summarize_attack(*read_attack_results(path))


def unconvertible(tmp_path):
    from onnx_models import ml_classifier_model

    coefficients = np.zeros((4, 2), dtype=np.float32)
    coefficients[0], coefficients[1] = [-1, 1], [1, -1]
    return save(ml_classifier_model(coefficients, [0, 1]), tmp_path / "ml.onnx")


@pytest.mark.parametrize("change, message", [
    (lambda p: ["--gradient", "torch", "--model-file", unconvertible(p)],
     "onnx2torch cannot convert ml.onnx to torch"),
    (lambda p: ["--attack-steps", "0"], "Invalid value for '--attack-steps'"),
    (lambda p: ["--gradient", "magic"], "Invalid value for '--gradient'"),
    (lambda p: ["--radii", "0.1,-1"], "--radii must be finite numbers >= 0"),
    (lambda p: ["--certified", p / "d.npz"], "d.npz"),
    (lambda p: ["--output", p / "d.npz"], "--output"),
])
def test_refusals_are_one_line(plane, change, message):
    args = attack_args(plane, *change(plane))
    if "--model-file" in args:  # another model in place of the plane
        at = args.index("--model-file")
        model = args[at + 1]
        args = ["attack", model, *args[2:at], *args[at + 2:]]
    result = invoke(*args)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1
    assert (plane / "d.npz").stat().st_size > 0


def test_the_attack_record_refuses_what_certify_alone_takes():
    with pytest.raises(certifier.CertifyError, match="--attack-steps must be a whole number from 1 to 100000"):
        AttackSettings(attack_steps=0)
    from certifier.attack_job import attack_settings

    with pytest.raises(certifier.CertifyError, match="takes no sampling"):
        attack_settings(certifier.settings.JobSettings(sampling="sequential"))


def test_every_option_is_a_field_of_the_records():
    """The command's options are made from ModelSettings, the job's fields an attack takes and
    AttackSettings: the same names, defaults and ranges as the API's keywords."""
    import click

    from certifier import AttackJob, JobSettings, ModelSettings

    command = cli.get_command(click.Context(cli), "attack")
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    job_fields = [n for n in AttackJob.job_fields if n != "indices"]
    for record, names in ((ModelSettings, list(ModelSettings.flags())), (JobSettings, job_fields),
                          (AttackSettings, list(AttackSettings.flags()))):
        for name in names:
            flag, option = record.flags()[name], options[name]
            declared = {d for declaration in flag.declarations for d in declaration.split("/")}
            assert set(option.opts) | set(option.secondary_opts) == declared, name
            default = record.model_fields[name].default
            if default is not None and not isinstance(default, dict):
                assert option.default == default, name
    assert set(options) - {*ModelSettings.flags(), *job_fields, *AttackSettings.flags()} == {
        "data_path", "split", "output", "quiet"}


def test_a_certify_file_with_records_its_run_could_not_have_written_is_refused(plane):
    """A radius above the run's ceiling certifies nothing in a summary; as --certified it would leave
    that certificate unchecked, so the attack refuses the file in one line."""
    certified = Path(certify_file(plane))
    lines = certified.read_text().splitlines()
    record = json.loads(lines[1])
    record["radius"] = 10.0
    certified.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    result = invoke(*attack_args(plane, "--certified", certified, "--output", plane / "attack.jsonl"))
    assert result.exit_code == 1 and "holds records its certify run could not have written" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_every_identity_key_of_the_classifier_is_compared_with_the_certify_file():
    """A certify file made through another diffusion step (or any classifier setting the header
    table calls identity) is another smoothed classifier, so its certificates are not checked."""
    from certifier.attack_results import classifier_difference

    for key in ("timestep", "schedule", "data_range", "model_sha256", "denoiser_kind"):
        assert classifier_difference({key: 1}, {key: 2}).startswith(key)
    assert classifier_difference({"n": 100, "seed": 1}, {"n": 200, "seed": 2}) is None


def test_sigterm_mid_attack_keeps_the_records_and_a_rerun_resumes(tmp_path):
    """SIGTERM while inputs are attacked: one line saying where the records are, exit 130, the
    records written kept; the same command resumes them into what an uninterrupted run writes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    count = 40
    save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    x = np.full((count, 4), 0.5, dtype=np.float32)
    x[:, 0] += np.linspace(0.2, 0.4, count, dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.ones(count, dtype=np.int64))
    command = ["attack", *model_and_data(tmp_path), *QUICK, *SEARCH, "--radii", RADII]
    output = tmp_path / "attack.jsonl"
    environment = {k: v for k, v in os.environ.items() if k != "CERTIFY_DEBUG"}
    script = "from certifier.cli import cli; cli(prog_name='certify')"
    process = subprocess.Popen([sys.executable, "-c", script, *map(str, command), "--output", str(output)],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=environment)
    try:
        deadline = time.monotonic() + 120
        while (not output.exists() or output.read_text().count('"type": "attack"') < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    written = len(read_attack_results(output)[1])
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr
    assert f"interrupted; {written} records are in {output}, rerun the same command to resume" in lines[0]
    assert 2 <= written < count, "the attack was not stopped mid-run"
    assert invoke(*command, "--output", output).exit_code == 0
    assert invoke(*command, "--output", tmp_path / "whole.jsonl").exit_code == 0
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds",)}  # noqa: E731
    assert ([strip(r) for r in read_attack_results(output)[1]]
            == [strip(r) for r in read_attack_results(tmp_path / "whole.jsonl")[1]])
