"""Commands that write files never destroy what is not their own output: devices, named pipes,
folders, symbolic links, or the command's own inputs (train, train-denoiser, show, report --plot).

Devices are private ones made in tmp_path (mknod), never the machine's /dev files."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from click.testing import CliRunner

from certifier.cli import cli


def private_device(folder):
    """A character device like /dev/full (1, 7), made inside a test folder."""
    path = folder / "full"
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 7))
    except (PermissionError, AttributeError):
        pytest.skip("making a device node needs root")
    return path


@pytest.fixture
def images(tmp_path):
    """Twenty labelled 8x8 images (for the training commands, which need torch)."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), y_train=np.arange(20) % 2)
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_refused(result, *words):
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and "unexpected" not in line and "Traceback" not in result.output, line
    for word in words:
        assert word in line, line


TRAIN = ("train", "-q", "--plugin", "rs", "--sigma", "0.25", "--epochs", "1", "--width", "1")
DENOISE = ("train-denoiser", "-q", "--sigma", "0.25", "--epochs", "1", "--depth", "2", "--features", "1")
COMMANDS = {"train": TRAIN, "train-denoiser": DENOISE}


@pytest.mark.parametrize("command", COMMANDS)
def test_out_a_device_is_refused_and_left_a_device(command, images, tmp_path):
    device = private_device(tmp_path)
    result = invoke(*COMMANDS[command], "--data", images, "--out", device)
    assert_refused(result, f"--out {device} is a character device")
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "images.npz"]  # no checkpoint beside it


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("option", ["--out", "--checkpoint"])
def test_the_training_data_is_never_overwritten(command, option, images, tmp_path):
    before = images.read_bytes()
    out = ["--out", tmp_path / "model.onnx"] if option == "--checkpoint" else []
    result = invoke(*COMMANDS[command], "--data", images, *out, option, images)
    assert_refused(result, f"{option} {images} is the same file as --data")
    assert images.read_bytes() == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_hard_link_to_the_data_is_the_data(command, images, tmp_path):
    os.link(images, tmp_path / "model.onnx")
    result = invoke(*COMMANDS[command], "--data", images, "--out", tmp_path / "model.onnx")
    assert_refused(result, "is the same file as --data")


@pytest.mark.parametrize("command", COMMANDS)
def test_out_and_checkpoint_cannot_be_one_file(command, images, tmp_path):
    out = tmp_path / "model.onnx"
    result = invoke(*COMMANDS[command], "--data", images, "--out", out, "--checkpoint", out)
    assert_refused(result, "--checkpoint", "is the same file as --out")


def test_the_classifier_of_stability_training_is_never_overwritten(images, tmp_path):
    classifier = tmp_path / "classifier.onnx"
    classifier.write_bytes(b"the user's model")
    for option in ("--out", "--checkpoint"):
        out = ["--out", tmp_path / "d.onnx"] if option == "--checkpoint" else []
        result = invoke(*DENOISE, "--loss", "stability", "--classifier", classifier, "--data", images, *out,
                        option, classifier)
        assert_refused(result, f"{option} {classifier} is the same file as --classifier")
    assert classifier.read_bytes() == b"the user's model"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", ["fifo", "folder", "link to a device", "link to the data"])
def test_other_things_at_the_checkpoint_path_are_refused(command, kind, images, tmp_path):
    checkpoint = tmp_path / "model.onnx.ckpt"
    if kind == "fifo":
        os.mkfifo(checkpoint)
    elif kind == "folder":
        checkpoint.mkdir()
    else:
        checkpoint.symlink_to(private_device(tmp_path) if kind == "link to a device" else images)
    result = invoke(*COMMANDS[command], "--data", images, "--out", tmp_path / "model.onnx")
    assert_refused(result, f"--checkpoint {checkpoint} is")
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_named_like_a_temporary_is_left_alone(command, images, tmp_path):
    """The model and checkpoint are written to new temporary names, never to OUT.tmp."""
    out = tmp_path / "model.onnx"
    for name in ("model.onnx.tmp", "model.onnx.ckpt.tmp"):
        (tmp_path / name).write_text("the user's notes")
    result = invoke(*COMMANDS[command], "--data", images, "--out", out)
    assert result.exit_code == 0, result.output
    for name in ("model.onnx.tmp", "model.onnx.ckpt.tmp"):
        assert (tmp_path / name).read_text() == "the user's notes"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == [
        "model.onnx.ckpt.tmp", "model.onnx.tmp"]  # no temporary of ours is left
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # an ordinary new file, not a private one


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("command", COMMANDS)
def test_a_checkpoint_that_is_not_one_is_one_line(command, images, tmp_path):
    (tmp_path / "model.onnx.ckpt").write_text("the user's notes")
    result = invoke(*COMMANDS[command], "--data", images, "--out", tmp_path / "model.onnx")
    assert_refused(result, "is not a checkpoint of certify", "--restart")
    assert (tmp_path / "model.onnx.ckpt").read_text() == "the user's notes"


def test_show_never_overwrites_its_data_or_model(tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((2, 8, 8), dtype=np.uint8))
    before = data.read_bytes()
    assert_refused(invoke("show", "--plugin", "rs", "--sigma", "0.5", data, "--out", data),
                   f"--out {data} is the same file as DATA")
    assert data.read_bytes() == before
    device = private_device(tmp_path)
    assert_refused(invoke("show", "--plugin", "rs", "--sigma", "0.5", data, "--out", device), "is a character device")


def test_report_plot_never_overwrites_a_results_file(tmp_path):
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "fixed-rs.jsonl"
    results = tmp_path / "run.jsonl"
    results.write_bytes(fixture.read_bytes())
    assert_refused(invoke("report", results, "--plot", results), f"--plot {results} is the same file as FILES")
    assert results.read_bytes() == fixture.read_bytes()
    cohen = tmp_path / "run.tsv"
    for suffix in ("", ".header.json"):
        source = Path(__file__).parent / "fixtures" / f"fixed-uniform.tsv{suffix}"
        (tmp_path / f"run.tsv{suffix}").write_bytes(source.read_bytes())
    sidecar = tmp_path / "run.tsv.header.json"
    assert_refused(invoke("report", cohen, "--plot", sidecar), "is the same file as FILES")


# -- the guard itself ----------------------------------------------------------------


def test_the_guard_allows_new_files_and_earlier_outputs(tmp_path):
    from certifier import check_output_file

    check_output_file(tmp_path / "new" / "model.onnx", "--out")  # a new folder is made when writing
    (tmp_path / "old.onnx").write_text("an earlier model")
    check_output_file(tmp_path / "old.onnx", "--out", [("--data", tmp_path / "data.npz"), ("--classifier", None)])


def test_the_guard_refuses_a_path_under_a_file(tmp_path):
    from certifier import CertifyError, check_output_file

    (tmp_path / "data.npz").write_text("")
    with pytest.raises(CertifyError, match="data.npz is not a folder"):
        check_output_file(tmp_path / "data.npz" / "model.onnx", "--out")


def test_the_guard_refuses_a_dangling_link(tmp_path):
    from certifier import CertifyError, check_output_file

    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(CertifyError, match="is a symbolic link to"):
        check_output_file(tmp_path / "link", "--out")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from certifier import replacing_file

    path = tmp_path / "model.onnx"
    path.write_text("the earlier model")
    with pytest.raises(RuntimeError):
        with replacing_file(path) as temporary:
            temporary.write_text("half a model")
            raise RuntimeError("killed")
    assert path.read_text() == "the earlier model" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    with replacing_file(path) as temporary:
        temporary.write_text("the new model")
    assert path.read_text() == "the new model" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
