"""Where a run's inputs are certified: in this process, or on a Ray cluster (``--ray``)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from .settings import RunSettings


@contextlib.contextmanager
def open_executor(settings: RunSettings, note: Callable[[str], None] = lambda message: None) -> Iterator:
    """What certifies a run's inputs: None (this process), or Ray actors when ``settings.ray``
    names a cluster (on the device and threads of ``settings.model``, ``settings.job``'s
    workers each); closed on leaving."""
    if settings.ray.ray_address is None:
        yield None
        return
    from .ray_executor import RayExecutor

    with RayExecutor.for_run(settings, note=note) as executor:
        yield executor
