"""``certify train``: train a classifier on a smoothing method's noisy views and export ONNX.

Needs torch (``pip install 'onnx-certifier[train]'``). The noise comes from the
chosen plugin's own ``sample`` (or ``views``) method, so a model is trained on
exactly what it will see during certification.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import click
import numpy as np

from certifier import (
    CertifyError, SmoothingMethod, check_output_file, hookimpl, load_data, make_method, method_options, model_metadata,
)
from certifier_plugins._torch import (
    MAX_EPOCHS, MAX_LR, check_training_memory, export_onnx, load_checkpoint, pick_device, require_torch,
    save_checkpoint,
)

CHECKPOINT_VERSION = 1
#: Channels of the first layer at most (the last conv layer has four times as many).
MAX_WIDTH = 512
#: Classes at most, as certify takes them (certifier.metadata.MAX_CLASSES).
MAX_CLASSES = 1 << 20


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


def _check_settings(*, epochs, batch_size, lr, width, validation_fraction) -> None:
    """Refuse training settings that cannot work, each in one line, before any data is read."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CertifyError(f"--{name.replace('_', '-')} must be at least 1 (a whole number), got {value!r}")
    if width > MAX_WIDTH:
        raise CertifyError(f"--width must be at most {MAX_WIDTH} (channels of the first layer), got {width}")
    if epochs > MAX_EPOCHS:
        raise CertifyError(f"--epochs must be at most {MAX_EPOCHS}, got {epochs}")
    if not (isinstance(lr, (int, float)) and 0 < lr <= MAX_LR):
        raise CertifyError(f"--lr must be a positive number of at most {MAX_LR:g}, got {lr!r}")
    _check_fraction(validation_fraction)


def _check_fraction(validation_fraction) -> None:
    if not (isinstance(validation_fraction, (int, float)) and 0 < validation_fraction < 1):
        raise CertifyError(f"--validation-fraction must be above 0 and below 1, got {validation_fraction!r}")


def _load_training_data(path: Path, classes_option: str | None, validation_fraction: float, seed: int,
                        limit: int | None = None):
    """(x_train, y_train, x_val, y_val, class names), pixels as canonical float32; with ``limit``, the
    first ``limit`` training inputs only (the classes are still those of all the labels)."""
    _check_fraction(validation_fraction)

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


def train(
    *, plugin: str | None, sigma: float | None, options: dict, data: Path, out: Path, epochs: int, batch_size: int,
    lr: float, width: int, seed: int, device: str, group: str | None, classes: str | None, dataset_name: str | None,
    checkpoint: Path | None, restart: bool, validation_fraction: float = 0.1, quiet: bool = False,
    no_noise: bool = False, limit: int | None = None,
) -> dict:
    """Train and export; returns the final metrics.

    ``no_noise`` trains a plain classifier on the clean images (no plugin); its model
    records no plugin or sigma, so certify applies no smoothing defaults to it.
    """
    torch = _torch()
    checkpoint = checkpoint or out.with_name(out.name + ".ckpt")
    check_output_file(out, "--out", [("--data", data)])
    check_output_file(checkpoint, "--checkpoint", [("--data", data), ("--out", out)])
    if no_noise:
        given = [name for name, value in (("--plugin", plugin), ("--sigma", sigma), ("--option", options),
                                          ("--group", group)) if value]
        if given:
            raise CertifyError(f"--no-noise trains on the clean images; drop {', '.join(given)}")
        method = CleanImages()
    elif plugin is None:
        raise CertifyError("certify train needs --plugin (the noise to train with), or --no-noise for a plain model")
    else:
        method = make_method(plugin, sigma, options, {})
    if group is not None and group not in method.groups:
        raise CertifyError(f"plugin {plugin} has groups {', '.join(method.groups)}; --group {group} is not one")
    groups = [group] if group else list(method.groups)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise CertifyError(f"--limit must be a whole number of at least 1, got {limit!r}")
    x, y, x_val, y_val, names = _load_training_data(data, classes, validation_fraction, seed, limit)
    input_shape = tuple(x.shape[1:])
    method.prepare(input_shape, {})
    view_shapes = {tuple(method.view_shape(input_shape, g)) for g in groups}
    if len(view_shapes) > 1:
        raise CertifyError(f"the groups of {plugin} have views of different shapes; train one model per group with --group")
    (view_shape,) = view_shapes
    x = method.check_inputs(x)
    x_val = method.check_inputs(x_val)
    _check_settings(epochs=epochs, batch_size=batch_size, lr=lr, width=width, validation_fraction=validation_fraction)

    torch_device = pick_device(device)
    check_training_memory(lambda: build_network(view_shape, len(names), width), view_shape,
                          min(batch_size, len(x)) * len(groups), 1, torch_device,
                          f"training a width-{width} network on batches of {batch_size}",
                          "lower --batch-size or --width")
    torch.manual_seed(seed)
    network = build_network(view_shape, len(names), width).to(torch_device)
    optimizer = torch.optim.SGD(network.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    settings = {
        "plugin": plugin, "noise": not no_noise, "settings": method.settings(), "data": str(data), "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "width": width, "seed": seed, "group": group,
        # only when given, so checkpoints written before --limit existed still resume
        **({"limit": limit} if limit is not None else {}),
    }
    start_epoch = 0
    if checkpoint.exists() and not restart:
        state = load_checkpoint(checkpoint, torch_device, "certify train")
        if state.get("settings") != settings or state.get("version") != CHECKPOINT_VERSION:
            raise CertifyError(
                f"{checkpoint} is a checkpoint of another training run; pass --restart to overwrite it"
            )
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"]
        if not quiet:
            click.echo(f"certify: resuming {checkpoint} after epoch {start_epoch}", err=True)

    loss_function = torch.nn.CrossEntropyLoss()
    history = []
    show_bar = not quiet and sys.stderr.isatty()
    from tqdm import tqdm

    for epoch in range(start_epoch, epochs):
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(x))
        network.train()
        total_loss, started = 0.0, time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not show_bar, file=sys.stderr)
        for step in bar:
            batch = order[step * batch_size : (step + 1) * batch_size]
            views, labels = _noisy_views(method, x[batch], y[batch], rng, groups)
            inputs = torch.from_numpy(np.ascontiguousarray(views, dtype=np.float32)).to(torch_device)
            targets = torch.from_numpy(labels).to(torch_device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(network(inputs), targets)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
            if not math.isfinite(loss.item()):
                raise CertifyError(f"training diverged (loss {loss.item()} at epoch {epoch + 1}, step {step + 1}); "
                                   f"lower --lr (now {lr:g})")
            if step % 50 == 0:
                bar.set_postfix(loss=f"{total_loss / (step + 1):.3f}")
        clean, noisy = _evaluate(network, method, x_val, y_val, groups, torch_device, batch_size,
                                 np.random.default_rng([seed, epoch, 1]))
        history.append({"epoch": epoch + 1, "loss": total_loss / steps_per_epoch, "clean_accuracy": clean,
                        "noisy_accuracy": noisy, "seconds": time.perf_counter() - started})
        if not quiet:
            click.echo(
                f"certify: epoch {epoch + 1}/{epochs}: loss {total_loss / steps_per_epoch:.4f}, validation accuracy "
                f"{_accuracies(clean, noisy, no_noise)} ({time.perf_counter() - started:.0f} s)",
                err=True,
            )
        save_checkpoint({"version": CHECKPOINT_VERSION, "settings": settings, "epoch": epoch + 1,
                         "network": network.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict()}, checkpoint)

    clean, noisy = _evaluate(network, method, x_val, y_val, groups, torch_device, batch_size,
                             np.random.default_rng([seed, 99]))
    # A plain model carries no smoothing defaults, like a third-party model: certify
    # asks for --plugin and --sigma instead of smoothing it silently.
    metadata = model_metadata(
        None if no_noise else method, input_shape=input_shape, view_shape=view_shape,
        dataset=dataset_name or data.name, classes=names, groups=groups,
        training={**settings, "validation_clean_accuracy": clean,
                  **({} if no_noise else {"validation_noisy_accuracy": noisy})},
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(network, view_shape, out, metadata)
    if not quiet:
        click.echo(f"certify: wrote {out} (validation accuracy {_accuracies(clean, noisy, no_noise)})", err=True)
    return {"clean_accuracy": clean, "noisy_accuracy": noisy, "history": history}


@hookimpl
def register_commands(cli):
    @cli.command(name="train")
    @method_options(defaults=None, required=False)
    @click.option("-d", "--data", required=True, type=click.Path(exists=True, path_type=Path),
                  help=".npz (x_train, y_train [, x_test, y_test] or x, y) or a folder of class folders.")
    @click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
    @click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS), default=10, show_default=True)
    @click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
    @click.option("--lr", type=click.FloatRange(0, MAX_LR, min_open=True), default=0.05, show_default=True,
                  help="Peak learning rate (SGD, one-cycle).")
    @click.option("--width", type=click.IntRange(1, MAX_WIDTH), default=16, show_default=True,
                  help="Channels of the first conv layer.")
    @click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
    @click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
    @click.option("--group", help="Train on one vote group's views only (e.g. one DRS side).")
    @click.option("--classes", help="Class names, comma-separated, recorded in the model.")
    @click.option("--dataset-name", help="Name of the data set, recorded in the model.")
    @click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
                  help="Checkpoint file (default: OUT.ckpt); an interrupted run resumes from it.")
    @click.option("--restart", is_flag=True, help="Ignore an existing checkpoint.")
    @click.option("--limit", type=click.IntRange(min=1),
                  help="Train on the first K training inputs only (a test split in the data is used whole).")
    @click.option("--validation-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
                  show_default=True, help="Held out when the data has no test split.")
    @click.option("--no-noise", is_flag=True,
                  help="Train a plain classifier on the clean images (no plugin, no smoothing defaults recorded).")
    @click.option("-q", "--quiet", is_flag=True)
    def train_command(options, **kwargs):
        """Train a noise-robust classifier with a plugin's noise and export it as ONNX.

        \b
            certify train --plugin rs --sigma 0.25 --data train.npz --epochs 10 --out model.onnx
        """
        _check_settings(**{k: kwargs[k] for k in ("epochs", "batch_size", "lr", "width", "validation_fraction")})
        try:
            train(options=dict(options), **kwargs)
        except (MemoryError, RuntimeError) as error:
            if isinstance(error, RuntimeError) and "memory" not in str(error):
                raise
            raise CertifyError("out of memory while training; lower --batch-size or --width") from None
        except KeyboardInterrupt:
            click.echo("\ncertify: interrupted; rerun the same command to resume from the last checkpoint", err=True)
            sys.exit(130)
