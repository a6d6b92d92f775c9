// Dispatch for squeeze-excitation: layout selection, the split over the thread pool, scalar paths.
#include "effnet/se.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "effnet/threadpool.h"

namespace effnet {
namespace {

struct SeKernels {
  void (*pool_rows)(const float*, int64_t, int64_t, int64_t, double*) = nullptr;
  double (*sum)(const float*, int64_t) = nullptr;
  void (*reduce_rows)(int64_t, int64_t, const float*, const float*, float*, int64_t, int64_t, int64_t) = nullptr;
  void (*expand_rows)(int64_t, int64_t, const float*, const float*, float*, int64_t, int64_t, int64_t, Act) = nullptr;
  void (*scale_rows)(const float*, int64_t, float*, int64_t, int64_t, const float*, int64_t) = nullptr;
  void (*scale_const)(const float*, float*, int64_t, float) = nullptr;
};

#define EFFNET_SE_KERNELS(ns) \
  SeKernels { ns::se_pool_rows, ns::se_sum, ns::se_reduce_rows, ns::se_expand_rows, ns::se_scale_rows, \
              ns::se_scale_const }

SeKernels se_kernels_for(Isa isa) {
  switch (isa) {
#define EFFNET_CASE(name, e, lanes, has) \
    case Isa::e: return EFFNET_SE_KERNELS(name);
    EFFNET_SIMD_ISAS(EFFNET_CASE)
#undef EFFNET_CASE
    default: return {};  // scalar: the loops below
  }
}

void check_isa(Isa isa) {
  if (!isa_supported(isa)) throw std::invalid_argument(std::string("isa ") + isa_name(isa) + " is not supported here");
}

void check_se_params(const SeParams& p, bool with_y) {
  if (p.n < 0 || p.c <= 0 || p.h <= 0 || p.w <= 0)
    throw std::invalid_argument("SeParams: n must be >= 0 and c, h, w > 0, got n=" + std::to_string(p.n) +
                                " c=" + std::to_string(p.c) + " h=" + std::to_string(p.h) + " w=" + std::to_string(p.w));
  for (int i = 0; i < 4; ++i)
    if (p.x_stride[i] < 0 || (with_y && p.y_stride[i] < 0))
      throw std::invalid_argument("SeParams: strides must be non-negative");
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Tasks per thread: enough that a thread slowed by a busy neighbour hands work to the others.
constexpr int64_t kTasksPerThread = 8;

// Threads worth waking for a streaming pass over `elements` floats: one per 16k (waking a thread costs a
// few microseconds, about what one thread streams through 16k floats here).
int threads_for(int64_t elements, int num_threads) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(std::max(1, num_threads), elements >> 14)));
}

}  // namespace

void se_pack(int64_t c, int64_t s, const float* w1, const int64_t w1_stride[2], const float* b1, const float* w2,
             const int64_t w2_stride[2], const float* b2, float* packed) {
  if (c <= 0 || s <= 0) throw std::invalid_argument("se_pack: channels and squeeze channels must be positive");
  float* pw1 = packed;
  float* pb1 = pw1 + s * c;
  float* pw2 = pb1 + s;
  float* pb2 = pw2 + s * c;
  for (int64_t j = 0; j < s; ++j) {
    for (int64_t i = 0; i < c; ++i) {
      pw1[j * c + i] = w1[j * w1_stride[0] + i * w1_stride[1]];
      pw2[j * c + i] = w2[i * w2_stride[0] + j * w2_stride[1]];
    }
    pb1[j] = b1[j];
  }
  std::copy(b2, b2 + c, pb2);
}

void se_pool(const SeParams& p, const float* x, float* pooled, int num_threads, Isa isa) {
  check_se_params(p, false);
  check_isa(isa);
  if (p.n == 0) return;
  num_threads = threads_for(p.n * p.c * p.h * p.w, num_threads);
  const SeKernels k = se_kernels_for(isa);
  const int64_t* xs = p.x_stride;
  const double inv = 1.0 / static_cast<double>(p.h * p.w);
  if (k.pool_rows && xs[1] == 1) {
    // NHWC: tasks (sample, channel group, row block); each writes its own partial sums, reduced below in
    // a fixed order (deterministic for a given shape and thread count).
    const int64_t groups = ceil_div(p.c, kNhwcGroupChannels);
    const int64_t want = std::max<int64_t>(1, kTasksPerThread * num_threads / std::max<int64_t>(1, p.n * groups));
    const int64_t blocks = std::min(p.h, want), rows_per = ceil_div(p.h, blocks);
    const int64_t tasks = p.n * groups * blocks;
    std::vector<double> part(static_cast<size_t>(tasks * kNhwcGroupChannels), 0.0);
    parallel_for(tasks, num_threads, [&](int64_t t) {
      const int64_t b = t % blocks, g = (t / blocks) % groups, n = t / (blocks * groups);
      const int64_t c0 = g * kNhwcGroupChannels, nc = std::min(kNhwcGroupChannels, p.c - c0);
      double* sum = part.data() + t * kNhwcGroupChannels;
      for (int64_t h = b * rows_per; h < std::min(p.h, (b + 1) * rows_per); ++h)
        k.pool_rows(x + n * xs[0] + h * xs[2] + c0, p.w, xs[3], nc, sum);
    });
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * kNhwcGroupChannels, nc = std::min(kNhwcGroupChannels, p.c - c0);
        for (int64_t i = 0; i < nc; ++i) {
          double total = 0.0;
          for (int64_t b = 0; b < blocks; ++b) total += part[((n * groups + g) * blocks + b) * kNhwcGroupChannels + i];
          pooled[n * p.c + c0 + i] = static_cast<float>(total * inv);
        }
      }
    return;
  }
  // NCHW (width contiguous; whole planes when rows are contiguous too) or any strides: one task per
  // group of planes, each plane summed on its own.
  const int64_t planes = p.n * p.c;
  const int64_t per_task = std::max<int64_t>(1, planes / (kTasksPerThread * num_threads));
  parallel_for(ceil_div(planes, per_task), num_threads, [&](int64_t t) {
    for (int64_t q = t * per_task; q < std::min(planes, (t + 1) * per_task); ++q) {
      const float* plane = x + (q / p.c) * xs[0] + (q % p.c) * xs[1];
      double total = 0.0;
      if (k.sum && xs[3] == 1 && xs[2] == p.w) {
        total = k.sum(plane, p.h * p.w);
      } else if (k.sum && xs[3] == 1) {
        for (int64_t h = 0; h < p.h; ++h) total += k.sum(plane + h * xs[2], p.w);
      } else {
        for (int64_t h = 0; h < p.h; ++h)
          for (int64_t w = 0; w < p.w; ++w) total += plane[h * xs[2] + w * xs[3]];
      }
      pooled[q] = static_cast<float>(total * inv);
    }
  });
}

void se_gate(int64_t n, int64_t c, int64_t s, const float* packed, const float* pooled, float* gate, int num_threads,
             Isa isa, Act inner, Act gate_act) {
  check_isa(isa);
  if (c <= 0 || s <= 0 || n < 0) throw std::invalid_argument("se_gate: n >= 0, c > 0 and s > 0 required");
  if (!is_layer_act(inner))
    throw std::invalid_argument(std::string("se_gate: inner_act must be a layer activation, got ") + act_name(inner));
  if (!is_gate(gate_act))
    throw std::invalid_argument(std::string("se_gate: gate must be sigmoid or hardsigmoid, got ") + act_name(gate_act));
  if (n == 0) return;
  const SeKernels k = se_kernels_for(isa);
  if (!k.reduce_rows) {
    const float* w1 = packed;
    const float* b1 = w1 + s * c;
    const float* w2t = b1 + s;
    const float* b2 = w2t + s * c;
    std::vector<float> hidden(static_cast<size_t>(s));
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < s; ++j) {
        float acc = 0.0f;
        for (int64_t i = 0; i < c; ++i) acc += w1[j * c + i] * pooled[r * c + i];
        hidden[j] = b1[j] + acc;
      }
      act_inplace_scalar(hidden.data(), s, inner);
      for (int64_t i = 0; i < c; ++i) {
        float z = b2[i];
        for (int64_t j = 0; j < s; ++j) z += hidden[j] * w2t[j * c + i];
        gate[r * c + i] = z;
      }
      act_inplace_scalar(gate + r * c, c, gate_act);
    }
    return;
  }
  // Two matrix-vector products per sample, each streaming C·S weights (442 KB for B0's widest SE, cold in
  // cache inside a model): split over threads when that is worth a wake-up (C·S ≥ 16k) — the reduce by
  // rows of W1, then (after the Swish) the expand by blocks of channels. Each output is computed by one
  // task in a fixed order, so the split changes no result.
  std::vector<float> hidden(static_cast<size_t>(n * s));
  const int threads = c * s >= (1 << 14) ? std::max(1, num_threads) : 1;
  const int64_t j_tasks = std::min<int64_t>(s, 4 * threads);
  parallel_for(j_tasks, threads, [&](int64_t t) {
    k.reduce_rows(c, s, packed, pooled, hidden.data(), n, s * t / j_tasks, s * (t + 1) / j_tasks);
  });
  act_inplace(hidden.data(), n * s, inner, isa);
  constexpr int64_t kChunk = 64;  // channels per expand task: whole vectors for every ISA
  const int64_t c_tasks = std::min<int64_t>(ceil_div(c, kChunk), 4 * threads);
  parallel_for(c_tasks, threads, [&](int64_t t) {
    const int64_t chunks = ceil_div(c, kChunk);
    const int64_t c0 = std::min(c, chunks * t / c_tasks * kChunk), c1 = std::min(c, chunks * (t + 1) / c_tasks * kChunk);
    if (c0 < c1) k.expand_rows(c, s, packed, hidden.data(), gate, n, c0, c1, gate_act);
  });
}

void se_apply(const SeParams& p, const float* x, const float* gate, float* y, int num_threads, Isa isa) {
  check_se_params(p, true);
  check_isa(isa);
  if (p.n == 0) return;
  num_threads = threads_for(p.n * p.c * p.h * p.w, num_threads);
  const SeKernels k = se_kernels_for(isa);
  const int64_t *xs = p.x_stride, *ys = p.y_stride;
  if (k.scale_rows && xs[1] == 1 && ys[1] == 1) {
    // NHWC: tasks (sample, block of image rows), each row one call over its pixels × all channels.
    const int64_t want = std::max<int64_t>(1, kTasksPerThread * num_threads / p.n);
    const int64_t blocks = std::min(p.h, want), rows_per = ceil_div(p.h, blocks);
    parallel_for(p.n * blocks, num_threads, [&](int64_t t) {
      const int64_t n = t / blocks, b = t % blocks;
      for (int64_t h = b * rows_per; h < std::min(p.h, (b + 1) * rows_per); ++h)
        k.scale_rows(x + n * xs[0] + h * xs[2], xs[3], y + n * ys[0] + h * ys[2], ys[3], p.w, gate + n * p.c, p.c);
    });
    return;
  }
  const int64_t planes = p.n * p.c;
  const int64_t per_task = std::max<int64_t>(1, planes / (kTasksPerThread * num_threads));
  parallel_for(ceil_div(planes, per_task), num_threads, [&](int64_t t) {
    for (int64_t q = t * per_task; q < std::min(planes, (t + 1) * per_task); ++q) {
      const int64_t n = q / p.c, c = q % p.c;
      const float g = gate[q];
      const float* xp = x + n * xs[0] + c * xs[1];
      float* yp = y + n * ys[0] + c * ys[1];
      if (k.scale_const && xs[3] == 1 && ys[3] == 1) {
        if (xs[2] == p.w && ys[2] == p.w) {
          k.scale_const(xp, yp, p.h * p.w, g);
        } else {
          for (int64_t h = 0; h < p.h; ++h) k.scale_const(xp + h * xs[2], yp + h * ys[2], p.w, g);
        }
      } else {
        for (int64_t h = 0; h < p.h; ++h)
          for (int64_t w = 0; w < p.w; ++w) yp[h * ys[2] + w * ys[3]] = xp[h * xs[2] + w * xs[3]] * g;
      }
    }
  });
}

void squeeze_excite(const SeParams& p, int64_t s, const float* x, const float* packed, float* y, int num_threads,
                    Isa isa, Act inner, Act gate_act) {
  check_se_params(p, true);
  check_isa(isa);
  if (p.n == 0) return;
  std::vector<float> pooled(static_cast<size_t>(p.n * p.c)), gate(static_cast<size_t>(p.n * p.c));
  se_pool(p, x, pooled.data(), num_threads, isa);
  se_gate(p.n, p.c, s, packed, pooled.data(), gate.data(), num_threads, isa, inner, gate_act);
  se_apply(p, x, gate.data(), y, num_threads, isa);
}

}  // namespace effnet
