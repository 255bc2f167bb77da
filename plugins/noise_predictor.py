"""``certify train-denoiser --kind diffusion``: a small DDPM noise predictor for every sigma.

One network eps(x_t, t) trained with DDPM's objective (Ho et al. 2020): for a clean image
x in [-1, 1], a step t drawn uniformly from the schedule's T steps and Gaussian noise eps,
x_t = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) eps and the loss is ||eps(x_t, t) - eps||^2.
certify then uses it as a one-shot denoiser for any sigma (``certifier.diffusion``), so
one file serves every noise level of its schedule.

The network is a small U-Net sized for certification, which runs it on every noisy sample:
three resolutions (features, 2 x features, 2 x features channels), one residual block per
resolution on each side, two at the lowest, additive skips, a sinusoidal timestep
embedding added inside every block (DDPM's), no normalization or attention. The export
takes ``sample`` (N x C x H x W, float32) and ``timestep`` (int64, one per image) and gives
``noise``, as a diffusers ``UNet2DModel`` export does; the schedule, the timestep
convention and the data range are in its metadata. The exported weights are an
exponential moving average of the trained ones (decay EMA_DECAY), as diffusion models
usually are.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

import click
import numpy as np

from certifier import CertifyError, check_output_file, choose_step, diffusion_metadata, schedule_option
from certifier_plugins._torch import (
    check_training_memory, export_onnx, load_checkpoint, pick_device, require_torch, save_checkpoint,
)
from certifier_plugins.denoise import DenoiserTraining, load_images

CHECKPOINT_VERSION = 1
#: the data range the network is trained in
DATA_RANGE = (-1.0, 1.0)
EMA_DECAY = 0.999
TIME_FEATURES = 64
#: the sigmas whose one-shot denoising error is printed after each epoch
VALIDATION_SIGMAS = (0.12, 0.25, 0.5, 1.0)
#: the share of the steps over which the learning rate warms up
WARMUP = 0.05
COMMAND = "certify train-denoiser --kind diffusion"


def _torch():
    return require_torch(COMMAND, "pip install 'onnx-certifier[denoise]'")


def build_noise_predictor(channels: int, features: int = 16, size: tuple[int, int] = (28, 28)):
    """The U-Net described in the module docstring, for images of ``channels`` channels and
    ``size`` pixels (height, width)."""
    torch = _torch()
    nn = torch.nn

    class Block(nn.Module):
        """conv, + the timestep's embedding, SiLU, conv, added to the input."""

        def __init__(self, width):
            super().__init__()
            self.first = nn.Conv2d(width, width, 3, padding=1)
            self.time = nn.Linear(TIME_FEATURES, width)
            self.second = nn.Conv2d(width, width, 3, padding=1)

        def forward(self, x, embedding):
            h = nn.functional.silu(self.first(x) + self.time(embedding)[:, :, None, None])
            return x + self.second(h)

    class NoisePredictor(nn.Module):
        def __init__(self):
            super().__init__()
            c1, c2, c3 = features, 2 * features, 2 * features
            half = TIME_FEATURES // 2
            self.register_buffer("frequencies", torch.exp(-math.log(10000.0) * torch.arange(half) / half))
            self.embed = nn.Sequential(nn.Linear(TIME_FEATURES, TIME_FEATURES), nn.SiLU(),
                                       nn.Linear(TIME_FEATURES, TIME_FEATURES))
            self.stem = nn.Conv2d(channels, c1, 3, padding=1)
            self.down1, self.reduce1 = Block(c1), nn.Conv2d(c1, c2, 3, stride=2, padding=1)
            self.down2, self.reduce2 = Block(c2), nn.Conv2d(c2, c3, 3, stride=2, padding=1)
            self.middle = nn.ModuleList([Block(c3), Block(c3)])
            self.expand2, self.up2 = nn.ConvTranspose2d(c3, c2, 2, stride=2), Block(c2)
            self.expand1, self.up1 = nn.ConvTranspose2d(c2, c1, 2, stride=2), Block(c1)
            self.out = nn.Conv2d(c1, channels, 3, padding=1)
            # An odd side halves down and doubles back one pixel larger: those are cropped. Decided
            # here, from the size, so an export for even sides has no shape-dependent slicing.
            half = tuple((side + 1) // 2 for side in size)
            self.crops = [half if any(2 * ((h + 1) // 2) != h for h in half) else None,
                          tuple(size) if any(2 * h != s for h, s in zip(half, size)) else None]

        def forward(self, sample, timestep):
            angles = timestep.float()[:, None] * self.frequencies[None]
            embedding = self.embed(torch.cat([torch.sin(angles), torch.cos(angles)], dim=1))
            skip1 = self.down1(self.stem(sample), embedding)
            skip2 = self.down2(self.reduce1(skip1), embedding)
            h = self.reduce2(skip2)
            for block in self.middle:
                h = block(h, embedding)
            h = self.up2(self._cropped(self.expand2(h), self.crops[0]) + skip2, embedding)
            h = self.up1(self._cropped(self.expand1(h), self.crops[1]) + skip1, embedding)
            return self.out(nn.functional.silu(h))

        @staticmethod
        def _cropped(h, size):
            return h if size is None else h[:, :, : size[0], : size[1]]

    return NoisePredictor()


def _at_step_zero(network):
    """``network`` as a function of the images alone (step 0), for measuring its memory."""
    torch = _torch()

    class AtStepZero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, sample):
            return self.network(sample, torch.zeros(len(sample), dtype=torch.long, device=sample.device))

    return AtStepZero()


def multiply_adds(network, image_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on one image (convolutions and linear layers)."""
    torch = _torch()
    nn = torch.nn
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, nn.ConvTranspose2d):
            total += inputs[0].numel() * module.out_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in network.modules()]
    try:
        with torch.no_grad():
            device = next(network.parameters()).device
            network(torch.zeros(1, *image_shape, device=device), torch.zeros(1, dtype=torch.long, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _update_average(average, network, decay: float) -> None:
    torch = _torch()
    with torch.no_grad():
        for kept, current in zip(average.parameters(), network.parameters()):
            kept.mul_(decay).add_(current, alpha=1 - decay)


def _learning_rate(step: int, total: int) -> float:
    """The factor of --lr at ``step``: a linear warm-up, then cosine decay to zero."""
    warmup = max(1, int(WARMUP * total))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _validate(torch, network, images: np.ndarray, alpha_bar: np.ndarray, schedule, device, seed: int,
              batch_size: int = 500) -> dict:
    """Mean squared error (pixel space) of the one-shot denoiser at each validation sigma the
    schedule covers, one noisy view per image."""
    low, high = DATA_RANGE
    width = high - low
    found = {}
    network.eval()
    with torch.no_grad():
        for sigma in VALIDATION_SIGMAS:
            try:
                step = choose_step(schedule, sigma, DATA_RANGE)
            except CertifyError:
                continue  # outside this schedule
            generator = torch.Generator(device=device).manual_seed(seed)
            root, k = math.sqrt(step.alpha_bar), math.sqrt((1 - step.alpha_bar) / step.alpha_bar) / width
            squared = 0.0
            for start in range(0, len(images), batch_size):
                clean = torch.from_numpy(images[start : start + batch_size]).to(device)
                noisy = clean + torch.randn(clean.shape, generator=generator, device=device) * sigma
                timestep = torch.full((len(clean),), step.index, dtype=torch.long, device=device)
                eps = network(root * (noisy * width + low), timestep)
                denoised = (noisy - k * eps).clamp(0.0, 1.0)
                squared += float(((denoised - clean) ** 2).mean(dim=(1, 2, 3)).sum())
            found[f"mse_sigma_{sigma:g}"] = squared / len(images)
    return found


def _describe(figures: dict) -> str:
    parts = [f"{key.removeprefix('mse_sigma_')} {value:.5f}" for key, value in figures.items()
             if key.startswith("mse_sigma_")]
    return "one-shot MSE at sigma " + ", ".join(parts) if parts else "no validation sigma lies in the schedule"


def train_noise_predictor(settings: DenoiserTraining | None = None, **values) -> dict:
    """Train a noise predictor with DDPM's objective and export it as ONNX; returns the
    validation figures. The settings: ``settings`` (a ``DenoiserTraining`` of kind diffusion)
    with ``values`` changed, or ``values`` alone (the kind is then diffusion)."""
    training = DenoiserTraining.of(settings, values if settings is not None else {"kind": "diffusion", **values},
                                   caller="train_noise_predictor")
    if training.kind != "diffusion":
        raise CertifyError(f"train_noise_predictor trains --kind diffusion, not {training.kind}")
    data, out, epochs, batch_size, lr = (training.data, training.out, training.epochs, training.batch_size,
                                         training.learning_rate)
    seed, device, dataset_name, quiet = training.seed, training.device, training.dataset_name, training.quiet
    validation_fraction, restart, checkpoint = training.validation_fraction, training.restart, training.checkpoint_path
    features = 16 if training.features is None else training.features
    schedule, steps = training.schedule or "cosine", 1000 if training.steps is None else training.steps
    torch = _torch()
    from tqdm import tqdm

    noise_schedule = schedule_option(schedule, steps)
    alpha_bar = noise_schedule.alpha_bar
    inputs = [("--data", data)] + ([("--schedule", Path(schedule))] if noise_schedule.kind == "betas" else [])
    check_output_file(out, "--out", inputs)
    check_output_file(checkpoint, "--checkpoint", [*inputs, ("--out", out)])

    train_images, val_images, _ = load_images(data, validation_fraction, seed)
    image_shape = tuple(train_images.shape[1:])
    torch_device = pick_device(device)
    check_training_memory(lambda: _at_step_zero(build_noise_predictor(image_shape[0], features, image_shape[1:])),
                          image_shape, min(batch_size, len(train_images)), 2, torch_device,
                          f"training a noise predictor of {features} features on batches of {batch_size} "
                          f"{image_shape[1]}x{image_shape[2]} images", "lower --features or --batch-size")
    torch.manual_seed(seed)
    network = build_noise_predictor(image_shape[0], features, image_shape[1:]).to(torch_device)
    average = copy.deepcopy(network)
    settings = {
        "kind": "diffusion", "objective": "ddpm (noise prediction, uniform over steps)", "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "warmup": WARMUP, "ema_decay": EMA_DECAY, "features": features,
        "schedule": noise_schedule.description(), "seed": seed, "data": str(data),
        "validation_fraction": validation_fraction,
    }
    steps_per_epoch = math.ceil(len(train_images) / batch_size)
    total_steps = epochs * steps_per_epoch
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate(step, total_steps))
    start_epoch, history = 0, []
    if checkpoint.exists() and not restart:
        state = load_checkpoint(checkpoint, torch_device, COMMAND)
        if state.get("settings") != settings or state.get("version") != CHECKPOINT_VERSION:
            raise CertifyError(f"{checkpoint} is a checkpoint of another training run; pass --restart to overwrite it")
        network.load_state_dict(state["network"])
        average.load_state_dict(state["average"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"], state["history"]
        if not quiet:
            click.echo(f"certify: resuming {checkpoint} after epoch {start_epoch}", err=True)

    low, high = DATA_RANGE
    table = torch.from_numpy(alpha_bar.astype(np.float32)).to(torch_device)
    show_bar = not quiet and sys.stderr.isatty()
    for epoch in range(start_epoch, epochs):
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(train_images))
        generator = torch.Generator(device=torch_device).manual_seed(int(rng.integers(2**62)))
        network.train()
        total, started = 0.0, time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs} (diffusion)", disable=not show_bar,
                   file=sys.stderr)
        for step in bar:
            batch = order[step * batch_size : (step + 1) * batch_size]
            clean = torch.from_numpy(train_images[batch]).to(torch_device) * (high - low) + low
            timestep = torch.randint(0, len(alpha_bar), (len(batch),), generator=generator, device=torch_device)
            noise = torch.randn(clean.shape, generator=generator, device=torch_device)
            kept = table[timestep][:, None, None, None]
            noisy = kept.sqrt() * clean + (1 - kept).sqrt() * noise
            value = torch.nn.functional.mse_loss(network(noisy, timestep), noise)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            scheduler.step()
            _update_average(average, network, min(EMA_DECAY, (1 + scheduler.last_epoch) / (10 + scheduler.last_epoch)))
            total += value.item()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{total / (step + 1):.4f}")
        figures = _validate(torch, average, val_images, alpha_bar, noise_schedule, torch_device, seed)
        history.append({"epoch": epoch + 1, "loss": total / steps_per_epoch, **figures,
                        "seconds": time.perf_counter() - started})
        if not quiet:
            click.echo(f"certify: epoch {epoch + 1}/{epochs}: loss {total / steps_per_epoch:.5f}, validation "
                       f"{_describe(figures)} ({time.perf_counter() - started:.0f} s)", err=True)
        save_checkpoint({"version": CHECKPOINT_VERSION, "settings": settings, "epoch": epoch + 1,
                         "network": network.state_dict(), "average": average.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "history": history}, checkpoint)

    figures = _validate(torch, average, val_images, alpha_bar, noise_schedule, torch_device, seed)
    architecture = {"name": "unet", "features": features, "channels": [features, 2 * features, 2 * features],
                    "time_features": TIME_FEATURES, "weights": f"exponential moving average ({EMA_DECAY})",
                    "multiply_adds": multiply_adds(average.cpu(), image_shape)}
    metadata = diffusion_metadata(
        schedule=noise_schedule.record(), timestep={"first": 0, "scale": 1.0}, data_range=DATA_RANGE,
        input_shape=image_shape, architecture=architecture, training={**settings, "validation": figures},
        dataset=dataset_name or data.name,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(average, image_shape, out, metadata, output_name="noise", input_name="sample",
                extra_inputs=(("timestep", torch.zeros(1, dtype=torch.long)),))
    if not quiet:
        click.echo(f"certify: wrote {out} ({architecture['multiply_adds'] / 1e6:.2f} M multiply-adds per image; "
                   f"validation {_describe(figures)})", err=True)
    return {"validation": figures, "history": history}
