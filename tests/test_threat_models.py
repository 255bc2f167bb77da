"""Threat models: every certificate names what its radius bounds, in which units, everywhere it is shown.

Results headers and records carry it, ``certify report`` groups runs by it and shows radii
in its units (factor ranges for contrast and gamma, pixels for shifts), ``certify plugins``
lists it, files written before it existed still read as the pixel norm they name, and a
plugin declares its own through the public API.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import certifier
from certifier import SmoothingMethod, ThreatModel, gaussian_certificate, gaussian_views
from certifier.cli import cli
from certifier.plugins import get_methods

from onnx_models import hyperplane_model, linear_model, save

FAST = ["--n0", "10", "-n", "60", "-q"]


def invoke(*args, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def runs(tmp_path):
    """Results files of rs, brightness, contrast and translation on one small image model."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(36, 3)).astype(np.float32)
    model = save(linear_model(weights, np.zeros(3), (1, 6, 6)), tmp_path / "m.onnx")
    x = rng.random((5, 1, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.argmax(x.reshape(5, -1) @ weights, axis=1))
    files = {}
    for name, args in [("rs", ["-s", "0.1", *FAST]), ("brightness", ["-s", "0.2", *FAST]),
                       ("contrast", ["-s", "0.2", *FAST]), ("translation", ["-o", "k", "1", "-q"])]:
        files[name] = tmp_path / f"{name}.jsonl"
        invoke("--plugin", name, *args, model, "--data", tmp_path / "d.npz", "--output", files[name])
    return files


def test_results_headers_and_records_name_the_threat_model(runs):
    expected = {"rs": ("l2", "l2", "distance"), "brightness": ("brightness", "brightness", "distance"),
                "contrast": ("contrast", "contrast", "factor"), "translation": ("cyclic-shift", "cyclic-shift", "shift")}
    for plugin, path in runs.items():
        header, *records = lines_of(path)
        norm, name, display = expected[plugin]
        assert header["norm"] == norm and header["threat_model"]["name"] == name
        assert header["threat_model"]["display"] == display and header["threat_model"]["unit"]
        for record in records:
            assert record["norm"] == norm and record["threat_model"] == name
            if plugin == "contrast" and record["prediction"] is not None:
                low, high = record["factor_range"]
                assert low <= np.exp(-record["radius"]) * (1 + 1e-12) and high <= np.exp(record["radius"])
                assert low <= 1 <= high
            else:
                assert "factor_range" not in record
    assert lines_of(runs["translation"])[1]["details"]["largest_t_y_by_t_x"]


def test_report_groups_runs_by_threat_model_with_radii_in_its_units(runs):
    text = invoke("report", *runs.values()).output
    headings = [line for line in text.splitlines() if line.startswith("threat model ")]
    assert [h.split(":")[0] for h in headings] == ["threat model l2", "threat model brightness",
                                                   "threat model contrast", "threat model cyclic-shift"]
    tables = text.split("\n\n")
    assert len(tables) == 4
    assert "rs.jsonl" in tables[0] and "brightness.jsonl" not in tables[0]
    # each table's radii are its threat model's own, in its units
    assert "certified accuracy r >= 0.25" in tables[0]
    assert "certified accuracy |b| < 0.2 " in tables[1] and "pixel units" in tables[1]
    assert "certified accuracy factor in [0.8188, 1.2214]" in tables[2]  # r = 0.2: e^-0.2 = 0.81873, e^0.2 = 1.22140
    assert "certified accuracy max(|t_x|, |t_y|) <= 1 px" in tables[3] and "radius ceiling" in tables[3]
    ceiling = next(line for line in tables[3].splitlines() if line.startswith("radius ceiling"))
    # K = 1: all 9 votes agreeing allow 4 changed views: (0, 1) changes 3, (1, 1) changes 5
    assert ceiling.split()[-2:] == ["0", "px"]
    contrast_ceiling = next(line for line in tables[2].splitlines() if line.startswith("radius ceiling"))
    assert contrast_ceiling.strip().endswith("]")
    summaries = json.loads(invoke("report", *runs.values(), "--json").output)
    by_plugin = {s["plugin"]: s for s in summaries.values()}
    assert by_plugin["contrast"]["threat_model"]["display"] == "factor"
    assert by_plugin["contrast"]["factor_ranges"]["0.2"][0] > np.exp(-0.2)
    assert list(by_plugin["translation"]["certified_accuracy"]) == ["0.0", "1.0", "2.0", "3.0", "4.0"]
    assert "factor_ranges" not in by_plugin["rs"]
    # --radii applies to every table
    assert "|b| < 0.3 " in invoke("report", runs["brightness"], "--radii", "0,0.3").output


def test_each_threat_model_keeps_its_own_radii_beside_a_sequential_run(runs, tmp_path):
    """A sequential l2 run's levels join the l2 table only: the other tables keep their own radii."""
    sequential = tmp_path / "sequential.jsonl"
    invoke("--plugin", "rs", "-s", "0.1", "--n0", "10", "-n", "300", "--sampling", "sequential", "--radii",
           "0,0.3,0.6", "-q", tmp_path / "m.onnx", "--data", tmp_path / "d.npz", "--output", sequential)
    text = invoke("report", sequential, runs["rs"], runs["contrast"], runs["translation"]).output
    l2, contrast, shift = text.split("\n\n")

    def rows(table):
        return [line.split("  ")[0] for line in table.splitlines() if line.startswith("certified accuracy")]

    assert rows(l2) == [f"certified accuracy r >= {r}" for r in
                        ("0.0", "0.25", "0.3", "0.5", "0.6", "0.75", "1.0", "1.5", "2.0")]
    factor = get_methods()["contrast"].threat_model
    assert rows(contrast) == [f"certified accuracy {factor.certified_set(r)}" for r in factor.radii]
    assert "factor in [0.5489, 1.8221]" not in contrast  # r = 0.6, the l2 level
    assert rows(shift) == ["certified accuracy max(|t_x|, |t_y|) = 0"] + [
        f"certified accuracy max(|t_x|, |t_y|) <= {k} px" for k in range(1, 5)]
    summaries = json.loads(invoke("report", sequential, runs["contrast"], "--json").output)
    assert list(summaries[str(runs["contrast"])]["certified_accuracy"]) == ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5",
                                                                             "0.75"]
    assert "0.6" in summaries[str(sequential)]["certified_accuracy"]


def test_a_plot_has_one_panel_per_threat_model(runs, tmp_path):
    pytest.importorskip("matplotlib")
    invoke("report", *runs.values(), "--plot", tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_files_written_before_threat_models_read_as_their_norm(runs, tmp_path):
    (tmp_path / "old").mkdir()
    old = tmp_path / "old" / "rs.jsonl"
    lines = []
    for record in lines_of(runs["rs"]):
        record.pop("threat_model", None)
        lines.append(json.dumps(record))
    old.write_text("\n".join(lines) + "\n")
    assert invoke("report", old).output == invoke("report", runs["rs"]).output
    summary = json.loads(invoke("report", old, "--json").output)[str(old)]
    assert summary["threat_model"]["name"] == "l2" and summary["threat_model"]["description"].startswith("L2")
    # a single pixel-norm threat model keeps the table it always had: no heading
    assert not invoke("report", old).output.startswith("threat model")
    # an unknown norm without a threat model is shown by its name, not refused
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(old.read_text().replace('"norm": "l2"', '"norm": "wasserstein"'))
    assert "threat model wasserstein" in invoke("report", unknown, old).output


def test_a_resumed_file_of_an_earlier_version_keeps_going(runs, tmp_path):
    """Files written before threat models existed resume: the threat model is not an identity key."""
    path = runs["rs"]
    header, *records = lines_of(path)
    del header["threat_model"]
    path.write_text("\n".join(json.dumps(r) for r in [header, *records[:2]]) + "\n")
    model, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    invoke("--plugin", "rs", model, "--data", data, "--output", path, "-s", "0.1", *FAST)
    assert len(lines_of(path)) == 1 + 5


def test_plugins_lists_each_methods_threat_model():
    text = invoke("plugins").output
    assert "--plugin brightness:" in text and "threat model brightness: the same shift b" in text
    assert "threat model l2: L2 distance in pixel space" in text
    assert "threat model cyclic-shift" in text and "threat model contrast" in text and "threat model gamma" in text
    described = {m["name"]: m for p in json.loads(invoke("plugins", "--json").output) for m in p["methods"]}
    assert described["rs"]["norm"] == "l2" and described["rs"]["threat_model"]["name"] == "l2"
    assert described["dssn"]["threat_model"]["description"] == "L1 distance in pixel space"
    assert described["gamma"]["threat_model"]["display"] == "factor"
    assert described["translation"]["threat_model"]["unit"] == "pixels"
    assert described["brightness"]["norm"] == "brightness"


# -- a plugin declares its own threat model through the public API --------------------------


class Saturation(SmoothingMethod):
    """The guide's example, reduced: Gaussian noise standing in for a real transformation."""

    name = "saturation-under-test"
    threat_model = ThreatModel("saturation", "every pixel's saturation multiplied by e^s", "factor",
                               "factor (the radius r bounds |s| = |log factor|)", "factor", (0.0, 0.1, 0.2))

    def sample(self, x, rng, group):
        return gaussian_views(x, self.sigma, rng)

    def certify(self, selection, estimation, alpha):
        return gaussian_certificate(selection, estimation, alpha, self.sigma)


def test_a_plugin_declares_a_threat_model(register_methods, tmp_path):
    register_methods(Saturation)
    assert get_methods()["saturation-under-test"].norm == "saturation"
    path = save(hyperplane_model([1, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="saturation-under-test", sigma=0.2)
    x = np.full((3, 4), 0.9, dtype=np.float32)
    with run.job(x, output=tmp_path / "s.jsonl", n0=10, n=100) as job:
        results = list(job)
    assert job.header["threat_model"]["name"] == "saturation"
    assert all(r.threat_model == "saturation" and r.factor_range is not None for r in results)
    assert list(job.summary()["certified_fraction"]) == ["0.0", "0.1", "0.2"]
    assert "factor in" in invoke("report", tmp_path / "s.jsonl").output


def test_bad_threat_models_are_refused(register_methods):
    with pytest.raises(ValueError, match="display of distance, factor, shift"):
        ThreatModel("x", "d", "p", "u", "ratio")
    with pytest.raises(ValueError, match="a name of letters"):
        ThreatModel("two words", "d", "p", "u")
    with pytest.raises(ValueError, match="non-empty unit"):
        ThreatModel("x", "d", "p", " ")

    class Mismatch(Saturation):
        name = "mismatch-under-test"
        norm = "l2"

    register_methods(Mismatch)
    with pytest.raises(certifier.CertifyError, match="sets norm 'l2' but its threat model is named 'saturation'"):
        get_methods()


def test_a_method_without_norm_or_threat_model_is_refused(register_methods):
    class Nothing(SmoothingMethod):
        name = "nothing-under-test"

    register_methods(Nothing)
    with pytest.raises(certifier.CertifyError, match="must set norm to l1, l2 or linf, or declare a certifier.ThreatModel"):
        get_methods()


def test_shown_radii_never_claim_more():
    brightness = get_methods()["brightness"].threat_model
    assert brightness.show(0.43129) == "0.4312"
    assert brightness.certified_set(0.25) == "|b| < 0.25"
    shift = get_methods()["translation"].threat_model
    assert shift.show(2.0) == "2 px" and shift.show(1.9999999) == "1 px"
    assert certifier.ThreatModel.from_record(None, "l1").certified_set("0.5") == "r >= 0.5"
    assert certifier.ThreatModel.from_record(brightness.as_dict()) == brightness


@pytest.mark.parametrize("plugin,options", [("brightness", ["-s", "0.3"]), ("contrast", ["-s", "0.3"]),
                                            ("gamma", ["-s", "0.3"]), ("translation", ["-o", "k", "2"])])
def test_show_draws_the_views(plugin, options, tmp_path):
    pytest.importorskip("matplotlib")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32))
    invoke("show", "--plugin", plugin, *options, tmp_path / "d.npz", "--out", tmp_path / "show.png")
    assert (tmp_path / "show.png").stat().st_size > 5_000
