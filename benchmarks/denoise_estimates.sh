#!/usr/bin/env bash
# Development estimates for the bundled denoisers (not the certified evidence): for each
# classifier / denoiser / sigma, accuracy of f(D(x + Z)) on one noisy view of every
# Fashion-MNIST test image and a Monte-Carlo CERTIFY on the first IMAGES test images
# (n0 = 100, n = 10,000, alpha = 0.001): 100 with fmnist-plain.onnx and the RS models, 50
# for the transfer rows (the machine was shared). Appends JSON lines to runs/estimates.jsonl and
# prints one line per run. One onnxruntime thread per run, niced. The transfer rows need
# runs/fmnist-plain-seed1-w24.onnx from benchmarks/denoise_train.sh.
set -euo pipefail
mkdir -p runs
estimate() {  # estimate IMAGES CLASSIFIER SIGMA [DENOISER]
    nice -n 10 python benchmarks/denoise_estimate.py --images "$1" --classifier "$2" --sigma "$3" \
        ${4:+--denoiser "$4"} --json runs/estimates.jsonl
}
for sigma in 0.25 0.5; do
    estimate 100 models/fmnist-plain.onnx "$sigma"
    estimate 100 "models/fmnist-rs-$sigma.onnx" "$sigma"
    estimate 100 models/fmnist-plain.onnx "$sigma" "models/fmnist-denoiser-stab-$sigma.onnx"
    estimate 100 models/fmnist-plain.onnx "$sigma" "models/fmnist-denoiser-mse-$sigma.onnx"
    # transfer: a plain classifier the denoisers never saw (other seed and width)
    estimate 50 runs/fmnist-plain-seed1-w24.onnx "$sigma"
    estimate 50 runs/fmnist-plain-seed1-w24.onnx "$sigma" "models/fmnist-denoiser-mse-$sigma.onnx"
    estimate 50 runs/fmnist-plain-seed1-w24.onnx "$sigma" "models/fmnist-denoiser-stab-$sigma.onnx"
done
