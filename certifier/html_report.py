"""``certify report --html``: one self-contained page about results files, for a reader who was
not there (an auditor, a reviewer).

The page holds everything it shows (the plot is inline SVG, pictures are data: URIs) and its
Content-Security-Policy forbids scripts and every fetch, so it opens the same anywhere, offline.
Text from results files, models and plugins is always escaped: markup is built only by
:func:`tag` (and the plot module), and any other string is text.

What a summary holds decides what is shown: per-radius values under the keys of
``summaries.RADIUS_SERIES`` become table rows, and ``empirical_accuracy`` (what an attack
measured) also a dashed curve on the plot beside the certified one.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .version import __version__
from .errors import CertifyError
from .files import check_output_file, replacing_file
from .metadata import recorded_classes
from .report_gallery import KINDS, Gallery, ModelFile, make_gallery, open_model
from .report_plot import Curve, step_points, svg_plot
from .results import is_index, is_number
from .stats import show_number
from .summaries import STANDARD, audit, describe_problems, percent, run_notes, summary_rows, threat_model
from .threats import ThreatModel, exact_text

#: No scripts, nothing fetched: only inline styles and data: pictures.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
#: How a page certify wrote names its maker; only such a page is ever replaced.
GENERATOR = "certify report"
VOID = frozenset({"meta", "img", "br"})
#: Metadata values longer than this are cut (a model can store megabytes there).
LONGEST_VALUE = 600


@dataclass
class ReportedRun:
    """A results file as ``certify report`` read it, and its summary."""

    path: Path
    header: dict
    records: list[dict]
    summary: dict


class Html(str):
    """Markup made here; any other ``str`` is text and is escaped."""


def text(value) -> Html:
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def tag(name: str, /, *content, **attributes) -> Html:
    """``<name attributes>content</name>``; ``class_`` is class, ``data_x`` is data-x; None values are left out."""
    attrs = "".join(f' {key.rstrip("_").replace("_", "-")}="{html.escape(str(value), quote=True)}"'
                    for key, value in attributes.items() if value is not None)
    if name in VOID:
        return Html(f"<{name}{attrs}>")
    return Html(f"<{name}{attrs}>" + "".join(text(c) for c in content if c is not None) + f"</{name}>")


def join(parts: Iterable) -> Html:
    return Html("".join(text(p) for p in parts if p is not None))


# -- writing ------------------------------------------------------------------------


def check_html_path(path: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike | None]] = ()) -> None:
    """Refuse, in one line and before anything is read, a --html path that is not a file certify may
    replace (see ``files.check_output_file``; ``inputs`` are (option, path) pairs of the command's own
    files) or that is an existing file other than a page of ``certify report --html``."""
    check_output_file(path, "--html", inputs)
    if Path(path).exists() and not written_by_certify(Path(path)):
        raise CertifyError(f"--html {path} exists and is not a report certify wrote; remove it or choose another "
                           f"--html")


def written_by_certify(path: Path) -> bool:
    """Whether ``path`` is a page ``certify report --html`` wrote (its generator tag is near the top)."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(4096)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}'.encode() in start


def write_html_report(path: str | os.PathLike, runs: Sequence[ReportedRun]) -> list[str]:
    """Write the page for ``runs`` to ``path`` in one step (a reader never sees half a page, and a
    failure leaves any earlier page as it was); returns what kept parts of it out (missing data, say)."""
    path = Path(path)
    check_html_path(path, [("FILES", run.path) for run in runs])
    page, notes = render_report(runs)
    try:
        with replacing_file(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:  # a full disk, say: the earlier page (if any) is still there
        raise CertifyError(f"cannot write {path}: {error.strerror or error}; nothing was changed") from None
    return notes


# -- the page -----------------------------------------------------------------------


def render_report(runs: Sequence[ReportedRun]) -> tuple[str, list[str]]:
    """The page, and one line per part of it that could not be made (for the terminal)."""
    names = _names(runs)
    threats = [threat_model(run.header, run.records) for run in runs]
    sections = [_RunSection(run, name, number) for number, (run, name) in enumerate(zip(runs, names), 1)]
    groups: dict[str, list[int]] = {}
    for number, threat in enumerate(threats):
        groups.setdefault(threat.name, []).append(number)
    overview = [_overview(threats[members[0]], [sections[i] for i in members]) for members in groups.values()]
    written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    inputs = sum(run.summary.get("inputs") or 0 for run in runs)
    body = join([
        tag("header",
            tag("h1", "Certification report"),
            tag("p", f"{len(runs)} results file{'s' if len(runs) != 1 else ''}, {inputs} inputs; written {written} "
                     f"by certify {__version__} (onnx-certifier)", class_="subtitle"),
            _contents(groups, threats, sections)),
        _attention(sections),
        _reading_guide(),
        *overview,
        *(section.render() for section in sections),
        tag("footer", "A self-contained page: it runs no scripts and loads nothing from the network. Radii are "
                      "certificates for the smoothed classifier, not for the bare model."),
    ])
    page = join([
        Html("<!DOCTYPE html>\n"),
        Html('<html lang="en"><head><meta charset="utf-8">'),
        tag("meta", http_equiv="Content-Security-Policy", content=CONTENT_SECURITY_POLICY),
        tag("meta", name="generator", content=f"{GENERATOR} {__version__}"),
        tag("meta", name="viewport", content="width=device-width, initial-scale=1"),
        tag("title", "Certification report: " + ", ".join(names)),
        Html(f"<style>{STYLE}</style></head>\n"),
        tag("body", tag("main", body)),
        Html("</html>\n"),
    ])
    notes = [f"{s.name}: {note}" for s in sections for note in s.terminal_notes()]
    return page, notes


def _names(runs: Sequence[ReportedRun]) -> list[str]:
    """Each run's file name, or its path where two runs share a name."""
    names = [run.path.name for run in runs]
    return [str(run.path) if names.count(name) > 1 else name for run, name in zip(runs, names)]


def _anchor(threat_name: str) -> str:
    return "threat-" + threat_name


def _contents(groups, threats, sections) -> Html:
    items = [tag("li", tag("a", f"Certified accuracy: {threats[m[0]].name}", href="#" + _anchor(threats[m[0]].name)))
             for m in groups.values()]
    items += [tag("li", tag("a", f"{s.number}. {s.name}", href=f"#{s.anchor}")) for s in sections]
    return tag("nav", tag("ul", *items), class_="contents")


def _attention(sections) -> Html | None:
    """What a reader must see first: records a summary had to flag, models that changed since the run."""
    problems = [tag("li", tag("a", s.name, href=f"#{s.anchor}"), ": ", s.problems) for s in sections if s.problems]
    notes = [tag("li", tag("a", s.name, href=f"#{s.anchor}"), ": ", s.model.problem) for s in sections
             if s.model.status != "present" and s.model.problem]
    parts = []
    if problems:
        parts.append(tag("div", tag("h2", "Problems found in the results"),
                         tag("p", "These records cannot be right as recorded; the figures below count each such input "
                                  "as certifying nothing (never as a gain)."),
                         tag("ul", *problems), class_="alert", id="problems"))
    if notes:
        parts.append(tag("div", tag("strong", "Files that are gone or changed since the runs"), tag("ul", *notes),
                         class_="note"))
    return join(parts) if parts else None


def _reading_guide() -> Html:
    return tag("details", tag("summary", "How to read this report"), tag("p",
        "Certified accuracy at radius r is the share of labeled inputs that the smoothed classifier gets right and "
        "certifies at least that far: no change within r (in the threat model's units) moves its prediction, with "
        "probability at least 1 - alpha over the sampling (exactly, for exact methods). It is a lower bound on "
        "the accuracy under any attack within r. ACR is the average certified radius, counting wrong and abstained "
        "inputs as 0. An abstention is an input the method would not decide. Records the report flags as "
        "problems are counted as certifying nothing."), open="")


def _overview(threat: ThreatModel, sections: Sequence["_RunSection"]) -> Html:
    """Certified (and empirical) accuracy by radius for the runs of one threat model: a plot and a table."""
    summaries = [s.run.summary for s in sections]
    rows, notes = summary_rows(summaries, threat)
    head = tag("tr", tag("th", ""), *(tag("th", tag("a", s.name, href=f"#{s.anchor}"), class_="num") for s in sections))
    body = [tag("tr", tag("th", row.label), *(tag("td", v, class_="num") for v in row.values),
                data_key=row.key, data_radius=row.radius) for row in rows]
    notes += [f"{s.name}: {note}" for s in sections for note in run_notes(s.run.summary)]
    plot = _plot(threat, sections)
    return tag("section",
               tag("h2", f"Certified accuracy: threat model {threat.name}"),
               tag("p", threat.heading(), class_="threat"),
               plot,
               tag("table", tag("thead", head), tag("tbody", *body), class_="summary", data_threat=threat.name),
               *(tag("p", note, class_="table-note") for note in notes),
               id=_anchor(threat.name))


def _plot(threat: ThreatModel, sections: Sequence["_RunSection"]) -> Html:
    curves = [curve for section in sections for curve in section.curves(threat)]
    # wide enough for every certified radius and every radius of the table
    right = max([0.0, *(r for c in curves for r, _ in c.points), *(r for c in curves for r, _, _ in c.marks)])
    right = (right * 1.04 if math.isfinite(right * 1.04) else right) if right > 0 else 1.0
    for curve in curves:  # the last level holds to the right edge
        if curve.points and curve.series != "empirical_accuracy" and curve.points[-1][0] < right:
            curve.points.append((right, curve.points[-1][1]))
    if not curves:
        return tag("p", "No inputs to plot.", class_="note")
    labeled = any(c.series == "certified_accuracy" for c in curves)
    unlabeled = any(c.series == "certified_fraction" for c in curves)
    y_label = ("certified accuracy / certified fraction" if labeled and unlabeled
               else "certified fraction" if unlabeled else "certified accuracy")
    if any(c.dashed for c in curves):
        y_label = "accuracy (certified, empirical)"  # an attack's curve beside the certificates
    svg = svg_plot(curves, x_label=_x_label(threat), y_label=y_label, right=right,
                   title=f"Accuracy against radius, threat model {threat.name}")
    solid = ("certified fraction (no labels: inputs whose smoothed prediction, right or wrong, is certified at "
             "least that far)" if unlabeled and not labeled
             else "certified accuracy (a lower bound: right and certified at least that far)")
    caption = (f"Solid: {solid}. "
               + ("Dashed: empirical robust accuracy (an upper bound: not moved by the attack). "
                  if any(c.dashed for c in curves) else "")
               + "Dots: the radii of the table.")
    return tag("figure", Html(svg), tag("figcaption", caption))


def _x_label(threat: ThreatModel) -> str:
    if STANDARD.get(threat.name) == threat:
        return f"radius r ({threat.description})"
    if threat.display == "factor":
        return f"radius r: {threat.parameter} in [e^-r, e^r]"
    return f"radius: {threat.parameter} ({threat.unit})"


class _RunSection:
    """Everything the page says about one results file."""

    def __init__(self, run: ReportedRun, name: str, number: int):
        self.run, self.name, self.number = run, name, number
        self.anchor = f"run-{number}"
        self.header = run.header or {}
        self.threat = threat_model(self.header, run.records)
        self.counted, _ = audit(run.records, self.header)
        self.problems = describe_problems(run.summary)
        self.model = open_model(self.header, run.path)
        self.class_names = _class_names(self.model)
        self.gallery: Gallery = make_gallery(self.header, self.counted, run.path, self.model, self.class_names)

    def terminal_notes(self) -> list[str]:
        notes = [self.model.problem] if self.model.problem else []
        if self.gallery.notes:
            notes.append("gallery: " + "; ".join(self.gallery.notes))
        return notes

    # -- the plot ------------------------------------------------------------

    def curves(self, threat: ThreatModel) -> list[Curve]:
        summary = self.run.summary
        curves = []
        if summary.get("certified_accuracy"):
            base = [r for r in self.counted if r["label"] is not None]
            good = [r for r in base if r["correct"] and r["valid"]]
            series, name = "certified_accuracy", self.name
        elif summary.get("certified_fraction") and self.counted:
            base = self.counted
            good = [r for r in base if r["valid"] and r["prediction"] is not None]
            series, name = "certified_fraction", f"{self.name} (no labels: certified fraction)"
        else:
            base = []
        if base:
            radii = [r["radius"] for r in good if math.isfinite(r["radius"])]
            curves.append(Curve(name, series, step_points(radii, len(base)), self._marks(series, threat)))
        empirical = summary.get("empirical_accuracy")
        if empirical:
            marks = self._marks("empirical_accuracy", threat)
            curves.append(Curve(f"{self.name} (attack)", "empirical_accuracy", [(r, v) for r, v, _ in marks], marks,
                                dashed=True))
        return curves

    def _marks(self, series: str, threat: ThreatModel) -> list[tuple[float, float, str]]:
        values = self.run.summary.get(series) or {}
        marks = [(float(key), value, f"{self.name}: {series.replace('_', ' ')} {threat.certified_set(key)}: "
                  f"{percent(value)}") for key, value in values.items() if is_number(value)]
        return sorted(m for m in marks if math.isfinite(m[0]))

    # -- the section ---------------------------------------------------------

    def render(self) -> Html:
        return tag("section",
                   tag("h2", f"{self.number}. {self.name}"),
                   tag("div", tag("strong", "Problems: "), self.problems, class_="alert") if self.problems else None,
                   tag("div", tag("h3", "Results file"), _facts(self._file_facts(), "file")),
                   tag("div", tag("h3", "Model"), self._model()),
                   tag("h3", "Method, threat model and settings"), _facts(self._settings(), "settings"),
                   tag("h3", "Per-class certified accuracy" if self.run.summary.get("labeled")
                       else "Per predicted class (no labels)"), self._per_class(),
                   tag("h3", "Cost per input"), _facts(self._cost(), "cost"),
                   tag("h3", "Gallery"), self._gallery(),
                   id=self.anchor, class_="run")

    def _file_facts(self) -> list[tuple[str, object]]:
        digest = hashlib.sha256()
        with open(self.run.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        summary = self.run.summary
        return [("path", str(self.run.path)), ("SHA-256", _code(digest.hexdigest())),
                ("records", len(self.run.records)),
                ("inputs counted", f"{summary.get('inputs')} ({summary.get('labeled')} labeled)"),
                ("started", self.header.get("started", "-")),
                ("certifier version", self.header.get("certifier_version", "-"))]

    def _model(self) -> Html:
        header, model = self.header, self.model
        status = {"present": ("ok", "present, SHA-256 as recorded"), "changed": ("bad", "changed since the run"),
                  "missing": ("warn", "not found"), "unreadable": ("bad", "unreadable")}[model.status]
        facts = [("path (recorded)", header.get("model", "-")), ("SHA-256 (recorded)", _code(header.get("model_sha256"))),
                 ("file now", tag("span", status[1], class_=f"badge {status[0]}"))]
        if model.problem:
            facts.append(("", model.problem))
        for group, sha in (header.get("group_models") or {}).items() if isinstance(header.get("group_models"),
                                                                                   dict) else ():
            facts.append((f"model of group {group}", _code(sha)))
        if header.get("denoiser"):
            facts += [("denoiser", header["denoiser"]), ("denoiser SHA-256", _code(header.get("denoiser_sha256")))]
            described = header.get("denoiser_metadata")
            if isinstance(described, dict):
                facts += [(f"denoiser {key}", _cut(value)) for key, value in described.items()]
        facts += list(model.facts.items())
        if self.class_names:
            facts.append(("classes", ", ".join(f"{i} {name}" for i, name in enumerate(self.class_names))))
        parts = [_facts(facts, "model")]
        if model.metadata:
            parts.append(tag("details", tag("summary", f"metadata ({len(model.metadata)} entries)"),
                             _facts([(key, _code(_cut(value))) for key, value in model.metadata.items()], "metadata")))
        return join(parts)

    def _settings(self) -> list[tuple[str, object]]:
        header, threat = self.header, self.threat
        settings = header.get("settings") if isinstance(header.get("settings"), dict) else {}
        options = settings.get("options") if isinstance(settings.get("options"), dict) else {}
        facts = [("mode", "PREDICT: smoothed predictions, no certificates" if header.get("mode") == "predict"
                  else header.get("mode", "certify")),
                 ("plugin", header.get("plugin", "-")), ("threat model", threat.heading()),
                 ("sigma", _shown(settings.get("sigma")))]
        facts += [(f"option {name}", _shown(value)) for name, value in options.items()]
        facts += [("sampling", header.get("sampling", "-")), ("n0 (selection views)", _shown(header.get("n0"))),
                  ("n (estimation views)", _shown(header.get("n"))), ("alpha", _shown(header.get("alpha"))),
                  ("seed", _shown(header.get("seed"))),
                  ("radius ceiling", threat.show(header.get("radius_ceiling"))
                   + " (the largest radius n views can certify)"),
                  ("exact certificates", "yes" if self.run.summary.get("exact") else "no")]
        if isinstance(header.get("sampling_settings"), dict):
            facts += [(f"sampling {key}", _shown(value)) for key, value in header["sampling_settings"].items()]
        facts += [(note, "") for note in run_notes(self.run.summary)]
        facts += [("input space", _shown(header.get("input_space"))), ("resize", _shown(header.get("resize"))),
                  ("output name", _shown(header.get("output_name"))), ("output kind", _shown(header.get("output_kind"))),
                  ("data (recorded)", header.get("data", "-")), ("data fingerprint", _code(header.get("data_sha256"))),
                  ("device", header.get("device", "-"))]
        return facts

    def _per_class(self) -> Html:
        summary = self.run.summary
        labeled = bool(summary.get("labeled"))
        series = "certified_accuracy" if labeled else "certified_fraction"
        keys = sorted(summary.get(series) or {}, key=float)
        by_class: dict[int, list[dict]] = {}
        for record in self.counted:
            key = record["label"] if labeled else record["prediction"]
            if is_index(key):
                by_class.setdefault(key, []).append(record)
        if not by_class:
            return tag("p", "No inputs." if not self.counted else "No predictions to group.", class_="table-note")
        head = tag("tr", tag("th", "class"), tag("th", "inputs", class_="num"),
                   *(tag("th", self.threat.certified_set(k), class_="num") for k in keys),
                   tag("th", "abstained", class_="num"))
        rows = []
        for label in sorted(by_class):
            records = by_class[label]
            good = [r for r in records if r["valid"] and r["prediction"] is not None and (r["correct"] or not labeled)]
            shares = [percent(sum(1 for r in good if r["radius"] >= float(k)) / len(records)) for k in keys]
            rows.append(tag("tr", tag("th", self._class(label)), tag("td", len(records), class_="num"),
                            *(tag("td", s, class_="num") for s in shares),
                            tag("td", sum(1 for r in records if r["prediction"] is None), class_="num"),
                            data_class=label))
        note = ("Inputs of each true class that are right and certified at least that far." if labeled else
                "Inputs by the class the smoothed classifier predicts (right or wrong: there are no labels).")
        return join([tag("table", tag("thead", head), tag("tbody", *rows), class_="per-class"),
                     tag("p", note, class_="table-note")])

    def _class(self, number: int) -> str:
        names = self.class_names
        return f"{number} {names[number]}" if names and number < len(names) else str(number)

    def _cost(self) -> list[tuple[str, object]]:
        sources = [r["source"] for r in self.counted]
        seconds = [s["seconds"] for s in sources if is_number(s.get("seconds"))]
        passes = [s["forward_passes"] for s in sources if is_number(s.get("forward_passes"))]
        facts = []
        if seconds:
            facts += [("seconds per input (mean)", show_number(statistics.fmean(seconds), 3)),
                      ("seconds per input (median)", show_number(statistics.median(seconds), 3)),
                      ("seconds in all", show_number(sum(seconds), 1))]
        if passes:
            facts += [("forward passes per input (mean)", f"{statistics.fmean(passes):,.0f}"),
                      ("forward passes per input (fewest, most)", f"{min(passes):,.0f}, {max(passes):,.0f}"),
                      ("forward passes in all", f"{sum(passes):,.0f}")]
        budget = self.run.summary.get("passes_budget")
        if is_number(budget):
            facts.append(("budget per input (n0 + n per vote group)", f"{budget:,}"))
        return facts + [("device", self.header.get("device", "-"))] if facts else [("", "no times recorded")]

    def _gallery(self) -> Html:
        gallery = self.gallery
        parts = [tag("p", note, class_="note") for note in gallery.notes]
        if gallery.views_made_by:
            clipped = " Values outside [0, 1] are drawn clipped (the model reads them as they are)." * gallery.clipped
            parts.append(tag("p", f"Views made afresh for this report by {gallery.views_made_by}, with the results "
                                  f"header's settings: what the model reads, not the samples the run voted with."
                                  + clipped, class_="table-note"))
        predict = self.header.get("mode") == "predict"
        headings = {"certified": "Right" if predict else "Right and certified", "abstained": "Abstained",
                    "wrong": "Wrong"}
        for kind in KINDS:
            shown = [s for s in gallery.inputs if s.kind == kind]
            if shown:
                parts.append(tag("h4", f"{headings[kind]} ({len(shown)})"))
                parts.append(tag("div", *(self._card(s) for s in shown), class_="gallery", data_kind=kind))
        if not gallery.inputs:
            parts.append(tag("p", "No inputs to show.", class_="table-note"))
        return join(parts)

    def _card(self, shown) -> Html:
        record, source = shown.record, shown.record["source"]
        lines = [f"input {source.get('index')}"]
        if record["label"] is not None:
            lines.append(f"label {self._class(record['label'])}")
        if record["prediction"] is None:
            lines.append("abstained")
        else:
            lines.append(f"prediction {self._class(record['prediction'])}")
            if self.header.get("mode") == "predict":
                lines.append("(PREDICT: no certificate)")
            elif record["radius"] > 0:
                at_ceiling = record["radius"] == self.header.get("radius_ceiling")
                lines.append(f"certified radius {self.threat.show(record['radius'])}"
                             + (" (the radius ceiling)" if at_ceiling else ""))
            else:
                lines.append("certified as the smoothed prediction only (radius 0)")
        cost = []
        if is_number(source.get("forward_passes")):
            cost.append(f"{source['forward_passes']:,.0f} forward passes")
        if is_number(source.get("seconds")):
            cost.append(f"{show_number(source['seconds'], 3)} s")
        if cost:
            lines.append(", ".join(cost))
        pictures = [tag("figure", tag("img", src=p.source, alt=p.caption), tag("figcaption", p.caption), class_="pic")
                    for p in shown.pictures]
        return tag("div", tag("div", *pictures, class_="pictures") if pictures else None,
                   tag("p", *(join([line, tag("br")]) for line in lines), class_="caption"),
                   class_=f"card {shown.kind}", data_index=source.get("index"))


def _class_names(model: ModelFile) -> list[str] | None:
    try:
        return recorded_classes(model.metadata) if model.status == "present" else None
    except CertifyError:
        return None


def _facts(facts: Sequence[tuple[str, object]], kind: str) -> Html:
    """A two-column table of facts; ``kind`` names it for machines (data-facts)."""
    return tag("table", tag("tbody", *(tag("tr", tag("th", key), tag("td", value)) for key, value in facts)),
               class_="facts", data_facts=kind)


def _code(value) -> Html:
    return tag("code", "-" if value is None else value)


def _cut(value) -> str:
    value = str(value)
    return value if len(value) <= LONGEST_VALUE else value[:LONGEST_VALUE] + f"... ({len(value):,} characters)"


def _shown(value) -> str:
    """A header value as text: numbers as short as they read back, structures as compact JSON-like text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return exact_text(value) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return _cut(value)


STYLE = """
:root { color-scheme: light; }
body { margin: 0; background: #eef0f3; color: #1c2430;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 28px 40px 48px; background: #fff; }
h1 { font-size: 30px; margin: 0; }
h2 { font-size: 22px; margin: 40px 0 8px; padding-bottom: 4px; border-bottom: 2px solid #dde2e8; }
h3 { font-size: 17px; margin: 24px 0 6px; }
h4 { font-size: 15px; margin: 16px 0 6px; color: #3a4656; }
.subtitle { color: #566273; margin: 4px 0 12px; }
nav.contents ul { margin: 0; padding-left: 20px; }
a { color: #0b5cad; }
section.run { margin-top: 24px; }
.threat { color: #3a4656; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 14px; }
th, td { padding: 4px 12px; border-bottom: 1px solid #e3e7ec; text-align: left; vertical-align: top; }
thead th { background: #eef2f6; border-bottom: 2px solid #cfd6de; }
table.summary tbody tr:nth-child(even), table.per-class tbody tr:nth-child(even) { background: #f8f9fb; }
table.summary tr[data-key="certified_accuracy"] td { font-weight: 600; }
table.summary tr[data-key="empirical_accuracy"] td { font-style: italic; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.facts th { font-weight: 500; color: #4a5567; width: 15em; }
table.facts td { overflow-wrap: anywhere; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow-wrap: anywhere; }
.table-note { color: #566273; font-size: 13px; margin: 2px 0 8px; }
.alert { border-left: 6px solid #c62828; background: #fdecea; padding: 10px 16px; margin: 16px 0; }
.alert h2 { margin: 0 0 4px; border: 0; font-size: 19px; color: #9b1c1c; }
.note { border-left: 6px solid #d99a00; background: #fff6dc; padding: 8px 14px; margin: 10px 0; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 13px; font-weight: 600; }
.badge.ok { background: #dff3e4; color: #17692f; }
.badge.warn { background: #fff0c2; color: #7a5300; }
.badge.bad { background: #fbd9d9; color: #9b1c1c; }
figure { margin: 8px 0; }
figcaption { color: #566273; font-size: 13px; }
svg.plot { max-width: 100%; height: auto; font-family: inherit; }
svg.plot .tick { font-size: 12px; fill: #3a4656; }
svg.plot .axis-label { font-size: 13px; fill: #1c2430; }
svg.plot .legend { font-size: 13px; fill: #1c2430; }
details summary { cursor: pointer; color: #0b5cad; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid #dde2e8; border-radius: 8px; padding: 10px; background: #fbfcfd; }
.card.certified { border-top: 4px solid #2e8b57; }
.card.abstained { border-top: 4px solid #8a94a3; }
.card.wrong { border-top: 4px solid #c62828; }
.pictures { display: flex; gap: 6px; }
figure.pic { margin: 0; width: 72px; text-align: center; }
figure.pic img { width: 72px; height: auto; image-rendering: pixelated; display: block; background: #000; }
figure.pic figcaption { font-size: 11px; line-height: 1.25; margin-top: 2px; overflow-wrap: anywhere; }
.caption { margin: 8px 0 0; font-size: 13px; }
footer { margin-top: 40px; color: #6b7685; font-size: 13px; border-top: 1px solid #dde2e8; padding-top: 8px; }
@media print { body { background: #fff; } main { padding: 0; } details { display: block; } }
"""
