# Sourced by scripts/bench.sh and scripts/test.sh: creates the virtual environment (.venv, or
# $EFFNET_VENV), installs the pinned dependencies once, then builds and installs this package
# (pip install ., which compiles effnet_kernels._C through CMake + Ninja).
#   EFFNET_ENV=dev|run   dev (default for tests) also installs torchvision, timm, pytest, ...
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${EFFNET_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[effnet] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if [ "${EFFNET_ENV:-dev}" = dev ]; then reqs=("-r" "$ROOT/requirements-dev.txt"); else reqs=($(grep -E '^(torch|torchvision|timm|efficientnet_pytorch|numpy|matplotlib|onnxruntime|onnx)==' "$ROOT/requirements-dev.txt")); fi
stamp="$VENV/.effnet-deps-$(cat "$ROOT/requirements-dev.txt" | sha1sum | cut -c1-12)-${EFFNET_ENV:-dev}"
if [ ! -f "$stamp" ]; then
  echo "[effnet] installing dependencies (${EFFNET_ENV:-dev}) into $VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "${reqs[@]}"
  touch "$stamp"
fi
echo "[effnet] building and installing effnet_kernels (pip install .)"
t0=$(date +%s)
"$PY" -m pip install -q "$ROOT"
echo "[effnet] build + install took $(( $(date +%s) - t0 )) s"
