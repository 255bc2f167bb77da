#!/usr/bin/env bash
# Reproduces docs/results-dssn.md and the numbers in models/dssn.md.
# From the repository root, in an environment with the project and torch installed:
#     bash benchmarks/dssn_evidence.sh [train] [bruteforce] [certify] [timing] [cards]
# (no argument: all but train). Results go to runs/ (git-ignored). On 2 busy cores,
# training takes hours per model and the uniform runs about an hour per noise level.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data/fashion_mnist.npz
CLASSES="T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
SIGMAS="1.0 2.5"
STEPS=${*:-bruteforce certify timing cards}
# one onnxruntime / torch thread per process: the runs in docs/results-dssn.md shared 2 cores
# with other jobs (threads change the time, not the results)
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS
mkdir -p runs

for step in $STEPS; do
case $step in
train)
    # the bundled DSSN models and the uniform-noise models they are compared with
    for s in $SIGMAS; do
        for plugin in dssn uniform; do
            certify train --plugin $plugin --sigma $s --data $DATA --epochs 15 --classes "$CLASSES" \
                --dataset-name fashion-mnist --out models/fmnist-$plugin-$s.onnx
        done
    done
    ;;
bruteforce)
    # every input on the 1/q grid of 2-4 pixels, every perturbation within the radius
    python benchmarks/dssn_evidence.py bruteforce --json runs/dssn-bruteforce.json | tee runs/dssn-bruteforce.md
    ;;
certify)
    # the first 500 Fashion-MNIST test images; DSSN is exact, uniform at n = 10,000, alpha = 0.001
    for s in $SIGMAS; do
        certify models/fmnist-dssn-$s.onnx --data $DATA --limit 500 -q --output runs/dssn-$s.jsonl --threads $THREADS
        certify --plugin uniform models/fmnist-uniform-$s.onnx --data $DATA --limit 500 -n 10000 --alpha 0.001 \
            -q --output runs/uniform-$s.jsonl --threads $THREADS
    done
    files=""
    for s in $SIGMAS; do files="$files runs/dssn-$s.jsonl runs/uniform-$s.jsonl"; done
    # shellcheck disable=SC2086
    certify report $files --radii 0,0.5,1,2,3,4 | tee runs/dssn-report.txt
    # shellcheck disable=SC2086
    certify report $files --radii 0,0.5,1,2,3,4 --json > runs/dssn-report.json
    ;;
timing)
    # seconds per input, DSSN vs SSN vs uniform at n = 100,000, same model, interleaved in one process
    for s in $SIGMAS; do
        python benchmarks/dssn_evidence.py timing models/fmnist-dssn-$s.onnx --inputs 5 -n 100000 \
            --threads $THREADS --json runs/dssn-timing-$s.json | tee runs/dssn-timing-$s.md
    done
    ;;
cards)
    # shellcheck disable=SC2046
    python benchmarks/dssn_evidence.py card $(for s in $SIGMAS; do echo models/fmnist-dssn-$s.onnx models/fmnist-uniform-$s.onnx; done) \
        | tee runs/dssn-cards.txt
    ;;
*)
    echo "unknown step $step (train, bruteforce, certify, timing, cards)" >&2; exit 1 ;;
esac
done
