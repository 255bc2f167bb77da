"""Choosing where onnxruntime runs: CUDA when it really works, else the CPU."""

from __future__ import annotations

from typing import Callable, Sequence

from .errors import CertifyError, one_line

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Where a model may run (--device): the one list every command offers.
DEVICES = ("auto", "cuda", "cpu")


def check_device(device: str) -> None:
    """Refuse, in one line, a --device that is not one of DEVICES."""
    if device not in DEVICES:
        raise CertifyError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")


def choose_providers(
    device: str,
    available: Sequence[str],
    cuda_works: Callable[[], tuple[bool, str]],
) -> tuple[list[str], str]:
    """Providers to ask for, and one line saying why.

    ``available`` is what the onnxruntime wheel lists; ``cuda_works`` builds a real
    session and reports whether CUDA is what it actually runs on (a GPU wheel lists
    CUDA even on machines without a GPU or without the CUDA libraries).
    """
    check_device(device)
    if device == "cpu":
        return [CPU], "running on CPU (--device cpu)"
    if CUDA not in available:
        if device == "cuda":
            raise CertifyError(
                "--device cuda: this onnxruntime has no CUDA support; "
                "install onnxruntime-gpu (see the README's GPU notes) or use --device cpu"
            )
        return [CPU], "running on CPU (this onnxruntime has no CUDA support)"
    works, reason = cuda_works()
    if works:
        return [CUDA, CPU], "running on CUDA"
    if device == "cuda":
        raise CertifyError(f"--device cuda: CUDA is not usable here ({reason}); use --device cpu")
    return [CPU], f"running on CPU (CUDA not usable: {reason})"


def probe_cuda() -> tuple[bool, str]:
    """Run a one-node model on CUDA and report whether CUDA really ran it."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    # A GPU wheel without CUDA logs loud errors, then falls back to the CPU.
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=[CUDA, CPU])
        used = session.get_providers()
    except Exception as error:  # a broken CUDA install raises rather than falls back
        return False, one_line(error)
    finally:
        ort.set_default_logger_severity(2)
    if CUDA in used:
        return True, "CUDA session created"
    return False, "no GPU or CUDA/cuDNN libraries found"
