#!/usr/bin/env bash
# Quick start 1: set up (.venv, install, build) and run the main benchmark on this device.
# Arguments go to `python -m effnet_kernels.bench` (e.g. --phis 0 1 2 --repeats 10 --out DIR).
set -euo pipefail
EFFNET_ENV=${EFFNET_ENV:-run} source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT/benchmarks"  # not the source tree root: import the installed package
exec "$PY" -m effnet_kernels.bench "$@"
