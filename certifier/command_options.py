"""Command-line options made from the settings records, for certify's own commands and the
commands plugins add: each option's name, help, type and default come from its field
(``certifier.settings``), so the commands and the Python API cannot drift apart."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import click

from .errors import CertifyError
from .results import FORMATS
from .settings import Flag, JobSettings, ModelSettings, RaySettings, Settings

F = TypeVar("F", bound=Callable)


class Numbers(click.ParamType):
    """Numbers separated by commas (or spaces): "0.485,0.456,0.406"."""

    name = "numbers"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, tuple):
            return value
        try:
            return tuple(float(v) for v in str(value).replace(",", " ").split())
        except ValueError:
            self.fail(f"expected numbers separated by commas, got {value!r}", param, ctx)


NUMBERS = Numbers()
_TYPES = {"numbers": NUMBERS, "file": click.Path(dir_okay=False, path_type=Path),
          "existing": click.Path(exists=True, path_type=Path)}


def _click_type(kind: Any):
    if kind is None:
        return None
    if isinstance(kind, str):
        return _TYPES[kind]
    if isinstance(kind, tuple) and all(isinstance(k, str) for k in kind):
        return click.Choice(kind)
    return kind


def _checked(check: Callable):
    """A field's command-line check as a click callback: its refusal is a usage error."""
    def callback(ctx, param, value):
        try:
            return check(value)
        except CertifyError as error:
            raise click.BadParameter(str(error)) from None

    return callback


def _plain_type(annotation: Any):
    """int, float or str for a field of that type (or of that type or None); None otherwise."""
    choices = typing.get_args(annotation) or (annotation,)
    found = [kind for kind in choices if kind in (int, float, str)]
    return found[0] if len(found) == 1 and all(k in (int, float, str, type(None)) for k in choices) else None


def _option(name: str, field: Any, option: Flag, *, help_values: Mapping[str, str], **changes):
    default = field.default
    details: dict[str, Any] = {"help": option.help.format(**help_values) or None}
    if option.is_flag:
        details.update(is_flag=True, default=bool(default))
    else:
        kind = _click_type(option.type) or _plain_type(field.annotation)
        if kind is not None:
            details["type"] = kind
        if option.multiple:
            details["multiple"] = True
        elif field.is_required():
            details["required"] = True
        elif default is not None and not isinstance(default, dict):
            details["default"] = default
            details["show_default"] = option.show_default
    if option.flag_value is not None:
        details.update(is_flag=False, flag_value=option.flag_value)
    if option.range is not None:
        kind = details.get("type", float)
        bounds = option.range
        details["type"] = (click.IntRange if kind is int else click.FloatRange)(
            bounds.low, bounds.high, min_open=bounds.low_open, max_open=bounds.high_open)
    if option.metavar:
        details["metavar"] = option.metavar
    if option.callback is not None:
        details["callback"] = _checked(option.callback)
    details.update(changes)
    return click.option(*option.declarations, name, **details)


def settings_options(record: type[Settings], *, groups: Iterable[str] | None = None,
                     names: Iterable[str] | None = None, exclude: Iterable[str] = (),
                     help_values: Mapping[str, str] | None = None,
                     changes: Mapping[str, Mapping[str, Any]] | None = None) -> Callable[[F], F]:
    """Options for the fields of ``record`` (those of ``groups``, or the ``names`` given, else all
    with a command-line form, but ``exclude``), in the record's order. The command receives each
    under its field name. ``help_values`` fill placeholders in help texts; ``changes`` adjust one
    option's click settings (``{"plugin": {"required": True}}``)."""
    wanted_groups = set(groups) if groups is not None else None
    wanted_names = list(names) if names is not None else None
    skipped = set(exclude)
    changes = changes or {}
    fields = record.model_fields
    options = []
    flags = record.flags()
    if wanted_names is not None:
        order = wanted_names
    else:
        ends = set(record.leading) | set(record.trailing)
        order = ([n for n in record.leading if n in flags] + [n for n in flags if n not in ends]
                 + [n for n in record.trailing if n in flags])
    for name in order:
        option = flags[name]
        if name in skipped or (wanted_groups is not None and option.group not in wanted_groups):
            continue
        options.append(_option(name, fields[name], option, help_values={**record.help_values, **(help_values or {})},
                               **changes.get(name, {})))

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def method_options(*, defaults: str | None = "the model's metadata", required: bool | None = None) -> Callable[[F], F]:
    """``-p/--plugin``, ``-s/--sigma`` and ``-o/--option NAME VALUE``: which smoothing method,
    and its settings. The command receives ``plugin``, ``sigma`` and ``options`` (pairs: pass
    ``dict(options)`` to :func:`certifier.make_method`).

    ``defaults`` says where a missing plugin or sigma comes from; None makes ``--plugin`` required
    unless ``required`` says otherwise (a command that checks it itself).
    """
    required = defaults is None if required is None else required
    return settings_options(ModelSettings, groups=["method"],
                            help_values={"defaults": f" (default: {defaults})" if defaults else ""},
                            changes={"plugin": {"required": required}})


#: The job's options listed first, as they always were; the rest of its fields follow the model's.
_SAMPLE_OPTIONS = ("n0", "n", "alpha", "batch_size", "limit", "skip", "seed")


def engine_options(command):
    """Options shared by ``run`` and ``predict``: the settings records' (``certifier.settings``),
    and where the inputs come from and the results go."""
    options = [
        click.argument("model", type=click.Path(dir_okay=False, path_type=Path)),
        method_options(),
        click.option("-d", "--data", "data_path", type=click.Path(path_type=Path),
                     help="Inputs: .npz (x, y or x_test, y_test), .npy, a folder of images or an image."),
        click.option("--split", help="Use x_SPLIT / y_SPLIT from an .npz (e.g. test, train)."),
        settings_options(JobSettings, names=_SAMPLE_OPTIONS),
        click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Results file; a rerun of the same command resumes it."),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True,
                     help="jsonl, or cohen for Cohen et al.'s TSV."),
        settings_options(ModelSettings, exclude=["plugin", "sigma", "options"]),
        settings_options(JobSettings, exclude=_SAMPLE_OPTIONS),  # and every field added later
        click.option("-q", "--quiet", is_flag=True, help="No progress bar or notes."),
        settings_options(RaySettings),
    ]
    for option in reversed(options):
        command = option(command)
    return command
