"""What ``certify attack`` perturbs for each smoothing method, and the method's views of an
attacked point as a function torch can differentiate.

A :class:`Surface` says where the attacker moves (a ball of the threat model's norm in pixel
space, the transformation's parameter, or cyclic shifts), how far a perturbation goes in the
threat model's units, and how the method's noisy views of the attacked point are made:

- from the plugin's own noise where the views are a linear function of the point plus noise
  that does not depend on it (rs, uniform, drs, and any plugin that declares
  ``additive_noise``): ``sample`` of a zero image is the noise;
- pprs: the plugin's superpixels of the noisy sample, the means over them in torch;
- ssn and dssn: splitting noise is flat almost everywhere, so the gradient is passed
  straight through it (the views are the plugin's own; BPDA, Athalye et al. 2018);
- brightness, contrast and gamma: the plugin's parameter draws, the transformation in torch.

Views of other plugins have no torch form: they are attacked without gradients (SPSA), through
the plugin's own ``sample``. Nothing here decides an outcome: every point found is checked by
certify's own engine.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from certifier import CertifyError, SmoothingMethod, gaussian_views, threat_of
from certifier_plugins._smoothadv import NORMS, Ball

PIXEL, PARAMETER, SHIFT = "pixel", "parameter", "shift"
#: Pixels below this are 0 for the gradient of x^g (the power's log would be -inf).
_TINY = 1e-30


def _torch():
    import torch

    return torch


def _overrides(method: SmoothingMethod, base: type, name: str) -> bool:
    """Whether ``method``'s class replaces ``base``'s ``name`` (a subclass with other views)."""
    return getattr(type(method), name) is not getattr(base, name)


class Surface:
    """Where the attacker moves for one smoothing method, and its views of a moved input.

    A perturbation ``delta`` is a torch tensor with a batch axis of one: the pixel change
    (shaped like the input) or the transformation's parameter (1, 1). ``views`` and
    ``clean_view`` are None when the method's views have no torch form (attacked by SPSA).
    """

    kind: str = PIXEL
    norm: str = "l2"

    def __init__(self, method: SmoothingMethod, input_shape: tuple[int, ...]):
        self.method, self.input_shape = method, tuple(input_shape)
        #: how the gradient reaches the point: "exact", "straight-through" (BPDA), or None (no torch views)
        self.gradient: str | None = "exact"

    # -- the perturbation -----------------------------------------------------

    def zero(self):
        return _torch().zeros((1, *self.input_shape))

    def ball(self, x, radius: float) -> Ball:
        return Ball(self.norm, radius, low=-x, high=1.0 - x)

    def point(self, x, delta):
        """The attacked input (torch), differentiable in ``delta``."""
        return x + delta

    def point_numpy(self, x: np.ndarray, delta) -> np.ndarray:
        """The attacked input as certify's engine reads it (float32, shaped like ``x``)."""
        return np.clip(x + _numpy(delta)[0], 0.0, 1.0).astype(np.float32)

    def distance(self, x: np.ndarray, point: np.ndarray, delta) -> float:
        """How far the attacked input ``point`` (made from ``delta``) is from ``x``, in the threat
        model's units, in float64."""
        change = point.astype(np.float64) - x.astype(np.float64)
        return float(np.linalg.norm(change.reshape(-1), ord={"l1": 1, "l2": 2, "linf": np.inf}[self.norm]))

    # -- the method's views -----------------------------------------------------

    def described(self, delta) -> dict:
        """What a record keeps of a perturbation besides its distance, to rebuild the point: the
        parameter of a semantic transform (a pixel perturbation is too large to keep)."""
        return {}

    def views(self, point, count: int, group: str, rng: np.random.Generator):
        """``count`` noisy views of ``point`` (1, *input_shape) for ``group``, differentiable in it."""
        raise NotImplementedError

    def clean_view(self, point, group: str):
        """The view without noise (what the bare model reads), differentiable in ``point``."""
        return point

    def views_numpy(self, points: np.ndarray, group: str, rng: np.random.Generator) -> np.ndarray:
        """The plugin's own views of a batch of points (one view each), for attacks without gradients."""
        return self.method.sample(points, rng, group)

    def clean_view_numpy(self, points: np.ndarray, group: str) -> np.ndarray | None:
        return self.method.clean_view(points, group)


class AdditiveSurface(Surface):
    """Views = L(point) + noise, noise independent of the point: ``sample`` of zeros is the noise,
    ``linear`` the method's map of a clean point to its view (identity unless given)."""

    def __init__(self, method, input_shape, linear: Callable | None = None):
        super().__init__(method, input_shape)
        self.linear = linear

    def clean_view(self, point, group):
        return point if self.linear is None else self.linear(point, group)

    def views(self, point, count, group, rng):
        torch = _torch()
        zeros = np.zeros((count, *self.input_shape), dtype=np.float32)
        noise = torch.from_numpy(np.ascontiguousarray(self.method.sample(zeros, rng, group), dtype=np.float32))
        return self.clean_view(point, group) + noise.to(point.device)


class PartitionSurface(Surface):
    """pprs: Gaussian noise, then every pixel the mean of its superpixel; the superpixels are the
    plugin's own, of the noisy sample (or of the input, for the conditional variant), and the
    means are taken in torch, so the gradient is exact for the partition drawn."""

    def views(self, point, count, group, rng):
        torch = _torch()
        method = self.method
        clean = _numpy(point)
        noise = gaussian_views(np.zeros((count, *self.input_shape), np.float32), method.sigma, rng)
        noisy = point + torch.from_numpy(noise).to(point.device)
        source = _numpy(noisy) if method.options.partition_from == "noisy" else np.repeat(clean, count, axis=0)
        labels = np.asarray(method.partition(source))
        return segment_means(noisy, torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)).to(point.device))


class StraightThroughSurface(Surface):
    """ssn and dssn: the plugin's own views, with the gradient of each view passed to the point
    as it is (the splitting noise is a step function: its own gradient is 0 almost everywhere)."""

    def __init__(self, method, input_shape):
        super().__init__(method, input_shape)
        self.gradient = "straight-through"

    def views(self, point, count, group, rng):
        torch = _torch()
        points = np.repeat(_numpy(point), count, axis=0)
        views = torch.from_numpy(np.ascontiguousarray(self.method.sample(points, rng, group), dtype=np.float32))
        return views.to(point.device) + (point - point.detach())


class GridSurface(StraightThroughSurface):
    """dssn certifies inputs on the 1/q grid: a point found is rounded onto it, towards the input,
    so it stays inside the ball and the box."""

    def point_numpy(self, x, delta):
        q = self.method.q
        steps = np.trunc(np.float64(q) * _numpy(delta)[0].astype(np.float64))  # towards 0: never farther
        levels = np.clip(np.rint(x.astype(np.float64) * q) + steps, 0, q)
        return (levels / q).astype(np.float32)

    def distance(self, x, point, delta):
        """In whole levels, as the certificate counts them: sum |k' - k| / q."""
        q = self.method.q
        moved = np.rint(point.astype(np.float64) * q) - np.rint(x.astype(np.float64) * q)
        return float(np.abs(moved).sum() / q)


def _float32_towards_zero(delta) -> np.float32:
    """The parameter of ``delta`` as the float32 the views use, rounded towards 0 (never past the radius)."""
    value = float(_numpy(delta).reshape(-1)[0])
    single = np.float32(value)
    return np.nextafter(single, np.float32(0)) if abs(float(single)) > abs(value) else single


class ParameterSurface(Surface):
    """brightness, contrast, gamma: the attacker picks the parameter t with |t| <= r; the attacked
    input is psi_t(x) and its views psi_theta(psi_t(x)), theta the plugin's own draws."""

    kind, norm = PARAMETER, "linf"

    def __init__(self, method, input_shape, transform: Callable):
        super().__init__(method, input_shape)
        self.transform = transform  # torch psi_theta(x) for theta shaped to broadcast

    def zero(self):
        return _torch().zeros((1, 1))

    def ball(self, x, radius):
        return Ball("linf", radius)

    def point(self, x, delta):
        return self.transform(x, delta.reshape(-1, *(1,) * (x.dim() - 1)))

    def point_numpy(self, x, delta):
        theta = np.full((1,) * (x.ndim + 1), _float32_towards_zero(delta), dtype=np.float32)
        return np.asarray(self.method.transform(x[None], theta), dtype=np.float32)[0]

    def distance(self, x, point, delta):
        return abs(float(_float32_towards_zero(delta)))

    def described(self, delta) -> dict:
        return {"parameter": float(_float32_towards_zero(delta))}

    def views(self, point, count, group, rng):
        torch = _torch()
        theta = self.method.parameters(rng, count, point.dim())
        return self.transform(point, torch.from_numpy(np.ascontiguousarray(theta)).to(point.device))


class ShiftSurface(Surface):
    """translation: every cyclic shift within the radius is tried (the method enumerates its
    views, so the search is exact)."""

    kind, norm = SHIFT, "linf"

    def __init__(self, method, input_shape):
        super().__init__(method, input_shape)
        self.gradient = None

    @staticmethod
    def shifts(radius: float, inside: float = -1.0) -> list[tuple[int, int]]:
        """Shifts (t_y, t_x) with max(|t_y|, |t_x|) <= floor(radius) and > floor(inside), nearest first."""
        reach, done = math.floor(radius), math.floor(inside)
        found = [(ty, tx) for ty in range(-reach, reach + 1) for tx in range(-reach, reach + 1)
                 if max(abs(ty), abs(tx)) > done]
        return sorted(found, key=lambda t: (max(abs(t[0]), abs(t[1])), abs(t[0]) + abs(t[1]), t))

    @staticmethod
    def shifted(x: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
        return np.roll(x, shift, axis=(-2, -1))


# -- the built-in methods' surfaces ------------------------------------------------------


def surface_for(method: SmoothingMethod, input_shape: tuple[int, ...]) -> Surface:
    """The attack surface of ``method``, or a one-line refusal for a threat model no attack here covers."""
    from certifier_plugins import drs, dssn, pprs, rs, semantic, translation, uniform

    threat = threat_of(method)
    if isinstance(method, translation.Translation) and not _overrides(method, translation.Translation, "views"):
        return ShiftSurface(method, input_shape)
    if isinstance(method, semantic.ParameterSmoothing):
        for base, transform in ((semantic.Brightness, _brightness), (semantic.Contrast, _contrast),
                                (semantic.Gamma, _gamma)):
            if (isinstance(method, base) and not _overrides(method, base, "transform")
                    and not _overrides(method, semantic.ParameterSmoothing, "sample")):
                return ParameterSurface(method, input_shape, transform)
        raise _refusal(method, threat.name)
    if threat.name not in NORMS or threat.display != "distance" or threat.unit != "pixel units":
        raise _refusal(method, threat.name)
    surface = Surface(method, input_shape)
    additive = next((base for base in (rs.GaussianSmoothing, uniform.UniformSmoothing) if isinstance(method, base)),
                    None)
    if additive is not None and not _overrides(method, additive, "sample"):
        surface = AdditiveSurface(method, input_shape)
    elif isinstance(method, drs.DualSmoothing) and not _overrides(method, drs.DualSmoothing, "sample"):
        surface = AdditiveSurface(method, input_shape, lambda point, group: drs_clean_view(point, group,
                                                                                           method.resize))
    elif isinstance(method, pprs.PartitionSmoothing) and not _overrides(method, pprs.PartitionSmoothing, "sample"):
        surface = PartitionSurface(method, input_shape)
    elif isinstance(method, dssn.DSSN) and not _overrides(method, dssn.DSSN, "views"):
        surface = GridSurface(method, input_shape)
    elif isinstance(method, dssn.SSN) and not _overrides(method, dssn.SSN, "sample"):
        surface = StraightThroughSurface(method, input_shape)
    elif getattr(method, "additive_noise", False) is True:
        surface = AdditiveSurface(method, input_shape)
    else:
        surface.gradient = None  # views without a torch form: attacked through the plugin's own sample
    surface.norm = threat.name
    return surface


def _refusal(method: SmoothingMethod, threat: str) -> CertifyError:
    return CertifyError(
        f"plugin {method.name} certifies radii in its own threat model ({threat}); certify attack attacks L1, L2 and "
        f"Linf balls in pixel space, brightness, contrast and gamma, and cyclic shifts: attack it with a tool of "
        f"its own"
    )


def _brightness(x, theta):
    return x + theta


def _contrast(x, theta):
    return x * _torch().exp(theta)


def _gamma(x, theta):
    torch = _torch()
    exponent = torch.exp(theta)
    positive = x > 0
    power = torch.exp(exponent * torch.log(torch.where(positive, x, torch.full_like(x, _TINY))))
    return torch.where(positive, power, torch.zeros_like(power))


# -- torch forms of the plugins' transforms ---------------------------------------------


def segment_means(values, labels):
    """Every pixel of ``values`` (B, C, H, W) replaced by the mean of its segment in ``labels``
    (B, H, W), as ``certifier_plugins.superpixels.segment_means`` computes it."""
    torch = _torch()
    batch, channels, height, width = values.shape
    labels = labels.reshape(batch, -1).long()
    segments = int(labels.max()) + 1 if labels.numel() else 1
    index = (labels + segments * torch.arange(batch, device=labels.device)[:, None]).reshape(-1)
    pixels = values.permute(0, 2, 3, 1).reshape(-1, channels)
    sums = torch.zeros(batch * segments, channels, dtype=values.dtype, device=values.device).index_add(0, index, pixels)
    counts = torch.bincount(index, minlength=batch * segments).clamp_min(1).to(values.dtype)
    means = (sums / counts[:, None])[index]
    return means.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


def _own_first(height: int, side: str, device):
    """Per row: whether the side's pixel is the first of its pair of columns (drs's checkerboard)."""
    torch = _torch()
    from certifier_plugins.drs import _first_column

    first = _first_column(side)
    rows = torch.arange(height, device=device) % 2
    return (rows == first).view(height, 1)


def drs_split(x, side: str):
    """drs's sub-image of ``side`` (B, C, H, ceil(W / 2)) of a batch of images, in torch."""
    torch = _torch()
    width = x.shape[-1]
    if width % 2:
        x = torch.nn.functional.pad(x, (0, 1))
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    first = _own_first(x.shape[-2], side, x.device)
    return torch.where(first, pairs[..., 0], pairs[..., 1])


def drs_merge(sub, side: str, width: int, mode: str):
    """drs's resize of sub-images back to full width (``certifier_plugins.drs.merge``), in torch."""
    torch = _torch()
    from certifier_plugins.drs import _neighbour_weights

    if mode == "nearest":
        return sub.repeat_interleave(2, dim=-1)[..., :width]
    height, half = sub.shape[-2:]
    pad = torch.nn.functional.pad
    first = _own_first(height, side, sub.device)
    missing = sub + pad(sub[..., :-1, :], (0, 0, 1, 0)) + pad(sub[..., 1:, :], (0, 0, 0, 1))
    # the other horizontal neighbour: the next pair's pixel where the side's comes first, else the previous one
    missing = missing + torch.where(first, pad(sub[..., 1:], (0, 1)), pad(sub[..., :-1], (1, 0)))
    missing = missing * torch.from_numpy(_neighbour_weights(height, half, side)).to(sub.device)
    pairs = torch.stack([torch.where(first, sub, missing), torch.where(first, missing, sub)], dim=-1)
    return pairs.reshape(*sub.shape[:-1], 2 * half)[..., :width]


def drs_clean_view(x, side: str, resize: str):
    """drs's view of clean images for ``side``: the sub-image, resized back unless ``resize`` is none."""
    sub = drs_split(x, side)
    return sub if resize == "none" else drs_merge(sub, side, x.shape[-1], resize)


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()
