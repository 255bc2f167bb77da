"""``certify train-denoiser``: a Gaussian denoiser for denoised smoothing (Salman et al. 2020).

A denoiser D sits between the noise and a frozen classifier f, and certification
smooths f(D(x + Z)). Two ways to train it:

- ``mse`` (query access): D learns to return the clean image; only images are used
  and the classifier is never called, so one denoiser serves any classifier of the
  same kind of images.
- ``stability`` (full access): cross-entropy between f(D(x + Z)) and f's own class on
  the clean x, with gradients through f. f is the ONNX classifier, converted to torch
  by onnx2torch and frozen; the classifier's input mapping (scale, mean/std, layout)
  is applied in torch between D and f exactly as certify applies it.
- ``mse+stability``: Salman et al.'s recipe, MSE epochs first, then stability.

Needs torch (``pip install 'onnx-certifier[denoise]'``; onnx2torch for stability).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import types
from pathlib import Path

import click
import numpy as np

from certifier import (
    LAYOUTS, CertifyError, InputSpace, ModelAdapter, check_output_file, denoiser_metadata, hookimpl, load_data,
    load_model,
)
from certifier_plugins._torch import (
    MAX_EPOCHS, MAX_LR, check_training_memory, export_onnx, load_checkpoint, pick_device, require_torch,
    save_checkpoint,
)

CHECKPOINT_VERSION = 1
LOSSES = ("mse", "stability", "mse+stability")
#: Convolutions of a denoiser at most (DnCNN has 17 to 20), and its hidden channels at most (DnCNN: 64).
MAX_DEPTH = 100
MAX_FEATURES = 1024
#: Noise levels at most: pixels are in [0, 1], so far below this no image is left to recover, and
#: far above it the noise overflows float32 inside the network.
MAX_SIGMA = 100.0
#: Operators whose onnx2torch converters need torchvision (detection models only).
TORCHVISION_OPERATORS = {"NonMaxSuppression", "RoiAlign"}
INSTALL_HINT = "pip install 'onnx-certifier[denoise]'"


def _torch():
    return require_torch("certify train-denoiser", INSTALL_HINT)


# -- the converter -----------------------------------------------------------------

#: True when onnx2torch was imported beside the torchvision stand-in below.
_uses_torchvision_stand_in = False


def _missing_torchvision(*args, **kwargs):
    raise CertifyError(
        "this model uses a detection operator (NonMaxSuppression or RoiAlign) that needs torchvision, "
        "which cannot be imported here; a classifier for stability training must not contain it"
    )


@contextlib.contextmanager
def _torchvision_stand_in():
    """Lend ``import torchvision`` a stand-in for as long as onnx2torch imports.

    Why: onnx2torch imports torchvision at module level for two converters only,
    NonMaxSuppression (torchvision.ops.nms, box_convert) and RoiAlign
    (torchvision.ops.roi_align). Both are detection operators that a classifier
    trained through never contains, and the graph is checked for them before
    conversion. Yet torchvision is often unusable beside torch: PyPI's Linux wheels
    are CUDA builds that fail to import beside the CPU torch ("operator
    torchvision::nms does not exist"), and any mismatch of versions does the same.
    Refusing stability training for that reason, or pulling a torchvision that
    replaces the user's torch, would be worse than lending those two converters a
    module whose functions raise a clear error if they were ever called. The stand-in
    is removed from ``sys.modules`` at once, so no other code ever sees it.
    """
    names = [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]
    saved = {name: sys.modules.pop(name) for name in names}
    package = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.box_convert = ops.roi_align = _missing_torchvision
    package.ops = ops
    package.__path__ = []
    sys.modules.update({"torchvision": package, "torchvision.ops": ops})
    try:
        yield
    finally:
        for name in ("torchvision", "torchvision.ops"):
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def import_onnx2torch():
    """onnx2torch, imported beside a stand-in torchvision when the real one cannot load."""
    global _uses_torchvision_stand_in
    loaded = sys.modules.get("onnx2torch")
    if loaded is not None:
        return loaded
    try:
        import torchvision  # noqa: F401
        real_torchvision = True
    except Exception:  # ImportError, or RuntimeError from a build that does not match torch
        real_torchvision = False
    try:
        if real_torchvision:
            import onnx2torch
        else:
            with _torchvision_stand_in():
                import onnx2torch
            _uses_torchvision_stand_in = True
    except ImportError:
        raise CertifyError(f"stability training needs onnx2torch: {INSTALL_HINT}") from None
    return onnx2torch


class FrozenClassifier:
    """An ONNX classifier as a frozen torch function of pixel-space images.

    Applies certify's input mapping (``certifier.ModelAdapter``: gain and offset
    per channel, then the layout) in torch, runs the converted network and returns
    class scores (log-probabilities when the model outputs probabilities).
    """

    def __init__(self, network, adapter, output_index: int, probabilities: bool, device):
        torch = _torch()
        self.network = network.to(device).eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.gain = torch.from_numpy(adapter.gain.copy()).to(device)
        self.offset = torch.from_numpy(adapter.offset.copy()).to(device)
        self.identity = adapter.identity
        self.layout = adapter.layout
        self.output_index = output_index
        self.probabilities = probabilities

    def model_input(self, images):
        x = images * self.gain + self.offset if not self.identity else images
        if self.layout == "nhwc":
            x = x.permute(0, 2, 3, 1)
        elif self.layout == "hw":
            x = x[:, 0]
        elif self.layout == "flat":
            x = x.reshape(len(x), -1)
        elif self.layout == "flat-hwc":
            x = x.permute(0, 2, 3, 1).reshape(len(x), -1)
        return x.contiguous()

    def raw(self, images):
        out = self.network(self.model_input(images))
        if isinstance(out, (tuple, list)):
            out = out[self.output_index]
        return out.reshape(len(images), -1)

    def __call__(self, images):
        torch = _torch()
        scores = self.raw(images)
        if self.probabilities:
            return torch.log(scores.clamp_min(1e-12))
        return scores


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


def load_classifier(path: Path, image_shape: tuple[int, ...], space_options: dict, output_name: str | None,
                    device) -> tuple[FrozenClassifier, object]:
    """Vet the ONNX classifier as certify does, convert it to torch and check the conversion.

    Returns the frozen torch classifier and certify's ``OnnxModel`` of the file.
    """
    model = load_model(path, output_name=output_name, device="cpu", threads=1)
    if model.output.kind != "scores":
        raise CertifyError(
            f"{path.name}'s output {model.output.name!r} is a {model.output.kind}, not class scores; stability "
            f"training needs scores to take gradients (choose one with --output-name, or use --loss mse)"
        )
    if model.input_dtype != np.float32:
        raise CertifyError(
            f"{path.name} takes {model.input_dtype} inputs; stability training needs a float32 classifier "
            f"to pass gradients through (use --loss mse)"
        )
    space = InputSpace.from_metadata(model.metadata).overridden(**space_options)
    adapter = ModelAdapter(image_shape, model.input_dims, model.input_dtype, space)
    classifier = convert_classifier(model, adapter, device, purpose="stability training",
                                    instead="train with --loss mse instead, which never calls the classifier")
    return classifier, model


def convert_classifier(model, adapter, device, *, purpose: str, instead: str) -> FrozenClassifier:
    """certify's ``model`` (an ``OnnxModel``), reading pixel-space views through ``adapter``'s
    input mapping, as a frozen torch classifier, checked against onnxruntime on random views.

    A model that onnx2torch cannot convert, or converts into something that answers otherwise,
    is refused in one line naming ``purpose`` and ending with what to do ``instead``.
    """
    torch = _torch()
    import onnx

    path, view_shape = model.path, tuple(adapter.view_shape)
    proto = onnx.load(str(path))  # external data was vetted by load_model: it lies beside the model
    onnx2torch = import_onnx2torch()
    if _uses_torchvision_stand_in:
        used = sorted({node.op_type for node in proto.graph.node} & TORCHVISION_OPERATORS)
        if used:
            raise CertifyError(
                f"{path.name} uses {', '.join(used)}, which needs a working torchvision; it is not a classifier "
                f"{purpose} can pass gradients through ({instead})"
            )
    try:
        network = onnx2torch.convert(proto)
    except Exception as error:
        raise CertifyError(f"onnx2torch cannot convert {path.name} to torch ({_first_line(error)}); {instead}") from None
    outputs = [o.name for o in proto.graph.output]
    classifier = FrozenClassifier(network, adapter, outputs.index(model.output.name), False, device)
    # The same random images through onnxruntime and through torch (an odd batch,
    # so a graph with a fixed batch size is caught here).
    probe = np.random.default_rng(0).random((5, *view_shape), dtype=np.float32)
    expected = model.raw_outputs(adapter(probe)).reshape(len(probe), -1).astype(np.float64)
    try:
        with torch.no_grad():
            got = classifier.raw(torch.from_numpy(probe).to(device)).double().cpu().numpy()
    except Exception as error:
        raise CertifyError(
            f"{path.name} converted to torch fails on a batch of 5 images ({_first_line(error)}); {instead}"
        ) from None
    tolerance = 1e-4 * max(1.0, float(np.abs(expected).max()))
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-3, atol=tolerance):
        raise CertifyError(
            f"{path.name} converted to torch does not give onnxruntime's outputs (largest difference "
            f"{float(np.abs(got - expected).max()) if got.shape == expected.shape else 'shape'}); {instead}"
        )
    rows = expected.sum(axis=1)
    classifier.probabilities = bool((expected >= 0).all() and np.allclose(rows, 1.0, atol=1e-4))
    return classifier


# -- the denoiser ------------------------------------------------------------------


def denoiser_size(height: int, width: int) -> tuple[int, int]:
    """(depth, features) for an image size: cheap for 28x28 (certification runs the
    denoiser on every noisy sample), DnCNN's 17 x 64 above 96 pixels."""
    side = min(height, width)
    if side <= 32:
        return 6, 16
    if side <= 96:
        return 10, 48
    return 17, 64


def build_denoiser(channels: int, depth: int, features: int):
    """DnCNN (Zhang et al. 2017): convolutions predict the noise, which is subtracted;
    the result is clipped to pixel space [0, 1]."""
    torch = _torch()
    nn = torch.nn

    class DnCNN(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(inplace=True)]
            for _ in range(depth - 2):
                layers += [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features),
                           nn.ReLU(inplace=True)]
            layers.append(nn.Conv2d(features, channels, 3, padding=1))
            self.noise = nn.Sequential(*layers)

        def forward(self, noisy):
            return (noisy - self.noise(noisy)).clamp(0.0, 1.0)

    return DnCNN()


# -- data --------------------------------------------------------------------------


def load_images(path: Path, validation_fraction: float, seed: int):
    """(train images, validation images, validation labels or None): float32 (N, C, H, W)
    in [0, 1] from the training split only (x_train of an .npz that has one); the
    validation images are a seeded hold-out of it."""
    split = None
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = set(archive.files)
        except Exception as error:
            raise CertifyError(f"cannot read {path} as a numpy file: {_first_line(error)}") from None
        if "x_train" in keys:
            split = "train"
        elif "x" not in keys:
            raise CertifyError(f"{path} has no x_train or x array; a denoiser never trains on test images (x_test)")
    data = load_data(path, split=split)
    if len(data.shape) != 3:
        raise CertifyError(
            f"{path} holds feature vectors of shape {data.shape}; a denoiser needs images "
            f"(H x W, H x W x C or C x H x W)"
        )
    if len(data) < 2:
        raise CertifyError(f"{path} holds {len(data)} image(s); a denoiser needs at least 2 to train and validate")
    if not 0 < validation_fraction < 1:
        raise CertifyError(f"--validation-fraction must be above 0 and below 1, got {validation_fraction!r}")
    images = data.batch(range(len(data)))
    order = np.random.default_rng(seed).permutation(len(images))
    cut = max(1, int(round(len(images) * validation_fraction)))
    labels = data.labels[order[:cut]] if data.labels is not None else None
    return np.ascontiguousarray(images[order[cut:]]), np.ascontiguousarray(images[order[:cut]]), labels


# -- training ----------------------------------------------------------------------


def _phases(loss: str, epochs: int, mse_epochs: int | None) -> list[str]:
    """The loss of each epoch."""
    if loss == "mse+stability":
        if epochs < 2:
            raise CertifyError("--loss mse+stability needs at least 2 epochs (MSE first, then stability)")
        first = epochs // 2 if mse_epochs is None else mse_epochs
        if not 1 <= first < epochs:
            raise CertifyError(f"--mse-epochs must be between 1 and {epochs - 1} (--epochs {epochs})")
        return ["mse"] * first + ["stability"] * (epochs - first)
    if mse_epochs is not None:
        raise CertifyError("--mse-epochs applies only to --loss mse+stability")
    return [loss] * epochs


def check_settings(*, sigma, epochs, batch_size, lr, stability_lr=None, depth=None, features=None,
                   validation_fraction=0.05) -> None:
    """Refuse, each in one line, training settings that cannot work, before any data is read
    (the command line's ranges say the same; this guards calls from Python)."""
    if not (_is_number(sigma) and 0 < sigma <= MAX_SIGMA):
        raise CertifyError(f"--sigma must be a positive number of at most {MAX_SIGMA:g} (pixels are in [0, 1]), "
                           f"got {sigma!r}")
    for name, value, low, high in (("epochs", epochs, 1, MAX_EPOCHS), ("batch-size", batch_size, 1, None),
                                   ("depth", depth, 2, MAX_DEPTH), ("features", features, 1, MAX_FEATURES)):
        if value is None and name in ("depth", "features"):
            continue  # chosen by image size
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            bounds = f"from {low} to {high}" if high else f"at least {low}"
            raise CertifyError(f"--{name} must be a whole number {bounds}, got {value!r}")
    for name, value in (("lr", lr), ("stability-lr", stability_lr)):
        if value is not None and not (_is_number(value) and 0 < value <= MAX_LR):
            raise CertifyError(f"--{name} must be a positive number of at most {MAX_LR:g}, got {value!r}")
    if not (_is_number(validation_fraction) and 0 < validation_fraction < 1):
        raise CertifyError(f"--validation-fraction must be above 0 and below 1, got {validation_fraction!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optimizer(torch, network, lr: float, steps: int):
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    return optimizer, scheduler


def _predict(torch, classifier, images: np.ndarray, device, batch_size: int) -> np.ndarray:
    """The classifier's class for each clean image (the stability loss's target)."""
    found = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).to(device)
            found.append(classifier(batch).argmax(1).cpu().numpy())
    return np.concatenate(found)


def _validate(torch, network, classifier, images, targets, labels, sigma, device, seed, batch_size) -> dict:
    """Mean squared error and PSNR of the denoised images, and with a classifier how often
    f(D(x + Z)) keeps f's clean class (and the true label), on one noisy view per image."""
    generator = torch.Generator(device=device).manual_seed(seed)
    network.eval()
    squared, kept, correct = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            clean = torch.from_numpy(images[start : start + batch_size]).to(device)
            noise = torch.randn(clean.shape, generator=generator, device=device) * sigma
            denoised = network(clean + noise)
            squared += float(((denoised - clean) ** 2).mean(dim=(1, 2, 3)).sum())
            if classifier is not None:
                predicted = classifier(denoised).argmax(1).cpu().numpy()
                kept += int((predicted == targets[start : start + batch_size]).sum())
                if labels is not None:
                    correct += int((predicted == labels[start : start + batch_size]).sum())
    network.train()
    mse = squared / len(images)
    found = {"mse": mse, "psnr": 10 * math.log10(1.0 / max(mse, 1e-12))}
    if classifier is not None:
        found["kept_clean_class"] = kept / len(images)
        if labels is not None:
            found["accuracy"] = correct / len(images)
    return found


def _describe(figures: dict) -> str:
    parts = [f"MSE {figures['mse']:.5f} (PSNR {figures['psnr']:.2f} dB)"]
    if "kept_clean_class" in figures:
        parts.append(f"f(D(x+Z)) keeps f(x) {100 * figures['kept_clean_class']:.2f}%")
    if "accuracy" in figures:
        parts.append(f"accuracy {100 * figures['accuracy']:.2f}%")
    return ", ".join(parts)


def train_denoiser(
    *, data: Path, out: Path, sigma: float, loss: str = "mse", classifier: Path | None = None,
    epochs: int = 10, mse_epochs: int | None = None, batch_size: int = 128, lr: float = 1e-3,
    stability_lr: float | None = None, depth: int | None = None, features: int | None = None, seed: int = 0,
    device: str = "auto", dataset_name: str | None = None, checkpoint: Path | None = None, restart: bool = False,
    validation_fraction: float = 0.05, scale: float | None = None, mean=None, std=None, layout: str | None = None,
    output_name: str | None = None, quiet: bool = False,
) -> dict:
    """Train a denoiser and export it as ONNX; returns the validation figures."""
    torch = _torch()
    from tqdm import tqdm

    if loss not in LOSSES:
        raise CertifyError(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    check_settings(sigma=sigma, epochs=epochs, batch_size=batch_size, lr=lr, stability_lr=stability_lr, depth=depth,
                   features=features, validation_fraction=validation_fraction)
    checkpoint = checkpoint or out.with_name(out.name + ".ckpt")
    inputs = [("--data", data), ("--classifier", classifier)]
    check_output_file(out, "--out", inputs)
    check_output_file(checkpoint, "--checkpoint", [*inputs, ("--out", out)])
    phases = _phases(loss, epochs, mse_epochs)
    space_options = {"scale": scale, "mean": tuple(mean) if mean is not None else None,
                     "std": tuple(std) if std is not None else None, "layout": layout}
    needs_classifier = loss != "mse"
    if needs_classifier and classifier is None:
        raise CertifyError(f"--loss {loss} trains through a classifier: give --classifier MODEL.onnx")
    if not needs_classifier and (classifier is not None or output_name is not None
                                 or any(v is not None for v in space_options.values())):
        raise CertifyError("--loss mse never calls the classifier; drop --classifier and its input-space options")
    if not needs_classifier and stability_lr is not None:
        raise CertifyError("--stability-lr applies only to --loss stability and mse+stability")

    train_images, val_images, val_labels = load_images(data, validation_fraction, seed)
    image_shape = tuple(train_images.shape[1:])
    channels, height, width = image_shape
    default_depth, default_features = denoiser_size(height, width)
    depth = default_depth if depth is None else depth
    features = default_features if features is None else features
    torch_device = pick_device(device)
    check_training_memory(lambda: build_denoiser(channels, depth, features), image_shape,
                          min(batch_size, len(train_images)), 2, torch_device,
                          f"training a denoiser of depth {depth} and {features} features on batches of {batch_size} "
                          f"{height}x{width} images", "lower --features, --depth or --batch-size")

    frozen, model = None, None
    if needs_classifier:
        frozen, model = load_classifier(classifier, image_shape, space_options, output_name, torch_device)
    torch.manual_seed(seed)
    network = build_denoiser(channels, depth, features).to(torch_device)
    stability_lr = stability_lr if stability_lr is not None else (lr / 10 if loss == "mse+stability" else lr)
    settings = {
        "loss": loss, "sigma": sigma, "epochs": epochs, "phases": phases, "batch_size": batch_size, "lr": lr,
        "stability_lr": stability_lr if needs_classifier else None, "depth": depth, "features": features,
        "seed": seed, "data": str(data), "validation_fraction": validation_fraction,
        "classifier_sha256": model.sha256 if model else None,
        "input_space": ({k: (list(v) if isinstance(v, tuple) else v) for k, v in space_options.items()}
                        if needs_classifier else None),
        "output_name": output_name,
    }
    steps_per_epoch = math.ceil(len(train_images) / batch_size)
    start_epoch, state = 0, None
    if checkpoint.exists() and not restart:
        state = load_checkpoint(checkpoint, torch_device, "certify train-denoiser")
        if state.get("settings") != settings or state.get("version") != CHECKPOINT_VERSION:
            raise CertifyError(f"{checkpoint} is a checkpoint of another training run; pass --restart to overwrite it")
        network.load_state_dict(state["network"])
        start_epoch = state["epoch"]
        if not quiet:
            click.echo(f"certify: resuming {checkpoint} after epoch {start_epoch}", err=True)

    targets = val_targets = None
    if frozen is not None:
        if not quiet:
            click.echo(f"certify: {classifier.name}'s classes on the {len(train_images)} clean training images "
                       "(the stability targets)", err=True)
        targets = _predict(torch, frozen, train_images, torch_device, batch_size)
        val_targets = _predict(torch, frozen, val_images, torch_device, batch_size)

    mse_loss = torch.nn.MSELoss()
    cross_entropy = torch.nn.CrossEntropyLoss()
    show_bar = not quiet and sys.stderr.isatty()
    history, optimizer, scheduler, current = [], None, None, None
    for epoch in range(start_epoch, epochs):
        phase = phases[epoch]
        if phase != current:
            # Each phase has its own optimizer and schedule over its own epochs.
            phase_lr = lr if phase == "mse" else stability_lr
            optimizer, scheduler = _optimizer(torch, network, phase_lr, phases.count(phase) * steps_per_epoch)
            if state is not None and state.get("phase") == phase and epoch == start_epoch:
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
            current = phase
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(train_images))
        generator = torch.Generator(device=torch_device).manual_seed(int(rng.integers(2**62)))
        network.train()
        total, started = 0.0, time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs} ({phase})", disable=not show_bar,
                   file=sys.stderr)
        for step in bar:
            batch = order[step * batch_size : (step + 1) * batch_size]
            clean = torch.from_numpy(train_images[batch]).to(torch_device)
            noisy = clean + torch.randn(clean.shape, generator=generator, device=torch_device) * sigma
            denoised = network(noisy)
            if phase == "mse":
                value = mse_loss(denoised, clean)
            else:
                value = cross_entropy(frozen(denoised), torch.from_numpy(targets[batch]).to(torch_device))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            scheduler.step()
            total += value.item()
            if not math.isfinite(value.item()):
                raise CertifyError(f"training diverged (loss {value.item()} at epoch {epoch + 1}, step {step + 1}); "
                                   f"lower --{'lr' if phase == 'mse' else 'stability-lr'} (now {phase_lr:g})")
            if step % 20 == 0:
                bar.set_postfix(loss=f"{total / (step + 1):.4f}")
        figures = _validate(torch, network, frozen, val_images, val_targets, val_labels, sigma, torch_device,
                            seed, batch_size)
        history.append({"epoch": epoch + 1, "phase": phase, "loss": total / steps_per_epoch, **figures,
                         "seconds": time.perf_counter() - started})
        if not quiet:
            click.echo(f"certify: epoch {epoch + 1}/{epochs} ({phase}): loss {total / steps_per_epoch:.5f}, "
                       f"validation {_describe(figures)} ({time.perf_counter() - started:.0f} s)", err=True)
        save_checkpoint({"version": CHECKPOINT_VERSION, "settings": settings, "epoch": epoch + 1, "phase": phase,
                         "network": network.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "history": history}, checkpoint)

    figures = _validate(torch, network, frozen, val_images, val_targets, val_labels, sigma, torch_device, seed,
                        batch_size)
    metadata = denoiser_metadata(
        sigma=sigma, loss=loss, input_shape=image_shape,
        architecture={"name": "dncnn", "depth": depth, "features": features, "residual": True,
                      "output": "clipped to [0, 1]"},
        training={**settings, "validation": figures}, dataset=dataset_name or data.name,
        classifier_sha256=model.sha256 if model is not None else None,
        classifier=classifier.name if model is not None else None,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(network, image_shape, out, metadata, output_name="denoised")
    if not quiet:
        click.echo(f"certify: wrote {out} (validation {_describe(figures)})", err=True)
    return {"validation": figures, "history": history}


def _numbers(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise CertifyError(f"{option}: expected numbers separated by commas, got {text!r}") from None


@hookimpl
def register_commands(cli):
    @cli.command(name="train-denoiser")
    @click.option("-d", "--data", required=True, type=click.Path(exists=True, path_type=Path),
                  help="Images: .npz (x_train, or x), .npy or a folder; labels are not needed.")
    @click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
    @click.option("-s", "--sigma", required=True, type=click.FloatRange(0, MAX_SIGMA, min_open=True),
                  help="Noise level in pixel space to denoise.")
    @click.option("--loss", type=click.Choice(LOSSES), default="mse", show_default=True,
                  help="mse: images only; stability: through --classifier; mse+stability: both, in turn.")
    @click.option("--classifier", type=click.Path(dir_okay=False, path_type=Path),
                  help="The frozen ONNX classifier for the stability loss.")
    @click.option("--scale", type=float, help="The classifier's input = pixel * scale (default: its metadata, else 1).")
    @click.option("--mean", help="Per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406.")
    @click.option("--std", help="Per-channel std divided by after subtracting the mean.")
    @click.option("--layout", type=click.Choice(LAYOUTS), help="How the classifier reads images (default auto).")
    @click.option("--output-name", help="The classifier output holding class scores.")
    @click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS), default=10, show_default=True)
    @click.option("--mse-epochs", type=click.IntRange(min=1), help="mse+stability: epochs of MSE first (default half).")
    @click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
    @click.option("--lr", type=click.FloatRange(0, MAX_LR, min_open=True), default=1e-3, show_default=True,
                  help="Learning rate (Adam, cosine decay).")
    @click.option("--stability-lr", type=click.FloatRange(0, MAX_LR, min_open=True),
                  help="Learning rate of the stability epochs (default: --lr, or --lr / 10 after MSE epochs).")
    @click.option("--depth", type=click.IntRange(2, MAX_DEPTH),
                  help="Convolutions (default by image size: 6 up to 32 pixels, 17 from 97).")
    @click.option("--features", type=click.IntRange(1, MAX_FEATURES),
                  help="Channels of the hidden convolutions (default by image size).")
    @click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
    @click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
    @click.option("--dataset-name", help="Name of the data set, recorded in the model.")
    @click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
                  help="Checkpoint file (default: OUT.ckpt); an interrupted run resumes from it.")
    @click.option("--restart", is_flag=True, help="Ignore an existing checkpoint.")
    @click.option("--validation-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
                  show_default=True, help="Training images held out for the figures printed per epoch.")
    @click.option("-q", "--quiet", is_flag=True)
    def train_denoiser_command(mean, std, **kwargs):
        """Train a Gaussian denoiser for denoised smoothing and export it as ONNX.

        \b
            certify train-denoiser --data train.npz --sigma 0.25 --loss mse --out denoiser.onnx
            certify train-denoiser --data train.npz --sigma 0.25 --loss mse+stability \\
                --classifier their_model.onnx --out denoiser-stab.onnx
        """
        try:
            train_denoiser(mean=_numbers(mean, "--mean"), std=_numbers(std, "--std"), **kwargs)
        except KeyboardInterrupt:
            click.echo("\ncertify: interrupted; rerun the same command to resume from the last checkpoint", err=True)
            sys.exit(130)
