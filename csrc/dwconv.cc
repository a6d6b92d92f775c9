// Dispatch for the fused depthwise conv + bias + activation: layout selection and the split of the work over the
// thread pool (ISA selection and the self-tests: isa.cc).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "effnet/dwconv.h"
#include "effnet/gemm.h"
#include "effnet/se.h"
#include "effnet/threadpool.h"

namespace effnet {

float* thread_scratch(size_t count) {
  struct Buffer {
    float* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  static thread_local Buffer buf;
  if (buf.size < count) {
    std::free(buf.data);
    buf.size = (count + 15) / 16 * 16;
    buf.data = static_cast<float*>(std::aligned_alloc(64, buf.size * sizeof(float)));
    if (buf.data == nullptr) {
      buf.size = 0;
      throw std::bad_alloc();
    }
  }
  return buf.data;
}

namespace {

using MicroKernel = void (*)(const DwConvParams&, const float*, const float*, const float*, float*, int64_t,
                             int64_t, int64_t, int64_t, int64_t, double*);

struct Kernels {
  MicroKernel nhwc = nullptr, nchw = nullptr;
};

Kernels kernels_for(Isa isa) {
  switch (isa) {
#define EFFNET_CASE(name, e, lanes, has) \
    case Isa::e: return {name::dwconv_nhwc, name::dwconv_nchw};
    EFFNET_SIMD_ISAS(EFFNET_CASE)
#undef EFFNET_CASE
    default: return {};
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

void swish_inplace(float* data, int64_t count, Isa isa) { act_inplace(data, count, Act::kSilu, isa); }

void act_inplace(float* data, int64_t count, Act act, Isa isa) {
  switch (isa) {
#define EFFNET_CASE(name, e, lanes, has) \
    case Isa::e: return name::act_inplace(data, count, act);
    EFFNET_SIMD_ISAS(EFFNET_CASE)
#undef EFFNET_CASE
    default:
      act_inplace_scalar(data, count, act);
  }
}

namespace {

// The path a call takes: the ISA actually used and the layout kernel (or the scalar reference).
enum class Path { kScalar, kNhwc, kNchw };

Path path_for(const DwConvParams& p, Isa* isa) {
  if (p.k > 7) *isa = Isa::kScalar;  // SIMD kernels hold at most 7x7 taps
  if (*isa == Isa::kScalar) return Path::kScalar;
  if (p.x_stride[1] == 1 && p.y_stride[1] == 1) return Path::kNhwc;
  if (p.x_stride[3] == 1 && p.y_stride[3] == 1) return Path::kNchw;
  return Path::kScalar;  // the reference handles any strides
}

}  // namespace

size_t nhwc_packed_size(const DwConvParams& p, Isa isa) {
  if (path_for(p, &isa) != Path::kNhwc) return 0;
  const int64_t lanes = isa_lanes(isa);
  return static_cast<size_t>(ceil_div(p.c, lanes) * (p.k * p.k + 1) * lanes);
}

void pack_nhwc(const DwConvParams& p, Isa isa, const float* weight, const float* bias, float* packed) {
  const size_t size = nhwc_packed_size(p, isa);
  if (size == 0) return;
  path_for(p, &isa);
  const int64_t lanes = isa_lanes(isa), taps = p.k * p.k, vectors = ceil_div(p.c, lanes);
  std::fill(packed, packed + size, 0.0f);  // lanes past C compute act(0) = 0
  for (int64_t c = 0; c < p.c; ++c) {
    const int64_t v = c / lanes, l = c % lanes;
    for (int64_t t = 0; t < taps; ++t) packed[(v * taps + t) * lanes + l] = weight[c * taps + t];
    packed[vectors * taps * lanes + c] = bias[c];
  }
}

void dwconv_bias_swish(const DwConvParams& p, const float* x, const float* weight, const float* bias, float* y,
                       float* pooled, int num_threads, Isa isa, const float* packed) {
  check_params(p);
  if (!isa_supported(isa)) throw std::invalid_argument(std::string("isa ") + isa_name(isa) + " is not supported here");
  if (p.n == 0) return;
  num_threads = std::max(1, num_threads);
  const Path path = path_for(p, &isa);
  const Kernels kern = kernels_for(isa);
  const bool nhwc = path == Path::kNhwc;
  if (path == Path::kScalar) {
    // The reference handles any strides; split over samples only (it is the slow path anyway).
    if (p.n > 1 && num_threads > 1) {
      parallel_for(p.n, num_threads, [&](int64_t n) {
        DwConvParams q = p;
        q.n = 1;
        scalar::dwconv_bias_swish(q, x + n * p.x_stride[0], weight, bias, y + n * p.y_stride[0],
                                  pooled ? pooled + n * p.c : nullptr);
      });
    } else {
      scalar::dwconv_bias_swish(p, x, weight, bias, y, pooled);
    }
    return;
  }

  // Tasks: (sample, channel chunk, row block), all of about the same cost; threads take them as they
  // free up. The split depends on the shape and the thread count only, and each task's result on nothing
  // else, so results are deterministic.
  // NHWC: rows first (a task does every channel of its rows, row by row, while the rows' input lines are
  // in cache), channels split only when the rows alone give too few tasks; weights and biases are packed
  // per vector of channels once per call. NCHW: chunks of up to 16 planes (each task zeroes its padded
  // scratch once), rows split when there are too few chunks.
  const int64_t lanes = isa_lanes(isa);
  const int64_t vectors = ceil_div(p.c, lanes);
  const int64_t want = num_threads > 1 ? 8 * num_threads : 1;
  int64_t chunks = 1, row_blocks = 1;
  if (nhwc) {
    row_blocks = std::min<int64_t>(p.out_h, ceil_div(want, p.n));
    chunks = std::min<int64_t>(vectors, ceil_div(want, p.n * row_blocks));
  } else {
    chunks = ceil_div(p.c, std::max<int64_t>(1, std::min<int64_t>(16, p.n * p.c / want)));
    row_blocks = std::min<int64_t>(p.out_h, ceil_div(want, p.n * chunks));
  }
  const int64_t rows_per_block = ceil_div(p.out_h, row_blocks);
  row_blocks = ceil_div(p.out_h, rows_per_block);
  auto chunk_range = [&](int64_t i, int64_t* c0, int64_t* c1) {
    if (nhwc) {  // whole vectors: c0 is a multiple of the vector width
      *c0 = std::min(p.c, vectors * i / chunks * lanes);
      *c1 = std::min(p.c, vectors * (i + 1) / chunks * lanes);
    } else {
      *c0 = p.c * i / chunks;
      *c1 = p.c * (i + 1) / chunks;
    }
  };
  std::vector<float> own_pack;
  const float* wk = weight;
  const float* bk = bias;
  if (nhwc) {
    if (packed == nullptr) {
      own_pack.resize(nhwc_packed_size(p, isa));
      pack_nhwc(p, isa, weight, bias, own_pack.data());
      packed = own_pack.data();
    }
    wk = packed;
    bk = packed + vectors * p.k * p.k * lanes;
  }

  // Pool partial sums per (n, row block, c), reduced in a fixed order afterwards.
  std::vector<double> pool_acc;
  if (pooled != nullptr) pool_acc.assign(static_cast<size_t>(p.n * row_blocks * p.c), 0.0);
  const MicroKernel mk = nhwc ? kern.nhwc : kern.nchw;
  parallel_for(p.n * chunks * row_blocks, num_threads, [&](int64_t task) {
    const int64_t rb = task % row_blocks, rest = task / row_blocks;
    const int64_t n = rest / chunks, chunk = rest % chunks;
    int64_t c0, c1;
    chunk_range(chunk, &c0, &c1);
    if (c0 >= c1) return;
    const int64_t oh0 = rb * rows_per_block, oh1 = std::min(p.out_h, oh0 + rows_per_block);
    double* pool = pooled ? pool_acc.data() + (n * row_blocks + rb) * p.c + c0 : nullptr;
    mk(p, x, wk, bk, y, n, c0, c1, oh0, oh1, pool);
  });
  if (pooled != nullptr) {
    const double inv_area = 1.0 / static_cast<double>(p.out_h * p.out_w);
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t c = 0; c < p.c; ++c) {
        double sum = 0.0;
        for (int64_t rb = 0; rb < row_blocks; ++rb) sum += pool_acc[(n * row_blocks + rb) * p.c + c];
        pooled[n * p.c + c] = static_cast<float>(sum * inv_area);
      }
  }
}

}  // namespace effnet
