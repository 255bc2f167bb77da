"""The ``certify`` command line."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import click
from click_default_group import DefaultGroup

from . import _interrupted_while_importing
from .api import open_job
from .command_options import NUMBERS, EngineCommand, engine_options
from .errors import CertifyError
from .executors import open_executor
from .one_line import friendly_errors  # noqa: F401  (plugins import it from here)
from .one_line import interrupted, one_line_failures, stopping_cleanly
from .plugins import add_commands, describe_plugins, load_plugins, plugin_lines
from .results import COHEN_COLUMNS, cohen_row
from .settings import RunSettings
from .summaries import DEFAULT_RADII, describe_plan, describe_problems, format_summary, json_safe
from .version import __version__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Python warnings (a plugin rounding inputs, say) as one line, without source code."""
    click.echo(f"certify: warning: {message}", err=True)


def _first_interrupt(signum, frame):
    """Ctrl-C: stop cleanly (a KeyboardInterrupt, handled where it lands); a second one
    while stopping (waiting for batches in flight) leaves at once."""
    signal.signal(signal.SIGINT, _stop_now)
    raise KeyboardInterrupt


def _stop_now(signum, frame):
    # Every result is flushed as it is written: nothing is lost by not waiting for the batches.
    os.write(2, b"\ncertify: interrupted; stopped at once\n")
    os._exit(130)


class CertifyGroup(DefaultGroup):
    """Loads plugins (and the commands they add) before the command line is parsed."""

    _plugin_commands_added = False

    def main(self, *args, **kwargs):
        previous = signal.getsignal(signal.SIGINT)
        ours = (previous in (_interrupted_while_importing, signal.default_int_handler)
                and threading.current_thread() is threading.main_thread())
        if ours:
            signal.signal(signal.SIGINT, _first_interrupt)
        try:
            return self._main(*args, **kwargs)
        finally:
            if ours:
                # The console script is exiting: a late Ctrl-C must not interrupt Python's shutdown.
                # Called from a program (or a test), give its own handler back.
                signal.signal(signal.SIGINT, _stop_now if previous is _interrupted_while_importing else previous)

    def _main(self, *args, **kwargs):
        warnings.showwarning = _show_warning
        if not CertifyGroup._plugin_commands_added:
            CertifyGroup._plugin_commands_added = True
            try:
                load_plugins()
                for problem in add_commands(self):
                    click.echo(f"certify: warning: {problem}", err=True)
            except CertifyError as error:
                click.echo(f"Error: {error}", err=True)
                sys.exit(1)
            except KeyboardInterrupt:
                sys.exit(interrupted().exit_code)
        return super().main(*args, **kwargs)

    def invoke(self, ctx):
        # Commands plugins add may not turn failures or Ctrl-C into one line themselves
        # (click alone would print a traceback, or "Aborted!" and exit 1).
        return one_line_failures(super().invoke, ctx)


@click.group(cls=CertifyGroup, default="run", default_if_no_args=False)
@click.version_option(__version__, prog_name="certify")
def cli():
    """Certify an ONNX classifier against adversarial perturbations by randomized smoothing.

    \b
        certify --plugin rs model.onnx --data images.npz --output run.jsonl
        certify plugins
        certify report run.jsonl

    Inputs live in pixel space [0, 1]; noise is added there and radii are stated there.
    """


def _note(quiet: bool, message: str) -> None:
    if not quiet:
        click.echo(f"certify: {message}", err=True)


def _execute(mode: str, *, model, data_path, split, output, fmt, quiet, **values):
    if data_path is None:
        raise CertifyError("no --data given: pass an .npz/.npy file, an image folder or an image to certify")
    settings = RunSettings.from_values({**values, "mode": mode})  # checked before the model loads

    def note_ray(message: str) -> None:
        if not quiet or message.startswith("warning"):
            click.echo(f"certify: {message}", err=True)

    def loaded(run) -> None:
        if executor is None:
            _note(quiet, run.model.device_note + "".join(f"; {note}" for note in run.model.notes))
        elif run.model.notes:
            _note(quiet, "; ".join(run.model.notes))
        for note in run.notes:
            _note(quiet, note)
        if run.denoiser:
            _note(quiet, f"views go through the denoiser {run.denoiser.name} before the model")

    with open_executor(settings, note_ray) as executor:
        with open_job(model, data_path, settings=settings, split=split, output=output, format=fmt,
                      executor=executor, on_load=loaded) as job:
            started = time.perf_counter()
            _run_job(job, output, quiet)
    elapsed = time.perf_counter() - started
    summary = job.summary()
    if mode == "predict":
        accuracy = summary["accuracy"]
        click.echo(f"inputs {summary['inputs']}, abstained {summary['abstained']}"
                   + (f", accuracy {100 * accuracy:.1f}%" if accuracy is not None else ""))
    else:
        name = output.name if output else job.run.plugin
        _warn_problems(name, summary)
        click.echo(format_summary([summary], [name]))
    kept = "" if output else "; pass --output FILE to keep the results"
    _note(quiet, f"{len(job.todo)} inputs in {elapsed:.1f} s{kept}")


def _run_job(job, output, quiet: bool) -> None:
    """Certify the job's inputs left, with a progress bar; Ctrl-C or SIGTERM stops cleanly."""
    for note in dict.fromkeys(n for g in job.engine.groups if g.denoised is not None for n in g.denoised.notes):
        _note(quiet, note)
    if job.saved:
        _note(quiet, f"resuming {output}: {len(job.done)} of {len(job.indices)} inputs already done")
    sequential = job.header["sampling"] == "sequential"
    if sequential:
        _note(quiet, describe_plan(job.header))
        fixed = len(job.engine.groups) * (job.header["n0"] + job.header["n"])  # what fixed n would cost
    def kept() -> str:
        return f"; {job.saved} results are in {output}, rerun the same command to resume" if output else ""

    with stopping_cleanly(kept), _progress(len(job.indices), len(job.done), quiet) as bar:
        passes = 0
        for count, result in enumerate(job, 1):
            bar.update(1)
            passes += result.forward_passes
            if sequential:
                bar.set_postfix_str(_passes_note(passes / count, fixed), refresh=False)


def _passes_note(mean: float, fixed: int) -> str:
    return f"{mean:,.0f} passes/input ({fixed / max(mean, 1):.1f}x fewer than fixed n)"


def _warn_problems(name: str, summary: dict) -> None:
    """One warning line per results file whose records a summary had to flag (never silenced by -q)."""
    problems = describe_problems(summary)
    if problems:
        click.echo(f"certify: warning: {name}: {problems}", err=True)


class _NoBar:
    def update(self, count):
        pass

    def set_postfix_str(self, text, refresh=True):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress(total: int, done: int, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="input", dynamic_ncols=True, file=sys.stderr)


@cli.command(name="run", cls=EngineCommand)
@engine_options
def run_command(**kwargs):
    """Certify each input: a prediction and a radius (the default command).

    \b
        certify --plugin rs --sigma 0.25 -n 10000 model.onnx --data x.npz --output run.jsonl
    """
    _execute("certify", **kwargs)


@cli.command(name="predict", cls=EngineCommand)
@engine_options
def predict_command(**kwargs):
    """Cohen et al.'s PREDICT: the smoothed prediction or abstain, no radius."""
    _execute("predict", **kwargs)


@cli.command(name="plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_command(as_json):
    """List installed plugins, their smoothing methods and options."""
    described = describe_plugins()
    if as_json:
        click.echo(json.dumps(described, indent=2, default=str))
        return
    for line in plugin_lines(described):
        click.echo(line)


@cli.command(name="report")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--radii", type=NUMBERS, help=f"Radii for the table (default: each threat model's; "
                                           f"{','.join(f'{r:g}' for r in DEFAULT_RADII)} for L1, L2, Linf; and the "
                                           f"levels of sequential runs).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of certified accuracy against radius.")
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one self-contained HTML page to send: settings, model hashes, plot, tables, per-class "
                   "accuracy, cost and a gallery of inputs with noisy views.")
@click.option("--format", "fmt", type=click.Choice(["table", "cohen"]), default="table", show_default=True,
              help="cohen: print the first file as Cohen et al.'s TSV.")
def report_command(files, radii, as_json, plot, html, fmt):
    """Summarize results files side by side: certified accuracy, ACR, abstain rate, cost.

    Files without labels get prediction statistics instead of accuracy. Records that
    cannot be right (a radius above the recorded ceiling, a repeated index, ...) are
    named in a warning and count as inputs that certify nothing.

    --html report.html writes a page to send, which opens offline (no scripts, nothing
    fetched): hashes, settings, plot and tables, per-class accuracy, cost, problems, and
    a gallery of inputs with views made by the run's plugin.
    """
    from . import report

    report.check_outputs(files, plot=plot, html=html)
    runs = report.read_reports(files, radii)
    for run in runs:
        _warn_problems(run.path.name, run.summary)
    report.check_shown(runs, html=bool(html), cohen=fmt == "cohen")
    if fmt == "cohen":
        click.echo("\t".join(COHEN_COLUMNS))
        for record in runs[0].records:
            click.echo(cohen_row(record))
    elif as_json:
        click.echo(json.dumps({str(run.path): json_safe(run.summary) for run in runs}, indent=2))
    else:
        click.echo(format_summary([run.summary for run in runs], [run.path.name for run in runs]))
    if plot:
        report.write_plot(runs, plot)
        click.echo(f"certify: wrote {plot}", err=True)
    if html:
        for note in report.write_html(runs, html):
            click.echo(f"certify: note: {note}", err=True)
        click.echo(f"certify: wrote {html}", err=True)
