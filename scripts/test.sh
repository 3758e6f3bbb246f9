#!/usr/bin/env bash
# Install everything the tests need and run every suite: the engine and the add-on with
# bpy 4.5 LTS (one venv with torch), then the add-on tests again with bpy 5.0 (a venv
# without torch, whose worker runs in the first venv: the product's own layout). Every
# suite runs even when an earlier one failed; the script fails at the end if any did,
# with one summary line per suite.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${VENV:-.venv}
venv5=${VENV_BPY5:-.venv-bpy5}
set -e
scripts/setup_env.sh "$venv" "pytest>=7" "bpy==4.5.*" "numpy<2" "onnx" "onnxscript" "onnxruntime" "ray>=2.9"
if [ ! -x "$venv5/bin/python" ]; then python3 -m venv "$venv5"; fi
echo "[setup] bpy 5.0 environment $venv5"
"$venv5/bin/python" -m pip install --disable-pip-version-check "bpy==5.0.*" "pytest>=7" 2>&1 \
  | grep -v -e '^Requirement already satisfied' -e '^WARNING: Location' -e '^Looking in' || true
set +e
export STYLECORE_WORKER_PYTHON="$root/$venv/bin/python"
export STYLECORE_OFFLINE=1
# The setup installed the HED weights: tests that need them fail rather than skip.
export STYLECORE_TEST_REQUIRE_HED=1

summary=()
failed=0
suite() {
  local name=$1
  shift
  echo "--- $name"
  local started=$SECONDS
  "$@"
  local code=$?
  local verdict=passed
  if [ "$code" -ne 0 ]; then verdict="FAILED (exit $code)"; failed=1; fi
  summary+=("$name: $verdict in $((SECONDS - started)) s")
}
suite "engine + add-on, bpy 4.5" "$venv/bin/python" -m pytest -q "$@"
suite "add-on, bpy 5.0" "$venv5/bin/python" -m pytest -q tests/test_blender_*.py "$@"
echo "--- summary"
printf '%s\n' "${summary[@]}"
exit $failed
