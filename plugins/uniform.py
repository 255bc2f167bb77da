"""Uniform additive smoothing (Lee et al. 2019, Yang et al. 2020): L1 radius 2 lambda (pA_lower - 1/2).

The noise is U[-lambda, lambda]^d, independent per pixel. Lee et al.'s theorem (in the
form of Levine and Feizi 2021, Theorem 1) makes p_c(x) = P(f(x + eps) = c) 1/(2 lambda)-
Lipschitz in L1 for every class, so a class whose probability is above 1/2 stays above
1/2 within L1 distance 2 lambda (p - 1/2). Yang et al. (2020, Table 1) state the same
radius and report noise levels as sigma = lambda / sqrt(3), the noise's standard
deviation; both ``--sigma`` and ``-o lambda`` are accepted.
"""

from __future__ import annotations

import numpy as np
from pydantic import create_model

import certifier
from certifier import hookimpl
from certifier_plugins._lambda import LambdaSmoothing, lambda_field
from certifier_plugins.rs import ADDITIVE_CHECKS


class UniformSmoothing(LambdaSmoothing):
    """f(x + eps), eps ~ U[-lambda, lambda]^d; CERTIFY as Cohen et al. with the L1 radius of Lee et al."""

    name = "uniform"
    additive_noise = True  # x + U[-lambda, lambda]^d
    description = "uniform additive noise (Lee et al. 2019, Yang et al. 2020): L1 radius 2 lambda (pA_lower - 1/2)"

    Options = create_model("UniformOptions", __base__=certifier.Options,
                           **{"lambda": lambda_field("half-width of the noise U[-lambda, lambda] per pixel")})

    def sample(self, x: np.ndarray, rng: np.random.Generator, group: str) -> np.ndarray:
        noise = rng.random(x.shape, dtype=np.float32)
        noise *= np.float32(2.0 * self.lam)
        noise -= np.float32(self.lam)
        noise += x
        return noise

    def soundness_checks(self):
        return ADDITIVE_CHECKS


@hookimpl
def register_methods(register):
    register(UniformSmoothing)
