"""RS: Gaussian randomized smoothing (Cohen, Rosenfeld and Kolter, 2019), L2 radius."""

from __future__ import annotations

import numpy as np

from certifier import Certificate, SmoothingMethod, Votes, hookimpl
from certifier.noise import gaussian_views
from certifier.stats import gaussian_quantile


class GaussianSmoothing(SmoothingMethod):
    """f(x + Z), Z ~ N(0, sigma^2 I); CERTIFY and PREDICT as in Cohen et al."""

    name = "rs"
    norm = "l2"
    description = "Gaussian noise (Cohen et al. 2019): L2 radius sigma * Phi^-1(pA_lower)"

    def sample(self, x: np.ndarray, rng: np.random.Generator, group: str) -> np.ndarray:
        return gaussian_views(x, self.sigma, rng)

    def certify(self, selection: Votes, estimation: Votes, alpha: float) -> Certificate:
        (group,) = self.groups
        top = selection.top()
        p_lower = estimation.lower_bound(group, top, alpha)
        details = {"p_lower": p_lower, "top_votes": estimation.count(group, top)}
        if p_lower < 0.5:
            return Certificate.abstain(**details)
        return Certificate(top, self.sigma * gaussian_quantile(p_lower), details=details)


@hookimpl
def register_methods(register):
    register(GaussianSmoothing)
