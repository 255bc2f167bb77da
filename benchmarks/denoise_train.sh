#!/usr/bin/env bash
# Train the bundled plain classifier and its denoisers, exactly as bundled. Run from the
# repository root with the project's venv active (pip install -e '.[denoise]').
#
#   benchmarks/denoise_train.sh            # everything missing
#
# Each command resumes from its checkpoint (OUT.ckpt) when rerun, and skips an output
# that exists. One torch thread per run and two runs side by side, niced: other work
# shares the two cores of the machine this was made on.
set -euo pipefail
DATA=${DATA:-../shared/data/fashion_mnist.npz}
CLASSES="T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p runs

run() {  # run OUT LOG COMMAND...: skip when OUT exists
    local out=$1 log=$2; shift 2
    if [ -f "$out" ]; then echo "skip $out"; return; fi
    echo "::: $*"
    { time nice -n 10 "$@"; } > "runs/$log.log" 2>&1
}

# The plain classifier: the RS models' recipe (15 epochs, width 16, seed 0) without noise.
run models/fmnist-plain.onnx train-plain \
    certify train --no-noise --data "$DATA" --epochs 15 --classes "$CLASSES" \
    --dataset-name fashion-mnist --out models/fmnist-plain.onnx

denoisers() {
    local sigma=$1
    run "models/fmnist-denoiser-mse-$sigma.onnx" "denoiser-mse-$sigma" \
        certify train-denoiser --data "$DATA" --sigma "$sigma" --loss mse --epochs "${MSE_EPOCHS:-8}" \
        --dataset-name fashion-mnist --out "models/fmnist-denoiser-mse-$sigma.onnx"
    run "models/fmnist-denoiser-stab-$sigma.onnx" "denoiser-stab-$sigma" \
        certify train-denoiser --data "$DATA" --sigma "$sigma" --loss mse+stability \
        --classifier models/fmnist-plain.onnx --epochs "${STAB_EPOCHS:-10}" --mse-epochs "${STAB_MSE_EPOCHS:-3}" \
        --stability-lr "${STABILITY_LR:-1e-3}" --dataset-name fashion-mnist \
        --out "models/fmnist-denoiser-stab-$sigma.onnx"
}

# A second plain classifier (other seed and width), not bundled: how much the MSE
# denoisers help a classifier they never saw.
run runs/fmnist-plain-seed1-w24.onnx train-plain-seed1 \
    certify train --no-noise --data "$DATA" --epochs 10 --width 24 --seed 1 --classes "$CLASSES" \
    --dataset-name fashion-mnist --out runs/fmnist-plain-seed1-w24.onnx &
other=$!
denoisers 0.25 &
low=$!
denoisers 0.5 &
high=$!
wait $other && wait $low && wait $high
