"""The losses ``certify train --loss`` trains with, on a plugin's noisy views.

- ``gaussian``: cross-entropy on one noisy view per input: Gaussian data augmentation
  (Cohen et al. 2019) with whatever noise the plugin draws.
- ``consistency``: m noisy views per input; their mean cross-entropy, plus lambda times the
  mean KL divergence from the views' mean prediction to each view's prediction, plus eta
  times the entropy of that mean prediction (Jeong and Shin 2020).
- ``smoothadv``: PGD in the L2 ball around each input on the smoothed soft classifier (the
  mean softmax over m noisy views), then the cross-entropy of the m noisy views of the
  attacked input (Salman et al. 2019). The noise is drawn once per batch and used by every
  attack step and by the training step, and the ball's radius grows linearly over the first
  warm-up epochs, as in the paper's code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from certifier import CertifyError

LOSSES = ("gaussian", "consistency", "smoothadv")
#: Each loss's settings and their defaults (Gaussian augmentation has none: one noisy view per
#: input), the published ones: m = 2, lambda = 10, eta = 0.5
#: (Jeong and Shin 2020); PGD of 10 steps in an L2 ball of radius 1 with m = 4 noisy views and a
#: 10-epoch warm-up (Salman et al. 2019; the recipe Jeong and Shin give for (Fashion-)MNIST-sized inputs).
DEFAULTS: dict[str, dict[str, Any]] = {
    "gaussian": {},
    "consistency": {"noise_copies": 2, "consistency_weight": 10.0, "entropy_weight": 0.5},
    "smoothadv": {"noise_copies": 4, "attack_radius": 1.0, "attack_steps": 10, "attack_warmup": 10},
}
#: Noisy copies of each input at most: every step holds batch size x copies views.
MAX_COPIES = 256
MAX_ATTACK_STEPS = 1000


@dataclass(frozen=True)
class TrainingLoss:
    """A loss and its settings (every one of :data:`DEFAULTS` for that loss)."""

    name: str
    settings: Mapping[str, Any]

    @property
    def copies(self) -> int:
        """Noisy copies of each input per step, m."""
        return self.settings.get("noise_copies", 1)

    def record(self) -> dict[str, Any]:
        """What the model's metadata and the checkpoint record."""
        return {"loss": self.name, "noise_copies": self.copies, **self.settings}

    def attack_radius(self, epoch: int) -> float:
        """SmoothAdv's radius in ``epoch`` (0-based): eps * (epoch + 1) / warm-up until it reaches eps."""
        warmup = self.settings["attack_warmup"]
        radius = self.settings["attack_radius"]
        return radius if warmup == 0 else radius * min(1.0, (epoch + 1) / warmup)


def make_loss(name: str = "gaussian", **given: Any) -> TrainingLoss:
    """The loss ``name`` with the settings given (None: its default); settings of another
    loss and values out of range are refused in one line."""
    if name not in DEFAULTS:
        raise CertifyError(f"--loss must be one of {', '.join(LOSSES)}, got {name!r}")
    given = {key: value for key, value in given.items() if value is not None}
    for key in given:
        if key not in DEFAULTS[name]:
            owners = [loss for loss in LOSSES if key in DEFAULTS[loss]]
            if not owners:
                raise CertifyError(f"unknown training loss setting {key!r}")
            raise CertifyError(f"--{key.replace('_', '-')} is a setting of --loss {' and '.join(owners)}, "
                               f"not of --loss {name}")
    settings = {**DEFAULTS[name], **given}
    for key, value in settings.items():
        settings[key] = _checked(key, value, name)
    return TrainingLoss(name, settings)


def _checked(key: str, value: Any, loss: str):
    option = f"--{key.replace('_', '-')}"
    if key in ("noise_copies", "attack_steps", "attack_warmup"):
        low = {"noise_copies": 2 if loss == "consistency" else 1, "attack_steps": 1, "attack_warmup": 0}[key]
        high = {"noise_copies": MAX_COPIES, "attack_steps": MAX_ATTACK_STEPS, "attack_warmup": None}[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            within = f"from {low} to {high}" if high else f"at least {low}"
            why = " (the consistency term compares copies)" if key == "noise_copies" and loss == "consistency" else ""
            raise CertifyError(f"{option} must be a whole number {within}{why}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CertifyError(f"{option} must be a number, got {value!r}")
    if key == "attack_radius" and not value > 0:
        raise CertifyError(f"{option} must be above 0 (an L2 radius in pixel units), got {value!r}")
    if value < 0:
        raise CertifyError(f"{option} must be at least 0 (a weight), got {value!r}")
    return float(value)


def check_setting(key: str, value: Any) -> Any:
    """``value`` of loss setting ``key`` as any loss takes it, or a one-line error (consistency's
    at least two copies is :func:`make_loss`'s rule)."""
    return _checked(key, value, "")


def check_method(loss: TrainingLoss, method, no_noise: bool) -> None:
    """Refuse, in one line, a loss the smoothing method's noise cannot train with."""
    if loss.name == "gaussian":
        return
    if no_noise:
        raise CertifyError(f"--loss {loss.name} trains on noisy copies of each input and --no-noise has none; "
                           f"drop --loss or --no-noise")
    if loss.name == "smoothadv":
        if method.norm != "l2":
            raise CertifyError(f"--loss smoothadv attacks in L2 (PGD on an L2 ball), but plugin {method.name} "
                               f"certifies {method.norm} radii; train it with --loss consistency")
        if not method.additive_noise:
            raise CertifyError(f"--loss smoothadv needs views that are the input plus noise, but plugin "
                               f"{method.name} transforms the noisy input, so the attack cannot follow the "
                               f"gradient; train it with --loss consistency")


def consistency_loss(logits, labels, consistency_weight: float, entropy_weight: float):
    """Jeong and Shin's loss from the logits (m, N, classes) of m noisy views of N inputs."""
    import torch
    import torch.nn.functional as F

    copies = logits.shape[0]
    log_probs = F.log_softmax(logits, dim=-1)
    cross_entropy = F.nll_loss(log_probs.flatten(0, 1), labels.repeat(copies))
    mean = log_probs.exp().mean(0)
    log_mean = torch.log(mean.clamp_min(1e-20))
    divergence = (mean * (log_mean - log_probs)).sum(-1).mean()  # KL(mean || view), over views and inputs
    entropy = -(mean * log_mean).sum(-1).mean()
    return cross_entropy + consistency_weight * divergence + entropy_weight * entropy


def smoothed_soft_loss(network, inputs, labels, noise):
    """-log of the smoothed soft classifier's probability of each label: the mean softmax of
    ``network`` over ``inputs + noise[k]`` for the copies k of ``noise`` (copies, *inputs.shape)."""
    import torch
    import torch.nn.functional as F

    copies = noise.shape[0]
    logits = network((inputs.unsqueeze(0) + noise).flatten(0, 1))
    log_probs = F.log_softmax(logits, dim=-1).view(copies, len(inputs), -1)
    log_mean = torch.logsumexp(log_probs, dim=0) - math.log(copies)
    return -log_mean.gather(1, labels[:, None]).squeeze(1)


def smoothadv_attack(network, inputs, labels, noise, radius: float, steps: int):
    """SmoothAdv's PGD: ``steps`` normalized gradient steps of size 2 radius / steps that
    raise :func:`smoothed_soft_loss`, each followed by projection onto [0, 1] (or a box
    holding the input, for inputs outside it) and onto the L2 ball of ``radius``. Returns
    the attacked inputs, detached."""
    import torch

    step_size = 2.0 * radius / steps
    low, high = inputs.clamp(max=0.0), inputs.clamp(min=1.0)
    shape = (-1,) + (1,) * (inputs.dim() - 1)
    delta = torch.zeros_like(inputs, requires_grad=True)
    was_training = network.training
    network.eval()
    try:
        for _ in range(steps):
            loss = smoothed_soft_loss(network, inputs + delta, labels, noise).sum()
            (gradient,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                # a zero gradient (a flat loss) makes a zero step
                direction = gradient / gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
                moved = torch.minimum(torch.maximum(inputs + delta + step_size * direction, low), high) - inputs
                shrink = (radius / moved.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
                delta = (moved * shrink.view(shape)).requires_grad_(True)
    finally:
        network.train(was_training)
    return (inputs + delta).detach()
