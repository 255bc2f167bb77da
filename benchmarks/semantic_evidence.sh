#!/usr/bin/env bash
# Reproduces the models in models/semantic.md and the figures in docs/results-semantic.md.
# From the repository root, in an environment with the project and torch installed:
#     bash benchmarks/semantic_evidence.sh [train] [certify] [tables] [speed] [show]
# (no argument: certify tables speed show; certify is certify-brightness certify-contrast certify-gamma
# certify-translation). Results go to runs/ (git-ignored) and resume when a run is interrupted. On 2
# busy cores, training takes about half an hour per model, a randomized certify run of 500 images about
# ten minutes of a core, a translation run seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data/fashion_mnist.npz
CLASSES="T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
SIGMA=0.25   # brightness: sigma_b of the bundled model, in pixel units
K=3          # translation: shifts of up to 3 pixels on each axis, 49 views
# The plain classifier compared against: the bundled models/fmnist-plain.onnx (same network and
# recipe, clean images only; no smoothing metadata, so every run names --plugin and --sigma).
PLAIN=${PLAIN:-models/fmnist-plain.onnx}
# On a shared machine every certify run (and training) waits for this lock, one run per hold;
# LOCK= (empty) runs without it.
LOCK=${LOCK-/work/tools/heavy.lock}
N=10000       # samples per input for the randomized methods (n0 = 100), alpha = 0.001
LIMIT=500     # the first 500 test images
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS
STEPS=${*:-certify tables speed show}
mkdir -p runs

heavy() {  # heavy COMMAND...: run it niced, holding $LOCK (if set) for this one command only
    if [ -n "$LOCK" ]; then flock "$LOCK" nice -n 10 "$@"; else nice -n 10 "$@"; fi
}

run() {  # run NAME [certify options] MODEL: certify the first $LIMIT test images into runs/semantic-NAME.jsonl
    heavy certify "${@:2}" --data $DATA --limit $LIMIT -q --threads $THREADS --output "runs/semantic-$1.jsonl"
}

train() {  # train PLUGIN OUT [certify train options]
    local out=$2
    heavy certify train --plugin "$1" "${@:3}" --data $DATA --epochs 15 --classes "$CLASSES" \
        --dataset-name fashion-mnist --out "$out"
}

for step in $STEPS; do
case $step in
train)
    train brightness models/fmnist-brightness-$SIGMA.onnx --sigma $SIGMA
    train translation models/fmnist-translation-$K.onnx -o k $K
    ;;
certify)
    bash benchmarks/semantic_evidence.sh certify-brightness certify-contrast certify-gamma certify-translation
    ;;
certify-brightness)
    # the model trained on brightness views, the plain one (also at a smaller sigma, its best
    # chance), and the Gaussian-noise one: NAME:MODEL:SIGMA
    for spec in brightness-$SIGMA:models/fmnist-brightness-$SIGMA.onnx:$SIGMA plain:$PLAIN:$SIGMA \
                plain-sigma0.1:$PLAIN:0.1 rs:models/fmnist-rs-0.25-gaussian.onnx:$SIGMA; do
        IFS=: read -r name model sigma <<< "$spec"
        run "brightness-$name" --plugin brightness --sigma "$sigma" -n $N --alpha 0.001 "$model"
    done
    ;;
certify-contrast | certify-gamma)
    # no model was trained for contrast or gamma: the brightness one and the plain one
    plugin=${step#certify-}
    for spec in brightness-$SIGMA:models/fmnist-brightness-$SIGMA.onnx plain:$PLAIN; do
        IFS=: read -r name model <<< "$spec"
        run "$plugin-$name" --plugin "$plugin" --sigma $SIGMA -n $N --alpha 0.001 "$model"
    done
    ;;
certify-translation)
    # exact, 49 views: the model trained on shifted views against the plain, rs and brightness ones
    for spec in translation-$K:models/fmnist-translation-$K.onnx plain:$PLAIN rs:models/fmnist-rs-0.25-gaussian.onnx \
                brightness-$SIGMA:models/fmnist-brightness-$SIGMA.onnx; do
        IFS=: read -r name model <<< "$spec"
        run "translation-$name" --plugin translation -o k $K "$model"
    done
    ;;
tables)
    # certify report groups the runs by threat model and shows radii in its units
    certify report runs/semantic-*.jsonl | tee runs/semantic-report.txt
    certify report runs/semantic-*.jsonl --json > runs/semantic-report.json
    # (it runs the models on a few hundred thousand views: a heavy run too)
    heavy python benchmarks/semantic_tables.py --plain "$PLAIN" > runs/semantic-tables.md
    cat runs/semantic-tables.md
    ;;
speed)
    # time per forward pass of each plugin against rs and bare onnxruntime, one process
    heavy python benchmarks/semantic_speed.py | tee runs/semantic-speed.txt
    ;;
show)
    # pictures of the views for the README and docs
    certify show --plugin brightness --sigma $SIGMA $DATA --index 0 --samples 3 --out docs/show-brightness.png
    certify show --plugin contrast --sigma $SIGMA $DATA --index 0 --samples 3 --out docs/show-contrast.png
    certify show --plugin gamma --sigma $SIGMA $DATA --index 0 --samples 3 --out docs/show-gamma.png
    certify show --plugin translation -o k $K $DATA --index 0 --samples 3 --out docs/show-translation.png
    ;;
*)
    echo "unknown step $step (train, certify[-brightness|-contrast|-gamma|-translation], tables, speed, show)" >&2
    exit 1 ;;
esac
done
