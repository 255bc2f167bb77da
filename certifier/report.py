"""``certify report``: results files read and summarized side by side, and the files written about them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from .attack_results import is_attack, load_report_file, pair_with_certify, summarize_attack, with_attack
from .errors import CertifyError
from .files import check_output_file
from .html_report import ReportedRun, check_html_path, write_html_report
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
    the levels of its sequential runs (so their tables line up). An attack (``certify attack``)
    is shown inside the summary of the certify run of the same classifier and inputs among
    ``files`` (its ``empirical_accuracy`` beside the certified accuracy), or alone without one."""
    loaded = [(Path(path), *load_report_file(path)) for path in files]
    runs = [(header, records) for _, header, records in loaded]
    certify_runs = [number for number, (header, _) in enumerate(runs) if not is_attack(header)]
    certified = dict(zip(certify_runs, summarize_files([runs[i] for i in certify_runs], check_radii(radii))))
    summaries = [certified[number] if number in certified else summarize_attack(*runs[number])
                 for number in range(len(runs))]
    pairs = pair_with_certify(runs)
    for attack, certify_run in pairs.items():
        summaries[certify_run] = with_attack(summaries[certify_run], summaries[attack], loaded[attack][0].name)
    return [ReportedRun(path, header, records, summary)
            for number, ((path, header, records), summary) in enumerate(zip(loaded, summaries)) if number not in pairs]


def check_shown(runs: Sequence[ReportedRun], *, html: bool = False, cohen: bool = False) -> None:
    """Refuse an HTML page or a Cohen table of an attack with no certificates beside it."""
    alone = [run.path.name for run in runs if is_attack(run.header)]
    if alone and (html or cohen):
        option = "--html" if html else "--format cohen"
        raise CertifyError(f"{option} shows certificates, and {alone[0]} holds an attack alone; give the certify "
                           f"results of the same inputs too (the attack is shown beside them)")


def write_plot(runs: Sequence[ReportedRun], path: PathLike) -> None:
    """A PNG of certified accuracy against radius, one curve per file (and an attack's empirical accuracy beside it)."""
    plot_summaries([(run.path.name, run.header, run.records) for run in runs], path, [run.summary for run in runs])


def write_html(runs: Sequence[ReportedRun], path: PathLike) -> list[str]:
    """The self-contained page of ``runs``; returns notes on what it had to leave out."""
    return write_html_report(path, runs)
