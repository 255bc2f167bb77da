"""Sampling plans: how many views the engine draws for each input, and which bounds are valid for them.

The engine asks its plan for each phase of an input (selection, estimation, ...) and
for the chunks of views to draw in it; the certificate rules see the plan's bound
through :class:`certifier.Votes`. A plan is plain data, so an engine rebuilt from the
same settings elsewhere draws the same views.

Two kinds: a fixed plan knows every chunk in advance (``chunks``); an adaptive plan
(``adaptive = True``, :class:`SequentialSampling`) decides the next estimation chunk of
an input from its votes so far (``start``), and the engine waits for an input's
batches before it asks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from .errors import CertifyError
from .methods import Votes
from .stats import clopper_pearson_lower

if TYPE_CHECKING:
    from .methods import SmoothingMethod
    from .sequential import SequentialCertification

#: The plans ``--sampling`` names.
SAMPLINGS = ("fixed", "sequential")
#: Under the sequential plan the engine looks at an input's votes after whole batches, so
#: batches are kept this small by default (a look costs at most one batch too many).
SEQUENTIAL_BATCH = 256

#: Phases of one input: views that choose the class, fresh views that bound its
#: probability, views for PREDICT, and every view of a deterministic method.
SELECTION, ESTIMATION, PREDICTION, ENUMERATION = "selection", "estimation", "prediction", "enumeration"


class FixedSampling:
    """n0 selection views and n estimation views per input (n views for PREDICT), all
    drawn whatever the votes say; one-sided Clopper-Pearson bounds, valid for a number
    of trials fixed in advance."""

    name = "fixed"
    adaptive = False

    def __init__(self, n0: int, n: int):
        self.n0, self.n = n0, n

    def phases(self, predict: bool = False) -> tuple[str, ...]:
        return (PREDICTION,) if predict else (SELECTION, ESTIMATION)

    def budget(self, phase: str) -> int:
        """The most views ``phase`` draws for one input."""
        return self.n0 if phase == SELECTION else self.n

    def chunks(self, phase: str) -> Iterator[int]:
        """How many views of ``phase`` to draw for one input, chunk after chunk: here all at once."""
        yield self.budget(phase)

    def settings(self) -> dict[str, Any]:
        """What the results header records about the plan."""
        return {"n0": self.n0, "n": self.n}

    @staticmethod
    def lower_bound(successes: int, trials: int, alpha: float) -> float:
        return clopper_pearson_lower(successes, trials, alpha)

    def votes(self, counts: Mapping[str, np.ndarray]) -> Votes:
        """Votes of one phase, with the bounds valid for this plan."""
        return Votes(counts, self.lower_bound)


class Enumeration:
    """Every view of a deterministic method exactly once: the votes are exact."""

    name = "enumeration"
    adaptive = False

    def __init__(self, views: int):
        self.views = views

    def phases(self, predict: bool = False) -> tuple[str, ...]:
        return (ENUMERATION,)

    def budget(self, phase: str) -> int:
        return self.views

    def chunks(self, phase: str) -> Iterator[int]:
        yield self.views

    def settings(self) -> dict[str, Any]:
        return {}

    # Deterministic rules need no bound; one that asks anyway gets the fixed-n one.
    lower_bound = staticmethod(FixedSampling.lower_bound)
    votes = FixedSampling.votes


class SequentialSampling:
    """n0 selection views, then estimation views in growing chunks, each chosen from the
    input's votes so far, until the largest level of ``levels`` it can certify is decided
    (:class:`certifier.sequential.SequentialPlan`; at most n views).

    The bounds are anytime-valid (a confidence sequence, with a Clopper-Pearson look at
    exactly n), so stopping whenever the votes say is allowed; the radius is the largest
    level proved. Every look falls on a multiple of ``granularity`` (the engine's batch) or
    on n, so the views, which are drawn batch by batch from streams keyed by batch number,
    are the same however the chunks fall: the first t views are those a fixed plan draws.
    ``tuning`` sets the plan's other settings (bounds, futility, first_chunk, growth; the
    defaults were chosen in docs/results-sequential.md).
    """

    name = "sequential"
    adaptive = True

    def __init__(self, n0: int, n: int, alpha: float, levels: Sequence[float], *, granularity: int = 1,
                 **tuning: Any):
        from .sequential import SequentialPlan

        self.n0, self.n = n0, n
        self.plan = SequentialPlan(levels=check_levels(levels), budget=n, alpha=alpha, granularity=granularity,
                                   **tuning)

    @property
    def levels(self) -> tuple[float, ...]:
        return self.plan.levels

    def phases(self, predict: bool = False) -> tuple[str, ...]:
        return (PREDICTION,) if predict else (SELECTION, ESTIMATION)

    def budget(self, phase: str) -> int:
        return self.n0 if phase == SELECTION else self.n

    def chunks(self, phase: str) -> Iterator[int]:
        """Selection views all at once; estimation chunks come from :meth:`start`."""
        if phase == ESTIMATION:
            raise TypeError("a sequential plan chooses estimation chunks from the votes: use start()")
        yield self.budget(phase)

    def start(self, method: "SmoothingMethod", selection: Votes) -> "SequentialCertification":
        """One input's estimation: ``step(counts)`` says how many views to draw next, or stops."""
        from .sequential import SequentialCertification

        return SequentialCertification(self.plan, method, selection)

    def settings(self) -> dict[str, Any]:
        plan = {k: v for k, v in self.plan.settings().items() if k not in ("plan", "budget", "alpha")}
        return {"n0": self.n0, "n": self.n, **plan}

    def lower_bound(self, successes: int, trials: int, alpha: float) -> float:
        """The plan's bound at one count (valid at any count, so for any rule that asks)."""
        return float(self.plan.bounds.lower(successes, trials, alpha))

    def votes(self, counts: Mapping[str, np.ndarray]) -> Votes:
        from .sequential import BoundVotes

        bounds = self.plan.bounds
        totals = {group: int(np.sum(c)) for group, c in counts.items()}
        arrays = {group: np.asarray(c) for group, c in counts.items()}

        def source(kind, group, labels, alpha):
            s = int(sum(int(arrays[group][k]) for k in labels if k < len(arrays[group])))
            bound = bounds.lower if kind == "lower" else bounds.upper
            return float(bound(s, totals[group], alpha))

        return BoundVotes(counts, source)


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """The levels of a sequential plan, ascending and distinct, or a one-line error."""
    try:
        values = [float(r) for r in levels]
    except (TypeError, ValueError):
        raise CertifyError(f"the levels (--radii or --radius) must be numbers, got {levels!r}") from None
    if not values:
        raise CertifyError("the sequential plan needs at least one level (--radii or --radius)")
    bad = [r for r in values if not (math.isfinite(r) and r >= 0)]
    if bad:
        raise CertifyError(f"levels (--radii or --radius) must be finite radii >= 0, got {bad[0]!r}")
    return tuple(sorted(set(values)))


def make_plan(sampling: str, *, n0: int, n: int, alpha: float, levels: Sequence[float] | None = None,
              granularity: int = 1, **tuning: Any):
    """The plan ``--sampling`` names: fixed (n0 and n views, whatever the votes) or sequential.
    The settings are checked already (``certifier.settings.JobSettings``)."""
    if sampling == "fixed" and levels is None and not tuning:
        return FixedSampling(n0, n)
    if sampling == "sequential":
        from .threats import DEFAULT_RADII

        return SequentialSampling(n0, n, alpha, DEFAULT_RADII if levels is None else levels,
                                  granularity=granularity, **tuning)
    raise ValueError(f"no {sampling!r} plan with levels {levels!r} and {tuning!r}")
