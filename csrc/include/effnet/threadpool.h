// A small thread pool of our own (no OpenMP: torch ships its own runtime and two in one process
// fight). The calling thread takes part as worker 0. Work is split statically: for T threads, thread
// t runs tasks [t*n/T, (t+1)*n/T), so which thread computes what depends only on (n, T), never on
// timing. Concurrent callers are serialised. Workers spin briefly after a job, then sleep.
#pragma once

#include <cstdint>
#include <functional>

namespace effnet {

// Runs fn(task) for task in [0, num_tasks) on up to num_threads threads (num_threads <= 1: inline).
void parallel_for(int64_t num_tasks, int num_threads, const std::function<void(int64_t)>& fn);

// Number of pool threads alive (for tests / info).
int pool_size();

}  // namespace effnet
