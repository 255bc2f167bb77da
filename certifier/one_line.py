"""Failures as one line and a non-zero exit, never a traceback: what the ``certify`` command
group does around every command, plugins' too."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from typing import Callable, Iterator

import click

from .errors import DEBUG_VARIABLE, CertifyError, caused_by_interrupt
from .plugins import plugin_modules


class Interrupted(BaseException):
    """SIGTERM, turned into an exception so results are closed cleanly.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way
    (the engine's, a plugin's) mistakes it for a failure.
    """


def _raise_interrupted(signum, frame):
    raise Interrupted()


@contextlib.contextmanager
def stopping_cleanly(kept: Callable[[], str]) -> Iterator[None]:
    """A command's loop over inputs: Ctrl-C or SIGTERM inside it ends the command with one line
    (``kept()`` says where the records written are and how to resume) and exit status 130."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    except (KeyboardInterrupt, Interrupted):
        click.echo(f"\ncertify: interrupted{kept()}", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted() -> click.exceptions.Exit:
    """Ctrl-C outside the run loop (while starting up): one line, exit status 130."""
    click.echo("\ncertify: interrupted", err=True)
    return click.exceptions.Exit(130)


def friendly_errors(command):
    """Turn every failure into a one-line error and a non-zero exit (no traceback).

    The command group already does this for every command, plugins' too; this is kept for
    plugins written when it did not.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        return one_line_failures(command, *args, **kwargs)

    return wrapper


def one_line_failures(function, *args, **kwargs):
    """Call ``function``; any failure becomes one line (a ClickException) or exit status 130."""
    try:
        return function(*args, **kwargs)
    except CertifyError as error:
        raise click.ClickException(str(error)) from None
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except KeyboardInterrupt:
        raise interrupted() from None
    except Exception as error:
        if caused_by_interrupt(error):
            raise interrupted() from None
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
