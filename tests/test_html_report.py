"""``certify report --html``: what the page holds (the summary's numbers, the plot's points, the
model, settings and gallery), that text from files stays text, what it says when files are gone
or changed, and how it is written. The same page in a real browser: test_html_browser.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from certifier.html_report import (CONTENT_SECURITY_POLICY, GENERATOR, ReportedRun, render_report,
                                   write_html_report)
from certifier.report_gallery import choose
from certifier.results import load_any_results
from certifier.stats import show_number
from certifier.summaries import format_summary, percent, summarize

from html_pages import MODELS, SAMPLES, certify_run, curve_points, invoke, parse, staircase_value, summaries_of

#: Every element the page may hold; anything else came from a file and escaped its escaping.
ALLOWED_TAGS = {
    "#document", "html", "head", "meta", "title", "style", "body", "main", "header", "h1", "h2", "h3", "h4", "p",
    "nav", "ul", "li", "a", "details", "summary", "section", "div", "strong", "span", "code", "table", "thead",
    "tbody", "tr", "th", "td", "figure", "figcaption", "img", "br", "footer",
    "svg", "title", "rect", "line", "text", "g", "polyline", "circle",
}
HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>&amp;'


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real runs of bundled RS models on the bundled samples (both with abstentions and wrong
    inputs at this n: the Gaussian model at sigma 0.25, which abstains more than the bundled
    consistency one), and their report."""
    folder = tmp_path_factory.mktemp("runs")
    first = certify_run(folder / "rs-0.25.jsonl", "fmnist-rs-0.25-gaussian.onnx", limit=24)
    second = certify_run(folder / "rs-0.5.jsonl", "fmnist-rs-0.5.onnx", limit=24, n=60)
    page = folder / "report.html"
    result = invoke("report", first, second, "--html", page)
    return {"files": [first, second], "page": page, "html": page.read_text(), "output": result.output,
            "summaries": summaries_of(first, second)}


def report_of(tmp_path, *files, expect_ok=True, extra=()):
    page = tmp_path / "report.html"
    result = invoke("report", *files, "--html", page, *extra, expect_ok=expect_ok)
    return result, (parse(page.read_text()) if page.exists() else None)


def rewrite_header(source: Path, target: Path, **changes) -> Path:
    lines = source.read_text().splitlines()
    header = json.loads(lines[0])
    header.update(changes)
    target.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    return target


# -- the numbers ---------------------------------------------------------------------


def test_tables_hold_the_summary_numbers(runs):
    page = parse(runs["html"])
    table = page.find("table", class_="summary")
    names = [th.text() for th in table.find("thead").find_all("th")][1:]
    assert names == [f.name for f in runs["files"]]
    rows = table.find("tbody").find_all("tr")
    for column, file in enumerate(runs["files"]):
        summary = runs["summaries"][str(file)]
        accuracy = {r.attrs["data-radius"]: r.find_all("td")[column].text() for r in rows
                    if r.attrs.get("data-key") == "certified_accuracy"}
        assert accuracy == {k: percent(v) for k, v in summary["certified_accuracy"].items()}
        by_key = {r.attrs.get("data-key"): r.find_all("td")[column].text() for r in rows}
        assert by_key["acr"] == show_number(summary["acr"])
        assert by_key["abstain_rate"] == percent(summary["abstain_rate"])
        assert by_key["inputs"] == f"{summary['inputs']} ({summary['labeled']})"
        assert by_key["forward_passes_per_input"] == f"{summary['forward_passes_per_input']:.0f}"


def test_plot_points_are_the_summary(runs):
    page = parse(runs["html"])
    curves = page.find("svg", class_="plot").find_all("g", class_="curve")
    assert [c.attrs["data-run"] for c in curves] == [f.name for f in runs["files"]]
    for curve, file in zip(curves, runs["files"]):
        summary = runs["summaries"][str(file)]
        marks = {float(c.attrs["data-radius"]): float(c.attrs["data-value"]) for c in curve.find_all("circle")}
        assert marks == {float(k): v for k, v in summary["certified_accuracy"].items()}
        points = curve_points(curve.find("polyline"))
        assert [r for r, _ in points] == sorted(r for r, _ in points)
        for radius, value in summary["certified_accuracy"].items():
            assert staircase_value(points, float(radius)) == pytest.approx(value)
        # every certified radius of a right input is a step of the staircase
        records = [r for r in load_any_results(file)[1] if r["correct"]]
        assert {r["radius"] for r in records} <= {r for r, _ in points}


def test_per_class_accuracy_and_cost(runs):
    page = parse(runs["html"])
    file = runs["files"][0]
    summary = runs["summaries"][str(file)]
    records = load_any_results(file)[1]
    section = page.find("section", id="run-1")
    table = section.find("table", class_="per-class")
    rows = table.find("tbody").find_all("tr")
    assert [int(r.attrs["data-class"]) for r in rows] == sorted({r["label"] for r in records})
    for row in rows:
        label = int(row.attrs["data-class"])
        mine = [r for r in records if r["label"] == label]
        cells = [td.text() for td in row.find_all("td")]
        assert cells[0] == str(len(mine))
        for cell, radius in zip(cells[1:-1], sorted(summary["certified_accuracy"], key=float)):
            good = sum(1 for r in mine if r["correct"] and r["radius"] >= float(radius))
            assert cell == percent(good / len(mine))
        assert cells[-1] == str(sum(r["prediction"] is None for r in mine))
    assert row.find("th").text().startswith(f"{label} ")  # the class name from the model's metadata
    facts = {tr.find("th").text(): tr.find("td").text() for tr in section.find("table", data_facts="cost")
             .find_all("tr")}
    assert facts["forward passes in all"] == f"{sum(r['forward_passes'] for r in records):,}"
    assert facts["seconds per input (mean)"] == show_number(summary["seconds_per_input"], 3)


def test_model_settings_and_gallery(runs):
    page = parse(runs["html"])
    section = page.find("section", id="run-1")
    header = load_any_results(runs["files"][0])[0]
    text = section.text()
    for value in (header["model_sha256"], header["data_sha256"], "present, SHA-256 as recorded",
                  "threat model l2: L2 distance in pixel space", "T-shirt/top", "certifier.sigma"):
        assert value in text
    settings = {tr.find("th").text(): tr.find("td").text() for tr in section.find("table", data_facts="settings")
                .find_all("tr")}
    assert settings["sigma"] == "0.25" and settings["n (estimation views)"] == "100" and settings["alpha"] == "0.001"
    kinds = {g.attrs["data-kind"]: g.find_all("div", class_="card") for g in section.find_all("div", class_="gallery")}
    assert set(kinds) == {"certified", "abstained", "wrong"}
    for cards in kinds.values():
        for card in cards:
            pictures = card.find_all("img")
            assert len(pictures) == 4  # the input and three views
            assert all(p.attrs["src"].startswith("data:image/png;base64,") for p in pictures)
    records = {r["index"]: r for r in load_any_results(runs["files"][0])[1]}
    for card in kinds["wrong"]:
        record = records[int(card.attrs["data-index"])]
        assert record["prediction"] not in (None, record["label"])
    for card in kinds["abstained"]:
        assert records[int(card.attrs["data-index"])]["prediction"] is None
    assert "Views made afresh for this report by plugin rs (sigma 0.25" in text


def test_pictures_are_the_inputs(runs):
    """The gallery's first picture is the input the record names, as the data holds it."""
    import base64
    import io

    from PIL import Image

    page = parse(runs["html"])
    with np.load(SAMPLES) as data:
        x = data["x"]
    cards = page.find("section", id="run-1").find_all("div", class_="card")
    for card in cards:
        source = card.find("img").attrs["src"].split(",", 1)[1]
        picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(source))))
        assert np.array_equal(picture, x[int(card.attrs["data-index"])])


def test_self_contained(runs):
    page = parse(runs["html"])
    head = page.find("head")
    assert head.find("meta", http_equiv="Content-Security-Policy").attrs["content"] == CONTENT_SECURITY_POLICY
    assert head.find("meta", name="generator").attrs["content"].startswith(GENERATOR)
    for node in page.walk():
        assert node.tag not in ("script", "link", "iframe", "object", "embed", "base")
        for name, value in node.attrs.items():
            if name in ("src", "href", "xlink:href", "action"):
                assert value.startswith(("data:image/png;base64,", "#")), (node.tag, name, value[:60])
    style = page.find("style").text()
    assert "url(" not in style and "@import" not in style


# -- text from files stays text ----------------------------------------------------------


def test_hostile_header_cannot_inject_markup(tmp_path):
    source = certify_run(tmp_path / "clean.jsonl", limit=4, n=40)
    header, records = load_any_results(source)
    header.update(
        plugin=HOSTILE, model=HOSTILE, data=HOSTILE, model_sha256=HOSTILE, data_sha256=HOSTILE, started=HOSTILE,
        device=HOSTILE, certifier_version=HOSTILE, output_name=HOSTILE, sampling=HOSTILE, denoiser=HOSTILE,
        denoiser_sha256=HOSTILE, denoiser_metadata={HOSTILE: HOSTILE}, group_models={HOSTILE: HOSTILE},
        settings={"sigma": HOSTILE, "options": {HOSTILE: HOSTILE}}, input_space={HOSTILE: [HOSTILE]},
        threat_model={"name": "l2x", "description": HOSTILE, "parameter": HOSTILE, "unit": HOSTILE},
        sampling_settings={HOSTILE: HOSTILE},
    )
    hostile = tmp_path / "<img src=x onerror=alert(3)>.jsonl"
    hostile.write_text("\n".join(json.dumps(line) for line in [header, *records]) + "\n")
    result, page = report_of(tmp_path, hostile)
    tags = {node.tag for node in page.walk()}
    assert tags <= ALLOWED_TAGS, tags - ALLOWED_TAGS
    for node in page.walk():
        assert not any(name.startswith("on") for name in node.attrs), node
        if "src" in node.attrs:
            assert node.attrs["src"].startswith("data:image/png;base64,")
    text = page.text()
    assert text.count("<script>alert(1)</script>") >= 10  # shown, as text
    assert "<img src=x onerror=alert(3)>.jsonl" in text


def test_unknown_plugin_gets_pictures_without_views(tmp_path):
    source = certify_run(tmp_path / "rs.jsonl", limit=6, n=40)
    renamed = rewrite_header(source, tmp_path / "other.jsonl", plugin="no-such-plugin")
    result, page = report_of(tmp_path, renamed)
    gallery = page.find("section", id="run-1")
    assert "no noisy views: plugin no-such-plugin" in gallery.text()
    cards = gallery.find_all("div", class_="card")
    assert cards and all(len(card.find_all("img")) == 1 for card in cards)


# -- files gone or changed ---------------------------------------------------------------------


def run_on_copies(tmp_path: Path, folder: str) -> tuple[Path, Path]:
    """A run of copies of a bundled model and the samples, in ``folder``: (the folder, the results)."""
    copies = tmp_path / folder
    copies.mkdir()
    shutil.copy(MODELS / "fmnist-rs-0.25.onnx", copies / "model.onnx")
    shutil.copy(SAMPLES, copies / "data.npz")
    return copies, certify_run(tmp_path / "run.jsonl", str(copies / "model.onnx"), data=copies / "data.npz", limit=6,
                               n=40)


def test_missing_model_and_data(tmp_path):
    """The report is written all the same; the model and gallery say what is gone."""
    gone, results = run_on_copies(tmp_path, "gone")
    summary = summaries_of(results)[str(results)]
    shutil.rmtree(gone)
    result, page = report_of(tmp_path, results)
    section = page.find("section", id="run-1")
    assert "not found" in section.find("span", class_="badge").text()
    assert f"the data is no longer at {gone / 'data.npz'}" in section.text()
    assert f"the model is no longer at {gone / 'model.onnx'}" in page.find("div", class_="note").text()
    assert not section.find_all("img")
    rows = {r.attrs.get("data-radius"): r.find("td").text() for r in page.find("table", class_="summary")
            .find_all("tr") if r.attrs.get("data-key") == "certified_accuracy"}
    assert rows == {k: percent(v) for k, v in summary["certified_accuracy"].items()}
    assert "certify: note: run.jsonl: gallery: the data is no longer at" in result.output


def test_changed_model_and_data(tmp_path):
    folder, results = run_on_copies(tmp_path, "files")
    shutil.copy(MODELS / "fmnist-rs-0.5.onnx", folder / "model.onnx")
    with np.load(SAMPLES) as data:
        np.savez(folder / "data.npz", x=255 - data["x"], y=data["y"])
    result, page = report_of(tmp_path, results)
    section = page.find("section", id="run-1")
    assert section.find("span", class_="badge").text() == "changed since the run"
    assert "is not the model the run certified" in page.find("div", class_="note").text()
    assert "certifier.sigma" not in section.text()  # the metadata of another model is not shown as this one's
    assert "is not the data the run certified (its fingerprint differs)" in section.text()
    assert not section.find_all("img")


def test_no_pictures_without_a_recorded_fingerprint(tmp_path):
    """A results file that does not say which data it certified cannot have the report show
    whatever pictures its path names (the reader's own, say)."""
    source = certify_run(tmp_path / "rs.jsonl", limit=4, n=40)
    header = load_any_results(source)[0]
    del header["data_sha256"]
    lines = source.read_text().splitlines()
    (tmp_path / "blind.jsonl").write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    result, page = report_of(tmp_path, tmp_path / "blind.jsonl")
    section = page.find("section", id="run-1")
    assert "records no fingerprint of its data: no pictures" in section.text()
    assert not section.find_all("img")


def test_data_found_beside_the_results_and_in_its_split(tmp_path, monkeypatch):
    """A relative path is found beside the results file from elsewhere; the split a run read is
    the one whose fingerprint is recorded."""
    with np.load(SAMPLES) as data:
        np.savez(tmp_path / "splits.npz", x_train=data["x"][:50], y_train=data["y"][:50], x_val=data["x"][50:],
                 y_val=data["y"][50:])
    shutil.copy(MODELS / "fmnist-rs-0.25.onnx", tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    invoke("--plugin", "rs", "model.onnx", "--data", "splits.npz", "--split", "val", "--limit", 5, "-n", 40,
           "--n0", 10, "-q", "--output", "run.jsonl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result, page = report_of(elsewhere, Path("..") / "run.jsonl")
    section = page.find("section", id="run-1")
    assert "present, SHA-256 as recorded" in section.text()
    with np.load(tmp_path / "splits.npz") as data:
        x = data["x_val"]
    import base64
    import io

    from PIL import Image

    for card in section.find_all("div", class_="card"):
        picture = Image.open(io.BytesIO(base64.b64decode(card.find("img").attrs["src"].split(",", 1)[1])))
        assert np.array_equal(np.asarray(picture), x[int(card.attrs["data-index"])])


def test_views_of_a_method_with_two_groups_and_of_a_semantic_one(tmp_path):
    drs = certify_run(tmp_path / "drs.jsonl", "fmnist-drs-0.25.onnx", "--plugin", "drs", limit=3, n=30)
    bright = certify_run(tmp_path / "bright.jsonl", "fmnist-brightness-0.25.onnx", "--plugin", "brightness", limit=3,
                         n=30)
    result, page = report_of(tmp_path, drs, bright)
    drs_cards = page.find("section", id="run-1").find_all("div", class_="card")
    assert drs_cards and all(len(c.find_all("img")) == 3 for c in drs_cards)  # the input, one view per side
    assert {c.text() for c in drs_cards[0].find_all("figcaption")} == {"input", "noisy left sub-image",
                                                                        "noisy right sub-image"}
    bright_section = page.find("section", id="run-2")
    assert any(c.text().startswith("b = ") for c in bright_section.find_all("figcaption"))
    # one plot and one table per threat model
    assert [t.attrs["data-threat"] for t in page.find_all("table", class_="summary")] == ["l2", "brightness"]
    assert len(page.find_all("svg", class_="plot")) == 2


# -- problems and what is still to come -------------------------------------------------


def test_problems_are_shown_first(tmp_path):
    source = certify_run(tmp_path / "rs.jsonl", limit=4, n=40)
    lines = source.read_text().splitlines()
    record = json.loads(lines[1])
    record["radius"] = 5.0  # above the recorded ceiling
    lines[1] = json.dumps(record)
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    result, page = report_of(tmp_path, tmp_path / "bad.jsonl")
    alert = page.find("div", id="problems")
    assert "1 radius above the recorded ceiling" in alert.text()
    main = page.find("main")
    order = [n for n in main.walk() if n.tag in ("div", "section")]
    assert order.index(alert) < order.index(page.find("section", id="threat-l2"))
    assert "radius above the recorded ceiling" in page.find("section", id="run-1").find("div", class_="alert").text()


def test_empirical_accuracy_plugs_in(runs):
    """An attack's summary (``empirical_accuracy`` by radius) adds table rows and a dashed curve."""
    file = runs["files"][0]
    header, records = load_any_results(file)
    summary = summarize(records, None, header)
    summary["empirical_accuracy"] = {k: min(1.0, v + 0.1) for k, v in summary["certified_accuracy"].items()}
    page_text, _ = render_report([ReportedRun(file, header, records, summary)])
    page = parse(page_text)
    rows = {r.attrs["data-radius"]: r.find("td").text() for r in page.find("table", class_="summary").find_all("tr")
            if r.attrs.get("data-key") == "empirical_accuracy"}
    assert rows == {k: percent(v) for k, v in summary["empirical_accuracy"].items()}
    attack = page.find("g", data_series="empirical_accuracy")
    assert "stroke-dasharray" in attack.find("polyline").attrs
    assert {float(c.attrs["data-radius"]): float(c.attrs["data-value"]) for c in attack.find_all("circle")} == \
        {float(k): v for k, v in summary["empirical_accuracy"].items()}
    assert "empirical robust accuracy r >= 0.25" in format_summary([summary], ["run"])


def test_run_without_labels(tmp_path):
    with np.load(SAMPLES) as data:
        np.savez(tmp_path / "unlabeled.npz", x=data["x"][:6])
    results = certify_run(tmp_path / "run.jsonl", data=tmp_path / "unlabeled.npz", limit=6, n=40)
    summary = summaries_of(results)[str(results)]
    result, page = report_of(tmp_path, results)
    curve = page.find("g", class_="curve")
    assert curve.attrs["data-series"] == "certified_fraction"
    points = curve_points(curve.find("polyline"))
    for radius, value in summary["certified_fraction"].items():
        assert staircase_value(points, float(radius)) == pytest.approx(value)
    assert "Per predicted class (no labels)" in page.text()
    assert page.find("div", class_="gallery", data_kind="certified")


def test_choose_spreads_over_radii():
    def counted(index, label, prediction, radius, valid=True):
        return {"label": label, "prediction": prediction, "radius": radius, "valid": valid,
                "correct": None if label is None else prediction == label, "source": {"index": index}}

    records = [counted(i, 1, 1, r) for i, r in enumerate([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.0])]
    records += [counted(10, 1, None, 0.0), counted(11, 1, 2, 0.4), counted(12, 1, 2, 0.8), counted(13, 1, 2, 0.1)]
    records += [counted(20, 1, 1, 9.0, valid=False), counted(21, 1, 3, 9.0, valid=False)]
    chosen = choose(records, per_kind=3)
    right = [s.record["radius"] for s in chosen if s.kind == "certified"]
    assert right[0] == 0.9 and right[-1] == 0.0 and len(right) == 3
    assert [s.record["source"]["index"] for s in chosen if s.kind == "wrong"] == [12, 11, 13]
    assert [s.record["source"]["index"] for s in chosen if s.kind == "abstained"] == [10]
    assert all(s.record["valid"] for s in chosen)  # flagged records are neither certified nor wrong


# -- writing -------------------------------------------------------------------------------


def test_never_replaces_a_file_it_did_not_write(runs, tmp_path):
    file = runs["files"][0]
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    assert_one_line_error(invoke("report", file, "--html", notes, expect_ok=False),
                          "exists and is not a report certify wrote")
    assert notes.read_text() == "<p>my notes</p>"
    (tmp_path / "folder.html").mkdir()
    assert_one_line_error(invoke("report", file, "--html", tmp_path / "folder.html", expect_ok=False),
                          "is a directory")
    link = tmp_path / "link.html"
    link.symlink_to(tmp_path / "nowhere.html")
    assert_one_line_error(invoke("report", file, "--html", link, expect_ok=False), "symbolic link")
    assert not (tmp_path / "nowhere.html").exists()
    copy = tmp_path / "copy.jsonl"
    shutil.copy(file, copy)
    assert_one_line_error(invoke("report", copy, "--html", copy, expect_ok=False), "same file as FILES")
    assert copy.read_bytes() == file.read_bytes()
    earlier = tmp_path / "earlier.html"
    shutil.copy(runs["page"], earlier)
    invoke("report", file, "--html", earlier)  # its own earlier page is replaced
    assert parse(earlier.read_text()).find("title").text() == f"Certification report: {file.name}"


def test_a_failed_write_keeps_the_earlier_page(runs, tmp_path, monkeypatch):
    earlier = tmp_path / "report.html"
    shutil.copy(runs["page"], earlier)
    before = earlier.read_bytes()

    def refuse(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    assert_one_line_error(invoke("report", runs["files"][0], "--html", earlier, expect_ok=False),
                          "No space left on device")
    assert earlier.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary file left


def test_write_html_report_in_python(runs, tmp_path):
    file = runs["files"][1]
    header, records = load_any_results(file)
    notes = write_html_report(tmp_path / "r.html", [ReportedRun(file, header, records, summarize(records, None, header))])
    assert notes == []
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_report_help_describes_html():
    text = invoke("report", "--help").output
    assert "--html" in text and "self-contained" in text and "offline" in text
