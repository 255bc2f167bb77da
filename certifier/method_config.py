"""A smoothing method configured from what the user gave, the model's record and a denoiser's sigma.

The user's settings come first. A model ``certify train`` made records the plugin it was trained
with, its sigma and its options; that record fills in what the user left out, as a whole and only
for that plugin: for any other plugin neither its sigma nor its options are used. An explicit
noise scale (``--sigma``, or the method's own scale option) replaces the recorded one in both of
its forms. A denoiser's sigma is the last default. :class:`SettingsSource` says where each came
from, for the notes ``certify`` prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from pydantic import ValidationError

from .errors import CertifyError, MissingNoiseScale
from .guard import plugin_call
from .metadata import SIGMA, recorded_options, recorded_plugin, recorded_sigma
from .methods import SmoothingMethod
from .plugins import get_method
from .scale import missing_scale, option_name, refuse_sigma, scale_relation


def parse_options(method_class: type[SmoothingMethod], given: Mapping[str, Any],
                  defaults: Mapping[str, Any] | None = None):
    """Validate ``-o NAME VALUE`` pairs against the method's Options model."""
    fields = method_class.Options.model_fields
    values: dict[str, Any] = {}
    for source, pairs in (("the model's metadata", defaults or {}), ("-o", given)):
        for raw_name, value in pairs.items():
            name = raw_name.replace("-", "_")
            if name not in fields:
                if source == "-o":
                    known = ", ".join(f.replace("_", "-") for f in fields) or "none"
                    raise CertifyError(
                        f"plugin {method_class.name} has no option {raw_name!r}; its options: {known}"
                    )
                continue  # stale metadata from another version of the plugin
            values[name] = value
    try:
        return method_class.Options(**values)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]).replace("_", "-") or "options"
        value = problem.get("input")
        raise CertifyError(
            f"plugin {method_class.name}, option {where}={value!r}: {problem['msg']}"
        ) from None


@dataclass(frozen=True)
class SettingsSource:
    """Where a configured method's sigma and options came from."""

    #: "given" (--sigma), "option" (the method's scale option, -o), "model" (the model's record),
    #: "denoiser" (its metadata), "default" (the scale option's default), "plugin" (worked out by a
    #: plugin's own ``__init__`` that declares no ``scale_option``); None: the method has no sigma
    sigma: str | None
    #: the plugin the model's metadata says it was trained with (None: none)
    trained_with: str | None = None
    #: what of the model's record is used: "sigma" and option names, each with its value
    recorded: tuple[tuple[str, Any], ...] = ()
    #: what of the model's record the user's settings replaced: (its name, what replaced it)
    replaced: tuple[tuple[str, str], ...] = ()
    #: whether the model's record belongs to another plugin, so none of it is used
    other_plugin: bool = False

    def notes(self, method: SmoothingMethod) -> list[str]:
        """One line each: what the model's record gave (or why it gave nothing), and where sigma
        came from when neither --sigma nor the record says."""
        notes = []
        trained = f"trained with plugin {self.trained_with}" if self.trained_with else "it records no plugin"
        if self.other_plugin:
            notes.append(f"the model was trained with plugin {self.trained_with}: its recorded sigma and options "
                         f"are not used for plugin {method.name}")
        replaced = ""
        if self.replaced:
            names = ", ".join(dict.fromkeys(_setting(name) for name, _ in self.replaced))
            given = " and ".join(dict.fromkeys(by for _, by in self.replaced))
            replaced = f"its {names} not used: {given} given"
        if self.recorded:
            used = ", ".join(f"{_setting(name)} {_shown(value)}" for name, value in self.recorded)
            notes.append(f"{used} from the model's metadata ({trained})" + (f"; {replaced}" if replaced else ""))
        elif replaced:
            notes.append(f"the model's recorded settings ({trained}): {replaced}")
        scale = method.scale_option
        value = getattr(method.options, scale) if scale else None
        if self.sigma == "given" and scale:
            notes.append(f"-o {option_name(scale)} {value:g} from --sigma {method.sigma:g} ({scale_relation(method)})")
        elif self.sigma == "option":
            notes.append(f"sigma {method.sigma:g} from -o {option_name(scale)} {value:g} ({scale_relation(method)})")
        elif self.sigma == "default":
            notes.append(f"sigma {method.sigma:g} from the default -o {option_name(scale)} {value:g} "
                         f"({scale_relation(method)})")
        elif self.sigma == "denoiser":
            notes.append(f"sigma {method.sigma:g} from the denoiser's metadata")
        elif self.sigma == "plugin" and method.sigma is not None:
            notes.append(f"sigma {method.sigma:g} from plugin {method.name}'s own options")
        return notes


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _setting(name: str) -> str:
    return "sigma" if name == "sigma" else f"-o {option_name(name)}"


def configure_method(plugin: str | None, sigma: float | None, options: Mapping[str, Any] | None,
                     metadata: Mapping[str, str], *, fallback_sigma: float | None = None
                     ) -> tuple[SmoothingMethod, SettingsSource]:
    """The configured smoothing method and where its settings came from: ``sigma`` and ``options``
    as the user gave them, the rest from the model's ``metadata`` when it was trained with this
    plugin, then ``fallback_sigma`` (a denoiser's) for a noise scale nothing else gave."""
    trained_with = recorded_plugin(metadata)
    name = plugin or trained_with
    if not name:
        raise CertifyError("no --plugin given and the model's metadata names none (see: certify plugins)")
    method_class = get_method(name)
    given = {key.replace("-", "_"): value for key, value in (options or {}).items()}
    if sigma is not None and not method_class.uses_sigma:
        raise refuse_sigma(method_class)
    scale = method_class.scale_option
    other_plugin = trained_with is not None and trained_with != name
    # the user's noise scale, in either form, replaces the recorded one in both
    scale_given = sigma is not None or (scale is not None and scale in given)
    record: dict[str, Any] = {}
    if not other_plugin:
        if method_class.uses_sigma and (metadata.get(SIGMA) or "").strip():
            record["sigma"] = None if scale_given else recorded_sigma(metadata)  # not read when replaced
        record.update((key, value) for key, value in recorded_options(metadata, name).items()
                      if key in method_class.Options.model_fields)
    replaced = [key for key in record if key in given or (scale_given and key in ("sigma", scale))]
    used = {key: value for key, value in record.items() if key not in replaced}
    recorded_sigma_used = used.pop("sigma", None)
    if recorded_sigma_used is not None and scale is not None and isinstance(used.get(scale), (int, float)):
        _check_recorded_scale(method_class, recorded_sigma_used, used[scale])
    parsed = parse_options(method_class, options or {}, used)
    source = _sigma_source(method_class, sigma, given, parsed, recorded_sigma_used, used, fallback_sigma)
    effective = {"given": sigma, "model": recorded_sigma_used, "denoiser": fallback_sigma}.get(source)
    try:
        method = plugin_call(method_class, "__init__", method_class, sigma=effective, options=parsed)
    except MissingNoiseScale:
        if source == "missing":
            why = ("the model's metadata records none" if metadata and not other_plugin else
                   f"the model was trained with plugin {trained_with}, whose recorded settings apply to it alone"
                   if other_plugin else "")
            raise missing_scale(method_class, why) from None
        raise
    if source == "missing":  # a plugin that works its sigma out in its own __init__, undeclared
        source = "plugin"
    by = "--sigma" if sigma is not None else f"-o {option_name(scale)}" if scale_given else ""
    settings_source = SettingsSource(
        sigma=source if method_class.uses_sigma else None, trained_with=trained_with,
        recorded=tuple(([("sigma", recorded_sigma_used)] if recorded_sigma_used is not None else [])
                       + list(used.items())),
        replaced=tuple((key, f"-o {option_name(key)}" if key in given else by) for key in replaced),
        other_plugin=other_plugin)
    return method, settings_source


def _check_recorded_scale(method_class, sigma: float, value: float) -> None:
    """A model's metadata whose sigma and noise scale option disagree under the method's rule is
    refused as the model's fault, not as options the user gave."""
    factor = method_class.scale_per_sigma
    if not (isinstance(sigma, (int, float)) and math.isclose(sigma * factor, value, rel_tol=1e-9)):
        name = option_name(method_class.scale_option)
        raise CertifyError(
            f"the model's metadata records sigma {_shown(sigma)} and {name} {_shown(value)}, which disagree "
            f"({scale_relation(method_class)}); give --sigma or -o {name} to say which noise it was trained with")


def _sigma_source(method_class, sigma, given, parsed, recorded_sigma_used, used, fallback_sigma) -> str | None:
    """Where the method's noise scale comes from: "given", "option", "model", "denoiser", "default",
    "missing"; None for a method without one."""
    if not method_class.uses_sigma:
        return None
    scale = method_class.scale_option
    if sigma is not None:
        return "given"
    if scale is not None and scale in given:
        return "option"
    if recorded_sigma_used is not None or (scale is not None and scale in used):
        return "model"
    if fallback_sigma is not None:
        return "denoiser"
    if scale is not None and getattr(parsed, scale) is not None:
        return "default"
    return "missing"


def make_method(plugin: str | None, sigma: float | None, options: Mapping[str, Any] | None,
                metadata: Mapping[str, str]) -> SmoothingMethod:
    """The configured smoothing method, with defaults from the model's metadata (only when it was
    trained with this plugin: its recorded sigma and options together, or neither)."""
    return configure_method(plugin, sigma, options, metadata)[0]
