"""``certify train``: train a classifier on a smoothing method's noisy views and export ONNX.

Needs torch (``pip install 'onnx-certifier[train]'``). The noise comes from the
chosen plugin's own ``sample`` (or ``views``) method, so a model is trained on
exactly what it will see during certification; ``--loss`` chooses what is minimized
on it (certifier_plugins._losses).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Annotated, ClassVar

import click
import numpy as np
from pydantic import BeforeValidator, model_validator

from certifier import (
    CertifyError, LearningRate, MethodSettings, Range, SmoothingMethod, TrainingData, TrainingSettings,
    ValidationFraction, check_output_file, flag, hookimpl, load_data, make_method, model_metadata, settings_options,
)
from certifier_plugins._losses import (
    DEFAULTS, LOSSES, check_method, check_setting, consistency_loss, make_loss, smoothadv_attack,
)
from certifier_plugins._torch import (
    check_training_memory, export_onnx, load_checkpoint, pick_device, require_torch, save_checkpoint,
)

#: 2: checkpoints may be taken within an epoch (they record the step and the noise generator);
#: 1 (end of epoch only) still resumes.
CHECKPOINT_VERSION = 2
#: Checkpoint settings recorded since a later version: an older checkpoint without them still resumes.
RECORDED_LATER = ("training_inputs", "validation_fraction", "classes")
#: A checkpoint within an epoch at most this often (one is always written at the end of an epoch).
CHECKPOINT_SECONDS = 120.0
#: Channels of the first layer at most (the last conv layer has four times as many).
MAX_WIDTH = 512
#: Classes at most, as certify takes them (certifier.metadata.MAX_CLASSES).
MAX_CLASSES = 1 << 20


def _setting(name: str) -> BeforeValidator:
    """A loss setting's check (the loss's own rules, such as consistency's two copies, are make_loss's)."""
    return BeforeValidator(lambda value: None if value is None else check_setting(name, value))


class ClassifierTraining(MethodSettings, TrainingSettings):
    """What ``certify train`` takes: a smoothing method's noise to train with (or ``--no-noise``),
    the data, the network's width, and the settings every training command shares."""

    help_values: ClassVar[dict[str, str]] = {
        "defaults": "", "lr": "Peak learning rate (SGD, one-cycle).",
        "data": ".npz (x_train, y_train [, x_test, y_test] or x, y) or a folder of class folders.",
        "validation": "Held out when the data has no test split."}

    data: TrainingData
    lr: LearningRate = 0.05
    width: Annotated[int, flag("--width", range=Range(1, MAX_WIDTH), help="Channels of the first conv layer.")] = 16
    group: Annotated[str | None, flag("--group", help="Train on one vote group's views only (e.g. one DRS "
                                                      "side).")] = None
    classes: Annotated[str | None, flag("--classes", help="Class names, comma-separated, recorded in the "
                                                          "model.")] = None
    limit: Annotated[int | None, flag("--limit", range=Range(1), help="Train on the first K training inputs only (a "
                                                                      "test split in the data is used whole).")] = None
    validation_fraction: ValidationFraction = 0.1
    no_noise: Annotated[bool, flag("--no-noise", is_flag=True, help="Train a plain classifier on the clean images "
                                                                    "(no plugin, no smoothing defaults "
                                                                    "recorded).")] = False
    loss: Annotated[str, flag("--loss", type=LOSSES, help=(
        "gaussian: cross-entropy on noisy views (Cohen et al. 2019); consistency: on M noisy copies, plus the KL to "
        "their mean prediction and its entropy (Jeong and Shin 2020); smoothadv: on M noisy copies of a PGD attack "
        "on the smoothed classifier (Salman et al. 2019)."))] = "gaussian"
    noise_copies: Annotated[int | None, _setting("noise_copies"), flag("--noise-copies", metavar="M", help=(
        f"Noisy copies of each input per step (consistency: {DEFAULTS['consistency']['noise_copies']}, "
        f"smoothadv: {DEFAULTS['smoothadv']['noise_copies']})."))] = None
    consistency_weight: Annotated[float | None, _setting("consistency_weight"), flag(
        "--consistency-weight", metavar="LAMBDA", help=(
        f"consistency: weight of the KL term (default {DEFAULTS['consistency']['consistency_weight']:g})."))] = None
    entropy_weight: Annotated[float | None, _setting("entropy_weight"), flag("--entropy-weight", metavar="ETA", help=(
        f"consistency: weight of the entropy term (default {DEFAULTS['consistency']['entropy_weight']:g})."))] = None
    attack_radius: Annotated[float | None, _setting("attack_radius"), flag("--attack-radius", metavar="EPS", help=(
        f"smoothadv: L2 radius of the attack in pixel units (default "
        f"{DEFAULTS['smoothadv']['attack_radius']:g})."))] = None
    attack_steps: Annotated[int | None, _setting("attack_steps"), flag("--attack-steps", help=(
        f"smoothadv: PGD steps, each of size 2 EPS / steps (default {DEFAULTS['smoothadv']['attack_steps']})."))] = None
    attack_warmup: Annotated[int | None, _setting("attack_warmup"), flag("--attack-warmup", metavar="EPOCHS", help=(
        f"smoothadv: epochs over which the radius grows linearly to EPS (default "
        f"{DEFAULTS['smoothadv']['attack_warmup']}; 0: none)."))] = None

    @model_validator(mode="after")
    def _loss(self) -> "ClassifierTraining":
        self.training_loss  # the loss's own checks (its settings, their ranges), before any data is read
        return self

    @property
    def training_loss(self):
        """The loss and its settings (a setting not given: the loss's default)."""
        return make_loss(self.loss, **{name: getattr(self, name) for name in LOSS_SETTINGS})


#: The fields of ClassifierTraining that are settings of one loss or another.
LOSS_SETTINGS = sorted({name for settings in DEFAULTS.values() for name in settings})


def _torch():
    return require_torch("certify train", "pip install 'onnx-certifier[train]'")


def build_network(input_shape: tuple[int, ...], classes: int, width: int = 16):
    """A small CNN for (C, H, W) inputs, or an MLP for flat (D,) inputs."""
    torch = _torch()
    nn = torch.nn
    if len(input_shape) == 1:
        return nn.Sequential(
            nn.Linear(input_shape[0], 8 * width), nn.ReLU(),
            nn.Linear(8 * width, 8 * width), nn.ReLU(),
            nn.Linear(8 * width, classes),
        )
    channels, height, width_px = input_shape
    layers, current = [], channels
    size = min(height, width_px)
    for out in (width, 2 * width, 4 * width):
        layers += [nn.Conv2d(current, out, 3, padding=1), nn.ReLU()]
        if size >= 4:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        current = out
    layers += [nn.AdaptiveAvgPool2d(3) if size > 3 else nn.Identity(), nn.Flatten()]
    with torch.no_grad():
        features = nn.Sequential(*layers)(torch.zeros(1, *input_shape)).shape[1]
    layers += [nn.Linear(features, 8 * width), nn.ReLU(), nn.Linear(8 * width, classes)]
    return nn.Sequential(*layers)


def _load_training_data(path: Path, classes_option: str | None, validation_fraction: float, seed: int,
                        limit: int | None = None):
    """(x_train, y_train, x_val, y_val, class names), pixels as canonical float32; with ``limit``, the
    first ``limit`` training inputs only (the classes are still those of all the labels)."""

    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
        if "x_train" in keys:
            train = load_data(path, split="train")
            validation = load_data(path, split="test") if "x_test" in keys else None
        else:
            train, validation = load_data(path), None
    else:
        train, validation = load_data(path, folders_name_classes=True), None
    if train.labels is None:
        raise CertifyError(f"{path} has no labels (y, y_train or class folders); training needs them")
    if len(train) == 0:
        raise CertifyError(f"{path} holds no inputs to train on")
    every_label = train.labels
    count = len(train) if limit is None else min(limit, len(train))
    x = train.batch(range(count))
    y = every_label[:count]
    if validation is not None and validation.labels is not None:
        x_val, y_val = validation.batch(range(len(validation))), validation.labels
    else:
        order = np.random.default_rng(seed).permutation(len(x))
        cut = int(len(x) * validation_fraction)
        if cut == 0:
            raise CertifyError(f"--validation-fraction {validation_fraction} of {path}'s {len(x)} inputs holds out none "
                               f"for validation; raise it, or give an .npz with x_test and y_test")
        x_val, y_val, x, y = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    if len(x_val) == 0:
        raise CertifyError(f"the test split of {path} holds no inputs to validate on; add some, or drop x_test")
    largest = max(int(every_label.max()), int(y_val.max()))
    if largest >= MAX_CLASSES:
        raise CertifyError(f"{path}'s labels go up to {largest}; a classifier here has at "
                           f"most {MAX_CLASSES} classes (labels are class indices 0, 1, ...)")
    if classes_option:
        names = [n.strip() for n in classes_option.split(",")]
    elif train.class_names:
        names = train.class_names
    else:
        names = [str(i) for i in range(largest + 1)]
    if largest >= len(names):
        raise CertifyError(f"labels go up to {largest} but only {len(names)} class names were given")
    return x, y, x_val, y_val, names


class CleanImages(SmoothingMethod):
    """What ``--no-noise`` trains on: every view is the image itself.

    A stand-in for a third-party classifier that never saw noise; it is not a
    smoothing method and is never registered.
    """

    name = "none"
    norm = "l2"
    uses_sigma = False

    def sample(self, x: np.ndarray, rng: np.random.Generator, group: str) -> np.ndarray:
        return x


def _noisy_views(method, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, groups):
    views, labels = [], []
    for group in groups:
        views.append(method.sample(x, rng, group))
        labels.append(y)
    return np.concatenate(views), np.concatenate(labels)


def _batch_loss(loss, network, method, x, y, rng, groups, device, epoch: int):
    """The loss of one batch of clean inputs ``x``, on noisy views drawn from ``rng``."""
    torch = _torch()

    def tensor(array):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)

    if loss.name == "gaussian":
        views, labels = _noisy_views(method, x, y, rng, groups)
        return torch.nn.functional.cross_entropy(network(tensor(views)), torch.from_numpy(labels).to(device))
    targets = torch.from_numpy(y).to(device)
    if loss.name == "consistency":
        # every (group, input) pair is smoothed on its own: copies are compared per pair
        copies = [_noisy_views(method, x, y, rng, groups) for _ in range(loss.copies)]
        views = tensor(np.stack([views for views, _ in copies]))
        logits = network(views.flatten(0, 1)).view(loss.copies, views.shape[1], -1)
        return consistency_loss(logits, torch.from_numpy(copies[0][1]).to(device),
                                loss.settings["consistency_weight"], loss.settings["entropy_weight"])
    # smoothadv: additive noise, so sample(zeros) is the noise; each group's views are more copies
    zeros = np.zeros_like(x, dtype=np.float32)
    noise = tensor(np.stack([method.sample(zeros, rng, group) for _ in range(loss.copies) for group in groups]))
    inputs = smoothadv_attack(network, tensor(x), targets, noise, loss.attack_radius(epoch),
                              loss.settings["attack_steps"])
    logits = network((inputs.unsqueeze(0) + noise).flatten(0, 1))
    return torch.nn.functional.cross_entropy(logits, targets.repeat(len(noise)))


def _evaluate(network, method, x, y, groups, device, batch_size: int, rng) -> tuple[float, float]:
    """Clean accuracy (on the plugin's views without noise, ``method.clean_view``; NaN
    when the method defines none) and noisy accuracy."""
    torch = _torch()
    network.eval()
    clean_correct, noisy_correct, clean_total, noisy_total = 0, 0, 0, 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            views, labels = _noisy_views(method, xb, yb, rng, groups)
            out = network(torch.from_numpy(np.ascontiguousarray(views, dtype=np.float32)).to(device))
            noisy_correct += int((out.argmax(1).cpu().numpy() == labels).sum())
            noisy_total += len(labels)
            for group in groups:
                clean = method.clean_view(xb, group)
                if clean is None:
                    continue
                out = network(torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32)).to(device))
                clean_correct += int((out.argmax(1).cpu().numpy() == yb).sum())
                clean_total += len(yb)
    network.train()
    return (clean_correct / clean_total if clean_total else math.nan), noisy_correct / max(noisy_total, 1)


def _accuracies(clean: float, noisy: float, no_noise: bool) -> str:
    return f"{100 * clean:.2f}%" if no_noise else f"clean {100 * clean:.2f}%, noisy {100 * noisy:.2f}%"


def train(settings: ClassifierTraining | None = None, **values) -> dict:
    """Train and export; returns the final metrics. The settings: ``settings`` (a
    :class:`ClassifierTraining`) with ``values`` changed, or ``values`` alone.

    ``no_noise`` trains a plain classifier on the clean images (no plugin); its model
    records no plugin or sigma, so certify applies no smoothing defaults to it. ``loss``
    and the loss settings choose the training loss (None: the loss's default).
    """
    training = ClassifierTraining.of(settings, values, caller="train")
    training_loss = training.training_loss
    torch = _torch()
    checkpoint = training.checkpoint_path
    check_output_file(training.out, "--out", [("--data", training.data)])
    check_output_file(checkpoint, "--checkpoint", [("--data", training.data), ("--out", training.out)])
    if training.no_noise:
        given = [name for name, value in (("--plugin", training.plugin), ("--sigma", training.sigma),
                                          ("--option", training.options), ("--group", training.group)) if value]
        if given:
            raise CertifyError(f"--no-noise trains on the clean images; drop {', '.join(given)}")
        method = CleanImages()
    elif training.plugin is None:
        raise CertifyError("certify train needs --plugin (the noise to train with), or --no-noise for a plain model")
    else:
        method = make_method(training.plugin, training.sigma, training.options, {})
    check_method(training_loss, method, training.no_noise)
    if training.group is not None and training.group not in method.groups:
        raise CertifyError(f"plugin {training.plugin} has groups {', '.join(method.groups)}; --group {training.group} "
                           f"is not one")
    groups = [training.group] if training.group else list(method.groups)
    x, y, x_val, y_val, names = _load_training_data(training.data, training.classes, training.validation_fraction,
                                                    training.seed, training.limit)
    input_shape = tuple(x.shape[1:])
    method.prepare(input_shape, {})
    view_shapes = {tuple(method.view_shape(input_shape, g)) for g in groups}
    if len(view_shapes) > 1:
        raise CertifyError(f"the groups of {training.plugin} have views of different shapes; train one model per group "
                           f"with --group")
    (view_shape,) = view_shapes
    x = method.check_inputs(x)
    x_val = method.check_inputs(x_val)

    torch_device = pick_device(training.device)
    check_training_memory(lambda: build_network(view_shape, len(names), training.width), view_shape,
                          min(training.batch_size, len(x)) * len(groups) * training_loss.copies, 1, torch_device,
                          f"training a width-{training.width} network on batches of {training.batch_size}",
                          "lower --batch-size or --width")
    torch.manual_seed(training.seed)
    network = build_network(view_shape, len(names), training.width).to(torch_device)
    optimizer = torch.optim.SGD(network.parameters(), lr=training.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_per_epoch = math.ceil(len(x) / training.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=training.lr,
                                                    total_steps=training.epochs * steps_per_epoch)
    recorded = {
        "plugin": training.plugin, "noise": not training.no_noise, "settings": method.settings(),
        "data": str(training.data), "epochs": training.epochs, "batch_size": training.batch_size, "lr": training.lr,
        "width": training.width, "seed": training.seed, "group": training.group,
        # only when given, so checkpoints written before --limit existed still resume
        **({"limit": training.limit} if training.limit is not None else {}),
        # what the data gave: another file at the same path, or another split, is another run
        "training_inputs": len(x), "validation_fraction": training.validation_fraction, "classes": names,
    }
    start_epoch = start_step = 0
    seconds_before = 0.0  # training time of earlier runs of this training (checkpoints keep it)
    if checkpoint.exists() and not training.restart:
        state = load_checkpoint(checkpoint, torch_device, "certify train")
        # checkpoints from before --loss existed were trained with the Gaussian loss
        recorded_loss = state.get("loss", make_loss().record())
        saved = state.get("settings")
        # settings recorded only since a later version are compared when the checkpoint has them
        expected = {k: v for k, v in recorded.items()
                    if k not in RECORDED_LATER or (isinstance(saved, dict) and k in saved)}
        version = state.get("version")
        if isinstance(version, int) and version > CHECKPOINT_VERSION:
            raise CertifyError(f"{checkpoint} was written by a newer certify (checkpoint version {version}); upgrade "
                               f"certify to resume it, or pass --restart to start again")
        if saved != expected or recorded_loss != training_loss.record() or version not in (1, CHECKPOINT_VERSION):
            raise CertifyError(
                f"{checkpoint} is a checkpoint of another training run; pass --restart to overwrite it"
            )
        try:
            network.load_state_dict(state["network"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, start_step = int(state["epoch"]), int(state.get("step", 0))
            if start_step:  # within an epoch: the noise generator's state and the loss so far
                np.random.default_rng(0).bit_generator.state = state["rng"]
                resumed_loss = float(state["epoch_loss"])
        except (KeyError, RuntimeError, ValueError, TypeError):
            raise CertifyError(f"{checkpoint} is not a checkpoint this training can resume (its network or "
                               f"optimizer does not fit); pass --restart to overwrite it") from None
        seconds_before = state.get("seconds", 0.0)
        if not training.quiet:
            where = (f"in epoch {start_epoch + 1}, after step {start_step}" if start_step
                     else f"after epoch {start_epoch}")
            click.echo(f"certify: resuming {checkpoint} {where}", err=True)

    clock = time.perf_counter()

    def seconds() -> float:
        return seconds_before + time.perf_counter() - clock

    def checkpoint_now(epoch: int, step: int = 0, rng=None, epoch_loss: float = 0.0) -> None:
        """``epoch`` epochs done and ``step`` steps of the next; within an epoch, the noise
        generator's state and the loss so far too (training draws all its randomness from it)."""
        within = {"step": step, "rng": rng.bit_generator.state, "epoch_loss": epoch_loss} if step else {}
        save_checkpoint({"version": CHECKPOINT_VERSION, "settings": recorded, "loss": training_loss.record(),
                         "epoch": epoch, **within, "seconds": seconds(), "network": network.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, checkpoint)

    history = []
    show_bar = not training.quiet and sys.stderr.isatty()
    from tqdm import tqdm

    for epoch in range(start_epoch, training.epochs):
        rng = np.random.default_rng([training.seed, epoch])
        order = rng.permutation(len(x))
        network.train()
        first_step, total_loss, started = 0, 0.0, time.perf_counter()
        if epoch == start_epoch and start_step:
            rng.bit_generator.state = state["rng"]
            first_step, total_loss = start_step, resumed_loss
        saved = time.monotonic()
        bar = tqdm(range(first_step, steps_per_epoch), desc=f"epoch {epoch + 1}/{training.epochs}",
                   total=steps_per_epoch, initial=first_step, disable=not show_bar, file=sys.stderr)
        for step in bar:
            batch = order[step * training.batch_size : (step + 1) * training.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = _batch_loss(training_loss, network, method, x[batch], y[batch], rng, groups, torch_device, epoch)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
            if not math.isfinite(loss.item()):
                raise CertifyError(f"training diverged (loss {loss.item()} at epoch {epoch + 1}, step {step + 1}); "
                                   f"lower --lr (now {training.lr:g})")
            if step % 50 == 0:
                bar.set_postfix(loss=f"{total_loss / (step + 1):.3f}")
            if step + 1 < steps_per_epoch and time.monotonic() - saved >= CHECKPOINT_SECONDS:
                checkpoint_now(epoch, step + 1, rng, total_loss)
                saved = time.monotonic()
        clean, noisy = _evaluate(network, method, x_val, y_val, groups, torch_device, training.batch_size,
                                 np.random.default_rng([training.seed, epoch, 1]))
        history.append({"epoch": epoch + 1, "loss": total_loss / steps_per_epoch, "clean_accuracy": clean,
                        "noisy_accuracy": noisy, "seconds": time.perf_counter() - started})
        if not training.quiet:
            click.echo(
                f"certify: epoch {epoch + 1}/{training.epochs}: loss {total_loss / steps_per_epoch:.4f}, validation "
                f"accuracy {_accuracies(clean, noisy, training.no_noise)} ({time.perf_counter() - started:.0f} s)",
                err=True,
            )
        checkpoint_now(epoch + 1)

    clean, noisy = _evaluate(network, method, x_val, y_val, groups, torch_device, training.batch_size,
                             np.random.default_rng([training.seed, 99]))
    # A plain model carries no smoothing defaults, like a third-party model: certify
    # asks for --plugin and --sigma instead of smoothing it silently.
    metadata = model_metadata(
        None if training.no_noise else method, input_shape=input_shape, view_shape=view_shape,
        dataset=training.dataset_name or training.data.name, classes=names, groups=groups,
        training={**recorded, "training_seconds": round(seconds(), 3), "validation_clean_accuracy": clean,
                  **({} if training.no_noise else {"validation_noisy_accuracy": noisy})},
        loss=None if training.no_noise else training_loss.record(),
    )

    training.out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(network, view_shape, training.out, metadata)
    if not training.quiet:
        click.echo(f"certify: wrote {training.out} (validation accuracy "
                   f"{_accuracies(clean, noisy, training.no_noise)})", err=True)
    return {"clean_accuracy": clean, "noisy_accuracy": noisy, "history": history}


@hookimpl
def register_commands(cli):
    @cli.command(name="train")
    @settings_options(ClassifierTraining)
    def train_command(**values):
        """Train a noise-robust classifier with a plugin's noise and export it as ONNX.

        \b
            certify train --plugin rs --sigma 0.25 --data train.npz --epochs 10 --out model.onnx
        """
        settings = ClassifierTraining(**values)  # every setting checked before any data is read
        try:
            train(settings)
        except (MemoryError, RuntimeError) as error:
            if isinstance(error, RuntimeError) and "memory" not in str(error):
                raise
            raise CertifyError("out of memory while training; lower --batch-size or --width") from None
        except KeyboardInterrupt:
            click.echo("\ncertify: interrupted; rerun the same command to resume from the last checkpoint", err=True)
            sys.exit(130)
