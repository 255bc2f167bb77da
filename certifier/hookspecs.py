"""The hooks a certifier plugin can implement.

Implementations may accept any subset of each hook's arguments, so a hook can
grow new arguments without breaking existing plugins.
"""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("certifier")
hookimpl = HookimplMarker("certifier")


@hookspec
def register_methods(register):
    """Register smoothing methods.

    Call ``register(MethodClass)`` once per subclass of
    :class:`certifier.SmoothingMethod`. The core checks the class and refuses a
    name that another plugin already registered.
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``certify`` command group.

    ``cli`` is the :class:`click.Group`; decorate new commands with
    ``@cli.command()``.
    """
