#!/usr/bin/env bash
# Evidence for docs/results-diffusion.md: one diffusion model (models/fmnist-diffusion.onnx) as a
# one-shot denoiser for every sigma, on the images and settings of docs/results-denoised.md.
#
#   benchmarks/diffusion_evidence.sh                 # every run below, 500 images, n = 10,000
#   LOCK=/work/locks/heavy benchmarks/diffusion_evidence.sh   # each run holds the lock on its own
#   LIMIT=100 benchmarks/diffusion_evidence.sh       # the first 100 of those images; a later LIMIT=500 resumes
#   ONLY="plain-0.25-diffusion plain-0.5-diffusion" benchmarks/diffusion_evidence.sh   # those runs only
#
# Results go to runs/diffusion/ (a rerun resumes them); the tables are printed at the end and
# written to runs/diffusion/tables.md. Runs whose settings equal a run of
# benchmarks/denoised_evidence.sh (no denoiser, the MSE and stability denoisers, the
# noise-trained models at sigma 0.25 and 0.5) are not repeated: they are resumed in DENOISED
# (default runs/denoised) under that script's file names, and made there when missing.
# Models come from MODELS (default models/); TRANSFER is the second plain classifier of
# benchmarks/denoise_train.sh (not bundled; its runs are skipped when the file is missing).
# Cost: each image of a diffusion run is 10,100 passes through the 18.5 M multiply-add noise
# predictor and the classifier, about 11 s on one quiet core (benchmarks/bench_diffusion.py),
# so about 1.5 hours per run of 500 images; twice that and more on a loaded machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion_mnist.npz}
MODELS=${MODELS:-models}
TRANSFER=${TRANSFER:-runs/fmnist-plain-seed1-w24.onnx}
DENOISED=${DENOISED:-runs/denoised}
DIFFUSION=${DIFFUSION:-$MODELS/fmnist-diffusion.onnx}
OUT=runs/diffusion
mkdir -p "$OUT"
COMMON=(--data "$DATA" --split test --skip 9 --limit "${LIMIT:-500}" --n0 100 -n 10000 --alpha 0.001 --seed 0 -q)
# onnxruntime threads (results do not depend on them); 1 on a shared machine
COMMON+=(--threads "${THREADS:-1}")
SIGMAS=(0.25 0.5 0.12 1.0)

wanted() {  # wanted NAME: whether ONLY (when set) lists it
    [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]
}

certify_rs() {  # certify_rs FOLDER/OUTPUT SIGMA MODEL [--denoiser D]
    local out=$1 sigma=$2; shift 2
    wanted "$(basename "$out")" || return 0
    local lock=()
    if [ -n "${LOCK:-}" ]; then lock=(flock "$LOCK"); fi
    echo "::: $out" >&2
    OMP_NUM_THREADS=${THREADS:-1} "${lock[@]}" nice -n 10 certify --plugin rs --sigma "$sigma" "$@" "${COMMON[@]}" \
        --output "$out.jsonl" > /dev/null
}

# What benchmarks/denoised_evidence.sh runs, with its settings and file names: its results
# files are resumed (nothing is recomputed for the images they hold), missing ones are made.
mkdir -p "$DENOISED"
for S in 0.25 0.5; do
    certify_rs "$DENOISED/plain-$S" "$S" "$MODELS/fmnist-plain.onnx"
    certify_rs "$DENOISED/rs-model-$S" "$S" "$MODELS/fmnist-rs-$S.onnx"
    for LOSS in mse stab; do
        certify_rs "$DENOISED/plain-$S-$LOSS" "$S" "$MODELS/fmnist-plain.onnx" \
            --denoiser "$MODELS/fmnist-denoiser-$LOSS-$S.onnx"
    done
done

for S in "${SIGMAS[@]}"; do
    # the plain classifier through the one diffusion model
    certify_rs "$OUT/plain-$S-diffusion" "$S" "$MODELS/fmnist-plain.onnx" --denoiser "$DIFFUSION"
done
for S in 0.12 1.0; do
    # no denoiser at the sigmas docs/results-denoised.md has no run of
    certify_rs "$OUT/plain-$S" "$S" "$MODELS/fmnist-plain.onnx"
done
if [ -f "$TRANSFER" ]; then
    for S in "${SIGMAS[@]}"; do
        certify_rs "$OUT/other-$S-diffusion" "$S" "$TRANSFER" --denoiser "$DIFFUSION"
    done
    for S in 0.12 1.0; do
        certify_rs "$OUT/other-$S" "$S" "$TRANSFER"
    done
fi

python benchmarks/diffusion_tables.py "$OUT" "$DENOISED" | tee "$OUT/tables.md"
