"""Smoothing over the parameter of a lighting change: brightness, contrast and gamma.

A transformation psi_theta that composes additively, psi_a(psi_b(x)) = psi_{a+b}(x), is
smoothed over theta ~ N(0, sigma^2): g(x) = argmax_c P(f(psi_theta(x)) = c). The views of
an attacked input psi_t(x) are psi_{theta + t}(x), so g at psi_t(x) is one-dimensional
Gaussian smoothing of theta -> f(psi_theta(x)) at t, and Cohen et al.'s theorem in one
dimension keeps the prediction for every |t| < sigma Phi^-1(pA_lower) (Fischer et al.
2020; TSS, Li et al. 2021). One theta is drawn per view and shared by all pixels.

- ``brightness``: psi_b(x) = x + b, in pixel units. Nothing is clipped: with clipping to
  [0, 1] the family no longer composes, so the certificate is for unclipped shifts.
- ``contrast``: psi_c(x) = e^c x, a factor e^c on every pixel (contrast about black).
- ``gamma``: psi_t(x) = x^(e^t), the exponent e^t (pixels must be >= 0).

Contrast and gamma are additive in the log of their factor: a radius r certifies every
factor strictly between e^-r and e^r.
"""

from __future__ import annotations

import math

import numpy as np

from certifier import (
    LARGEST_STANDARD_NORMAL, MAX_INPUT_MAGNITUDE, Certificate, CertifyError, SmoothingMethod, SoundnessCheck,
    ThreatModel, Votes, gaussian_certificate, hookimpl, standard_normal,
)

#: Default radii of summaries: brightness shifts in pixel units, log factors for contrast and gamma.
PARAMETER_RADII = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75)


class ParameterSmoothing(SmoothingMethod):
    """Views psi_theta(x) with theta ~ N(0, sigma^2), one theta per view; Cohen et al.'s rule in theta.

    A sigma whose draws make views float32 cannot hold is refused when the method is made,
    as input-space settings are: theta reaches LARGEST_STANDARD_NORMAL (9.12) sigma, and at
    that theta the views of pixels in [0, 1] must stay within MAX_INPUT_MAGNITUDE and, for a
    factor threat model, the factor e^theta must be a float32.
    """

    #: The symbol of theta in pictures.
    symbol = "theta"

    def __init__(self, sigma: float | None = None, options=None):
        super().__init__(sigma, options)
        problem = self.range_problem(self.sigma)
        if problem:
            raise CertifyError(f"plugin {self.name}: --sigma {self.sigma:g} {problem}; use --sigma "
                               f"{_largest_sigma(self.range_problem, self.sigma):.3g} or less")

    def range_problem(self, sigma: float) -> str | None:
        """What float32 cannot hold of the views drawn with ``sigma`` (None: nothing)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            theta = np.float32(sigma) * np.float32(LARGEST_STANDARD_NORMAL)  # as parameters() draws it
            if self.threat_model.display == "factor" and not np.isfinite(np.exp(theta)):
                return (f"draws {self.threat_model.parameter}s up to e^{float(theta):.4g} ({self.symbol} reaches "
                        f"{LARGEST_STANDARD_NORMAL:.3g} sigma), beyond float32's largest number (about e^88.7)")
            pixels = np.broadcast_to(np.array([0.0, 0.5, 1.0], dtype=np.float32), (2, 3))
            views = self.transform(pixels, np.array([[-theta], [theta]], dtype=np.float32))
            largest = float(np.max(np.abs(views)))
        if not largest <= MAX_INPUT_MAGNITUDE:
            return (f"makes views up to {largest:.3g} ({self.symbol} reaches {LARGEST_STANDARD_NORMAL:.3g} sigma), "
                    f"beyond {MAX_INPUT_MAGNITUDE:.3g}, where float32 arithmetic overflows")
        return None

    def transform(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """psi_theta(x) for a batch x and one theta per row, shaped to broadcast against x."""
        raise NotImplementedError

    def parameters(self, rng: np.random.Generator, count: int, ndim: int) -> np.ndarray:
        """``count`` draws of theta ~ N(0, sigma^2), float32, shaped (count, 1, ..., 1) for ``ndim`` dims."""
        theta = standard_normal(rng, (count,))
        theta *= np.float32(self.sigma)
        return theta.reshape((count,) + (1,) * (ndim - 1))

    def sample(self, x: np.ndarray, rng: np.random.Generator, group: str) -> np.ndarray:
        return self.transform(x, self.parameters(rng, len(x), x.ndim))

    def certify(self, selection: Votes, estimation: Votes, alpha: float) -> Certificate:
        return gaussian_certificate(selection, estimation, alpha, self.sigma)

    def stages(self, x: np.ndarray, rng: np.random.Generator, group: str) -> list[tuple[str, np.ndarray]]:
        theta = self.parameters(rng, len(x), x.ndim)
        return [(self.caption(float(theta.reshape(-1)[0])), self.transform(x, theta))]

    def caption(self, theta: float) -> str:
        return f"{self.symbol} = {theta:+.3f}"


class Brightness(ParameterSmoothing):
    name = "brightness"
    description = ("brightness x + b, b ~ N(0, sigma^2) per view, no clipping (Fischer et al. 2020): "
                   "|b| < sigma * Phi^-1(pA_lower)")
    threat_model = ThreatModel(
        "brightness", "the same shift b added to every pixel, without clipping", "|b|",
        "pixel units (1 is the whole [0, 1] range)", "distance", PARAMETER_RADII)
    symbol = "b"
    additive_noise = True  # x + b, one b per view

    def transform(self, x, theta):
        return np.add(x, theta, dtype=np.float32)

    def soundness_checks(self):
        # w.(x + b 1) + c > 0 while b > -(w.x + c) / sum(w): the radius is |w.x + c| / |sum(w)|
        reason = "a hyperplane is crossed at one brightness shift"
        return tuple(SoundnessCheck(kind, reason=reason) for kind in ("linear", "mean", "pixel"))


class Contrast(ParameterSmoothing):
    name = "contrast"
    description = ("contrast e^c x, c ~ N(0, sigma^2) per view, no clipping: factors in [e^-r, e^r], "
                   "r = sigma * Phi^-1(pA_lower)")
    threat_model = ThreatModel(
        "contrast", "every pixel multiplied by the same factor e^c, without clipping", "factor",
        "factor (the radius r bounds |c| = |log factor|)", "factor", PARAMETER_RADII)
    symbol = "c"

    def transform(self, x, theta):
        return np.multiply(x, np.exp(theta), dtype=np.float32)

    def soundness_checks(self):
        # with w >= 0 and c < 0, e^theta w.x + c > 0 while theta > log(-c / w.x)
        reason = "a hyperplane with w >= 0 is crossed at one factor"
        return tuple(SoundnessCheck(kind, reason=reason) for kind in ("linear", "mean", "pixel"))

    def caption(self, theta: float) -> str:
        return f"factor {math.exp(theta):.3f}"


class Gamma(ParameterSmoothing):
    name = "gamma"
    description = ("gamma x^(e^t), t ~ N(0, sigma^2) per view: exponents in [e^-r, e^r], "
                   "r = sigma * Phi^-1(pA_lower)")
    threat_model = ThreatModel(
        "gamma", "gamma correction: every pixel x raised to the same exponent g = e^t", "exponent",
        "exponent (the radius r bounds |t| = |log exponent|)", "factor", PARAMETER_RADII)
    symbol = "t"

    def check_inputs(self, x: np.ndarray) -> np.ndarray:
        if (np.asarray(x) < 0).any():
            raise CertifyError(f"plugin gamma raises pixels to a power, but the input has negative values (as low as "
                               f"{float(np.min(x)):.4g}); gamma correction is for pixels in [0, 1]")
        return x

    def transform(self, x, theta):
        return np.power(x, np.exp(theta), dtype=np.float32)

    def soundness_checks(self):
        # x_k^(e^t) > tau while t < log(log tau / log x_k)
        return (SoundnessCheck("pixel", reason="one pixel crosses a threshold at one exponent"),)

    def caption(self, theta: float) -> str:
        return f"exponent {math.exp(theta):.3f}"


def _largest_sigma(problem, refused: float) -> float:
    """The largest sigma below ``refused`` that ``problem`` accepts, to three digits rounded down."""
    good, bad = 0.0, refused
    for _ in range(200):
        middle = (good + bad) / 2
        if middle in (good, bad):
            break
        good, bad = (middle, bad) if problem(middle) is None else (good, middle)
    exponent = math.floor(math.log10(good)) - 2 if good > 0 else 0
    return math.floor(good / 10.0**exponent) * 10.0**exponent


@hookimpl
def register_methods(register):
    register(Brightness)
    register(Contrast)
    register(Gamma)
