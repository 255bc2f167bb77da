#!/usr/bin/env bash
# Train the bundled PPRS models with the same recipe as the bundled RS models
# (15 epochs, width 16, batch 128, lr 0.05, seed 0). Run from the repository root.
# Usage: benchmarks/pprs_train.sh "slic:0.25 slic:0.5 grid:0.25 ..."
set -euo pipefail
DATA=${DATA:-../shared/data/fashion_mnist.npz}
CLASSES="T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
mkdir -p runs
for item in ${1:-slic:0.25 slic:0.5}; do
    method=${item%%:*}; sigma=${item##*:}
    out=models/fmnist-pprs-$method-$sigma.onnx
    [ -f "$out" ] && { echo "skip $out"; continue; }
    certify train --plugin pprs --sigma "$sigma" -o method "$method" --data "$DATA" --epochs 15 \
        --classes "$CLASSES" --dataset-name fashion-mnist --out "$out" 2>&1 | tee "runs/train-$method-$sigma.log"
done
