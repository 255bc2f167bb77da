"""RS: Gaussian randomized smoothing (Cohen, Rosenfeld and Kolter, 2019), L2 radius."""

from __future__ import annotations

import numpy as np

from certifier import Certificate, SmoothingMethod, Votes, gaussian_certificate, gaussian_views, hookimpl


class GaussianSmoothing(SmoothingMethod):
    """f(x + Z), Z ~ N(0, sigma^2 I); CERTIFY and PREDICT as in Cohen et al."""

    name = "rs"
    norm = "l2"
    denoisable = True  # its views are Gaussian-noisy images
    description = "Gaussian noise (Cohen et al. 2019): L2 radius sigma * Phi^-1(pA_lower)"

    def sample(self, x: np.ndarray, rng: np.random.Generator, group: str) -> np.ndarray:
        return gaussian_views(x, self.sigma, rng)

    def certify(self, selection: Votes, estimation: Votes, alpha: float) -> Certificate:
        return gaussian_certificate(selection, estimation, alpha, self.sigma)


@hookimpl
def register_methods(register):
    register(GaussianSmoothing)
