// A small thread pool of our own (by default; parallel_for can run on torch's OpenMP runtime instead, below:
// two thread teams on the same cores fight). The calling thread takes part as worker 0. Threads take tasks
// from a shared counter, so a thread slowed by a busy neighbour takes fewer; callers must make each task's
// result independent of the thread that runs it (every kernel here does: tasks write disjoint outputs and
// per-task partial sums reduced in a fixed order), which keeps results deterministic for a given split.
// Concurrent callers are serialised. Workers spin briefly after a job, then sleep.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace effnet {

// Runs fn(task) for task in [0, num_tasks) on up to num_threads threads (num_threads <= 1: inline).
void parallel_for(int64_t num_tasks, int num_threads, const std::function<void(int64_t)>& fn);

// Run parallel_for on an OpenMP runtime already loaded in the process (its shared library's path, e.g.
// torch's libgomp) instead of our pool: its GOMP_parallel, on the threads torch's own ops use. Two
// thread teams on the same cores fight: torch's OpenMP workers spin after each op (libgomp's default),
// taking cores from our kernels that follow, and ours would take them from torch's GEMMs. "" goes back
// to our pool. Returns false (and why) when the library is not loaded or has no GOMP_parallel.
bool set_openmp_runtime(const char* library, std::string* why = nullptr);
const char* parallel_backend();  // "openmp" or "pool"

// Number of pool threads alive (for tests / info).
int pool_size();

// How long (microseconds) an idle worker busy-waits for the next job before sleeping. Waking a sleeping
// thread costs ~10 us per call here; spinning costs a core: when torch runs its own multi-threaded op (a
// GEMM) next, a spinning worker takes a core from it. Measured on 2 cores (B0's 16 fused blocks, one
// process, spins alternated): 200 us of spin made the blocks ~30 % slower than 0 or 20 us; 20 us keeps
// back-to-back kernel calls on awake workers. EFFNET_POOL_SPIN_US overrides it at start-up.
constexpr int kDefaultSpinUs = 20;
void set_pool_spin_us(int us);
int pool_spin_us();

}  // namespace effnet
