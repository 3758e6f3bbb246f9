#!/usr/bin/env bash
# Create (or reuse) a virtual environment with stylecore and what it needs.
# usage: scripts/setup_env.sh VENV_DIR [extra pip requirements...]
# torch==2.13.0 is pinned first so that pip never swaps in another build: on a Linux
# machine with CUDA it is the CUDA wheel, on a CPU-only machine the CPU wheel.
set -euo pipefail
venv=${1:?usage: setup_env.sh VENV_DIR [requirements...]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip_q() { "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v '^WARNING: Location' || true; }
"$venv/bin/python" -c 'import torch' 2>/dev/null || pip_q "torch==2.13.0"
pip_q -e "$root" "$@"
"$venv/bin/python" -c 'import stylecore, torch, cv2' >/dev/null
