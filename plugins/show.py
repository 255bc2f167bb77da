"""``certify show``: a picture of what the model sees under a smoothing method."""

from __future__ import annotations

import io
from pathlib import Path

import click
import numpy as np

from certifier import (
    CertifyError, check_output_file, hookimpl, load_data, make_method, method_options, read_metadata,
)

#: Random views per group a picture may show: each is a row of panels.
MAX_SAMPLES = 16


def _displayable(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An (H, W) or (H, W, 3) array for imshow from a (C, H, W) pixel-space image."""
    if image.ndim == 1:
        side = int(np.ceil(np.sqrt(image.size)))
        padded = np.zeros(side * side, dtype=image.dtype)
        padded[: image.size] = image
        return padded.reshape(side, side), "gray"
    if image.shape[0] == 1:
        return image[0], "gray"
    return np.moveaxis(image[:3], 0, -1), None


def render(method, x: np.ndarray, path: Path, *, samples: int = 2, seed: int = 0, title: str | None = None) -> None:
    """Write a picture (PNG unless ``path`` names another format matplotlib writes): the clean
    input, then each stage of a few random views per group."""
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise CertifyError(f"--samples must be a whole number from 1 to {MAX_SAMPLES}, got {samples!r}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CertifyError("certify show needs matplotlib: pip install 'onnx-certifier[plot]'") from None
    rows = []
    rng = np.random.default_rng(seed)
    for group in method.groups:
        for _ in range(samples):
            rows.append(method.stages(x[None], rng, group))
    columns = 1 + max(len(stages) for stages in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.2 * columns, 2.3 * len(rows)), squeeze=False)
    for row, stages in enumerate(rows):
        panels = [("clean input", x[None])] + list(stages)
        for column in range(columns):
            axis = axes[row][column]
            axis.axis("off")
            if column >= len(panels):
                continue
            name, image = panels[column]
            shown, cmap = _displayable(np.asarray(image[0], dtype=np.float32))
            if shown.min() < 0 or shown.max() > 1:
                name += " (drawn clipped)"  # the view itself is not: the model sees values outside [0, 1]
            axis.imshow(np.clip(shown, 0, 1), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            axis.set_title(name, fontsize=8)
    figure.suptitle(title or _settings(method), fontsize=9)
    figure.tight_layout()
    picture = io.BytesIO()
    try:
        figure.savefig(picture, dpi=110, format=_picture_format(Path(path), figure))
    finally:
        plt.close(figure)
    # Written by hand: matplotlib's own writer can leave a failed write (a full disk) unreported.
    try:
        with open(path, "wb") as handle:
            handle.write(picture.getvalue())
    except OSError as error:
        raise CertifyError(f"cannot write {path}: {error.strerror or error}") from None


def _picture_format(path: Path, figure) -> str:
    """The format ``path``'s suffix names (PNG without one); refuses one matplotlib cannot write."""
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    supported = figure.canvas.get_supported_filetypes()
    if suffix not in supported:
        raise CertifyError(f"--out {path.name}: cannot write .{suffix} pictures; use .png (or "
                           f"{', '.join('.' + s for s in sorted(supported) if s != 'png')})")
    return suffix


def _settings(method) -> str:
    """"rs, sigma 0.5"; "translation, k 3" for a method without sigma."""
    if method.sigma is not None:
        return f"{method.name}, sigma {method.sigma:g}"
    options = method.options.model_dump()
    return ", ".join([method.name, *(f"{name.replace('_', '-')} {value}" for name, value in options.items())])


@hookimpl
def register_commands(cli):
    @cli.command(name="show")
    @click.argument("data", type=click.Path(path_type=Path))
    @method_options(defaults="the metadata of --model")
    @click.option("-m", "--model", type=click.Path(dir_okay=False, path_type=Path),
                  help="Read the plugin, sigma and options from this model's metadata.")
    @click.option("--index", type=int, default=0, show_default=True, help="Which input of DATA to show.")
    @click.option("--samples", type=int, default=2, show_default=True,
                  help=f"Random views per group (at most {MAX_SAMPLES}).")
    @click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("show.png"),
                  show_default=True, help="PNG file to write.")
    def show_command(data, plugin, sigma, options, model, index, samples, seed, out):
        """Write a PNG of an input, noisy samples and the plugin's views of them.

        \b
            certify show --plugin rs --sigma 0.5 images.npz --index 3 --out rs.png
        """
        if not 1 <= samples <= MAX_SAMPLES:
            raise CertifyError(f"--samples must be from 1 to {MAX_SAMPLES} (rows of pictures per group), got {samples}")
        check_output_file(out, "--out", [("DATA", data), ("--model", model)])
        metadata = read_metadata(model) if model is not None else {}
        method = make_method(plugin, sigma, dict(options), metadata)
        dataset = load_data(data)
        if not 0 <= index < len(dataset):
            raise CertifyError(f"--index {index} is out of range: {data} holds {len(dataset)} inputs")
        x = method.check_inputs(dataset.batch([index]))[0]
        method.prepare(tuple(x.shape), metadata)
        render(method, x, out, samples=samples, seed=seed)
        click.echo(f"certify: wrote {out}", err=True)
