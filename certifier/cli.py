"""The ``certify`` command line."""

from __future__ import annotations

import functools
import json
import math
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
from .command_options import NUMBERS, method_options, settings_options
from .errors import DEBUG_VARIABLE, CertifyError, caused_by_interrupt
from .executors import open_executor
from .files import check_output_file
from .plugins import add_commands, describe_plugins, load_plugins, plugin_modules
from .results import FORMATS, load_any_results
from .settings import JobSettings, ModelSettings, RaySettings, RunSettings, check_radii
from .summaries import DEFAULT_RADII, describe_plan, describe_problems, format_summary, plot_summaries, summarize_files
from .threats import ThreatModel
from .version import __version__


class Interrupted(BaseException):
    """SIGTERM, turned into an exception so results are closed cleanly.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way
    (the engine's, a plugin's) mistakes it for a failure.
    """


def _raise_interrupted(signum, frame):
    raise Interrupted()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Python warnings (a plugin rounding inputs, say) as one line, without source code."""
    click.echo(f"certify: warning: {message}", err=True)


def _interrupted() -> click.exceptions.Exit:
    """Ctrl-C outside the run loop (while starting up): one line, exit status 130."""
    click.echo("\ncertify: interrupted", err=True)
    return click.exceptions.Exit(130)


def _first_interrupt(signum, frame):
    """Ctrl-C: stop cleanly (a KeyboardInterrupt, handled where it lands); a second one
    while stopping (waiting for batches in flight) leaves at once."""
    signal.signal(signal.SIGINT, _stop_now)
    raise KeyboardInterrupt


def _stop_now(signum, frame):
    # Every result is flushed as it is written: nothing is lost by not waiting for the batches.
    os.write(2, b"\ncertify: interrupted; stopped at once\n")
    os._exit(130)


def friendly_errors(command):
    """Turn every failure into a one-line error and a non-zero exit (no traceback).

    The command group already does this for every command, plugins' too; this is kept for
    plugins written when it did not.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        return _one_line_failures(command, *args, **kwargs)

    return wrapper


def _one_line_failures(function, *args, **kwargs):
    """Call ``function``; any failure becomes one line (a ClickException) or exit status 130."""
    try:
        return function(*args, **kwargs)
    except CertifyError as error:
        raise click.ClickException(str(error)) from None
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except KeyboardInterrupt:
        raise _interrupted() from None
    except Exception as error:
        if caused_by_interrupt(error):
            raise _interrupted() from None
        if os.environ.get(DEBUG_VARIABLE):
            raise
        if isinstance(error, OSError) and error.strerror:
            where = f" ({error.filename})" if error.filename else ""
            raise click.ClickException(f"{error.strerror}{where}; fix that and rerun the same command") from None
        text = " ".join(str(error).split())[:300]
        raise click.ClickException(
            f"unexpected {type(error).__name__}{_blame(error)}: {text} (set {DEBUG_VARIABLE}=1 to see the "
            f"traceback)"
        ) from None


def _blame(error: BaseException) -> str:
    """' in plugin X' when the innermost frame of a registered plugin's code is on the traceback.

    Only real plugins are named (a plugin's module or the module of a method it registered),
    never certifier itself or the libraries anything calls.
    """
    owners = plugin_modules()
    tb = error.__traceback__
    plugin = None
    while tb is not None:
        plugin = owners.get(tb.tb_frame.f_globals.get("__name__"), plugin)
        tb = tb.tb_next
    return f" in plugin {plugin}" if plugin else ""


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
                sys.exit(_interrupted().exit_code)
        return super().main(*args, **kwargs)

    def invoke(self, ctx):
        # Commands plugins add may not turn failures or Ctrl-C into one line themselves
        # (click alone would print a traceback, or "Aborted!" and exit 1).
        return _one_line_failures(super().invoke, ctx)


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


def engine_options(command):
    """Options shared by ``run`` and ``predict``: the settings records' (``certifier.settings``),
    and where the inputs come from and the results go."""
    options = [
        click.argument("model", type=click.Path(dir_okay=False, path_type=Path)),
        method_options(),
        click.option("-d", "--data", "data_path", type=click.Path(path_type=Path),
                     help="Inputs: .npz (x, y or x_test, y_test), .npy, a folder of images or an image."),
        click.option("--split", help="Use x_SPLIT / y_SPLIT from an .npz (e.g. test, train)."),
        settings_options(JobSettings, names=["n0", "n", "alpha", "batch_size", "limit", "skip", "seed"]),
        click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Results file; a rerun of the same command resumes it."),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True,
                     help="jsonl, or cohen for Cohen et al.'s TSV."),
        settings_options(ModelSettings, exclude=["plugin", "sigma", "options"]),
        settings_options(JobSettings, names=["workers", "sampling", "radius", "radii"]),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar or notes."),
        settings_options(RaySettings),
    ]
    for option in reversed(options):
        command = option(command)
    return command


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
        if run.sigma_source in ("model", "denoiser"):
            _note(quiet, f"sigma {run.method.sigma} from the {run.sigma_source}'s metadata")
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
    _note(quiet, f"{len(job.todo)} inputs in {elapsed:.1f} s" + ("" if output else "; pass --output FILE to keep the results"))


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
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        with _progress(len(job.indices), len(job.done), quiet) as bar:
            passes = 0
            for count, result in enumerate(job, 1):
                bar.update(1)
                passes += result.forward_passes
                if sequential:
                    bar.set_postfix_str(_passes_note(passes / count, fixed), refresh=False)
    except (KeyboardInterrupt, Interrupted):
        saved = f"; {job.saved} results are in {output}, rerun the same command to resume" if output else ""
        click.echo(f"\ncertify: interrupted{saved}", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _passes_note(mean: float, fixed: int) -> str:
    return f"{mean:,.0f} passes/input ({fixed / max(mean, 1):.1f}x fewer than fixed n)"


def _warn_problems(name: str, summary: dict) -> None:
    """One warning line per results file whose records a summary had to flag (never silenced by -q)."""
    problems = describe_problems(summary)
    if problems:
        click.echo(f"certify: warning: {name}: {problems}", err=True)


def _json_safe(value):
    """NaN and infinity as null: they are not JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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


@cli.command(name="run")
@engine_options
def run_command(**kwargs):
    """Certify each input: a prediction and a radius (the default command).

    \b
        certify --plugin rs --sigma 0.25 -n 10000 model.onnx --data x.npz --output run.jsonl
    """
    _execute("certify", **kwargs)


@cli.command(name="predict")
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
    for plugin in described:
        kind = "built-in" if plugin["builtin"] else "installed"
        source = f", from {plugin['distribution']} {plugin['version']}" if plugin["distribution"] else ""
        click.echo(f"{plugin['name']} ({kind}; hooks: {', '.join(plugin['hooks'])}){source}")
        for note in plugin["notes"]:
            click.echo(f"  note: {note}")
        for method in plugin["methods"]:
            threat = ThreatModel.from_record(method["threat_model"], method["norm"])
            flags = ["exact" if method["deterministic"] else "randomized", f"threat model {threat.name}"]
            if method["denoisable"]:
                flags.append("takes --denoiser")
            click.echo(f"  --plugin {method['name']}: {method['description']} [{', '.join(flags)}]")
            click.echo(f"      {threat.heading()}")
            for option in method["options"]:
                default = "" if option["default"] is None else f" (default: {option['default']})"
                text = f": {option['description']}" if option["description"] else ""
                kind = option["type"] if "|" in option["type"] else option["type"].upper()
                click.echo(f"      -o {option['name']} {kind}{default}{text}")


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
    sidecars = [p.with_name(p.name + ".header.json") for p in files]  # a Cohen-format file's settings
    inputs = [("FILES", p) for p in [*files, *sidecars]]
    if plot:
        check_output_file(plot, "--plot", inputs)
    if html:
        from .html_report import check_html_path

        check_html_path(html, inputs)
    loaded = [(path, *load_any_results(path)) for path in files]
    summaries = summarize_files([(header, records) for _, header, records in loaded], check_radii(radii))
    for (path, _, _), summary in zip(loaded, summaries):
        _warn_problems(path.name, summary)
    if fmt == "cohen":
        from .results import COHEN_COLUMNS, cohen_row

        click.echo("\t".join(COHEN_COLUMNS))
        for record in loaded[0][2]:
            click.echo(cohen_row(record))
    elif as_json:
        click.echo(json.dumps({str(p): _json_safe(s) for (p, _, _), s in zip(loaded, summaries)}, indent=2))
    else:
        click.echo(format_summary(summaries, [p.name for p, _, _ in loaded]))
    if plot:
        plot_summaries([(p.name, header, records) for p, header, records in loaded], plot)
        click.echo(f"certify: wrote {plot}", err=True)
    if html:
        from .html_report import ReportedRun, write_html_report

        runs = [ReportedRun(*run, summary) for run, summary in zip(loaded, summaries)]
        for note in write_html_report(html, runs):
            click.echo(f"certify: note: {note}", err=True)
        click.echo(f"certify: wrote {html}", err=True)
