#!/usr/bin/env bash
# Quick start 1: set up (.venv, install, build) and run effnet-bench on this device.
#   bash scripts/bench.sh --quick            # every phi, eager vs fused (+ ONNX Runtime, torch.compile at B0), ~2 min
#   bash scripts/bench.sh fit --latency-ms 20
# Arguments go to `effnet-bench` (python -m effnet_kernels.bench); results go to ./effnet-bench-results
# under the repository root unless --out is given.
set -euo pipefail
EFFNET_ENV=${EFFNET_ENV:-run} source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
args=("$@")
case "${1:-}" in
  fit|profile) ;;
  *) if ! printf '%s\n' "$@" | grep -q -- '^--out'; then args+=(--out "$ROOT/effnet-bench-results"); fi ;;
esac
cd "$ROOT/benchmarks"  # not the source tree root: import the installed package
exec "$PY" -m effnet_kernels.bench ${args[@]+"${args[@]}"}
