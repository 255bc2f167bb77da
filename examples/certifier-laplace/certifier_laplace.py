"""Laplace smoothing for onnx-certifier: L1 radius -b ln(2 (1 - pA_lower)) (Teng et al. 2020)."""

import math

import numpy as np
from pydantic import Field

import certifier
from certifier import CertifyError, SmoothingMethod, SoundnessCheck, hookimpl, lower_bound_certificate


class LaplaceSmoothing(SmoothingMethod):
    name = "laplace"
    norm = "l1"
    description = "Laplace noise (Teng et al. 2020): L1 radius -b ln(2 (1 - pA_lower))"

    class Options(certifier.Options):
        scale: float | None = Field(
            None, gt=0, allow_inf_nan=False,
            description="Laplace scale b (default: sigma / sqrt(2), the same variance)",
        )

    def __init__(self, sigma=None, options=None):
        # the noise has its own parameter, b: take it from -o scale or from --sigma, never both
        # disagreeing, and keep sigma the noise's standard deviation, b sqrt(2)
        options = options or self.Options()
        scale = options.scale
        if scale is None and sigma is None:
            raise CertifyError("plugin laplace needs -o scale B or --sigma S (b = S / sqrt(2))")
        if scale is None:
            scale = sigma / math.sqrt(2)
        elif sigma is not None and not math.isclose(sigma, scale * math.sqrt(2), rel_tol=1e-9):
            raise CertifyError(f"plugin laplace: --sigma {sigma:g} means -o scale {sigma / math.sqrt(2):g}, "
                               f"not {scale:g}; give only one of them")
        super().__init__(sigma=scale * math.sqrt(2), options=options.model_copy(update={"scale": scale}))
        self.scale = scale

    def sample(self, x, rng, group):
        noise = rng.laplace(0.0, self.scale, size=x.shape).astype(np.float32)
        return x + noise

    def certify(self, selection, estimation, alpha):
        # the top class of the selection votes, its lower bound p from the estimation
        # votes, abstain unless p > 1/2, else this radius
        return lower_bound_certificate(
            selection, estimation, alpha, lambda p: -self.scale * math.log(2 * (1 - p))
        )

    def soundness_checks(self):
        # the noise is symmetric about 0 and independent of x: a hyperplane stays the boundary
        return (SoundnessCheck("linear"), SoundnessCheck("mean"), SoundnessCheck("pixel"))


@hookimpl
def register_methods(register):
    register(LaplaceSmoothing)
