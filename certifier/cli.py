"""The ``certify`` command line."""

from __future__ import annotations

import contextlib
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

from . import __version__, _interrupted_while_importing
from .api import load
from .attack_results import is_attack, load_report_file, pair_with_certify, summarize_attack, with_attack
from .command_options import method_options
from .errors import DEBUG_VARIABLE, CertifyError, caused_by_interrupt
from .files import check_output_file
from .job import check_job_settings
from .metadata import recorded_sigma
from .outputs import OUTPUT_KINDS
from .plugins import add_commands, describe_plugins, load_plugins, plugin_modules
from .results import FORMATS
from .sampling import SAMPLINGS
from .summaries import (DEFAULT_RADII, describe_problems, format_summary, plot_summaries, radii_by_threat_model,
                        summarize)
from .space import LAYOUTS
from .threats import ThreatModel, exact_text


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


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {text!r}") from None


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


def _ray_address(ctx, param, value):
    """--ray takes an optional address: a model file right after it is a misplaced --ray."""
    if value is not None and (value.endswith(".onnx") or os.path.isfile(value)):
        raise click.BadParameter(f"{value} is a file, not a cluster address; put --ray after the model, or give "
                                 f"an address (--ray auto)")
    if value is not None:
        from .ray_executor import ADDRESS_FORMS, parse_address

        try:
            parse_address(value)
        except CertifyError:
            raise click.BadParameter(f"{value!r} is not a cluster address; give {ADDRESS_FORMS}") from None
    return value


def engine_options(command):
    """Options shared by ``run`` and ``predict``."""
    options = [
        click.argument("model", type=click.Path(dir_okay=False, path_type=Path)),
        method_options(),
        click.option("-d", "--data", "data_path", type=click.Path(path_type=Path),
                     help="Inputs: .npz (x, y or x_test, y_test), .npy, a folder of images or an image."),
        click.option("--split", help="Use x_SPLIT / y_SPLIT from an .npz (e.g. test, train)."),
        click.option("--n0", type=int, default=100, show_default=True, help="Selection samples per input."),
        click.option("-n", "--n", "n", type=int, default=100_000, show_default=True, help="Estimation samples per input."),
        click.option("--alpha", type=float, default=0.001, show_default=True,
                     help="Probability that a certificate is wrong."),
        click.option("--batch-size", type=int,
                     help="Views per model call (default: about 8 MB of input); a results file resumes only with "
                          "the batch size that wrote it."),
        click.option("--limit", type=int, help="Only the first K inputs."),
        click.option("--skip", type=int, default=1, show_default=True, help="Every SKIP-th input (Cohen's --skip)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise."),
        click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Results file; a rerun of the same command resumes it."),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True,
                     help="jsonl, or cohen for Cohen et al.'s TSV."),
        click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True),
        click.option("--output-name", help="Which model output holds the class scores or label."),
        click.option("--output-kind", type=click.Choice(OUTPUT_KINDS),
                     help="What that output holds, where the graph does not show it (a single score: "
                          "binary-probability or binary-logit)."),
        click.option("--scale", type=float, help="Multiply pixels by this before the model: 255 for a float model "
                     "that expects 0..255 (integer inputs get 255 without it)."),
        click.option("--mean", help="Per-channel mean subtracted after --scale, e.g. 0.485,0.456,0.406."),
        click.option("--std", help="Per-channel std divided by after --mean, e.g. 0.229,0.224,0.225."),
        click.option("--layout", type=click.Choice(LAYOUTS),
                     help="How the model lays out images (default: auto); for a flat input, nhwc flattens H, W, C."),
        click.option("--resize", type=(int, int), metavar="H W",
                     help="Resize images to H x W before any noise (radii are then in the resized images' pixels)."),
        click.option("--denoiser", type=click.Path(dir_okay=False, path_type=Path),
                     help="ONNX denoiser applied to every noisy view before the model (denoised smoothing; rs, "
                          "pprs, drs); default sigma: the one it was trained for."),
        click.option("--allow-denoiser-sigma-mismatch", is_flag=True,
                     help="Use a --denoiser trained for another sigma than --sigma (still sound, less accurate)."),
        click.option("--threads", type=int,
                     help="CPU threads: batches run side by side, one thread each up to 8 (default: one per core)."),
        click.option("--workers", type=int,
                     help="Batches in flight at once (default: --threads on CPU, 2 on CUDA)."),
        click.option("--sampling", type=click.Choice(SAMPLINGS),
                     help="fixed: n0 + n views per input (default); sequential: estimation views in chunks until "
                          "the largest --radii level the input can certify is decided (at most -n): the radius is "
                          "that level."),
        click.option("--radius", type=float,
                     help="One decision per input, certified at R or not (sequential by itself): the radius is R "
                          "or 0."),
        click.option("--radii", help=f"Radii for the summary table (default: the threat model's; "
                                     f"{','.join(f'{r:g}' for r in DEFAULT_RADII)} for L1, L2, Linf); under "
                                     f"--sampling sequential also the levels."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar or notes."),
        click.option("--ray", "ray_address", is_flag=False, flag_value="local", metavar="[ADDRESS]",
                     callback=_ray_address,
                     help="Certify on Ray actors: auto joins this machine's cluster, an address joins that one, "
                          "no value starts Ray here (pip install 'onnx-certifier[ray]'; see docs/scale-out.md)."),
        click.option("--ray-actors", type=int, help="With --ray: at most this many actors (default: as many as "
                     "the cluster holds: one per GPU, or one per --threads CPUs)."),
        click.option("--ray-gpus", type=float, default=1.0, show_default=True,
                     help="With --ray on CUDA: GPUs per actor (0.5 puts two actors on each GPU)."),
        click.option("--ray-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
                     help="With --ray ADDRESS: seconds the cluster may take to answer before certify gives up."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _note(quiet: bool, message: str) -> None:
    if not quiet:
        click.echo(f"certify: {message}", err=True)


def _radii(text: str | None) -> list[float] | None:
    """--radii as numbers; None: the threat model's own."""
    if not text:
        return None
    radii = list(_floats(text))
    if not all(math.isfinite(r) and r >= 0 for r in radii):
        raise CertifyError(f"--radii must be finite numbers >= 0, got {text}")
    return radii


def _sampling(sampling: str | None, radius: float | None, radii: str | None) -> tuple[str, tuple | None, list]:
    """(plan, its levels, the summary's radii) from --sampling, --radius and --radii."""
    if radius is not None:
        if sampling == "fixed":
            raise CertifyError("--radius R is a sequential decision (certified at R or not): drop --sampling fixed")
        if radii is not None:
            raise CertifyError("give --radius R (one level) or --radii (several levels), not both")
        if not (math.isfinite(radius) and radius >= 0):
            raise CertifyError(f"--radius must be a finite number >= 0, got {radius}")
        return "sequential", (radius,), [radius]
    radii_list = _radii(radii)
    if sampling == "sequential" and radii_list is not None:
        return "sequential", tuple(radii_list), sorted(set(radii_list))
    return sampling or "fixed", None, radii_list  # sequential without --radii: the threat model's radii


#: What ``run`` and ``predict`` pass to ``Run.job`` as they are; the rest of their options go to ``load``.
JOB_OPTIONS = ("n0", "n", "alpha", "batch_size", "seed", "workers", "limit", "skip")


def _ray_executor(address: str, *, actors, gpus, timeout, device, threads, workers, quiet):
    """The Ray executor for ``--ray ADDRESS`` (it prints where the run goes)."""
    from .ray_executor import RayExecutor, require_ray

    require_ray()

    def note(message: str) -> None:
        if not quiet or message.startswith("warning"):
            click.echo(f"certify: {message}", err=True)

    return RayExecutor(address, device=device, threads=threads, workers=workers, max_actors=actors,
                       gpus_per_actor=gpus, connect_timeout=timeout, note=note)


def _execute(mode: str, *, model, data_path, split, output, fmt, options, mean, std, radii, quiet, ray_address,
             ray_actors, ray_gpus, ray_timeout, **rest):
    if data_path is None:
        raise CertifyError("no --data given: pass an .npz/.npy file, an image folder or an image to certify")
    settings = {name: rest.pop(name) for name in JOB_OPTIONS}
    settings["sampling"], settings["levels"], radii_list = _sampling(rest.pop("sampling"), rest.pop("radius"), radii)
    check_job_settings(threads=rest["threads"], mode=mode, **settings)  # before the model loads
    with contextlib.ExitStack() as stack:
        executor = None
        if ray_address is not None:
            executor = stack.enter_context(_ray_executor(
                ray_address, actors=ray_actors, gpus=ray_gpus, timeout=ray_timeout, device=rest["device"],
                threads=rest["threads"], workers=settings["workers"], quiet=quiet))
            rest.update(device="cpu", threads=1)  # the driver only reads the model; the actors run it
        _certify(mode, model=model, data_path=data_path, split=split, output=output, fmt=fmt, options=options,
                 mean=mean, std=std, radii_list=radii_list, quiet=quiet, settings=settings, executor=executor,
                 **rest)


def _certify(mode: str, *, model, data_path, split, output, fmt, options, mean, std, radii_list, quiet, settings,
             executor, **rest):
    # With one view per call a model whose rows depend on their batch is a per-input function again.
    run = load(model, options=dict(options), mean=_floats(mean), std=_floats(std),
               allow_batch_coupling=settings["batch_size"] == 1, **rest)
    if executor is None:
        _note(quiet, run.model.device_note + "".join(f"; {note}" for note in run.model.notes))
    elif run.model.notes:
        _note(quiet, "; ".join(run.model.notes))
    if rest["sigma"] is None and run.method.uses_sigma:
        from_denoiser = run.denoiser is not None and recorded_sigma(run.model.metadata) is None
        _note(quiet, f"sigma {run.method.sigma} from the {'denoiser' if from_denoiser else 'model'}'s metadata")
    if run.denoiser:
        _note(quiet, f"views go through the denoiser {run.denoiser.name} before the model")
    with run.job(data_path, split=split, mode=mode, output=output, format=fmt, executor=executor,
                 **settings) as job:
        for note in dict.fromkeys(n for g in job.engine.groups if g.denoised is not None for n in g.denoised.notes):
            _note(quiet, note)
        if job.saved:
            _note(quiet, f"resuming {output}: {len(job.done)} of {len(job.indices)} inputs already done")
        sequential = settings["sampling"] == "sequential"
        if sequential:
            _note(quiet, _describe_sequential(job.header))
            fixed = len(job.engine.groups) * (job.header["n0"] + job.header["n"])  # what fixed n would cost
        started = time.perf_counter()
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
    elapsed = time.perf_counter() - started
    summary = job.summary(radii_list)
    if mode == "predict":
        accuracy = summary["accuracy"]
        click.echo(f"inputs {summary['inputs']}, abstained {summary['abstained']}"
                   + (f", accuracy {100 * accuracy:.1f}%" if accuracy is not None else ""))
    else:
        name = output.name if output else run.plugin
        _warn_problems(name, summary)
        click.echo(format_summary([summary], [name]))
    _note(quiet, f"{len(job.todo)} inputs in {elapsed:.1f} s" + ("" if output else "; pass --output FILE to keep the results"))


def _passes_note(mean: float, fixed: int) -> str:
    return f"{mean:,.0f} passes/input ({fixed / max(mean, 1):.1f}x fewer than fixed n)"


def _describe_sequential(header: dict) -> str:
    """What a sequential run decides, and the levels no certificate can reach at this -n."""
    levels = header["sampling_settings"]["levels"]
    ceiling = header.get("radius_ceiling")
    if len(levels) == 1:
        text = f"sequential sampling: each input is certified at radius {exact_text(levels[0])} or not"
    else:
        text = (f"sequential sampling: each radius is the largest of the levels "
                f"{', '.join(exact_text(r) for r in levels)} proved")
    text += f", with at most n = {header['n']} estimation views per input"
    above = [r for r in levels if ceiling is not None and r > ceiling]
    if above:
        text += (f"; levels above the radius ceiling {ceiling:.4g} can never be certified at this -n: "
                 f"{', '.join(exact_text(r) for r in above)}")
    return text


def _summaries_with_attacks(loaded: list, radii_list: list[float] | None) -> tuple[list[dict], list]:
    """The summary of each results file, and the files to show: an attack (``certify attack``)
    is merged into the summary of the certify run of the same classifier and inputs among them,
    and shown there; an attack without one is shown on its own."""
    runs = [(header, records) for _, header, records in loaded]
    certify_runs = [number for number, (header, _) in enumerate(runs) if not is_attack(header)]
    # by default each threat model keeps its own radii, with the levels of its sequential runs
    grids = dict(zip(certify_runs, radii_by_threat_model([runs[i] for i in certify_runs])))
    summaries = [summarize_attack(header, records) if is_attack(header)
                 else summarize(records, radii_list if radii_list is not None else grids[number], header)
                 for number, (header, records) in enumerate(runs)]
    pairs = pair_with_certify(runs)
    for attack, certified in pairs.items():
        summaries[certified] = with_attack(summaries[certified], summaries[attack], loaded[attack][0].name)
    shown = [number for number in range(len(loaded)) if number not in pairs]
    return [summaries[i] for i in shown], [loaded[i] for i in shown]


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
@click.option("--radii", help=f"Radii for the table (default: each threat model's; "
                             f"{','.join(f'{r:g}' for r in DEFAULT_RADII)} for L1, L2, Linf; and the levels of "
                             f"sequential runs).")
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
    loaded = [(path, *load_report_file(path)) for path in files]
    radii_list = _radii(radii)
    summaries, loaded = _summaries_with_attacks(loaded, radii_list)
    for (path, _, _), summary in zip(loaded, summaries):
        _warn_problems(path.name, summary)
    attacks_alone = [p.name for p, header, _ in loaded if is_attack(header)]
    if attacks_alone and (html or fmt == "cohen"):
        option = "--html" if html else "--format cohen"
        raise CertifyError(f"{option} shows certificates, and {attacks_alone[0]} holds an attack alone; give the "
                           f"certify results of the same inputs too (the attack is shown beside them)")
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
        plot_summaries([(p.name, header, records) for p, header, records in loaded], plot, summaries)
        click.echo(f"certify: wrote {plot}", err=True)
    if html:
        from .html_report import ReportedRun, write_html_report

        runs = [ReportedRun(*run, summary) for run, summary in zip(loaded, summaries)]
        for note in write_html_report(html, runs):
            click.echo(f"certify: note: {note}", err=True)
        click.echo(f"certify: wrote {html}", err=True)
