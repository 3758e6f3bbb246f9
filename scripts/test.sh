#!/usr/bin/env bash
# Install everything the tests need and run them: the engine and the add-on with
# bpy 4.5 LTS (one venv with torch), then the add-on tests again with bpy 5.0 (a venv
# without torch, whose worker runs in the first venv: the product's own layout).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${VENV:-.venv}
venv5=${VENV_BPY5:-.venv-bpy5}
scripts/setup_env.sh "$venv" "pytest>=7" "bpy==4.5.*" "numpy<2" "onnx" "onnxscript" "onnxruntime"
if [ ! -x "$venv5/bin/python" ]; then python3 -m venv "$venv5"; fi
"$venv5/bin/python" -m pip install -q --disable-pip-version-check "bpy==5.0.*" "pytest>=7" 2>&1 \
  | grep -v '^WARNING: Location' || true
export STYLECORE_WORKER_PYTHON="$root/$venv/bin/python"
export STYLECORE_OFFLINE=1
"$venv/bin/python" -m pytest -q "$@"
echo "--- add-on tests with bpy 5.0"
"$venv5/bin/python" -m pytest -q tests/test_blender_*.py "$@"
