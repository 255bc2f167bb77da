"""Confidence bounds and tests used by certificate rules (float64 throughout)."""

from __future__ import annotations

import math


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided lower bound on a binomial proportion, valid with probability >= 1 - alpha."""
    if trials <= 0 or successes <= 0:
        return 0.0
    if successes > trials:
        raise ValueError(f"{successes} successes in {trials} trials")
    from scipy.stats import beta  # scipy.stats takes a second to import: only when needed

    return float(beta.ppf(alpha, successes, trials - successes + 1))


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided upper bound on a binomial proportion, valid with probability >= 1 - alpha."""
    if trials <= 0 or successes >= trials:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(1 - alpha, successes + 1, trials - successes))


def binomial_pvalue(successes: int, trials: int) -> float:
    """Two-sided p-value of ``successes`` out of ``trials`` against p = 1/2."""
    if trials <= 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(successes, trials, 0.5).pvalue)


def gaussian_quantile(p: float) -> float:
    """Phi^-1(p) in float64; -inf at 0 and +inf at 1.

    scipy.special.ndtri is what scipy.stats.norm.ppf computes, without its argument
    handling (a thousand times faster: sequential plans ask for it after every chunk).
    """
    from scipy.special import ndtri

    return float(ndtri(p))


def round_down(value: float, digits: int = 4) -> float:
    """Round towards zero for display, so a printed radius never exceeds the real one."""
    factor = 10.0**digits
    return math.floor(value * factor) / factor
