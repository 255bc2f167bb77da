"""An engine's plan, made ready from a job's settings once the method and its models are known.

:func:`plan_engine` turns :class:`certifier.settings.JobSettings` into an :class:`EnginePlan`:
the sampling plan (how many views each input gets, and the bounds valid for them), the
confidence, the seed and the batch size, with the checks that need the method (a method
that samples needs n0 and n of at least 1; an exact one takes no sequential plan) or the
models (a batch of views must fit in memory). The engine takes the plan as it is, so an
engine rebuilt elsewhere from the same plan draws the same views.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import CertifyError
from .guard import checked_num_views, plugin_call
from .methods import SmoothingMethod, threat_of
from .sampling import ENUMERATION, SEQUENTIAL_BATCH, Enumeration, make_plan
from .settings import JobSettings

#: Aim for batches of about this many bytes of float32 views.
BATCH_BYTES = 1 << 23
MAX_AUTO_BATCH = 4096
#: Largest batch of views (float32 bytes) one model call may hold, whatever --batch-size says.
MAX_BATCH_BYTES = 1 << 31


@dataclass(frozen=True)
class EnginePlan:
    """Everything an engine's results depend on beyond the method and its models."""

    #: how many views each input gets, and the confidence bounds valid for them
    #: (``certifier.sampling``: fixed, sequential, or every view of an exact method)
    sampling: Any
    alpha: float
    seed: int
    #: views per model call (each batch draws its views from its own noise stream)
    batch_size: int
    #: the shape of every input (C, H, W) or (D,); None: whatever the groups' views fit
    input_shape: tuple[int, ...] | None = None
    #: batches in flight at once (None: what the models ask for); never changes a result
    workers: int | None = None

    def replace(self, **changes) -> "EnginePlan":
        return replace(self, **changes)


def auto_batch_size(view_shape: Sequence[int]) -> int:
    per_view = 4 * int(np.prod(view_shape))
    return int(max(1, min(MAX_AUTO_BATCH, BATCH_BYTES // per_view)))


def plan_engine(method: SmoothingMethod, groups: Mapping[str, Any], settings: JobSettings | None = None, *,
                input_shape: Sequence[int] | None = None, sampling: Any = None) -> EnginePlan:
    """The plan of an engine running ``method`` on ``groups`` (name -> ``certifier.engine.Group``)
    with ``settings``; ``sampling`` replaces the plan the settings name (a plan of one's own)."""
    settings = settings or JobSettings()
    shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
    if not method.deterministic and min(settings.n0, settings.n) < 1:
        raise CertifyError("--n0 and -n must be at least 1")
    adaptive = settings.plan != "fixed" or bool(getattr(sampling, "adaptive", False))
    if method.deterministic and adaptive:
        raise CertifyError(f"plugin {method.name} is exact (it runs every view once, no sampling): "
                           f"--sampling sequential does not apply to it; drop it")
    view_shapes = [g.adapter.view_shape for g in groups.values()]
    auto = min(auto_batch_size(v) for v in view_shapes)
    if adaptive:
        auto = min(auto, SEQUENTIAL_BATCH)  # the engine looks at the votes after whole batches
    batch_size = settings.batch_size if settings.batch_size is not None else auto
    if method.deterministic:
        if shape is None:
            raise ValueError(f"plugin {method.name} enumerates views: the engine needs the input shape")
        sampling = Enumeration(checked_num_views(method, plugin_call(method, "num_views", method.num_views, shape)))
    elif sampling is None:
        levels = settings.plan_levels
        if settings.plan == "sequential" and levels is None:
            levels = threat_of(method).radii  # the radii its summary reports
        sampling = make_plan(settings.plan, n0=settings.n0, n=settings.n, alpha=settings.alpha, levels=levels,
                             **({"granularity": batch_size} if settings.plan != "fixed" else {}))
    _check_batch_memory(sampling, batch_size, view_shapes)
    return EnginePlan(sampling, settings.alpha, settings.seed, batch_size, shape, settings.workers)


def _check_batch_memory(sampling, batch_size: int, view_shapes) -> None:
    """Refuse a --batch-size whose views alone would not fit in MAX_BATCH_BYTES."""
    largest = max(sampling.budget(phase) for phase in (*sampling.phases(), *sampling.phases(predict=True)))
    per_view = 4 * max(int(np.prod(v)) for v in view_shapes)
    views = min(batch_size, largest)
    if views * per_view > MAX_BATCH_BYTES:
        fits = max(1, MAX_BATCH_BYTES // per_view)
        raise CertifyError(
            f"--batch-size {batch_size} would put {views * per_view / 2**30:.3g} GiB of views in one "
            f"batch; use at most {fits} (or leave it out for about 8 MB per batch)"
        )


__all__ = ["ENUMERATION", "EnginePlan", "auto_batch_size", "plan_engine"]
