#!/usr/bin/env bash
# Evidence for the pprs plugin (docs/results-pprs.md). Run from the repository root,
# after benchmarks/pprs_train.sh. Every run writes a resumable results file in runs/;
# rerunning the script skips finished inputs.
#
#   benchmarks/pprs_evidence.sh rs        # RS baselines at sigma 0.25 and 0.5
#   benchmarks/pprs_evidence.sh pprs      # PPRS, every partition method, on the bundled models
#   benchmarks/pprs_evidence.sh conditional  # the paper's clean-partition reading (rho = 0), CONDITIONAL
#   benchmarks/pprs_evidence.sh report    # the tables
#
# RS_MODELS points at the bundled RS models (models/ once merged from main).
set -euo pipefail
DATA=${DATA:-../shared/data/fashion_mnist.npz}
RS_MODELS=${RS_MODELS:-models}
N=${N:-10000}
LIMIT=${LIMIT:-500}
SIGMAS=${SIGMAS:-0.25 0.5}
METHODS=${METHODS:-slic grid felzenszwalb quickshift}
# one onnxruntime thread: on a shared 2-core machine two spinning threads run slower than one
COMMON=(--data "$DATA" --split test --limit "$LIMIT" -n "$N" --n0 100 --alpha 0.001 --threads 1 -q)
mkdir -p runs

case ${1:-all} in
rs|all)
    for sigma in $SIGMAS; do
        certify --plugin rs "$RS_MODELS/fmnist-rs-$sigma.onnx" "${COMMON[@]}" --output "runs/pprs-evidence-rs-$sigma.jsonl"
    done ;;&
pprs|all)
    for sigma in $SIGMAS; do
        for method in $METHODS; do
            # a model trained with this partition if there is one, else the SLIC model
            model=models/fmnist-pprs-$method-$sigma.onnx
            [ -f "$model" ] || model=models/fmnist-pprs-slic-$sigma.onnx
            certify --plugin pprs -o method "$method" "$model" "${COMMON[@]}" \
                --output "runs/pprs-evidence-$method-$sigma.jsonl"
        done
    done ;;&
conditional)
    # Not a certificate: the partition of the clean input, radius valid only under an
    # unverified Lipschitz assumption (rho = 0 here, the most favourable reading).
    for sigma in $SIGMAS; do
        certify --plugin pprs -o method slic -o partition-from clean -o rho 0 "models/fmnist-pprs-slic-$sigma.onnx" \
            "${COMMON[@]}" --output "runs/pprs-evidence-slic-clean-$sigma.jsonl"
    done ;;
report|all)
    for sigma in $SIGMAS; do
        files=(runs/pprs-evidence-rs-$sigma.jsonl)
        for method in $METHODS; do files+=("runs/pprs-evidence-$method-$sigma.jsonl"); done
        existing=()
        for f in "${files[@]}"; do [ -f "$f" ] && existing+=("$f"); done
        certify report --radii 0,0.25,0.5,0.75,1.0 "${existing[@]}"
    done ;;
esac
