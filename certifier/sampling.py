"""Sampling plans: how many views the engine draws for each input, and which bounds are valid for them.

The engine asks its plan for each phase of an input (selection, estimation, ...) and
for the chunks of views to draw in it; the certificate rules see the plan's bound
through :class:`certifier.Votes`. A plan is plain data, so an engine rebuilt from the
same settings elsewhere draws the same views.
"""

from __future__ import annotations

from typing import Any, Iterator

from .stats import clopper_pearson_lower

#: Phases of one input: views that choose the class, fresh views that bound its
#: probability, views for PREDICT, and every view of a deterministic method.
SELECTION, ESTIMATION, PREDICTION, ENUMERATION = "selection", "estimation", "prediction", "enumeration"


class FixedSampling:
    """n0 selection views and n estimation views per input (n views for PREDICT), all
    drawn whatever the votes say; one-sided Clopper-Pearson bounds, valid for a number
    of trials fixed in advance."""

    name = "fixed"

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


class Enumeration:
    """Every view of a deterministic method exactly once: the votes are exact."""

    name = "enumeration"

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
