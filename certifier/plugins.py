"""Plugin loading: one function, safe to call twice."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import types
import warnings
from typing import Any, Iterator

import pluggy

from . import hookspecs
from .errors import CertifyError, caused_by_interrupt, one_line
from .methods import SmoothingMethod, threat_of
from .threats import STANDARD, ThreatModel

#: The distribution whose entry points are the built-in plugins.
BUILTIN_DISTRIBUTION = "onnx-certifier"
ENTRY_POINT_GROUP = "certifier"
#: Comma-separated names of external plugins to load; set it empty to load none.
LOAD_PLUGINS_VARIABLE = "CERTIFY_LOAD_PLUGINS"

pm = pluggy.PluginManager("certifier")
pm.add_hookspecs(hookspecs)

_loaded = False
#: plugin name -> why its register_commands failed (its commands are missing)
command_failures: dict[str, str] = {}
#: plugin name -> (distribution, version) of the plugins loaded from entry points
_distributions: dict[str, tuple[str, str | None]] = {}


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _is_builtin(entry_point: importlib.metadata.EntryPoint) -> bool:
    dist = entry_point.dist
    return dist is not None and dist.name == BUILTIN_DISTRIBUTION


def is_builtin(name: str) -> bool:
    """Whether the plugin registered as ``name`` ships with onnx-certifier: its entry point is
    onnx-certifier's own (a plugin registered in any other way is not built-in)."""
    return _distributions.get(name, ("",))[0] == BUILTIN_DISTRIBUTION


def load_plugins() -> None:
    """Register built-in and installed plugins from the ``certifier`` entry points.

    ``CERTIFY_LOAD_PLUGINS`` limits external plugins to the listed names (empty:
    none); built-ins always load. A plugin that fails to import is named in a
    one-line :class:`CertifyError`.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    allowed = os.environ.get(LOAD_PLUGINS_VARIABLE)
    allowed_names = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    entry_points = _entry_points()
    if allowed_names:
        external = sorted({e.name for e in entry_points if not _is_builtin(e)})
        builtin = {e.name for e in entry_points if _is_builtin(e)}
        missing = sorted(allowed_names - set(external) - builtin)
        if missing:
            warnings.warn(
                f"{LOAD_PLUGINS_VARIABLE} names {', '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed; installed external plugins: "
                f"{', '.join(external) or 'none'}", stacklevel=2)
    for entry_point in entry_points:
        builtin = _is_builtin(entry_point)
        if not builtin and allowed_names is not None and entry_point.name not in allowed_names:
            continue
        if pm.get_plugin(entry_point.name) is not None:
            continue
        try:
            module = entry_point.load()
        except Exception as error:  # any import failure must name the plugin
            if caused_by_interrupt(error):
                raise KeyboardInterrupt from None
            source = "built-in plugin" if builtin else "plugin"
            raise CertifyError(
                f'Error importing {source} "{entry_point.name}" ({entry_point.value}): '
                f"{type(error).__name__}: {error}. Uninstall or fix it, or set "
                f"{LOAD_PLUGINS_VARIABLE}= to skip external plugins."
            ) from None
        try:
            pm.register(module, name=entry_point.name)
        except pluggy.PluginValidationError as error:  # a hook taking arguments its spec does not give
            raise CertifyError(f'plugin "{entry_point.name}": {" ".join(str(error).split())[:300]}. '
                               f"{_FIX_OR_SKIP}") from None
        dist = entry_point.dist
        if dist is not None:
            _distributions[entry_point.name] = (dist.name, dist.version)
    _refuse_unknown_hooks()


_FIX_OR_SKIP = f"Fix or uninstall it, or set {LOAD_PLUGINS_VARIABLE}= to skip external plugins."


def _refuse_unknown_hooks() -> None:
    """A plugin implementing a hook certify does not have (a misspelled name) is refused in one line."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        name = pm.get_name(error.plugin) or repr(error.plugin)
        hooks = sorted(caller.name for caller in pm.get_hookcallers(error.plugin) or [] if caller.spec is None)
        known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
        raise CertifyError(f'plugin "{name}" implements {", ".join(hooks) or "a hook"}, which is not a certifier hook '
                           f"(the hooks: {known}). {_FIX_OR_SKIP}") from None


def add_commands(cli) -> list[str]:
    """Call every plugin's ``register_commands`` on its own; returns one warning per plugin
    that failed (its commands are missing, every other command works)."""
    failed = []
    for impl in reversed(pm.hook.register_commands.get_hookimpls()):
        try:
            impl.function(**{arg: cli for arg in impl.argnames if arg == "cli"})
        except Exception as error:
            if caused_by_interrupt(error):
                raise KeyboardInterrupt from None
            reason = one_line(error)
            command_failures[impl.plugin_name] = reason
            failed.append(f"plugin {impl.plugin_name} failed to add its commands ({reason}); they are "
                          f"unavailable until it is fixed or uninstalled")
    return failed


def plugin_modules() -> dict[str, str]:
    """Module name -> name of the registered plugin it belongs to: each plugin's own module
    and the modules of the smoothing methods it registers."""
    owners = {}
    for name, plugin in pm.list_name_plugin():
        module = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__module__
        owners[module] = name
    try:
        methods = _methods_by_plugin(strict=False)[0]
    except Exception:  # a broken plugin must not hide the error being reported
        methods = {}
    for method, plugin in methods.values():
        owners.setdefault(method.__module__, plugin)
    return owners


def _methods_by_plugin(strict: bool = True) -> tuple[dict[str, tuple[type[SmoothingMethod], str]], dict[str, str]]:
    """Name -> (method class, name of the plugin that registered it), and plugin -> why its
    ``register_methods`` failed (only when not ``strict``; strict raises instead)."""
    load_plugins()
    failures: dict[str, str] = {}
    found: dict[str, tuple[type[SmoothingMethod], str]] = {}

    def register(method: type[SmoothingMethod], *, plugin: str) -> None:
        if not (isinstance(method, type) and issubclass(method, SmoothingMethod)):
            raise CertifyError(f"plugin {plugin}: register() expects a SmoothingMethod subclass, got {method!r}")
        name = getattr(method, "name", None)
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise CertifyError(f"plugin {plugin}: smoothing method {method.__qualname__} needs a name of letters, digits, - or _")
        _check_threat_model(method, name, plugin)
        if name in found and found[name][0] is not method:
            raise CertifyError(
                f"two plugins register a smoothing method named {name!r}: {found[name][1]} and {plugin}"
            )
        found[name] = (method, plugin)

    # Each implementation is called on its own so every method is attributed to its plugin.
    for impl in reversed(pm.hook.register_methods.get_hookimpls()):
        callback = functools.partial(register, plugin=impl.plugin_name)
        try:
            try:
                impl.function(**{arg: callback for arg in impl.argnames if arg == "register"})
            except CertifyError:
                raise
            except Exception as error:
                if caused_by_interrupt(error):
                    raise KeyboardInterrupt from None
                raise CertifyError(f"plugin {impl.plugin_name} failed in register_methods: {one_line(error)}") from None
        except CertifyError as error:
            if strict:
                raise
            failures[impl.plugin_name] = str(error)
    return found, failures


def _check_threat_model(method: type[SmoothingMethod], name: str, plugin: str) -> None:
    """A method states what its radius bounds: a norm of l1, l2 or linf, or a ThreatModel
    (then its norm, if set, is the threat model's name)."""
    threat, norm = getattr(method, "threat_model", None), getattr(method, "norm", None)
    if threat is None:
        if norm not in STANDARD:
            raise CertifyError(f"plugin {plugin}: smoothing method {name} must set norm to l1, l2 or linf, or "
                               f"declare a certifier.ThreatModel as threat_model")
        return
    if not isinstance(threat, ThreatModel):
        raise CertifyError(f"plugin {plugin}: smoothing method {name}'s threat_model must be a certifier.ThreatModel, "
                           f"got {type(threat).__name__}")
    if norm != threat.name:
        raise CertifyError(f"plugin {plugin}: smoothing method {name} sets norm {norm!r} but its threat model is "
                           f"named {threat.name!r}; leave norm out or make them agree")


def get_methods() -> dict[str, type[SmoothingMethod]]:
    """Every registered smoothing method by name."""
    return {name: method for name, (method, _) in _methods_by_plugin()[0].items()}


def find_method(name: str) -> type[SmoothingMethod] | None:
    """The registered smoothing method ``name``, or None; a plugin that fails to register is skipped."""
    return _methods_by_plugin(strict=False)[0].get(name, (None, None))[0]


def get_method(name: str) -> type[SmoothingMethod]:
    methods = get_methods()
    if name not in methods:
        known = ", ".join(sorted(methods)) or "none"
        raise CertifyError(f"unknown plugin {name!r}; installed plugins: {known} (see: certify plugins)")
    return methods[name]


def plugin_lines(described: list[dict[str, Any]]) -> Iterator[str]:
    """``certify plugins``'s text: each plugin of ``describe_plugins()``, its methods and their options."""
    from .threats import ThreatModel

    for plugin in described:
        kind = "built-in" if plugin["builtin"] else "installed"
        source = f", from {plugin['distribution']} {plugin['version']}" if plugin["distribution"] else ""
        yield f"{plugin['name']} ({kind}; hooks: {', '.join(plugin['hooks'])}){source}"
        for note in plugin["notes"]:
            yield f"  note: {note}"
        for method in plugin["methods"]:
            threat = ThreatModel.from_record(method["threat_model"], method["norm"])
            flags = ["exact" if method["deterministic"] else "randomized", f"threat model {threat.name}"]
            if method["denoisable"]:
                flags.append("takes --denoiser")
            yield f"  --plugin {method['name']}: {method['description']} [{', '.join(flags)}]"
            yield f"      {threat.heading()}"
            for option in method["options"]:
                default = "" if option["default"] is None else f" (default: {option['default']})"
                text = f": {option['description']}" if option["description"] else ""
                option_kind = option["type"] if "|" in option["type"] else option["type"].upper()
                yield f"      -o {option['name']} {option_kind}{default}{text}"


def describe_plugins() -> list[dict[str, Any]]:
    """What ``certify plugins`` prints: every plugin, where it comes from, its hooks and its
    methods, and a note on a plugin whose hooks failed."""
    methods, failures = _methods_by_plugin(strict=False)
    described = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        notes = [failures[name]] if name in failures else []
        if name in command_failures:
            notes.append(f"register_commands failed ({command_failures[name]}); its commands are unavailable")
        distribution, version = _distributions.get(name, (None, None))
        described.append(
            {
                "name": name,
                "builtin": is_builtin(name),
                "distribution": distribution,
                "version": version,
                "hooks": sorted(caller.name for caller in pm.get_hookcallers(plugin) or []),
                "notes": notes,
                "methods": [
                    {
                        "name": method.name,
                        "norm": method.norm,
                        "threat_model": threat_of(method).as_dict(),
                        "description": method.description,
                        "deterministic": method.deterministic,
                        "uses_sigma": method.uses_sigma,
                        "denoisable": method.denoisable,
                        "groups": list(method.groups),
                        "options": method.option_help(),
                    }
                    for method, owner in methods.values()
                    if owner == name
                ],
            }
        )
    return described
