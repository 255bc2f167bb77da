"""RS: Gaussian randomized smoothing (Cohen, Rosenfeld and Kolter, 2019), L2 radius."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

import certifier
from certifier import (
    Certificate, SmoothingMethod, SoundnessCheck, Votes, gaussian_certificate, gaussian_views, hookimpl,
    two_bound_gaussian_certificate,
)

#: Checks of methods whose views are x plus noise symmetric about 0 and independent of x:
#: the smoothed classifier of a hyperplane is the same hyperplane.
SYMMETRIC_NOISE = "noise symmetric about 0, independent of x, keeps a hyperplane"
ADDITIVE_CHECKS = (SoundnessCheck("linear", reason=SYMMETRIC_NOISE), SoundnessCheck("mean", reason=SYMMETRIC_NOISE),
                   SoundnessCheck("pixel", reason=SYMMETRIC_NOISE))

BOUNDS_HELP = ("one: sigma Phi^-1(pA_lower), the other classes' share taken as 1 - pA; two: sigma / 2 "
               "(Phi^-1(pA_lower) - Phi^-1(pB_upper)) with pB_upper bounded from the runner-up classes' "
               "votes, alpha split between the bounds (helps when the other classes' votes are spread)")


def without_default_bounds(settings: dict) -> dict:
    """The header's settings, leaving out ``bounds`` at its default, so results files written
    before the option existed resume as before."""
    options = settings.get("options") or {}
    if options.get("bounds") == "one":
        settings = {**settings, "options": {k: v for k, v in options.items() if k != "bounds"}}
    return settings


class GaussianSmoothing(SmoothingMethod):
    """f(x + Z), Z ~ N(0, sigma^2 I); CERTIFY and PREDICT as in Cohen et al."""

    name = "rs"
    norm = "l2"
    denoisable = True  # its views are Gaussian-noisy images
    additive_noise = True  # x + N(0, sigma^2 I)
    description = "Gaussian noise (Cohen et al. 2019): L2 radius sigma * Phi^-1(pA_lower)"

    class Options(certifier.Options):
        bounds: Literal["one", "two"] = Field("one", description=BOUNDS_HELP)

    def sample(self, x: np.ndarray, rng: np.random.Generator, group: str) -> np.ndarray:
        return gaussian_views(x, self.sigma, rng)

    def certify(self, selection: Votes, estimation: Votes, alpha: float) -> Certificate:
        if self.options.bounds == "two":
            return two_bound_gaussian_certificate(selection, estimation, alpha, self.sigma)
        return gaussian_certificate(selection, estimation, alpha, self.sigma)

    def settings(self) -> dict:
        return without_default_bounds(super().settings())

    def soundness_checks(self):
        return ADDITIVE_CHECKS


@hookimpl
def register_methods(register):
    register(GaussianSmoothing)
