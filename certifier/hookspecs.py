"""The hooks a certifier plugin can implement.

Implementations may accept any subset of each hook's arguments, so a hook can
grow new arguments without breaking existing plugins. Hooks hand what they
provide to a callback or an object they receive; what they return is ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    import click

    from .methods import SmoothingMethod

hookspec = HookspecMarker("certifier")
hookimpl = HookimplMarker("certifier")


@hookspec
def register_methods(register: Callable[[type[SmoothingMethod]], None]) -> None:
    """Register smoothing methods.

    :param register: call ``register(MethodClass)`` once per subclass of
        :class:`certifier.SmoothingMethod`. The core checks the class (a name of
        letters, digits, ``-`` and ``_``; a norm of l1, l2 or linf, or a
        :class:`certifier.ThreatModel`) and refuses a
        name another plugin already registered, naming both plugins.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``certify`` command group.

    :param cli: the :class:`click.Group`; decorate new commands with
        ``@cli.command()``. The group reports any failure in them in one line
        naming the plugin. If this hook raises, certify warns once, naming the
        plugin, and runs without its commands.
    """
