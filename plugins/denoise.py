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
import math
import sys
import time
import types
from pathlib import Path
from typing import Annotated, ClassVar

import click
import numpy as np

from pydantic import field_validator, model_validator

from certifier import (
    LEARNING_RATES, CertifyError, InputSpace, InputSpaceSettings, ModelAdapter, Range, TrainingData,
    TrainingSettings, ValidationFraction, check_output_file, denoiser_metadata, flag, hookimpl, load_data, load_model,
    settings_options,
)
from certifier_plugins._torch import (
    check_training_memory, export_onnx, load_checkpoint, pick_device, require_torch, save_checkpoint,
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


#: What ``--kind`` trains: a denoiser for one sigma, or a diffusion noise predictor for all; each
#: kind's learning rate when --lr is not given.
KINDS = {"gaussian": 1e-3, "diffusion": 2e-3}
#: Settings of --kind gaussian that a diffusion noise predictor has no use for.
_GAUSSIAN_ONLY = ("sigma", "loss", "classifier", "scale", "mean", "std", "layout", "output_name", "mse_epochs",
                  "stability_lr", "depth")


class DenoiserTraining(InputSpaceSettings, TrainingSettings):
    """What ``certify train-denoiser`` takes: the kind of denoiser; for a Gaussian one the noise
    level, the loss (and the classifier it trains through, read as ``certify run`` reads it) and
    the network's size; for a diffusion noise predictor its schedule; and the settings every
    training command shares."""

    help_values: ClassVar[dict[str, str]] = {
        "data": "Images: .npz (x_train, or x), .npy or a folder; labels are not needed.",
        "validation": "Training images held out for the figures printed per epoch."}
    leading: ClassVar[tuple[str, ...]] = ("data", "out", "kind")

    data: TrainingData
    kind: Annotated[str, flag("--kind", type=tuple(KINDS), help=(
        "gaussian: a denoiser for one --sigma; diffusion: a noise predictor for every sigma (DDPM objective; "
        "certify uses it as a one-shot denoiser)."))] = "gaussian"
    sigma: Annotated[float | None, flag("-s", "--sigma", range=Range(0, MAX_SIGMA, low_open=True, text=(
        f"a positive number of at most {MAX_SIGMA:g} (pixels are in [0, 1])")),
        help="Noise level in pixel space to denoise (--kind gaussian).")] = None
    loss: Annotated[str, flag("--loss", type=LOSSES, help="mse: images only; stability: through --classifier; "
                                                          "mse+stability: both, in turn.")] = "mse"
    classifier: Annotated[Path | None, flag("--classifier", type="file",
                                            help="The frozen ONNX classifier for the stability loss.")] = None
    mse_epochs: Annotated[int | None, flag("--mse-epochs", range=Range(1),
                                           help="mse+stability: epochs of MSE first (default half).")] = None
    lr: Annotated[float | None, flag("--lr", range=LEARNING_RATES, help=(
        "Learning rate (Adam, cosine decay; default 1e-3, --kind diffusion 2e-3)."))] = None
    stability_lr: Annotated[float | None, flag(
        "--stability-lr", range=LEARNING_RATES,
        help="Learning rate of the stability epochs (default: --lr, or --lr / 10 after MSE epochs).")] = None
    depth: Annotated[int | None, flag("--depth", range=Range(2, MAX_DEPTH), help=(
        "Convolutions (default by image size: 6 up to 32 pixels, 17 from 97)."))] = None
    features: Annotated[int | None, flag("--features", range=Range(1, MAX_FEATURES), help=(
        "Channels of the hidden convolutions (default by image size; --kind diffusion: of the U-Net's first "
        "resolution, default 16)."))] = None
    schedule: Annotated[str | None, flag("--schedule", help=(
        "--kind diffusion: the noise schedule, linear, cosine (default) or a file of betas."))] = None
    steps: Annotated[int | None, flag("--steps", range=Range(1),
                                      help="--kind diffusion: steps of the schedule (default 1000).")] = None
    validation_fraction: ValidationFraction = 0.05

    @field_validator("loss")
    @classmethod
    def _loss(cls, loss: str) -> str:
        if loss not in LOSSES:
            raise CertifyError(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        return loss

    @model_validator(mode="after")
    def _kind(self) -> "DenoiserTraining":
        if self.kind not in KINDS:
            raise CertifyError(f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "diffusion":
            given = [name for name in _GAUSSIAN_ONLY if name in self.model_fields_set
                     and getattr(self, name) != type(self).model_fields[name].default]
            if given:
                shown = ", ".join("--" + name.replace("_", "-") for name in given)
                raise CertifyError(f"--kind diffusion trains a noise predictor for every sigma on images alone; "
                                   f"drop {shown}")
            return self
        if self.schedule is not None or self.steps is not None:
            raise CertifyError("--schedule and --steps apply only to --kind diffusion")
        if self.sigma is None:
            raise CertifyError("--kind gaussian trains a denoiser for one noise level: give --sigma")
        return self

    @property
    def learning_rate(self) -> float:
        """--lr, else the kind's."""
        return self.lr if self.lr is not None else KINDS[self.kind]


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


def train_denoiser(settings: DenoiserTraining | None = None, **values) -> dict:
    """Train a denoiser and export it as ONNX; returns the validation figures. The settings:
    ``settings`` (a :class:`DenoiserTraining`) with ``values`` changed, or ``values`` alone."""
    training = DenoiserTraining.of(settings, values, caller="train_denoiser")
    torch = _torch()
    from tqdm import tqdm

    checkpoint = training.checkpoint_path
    inputs = [("--data", training.data), ("--classifier", training.classifier)]
    check_output_file(training.out, "--out", inputs)
    check_output_file(checkpoint, "--checkpoint", [*inputs, ("--out", training.out)])
    phases = _phases(training.loss, training.epochs, training.mse_epochs)
    space_options = training.space_overrides
    needs_classifier = training.loss != "mse"
    if needs_classifier and training.classifier is None:
        raise CertifyError(f"--loss {training.loss} trains through a classifier: give --classifier MODEL.onnx")
    if not needs_classifier and (training.classifier is not None or training.output_name is not None
                                 or any(v is not None for v in space_options.values())):
        raise CertifyError("--loss mse never calls the classifier; drop --classifier and its input-space options")
    if not needs_classifier and training.stability_lr is not None:
        raise CertifyError("--stability-lr applies only to --loss stability and mse+stability")

    train_images, val_images, val_labels = load_images(training.data, training.validation_fraction, training.seed)
    image_shape = tuple(train_images.shape[1:])
    channels, height, width = image_shape
    default_depth, default_features = denoiser_size(height, width)
    depth = default_depth if training.depth is None else training.depth
    features = default_features if training.features is None else training.features
    torch_device = pick_device(training.device)
    check_training_memory(lambda: build_denoiser(channels, depth, features), image_shape,
                          min(training.batch_size, len(train_images)), 2, torch_device,
                          f"training a denoiser of depth {depth} and {features} features on batches of "
                          f"{training.batch_size} "
                          f"{height}x{width} images", "lower --features, --depth or --batch-size")

    frozen, model = None, None
    if needs_classifier:
        frozen, model = load_classifier(training.classifier, image_shape, space_options, training.output_name,
                                        torch_device)
    torch.manual_seed(training.seed)
    network = build_denoiser(channels, depth, features).to(torch_device)
    stability_lr = training.stability_lr
    if stability_lr is None:
        stability_lr = training.learning_rate / 10 if training.loss == "mse+stability" else training.learning_rate
    recorded = {
        "loss": training.loss, "sigma": training.sigma, "epochs": training.epochs, "phases": phases,
        "batch_size": training.batch_size, "lr": training.learning_rate,
        "stability_lr": stability_lr if needs_classifier else None, "depth": depth, "features": features,
        "seed": training.seed, "data": str(training.data), "validation_fraction": training.validation_fraction,
        "classifier_sha256": model.sha256 if model else None,
        "input_space": ({k: (list(v) if isinstance(v, tuple) else v) for k, v in space_options.items()}
                        if needs_classifier else None),
        "output_name": training.output_name,
    }
    steps_per_epoch = math.ceil(len(train_images) / training.batch_size)
    start_epoch, state = 0, None
    if checkpoint.exists() and not training.restart:
        state = load_checkpoint(checkpoint, torch_device, "certify train-denoiser")
        if state.get("settings") != recorded or state.get("version") != CHECKPOINT_VERSION:
            raise CertifyError(f"{checkpoint} is a checkpoint of another training run; pass --restart to overwrite it")
        network.load_state_dict(state["network"])
        start_epoch = state["epoch"]
        if not training.quiet:
            click.echo(f"certify: resuming {checkpoint} after epoch {start_epoch}", err=True)

    targets = val_targets = None
    if frozen is not None:
        if not training.quiet:
            click.echo(f"certify: {training.classifier.name}'s classes on the {len(train_images)} clean training "
                       f"images "
                       "(the stability targets)", err=True)
        targets = _predict(torch, frozen, train_images, torch_device, training.batch_size)
        val_targets = _predict(torch, frozen, val_images, torch_device, training.batch_size)

    mse_loss = torch.nn.MSELoss()
    cross_entropy = torch.nn.CrossEntropyLoss()
    show_bar = not training.quiet and sys.stderr.isatty()
    history, optimizer, scheduler, current = [], None, None, None
    for epoch in range(start_epoch, training.epochs):
        phase = phases[epoch]
        if phase != current:
            # Each phase has its own optimizer and schedule over its own epochs.
            phase_lr = training.learning_rate if phase == "mse" else stability_lr
            optimizer, scheduler = _optimizer(torch, network, phase_lr, phases.count(phase) * steps_per_epoch)
            if state is not None and state.get("phase") == phase and epoch == start_epoch:
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
            current = phase
        rng = np.random.default_rng([training.seed, epoch])
        order = rng.permutation(len(train_images))
        generator = torch.Generator(device=torch_device).manual_seed(int(rng.integers(2**62)))
        network.train()
        total, started = 0.0, time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{training.epochs} ({phase})", disable=not show_bar,
                   file=sys.stderr)
        for step in bar:
            batch = order[step * training.batch_size : (step + 1) * training.batch_size]
            clean = torch.from_numpy(train_images[batch]).to(torch_device)
            noisy = clean + torch.randn(clean.shape, generator=generator, device=torch_device) * training.sigma
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
        figures = _validate(torch, network, frozen, val_images, val_targets, val_labels, training.sigma, torch_device,
                            training.seed, training.batch_size)
        history.append({"epoch": epoch + 1, "phase": phase, "loss": total / steps_per_epoch, **figures,
                         "seconds": time.perf_counter() - started})
        if not training.quiet:
            click.echo(f"certify: epoch {epoch + 1}/{training.epochs} ({phase}): loss {total / steps_per_epoch:.5f}, "
                       f"validation {_describe(figures)} ({time.perf_counter() - started:.0f} s)", err=True)
        save_checkpoint({"version": CHECKPOINT_VERSION, "settings": recorded, "epoch": epoch + 1, "phase": phase,
                         "network": network.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "history": history}, checkpoint)

    figures = _validate(torch, network, frozen, val_images, val_targets, val_labels, training.sigma, torch_device,
                        training.seed,
                        training.batch_size)
    metadata = denoiser_metadata(
        sigma=training.sigma, loss=training.loss, input_shape=image_shape,
        architecture={"name": "dncnn", "depth": depth, "features": features, "residual": True,
                      "output": "clipped to [0, 1]"},
        training={**recorded, "validation": figures}, dataset=training.dataset_name or training.data.name,
        classifier_sha256=model.sha256 if model is not None else None,
        classifier=training.classifier.name if model is not None else None,
    )
    training.out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(network, image_shape, training.out, metadata, output_name="denoised")
    if not training.quiet:
        click.echo(f"certify: wrote {training.out} (validation {_describe(figures)})", err=True)
    return {"validation": figures, "history": history}


@hookimpl
def register_commands(cli):
    @cli.command(name="train-denoiser")
    @settings_options(DenoiserTraining)
    def train_denoiser_command(**values):
        """Train a denoiser for denoised smoothing and export it as ONNX: a Gaussian denoiser for
        one --sigma, or (--kind diffusion) a diffusion noise predictor for every sigma.

        \b
            certify train-denoiser --data train.npz --sigma 0.25 --loss mse --out denoiser.onnx
            certify train-denoiser --data train.npz --sigma 0.25 --loss mse+stability \\
                --classifier their_model.onnx --out denoiser-stab.onnx
            certify train-denoiser --kind diffusion --data train.npz --out diffusion.onnx
        """
        settings = DenoiserTraining(**values)  # every setting checked before any data is read
        try:
            if settings.kind == "diffusion":
                from certifier_plugins.noise_predictor import train_noise_predictor

                train_noise_predictor(settings)
            else:
                train_denoiser(settings)
        except KeyboardInterrupt:
            click.echo("\ncertify: interrupted; rerun the same command to resume from the last checkpoint", err=True)
            sys.exit(130)
