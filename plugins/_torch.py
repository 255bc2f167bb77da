"""What the torch-based built-in plugins (train, denoise) share: importing torch with a
clear message, choosing the device, and exporting a network as ONNX with metadata."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from certifier import CertifyError


def require_torch(command: str, install: str):
    """torch, or a one-line error saying how to install it."""
    try:
        import torch
    except ImportError:
        raise CertifyError(f"{command} needs torch: pip install torch, then {install}") from None
    return torch


def pick_device(device: str):
    """CUDA when asked for or when torch sees a GPU under ``auto``; else the CPU."""
    import torch

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise CertifyError("--device cuda: torch sees no usable GPU; use --device cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def export_onnx(network, input_shape, path: Path, metadata: dict[str, str], output_name: str = "logits", *,
                input_name: str = "input", extra_inputs=()) -> None:
    """Export with a dynamic batch axis, an IR version onnxruntime reads, and ``metadata``.

    ``extra_inputs``: (name, example) pairs of more inputs after the images, each with one
    entry per image (a dynamic batch axis too).
    """
    import onnx
    import torch

    network = network.cpu().eval()
    examples = (torch.zeros(1, *input_shape), *(example for _, example in extra_inputs))
    names = [input_name, *(name for name, _ in extra_inputs)]
    temporary = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript; it exports these networks exactly.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            network, examples, str(temporary), input_names=names, output_names=[output_name],
            dynamic_axes={**{name: {0: "batch"} for name in names}, output_name: {0: "batch"}}, opset_version=17,
            dynamo=False,
        )
    model = onnx.load(str(temporary))
    model.ir_version = min(model.ir_version, 8)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(temporary))
    os.replace(temporary, path)
