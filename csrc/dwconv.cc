// Dispatch for the fused depthwise conv + bias + Swish: ISA selection, layout selection and the
// split of the work over the thread pool.
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

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kNeon: return "neon";
  }
  return "unknown";
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return true;
#endif
    default: return false;
  }
}

namespace {

// A fast check of one SIMD path against the scalar reference on small awkward shapes (both layouts,
// both strides, k 3/5/7, channel tails, pooling). Run once before a path is chosen automatically, so a
// path that could not be tested where it was built (this repo's CI hosts lack AVX-512) can never give
// silent wrong answers: it is skipped with a note instead (isa_note()).
bool self_test(Isa isa, std::string* why) {
  uint32_t state = 12345u;
  auto rnd = [&] {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>((state >> 8) & 0xFFFF) / 32768.0f - 1.0f;
  };
  for (int64_t k : {3, 5, 7})
    for (int64_t stride : {1, 2})
      for (int layout = 0; layout < 2; ++layout) {
        DwConvParams p;
        p.n = 2; p.c = 19; p.h = 9; p.w = 37; p.k = k; p.stride = stride;
        p.pad_top = p.pad_left = k / 2;
        p.out_h = conv_out_size(p.h, k, stride, k / 2, k / 2);
        p.out_w = conv_out_size(p.w, k, stride, k / 2, k / 2);
        const int64_t chw[3] = {p.c, p.h, p.w}, ochw[3] = {p.c, p.out_h, p.out_w};
        for (int t = 0; t < 2; ++t) {
          const int64_t* d = t == 0 ? chw : ochw;
          int64_t* st = t == 0 ? p.x_stride : p.y_stride;
          if (layout == 0) { st[0] = d[0] * d[1] * d[2]; st[1] = d[1] * d[2]; st[2] = d[2]; st[3] = 1; }
          else { st[0] = d[0] * d[1] * d[2]; st[1] = 1; st[2] = d[2] * d[0]; st[3] = d[0]; }
        }
        std::vector<float> x(p.n * p.c * p.h * p.w), w(p.c * k * k), b(p.c);
        for (auto& v : x) v = 3.0f * rnd();
        for (auto& v : w) v = rnd();
        for (auto& v : b) v = rnd();
        const size_t ny = static_cast<size_t>(p.n * p.c * p.out_h * p.out_w);
        std::vector<float> y0(ny), y1(ny), p0(p.n * p.c), p1(p.n * p.c);
        scalar::dwconv_bias_swish(p, x.data(), w.data(), b.data(), y0.data(), p0.data());
        dwconv_bias_swish(p, x.data(), w.data(), b.data(), y1.data(), p1.data(), 1, isa);
        double err = 0.0, ref = 0.0;
        for (size_t i = 0; i < ny; ++i) {
          err = std::max(err, static_cast<double>(std::fabs(y1[i] - y0[i])));
          ref = std::max(ref, static_cast<double>(std::fabs(y0[i])));
        }
        for (size_t i = 0; i < p0.size(); ++i) err = std::max(err, static_cast<double>(std::fabs(p1[i] - p0[i])));
        if (!(err <= 1e-4 * ref)) {
          *why = std::string(isa_name(isa)) + " self-test failed (k=" + std::to_string(k) + " stride=" +
                 std::to_string(stride) + (layout ? " nhwc" : " nchw") + ", max error " + std::to_string(err) + ")";
          return false;
        }
      }
  return true;
}

std::string& note_storage() {
  static std::string note;
  return note;
}

}  // namespace

Isa best_isa() {
  static const Isa best = [] {
    for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kNeon}) {
      if (!isa_supported(isa)) continue;
      std::string why;
      if (self_test(isa, &why) && se_self_test(isa, &why) && gemm_self_test(isa, &why)) return isa;
      note_storage() += why + "; ";
    }
    return Isa::kScalar;
  }();
  return best;
}

const std::string& isa_note() {
  best_isa();
  return note_storage();
}

Isa parse_isa(const char* name) {
  const std::string s = name ? name : "";
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    if (s == isa_name(isa)) {
      if (!isa_supported(isa))
        throw std::invalid_argument("isa '" + s + "' is not supported by this CPU/build (best: " +
                                    isa_name(best_isa()) + ")");
      return isa;
    }
  }
  throw std::invalid_argument("isa must be one of scalar, avx2, avx512, neon; got '" + s + "'");
}

Isa default_isa() {
  static const Isa isa = [] {
    const char* env = std::getenv("EFFNET_ISA");
    if (env == nullptr || *env == '\0') return best_isa();
    try {
      return parse_isa(env);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("environment variable EFFNET_ISA: ") + e.what());
    }
  }();
  return isa;
}

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
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::kAvx512: return {avx512::dwconv_nhwc, avx512::dwconv_nchw};
    case Isa::kAvx2: return {avx2::dwconv_nhwc, avx2::dwconv_nchw};
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return {neon::dwconv_nhwc, neon::dwconv_nchw};
#endif
    default: return {};
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

void swish_inplace(float* data, int64_t count, Isa isa) {
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::kAvx512: return avx512::swish_inplace(data, count);
    case Isa::kAvx2: return avx2::swish_inplace(data, count);
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return neon::swish_inplace(data, count);
#endif
    default:
      for (int64_t i = 0; i < count; ++i) data[i] = swish_ref(data[i]);
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

int64_t lanes_of(Isa isa) { return isa == Isa::kAvx512 ? 16 : isa == Isa::kAvx2 ? 8 : 4; }

}  // namespace

size_t nhwc_packed_size(const DwConvParams& p, Isa isa) {
  if (path_for(p, &isa) != Path::kNhwc) return 0;
  const int64_t lanes = lanes_of(isa);
  return static_cast<size_t>(ceil_div(p.c, lanes) * (p.k * p.k + 1) * lanes);
}

void pack_nhwc(const DwConvParams& p, Isa isa, const float* weight, const float* bias, float* packed) {
  const size_t size = nhwc_packed_size(p, isa);
  if (size == 0) return;
  path_for(p, &isa);
  const int64_t lanes = lanes_of(isa), taps = p.k * p.k, vectors = ceil_div(p.c, lanes);
  std::fill(packed, packed + size, 0.0f);  // lanes past C compute swish(0) = 0
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
  const int64_t lanes = lanes_of(isa);
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
