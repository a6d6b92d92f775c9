#!/usr/bin/env bash
# The Python extension under AddressSanitizer + UndefinedBehaviorSanitizer: builds effnet_kernels with
# EFFNET_SANITIZE=ON into build/sanitize-py (not the venv's copy), then runs the op tests (or the pytest
# arguments given) with the sanitizer runtimes preloaded into Python. Leak checking is off: CPython and torch
# keep allocations alive until exit by design. Any ASan or UBSan report aborts the test process.
#   bash scripts/sanitize.sh                          # op, GEMM, fuse and fuzz tests
#   bash scripts/sanitize.sh tests/test_fuzz.py -k se # any pytest arguments
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
target="$ROOT/build/sanitize-py"
echo "[effnet] building the sanitized extension into $target"
rm -rf "$target"
EFFNET_CMAKE_ARGS="-DEFFNET_SANITIZE=ON" EFFNET_BUILD_TYPE=RelWithDebInfo \
  "$PY" -m pip install -q --no-deps --no-build-isolation --target "$target" "$ROOT"
preload="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
tests=("$@")
if [ ${#tests[@]} = 0 ]; then
  tests=(tests/test_dwconv_ops.py tests/test_se_ops.py tests/test_gemm.py tests/test_fuse.py tests/test_fuzz.py
         tests/test_threads.py tests/test_special_values.py)
fi
echo "[effnet] pytest ${tests[*]} with $preload"
# (PYTHONPATH puts the sanitized copy ahead of the venv's: the tests import it)
PYTHONPATH="$target" LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$VENV/bin/pytest" -p no:cacheprovider "${tests[@]}"
