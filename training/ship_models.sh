#!/usr/bin/env bash
# Trains the four shipped feedforward models with the exact settings recorded in each
# model's metadata. Usage: training/ship_models.sh DATA_DIR STYLES_DIR OUT_DIR
# (DATA_DIR: a folder of videos, e.g. the 60 s Big Buck Bunny clip; STYLES_DIR: the four
# paintings). JOBS=4 trains them side by side, one thread each (what was used on this
# project's 2-core CPU); the default trains one after another with all threads.
# Re-running resumes a model whose checkpoint exists and skips finished ones.
# Two stages: STEPS (1000) from scratch without the monotone style-weight term (as the
# first shipped models were trained) into OUT_DIR/stage1/, then 600 steps from that model
# at half the learning rate with the term (--monotone-weight 1) into OUT_DIR; then each
# model's half-width copy, OUT_DIR/NAME-small.safetensors, distilled from it for SMALL_STEPS
# (1500) steps (--teacher, --width 0.5: pixel and feature distance to its output, plus the
# temporal loss).
set -euo pipefail
data=${1:?DATA_DIR}; styles=${2:?STYLES_DIR}; out=${3:?OUT_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
steps=${STEPS:-1000}
small_steps=${SMALL_STEPS:-1500}
jobs=${JOBS:-1}
mkdir -p "$out/stage1"

train_step() {  # OUT_FILE NAME PAINTING [EXTRA TRAINING OPTIONS]
  local file=$1 name=$2 painting=$3 resume=(); shift 3
  [ -f "$file" ] && { echo "$file: done"; return 0; }
  [ -f "${file%.safetensors}.ckpt" ] && resume=(--resume)
  python -m training.train --style "$styles/$painting.jpg" --data "$data" \
    --data "$here/samples/astronaut_512x384.jpg" --data "$here/samples/chelsea_451x300.jpg" \
    --out "$file" --size 192 --batch-size 2 \
    --checkpoint-every 100 --preview-every 250 --log-every 25 --cache-dir "$out/flowcache" "${resume[@]}" "$@" \
    > "${file%.safetensors}.log" 2>&1
}

train_one() {  # NAME PAINTING [EXTRA TRAINING OPTIONS]
  local name=$1 painting=$2; shift 2
  train_step "$out/stage1/$name.safetensors" "$name" "$painting" --steps "$steps" --monotone-weight 0 "$@"
  train_step "$out/$name.safetensors" "$name" "$painting" --init "$out/stage1/$name.safetensors" \
    --steps 600 --lr 5e-4 --monotone-weight 1 "$@"
  train_step "$out/$name-small.safetensors" "$name-small" "$painting" --teacher "$out/$name.safetensors" \
    --width 0.5 --steps "$small_steps"
}

pids=()
# Starry Night's strokes run mostly one way: --style-rotate keeps them from becoming stripes.
for spec in "starry_night:van_gogh_starry_night:--style-rotate" scream:munch_the_scream \
            shipwreck:turner_the_shipwreck woman_with_a_hat:matisse_woman_with_a_hat; do
  IFS=: read -r name painting extra <<< "$spec"
  if [ "$jobs" -gt 1 ]; then
    OMP_NUM_THREADS=1 train_one "$name" "$painting" $extra & pids+=($!)
  else
    train_one "$name" "$painting" $extra
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
