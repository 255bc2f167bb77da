"""Projected attacks on a loss, in torch: PGD from gradients, SPSA from loss values alone.

What is attacked comes from the caller as a loss of the perturbation (for SmoothAdv,
Salman et al. 2019: -log of the smoothed soft classifier's probability of the class,
estimated on m noisy views per step); this module only knows the set the perturbation
must stay in (:class:`Ball`) and how to climb the loss inside it. ``certify attack`` uses
it (certifier_plugins.attack), and training losses that attack their inputs can too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

NORMS = ("l2", "l1", "linf")
#: L1 steps move the coordinates whose gradient is in this top share (at least one), as
#: SLIDE does (Tramer and Boneh 2019): a dense L1 step would spread its budget thin.
L1_STEP_SHARE = 0.01


@dataclass
class Ball:
    """Perturbations delta with ||delta||_norm <= radius and low <= delta <= high, coordinatewise.

    ``low`` and ``high`` (tensors shaped like delta, low <= 0 <= high) keep the attacked
    point x + delta in its box ([0, 1]^d gives low = -x, high = 1 - x); None: no box.
    """

    norm: str
    radius: float
    low: object = None
    high: object = None

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}")

    def clip(self, delta):
        import torch

        if self.low is not None:
            delta = torch.maximum(delta, self.low)
        if self.high is not None:
            delta = torch.minimum(delta, self.high)
        return delta

    def project(self, delta):
        """A point of the ball near ``delta``: into the box, then onto the norm ball.

        Shrinking towards 0 never leaves a box that holds 0, so the result is in both (it is
        the exact Euclidean projection for Linf, and for L2 and L1 whenever the box does not bind).
        """
        import torch

        delta = self.clip(delta)
        flat = delta.reshape(len(delta), -1)
        if self.norm == "linf":
            flat = flat.clamp(-self.radius, self.radius)
        elif self.norm == "l2":
            norms = flat.norm(dim=1, keepdim=True)
            flat = flat * torch.clamp(self.radius / norms.clamp_min(1e-30), max=1.0)
        else:
            flat = _project_l1(flat, self.radius)
        return flat.reshape(delta.shape)

    def step(self, gradient, delta, size: float):
        """The steepest ascent step of length ``size`` in the ball's norm (L1: a sparse one),
        leaving out coordinates that already sit on the box's side the gradient points to."""
        import torch

        blocked = torch.zeros_like(gradient, dtype=torch.bool)
        if self.high is not None:
            blocked |= (delta >= self.high) & (gradient > 0)
        if self.low is not None:
            blocked |= (delta <= self.low) & (gradient < 0)
        gradient = torch.where(blocked, torch.zeros_like(gradient), gradient)
        flat = gradient.reshape(len(gradient), -1)
        if self.norm == "linf":
            direction = flat.sign()
        elif self.norm == "l2":
            direction = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)
        else:
            keep = max(1, math.ceil(L1_STEP_SHARE * flat.shape[1]))
            threshold = flat.abs().topk(keep, dim=1).values[:, -1:]
            direction = torch.where((flat.abs() >= threshold) & (flat != 0), flat.sign(), torch.zeros_like(flat))
            direction = direction / direction.abs().sum(dim=1, keepdim=True).clamp_min(1.0)
        return (size * direction).reshape(gradient.shape)

    def size(self, delta) -> list[float]:
        """||delta|| in the ball's norm, per row, in float64."""
        flat = delta.detach().double().reshape(len(delta), -1)
        order = {"l1": 1, "l2": 2, "linf": math.inf}[self.norm]
        return flat.norm(p=order, dim=1).tolist()


def _project_l1(flat, radius: float):
    """Each row onto the L1 ball of ``radius`` (Duchi et al. 2008: soft thresholding at the
    level that leaves an L1 norm of exactly ``radius``)."""
    import torch

    magnitude = flat.abs()
    outside = magnitude.sum(dim=1) > radius
    if not outside.any():
        return flat
    rows = magnitude[outside]
    ordered = rows.sort(dim=1, descending=True).values
    cumulative = ordered.cumsum(dim=1)
    ranks = torch.arange(1, rows.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    fits = ordered * ranks > cumulative - radius
    last = fits.sum(dim=1, keepdim=True).clamp_min(1)  # how many coordinates stay non-zero
    threshold = (cumulative.gather(1, last - 1) - radius) / last.to(flat.dtype)
    shrunk = (rows - threshold).clamp_min(0.0) * flat[outside].sign()
    out = flat.clone()
    out[outside] = shrunk
    # float rounding may leave the norm a hair above the radius: scale the last ulps away
    excess = out.abs().sum(dim=1, keepdim=True)
    return out * torch.clamp(radius / excess.clamp_min(1e-30), max=1.0)


def pgd(loss: Callable, start, ball: Ball, *, steps: int, step_size: float):
    """Projected gradient ascent on ``loss`` (a function of the perturbation returning one value
    per row, each row's loss depending on that row alone) from ``start``, inside ``ball``."""
    import torch

    delta = ball.project(start.detach())
    for _ in range(steps):
        delta = delta.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(loss(delta).sum(), delta)
        with torch.no_grad():
            delta = ball.project(delta + ball.step(gradient, delta, step_size))
    return delta.detach()


def spsa(losses: Callable, start, ball: Ball, *, steps: int, step_size: float, samples: int, probe: float,
         generator):
    """Projected ascent on a loss known only by its values (Spall's SPSA; Uesato et al. 2018).

    ``losses(deltas)`` takes a batch of perturbations of one input and returns their losses,
    each of the batch computed with the same noise (common random numbers). The gradient is
    estimated from ``samples`` pairs delta +- probe * v, v of random signs.
    """
    import torch

    delta = ball.project(start.detach())
    for _ in range(steps):
        signs = torch.randint(0, 2, (samples, *delta.shape[1:]), generator=generator, device=delta.device)
        signs = (2 * signs - 1).to(delta.dtype)
        pairs = torch.cat([delta + probe * signs, delta - probe * signs])
        values = losses(pairs)
        slopes = (values[:samples] - values[samples:]) / (2 * probe)
        gradient = (slopes.view(-1, *(1,) * (delta.dim() - 1)) * signs).mean(dim=0, keepdim=True)
        delta = ball.project(delta + ball.step(gradient, delta, step_size))
    return delta.detach()
