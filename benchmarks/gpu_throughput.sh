#!/usr/bin/env bash
# Throughput on one GPU for every image task, in one go (about 4-5 minutes on an H200):
#   (d) end-to-end epochs, project (decode-once store + Lightning) vs a plain in-memory loop, per case;
#   (b) steps/s of the project's Trainer vs a raw loop on batches already on the GPU (the compute limit).
# Usage: benchmarks/gpu_throughput.sh [DATA_DIR]   (default ../shared/data; results in benchmarks/results/)
# The first epoch of each (d) run builds the store under $LESSON3_CACHE/store (not counted).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
PY=${PY:-.venv/bin/python}
export WANDB_MODE=offline HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
export LESSON3_CACHE=${LESSON3_CACHE:-/tmp/lesson3-gpu-cache}
export THROUGHPUT_DATA=$DATA
test -d "$DATA" || { echo "error: $DATA: no data folder (give the folder holding planet_sample_200, camvid_segnet_trainval, biwi_head_pose_10)"; exit 1; }
timeout 240 "$PY" benchmarks/throughput.py --epoch_vs_plain --device cuda --epochs 5 --repeats 1 \
    --cases planet-128 planet-256 camvid-192x256 camvid-360x480 biwi-240x320 --note "one GPU, $(date -u +%FT%TZ)" \
    --out benchmarks/results/throughput-epoch-vs-plain-cuda.json || echo "((d) not finished in 240 s)"
for spec in "planet planet_sample_200" "camvid camvid_segnet_trainval" "biwi biwi_head_pose_10"; do
    set -- $spec
    timeout 60 "$PY" benchmarks/throughput.py --task "$1" --device cuda --steps 50 --warmup 10 --pipeline_batches 20 --epoch_batches 30 \
        --out "benchmarks/results/throughput-$1-cuda.json" -- --data.init_args.root "$DATA/$2" || echo "($1: step rates not finished in 60 s)"
done
