#include "effnet/threadpool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace effnet {
namespace {

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void run(int64_t num_tasks, int num_threads, const std::function<void(int64_t)>& fn) {
    std::lock_guard<std::mutex> serial(run_mu_);  // one job at a time; callers queue here
    ensure_threads(num_threads - 1);
    Job job{&fn, num_tasks, num_threads};
    next_.store(0, std::memory_order_relaxed);
    pending_.store(num_threads - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = nullptr;
      job_ = job;
      ++generation_;
      gen_atomic_.store(generation_, std::memory_order_release);
    }
    cv_.notify_all();
    run_share(job, 0);
    // Wait for the helpers (they finish quickly; spin, then yield).
    while (pending_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    std::exception_ptr error;
    {
      std::lock_guard<std::mutex> lock(mu_);
      error = error_;
    }
    if (error) std::rethrow_exception(error);
  }

  int size() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(threads_.size());
  }

 private:
  struct Job {
    const std::function<void(int64_t)>* fn = nullptr;
    int64_t num_tasks = 0;
    int threads = 1;
  };

  // Threads take tasks one at a time from a shared counter: a thread slowed by a busy neighbour (these
  // are shared machines) takes fewer. Which thread runs a task never changes what the task computes, so
  // results stay deterministic.
  void run_share(const Job& job, int /*t*/) {
    try {
      for (int64_t i = next_.fetch_add(1, std::memory_order_relaxed); i < job.num_tasks;
           i = next_.fetch_add(1, std::memory_order_relaxed))
        (*job.fn)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
  }

  void ensure_threads(int helpers) {
    std::lock_guard<std::mutex> lock(mu_);
    while (static_cast<int>(threads_.size()) < helpers) {
      const int id = static_cast<int>(threads_.size()) + 1;
      // The worker starts from the generation current *now*, before run() announces the job: a
      // thread that read generation_ only once it was running could miss that announcement.
      const uint64_t start = generation_;
      threads_.emplace_back([this, id, start] { worker(id, start); });
    }
  }

  void worker(int id, uint64_t seen) {
    for (;;) {
      // Spin for a short while: EfficientNet calls kernels back to back, and a sleeping thread
      // takes tens of microseconds to wake.
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      while (gen_atomic_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until) {
      }
      Job job;
      {
        // Generation and job are read together under the lock: a worker that wakes late sees the
        // newest job (and runs it once), never a mix of an old generation and a new job.
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
        job = job_;
      }
      if (id < job.threads) {
        run_share(job, id);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::mutex run_mu_, mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  uint64_t generation_ = 0;
  std::atomic<uint64_t> gen_atomic_{0};
  bool stop_ = false;
  Job job_;
  std::atomic<int> pending_{0};
  std::atomic<int64_t> next_{0};  // the next task to take
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool* p = new Pool();  // leaked on purpose: no joining threads during static destruction
  return *p;
}

}  // namespace

void parallel_for(int64_t num_tasks, int num_threads, const std::function<void(int64_t)>& fn) {
  if (num_tasks <= 0) return;
  if (num_threads > num_tasks) num_threads = static_cast<int>(num_tasks);
  if (num_threads <= 1) {
    for (int64_t i = 0; i < num_tasks; ++i) fn(i);
    return;
  }
  pool().run(num_tasks, num_threads, fn);
}

int pool_size() { return pool().size(); }

}  // namespace effnet
