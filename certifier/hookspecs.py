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
        :class:`certifier.ThreatModel`; a ``scale_option`` that is one of its options, with
        a positive ``scale_per_sigma``) and refuses a name another plugin already registered,
        naming both plugins.

    A method's noise level follows one rule (``certifier/scale.py``, and the plugin guide's
    "Sigma and your noise's own scale"): ``uses_sigma = False`` for none (``--sigma`` is then
    refused); by default sigma is the scale; ``scale_option = "b"`` with ``scale_per_sigma``
    names the option that is the noise's own scale, which ``--sigma`` sets too.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``certify`` command group.

    :param cli: the :class:`click.Group`; decorate new commands with
        ``@cli.command()``. The group reports any failure in them in one line
        naming the plugin. If this hook raises, certify warns once, naming the
        plugin, and runs without its commands.
    """
