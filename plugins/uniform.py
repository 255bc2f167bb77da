"""Uniform additive smoothing (Lee et al. 2019, Yang et al. 2020): L1 radius 2 lambda (pA_lower - 1/2).

The noise is U[-lambda, lambda]^d, independent per pixel. Lee et al.'s theorem (in the
form of Levine and Feizi 2021, Theorem 1) makes p_c(x) = P(f(x + eps) = c) 1/(2 lambda)-
Lipschitz in L1 for every class, so a class whose probability is above 1/2 stays above
1/2 within L1 distance 2 lambda (p - 1/2). Yang et al. (2020, Table 1) state the same
radius and report noise levels as sigma = lambda / sqrt(3), the noise's standard
deviation; both ``--sigma`` and ``-o lambda`` are accepted.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, create_model

import certifier
from certifier import Certificate, CertifyError, SmoothingMethod, Votes, hookimpl

SQRT3 = math.sqrt(3.0)


def lambda_field(meaning: str):
    """The ``-o lambda`` option: a pydantic field (its name is a Python keyword)."""
    return (float | None, Field(None, gt=0, allow_inf_nan=False,
                                description=f"{meaning} (default: sigma * sqrt(3); sigma = lambda / sqrt(3))"))


def resolve_lambda(plugin: str, sigma: float | None, given: float | None) -> float:
    """lambda from ``-o lambda`` or ``--sigma`` (sigma = lambda / sqrt(3)); both must agree."""
    if given is None and sigma is None:
        raise CertifyError(f"plugin {plugin} needs -o lambda X or --sigma S (sigma = lambda / sqrt(3), "
                           f"the papers' convention)")
    if sigma is not None and not (sigma > 0 and math.isfinite(sigma)):
        raise CertifyError(f"--sigma must be a positive number, got {sigma}")
    if given is None:
        return float(sigma) * SQRT3
    if sigma is not None and not math.isclose(sigma, given / SQRT3, rel_tol=1e-9):
        raise CertifyError(
            f"plugin {plugin}: --sigma {sigma:g} means lambda {sigma * SQRT3:g}, but lambda is {given:g} "
            f"(from -o lambda or the model's metadata); give only one of them, or leave both to the model"
        )
    return float(given)


class LambdaSmoothing(SmoothingMethod):
    """Base for methods parameterized by lambda, with sigma = lambda / sqrt(3) as an alternative.

    ``self.lam`` is lambda; ``self.sigma`` is always lambda / sqrt(3), so ``certify train``
    records both and a later ``--sigma`` is checked against the model's lambda.
    """

    norm = "l1"

    def __init__(self, sigma: float | None = None, options=None):
        options = options if options is not None else self.Options()
        lam = resolve_lambda(self.name, sigma, getattr(options, "lambda"))
        options = options.model_copy(update={"lambda": lam})
        super().__init__(sigma=lam / SQRT3, options=options)
        self.lam = lam


def l1_certificate_from_lower_bound(lam: float, selection: Votes, estimation: Votes, alpha: float) -> Certificate:
    """Choose the class on selection votes, bound it on estimation votes: radius 2 lambda (p_lower - 1/2).

    At p_lower = 1/2 the radius would be 0 and a tie with another class is not excluded,
    so the method abstains unless p_lower > 1/2.
    """
    top = selection.top()
    p_lower = estimation.lower_bound("model", top, alpha)
    details = {"p_lower": p_lower, "top_votes": estimation.count("model", top)}
    if not p_lower > 0.5:
        return Certificate.abstain(**details)
    return Certificate(top, 2.0 * lam * (p_lower - 0.5), details=details)


class UniformSmoothing(LambdaSmoothing):
    """f(x + eps), eps ~ U[-lambda, lambda]^d; CERTIFY as Cohen et al. with the L1 radius of Lee et al."""

    name = "uniform"
    description = "uniform additive noise (Lee et al. 2019, Yang et al. 2020): L1 radius 2 lambda (pA_lower - 1/2)"

    Options = create_model("UniformOptions", __base__=certifier.Options,
                           **{"lambda": lambda_field("half-width of the noise U[-lambda, lambda] per pixel")})

    def sample(self, x: np.ndarray, rng: np.random.Generator, group: str) -> np.ndarray:
        noise = rng.random(x.shape, dtype=np.float32)
        noise *= np.float32(2.0 * self.lam)
        noise -= np.float32(self.lam)
        noise += x
        return noise

    def certify(self, selection: Votes, estimation: Votes, alpha: float) -> Certificate:
        return l1_certificate_from_lower_bound(self.lam, selection, estimation, alpha)


@hookimpl
def register_methods(register):
    register(UniformSmoothing)
