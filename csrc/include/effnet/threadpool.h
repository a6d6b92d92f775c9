// A small thread pool of our own (no OpenMP: torch ships its own runtime and two in one process
// fight). The calling thread takes part as worker 0. Threads take tasks from a shared counter, so a
// thread slowed by a busy neighbour takes fewer; callers must make each task's result independent of
// the thread that runs it (every kernel here does: tasks write disjoint outputs and per-task partial
// sums reduced in a fixed order), which keeps results deterministic for a given split. Concurrent
// callers are serialised. Workers spin briefly after a job, then sleep.
#pragma once

#include <cstdint>
#include <functional>

namespace effnet {

// Runs fn(task) for task in [0, num_tasks) on up to num_threads threads (num_threads <= 1: inline).
void parallel_for(int64_t num_tasks, int num_threads, const std::function<void(int64_t)>& fn);

// Number of pool threads alive (for tests / info).
int pool_size();

}  // namespace effnet
