#!/usr/bin/env bash
# Evidence for docs/results-denoised.md: denoised smoothing on the Fashion-MNIST test split.
#
#   benchmarks/denoised_evidence.sh          # every 9th test image, the first 500 of them, n = 10,000
#   LOCK=/work/tools/heavy.lock benchmarks/denoised_evidence.sh   # each run holds the lock on its own
#   LIMIT=100 benchmarks/denoised_evidence.sh  # the first 100 of those images; a later LIMIT=500 resumes
#
# Results go to runs/denoised/ (a rerun resumes them); the tables are printed at the end and
# written to runs/denoised/tables.md. Models (MODELS=dir to take them from elsewhere):
# fmnist-plain.onnx (no noise in training), the denoisers fmnist-denoiser-{mse,stab}-S.onnx,
# the noise-trained fmnist-rs-S.onnx. TRANSFER: a second plain classifier the denoisers were
# not trained with (made by benchmarks/denoise_train.sh; not bundled); its runs are skipped
# when the file is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion_mnist.npz}
MODELS=${MODELS:-models}
TRANSFER=${TRANSFER:-runs/fmnist-plain-seed1-w24.onnx}
OUT=runs/denoised
mkdir -p "$OUT"
COMMON=(--data "$DATA" --split test --skip 9 --limit "${LIMIT:-500}" --n0 100 -n 10000 --alpha 0.001 --seed 0 -q)
# THREADS=1 on a shared machine (onnxruntime threads; results do not depend on it)
if [ -n "${THREADS:-}" ]; then COMMON+=(--threads "$THREADS"); fi
SIGMAS=(0.25 0.5)

certify_rs() {  # certify_rs OUTPUT SIGMA MODEL [--denoiser D]
    local out=$1 sigma=$2; shift 2
    local lock=()
    if [ -n "${LOCK:-}" ]; then lock=(flock "$LOCK"); fi
    echo "::: $out" >&2
    "${lock[@]}" nice -n 10 certify --plugin rs --sigma "$sigma" "$@" "${COMMON[@]}" --output "$OUT/$out.jsonl" > /dev/null
}

# without a denoiser: the plain classifier, and the noise-trained models
for S in "${SIGMAS[@]}"; do
    certify_rs "plain-$S" "$S" "$MODELS/fmnist-plain.onnx"
    certify_rs "rs-model-$S" "$S" "$MODELS/fmnist-rs-$S.onnx"
done
# the plain classifier behind each denoiser
for LOSS in stab mse; do
    for S in "${SIGMAS[@]}"; do
        certify_rs "plain-$S-$LOSS" "$S" "$MODELS/fmnist-plain.onnx" --denoiser "$MODELS/fmnist-denoiser-$LOSS-$S.onnx"
    done
done
# a classifier the denoisers never saw
if [ -f "$TRANSFER" ]; then
    for S in "${SIGMAS[@]}"; do
        certify_rs "other-$S" "$S" "$TRANSFER"
        certify_rs "other-$S-mse" "$S" "$TRANSFER" --denoiser "$MODELS/fmnist-denoiser-mse-$S.onnx"
    done
fi

python benchmarks/denoised_tables.py "$OUT" | tee "$OUT/tables.md"
