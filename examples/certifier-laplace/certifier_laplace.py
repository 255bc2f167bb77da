"""Laplace smoothing for onnx-certifier: L1 radius -b ln(2 (1 - pA_lower)) (Teng et al. 2020)."""

import math

import numpy as np
from pydantic import Field

import certifier
from certifier import SmoothingMethod, SoundnessCheck, hookimpl, lower_bound_certificate


class LaplaceSmoothing(SmoothingMethod):
    name = "laplace"
    norm = "l1"
    description = "Laplace noise (Teng et al. 2020): L1 radius -b ln(2 (1 - pA_lower))"
    # the noise has its own scale, b: -o b sets it, and so does --sigma S, as the noise of the
    # same standard deviation (b = S / sqrt(2)); given both, they must agree
    scale_option = "b"
    scale_per_sigma = 1 / math.sqrt(2)

    class Options(certifier.Options):
        b: float | None = Field(None, gt=0, allow_inf_nan=False, description="Laplace scale b")

    def __init__(self, sigma=None, options=None):
        super().__init__(sigma, options)  # settles b and sigma = b sqrt(2), or refuses
        self.b = self.options.b

    def sample(self, x, rng, group):
        noise = rng.laplace(0.0, self.b, size=x.shape).astype(np.float32)
        return x + noise

    def certify(self, selection, estimation, alpha):
        # the top class of the selection votes, its lower bound p from the estimation
        # votes, abstain unless p > 1/2, else this radius
        return lower_bound_certificate(
            selection, estimation, alpha, lambda p: -self.b * math.log(2 * (1 - p))
        )

    def soundness_checks(self):
        # the noise is symmetric about 0 and independent of x: a hyperplane stays the boundary
        return (SoundnessCheck("linear"), SoundnessCheck("mean"), SoundnessCheck("pixel"))


@hookimpl
def register_methods(register):
    register(LaplaceSmoothing)
