"""One diffusion model as a one-shot denoiser at every sigma, against the per-sigma DnCNN denoisers.

On the Fashion-MNIST test images, one seeded noisy view per image and sigma (the same
views for every denoiser), in onnxruntime:

- denoising MSE in pixel space, ||D(x + Z) - x||^2 / d, averaged over the images;
- accuracy of the classifier (default ``models/fmnist-plain.onnx``) on D(x + Z);
- with no denoiser, the same on the noisy view itself, and the accuracy of the
  noise-trained RS model of that sigma where one is bundled (``fmnist-rs-S.onnx``);
- "gap": the share of the accuracy gap between no denoiser and the noise-trained model
  that the denoiser recovers (a one-view proxy of the certified gap recovery);
- the multiply-adds per image of every denoiser (convolutions and matrix products,
  counted on the ONNX graph).

The diffusion model is wrapped by ``certifier.diffusion`` exactly as certify wraps it
(t* from the schedule in its metadata). A DnCNN used at a sigma it was not trained for
is marked "(off-sigma)": still sound, usually less accurate. Command (repository root):

    python benchmarks/diffusion_quality.py models/fmnist-diffusion.onnx
    python benchmarks/diffusion_quality.py DIFFUSION.onnx --images 1000 --markdown

It uses one onnxruntime thread unless told otherwise and takes a few minutes on a quiet
machine for the whole test split.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import shape_inference

from certifier.diffusion import as_noise_predictor, choose_step, one_shot_denoiser, recorded_settings, resolve_schedule

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"
SIGMAS = (0.12, 0.25, 0.5, 1.0)
DNCNNS = ("mse-0.25", "mse-0.5", "stab-0.25", "stab-0.5")


def session(model: onnx.ModelProto | Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(model: ort.InferenceSession, images: np.ndarray, batch: int = 500) -> np.ndarray:
    name = model.get_inputs()[0].name
    return np.concatenate([model.run(None, {name: images[i : i + batch]})[0] for i in range(0, len(images), batch)])


def multiply_adds(model: onnx.ModelProto) -> int | None:
    """Multiply-adds of one image through the graph: Conv, ConvTranspose, MatMul and Gemm
    (None when shape inference leaves a shape they need unknown)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[value.name] = dims
    weights = {t.name: list(t.dims) for t in inferred.graph.initializer}
    total = 0
    for node in inferred.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") and (
                node.output[0] not in shapes or (node.input[0] not in shapes and node.input[0] not in weights)):
            return None
        if node.op_type in ("Conv", "ConvTranspose"):
            kernel = weights[node.input[1]]
            if node.op_type == "Conv":  # every output element: C_in / groups x kernel
                total += math.prod(shapes[node.output[0]]) * math.prod(kernel[1:])
            else:  # every input element: C_out / groups x kernel
                total += math.prod(shapes[node.input[0]]) * math.prod(kernel[1:])
        elif node.op_type in ("MatMul", "Gemm"):
            first = shapes.get(node.input[0]) or weights[node.input[0]]
            transposed = any(a.name == "transA" and a.i for a in node.attribute)
            total += math.prod(shapes[node.output[0]]) * (first[0] if transposed else first[-1])
    return total


def diffusion_denoisers(path: Path, sigmas) -> dict[float, onnx.ModelProto]:
    proto = onnx.load(str(path))
    predictor = as_noise_predictor(proto, path.name)
    settings = recorded_settings(predictor.metadata)
    schedule = resolve_schedule(settings["schedule"], None, path.name)
    found = {}
    for sigma in sigmas:
        step = choose_step(schedule, sigma, settings["data_range"], settings["convention"])
        print(f"# {path.name} at sigma {sigma:g}: step {step.timestep:g}, alpha_bar {step.alpha_bar:.6f} "
              f"(matches sigma {step.step_sigma:.4f})")
        found[sigma] = one_shot_denoiser(predictor, step, (1, 28, 28))
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("diffusion", type=Path, nargs="+", help="diffusion noise predictor(s), ONNX")
    parser.add_argument("--classifier", type=Path, default=MODELS / "fmnist-plain.onnx")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=None, help="the first K test images (default: all)")
    parser.add_argument("--sigma", type=float, action="append", help=f"repeatable (default: {SIGMAS})")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    sigmas = tuple(args.sigma or SIGMAS)

    with np.load(args.data) as data:
        x = (data["x_test"][: args.images].astype(np.float32) / 255)[:, None]
        y = data["y_test"][: args.images]
    classifier = session(args.classifier, args.threads)
    dncnns = {name: MODELS / f"fmnist-denoiser-{name}.onnx" for name in DNCNNS}
    costs = {name: multiply_adds(onnx.load(str(p))) for name, p in dncnns.items()}
    diffusion = {p.name: diffusion_denoisers(p, sigmas) for p in args.diffusion}
    for name, by_sigma in diffusion.items():
        costs[name] = multiply_adds(next(iter(by_sigma.values())))
    costs["classifier"] = multiply_adds(onnx.load(str(args.classifier)))
    print(f"# {len(x)} test images, one noisy view each per sigma (seed {args.seed}); classifier "
          f"{args.classifier.name}; onnxruntime {ort.__version__}, {args.threads} thread(s)")
    print("# multiply-adds per image: " + ", ".join(
        f"{name} {'unknown' if value is None else f'{value / 1e6:.2f} M'}" for name, value in costs.items()))

    rows = []
    for sigma in sigmas:
        rng = np.random.default_rng([args.seed, int(round(sigma * 1e6))])
        noisy = (x + rng.normal(0, sigma, x.shape)).astype(np.float32)
        accuracy = lambda images: float((run(classifier, images).argmax(1) == y).mean())  # noqa: E731
        none = accuracy(noisy)
        rs_path = MODELS / f"fmnist-rs-{sigma:g}.onnx"
        trained = None
        if rs_path.exists():
            trained = float((run(session(rs_path, args.threads), noisy).argmax(1) == y).mean())
        rows.append((sigma, "no denoiser", float(((noisy - x) ** 2).mean()), none, None, None))
        candidates = [(name, session(path, args.threads), name.endswith(f"-{sigma:g}"))
                      for name, path in dncnns.items()]
        candidates += [(name, session(by_sigma[sigma], args.threads), True) for name, by_sigma in diffusion.items()]
        for name, denoiser, matched in candidates:
            started = time.perf_counter()
            denoised = run(denoiser, noisy)
            seconds = time.perf_counter() - started
            correct = accuracy(denoised)
            gap = (correct - none) / (trained - none) if trained is not None and trained > none else None
            label = name if matched else f"{name} (off-sigma)"
            rows.append((sigma, label, float(((denoised - x) ** 2).mean()), correct, gap, 1e6 * seconds / len(x)))
        if trained is not None:
            rows.append((sigma, f"{rs_path.name} (noise-trained, no denoiser)", None, trained, None, None))

    header = ("sigma", "denoiser", "MSE", "accuracy", "gap recovered", "us/image")
    lines = [header]
    for sigma, name, mse, acc, gap, micro in rows:
        lines.append((f"{sigma:g}", name, "-" if mse is None else f"{mse:.5f}", f"{100 * acc:.2f}%",
                      "-" if gap is None else f"{100 * gap:.1f}%", "-" if micro is None else f"{micro:.0f}"))
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in lines[1:]:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))


if __name__ == "__main__":
    main()
