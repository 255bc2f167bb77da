"""What the torch-based built-in plugins (train, denoise) share: importing torch with a
clear message, choosing the device, checking that training fits in memory, checkpoints,
and exporting a network as ONNX with metadata."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

from certifier import CertifyError, check_memory, replacing_file


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
    with replacing_file(path) as temporary:
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


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a checkpoint in one step: a kill leaves the previous one whole."""
    import torch

    with replacing_file(path) as temporary:
        torch.save(state, temporary)


def load_checkpoint(path: Path, device, command: str) -> dict:
    """A checkpoint ``command`` wrote, or a one-line error. Read as data only (never code), so
    a file planted under the checkpoint's name cannot run anything."""
    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - a torn or foreign file fails in many ways
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise CertifyError(f"{path} is not a checkpoint of {command} ({reason}); pass --restart to replace it, "
                           f"or choose another --checkpoint") from None
    if not isinstance(state, dict):
        raise CertifyError(f"{path} is not a checkpoint of {command}; pass --restart to replace it, "
                           f"or choose another --checkpoint")
    return state


def check_training_memory(build: Callable[[], object], input_shape: tuple[int, ...], batch: int,
                          optimizer_slots: int, device, what: str, advice: str) -> None:
    """Refuse, in one line, a network that cannot train in the memory of ``device``.

    ``build`` makes the network; it is built on torch's meta device, which allocates
    nothing, so even a network of terabytes is measured at once. The estimate is a lower
    bound: the weights, their gradients and ``optimizer_slots`` tensors of optimizer state
    each, plus every layer's output for one batch of ``batch`` inputs (kept for the backward
    pass).
    """
    import torch

    with torch.device("meta"):
        network = build()
    parameters = sum(p.numel() * p.element_size() for p in network.parameters())
    outputs = []

    def count(module, inputs, output):
        if not getattr(module, "inplace", False) and isinstance(output, torch.Tensor):
            outputs.append(output.numel() * output.element_size())

    leaves = [m for m in network.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.device("meta"):
            network(torch.empty(batch, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    needed = parameters * (2 + optimizer_slots) + sum(outputs)
    available = None
    if device.type == "cuda":
        available = torch.cuda.mem_get_info(device)[0]
    check_memory(needed, what, advice, available=available)
