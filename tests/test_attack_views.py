"""The attack's torch forms of the plugins' views and its balls agree with the plugins' own numpy."""

from __future__ import annotations

import numpy as np
import pytest

import certifier
from certifier.plugins import get_method

torch = pytest.importorskip("torch")
from certifier_plugins import drs, pprs  # noqa: E402
from certifier_plugins._attack_views import (  # noqa: E402
    AdditiveSurface, GridSurface, ParameterSurface, PartitionSurface, ShiftSurface, StraightThroughSurface,
    drs_clean_view, segment_means, surface_for,
)
from certifier_plugins._smoothadv import Ball, pgd  # noqa: E402



@pytest.mark.parametrize("side", drs.SIDES)
@pytest.mark.parametrize("resize", ["bilinear", "nearest", "none"])
@pytest.mark.parametrize("width", [6, 7])
def test_drs_views_in_torch_are_the_plugins(side, resize, width):
    x = np.random.default_rng(0).random((3, 2, 5, width), dtype=np.float32)
    method = get_method("drs")(sigma=0.5, options=get_method("drs").Options(resize=resize))
    expected = method.clean_view(x, side)
    got = drs_clean_view(torch.from_numpy(x), side, resize).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # and the noisy views are the clean view plus the plugin's own noise of a zero image
    surface = surface_for(method, x.shape[1:])
    assert isinstance(surface, AdditiveSurface)
    noisy = surface.views(torch.from_numpy(x[:1]), 4, side, np.random.default_rng(1)).numpy()
    np.testing.assert_allclose(noisy, method.sample(np.repeat(x[:1], 4, axis=0), np.random.default_rng(1), side),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [{"method": "grid"}, {"method": "slic", "segments": 9}])
def test_pprs_views_in_torch_are_the_plugins(options):
    method = get_method("pprs")(sigma=0.25, options=get_method("pprs").Options(**options))
    x = np.random.default_rng(0).random((1, 1, 12, 12), dtype=np.float32)
    surface = surface_for(method, x.shape[1:])
    assert isinstance(surface, PartitionSurface)
    point = torch.from_numpy(x).requires_grad_(True)
    views = surface.views(point, 3, "model", np.random.default_rng(5))
    np.testing.assert_allclose(views.detach().numpy(), method.sample(np.repeat(x, 3, axis=0), np.random.default_rng(5),
                                                                      "model"), rtol=1e-5, atol=1e-6)
    views.sum().backward()  # the means pass the gradient on: every pixel counts once per view
    np.testing.assert_allclose(point.grad.numpy(), 3.0, rtol=1e-5)


def test_segment_means_match_superpixels():
    from certifier_plugins.superpixels import segment_means as numpy_means

    values = np.random.default_rng(0).random((2, 3, 6, 5), dtype=np.float32)
    labels = np.random.default_rng(1).integers(0, 4, size=(2, 6, 5)).astype(np.int32)
    expected = np.moveaxis(numpy_means(np.moveaxis(values, 1, -1), labels), -1, 1)
    got = segment_means(torch.from_numpy(values), torch.from_numpy(labels.astype(np.int64))).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("plugin", ["brightness", "contrast", "gamma"])
def test_parameter_views_in_torch_are_the_plugins(plugin):
    method = get_method(plugin)(sigma=0.3)
    x = np.random.default_rng(0).random((1, 1, 4, 4), dtype=np.float32)
    x[0, 0, 0, 0] = 0.0  # gamma's x^g at 0
    surface = surface_for(method, x.shape[1:])
    assert isinstance(surface, ParameterSurface)
    t = torch.tensor([[0.2]], requires_grad=True)
    point = surface.point(torch.from_numpy(x), t)
    np.testing.assert_allclose(point.detach().numpy()[0], surface.point_numpy(x[0], t), rtol=1e-5, atol=1e-7)
    views = surface.views(point, 5, "model", np.random.default_rng(3))
    expected = method.sample(np.repeat(surface.point_numpy(x[0], t)[None], 5, axis=0), np.random.default_rng(3),
                             "model")
    np.testing.assert_allclose(views.detach().numpy(), expected, rtol=1e-4, atol=1e-6)
    views.sum().backward()
    assert torch.isfinite(t.grad).all() and t.grad.abs().item() > 0
    assert surface.distance(x[0], None, t) == pytest.approx(0.2)


def test_splitting_noise_passes_the_gradient_straight_through():
    ssn, dssn = get_method("ssn")(sigma=0.3), get_method("dssn")(sigma=0.3)
    x = np.full((1, 1, 4, 4), 100 / 255, dtype=np.float32)
    assert type(surface_for(ssn, x.shape[1:])) is StraightThroughSurface
    surface = surface_for(dssn, x.shape[1:])
    assert isinstance(surface, GridSurface)
    # a point found is on the 1/q grid, no farther than the perturbation (rounded towards the input)
    delta = torch.from_numpy(np.random.default_rng(0).uniform(-0.05, 0.05, size=x.shape).astype(np.float32))
    point = surface.point_numpy(x[0], delta)
    assert np.allclose(point * 255, np.rint(point * 255), atol=1e-4)
    assert np.abs(point - x[0]).sum() <= np.abs(delta.numpy()).sum() + 1e-6
    np.testing.assert_array_equal(dssn.check_inputs(point[None])[0], point)


def test_translation_and_other_threat_models():
    method = get_method("translation")(options=get_method("translation").Options(k=1))
    surface = surface_for(method, (1, 8, 8))
    assert isinstance(surface, ShiftSurface)
    assert surface.shifts(1.5) == sorted(surface.shifts(1.5), key=lambda t: max(map(abs, t)))
    assert len(surface.shifts(2)) == 25 and len(surface.shifts(2, inside=1)) == 16


@pytest.mark.parametrize("norm", ["l2", "l1", "linf"])
def test_projection_stays_in_the_ball_and_the_box(norm):
    x = torch.rand(3, 50, generator=torch.Generator().manual_seed(0))
    ball = Ball(norm, 0.7, low=-x, high=1 - x)
    delta = ball.project(torch.randn(3, 50, generator=torch.Generator().manual_seed(1)) * 3)
    assert all(size <= 0.7 * (1 + 1e-6) for size in ball.size(delta))
    assert ((x + delta) >= -1e-7).all() and ((x + delta) <= 1 + 1e-7).all()
    # what is inside stays where it is
    inside = delta * 0.5
    np.testing.assert_allclose(ball.project(inside).numpy(), inside.numpy(), atol=1e-7)


def test_l1_projection_is_the_nearest_point_of_the_ball():
    """Duchi et al.'s projection against a brute-force minimization over the ball."""
    from scipy.optimize import minimize

    v = torch.tensor([[0.9, -0.4, 0.05, 0.3]], dtype=torch.float64)
    got = Ball("l1", 0.8).project(v).numpy()[0]
    constraint = {"type": "ineq", "fun": lambda d: 0.8 - np.abs(d).sum()}
    distance = lambda d: ((d - v.numpy()[0]) ** 2).sum()  # noqa: E731
    best = minimize(distance, np.zeros(4), constraints=[constraint], method="SLSQP", options={"ftol": 1e-12})
    assert np.abs(got).sum() <= 0.8 + 1e-12
    assert distance(got) <= distance(best.x) + 1e-9
    np.testing.assert_allclose(got, best.x, atol=1e-3)


def test_pgd_reaches_the_nearest_point_of_a_linear_boundary():
    """On a linear loss the best point of an L2 ball is r w / ||w|| away: PGD gets there."""
    w = torch.tensor([[0.6, -0.8, 0.0]])
    x = torch.full((1, 3), 0.5)
    ball = Ball("l2", 0.3, low=-x, high=1 - x)
    delta = pgd(lambda d: (d * w).sum(dim=1), torch.zeros(1, 3), ball, steps=10, step_size=0.075)
    np.testing.assert_allclose(delta.numpy(), (0.3 * w / w.norm()).numpy(), atol=1e-6)


def test_plugins_without_torch_views_are_attacked_without_gradients(register_methods):
    class Shuffled(certifier.SmoothingMethod):
        name = "shuffled-test"
        norm = "l2"

        def sample(self, x, rng, group):
            return x[..., ::-1] + rng.normal(0, self.sigma, x.shape).astype(np.float32)

        def certify(self, selection, estimation, alpha):
            return certifier.Certificate(None, 0.0)

    surface = surface_for(Shuffled(sigma=0.5), (4,))
    assert surface.gradient is None

    class Declared(Shuffled):
        name = "declared-test"
        additive_noise = True

        def sample(self, x, rng, group):
            return x + rng.normal(0, self.sigma, x.shape).astype(np.float32)

    assert isinstance(surface_for(Declared(sigma=0.5), (4,)), AdditiveSurface)
    # a subclass of a built-in with views of its own is not taken for the built-in
    assert surface_for(type("Odd", (pprs.PartitionSmoothing,), {"name": "odd", "sample": Shuffled.sample})(sigma=0.5),
                       (1, 4, 4)).gradient is None
