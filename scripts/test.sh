#!/usr/bin/env bash
# Quick start 2: set up (.venv, install, build) and run the whole test suite:
#   pytest (tests/), the C++ tests natively (ctest), again built with ASan + UBSan, and the aarch64 build
#   of the C++ core and tests under qemu-aarch64 (ctest with CMAKE_CROSSCOMPILING_EMULATOR).
# Tools that are missing are installed with apt-get when running as root; otherwise their tests skip
# with a visible reason — unless EFFNET_REQUIRE_ALL=1 (as in CI), which turns every skip into a failure.
# Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
require_all=${EFFNET_REQUIRE_ALL:-0}
status=0
t_start=$(date +%s)

skip() {  # reason
  if [ "$require_all" != 0 ]; then echo "[effnet] FAIL (EFFNET_REQUIRE_ALL=1): $1"; status=1; else echo "[effnet] SKIP: $1"; fi
}

# The aarch64 cross toolchain and qemu (Debian packages).
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[effnet] installing g++-aarch64-linux-gnu and qemu-user with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null
  fi
fi

interp_pid=""
interp_log="$ROOT/build/interpreter_tests.log"
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  # No GPU: the Triton kernels on CPU tensors through Triton's interpreter, in their own process (the
  # variable is read when the kernels are decorated). With a GPU the pytest run below covers tests/triton.
  # It runs in the background from here, beside the pytest run below and then the C++ stages: it is one
  # Python thread, and the pytest run keeps about 1.4 of the 2 cores busy (measured: 376 CPU-s in 265 s),
  # so it fills the idle share instead of competing with the C++ compiles; its log is printed when it ends.
  echo "[effnet] pytest tests/triton under TRITON_INTERPRET=1 (in the background; log below when done)"
  mkdir -p "$ROOT/build"
  TRITON_INTERPRET=1 "$VENV/bin/pytest" tests/triton -p no:cacheprovider --durations=10 "$@" >"$interp_log" 2>&1 &
  interp_pid=$!
  trap 'kill "$interp_pid" 2>/dev/null || true' EXIT  # (a stage failing under set -e must not leave it running)
fi

echo "[effnet] pytest"
t0=$(date +%s)
# Run from tests/'s parent with the venv's pytest (no cwd on sys.path): the *installed* package is tested.
"$VENV/bin/pytest" tests --durations=25 "$@" || status=1
echo "[effnet] pytest took $(( $(date +%s) - t0 )) s"

# The benchmark suite and the GPU check script must not break unnoticed: each pytest-benchmark test once at
# its first (smallest) parameter, timing off; the GPU check's scripts on the CPU (--dry-run).
echo "[effnet] benchmarks/ smoke run and the GPU check's --dry-run"
t0=$(date +%s)
(cd "$ROOT/benchmarks" && "$VENV/bin/pytest" . -q -p no:cacheprovider --benchmark-disable --smoke) || status=1
OUT="$ROOT/build/gpu_check_dry_run" PYTHON="$VENV/bin/python" bash "$ROOT/benchmarks/gpu_check.sh" --dry-run || status=1
echo "[effnet] benchmark smoke + GPU check dry run took $(( $(date +%s) - t0 )) s"

cmake_bin="$VENV/bin/cmake"; ninja_bin="$VENV/bin/ninja"
echo "[effnet] C++ tests (native)"
t0=$(date +%s)
"$cmake_bin" -S . -B build/native -G Ninja -DCMAKE_MAKE_PROGRAM="$ninja_bin" -DEFFNET_BUILD_PYTHON=OFF >/dev/null
"$cmake_bin" --build build/native
"$VENV/bin/ctest" --test-dir build/native --output-on-failure -j "$(nproc)" || status=1
echo "[effnet] native C++ build + tests took $(( $(date +%s) - t0 )) s"

echo "[effnet] C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer (EFFNET_SANITIZE=ON)"
t0=$(date +%s)
# -O1 -g, ASan's recommended level: half the compile time of -O2 (measured 24 s vs 50 s here) for 2x the test
# time (14 s vs 7 s).
"$cmake_bin" -S . -B build/sanitize -G Ninja -DCMAKE_MAKE_PROGRAM="$ninja_bin" -DEFFNET_BUILD_PYTHON=OFF \
  -DEFFNET_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" >/dev/null
"$cmake_bin" --build build/sanitize
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  "$VENV/bin/ctest" --test-dir build/sanitize --output-on-failure -j "$(nproc)" || status=1
echo "[effnet] sanitizer C++ build + tests took $(( $(date +%s) - t0 )) s"

if command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null; then
  echo "[effnet] C++ tests (aarch64 cross build, run under qemu-aarch64)"
  t0=$(date +%s)
  "$cmake_bin" -S . -B build/aarch64 -G Ninja -DCMAKE_MAKE_PROGRAM="$ninja_bin" \
    -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/aarch64-linux-gnu.cmake" >/dev/null
  "$cmake_bin" --build build/aarch64
  "$VENV/bin/ctest" --test-dir build/aarch64 --output-on-failure -j "$(nproc)" || status=1
  echo "[effnet] aarch64 C++ build + tests took $(( $(date +%s) - t0 )) s"
else
  skip "aarch64 C++ tests: aarch64-linux-gnu-g++ or qemu-aarch64 not found (apt-get install g++-aarch64-linux-gnu qemu-user)"
fi

if [ -n "$interp_pid" ]; then
  interp_status=0
  wait "$interp_pid" || interp_status=$?
  echo "[effnet] the interpreter tests' log:"
  cat "$interp_log"
  [ "$interp_status" = 0 ] || status=1
  echo "[effnet] interpreter tests: status $interp_status (their own time: the log's last line; they ran alongside pytest and the stages above)"
fi

echo "[effnet] all tests took $(( $(date +%s) - t_start )) s; status $status"
exit $status
