"""Brightness, contrast and gamma smoothing: views that compose, and certificates against closed forms.

The closed-form model is a threshold on one pixel, f(z) = 1[z_0 > tau] (an ONNX hyperplane
model), so under each transformation P(f(psi_theta(x)) = 1) is a Gaussian CDF and the
smoothed classifier's exact robust radius in the parameter is known:

- brightness, z_0 = x_0 + b:          exact radius |x_0 - tau| (pixel units)
- contrast, z_0 = e^c x_0:            exact radius |log(x_0 / tau)| (log factor)
- gamma, z_0 = x_0^(e^t):             exact radius |log(log tau / log x_0)| (log exponent)

Certified through the shipped path on many inputs, a certificate above the exact radius
(or a wrong prediction) may happen only with probability alpha per input. Deliberately
wrong rules and views must break the same checks.
"""

from __future__ import annotations

import math
import sys
from decimal import Decimal, getcontext

import numpy as np
import pytest
from scipy import stats

import certifier
from certifier import gaussian_quantile
from certifier.methods import Votes
from certifier.noise import NOISE_STREAMS
from certifier.plugins import get_method
from certifier.stats import clopper_pearson_lower
from certifier_plugins import semantic

from onnx_models import hyperplane_model, save

TAU = 0.4
SIGMAS = {"brightness": 0.25, "contrast": 0.5, "gamma": 0.5}


def exact_radius(name: str, x0: np.ndarray) -> np.ndarray:
    """The smoothed threshold classifier's exact robust radius in the transformation's parameter."""
    x0 = np.asarray(x0, dtype=np.float64)
    if name == "brightness":
        return np.abs(x0 - TAU)
    if name == "contrast":
        return np.abs(np.log(x0 / TAU))
    return np.abs(np.log(np.log(TAU) / np.log(x0)))


def exact_probability(name: str, x0: np.ndarray, sigma: float) -> np.ndarray:
    """P(f(psi_theta(x)) = 1) in closed form: class 1 wins by the signed exact radius over sigma."""
    sign = np.sign(np.asarray(x0, dtype=np.float64) - TAU)
    return stats.norm.cdf(sign * exact_radius(name, x0) / sigma)


def threshold_run(tmp_path, plugin: str, sigma: float):
    path = save(hyperplane_model([1, 0, 0, 0], -TAU), tmp_path / "threshold.onnx")
    return certifier.load(path, plugin=plugin, sigma=sigma)


def inputs(x0: np.ndarray, seed: int = 0) -> np.ndarray:
    rest = np.random.default_rng(seed).uniform(0.05, 0.95, size=(len(x0), 3))
    return np.column_stack([x0, rest]).astype(np.float32)


def violations(tmp_path, plugin: str, x0: np.ndarray, *, sigma: float, alpha: float, n: int = 400, seed: int = 3,
               exact_for: str | None = None):
    """Certify x0 (one input each) and count certificates that are wrong for the exact smoothed classifier."""
    run = threshold_run(tmp_path, plugin, sigma)
    x = inputs(x0, seed)
    results = run.certify(x, n0=50, n=n, alpha=alpha, batch_size=512, seed=seed)
    exact = exact_radius(exact_for or plugin, x[:, 0])
    side = (x[:, 0] > TAU).astype(int)
    wrong = [r for r in results if r.prediction is not None
             and (r.prediction != side[r.index] or r.radius > exact[r.index])]
    return len(wrong), results, exact


# -- the views -------------------------------------------------------------------------------


def method(name: str, sigma: float = 0.3):
    return get_method(name)(sigma=sigma)


@pytest.mark.parametrize("name", ["brightness", "contrast", "gamma"])
def test_the_transformations_compose_additively(name):
    smoothing = method(name)
    rng = np.random.default_rng(1)
    x = rng.uniform(0.01, 1.0, size=(50, 1, 4, 4)).astype(np.float32)
    a = rng.normal(scale=0.4, size=(50, 1, 1, 1)).astype(np.float32)
    b = rng.normal(scale=0.4, size=(50, 1, 1, 1)).astype(np.float32)
    twice = smoothing.transform(smoothing.transform(x, a), b)
    once = smoothing.transform(x, (a.astype(np.float64) + b).astype(np.float32))
    np.testing.assert_allclose(twice, once, rtol=2e-5, atol=2e-6)


def recovered_parameters(name: str, x: np.ndarray, views: np.ndarray) -> np.ndarray:
    """theta of each view, from every pixel (rows: views, columns: pixels)."""
    x = np.broadcast_to(x, views.shape).reshape(len(views), -1).astype(np.float64)
    views = views.reshape(len(views), -1).astype(np.float64)
    if name == "brightness":
        return views - x
    if name == "contrast":
        return np.log(views / x)
    return np.log(np.log(views) / np.log(x))


@pytest.mark.parametrize("name", ["brightness", "contrast", "gamma"])
def test_one_gaussian_parameter_per_view_shared_by_every_pixel(name):
    sigma = 0.3
    smoothing = method(name, sigma)
    x = np.random.default_rng(2).uniform(0.05, 0.95, size=(1, 2, 3, 3)).astype(np.float32)
    views = smoothing.sample(np.broadcast_to(x, (20_000, 2, 3, 3)), np.random.default_rng(5), "any")
    assert views.dtype == np.float32 and views.shape == (20_000, 2, 3, 3)
    theta = recovered_parameters(name, x, views)
    spread = np.ptp(theta, axis=1)
    assert spread.max() < 1e-3 * max(1.0, np.abs(theta).max())  # the same theta for every pixel of a view
    assert stats.kstest(theta[:, 0] / sigma, "norm").pvalue > 1e-4
    if name == "brightness":  # no clipping: views leave [0, 1]
        assert views.min() < 0 and views.max() > 1


def test_gamma_refuses_negative_pixels():
    with pytest.raises(certifier.CertifyError, match="negative values"):
        method("gamma").check_inputs(np.array([[0.5, -0.1]], dtype=np.float32))


# -- the rule --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["brightness", "contrast", "gamma"])
def test_the_rule_is_cohens_in_the_parameter(name):
    smoothing = method(name, 0.5)
    votes = lambda counts: Votes({"any": np.array(counts)}, clopper_pearson_lower)  # noqa: E731
    certificate = smoothing.certify(votes([3, 97]), votes([120, 9880]), alpha=0.001)
    p_lower = stats.beta.ppf(0.001, 9880, 121)
    assert certificate.prediction == 1
    assert certificate.radius == pytest.approx(0.5 * stats.norm.ppf(p_lower), rel=1e-9)
    # the class comes from the selection votes (class 0 here, not the estimation's 1); at or below 1/2
    # the method abstains
    assert smoothing.certify(votes([60, 40]), votes([100, 9900]), 0.001).prediction is None
    assert smoothing.certify(votes([0, 10]), votes([5000, 5000]), 0.5).prediction is None


# -- closed forms: the exact radius and the failure rate -----------------------------------------


@pytest.mark.parametrize("name", ["brightness", "contrast", "gamma"])
def test_certificates_stay_within_the_exact_radius_but_for_alpha(name, tmp_path):
    alpha = 0.05
    x0 = np.random.default_rng(11).uniform(0.05, 0.95, size=300)
    wrong, results, exact = violations(tmp_path, name, x0, sigma=SIGMAS[name], alpha=alpha)
    assert wrong <= stats.binom.ppf(0.999, len(x0), alpha)
    # not vacuous: inputs far from the threshold get radii close to their exact radius
    far = [r for r in results if r.prediction is not None and 0.15 < exact[r.index] < 2.5 * SIGMAS[name]]
    assert len(far) > 60
    assert np.mean([r.radius / exact[r.index] for r in far]) > 0.6


@pytest.mark.parametrize("name", ["brightness", "contrast", "gamma"])
def test_the_failure_rate_stays_under_alpha_near_the_threshold(name, tmp_path):
    """One input certified 400 times with fresh noise where pA = 0.6: the bound is stressed."""
    alpha, sigma = 0.1, SIGMAS[name]
    # the x0 whose exact radius is sigma * Phi^-1(0.6), on the class-1 side
    target = sigma * stats.norm.ppf(0.6)
    x0 = {"brightness": TAU + target, "contrast": TAU * math.exp(target),
          "gamma": math.exp(math.log(TAU) * math.exp(-target))}[name]
    assert exact_probability(name, np.array([x0]), sigma)[0] == pytest.approx(0.6, abs=1e-6)
    wrong, results, _ = violations(tmp_path, name, np.full(400, x0), sigma=sigma, alpha=alpha, n=200)
    assert wrong <= stats.binom.ppf(0.999, 400, alpha)
    assert sum(r.prediction == 1 for r in results) > 100  # the point is often certified


# -- deliberately wrong rules and views must fail these checks --------------------------------------


class PointEstimate(semantic.Brightness):
    """Wrong: the radius from the observed frequency k / n instead of its lower confidence bound."""

    name = "brightness-point-estimate"

    def certify(self, selection, estimation, alpha):
        (group,) = estimation.counts
        top = selection.top()
        frequency = estimation.count(group, top) / estimation.trials(group)
        if frequency <= 0.5:
            return certifier.Certificate.abstain()
        return certifier.Certificate(top, self.sigma * gaussian_quantile(min(frequency, 1 - 1e-12)))


class FischerWithoutHalf(semantic.Contrast):
    """Wrong: Fischer et al.'s sigma / 2 (Phi^-1(pA) - Phi^-1(pB)) without the 1/2, pB = 1 - pA."""

    name = "contrast-without-half"

    def certify(self, selection, estimation, alpha):
        return certifier.gaussian_certificate(selection, estimation, alpha, self.sigma, scale=2.0)


class LinearExponent(semantic.Gamma):
    """Wrong views: exponent 1 + t instead of e^t, which does not compose ((x^(1+a))^(1+b) != x^(1+a+b))."""

    name = "gamma-linear-exponent"

    def transform(self, x, theta):
        return np.power(x, np.maximum(1 + theta, 1e-3), dtype=np.float32)


def test_a_point_estimate_fails_the_failure_rate_check(tmp_path, register_methods):
    register_methods(PointEstimate)
    alpha, sigma = 0.1, SIGMAS["brightness"]
    x0 = TAU + sigma * stats.norm.ppf(0.6)
    wrong, _, _ = violations(tmp_path, "brightness-point-estimate", np.full(400, x0), sigma=sigma, alpha=alpha, n=200,
                             exact_for="brightness")
    assert wrong > stats.binom.ppf(0.999, 400, alpha)


@pytest.mark.parametrize("mutant,plugin", [(FischerWithoutHalf, "contrast"), (LinearExponent, "gamma")])
def test_wrong_rules_and_views_fail_the_exact_radius_check(mutant, plugin, tmp_path, register_methods):
    register_methods(mutant)
    alpha = 0.05
    x0 = np.random.default_rng(11).uniform(0.05, 0.95, size=300)
    wrong, _, _ = violations(tmp_path, mutant.name, x0, sigma=SIGMAS[plugin], alpha=alpha, exact_for=plugin)
    assert wrong > stats.binom.ppf(0.999, len(x0), alpha)


# -- factor ranges are never wider than certified ----------------------------------------------------


def test_factor_ranges_are_inside_the_certified_open_interval():
    getcontext().prec = 60
    threat = get_method("contrast").threat_model
    for radius in [1e-12, 1e-6, 0.01, 0.1, 0.2231435513142097, 0.5, 0.7996, 1.0, 2.5, 10.0]:
        low, high = threat.factor_range(radius)
        exact_low, exact_high = (-Decimal(radius)).exp(), Decimal(radius).exp()
        assert Decimal(low) > exact_low and Decimal(high) < exact_high
        shown = threat.show(radius)
        shown_low, shown_high = (Decimal(v) for v in shown.strip("[]").split(", "))
        assert shown_low > exact_low and shown_high < exact_high, shown
    assert threat.factor_range(0.0) == (1.0, 1.0)


def test_radii_whose_factor_is_beyond_float_range_show_as_powers_of_e():
    """e^r overflows a float from r = 709.78: ranges and their display stay inside (e^-r, e^r), never crash."""
    getcontext().prec = 60
    threat = get_method("contrast").threat_model
    for radius in [50.0, 709.0, 709.78, 709.79, 745.2, 800.0, 1e6, 1e308, 1.7976931348623157e308]:
        low, high = threat.factor_range(radius)
        assert -Decimal(radius) < Decimal(low).ln() and Decimal(high).ln() < Decimal(radius)
        shown = threat.show(radius)
        if radius < math.log(sys.float_info.max):  # e^r is a float
            shown_low, shown_high = (Decimal(v) for v in shown.strip("[]").split(", "))
            assert -Decimal(radius) < shown_low.ln() and shown_high.ln() < Decimal(radius), shown
        else:
            assert shown.startswith("(e^-") and shown.endswith(")"), shown
            exponent = shown.split(", e^")[1].rstrip(")")
            # read back as a float, the exponent is at most the radius (as every radius shown)
            assert shown == f"(e^-{exponent}, e^{exponent})" and 0 < float(exponent) <= radius, shown
        assert threat.certified_set(radius) == f"factor in {shown}"
    assert threat.show(800.0) == "(e^-800.0000, e^800.0000)"
    assert threat.show(float("inf")) == threat.show(float("nan")) == "-"


# -- settings whose views float32 cannot hold are refused up front -------------------------------------


@pytest.mark.parametrize("plugin, sigma, fragments", [
    ("gamma", 300, ["plugin gamma: --sigma 300 draws exponents up to e^2736", "use --sigma 9.72 or less"]),
    ("contrast", 30, ["plugin contrast: --sigma 30 draws factors up to e^273.6", "use --sigma 4.86 or less"]),
    ("contrast", 4.87, ["makes views up to 1.95e+19", "beyond 1.84e+19", "use --sigma 4.86 or less"]),
    ("brightness", 1e30, ["makes views up to 9.12e+30", "use --sigma 2.02e+18 or less"]),
])
def test_a_sigma_whose_views_overflow_float32_is_refused_naming_the_largest_that_works(tmp_path, plugin, sigma,
                                                                                     fragments):
    """The noise reaches 9.12 sigma (LARGEST_STANDARD_NORMAL): at that theta the views (and the factor
    e^theta) must be float32 numbers a model can compute with. The largest sigma named works."""
    with pytest.raises(certifier.CertifyError) as refused:
        threshold_run(tmp_path, plugin, sigma)
    message = str(refused.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    largest = float(message.split("use --sigma ")[1].split(" or less")[0])
    method = threshold_run(tmp_path, plugin, largest).method
    extreme = np.float32(largest) * np.float32(certifier.LARGEST_STANDARD_NORMAL)
    with np.errstate(over="raise", invalid="raise"):  # nothing overflows at the largest theta drawn
        views = method.transform(np.array([[0.0, 0.5, 1.0]] * 2, np.float32), np.array([[-extreme], [extreme]]))
    assert np.abs(views).max() <= certifier.MAX_INPUT_MAGNITUDE


@pytest.mark.parametrize("stream", NOISE_STREAMS)
def test_the_largest_standard_normal_is_what_the_generator_can_reach(stream):
    class Zeros:
        """A generator at the far end: U = 0 for the radius (clamped to 2^-60), angle 0 (cos = 1)."""

        noise_stream = stream

        def random(self, size, dtype=np.float64, out=None):
            values = np.zeros(size, dtype=dtype)
            if out is not None:
                out[...] = values
                return out
            return values

        class bit_generator:
            @staticmethod
            def random_raw(size):
                return np.zeros(size, dtype=np.uint64)

    drawn = certifier.standard_normal(Zeros(), (4,))
    assert float(np.abs(drawn).max()) == certifier.LARGEST_STANDARD_NORMAL
    assert abs(certifier.LARGEST_STANDARD_NORMAL - math.sqrt(120 * math.log(2))) < 1e-5
