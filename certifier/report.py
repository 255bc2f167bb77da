"""``certify report``: results files read and summarized side by side, and the files written about them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from .files import check_output_file
from .html_report import ReportedRun, check_html_path, write_html_report
from .results import load_any_results
from .settings import check_radii
from .summaries import plot_summaries, summarize_files

PathLike = str | os.PathLike


def check_outputs(files: Sequence[PathLike], *, plot: PathLike | None = None, html: PathLike | None = None) -> None:
    """Refuse, before anything is read, a --plot or --html path that would replace what is not an
    earlier output: one of the results files, or the settings beside a Cohen-format one, say."""
    files = [Path(p) for p in files]
    sidecars = [p.with_name(p.name + ".header.json") for p in files]  # a Cohen-format file's settings
    inputs = [("FILES", p) for p in [*files, *sidecars]]
    if plot:
        check_output_file(plot, "--plot", inputs)
    if html:
        check_html_path(html, inputs)


def read_reports(files: Iterable[PathLike], radii: Iterable[float] | None = None) -> list[ReportedRun]:
    """Each results file read and summarized: at ``radii``, else at each threat model's radii and
    the levels of its sequential runs (so their tables line up)."""
    loaded = [(Path(path), *load_any_results(path)) for path in files]
    summaries = summarize_files([(header, records) for _, header, records in loaded], check_radii(radii))
    return [ReportedRun(path, header, records, summary)
            for (path, header, records), summary in zip(loaded, summaries)]


def write_plot(runs: Sequence[ReportedRun], path: PathLike) -> None:
    """A PNG of certified accuracy against radius, one curve per file."""
    plot_summaries([(run.path.name, run.header, run.records) for run in runs], path)


def write_html(runs: Sequence[ReportedRun], path: PathLike) -> list[str]:
    """The self-contained page of ``runs``; returns notes on what it had to leave out."""
    return write_html_report(path, runs)
