#!/usr/bin/env bash
# Development estimates for the bundled denoisers (not the certified evidence): for each
# classifier / denoiser / sigma, accuracy of f(D(x + Z)) on one noisy view of every
# Fashion-MNIST test image and a Monte-Carlo CERTIFY on the first 100 test images
# (n0 = 100, n = 10,000, alpha = 0.001). Appends JSON lines to runs/estimates.jsonl and
# prints one line per run. Two runs side by side, one onnxruntime thread each, niced.
# Needs runs/fmnist-plain-seed1-w24.onnx from benchmarks/denoise_train.sh for the
# transfer rows.
set -euo pipefail
mkdir -p runs
estimate() {  # estimate CLASSIFIER SIGMA [DENOISER]
    nice -n 10 python benchmarks/denoise_estimate.py --classifier "$1" --sigma "$2" \
        ${3:+--denoiser "$3"} --json runs/estimates.jsonl
}
for sigma in 0.25 0.5; do
    {
        estimate models/fmnist-plain.onnx "$sigma" "models/fmnist-denoiser-stab-$sigma.onnx"
        estimate models/fmnist-plain.onnx "$sigma" "models/fmnist-denoiser-mse-$sigma.onnx"
        estimate models/fmnist-plain.onnx "$sigma"
        estimate "models/fmnist-rs-$sigma.onnx" "$sigma"
        # transfer: a plain classifier the denoisers never saw (other seed and width)
        estimate runs/fmnist-plain-seed1-w24.onnx "$sigma"
        estimate runs/fmnist-plain-seed1-w24.onnx "$sigma" "models/fmnist-denoiser-mse-$sigma.onnx"
        estimate runs/fmnist-plain-seed1-w24.onnx "$sigma" "models/fmnist-denoiser-stab-$sigma.onnx"
    } &
done
wait
