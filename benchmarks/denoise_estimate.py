"""Development estimates for denoised smoothing, with onnxruntime: f(D(x + Z)).

Not the certified evidence (that comes from ``certify --denoiser`` once it exists);
these figures guide training choices and draft the model cards. Command (repository
root, project venv):

    python benchmarks/denoise_estimate.py --classifier models/fmnist-plain.onnx \\
        --denoiser models/fmnist-denoiser-stab-0.25.onnx --sigma 0.25

prints two estimates for one classifier, with or without a denoiser:

* noisy accuracy: f(D(x + Z)) on one noisy view of each Fashion-MNIST test image
  (all 4,988), and the clean accuracy f(D(x)) and f(x);
* certified accuracy at L2 radii 0 / 0.25 / 0.5 / 0.75 / 1 and ACR on the first
  ``--images`` test images, by Cohen et al.'s CERTIFY (n0 selection samples, n fresh
  estimation samples, Clopper-Pearson lower bound at alpha, abstain below 1/2).

``--json FILE`` appends the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
#: per-image outcomes besides a (positive) certified radius of a correct prediction
ABSTAIN, WRONG = -1.0, -2.0


class Pipeline:
    """Noisy pixel images -> denoiser (optional) -> classifier -> class, in onnxruntime."""

    def __init__(self, classifier: Path, denoiser: Path | None, threads: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.classifier = ort.InferenceSession(str(classifier), options, providers=providers)
        self.denoiser = ort.InferenceSession(str(denoiser), options, providers=providers) if denoiser else None

    def labels(self, images: np.ndarray) -> np.ndarray:
        if self.denoiser is not None:
            images = self.denoiser.run(None, {self.denoiser.get_inputs()[0].name: images})[0]
        scores = self.classifier.run(None, {self.classifier.get_inputs()[0].name: images})[0]
        return scores.argmax(axis=1)


def counts(pipeline: Pipeline, image: np.ndarray, samples: int, sigma: float, rng, batch: int, classes: int):
    found = np.zeros(classes, dtype=np.int64)
    for start in range(0, samples, batch):
        size = min(batch, samples - start)
        noisy = image[None] + rng.normal(0.0, sigma, (size, *image.shape)).astype(np.float32)
        found += np.bincount(pipeline.labels(noisy), minlength=classes)[:classes]
    return found


def main(argv=None) -> None:
    from scipy.stats import beta, norm

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifier", type=Path, required=True)
    parser.add_argument("--denoiser", type=Path)
    parser.add_argument("--sigma", type=float, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=100, help="test images to certify (default: %(default)s)")
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="append the figures to this file as one JSON line")
    args = parser.parse_args(argv)

    with np.load(args.data) as data:
        x = data["x_test"].astype(np.float32)[:, None] / 255
        y = data["y_test"].astype(np.int64)
    pipeline = Pipeline(args.classifier, args.denoiser, args.threads)
    classes = 10
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    noisy_correct = clean_correct = 0
    for start in range(0, len(x), 1000):
        batch = x[start : start + 1000]
        noisy = batch + rng.normal(0.0, args.sigma, batch.shape).astype(np.float32)
        noisy_correct += int((pipeline.labels(noisy) == y[start : start + 1000]).sum())
        clean_correct += int((pipeline.labels(batch) == y[start : start + 1000]).sum())

    radii = []
    for index in range(args.images):
        selection = counts(pipeline, x[index], args.n0, args.sigma, rng, 1000, classes)
        top = int(selection.argmax())
        estimation = counts(pipeline, x[index], args.n, args.sigma, rng, 2000, classes)
        hits = int(estimation[top])
        p_lower = float(beta.ppf(args.alpha, hits, args.n - hits + 1)) if hits > 0 else 0.0
        if p_lower <= 0.5:
            radii.append(ABSTAIN)
        elif top != y[index]:
            radii.append(WRONG)
        else:
            radii.append(args.sigma * float(norm.ppf(p_lower)))  # > 0
    radii = np.array(radii)
    certified = {r: float(np.mean(radii >= r)) for r in RADII}
    acr = float(np.where(radii > 0, radii, 0.0).mean())
    figures = {
        "classifier": args.classifier.name, "denoiser": args.denoiser.name if args.denoiser else None,
        "sigma": args.sigma, "test_images": len(x), "clean_accuracy": clean_correct / len(x),
        "noisy_accuracy": noisy_correct / len(x), "certified_images": args.images, "n0": args.n0, "n": args.n,
        "alpha": args.alpha, "certified_accuracy": {str(r): certified[r] for r in RADII}, "acr": acr,
        "abstain": float(np.mean(radii == ABSTAIN)), "seconds": time.perf_counter() - started,
        "radii": radii.tolist(),  # per image: the radius, -1 abstain, -2 wrong
    }
    denoiser = args.denoiser.name if args.denoiser else "no denoiser"
    table = " ".join(f"{100 * certified[r]:5.1f}" for r in RADII)
    print(f"{args.classifier.name} + {denoiser}, sigma {args.sigma}: accuracy clean {100 * figures['clean_accuracy']:.2f}% "
          f"noisy {100 * figures['noisy_accuracy']:.2f}% (4,988 images); certified at r = 0/0.25/0.5/0.75/1: {table} "
          f"ACR {acr:.3f} abstain {100 * figures['abstain']:.1f}% ({args.images} images, n = {args.n}; "
          f"{figures['seconds']:.0f} s)")
    if args.json:
        with open(args.json, "a") as handle:
            handle.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
