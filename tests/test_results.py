"""Results files and ``certify report``: what counts, what certify may overwrite, locking,
write failures, and summaries that never overstate (issue 9)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from certifier.errors import CertifyError
from certifier import format_summary, summarize
from certifier.results import COHEN_COLUMNS, ResultsFile, load_any_results, read_results

from onnx_models import linear_model, save
from test_cli import (  # noqa: F401  (case and finished are fixtures)
    SMALL, assert_one_line_error, case, finished, invoke, results_of, without_seconds,
)


def write_jsonl(path: Path, header: dict, records: list) -> Path:
    """A results file as certify writes it, but with any records (json's NaN and Infinity allowed)."""
    lines = [json.dumps({"type": "header", **header})] + [json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def report(*args, expect_ok: bool = True):
    return invoke("report", *args, expect_ok=expect_ok)


def warnings_in(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("certify: warning:")]


def record(index, label, prediction, radius, **extra) -> dict:
    correct = None if label is None else prediction == label
    return {"type": "result", "index": index, "label": label, "prediction": prediction, "radius": radius,
            "norm": "l2", "correct": correct, "forward_passes": 70, "seconds": 0.01, **extra}


HEADER = {"plugin": "rs", "norm": "l2", "settings": {"sigma": 0.25}, "radius_ceiling": 0.5}


# -- item 5: records that cannot be right are flagged and never inflate the summary ------------


def test_impossible_records_are_flagged_and_certify_nothing(tmp_path):
    clean = [record(0, 0, 0, 0.4), record(1, 1, 1, 0.3), record(2, 1, 0, 0.2), record(3, 0, None, 0.0)]
    forged = [
        record(4, 0, 0, 0.9),  # above the ceiling 0.5
        record(5, 1, 1, -0.2),
        record(6, 1, 1, float("inf")),
        record(7, 1, 1, float("nan")),
        record(-1, 0, 0, 0.4),  # an index that names no input
        record(2.5, 0, 0, 0.4),
        record("8", 0, 0, 0.4),
        record(0, 0, 0, 0.4),  # input 0 again, alike: counted once
        record(1, 1, 1, 0.45),  # input 1 again with another radius: which is right is unknown
    ]
    path = write_jsonl(tmp_path / "forged.jsonl", HEADER, clean + forged)
    result = report(path, "--radii", "0,0.25", "--json")
    summary = json.loads(result.stdout)[str(path)]
    assert summary["problems"] == {
        "radius_above_ceiling": 1, "negative_or_non_finite_radius": 3, "invalid_index": 3,
        "duplicate_index": 2, "conflicting_duplicates": 1,
    }
    # 4 clean inputs + 4 with impossible radii + 3 with invalid indices; input 1 is in conflict.
    assert summary["inputs"] == 11 and summary["labeled"] == 11
    # only input 0 is correct and certified: 1 is in conflict, 2 is wrong, 3 abstains
    assert summary["certified_accuracy"] == {"0.0": pytest.approx(1 / 11), "0.25": pytest.approx(1 / 11)}
    assert summary["acr"] == pytest.approx(0.4 / 11)
    (line,) = warnings_in(result)
    for fragment in ("forged.jsonl", "1 radius above the recorded ceiling 0.5", "3 negative or non-finite radii",
                     "3 indices that are not non-negative integers", "2 repeated indices",
                     "1 input written more than once with different results"):
        assert fragment in line, line
    table = report(path, "--radii", "0,0.25")
    assert len(warnings_in(table)) == 1
    assert "9.1%" in table.stdout  # 1 of 11, not 6 of 11


def test_clean_files_get_no_warning(finished):
    _, out = finished
    result = report(out, "--json")
    assert warnings_in(result) == []
    assert json.loads(result.stdout)[str(out)]["problems"] == {}


def test_a_radius_exactly_at_the_ceiling_is_fine(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", HEADER, [record(0, 0, 0, 0.5), record(1, 0, 0, 0.5000001)])
    summary = json.loads(report(path, "--json").stdout)[str(path)]
    assert summary["problems"] == {"radius_above_ceiling": 1}
    assert summary["certified_accuracy"]["0.25"] == pytest.approx(1 / 2)


def test_a_forged_correct_flag_is_recomputed(tmp_path):
    wrong_but_marked_correct = {**record(0, 1, 0, 0.4), "correct": True}
    path = write_jsonl(tmp_path / "r.jsonl", HEADER, [wrong_but_marked_correct, record(1, 1, 1, 0.4)])
    result = report(path, "--json")
    summary = json.loads(result.stdout)[str(path)]
    assert summary["certified_accuracy"]["0.0"] == pytest.approx(1 / 2)
    assert summary["problems"] == {"correct_disagrees": 1}
    assert "disagrees with its label and prediction" in warnings_in(result)[0]


def test_an_abstain_with_a_radius_counts_as_radius_zero(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", HEADER, [record(0, None, None, 0.4), record(1, None, 1, 0.2)])
    summary = json.loads(report(path, "--json").stdout)[str(path)]
    assert summary["problems"] == {"abstain_with_radius": 1}
    assert summary["certified_fraction"]["0.25"] == 0.0
    assert summary["mean_radius"] == pytest.approx(0.1)


def test_cohen_files_are_checked_alike(tmp_path):
    path = tmp_path / "r.tsv"
    rows = ["0\t0\t0\t0.4\t1\t0:00:00.01", "0\t0\t0\t0.4\t1\t0:00:00.01", "1\t1\t1\t7.0\t1\t0:00:00.01",
            "-3\t1\t1\t0.1\t1\t0:00:00.01", "x\t1\t1\t0.1\t1\t0:00:00.01", "2\t1\t1\tinf\t1\t0:00:00.01"]
    path.write_text("\t".join(COHEN_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    (tmp_path / "r.tsv.header.json").write_text(json.dumps(HEADER))
    result = report(path, "--json")
    summary = json.loads(result.stdout)[str(path)]
    assert summary["problems"] == {"duplicate_index": 1, "radius_above_ceiling": 1, "invalid_index": 2,
                                   "negative_or_non_finite_radius": 1}
    assert summary["inputs"] == 5  # the repeated row once
    assert summary["certified_accuracy"]["0.0"] == pytest.approx(1 / 5)
    assert len(warnings_in(result)) == 1
    printed = report(path, "--format", "cohen")
    assert len(warnings_in(printed)) == 1


def test_report_json_is_strict_json(tmp_path):
    """An empty file, a NaN sigma and an infinite ceiling from an old file: no NaN in the output."""
    header = {**HEADER, "settings": {"sigma": float("nan")}, "radius_ceiling": float("inf")}
    empty = write_jsonl(tmp_path / "empty.jsonl", header, [])
    one = write_jsonl(tmp_path / "one.jsonl", header, [record(0, 0, 0, 0.1)])

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON output")

    result = report(empty, one, "--json")
    summaries = json.loads(result.stdout, parse_constant=refuse)
    assert summaries[str(empty)]["inputs"] == 0 and summaries[str(empty)]["abstain_rate"] is None
    assert summaries[str(one)]["problems"] == {"non_finite_ceiling": 1}
    report(empty, one)  # and the table prints


@pytest.mark.parametrize("line, named", [
    ('{"type": "result", "index": 1, "label": 0, "prediction": 0, "correct": true}', "no 'radius'"),
    ('{"type": "result", "index": 1, "label": 0, "radius": 0.1, "correct": true}', "no 'prediction'"),
    ('{"index": 1, "label": 0, "prediction": 0, "radius": 0.1, "correct": true}', "no 'type'"),
    ('{"type": "result", "label": 0, "prediction": 0, "radius": 0.1, "correct": true}', "no 'index'"),
    ('{"type": "result", "index": 1, "label": 0, "prediction": "cat", "radius": 0.1, "correct": true}',
     'prediction "cat" is not a class number'),
    ('{"type": "result", "index": 1, "label": 0, "prediction": 1.5, "radius": 0.1, "correct": true}',
     "prediction 1.5 is not a class number"),
    ('{"type": "result", "index": 1, "label": 0, "prediction": true, "radius": 0.1, "correct": true}',
     "prediction true is not a class number"),
    ('{"type": "result", "index": 1, "label": 0, "prediction": -1, "radius": 0.1, "correct": true}',
     "prediction -1 is not a class number"),
    ('{"type": "result", "index": 1, "label": [0], "prediction": 0, "radius": 0.1, "correct": true}',
     "label [0] is not a class number"),
    ('{"type": "result", "index": 1, "label": 0, "prediction": 0, "radius": "big", "correct": true}',
     'radius "big" is not a number'),
    ('{"type": "result", "index": 1, "label": 0, "prediction": 0, "radius": 0.1, "correct": "yes"}',
     'correct "yes" is not true, false or null'),
    ('{"type": "result", "index": 1, "label": 0, "prediction": 0, "radius": 0.1, "correct": true, "seconds": "1s"}',
     'seconds "1s" is not a non-negative number'),
    ("[1, 2, 3]", "not a results record"),
    ("17", "not a results record"),
])
def test_malformed_records_name_file_and_line(tmp_path, line, named):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"type": "header", **HEADER}) + "\n" + json.dumps(record(0, 0, 0, 0.1)) + "\n"
                    + line + "\n" + json.dumps(record(2, 0, 0, 0.1)) + "\n")
    assert_one_line_error(report(path, expect_ok=False), "r.jsonl, line 3", named)


@pytest.mark.parametrize("row, named", [
    ("1\t0\tcat\t0.1\t1\t0:00:01", "predict 'cat' is not a class number"),
    ("1\t-5\t0\t0.1\t1\t0:00:01", "label '-5' is not a class number"),
    ("1\t0\t0\tfar\t1\t0:00:01", "radius 'far' is not a number"),
    ("1\t0\t0\t0.1\tyes\t0:00:01", "correct 'yes' is not 0 or 1"),
    ("1\t0\t0\t0.1\t1\tsoon", "time 'soon' is not H:MM:SS"),
    ("1\t0\t0\t0.1", "expected the 6 tab-separated columns"),
])
def test_malformed_cohen_rows_name_file_and_line(tmp_path, row, named):
    path = tmp_path / "r.tsv"
    path.write_text("\t".join(COHEN_COLUMNS) + "\n0\t0\t0\t0.1\t1\t0:00:01\n" + row + "\n2\t0\t0\t0.1\t1\t0:00:01\n")
    assert_one_line_error(report(path, expect_ok=False), "r.tsv, line 3", named)


def test_a_broken_cohen_sidecar_is_one_line(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("\t".join(COHEN_COLUMNS) + "\n0\t0\t0\t0.1\t1\t0:00:01\n")
    (tmp_path / "r.tsv.header.json").write_text("{not json")
    assert_one_line_error(report(path, expect_ok=False), "r.tsv.header.json", "not a JSON object")


def test_a_header_with_wrong_types_is_one_line(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", {**HEADER, "radius_ceiling": "high"}, [record(0, 0, 0, 0.1)])
    assert_one_line_error(report(path, expect_ok=False), "r.jsonl, line 1", "radius_ceiling 'high' is not a number")


def test_a_torn_last_line_is_still_skipped(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", HEADER, [record(0, 0, 0, 0.1)])
    with open(path, "a") as handle:
        handle.write('{"type": "result", "index": 1, "la')
    assert json.loads(report(path, "--json").stdout)[str(path)]["inputs"] == 1
    tsv = tmp_path / "r.tsv"
    tsv.write_text("\t".join(COHEN_COLUMNS) + "\n0\t0\t0\t0.1\t1\t0:00:01\n1\t0\t0\t0.")
    assert json.loads(report(tsv, "--json").stdout)[str(tsv)]["inputs"] == 1


# -- issue 18: files no run wrote as recorded, and radii of any size -------------------------


def edited(path: Path, header: dict | None = None, records: dict[int, dict] | None = None) -> Path:
    """``path`` with header fields and fields of the records at some positions replaced."""
    first, *rest = [json.loads(line) for line in path.read_text().splitlines()]
    for position, fields in (records or {}).items():
        rest[position].update(fields)
    return write_jsonl(path, {**first, **(header or {})}, rest)


def test_a_header_claiming_exact_certificates_for_a_sampled_run_is_flagged(finished):
    _, out = finished
    assert json.loads(report(out, "--json").stdout)[str(out)]["certified_accuracy"]["0.0"] > 0
    edited(out, header={"exact": True})
    result = report(out, "--json")
    summary = json.loads(result.stdout)[str(out)]
    assert summary["problems"] == {"exact_header_of_sampled_run": 1}
    assert summary["inputs"] == 6 and summary["certified_accuracy"]["0.0"] == 0 and summary["exact"] is False
    (line,) = warnings_in(result)
    assert "1 header claiming exact certificates for a run that sampled its views (every input counted as " \
           "certifying nothing)" in line
    assert "exact" not in report(out).stdout  # the table never repeats the claim


def test_a_record_claiming_an_exact_certificate_in_a_sampled_run_is_flagged(finished):
    _, out = finished
    summary = json.loads(report(edited(out, records={2: {"exact": True}}), "--json").stdout)[str(out)]
    assert summary["problems"] == {"exact_record_of_sampled_run": 1}


def test_a_record_with_more_forward_passes_than_the_budget_is_flagged(finished):
    _, out = finished  # n0 10 + n 60 views per input
    assert json.loads(report(edited(out, records={1: {"forward_passes": 70}}), "--json").stdout)[str(out)][
        "problems"] == {}
    result = report(edited(out, records={1: {"forward_passes": 71}, 3: {"forward_passes": 10**9}}), "--json")
    summary = json.loads(result.stdout)[str(out)]
    assert summary["problems"] == {"passes_over_budget": 2} and summary["passes_budget"] == 70
    assert "2 records with more forward passes than the run's budget of 70 (counted as certifying nothing)" \
        in warnings_in(result)[0]


def test_a_sequential_radius_that_is_none_of_the_levels_is_flagged(case):
    out = case / "s.jsonl"
    invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", "-s", "0.25", "--n0", "10", "-n", "400",
           "--sampling", "sequential", "--radii", "0.1,0.2", "-q", "--output", out)
    clean = json.loads(report(out, "--json").stdout)[str(out)]
    assert clean["problems"] == {} and clean["certified_accuracy"]["0.1"] > 0
    certified = next(i for i, r in enumerate(results_of(out)) if r["radius"] == 0.2)
    result = report(edited(out, records={certified: {"radius": 0.15}}), "--json")  # below the ceiling, no level
    assert json.loads(result.stdout)[str(out)]["problems"] == {"radius_not_a_level": 1}
    assert "1 sequential radius that is none of the run's levels (counted as certifying nothing)" \
        in warnings_in(result)[0]


def test_runs_of_several_vote_groups_and_exact_runs_are_within_their_budgets(tmp_path):
    """drs votes on two sub-images (2 (n0 + n) passes), translation on its (2K+1)^2 views: no flags."""
    weights = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    save(linear_model(weights, np.zeros(2), (1, 4, 4)), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).random((3, 1, 4, 4)).astype(np.float32))
    runs = {"drs": ["-s", "0.25", "--n0", "10", "-n", "60"], "translation": ["-o", "k", "1"],
            "drs-sequential": ["-p", "drs", "-s", "0.25", "--n0", "10", "-n", "300", "--sampling", "sequential"]}
    for name, args in runs.items():
        plugin = [] if args[0] == "-p" else ["-p", name]
        invoke(*plugin, *args, tmp_path / "m.onnx", "--data", tmp_path / "d.npz", "-q", "--output",
               tmp_path / f"{name}.jsonl")
    result = report(*(tmp_path / f"{name}.jsonl" for name in runs), "--json")
    summaries = json.loads(result.stdout)
    assert warnings_in(result) == []
    budgets = {Path(path).stem: s["passes_budget"] for path, s in summaries.items()}
    assert budgets == {"drs": 140, "translation": 9, "drs-sequential": 620}
    assert summaries[str(tmp_path / "drs.jsonl")]["forward_passes_per_input"] == 140


def test_radii_of_any_size_are_shown_and_never_rounded_up(tmp_path):
    """A file a hostile plugin wrote before radii beyond the input space were refused: 1e308 and
    its ceiling print, rounded down, in every display; so does a contrast file of sigma 300."""
    huge = write_jsonl(tmp_path / "huge.jsonl", {**HEADER, "radius_ceiling": 1e308},
                       [record(0, 0, 0, 1e308), record(1, 1, 1, 1.7976931348623157e308), record(2, 1, 1, 0.4)])
    text = report(huge).stdout
    assert "radius ceiling" in text and "1.0000e+308" in text and "Error" not in text
    summary = json.loads(report(huge, "--json").stdout)[str(huge)]
    assert summary["problems"] == {"radius_above_ceiling": 1}
    contrast = {"name": "contrast", "description": "every pixel multiplied by e^c", "parameter": "factor",
                "unit": "factor", "display": "factor", "radii": [0, 0.5]}
    header = {"plugin": "contrast", "norm": "contrast", "threat_model": contrast, "settings": {"sigma": 300.0},
              "radius_ceiling": 1233.2081278563172}
    wide = write_jsonl(tmp_path / "contrast.jsonl", header, [record(0, 0, 0, 800.0), record(1, 1, 1, 3.0)])
    for args in [(), ("--radii", "0,1,1000"), ("--json",)]:
        result = report(wide, *args)
        assert result.exit_code == 0 and "unexpected" not in result.output
    table = report(wide, "--radii", "0,1,1000").stdout
    assert "radius ceiling" in table and "(e^-1233.2081, e^1233.2081)" in table
    assert "factor in (e^-1000.0000, e^1000.0000)" in table
    ranges = json.loads(report(wide, "--radii", "0,1000", "--json").stdout)[str(wide)]["factor_ranges"]
    assert 0 < ranges["1000.0"][0] < 1 < ranges["1000.0"][1] < float("inf")


def test_integers_beyond_float_range_read_as_infinities(tmp_path):
    """JSON integers of 400 and 5,000 digits: flagged as non-finite like 1e400, never a crash."""
    lines = [json.dumps({"type": "header", **HEADER, "settings": {"sigma": 0.25}}).replace("0.25", "1" + "0" * 5000),
             json.dumps(record(0, 0, 0, 0.1)).replace("0.1", "1" + "0" * 400),
             json.dumps(record(1, 0, 0, 0.1)).replace("0.1", "1" + "0" * 5000)]
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    result = report(tmp_path / "big.jsonl", "--json")
    summary = json.loads(result.stdout)[str(tmp_path / "big.jsonl")]
    assert summary["problems"] == {"negative_or_non_finite_radius": 2} and summary["sigma"] is None
    assert "inf" in report(tmp_path / "big.jsonl").stdout


def test_shown_numbers_never_exceed_the_value(tmp_path):
    from certifier.stats import round_down, show_number

    rng = np.random.default_rng(0)
    values = [58.884699999999995, 0.3, 1e6, 999999.99995, 1.7976931348623157e308, 5e-324]
    values += list(rng.uniform(0, 100, 2000)) + list(10.0 ** rng.uniform(-10, 308, 2000))
    values += [float(np.nextafter(k / 1e4, 0)) for k in rng.integers(1, 10**6, 2000)]
    for value in map(float, values):
        assert round_down(value) <= value and float(show_number(value)) <= value, value
        assert float(show_number(value, up=True)) >= value, value
    assert show_number(58.884699999999995) == "58.8846" and show_number(1e308) == "1.0000e+308"
    assert show_number(float("inf")) == show_number(float("nan")) == "-"


# -- item 14: no accuracy without labels -------------------------------------------------------


def test_a_run_without_labels_prints_prediction_statistics(case):
    out = case / "u.jsonl"
    result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "unlabelled.npz", *SMALL, "--output", out)
    text = result.stdout
    assert "certified accuracy" not in text and "ACR" not in text
    for row in ("certified fraction r >= 0.0", "mean radius (abstain 0)", "median radius (abstain 0)",
                "classes predicted", "most predicted class", "abstain rate"):
        assert row in text, text
    records = results_of(out)
    predicted = [r for r in records if r["prediction"] is not None]
    fraction = next(line for line in text.splitlines() if line.startswith("certified fraction r >= 0.0"))
    assert fraction.split()[-1] == f"{100 * len(predicted) / len(records):.1f}%"
    summary = json.loads(report(out, "--json").stdout)[str(out)]
    assert "certified_accuracy" not in summary and "acr" not in summary and "accuracy" not in summary
    assert summary["predicted_classes"] == {"0": 2, "1": 3}  # the boundary input abstains
    assert summary["median_radius"] == pytest.approx(statistics.median(r["radius"] for r in records))
    assert summary["mean_radius"] == pytest.approx(sum(r["radius"] for r in records) / len(records))


def test_labeled_and_unlabeled_files_side_by_side(case):
    labeled, unlabeled = case / "l.jsonl", case / "u.jsonl"
    invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", labeled)
    invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "unlabelled.npz", *SMALL, "--output", unlabeled)
    rows = {line[:30].strip(): line[30:].split() for line in report(labeled, unlabeled).stdout.splitlines()[1:]
            if line[:30].strip()}
    accuracy = rows["certified accuracy r >= 0.0"]
    assert accuracy[0] == "66.7%" and accuracy[1] == "-"  # never an accuracy for the file without labels
    assert rows["ACR"][1] == "-"
    assert rows["certified fraction r >= 0.0"] == ["83.3%", "83.3%"]


def test_partly_labeled_records(tmp_path):
    records = [record(0, 0, 0, 0.4), record(1, 1, 0, 0.4), record(2, None, 1, 0.3), record(3, None, None, 0.0)]
    summary = summarize(records, [0.0, 0.35], HEADER)
    assert summary["certified_accuracy"] == {"0.0": 0.5, "0.35": 0.5}  # over the 2 labeled inputs
    assert summary["certified_fraction"] == {"0.0": 0.75, "0.35": 0.5}  # over all 4
    table = format_summary([summary], ["mixed"])
    assert "certified accuracy r >= 0.0" in table and "certified fraction r >= 0.0" in table


# -- item 10: a file certify did not write is never truncated or overwritten ------------------


@pytest.mark.parametrize("text", [
    "{",
    '{"type": "header"',
    '{"type": "header", "mine": 1',
    '{"type": "header", "certifier_version": "0.1.0", "mode": "certify", "plugin": "rs"',  # too short to prove
    "idx\tlabel",
    "",  # an empty line with a newline below
])
def test_a_one_line_file_certify_did_not_write_is_left_alone(case, text):
    victim = case / "victim.jsonl"
    victim.write_text(text if text else "\n")
    before = victim.read_bytes()
    result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", victim,
                    expect_ok=False)
    assert_one_line_error(result, "exists and is not a certify results file", "choose another --output or remove it")
    assert victim.read_bytes() == before


@pytest.mark.parametrize("keep", ["to-the-hash", "into-started", "all-but-newline"])
def test_a_header_certify_wrote_and_a_kill_tore_starts_afresh(finished, keep):
    command, out = finished
    complete = results_of(out)
    header = out.read_text().splitlines()[0]
    cut = {"to-the-hash": header.index('"model_sha256"') + 84, "into-started": header.index('"started"') + 16,
           "all-but-newline": len(header)}[keep]
    # A later run with the model given by another path, on another day: still this run's header.
    torn = header[:cut].replace('"started": "2', '"started": "1').replace('"model": "', '"model": "./other/')
    out.write_text(torn)
    invoke(*command)
    assert without_seconds(results_of(out)) == without_seconds(complete)


def test_a_torn_header_of_other_settings_is_left_alone(finished):
    command, out = finished
    header = out.read_text().splitlines()[0]
    torn = header[:header.index('"started"')].replace('"seed": 0', '"seed": 7')
    out.write_text(torn)
    result = invoke(*command, expect_ok=False)
    assert_one_line_error(result, "is not a certify results file")
    assert out.read_text() == torn


def test_a_torn_cohen_column_line_needs_its_settings_beside_it(case):
    command = ["--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--format", "cohen"]
    tsv = case / "r.tsv"
    invoke(*command, "--output", tsv)
    complete = tsv.read_text().splitlines()
    tsv.write_text("idx\tlab")  # torn, and certify's settings file beside it: certify's own
    invoke(*command, "--output", tsv)
    assert [r.split("\t")[:5] for r in tsv.read_text().splitlines()] == [r.split("\t")[:5] for r in complete]
    other = case / "other.tsv"
    other.write_text("idx\tlab")  # no settings beside it: somebody else's
    assert_one_line_error(invoke(*command, "--output", other, expect_ok=False), "not a Cohen-format results file")
    assert other.read_text() == "idx\tlab"


def test_a_settings_file_certify_did_not_write_is_left_alone(case):
    sidecar = case / "r.tsv.header.json"
    sidecar.write_text('{"my": "notes"}')
    result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--format", "cohen",
                    "--output", case / "r.tsv", expect_ok=False)
    assert_one_line_error(result, "r.tsv.header.json exists and is not a certify header")
    assert sidecar.read_text() == '{"my": "notes"}'


# -- item 11: one run per results file; symbolic links ------------------------------------------


def test_a_second_run_on_a_locked_file_refuses_at_once(finished):
    command, out = finished
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]))  # two results: the rest is still to do
    before = out.read_bytes()
    with open(out, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = invoke(*command, expect_ok=False)
    assert_one_line_error(result, str(out), "in use by another certify run", "choose another --output")
    assert out.read_bytes() == before
    invoke(*command)  # the lock is gone with its holder: the run resumes
    assert [r["index"] for r in results_of(out)] == list(range(6))


def test_the_lock_lasts_the_whole_run_and_ends_with_it(tmp_path):
    header = {"mode": "certify", "plugin": "rs", "model_sha256": "0" * 64}
    with ResultsFile(tmp_path / "r.jsonl", header) as results:
        results.write(record(0, 0, 0, 0.1))
        with pytest.raises(CertifyError, match="in use by another certify run"):
            ResultsFile(tmp_path / "r.jsonl", header)
        results.write(record(1, 0, 0, 0.1))
    with ResultsFile(tmp_path / "r.jsonl", header) as again:
        assert sorted(again.done) == [0, 1]


def _stopped_after_first_result(command, out: Path) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != "CERTIFY_DEBUG"}
    environment["CERTIFY_LOAD_PLUGINS"] = ""
    script = "from certifier.cli import cli; cli(prog_name='certify')"
    process = subprocess.Popen([sys.executable, "-c", script, *map(str, command), "--output", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and '"type": "result"' in out.read_text():
            process.send_signal(signal.SIGSTOP)
            return process
        time.sleep(0.005)
    process.kill()
    raise AssertionError(f"the first run ended before writing a result: {process.communicate()}")


def test_two_runs_at_once_on_one_file(tmp_path):
    """A real second process while the first is mid-run (frozen so the test does not race)."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(784, 3))
    model = save(linear_model(w, np.zeros(3), (1, 28, 28)), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=rng.random((20, 28, 28)).astype(np.float32))
    command = ["--plugin", "rs", model, "--data", tmp_path / "d.npz", "-s", "0.1", "--n0", "20", "-n", "4000",
               "--threads", "1", "--device", "cpu", "-q"]
    out = tmp_path / "r.jsonl"
    first = _stopped_after_first_result(command, out)
    try:
        during = out.read_bytes()
        second = invoke(*command, "--output", out, expect_ok=False)
        assert_one_line_error(second, "in use by another certify run")
        assert out.read_bytes() == during
    finally:
        first.send_signal(signal.SIGCONT)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert [r["index"] for r in results_of(out)] == list(range(20))


def test_a_dangling_symbolic_link_is_refused(case):
    target = case / "elsewhere" / "r.jsonl"
    (case / "elsewhere").mkdir()
    link = case / "link.jsonl"
    link.symlink_to(target)
    result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", link,
                    expect_ok=False)
    assert_one_line_error(result, "link.jsonl is a symbolic link to", "which does not exist")
    assert not target.exists() and link.is_symlink()


def test_a_link_to_a_results_file_resumes_it(finished):
    command, out = finished
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]))
    link = out.with_name("link.jsonl")
    link.symlink_to(out)
    invoke(*command[:-1], link)
    assert [r["index"] for r in results_of(out)] == list(range(6))


def test_a_fifo_is_refused(case):
    """Not written to, and not read by report either (reading one would wait for a writer forever)."""
    fifo = case / "pipe.jsonl"
    os.mkfifo(fifo)
    result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", fifo,
                    expect_ok=False)
    assert_one_line_error(result, "pipe.jsonl is not a regular file")
    assert_one_line_error(report(fifo, expect_ok=False), "pipe.jsonl is not a results file")


# -- item 3: no non-finite number reaches a results file ----------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "cohen"])
@pytest.mark.parametrize("field, value, named", [
    ("radius_ceiling", float("inf"), "radius_ceiling is inf"),
    ("settings", {"sigma": float("nan"), "options": {}}, "settings.sigma is nan"),
    ("alpha", np.float64("-inf"), "alpha is -inf"),
])
def test_a_header_with_a_non_finite_number_is_refused(tmp_path, fmt, field, value, named):
    path = tmp_path / "r.out"
    with pytest.raises(CertifyError, match=named.replace(".", r"\.")) as caught:
        ResultsFile(path, {"mode": "certify", "plugin": "rs", field: value}, fmt)
    assert "\n" not in str(caught.value) and "not a finite number" in str(caught.value)
    assert not path.exists() and not (tmp_path / "r.out.header.json").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "cohen"])
@pytest.mark.parametrize("radius", [float("inf"), float("nan"), -0.5])
def test_a_record_with_an_impossible_radius_is_refused(tmp_path, fmt, radius):
    path = tmp_path / "r.out"
    with ResultsFile(path, {"mode": "certify", "plugin": "rs"}, fmt) as results:
        results.write(record(0, 0, 0, 0.1))
        before = path.read_bytes()
        with pytest.raises(CertifyError, match="not writing input 1 .*radius"):
            results.write(record(1, 0, 0, radius))
        assert path.read_bytes() == before
        assert sorted(results.done) == [0]


def test_numpy_numbers_are_written_as_numbers(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsFile(path, {"mode": "certify", "alpha": np.float64(0.001), "n": np.int64(10)}) as results:
        results.write({**record(0, 0, 0, 0.1), "details": {"votes": np.int64(7), "p": np.float32(0.5)}})
    header, records = read_results(path)
    assert (header["alpha"], header["n"]) == (0.001, 10)
    assert records[0]["details"] == {"votes": 7, "p": 0.5}


def test_the_run_refuses_an_infinite_ceiling_before_writing(case, monkeypatch):
    """The core refuses such settings earlier; if it ever misses one, the writer still does."""
    from certifier.engine import Engine

    monkeypatch.setattr(Engine, "radius_ceiling", lambda self, classes=2: float("inf"))
    out = case / "r.jsonl"
    result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", out,
                    expect_ok=False)
    assert_one_line_error(result, "radius_ceiling is inf")
    assert not out.exists()


# -- item 13: disk full, permission denied ------------------------------------------------------


def failing_writes(monkeypatch, after_results: int, error: int):
    """os.write fails with ``error`` from the result after the first ``after_results``, once half of it is written."""
    real_write = os.write
    results, failing = [], set()

    def write(fd, data):
        if fd in failing:
            raise OSError(error, os.strerror(error))
        if bytes(data[:17]) == b'{"type": "result"' or bytes(data[:1]).isdigit():
            results.append(fd)
            if len(results) > after_results:
                failing.add(fd)
                return real_write(fd, data[:len(data) // 2])
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("fmt", ["jsonl", "cohen"])
def test_disk_full_while_writing_results(finished, monkeypatch, fmt):
    command, reference = finished
    complete = without_seconds(results_of(reference))
    out = reference.with_name(f"full.{fmt}")
    args = [*command[:-1], out, "--format", fmt]
    failing_writes(monkeypatch, after_results=2, error=errno.ENOSPC)
    result = invoke(*args, expect_ok=False)
    assert_one_line_error(result, str(out), "No space left on device", "2 results before are kept",
                          "rerun the same command to resume")
    text = out.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 3  # header and two whole results, no torn line
    monkeypatch.undo()
    invoke(*args)
    if fmt == "jsonl":
        assert without_seconds(results_of(out)) == complete
    else:
        rows = [row.split("\t") for row in out.read_text().splitlines()[1:]]
        assert [(int(r[0]), float(r[3])) for r in rows] == [(r["index"], r["radius"]) for r in complete]


def test_fsync_failure_is_one_line(finished, monkeypatch):
    command, reference = finished
    out = reference.with_name("fsync.jsonl")
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result = invoke(*command[:-1], out, expect_ok=False)
    assert_one_line_error(result, str(out), "Input/output error")
    monkeypatch.undo()
    invoke(*command[:-1], out)
    assert [r["index"] for r in results_of(out)] == list(range(6))


@pytest.mark.parametrize("fmt", ["jsonl", "cohen"])
def test_disk_full_while_writing_the_header(case, monkeypatch, fmt):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:10]) and (_ for _ in ()).throw(
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    if fmt == "cohen":
        def no_space(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", no_space)  # the settings file is written through a buffered handle
    out = case / f"r.{fmt}"
    args = ["--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL, "--output", out, "--format", fmt]
    error = assert_one_line_error(invoke(*args, expect_ok=False), str(out), "No space left on device")
    if fmt == "cohen":
        assert "r.cohen.header.json (the settings of r.cohen)" in error
    assert out.read_bytes() == b""  # no torn header that a rerun would have to refuse
    assert not list(case.glob(".*.tmp"))
    monkeypatch.undo()
    invoke(*args)
    assert len(out.read_text().splitlines()) == 7


def test_permission_denied_is_one_line(case, monkeypatch):
    """Works as root too: the refusal is made to happen."""
    real_open = os.open

    def denied(path, flags, *args, **kwargs):
        if str(path).endswith("r.jsonl"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL,
                    "--output", case / "r.jsonl", expect_ok=False)
    assert_one_line_error(result, "r.jsonl", "Permission denied", "choose another --output")


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_a_read_only_folder_is_one_line(case):
    folder = case / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = invoke("--plugin", "rs", case / "plane.onnx", "--data", case / "d.npz", *SMALL,
                        "--output", folder / "r.jsonl", expect_ok=False)
        assert_one_line_error(result, "r.jsonl", "Permission denied")
    finally:
        folder.chmod(0o700)


def test_an_unreadable_results_file_is_one_line(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "r.jsonl", HEADER, [record(0, 0, 0, 0.1)])
    import builtins

    real_open = builtins.open

    def denied(file, *args, **kwargs):
        if str(file).endswith("r.jsonl"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    assert_one_line_error(report(path, expect_ok=False), "cannot read", "r.jsonl", "Permission denied")


# -- compatibility -------------------------------------------------------------------------------


def test_files_of_the_previous_version_still_report_and_resume(finished):
    """A header without newer fields, results sorted as before; repeated indices read back."""
    command, out = finished
    header, records = load_any_results(out)
    assert [r["index"] for r in records] == list(range(6))
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]))
    invoke(*command)
    assert [r["index"] for r in results_of(out)] == list(range(6))


@pytest.mark.parametrize("where", ["after-the-bytes", "half-way"])
def test_an_interrupted_write_leaves_done_and_the_file_agreeing(tmp_path, monkeypatch, where):
    """The interruption message counts ``done``: a signal mid-write must not make it lie."""
    path = tmp_path / "r.jsonl"
    results = ResultsFile(path, {"mode": "certify"})
    results.write(record(0, 0, 0, 0.1))
    real_write = os.write

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    def interrupted_write(fd, data):
        real_write(fd, data[:5])
        raise KeyboardInterrupt

    if where == "after-the-bytes":
        monkeypatch.setattr(os, "fsync", interrupted_fsync)
    else:
        monkeypatch.setattr(os, "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        results.write(record(1, 0, 0, 0.1))
    monkeypatch.undo()
    results.close()
    _, on_disk = read_results(path)
    assert sorted(results.done) == [r["index"] for r in on_disk] == ([0, 1] if where == "after-the-bytes" else [0])
    assert path.read_text().endswith("\n")


def test_a_header_longer_than_the_first_read_is_never_taken_for_a_torn_one(tmp_path, monkeypatch):
    """Only a file that is one line without a newline can be a torn header; a long header with
    results after it must be resumed (or refused), never emptied."""
    import certifier.results as results_module

    header = {"mode": "certify", "plugin": "rs", "model_sha256": "0" * 64, "settings": {"note": "x" * 300}}
    path = tmp_path / "r.jsonl"
    with ResultsFile(path, header) as results:
        results.write(record(0, 0, 0, 0.1))
    before = path.read_bytes()
    monkeypatch.setattr(results_module, "MAX_HEADER_BYTES", 200)  # the first read stops inside the header
    with pytest.raises(CertifyError, match="not a certify results file"):
        ResultsFile(path, header)
    assert path.read_bytes() == before


def test_a_huge_bad_value_is_cut_short_in_the_error(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", HEADER, [{**record(0, 0, 0, 0.1), "prediction": "x" * 100_000}])
    error = assert_one_line_error(report(path, expect_ok=False), "r.jsonl, line 2", "prediction")
    assert len(error) < 300


def test_a_file_without_newlines_is_refused_from_its_start(tmp_path, monkeypatch):
    """report reads a bounded first line, not a whole large file that has no newline."""
    import builtins

    path = tmp_path / "blob.bin"
    path.write_bytes(b"\0" * 200_000)
    real_open, reads = builtins.open, []

    class Watched:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def readline(self, limit=-1):
            line = self.handle.readline(limit)
            reads.append(len(line))
            return line

        def __iter__(self):
            for line in self.handle:
                reads.append(len(line))
                yield line

    def watched_open(file, *args, **kwargs):
        handle = real_open(file, *args, **kwargs)
        return Watched(handle) if str(file) == str(path) else handle

    monkeypatch.setattr("certifier.results.MAX_HEADER_BYTES", 1000)
    monkeypatch.setattr(builtins, "open", watched_open)
    assert_one_line_error(report(path, expect_ok=False), "blob.bin is not a certify results file")
    assert reads and max(reads) <= 1000
