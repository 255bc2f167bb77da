"""Confidence bounds and tests used by certificate rules (float64 throughout)."""

from __future__ import annotations

import decimal
import math

import numpy as np

#: How far above its betainc estimate a binomial tail may be: scipy.special.betainc came
#: within 1.9e-12 of exact tails (40-digit sums) for n up to 10^5 and tails from 1e-3 down
#: to 1e-200 (5,000 cases); this leaves five times that.
TAIL_SLACK = 1e-11
#: Below this, betainc can be far off (2e-4 at 3e-259, a factor 2.8 at 1e-292): smaller
#: tails are bounded in log space only.
_SMALLEST_BETAINC_TAIL = 1e-200


def _log_tail(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(estimate, room) with log I_p(a, b) <= estimate + room, for b >= 1 and 0 < p < 1
    (estimate +inf where nothing bounds it). With a = k and b = n - k + 1, I_p(a, b) is
    P(Bin(n, p) >= k), the tail a Clopper-Pearson bound must keep at most alpha.

    b = 1: the tail is p^a. Else I_p(a, b) = p^a (1-p)^b / (a B(a, b)) times a series whose
    terms fall at least by r = p (a + b) / (a + 1) each, so where r < 1 it is at most the
    first term / (1 - r): computed in log space, it holds however small the tail is (the
    room is 25 times gammaln's worst error against 50-digit values, arguments up to 3e15).
    Else betainc, where it is reliable.
    """
    from scipy.special import betainc, gammaln

    with np.errstate(all="ignore"):
        log_p, log_q = np.log(p), np.log1p(-p)
        ratio = p * (a + b) / (a + 1)
        terms = np.stack([a * log_p, b * log_q, -np.log(a), -gammaln(a), -gammaln(b), gammaln(a + b),
                          -np.log1p(-ratio)])
        room = 1e-14 * (1 + np.abs(terms).sum(axis=0) + ratio / (1 - ratio))
        estimate = np.where(ratio < 1, terms.sum(axis=0), np.inf)
        tail = betainc(a, b, p)
        reliable = (tail >= _SMALLEST_BETAINC_TAIL) & (np.log(tail) + TAIL_SLACK < estimate + room)
        estimate = np.where(reliable, np.log(tail), estimate)
        room = np.where(reliable, TAIL_SLACK, room)
        power = a * log_p
        estimate = np.where(b == 1, power, estimate)
        room = np.where(b == 1, 1e-15 * (1 + np.abs(power)), room)
    return estimate, room


def _valid(a: np.ndarray, b: np.ndarray, log_alpha: float, p: np.ndarray) -> np.ndarray:
    """Where p is a valid lower bound: I_p(a, b) at most alpha."""
    inside = np.isfinite(p) & (p >= 0) & (p < 1)
    q = np.where(inside & (p > 0), p, 0.5)
    estimate, room = _log_tail(a, b, q)
    return inside & ((p == 0) | (estimate + room <= log_alpha))


def _nudged_down(a: np.ndarray, b: np.ndarray, log_alpha: float, p: np.ndarray) -> np.ndarray:
    """A Newton step in log space to where the tail's bound is alpha with room to spare; always down."""
    from scipy.special import gammaln

    with np.errstate(all="ignore"):
        q = np.where((p > 0) & (p < 1), p, 0.5)
        estimate, room = _log_tail(a, b, q)
        # d log(tail) / d log(p) = p * density(p) / tail, with Beta(a, b)'s density
        log_slope = (a * np.log(q) + (b - 1) * np.log1p(-q) - gammaln(a) - gammaln(b) + gammaln(a + b) - estimate)
        step = (estimate + 2 * room - log_alpha) / np.exp(log_slope)
        step = np.where(np.isfinite(step) & (step > 0) & (p < 1), step, 0.0)
        # at least a few ulps down, so every round moves
        return np.minimum(p * np.exp(-step), p * (1 - 4e-16))


def _lower_bounds(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Beta(a, b)'s alpha-quantile, or just below it: never above, never NaN, never a warning."""
    from scipy.special import betaincinv

    log_alpha = math.log(alpha)
    with np.errstate(all="ignore"):
        # betaincinv is what beta.ppf computes, without its warnings
        p = np.where(b == 1, np.exp(log_alpha / a), betaincinv(a, b, alpha)).astype(np.float64)
    valid = _valid(a, b, log_alpha, p)
    for _ in range(8):
        if valid.all():
            return p
        usable = ~valid & np.isfinite(p) & (p > 0) & (p <= 1)
        if not usable.any():
            break
        p = np.where(usable, _nudged_down(a, b, log_alpha, p), p)
        valid = _valid(a, b, log_alpha, p)
    # what is still not valid (far off, or NaN): bisection in log p, from a valid p
    stuck = ~valid
    if stuck.any():
        p[stuck] = _bisected(a[stuck], b[stuck], log_alpha)
    return p


def _bisected(a: np.ndarray, b: np.ndarray, log_alpha: float) -> np.ndarray:
    """The largest p found (64 halvings of log p from the smallest float to 1) passing the check."""
    low, high = np.full(a.shape, math.log(5e-324)), np.zeros(a.shape)
    floor_valid = _valid(a, b, log_alpha, np.exp(low))
    for _ in range(64):
        middle = (low + high) / 2
        ok = _valid(a, b, log_alpha, np.exp(middle))
        low, high = np.where(ok, middle, low), np.where(ok, high, middle)
    return np.where(floor_valid, np.exp(low), 0.0)


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided lower bound on a binomial proportion, valid with probability >= 1 - alpha.

    Boost's incomplete beta inverse (behind scipy's beta.ppf) can answer too high: by up to
    7e-7 of alpha in the tail at ordinary alphas with large n, by orders of magnitude (or
    NaN, with a warning) below alpha ~1e-80. So every answer is checked against the tail it
    must have and nudged down until it holds; one that stays far off is recomputed by
    bisection in log space. Valid for every alpha in (0, 1); never warns.
    """
    if trials <= 0 or successes <= 0:
        return 0.0
    if successes > trials:
        raise ValueError(f"{successes} successes in {trials} trials")
    return float(clopper_pearson_lower_array(successes, trials, alpha))


def clopper_pearson_lower_array(successes, trials, alpha: float):
    """clopper_pearson_lower for arrays of counts. A count may be fractional (a projected
    count): the bound is then Beta(k, n - k + 1)'s alpha-quantile, checked the same way."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    k, n = np.broadcast_arrays(np.asarray(successes, dtype=np.float64), np.asarray(trials, dtype=np.float64))
    if np.any(k > n):
        raise ValueError("more successes than trials")
    positive = (k > 0) & (n > 0)
    bounds = np.zeros(k.shape)
    if positive.any():
        a, b = k[positive], n[positive] - k[positive] + 1
        bounds[positive] = _lower_bounds(a, b, alpha)
    return float(bounds) if bounds.ndim == 0 else bounds


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided upper bound on a binomial proportion, valid with probability >= 1 - alpha:
    one minus the lower bound for the failures."""
    if trials <= 0 or successes >= trials:
        return 1.0
    failures_lower = clopper_pearson_lower(trials - successes, trials, alpha)
    upper = 1.0 - failures_lower
    if 1.0 - upper > failures_lower:  # rounded down (1 - upper is exact here): one float up
        upper = math.nextafter(upper, 2.0)
    return min(upper, 1.0)


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


def round_display(value: float, digits: int = 4, *, up: bool = False) -> float:
    """``value`` rounded to ``digits`` decimals for display in the direction that claims less:
    down (a radius, the upper end of a factor range) or ``up`` (the lower end). A value from
    2^52 / 10^digits on (show it with :func:`show_number`), or not finite, is returned as is."""
    factor = 10.0**digits
    scaled = value * factor
    if not abs(scaled) < 2.0**52:  # not finite, or too large: value * factor has no fraction left to drop
        return value
    rounded = math.ceil(scaled) if up else math.floor(scaled)
    shown = rounded / factor
    # value * factor and the division each round to nearest: the result may land on the
    # wrong side of ``value`` (58.884699999999995 would show as 58.8847), so step once more
    if up and shown < value:
        shown = (rounded + 1) / factor
    if not up and shown > value:
        shown = (rounded - 1) / factor
    return shown


def round_down(value: float, digits: int = 4) -> float:
    """Round down for display, so a printed radius never exceeds the real one."""
    return round_display(value, digits)


def show_number(value: float, digits: int = 4, *, up: bool = False) -> str:
    """``value`` as text for tables, rounded the way that claims less (:func:`round_display`):
    ``0.4312`` below a million, ``1.2345e+308`` from there on (never 300 digits), ``-`` when
    it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    if abs(value) < 1e6:
        return f"{round_display(float(value), digits, up=up):.{digits}f}"
    exact = decimal.Decimal(value)  # every float is a decimal fraction: this rounds the value itself
    exponent = exact.adjusted()
    with decimal.localcontext() as context:
        context.prec = 1000  # more digits than any float has: nothing is rounded before quantize
        step = decimal.Decimal(1).scaleb(-digits)
        mantissa = exact.scaleb(-exponent).quantize(step, rounding=decimal.ROUND_CEILING if up else decimal.ROUND_FLOOR)
        if abs(mantissa) >= 10:  # rounded up to 10.0000: one more digit of exponent
            mantissa, exponent = (mantissa / 10).quantize(step, rounding=decimal.ROUND_CEILING), exponent + 1
    return f"{mantissa}e{exponent:+03d}"
