#!/bin/sh
# Sequential certification against fixed n = 100,000 through `certify` itself, on the bundled
# Fashion-MNIST models (docs/results-sequential.md). Every run writes runs/sequential/NAME.jsonl;
# a rerun resumes each file, so an interrupted or finished run costs nothing more.
#
#     sh benchmarks/sequential_evidence.sh              # all runs (hours at fixed n: run it in the background)
#     sh benchmarks/sequential_evidence.sh sequential   # only the sequential runs (or: fixed)
#     python benchmarks/sequential_tables.py            # the tables, from the files
#
# On a shared machine set LOCK to a lock file: each certify run then takes it for itself
# (flock), so other jobs get the CPU between runs.
#
# Fixed n costs 100,100 forward passes per input (200,200 for drs, two sides): about 2 s per
# input on a quiet 2-core machine, 20 minutes per 500 images; drs (fixed n) and the two-bound
# radius run on the first 100 images (raise --limit: the files resume).
set -e
cd "$(dirname "$0")/.."
OUT=runs/sequential
DATA=../shared/data/fashion_mnist.npz
COMMON="--data $DATA --split test --n0 100 -n 100000 --alpha 0.001 --seed 0 -q"
PART=${1:-all}
mkdir -p "$OUT"

run() {  # run NAME certify-arguments...
    name=$1
    shift
    if [ -n "$LOCK" ]; then
        flock "$LOCK" nice -n 10 certify "$@" --output "$OUT/$name.jsonl"
    else
        nice -n 10 certify "$@" --output "$OUT/$name.jsonl"
    fi
}

# the headline first: fixed n against sequential on the two RS models
for model in rs-0.25 rs-0.5; do
    [ "$PART" = sequential ] || run fixed-$model models/fmnist-$model.onnx $COMMON --limit 500
    [ "$PART" = fixed ] || run seq-$model models/fmnist-$model.onnx $COMMON --limit 500 --sampling sequential
done

if [ "$PART" != fixed ]; then
    for radius in 0.25 0.5 0.75; do
        run radius-rs-0.25-$radius models/fmnist-rs-0.25-gaussian.onnx $COMMON --limit 500 --radius $radius
    done
    for radius in 0.25 0.5 1.0 1.5; do
        run radius-rs-0.5-$radius models/fmnist-rs-0.5-gaussian.onnx $COMMON --limit 500 --radius $radius
    done
    run seq-drs-0.25 models/fmnist-drs-0.25.onnx $COMMON --limit 200 --sampling sequential
    for model in rs-0.5 rs-0.25; do
        run seq-two-$model models/fmnist-$model.onnx $COMMON --limit 100 --sampling sequential -o bounds two
    done
fi

if [ "$PART" != sequential ]; then
    run fixed-drs-0.25 models/fmnist-drs-0.25.onnx $COMMON --limit 100
    for model in rs-0.5 rs-0.25; do
        run fixed-two-$model models/fmnist-$model.onnx $COMMON --limit 100 -o bounds two
    done
fi
