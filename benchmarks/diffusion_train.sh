#!/usr/bin/env bash
# Train the bundled diffusion noise predictor exactly as bundled, then measure it against
# the per-sigma DnCNN denoisers. Run from the repository root with the project's venv
# active (pip install -e '.[denoise]'):
#
#   benchmarks/diffusion_train.sh
#
# Rerunning resumes from the checkpoint (models/fmnist-diffusion.onnx.ckpt) and skips
# the training when the model exists. Two torch threads (the machine had two cores);
# on a shared machine run it under its lock: flock /work/locks/heavy benchmarks/diffusion_train.sh
set -euo pipefail
DATA=${DATA:-../shared/data/fashion_mnist.npz}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p runs

if [ -f models/fmnist-diffusion.onnx ]; then
    echo "skip models/fmnist-diffusion.onnx"
else
    { time certify train-denoiser --kind diffusion --data "$DATA" --epochs 40 --dataset-name fashion-mnist \
        --out models/fmnist-diffusion.onnx; } 2>&1 | tee runs/diffusion-train.log
fi
python benchmarks/diffusion_quality.py models/fmnist-diffusion.onnx --markdown | tee runs/diffusion-quality.md
