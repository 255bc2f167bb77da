#!/usr/bin/env bash
# Evidence for docs/results-drs.md: RS and DRS on the Fashion-MNIST test split.
#
#   benchmarks/drs_evidence.sh            # every 9th test image (555 images), n = 10,000
#   SKIP=1 benchmarks/drs_evidence.sh     # all 4,988 test images
#
# Results go to runs/drs/ (a rerun resumes them); the tables are printed at the end and
# written to runs/drs/tables.md. Models: models/fmnist-rs-*.onnx and models/fmnist-drs-*.onnx.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion_mnist.npz}
SKIP=${SKIP:-9}
OUT=runs/drs
mkdir -p "$OUT"
COMMON=(--data "$DATA" --split test --skip "$SKIP" --n0 100 -n 10000 --alpha 0.001 --seed 0 -q)
# THREADS=1 on a shared machine (onnxruntime threads; results do not depend on it)
if [ -n "${THREADS:-}" ]; then COMMON+=(--threads "$THREADS"); fi

# RS at the two DRS sigmas and at sigma * sqrt(2) (the paper's pairing)
for S in 0.25 0.3536 0.5 0.7071; do
    certify --plugin rs --sigma "$S" "models/fmnist-rs-$S.onnx" "${COMMON[@]}" --output "$OUT/rs-$S.jsonl"
done
# DRS with models trained on sub-images (plugin, sigma and -o resize none from their metadata)
for S in 0.25 0.5; do
    certify "models/fmnist-drs-$S.onnx" "${COMMON[@]}" --output "$OUT/drs-$S.jsonl"
done
# DRS on the RS models as they are: full-resolution models, sub-images resized back (the
# paper's set-up for pre-trained models, without fine-tuning)
for S in 0.25 0.5; do
    certify --plugin drs --sigma "$S" -o resize bilinear "models/fmnist-rs-$S.onnx" "${COMMON[@]}" \
        --output "$OUT/drs-$S-bilinear-on-rs-model.jsonl"
done

python benchmarks/drs_tables.py "$OUT" | tee "$OUT/tables.md"
