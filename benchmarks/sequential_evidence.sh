#!/bin/sh
# Sequential certification against fixed n = 100,000 through `certify` itself, on the bundled
# Fashion-MNIST models (docs/results-sequential.md). Every run writes runs/sequential/NAME.jsonl;
# a rerun resumes each file, so an interrupted or finished run costs nothing more.
#
#     sh benchmarks/sequential_evidence.sh              # all runs (hours at fixed n: run it in the background)
#     sh benchmarks/sequential_evidence.sh sequential   # only the sequential runs (or: fixed)
#     python benchmarks/sequential_tables.py            # the tables, from the files
#
# Fixed n costs 100,100 forward passes per input (200,200 for drs, two sides): about 2 s per
# input on a quiet 2-core machine, 20 minutes per 500 images; drs runs on the first 200.
set -e
cd "$(dirname "$0")/.."
OUT=runs/sequential
DATA=../shared/data/fashion_mnist.npz
COMMON="--data $DATA --split test --n0 100 -n 100000 --alpha 0.001 --seed 0 -q"
RUN="nice -n 10 certify"
PART=${1:-all}
mkdir -p "$OUT"

if [ "$PART" != fixed ]; then
for model in rs-0.25 rs-0.5; do
    $RUN models/fmnist-$model.onnx $COMMON --limit 500 --sampling sequential --output $OUT/seq-$model.jsonl
done
for radius in 0.25 0.5 0.75; do
    $RUN models/fmnist-rs-0.25.onnx $COMMON --limit 500 --radius $radius --output $OUT/radius-rs-0.25-$radius.jsonl
done
for radius in 0.25 0.5 1.0 1.5; do
    $RUN models/fmnist-rs-0.5.onnx $COMMON --limit 500 --radius $radius --output $OUT/radius-rs-0.5-$radius.jsonl
done
$RUN models/fmnist-drs-0.25.onnx $COMMON --limit 200 --sampling sequential --output $OUT/seq-drs-0.25.jsonl
for model in rs-0.5 rs-0.25; do
    $RUN models/fmnist-$model.onnx $COMMON --limit 500 --sampling sequential -o bounds two \
        --output $OUT/seq-two-$model.jsonl
done
fi

# fixed n: the long part
if [ "$PART" != sequential ]; then
for model in rs-0.25 rs-0.5; do
    $RUN models/fmnist-$model.onnx $COMMON --limit 500 --output $OUT/fixed-$model.jsonl
done
$RUN models/fmnist-drs-0.25.onnx $COMMON --limit 200 --output $OUT/fixed-drs-0.25.jsonl
for model in rs-0.5 rs-0.25; do
    $RUN models/fmnist-$model.onnx $COMMON --limit 200 -o bounds two --output $OUT/fixed-two-$model.jsonl
done
fi
