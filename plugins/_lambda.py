"""What the L1 methods parameterized by lambda share (uniform, ssn, dssn): the ``-o lambda``
option, their noise scale (``scale_option``: sigma = lambda / sqrt(3), the papers' convention,
so ``--sigma`` gives lambda too), and the rule radius 2 lambda (pA_lower - 1/2).

Private to the built-in plugins: a third-party plugin copies what it needs.
"""

from __future__ import annotations

import math

from pydantic import Field

from certifier import Certificate, SmoothingMethod, Votes, lower_bound_certificate

SQRT3 = math.sqrt(3.0)


def lambda_field(meaning: str):
    """The ``-o lambda`` option: a pydantic field (its name is a Python keyword)."""
    return (float | None, Field(None, gt=0, allow_inf_nan=False,
                                description=f"{meaning} (default: sigma * sqrt(3); sigma = lambda / sqrt(3))"))


class LambdaSmoothing(SmoothingMethod):
    """Base for methods parameterized by lambda, with sigma = lambda / sqrt(3) as an alternative.

    ``self.lam`` is lambda; ``self.sigma`` is always lambda / sqrt(3), so ``certify train``
    records both.

    The certificate is the L1 one of noise whose smoothed class probabilities are
    1/(2 lambda)-Lipschitz in L1: a class above 1/2 stays above 1/2 within L1 distance
    2 lambda (p - 1/2).
    """

    norm = "l1"
    scale_option = "lambda"
    scale_per_sigma = SQRT3

    def __init__(self, sigma: float | None = None, options=None):
        super().__init__(sigma=sigma, options=options)
        self.lam = float(getattr(self.options, "lambda"))

    def certify(self, selection: Votes, estimation: Votes, alpha: float) -> Certificate:
        return lower_bound_certificate(selection, estimation, alpha, lambda p: 2.0 * self.lam * (p - 0.5))
