#!/usr/bin/env bash
# The GPU check: one command for a GPU machine, under 5 minutes (bare machine: torch 2.11, triton 3.6, timm; no network).
#   bash benchmarks/gpu_check.sh            # from the repository root; results under $OUT (or ./gpu_out)
#   bash benchmarks/gpu_check.sh --dry-run  # no GPU needed: every step's script on the CPU, tiny shapes
#                                           # (Triton's interpreter), the installed package; for CI
# Installs the package (no build isolation, no downloads), runs the CUDA tests (tests/triton on the GPU
# and the registered op's opcheck / torch.compile there), measures the copy bandwidth and benchmarks the
# fused depthwise op against eager and torch.compile (benchmarks/gpu_check.py), then the SE and the SE
# folded into the projection against eager (benchmarks/gpu_check_se.py), then fuse(model)'s correctness on
# CUDA (benchmarks/gpu_check_fuse.py) and its speed (effnet-bench, results in the same format as the CPU
# runs under $OUT/effnet-bench), then the ops past 2^31 elements (tests/test_bigmem.py). Each step has its own
# time limit so the whole check ends in under 5 minutes; the short table is printed last.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
start=$(date +%s)
log() { echo "[gpu_check $(( $(date +%s) - start ))s] $*"; }
if [ "${1:-}" = "--dry-run" ]; then
  # The scripts of every step below, on the CPU: their imports, arguments, measuring loops and tables.
  export TRITON_INTERPRET=1
  cd "$ROOT/benchmarks"
  log "dry run (CPU): depthwise, SE and fused-model scripts with --smoke, effnet-bench on the CPU"
  "$PY" "$ROOT/benchmarks/gpu_check.py" --out "$OUT" --smoke >"$OUT/bench.log" 2>&1; bench_rc=$?
  "$PY" "$ROOT/benchmarks/gpu_check_se.py" --out "$OUT" --smoke >"$OUT/bench_se.log" 2>&1; se_rc=$?
  "$PY" "$ROOT/benchmarks/gpu_check_fuse.py" --out "$OUT" --smoke >"$OUT/bench_fuse.log" 2>&1; fuse_rc=$?
  "$PY" -m effnet_kernels.bench --device cpu --no-ops --phis 0 --batch 2 --compile-phis none --ort-phis none \
    --rounds 1 --per-round 1 --no-progress --no-plots --out "$OUT/effnet-bench" >"$OUT/effnet_bench.log" 2>&1; e2e_rc=$?
  for f in bench bench_se bench_fuse effnet_bench; do tail -2 "$OUT/$f.log"; done
  log "dry run: bench rc $bench_rc, SE bench rc $se_rc, fuse rc $fuse_rc, effnet-bench rc $e2e_rc"
  exit $(( bench_rc != 0 || se_rc != 0 || fuse_rc != 0 || e2e_rc != 0 ))
fi

log "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
log "install (pip install --no-build-isolation --no-deps .)"
cd "$ROOT"
if ! timeout 120 "$PY" -m pip install --no-build-isolation --no-deps . >"$OUT/install.log" 2>&1; then
  tail -40 "$OUT/install.log"
  log "install FAILED"
  exit 1
fi
# From a folder outside the source tree, so the installed package (with its compiled module) is imported.
cd "$ROOT/benchmarks"
"$PY" -c "import effnet_kernels, json; print(json.dumps(effnet_kernels.info()))" | tee "$OUT/info.json"

log "CUDA tests (tests/triton on the GPU)"
# One kernel config in the tests (EFFNET_TRITON_AUTOTUNE=0): correctness does not depend on the tile, and
# tuning every test shape would spend the call compiling. The benchmark below tunes.
EFFNET_TRITON_AUTOTUNE=0 timeout 100 "$PY" -m pytest -q -x -p no:cacheprovider "$ROOT/tests/triton" \
  >"$OUT/tests.log" 2>&1
tests_rc=$?
tail -5 "$OUT/tests.log"
log "tests exit code $tests_rc"

log "depthwise benchmark (measuring stops after 45 s)"
timeout 60 "$PY" "$ROOT/benchmarks/gpu_check.py" --out "$OUT" --budget-s 45 >"$OUT/bench.log" 2>&1
bench_rc=$?
tail -25 "$OUT/bench.log"
log "squeeze-excitation benchmark (measuring stops after 35 s)"
timeout 50 "$PY" "$ROOT/benchmarks/gpu_check_se.py" --out "$OUT" --budget-s 35 >"$OUT/bench_se.log" 2>&1
se_rc=$?
tail -6 "$OUT/bench_se.log"
log "fused model: correctness in fp32, fp16 and autocast against float64"
timeout 30 "$PY" "$ROOT/benchmarks/gpu_check_fuse.py" --out "$OUT" >"$OUT/bench_fuse.log" 2>&1
fuse_rc=$?
tail -8 "$OUT/bench_fuse.log"
log "effnet-bench end to end (B0, B4, B7; fp16; batch 1 with CUDA graphs and batch 128; nothing new after 35 s)"
# SIGINT on the timeout: effnet-bench writes what it measured before stopping (exit 130: partial, not failed).
timeout -s INT 60 "$PY" -m effnet_kernels.bench --device cuda --no-ops --phis 0 4 7 --batch 128 \
  --compile-phis none --rounds 3 --per-round 5 --time-limit-s 35 --no-progress --out "$OUT/effnet-bench" \
  >"$OUT/effnet_bench.log" 2>&1
e2e_rc=$?
if [ "$e2e_rc" = 130 ]; then log "effnet-bench stopped by its timeout: partial results"; e2e_rc=0; fi
grep -A6 "Batch 1\*\*" "$OUT/effnet_bench.log" | head -8
log "past 2^31 elements on the GPU (tests/test_bigmem.py -k triton: int64 offsets, sampled against float64)"
timeout 45 "$PY" -m pytest -q -x -p no:cacheprovider -m bigmem -k triton "$ROOT/tests/test_bigmem.py" \
  >"$OUT/bigmem.log" 2>&1
bigmem_rc=$?
tail -3 "$OUT/bigmem.log"
if [ "${EFFNET_GPU_PROBE:-0}" != 0 ]; then
  log "probe: launch overhead vs kernel time (benchmarks/gpu_probe.py)"
  timeout 150 "$PY" "$ROOT/benchmarks/gpu_probe.py" --out "$OUT" >"$OUT/probe.log" 2>&1
  tail -12 "$OUT/probe.log"
fi
log "done: tests rc $tests_rc, bench rc $bench_rc, SE bench rc $se_rc, fuse rc $fuse_rc, effnet-bench rc $e2e_rc, bigmem rc $bigmem_rc; tables in $OUT/gpu_dwconv.md, $OUT/gpu_se.md, $OUT/gpu_fuse.md, $OUT/effnet-bench/results.md"
exit $(( tests_rc != 0 || bench_rc != 0 || se_rc != 0 || fuse_rc != 0 || e2e_rc != 0 || bigmem_rc != 0 ))
