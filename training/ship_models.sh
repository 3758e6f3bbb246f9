#!/usr/bin/env bash
# Trains the four shipped feedforward models, one after another, with the exact settings
# recorded in each model's metadata. Usage: training/ship_models.sh DATA_DIR STYLES_DIR OUT_DIR
# (DATA_DIR: a folder of videos, e.g. the 60 s Big Buck Bunny clip; STYLES_DIR: the four
# paintings). Re-running resumes a model whose checkpoint exists and skips finished ones.
set -euo pipefail
data=${1:?DATA_DIR}; styles=${2:?STYLES_DIR}; out=${3:?OUT_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
steps=${STEPS:-1500}
mkdir -p "$out"
for pair in starry_night:van_gogh_starry_night scream:munch_the_scream shipwreck:turner_the_shipwreck \
            woman_with_a_hat:matisse_woman_with_a_hat; do
  name=${pair%%:*}; painting=${pair#*:}
  [ -f "$out/$name.safetensors" ] && { echo "$name: done"; continue; }
  resume=(); [ -f "$out/$name.ckpt" ] && resume=(--resume)
  python -m training.train --style "$styles/$painting.jpg" --data "$data" \
    --data "$here/samples/astronaut_512x384.jpg" --data "$here/samples/chelsea_451x300.jpg" \
    --out "$out/$name.safetensors" --steps "$steps" --size 192 --batch-size 2 \
    --checkpoint-every 100 --preview-every 250 --log-every 25 --cache-dir "$out/flowcache" "${resume[@]}"
done
