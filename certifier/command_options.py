"""Command-line options shared by certify's own commands and the commands plugins add."""

from __future__ import annotations

from typing import Callable, TypeVar

import click

F = TypeVar("F", bound=Callable)


def method_options(*, defaults: str | None = "the model's metadata", required: bool | None = None) -> Callable[[F], F]:
    """``-p/--plugin``, ``-s/--sigma`` and ``-o/--option NAME VALUE``: which smoothing method,
    and its settings. The command receives ``plugin``, ``sigma`` and ``options`` (pairs: pass
    ``dict(options)`` to :func:`certifier.make_method`).

    ``defaults`` says where a missing plugin or sigma comes from; None makes ``--plugin`` required
    unless ``required`` says otherwise (a command that checks it itself).
    """
    required = defaults is None if required is None else required
    default = f" (default: {defaults})" if defaults else ""
    options = [
        click.option("-p", "--plugin", required=required,
                     help=f"Smoothing method{default}. See: certify plugins"),
        click.option("-s", "--sigma", type=float, help=f"Noise level in pixel space{default}."),
        click.option("-o", "--option", "options", type=(str, str), multiple=True, metavar="NAME VALUE",
                     help="A plugin option, repeatable (see: certify plugins)."),
    ]

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
