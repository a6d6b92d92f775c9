#include "effnet/threadpool.h"

#include <algorithm>
#include <atomic>
#include <dlfcn.h>
#include <cstdlib>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace effnet {
namespace {

std::atomic<int> g_spin_us{[] {
  const char* env = std::getenv("EFFNET_POOL_SPIN_US");
  return env ? std::max(0, std::atoi(env)) : kDefaultSpinUs;
}()};

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
      // Spin for a short while (g_spin_us, default kDefaultSpinUs: see threadpool.h): kernels called back to
      // back find the worker awake; a sleeping thread takes tens of microseconds to wake.
      const auto spin_until =
          std::chrono::steady_clock::now() + std::chrono::microseconds(g_spin_us.load(std::memory_order_relaxed));
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

// ---------------------------------------------------------------------------------------------
// Torch's OpenMP runtime as the executor (set_openmp_runtime): GOMP_parallel(fn, data, threads, flags) runs
// fn(data) on a team of the calling thread + threads-1 of that runtime's workers, the same threads torch's
// own ops use, so nothing of ours spins against them.

namespace {

using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);
std::atomic<GompParallel> g_gomp_parallel{nullptr};

struct OmpJob {
  OmpJob(const std::function<void(int64_t)>* f, int64_t n) : fn(f), num_tasks(n) {}
  const std::function<void(int64_t)>* fn;
  int64_t num_tasks;
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::exception_ptr error;
};

void omp_trampoline(void* data) {
  OmpJob& job = *static_cast<OmpJob*>(data);
  try {  // an exception must not leave an OpenMP region: kept, rethrown by the caller
    for (int64_t i = job.next.fetch_add(1, std::memory_order_relaxed); i < job.num_tasks;
         i = job.next.fetch_add(1, std::memory_order_relaxed))
      (*job.fn)(i);
  } catch (...) {
    std::lock_guard<std::mutex> lock(job.mu);
    if (!job.error) job.error = std::current_exception();
    job.next.store(job.num_tasks, std::memory_order_relaxed);  // the others stop taking tasks
  }
}

}  // namespace

void parallel_for(int64_t num_tasks, int num_threads, const std::function<void(int64_t)>& fn) {
  if (num_tasks <= 0) return;
  if (num_threads > num_tasks) num_threads = static_cast<int>(num_tasks);
  if (num_threads <= 1) {
    for (int64_t i = 0; i < num_tasks; ++i) fn(i);
    return;
  }
  if (const GompParallel gomp = g_gomp_parallel.load(std::memory_order_acquire)) {
    OmpJob job(&fn, num_tasks);
    gomp(omp_trampoline, &job, static_cast<unsigned>(num_threads), 0u);
    if (job.error) std::rethrow_exception(job.error);
    return;
  }
  pool().run(num_tasks, num_threads, fn);
}

bool set_openmp_runtime(const char* library, std::string* why) {
  if (library == nullptr || *library == '\0') {
    g_gomp_parallel.store(nullptr, std::memory_order_release);
    return true;
  }
  // RTLD_NOLOAD: only a runtime already in the process (torch's); never a second one.
  void* handle = dlopen(library, RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) {
    if (why) *why = std::string("not loaded in this process: ") + library;
    return false;
  }
  void* sym = dlsym(handle, "GOMP_parallel");
  if (sym == nullptr) {
    if (why) *why = std::string("no GOMP_parallel in ") + library;
    return false;
  }
  g_gomp_parallel.store(reinterpret_cast<GompParallel>(sym), std::memory_order_release);
  return true;
}

const char* parallel_backend() { return g_gomp_parallel.load() ? "openmp" : "pool"; }

int pool_size() { return pool().size(); }

}  // namespace effnet

namespace effnet {
void set_pool_spin_us(int us) { g_spin_us.store(std::max(0, us), std::memory_order_relaxed); }
int pool_spin_us() { return g_spin_us.load(std::memory_order_relaxed); }
}  // namespace effnet
