"""``certify report --html`` in a real browser: headless Chromium opens the page, and a probe
says from inside the browser what is drawn (the plot's curves and points where the numbers put
them, the tables' numbers, every picture decoded, nothing fetched). A screenshot of the page is
kept as an artifact ($CERTIFY_ARTIFACTS, else the test's temporary folder; the path is printed).

Without Chromium the test is skipped, except in CI (CI set), where it fails: .ci/run installs it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from certifier.html_report import CONTENT_SECURITY_POLICY
from certifier.summaries import percent

from html_pages import certify_run, invoke, summaries_of

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
WIDTH = 1280
#: Reads the page once it has loaded and writes what it found into <pre id="probe"> (the dumped DOM).
PROBE = """
const violations = [];
document.addEventListener('securitypolicyviolation', e => violations.push(e.blockedURI + ' ' + e.violatedDirective));
window.addEventListener('load', () => {
  const box = el => { const b = el.getBoundingClientRect(); return [b.left, b.top, b.width, b.height]; };
  const found = {
    violations,
    resources: performance.getEntriesByType('resource').map(e => e.name),
    height: document.documentElement.scrollHeight,
    images: [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
                                            shown: box(i)})),
    plots: [...document.querySelectorAll('svg.plot')].map(svg => ({
      box: box(svg),
      curves: [...svg.querySelectorAll('g.curve')].map(g => ({
        run: g.dataset.run, series: g.dataset.series,
        length: g.querySelector('polyline').getTotalLength(),
        box: box(g.querySelector('polyline')),
        marks: [...g.querySelectorAll('circle')].map(c => ({radius: +c.dataset.radius, value: +c.dataset.value,
                                                           box: box(c)})),
      })),
      texts: [...svg.querySelectorAll('text')].map(t => t.textContent),
    })),
    tables: [...document.querySelectorAll('table.summary')].map(t => ({
      runs: [...t.querySelectorAll('thead th')].slice(1).map(th => th.textContent),
      rows: [...t.querySelectorAll('tbody tr')].map(tr => ({key: tr.dataset.key || null,
        radius: tr.dataset.radius || null, cells: [...tr.querySelectorAll('td')].map(td => td.innerText)})),
      box: box(t),
    })),
    cards: [...document.querySelectorAll('.gallery')].map(g => [g.dataset.kind, g.querySelectorAll('.card').length]),
    problems: document.querySelector('#problems') ? document.querySelector('#problems').innerText : null,
    scripts: document.scripts.length,
    handlers: [...document.querySelectorAll('*')].flatMap(el => [...el.attributes].map(a => a.name))
      .filter(name => name.startsWith('on')),
    text: document.body.innerText,
  };
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(found);
  document.body.appendChild(pre);
});
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: CI must install it (Debian's chromium package; .ci/run does)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


def browse(browser: str, page: Path, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *arguments, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def probed(page: Path) -> Path:
    """A copy of the page with the probe as its first script: its policy allows that one script
    by its hash, and nothing else changes."""
    text = page.read_text()
    policy = html.escape(CONTENT_SECURITY_POLICY, quote=True)
    assert text.count(policy) == 1
    digest = base64.b64encode(hashlib.sha256(PROBE.encode()).digest()).decode()
    allowed = html.escape(f"{CONTENT_SECURITY_POLICY}; script-src 'sha256-{digest}'", quote=True)
    text = text.replace(policy, allowed).replace('<meta name="generator"', f"<script>{PROBE}</script>"
                                                 '<meta name="generator"', 1)
    copy = page.with_name("probed-" + page.name)
    copy.write_text(text)
    return copy


def probe(browser: str, page: Path, profile: Path) -> dict:
    """What the probe found on ``page``, in a window as wide as the screenshot's."""
    result = browse(browser, probed(page), profile, f"--window-size={WIDTH},900", "--dump-dom")
    match = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert match, f"the probe did not run; chromium said: {result.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("CERTIFY_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_report_in_chromium(tmp_path, artifacts):
    browser = chromium()
    runs = [certify_run(tmp_path / "rs-0.25.jsonl", "fmnist-rs-0.25.onnx", limit=24),
            certify_run(tmp_path / "rs-0.5.jsonl", "fmnist-rs-0.5.onnx", limit=24, n=60),
            certify_run(tmp_path / "brightness-0.25.jsonl", "fmnist-brightness-0.25.onnx", "--plugin", "brightness",
                        limit=12)]
    page = tmp_path / "report.html"
    invoke("report", *runs, "--html", page)
    summaries = summaries_of(*runs)

    found = probe(browser, page, tmp_path / "profile")
    assert found["violations"] == [] and found["resources"] == []  # nothing fetched, nothing blocked
    assert found["scripts"] == 1 and found["handlers"] == []  # the probe's script only

    # the plots: one per threat model, each run's curve drawn, its points where the numbers put them
    assert len(found["plots"]) == 2
    curves = {c["run"]: c for plot in found["plots"] for c in plot["curves"]}
    assert set(curves) == {r.name for r in runs}
    for run in runs:
        curve, summary = curves[run.name], summaries[str(run)]
        assert curve["series"] == "certified_accuracy" and curve["length"] > 100
        assert curve["box"][2] > 300  # spans the plot
        marks = sorted(curve["marks"], key=lambda m: m["radius"])
        assert {m["radius"]: m["value"] for m in marks} == {
            float(k): v for k, v in summary["certified_accuracy"].items()}
        for before, after in zip(marks, marks[1:]):  # further right, and no higher (a lower value)
            assert after["box"][0] > before["box"][0]
            assert after["value"] <= before["value"] and after["box"][1] >= before["box"][1] - 0.01
        top, bottom = max(marks, key=lambda m: m["value"]), min(marks, key=lambda m: m["value"])
        if top["value"] > bottom["value"]:
            scale = (bottom["box"][1] - top["box"][1]) / (top["value"] - bottom["value"])
            for mark in marks:  # heights in proportion to the values
                assert mark["box"][1] == pytest.approx(top["box"][1] + scale * (top["value"] - mark["value"]), abs=1)
    texts = " ".join(t for plot in found["plots"] for t in plot["texts"])
    assert "radius r (L2 distance in pixel space)" in texts and "radius: |b|" in texts and "100%" in texts

    # the tables hold the numbers of the results files
    assert [t["runs"] for t in found["tables"]] == [[runs[0].name, runs[1].name], [runs[2].name]]
    columns = {name: (table, number) for table in found["tables"] for number, name in enumerate(table["runs"])}
    for run in runs:
        table, column = columns[run.name]
        summary = summaries[str(run)]
        shown = {row["radius"]: row["cells"][column] for row in table["rows"] if row["key"] == "certified_accuracy"}
        assert shown == {k: percent(v) for k, v in summary["certified_accuracy"].items()}
        acr = next(row["cells"][column] for row in table["rows"] if row["key"] == "acr")
        assert float(acr) == pytest.approx(summary["acr"], abs=1e-4)

    # every picture decoded, at the data's size, and laid out on the page
    assert len(found["images"]) >= 3 * 4
    for image in found["images"]:
        assert image["complete"] and (image["width"], image["height"]) == (28, 28)
        assert image["shown"][2] > 40 and image["shown"][3] > 40
    kinds = dict((kind, count) for kind, count in found["cards"] if count)
    assert kinds.get("certified") and found["problems"] is None

    # the page itself (not the probed copy) as a person sees it
    height = min(max(found["height"], 800), 16000)
    screenshot = artifacts / "report.png"
    browse(browser, page, tmp_path / "profile-2", f"--window-size={WIDTH},{height}", f"--screenshot={screenshot}")
    shutil.copy(page, artifacts / "report.html")
    from PIL import Image

    with Image.open(screenshot) as picture:
        assert picture.size == (WIDTH, height)
        colours = picture.convert("L").getextrema()
        assert colours[1] - colours[0] > 100  # not a blank page
    print(f"\nreport and screenshot: {artifacts}")


def test_hostile_header_stays_text_in_chromium(tmp_path):
    """Markup in a results header (and file name) shows as text: no element, script or handler
    comes of it, and the page tries to load nothing."""
    browser = chromium()
    source = certify_run(tmp_path / "clean.jsonl", limit=3, n=30)
    lines = source.read_text().splitlines()
    header = json.loads(lines[0])
    attack = '"><script>document.title="owned"</script><img src="https://example.invalid/x.png" onerror="alert(1)">'
    header.update(plugin=attack, model=attack, data=attack, started=attack, device=attack,
                  settings={"sigma": attack, "options": {attack: attack}})
    hostile = tmp_path / '<img src="https:x" onerror="alert(2)">.jsonl'
    hostile.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    page = tmp_path / "hostile.html"
    invoke("report", hostile, "--html", page)
    found = probe(browser, page, tmp_path / "profile")
    assert found["violations"] == [] and found["resources"] == []
    assert found["scripts"] == 1 and found["handlers"] == []
    assert found["images"] == []  # the data path is not one: no gallery pictures, and no injected image
    assert found["text"].count('<script>document.title="owned"</script>') >= 5
    assert '<img src="https:x" onerror="alert(2)">.jsonl' in found["text"]
