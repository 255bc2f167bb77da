"""What the L1 methods parameterized by lambda share (uniform, ssn, dssn): the ``-o lambda``
option, lambda from ``--sigma`` (sigma = lambda / sqrt(3), the papers' convention), and the
rule radius 2 lambda (pA_lower - 1/2).

Private to the built-in plugins: a third-party plugin copies what it needs.
"""

from __future__ import annotations

import math

from pydantic import Field

from certifier import Certificate, CertifyError, SmoothingMethod, Votes, lower_bound_certificate

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

    The certificate is the L1 one of noise whose smoothed class probabilities are
    1/(2 lambda)-Lipschitz in L1: a class above 1/2 stays above 1/2 within L1 distance
    2 lambda (p - 1/2).
    """

    norm = "l1"
    def __init__(self, sigma: float | None = None, options=None):
        options = options if options is not None else self.Options()
        lam = resolve_lambda(self.name, sigma, getattr(options, "lambda"))
        options = options.model_copy(update={"lambda": lam})
        super().__init__(sigma=lam / SQRT3, options=options)
        self.lam = lam

    def certify(self, selection: Votes, estimation: Votes, alpha: float) -> Certificate:
        return lower_bound_certificate(selection, estimation, alpha, lambda p: 2.0 * self.lam * (p - 0.5))
