// Dispatch for the 1x1-conv GEMM: argument checks, packing, the split over threads, the scalar path.
#include "effnet/gemm.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "effnet/threadpool.h"

namespace effnet {
namespace {

constexpr int kScalarNR = 8;
constexpr int64_t kKcFloats = 256;         // the micro-kernels' k chunk (kKc in gemm_impl.inc)
constexpr int64_t kL2Floats = 96 * 1024;   // A rows x k chunk one task keeps in L2 (384 KB)

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("gemm: " + what);
}

// The scalar path: the same packed layout with 8-column panels, one output at a time, k ascending.
void gemm_block_scalar(const GemmArgs& g, int64_t i0, int64_t i1, int64_t p0, int64_t p1) {
  for (int64_t i = i0; i < i1; ++i) {
    const float* a = g.a + i * g.lda;
    const float* s = g.scale != nullptr ? g.scale + (i / g.rows_per_scale) * g.k : nullptr;
    for (int64_t j = p0 * kScalarNR; j < std::min(g.n, p1 * kScalarNR); ++j) {
      const float* w = g.packed + (j / kScalarNR) * kScalarNR * g.k + j % kScalarNR;
      float acc = g.bias != nullptr ? g.bias[j] : 0.0f;
      for (int64_t kk = 0; kk < g.k; ++kk) {
        float v = a[kk];
        if (s != nullptr) {  // a subnormal gated input flushed to zero, as the SIMD kernels' scale_row does
          v *= s[kk];
          if (std::fabs(v) < 1.17549435e-38f) v = 0.0f;
        }
        acc += v * w[kk * kScalarNR];
      }
      g.c[i * g.ldc + j] = acc;
    }
    // the epilogue over the row's columns: activation (one switch per row), then the residual
    const int64_t j0 = p0 * kScalarNR, j1 = std::min(g.n, p1 * kScalarNR);
    if (j1 > j0) act_inplace_scalar(g.c + i * g.ldc + j0, j1 - j0, g.act);
    if (g.residual != nullptr)
      for (int64_t j = j0; j < j1; ++j) g.c[i * g.ldc + j] += g.residual[i * g.ldr + j];
  }
}

using BlockFn = void (*)(const GemmArgs&, int64_t, int64_t, int64_t, int64_t);

struct GemmKernels {
  BlockFn block;
  int nr, mr;
};

GemmKernels kernels_for(Isa isa) {
  switch (isa) {
#define EFFNET_CASE(name, e, lanes, has) \
    case Isa::e: return {name::gemm_block, name::gemm_nr(), name::gemm_mr()};
    EFFNET_SIMD_ISAS(EFFNET_CASE)
#undef EFFNET_CASE
    default: return {gemm_block_scalar, kScalarNR, 4};
  }
}

// Does [p, p + n) overlap [q, q + m)?
bool overlaps(const float* p, int64_t n, const float* q, int64_t m) { return p < q + m && q < p + n; }

void check_args(const GemmArgs& g) {
  require(g.m >= 0 && g.n >= 1 && g.k >= 1, "need m >= 0, n >= 1, k >= 1, got m=" + std::to_string(g.m) +
                                                " n=" + std::to_string(g.n) + " k=" + std::to_string(g.k));
  require(g.packed != nullptr, "packed must not be null");
  require(g.lda >= g.k, "lda must be >= k, got " + std::to_string(g.lda) + " < " + std::to_string(g.k));
  require(g.ldc >= g.n, "ldc must be >= n, got " + std::to_string(g.ldc) + " < " + std::to_string(g.n));
  require(g.residual == nullptr || g.ldr >= g.n, "ldr must be >= n, got " + std::to_string(g.ldr));
  require(g.scale == nullptr || g.rows_per_scale >= 1,
          "rows_per_scale must be >= 1 with a scale, got " + std::to_string(g.rows_per_scale));
  if (g.m == 0) return;  // an empty A / C may come as null pointers (an empty tensor's data_ptr is 0)
  require(g.a != nullptr && g.c != nullptr, "a and c must not be null");
  const int64_t c_span = (g.m - 1) * g.ldc + g.n;
  require(!overlaps(g.c, c_span, g.a, (g.m - 1) * g.lda + g.k), "c must not overlap a");
  require(g.residual == nullptr || !overlaps(g.c, c_span, g.residual, (g.m - 1) * g.ldr + g.n),
          "c must not overlap the residual");
}

}  // namespace

int gemm_nr(Isa isa) { return kernels_for(isa).nr; }

size_t gemm_packed_size(int64_t n, int64_t k, Isa isa) {
  const int nr = gemm_nr(isa);
  return static_cast<size_t>(ceil_div(n, nr) * nr * k);
}

void gemm_pack(int64_t n, int64_t k, const float* w, int64_t w_stride_n, int64_t w_stride_k, float* packed, Isa isa) {
  require(n >= 1 && k >= 1, "gemm_pack needs n, k >= 1, got n=" + std::to_string(n) + " k=" + std::to_string(k));
  const int nr = gemm_nr(isa);
  for (int64_t p = 0; p < ceil_div(n, nr); ++p)
    for (int64_t kk = 0; kk < k; ++kk)
      for (int j = 0; j < nr; ++j) {
        const int64_t col = p * nr + j;
        packed[(p * k + kk) * nr + j] = col < n ? w[col * w_stride_n + kk * w_stride_k] : 0.0f;
      }
}

void gemm(const GemmArgs& g, int num_threads, Isa isa) {
  if (!isa_supported(isa)) throw std::invalid_argument(std::string("isa ") + isa_name(isa) + " is not supported here");
  check_args(g);
  if (g.m == 0) return;
  const GemmKernels kern = kernels_for(isa);
  const int64_t panels = ceil_div(g.n, kern.nr);
  // One thread below ~256k multiply-adds (~10 us): waking a second costs about as much as it saves.
  const int threads = g.m * g.n * g.k < (int64_t{1} << 18) ? 1 : std::max(1, num_threads);
  // Which operand a task re-reads: a task sweeps its panels for every block of its rows, so each task
  // reads its panels of W once per row block and its rows of A once per panel. When W is the larger
  // operand (n > m: the late, small-plane layers, whose weights come from memory on every call), a task
  // takes all the rows that fit L2 (kc floats each) and the threads split the panels: W is read once.
  // Otherwise row blocks of up to 96 rows, at least 4 tasks per thread so a thread slowed by a busy
  // neighbour hands work over, panels split too only when the rows cannot make that many tasks.
  const int64_t l2_rows = std::max<int64_t>(kern.mr, kL2Floats / std::min<int64_t>(g.k, kKcFloats) / kern.mr * kern.mr);
  const int64_t max_mc = std::max<int64_t>(kern.mr, 96 / kern.mr * kern.mr);
  const int64_t want = 4 * int64_t{threads};
  const int64_t all_rows = std::min(ceil_div(g.m, kern.mr) * kern.mr, l2_rows);
  const int64_t mc = g.n > g.m || threads == 1
                         ? all_rows
                         : std::clamp(ceil_div(ceil_div(g.m, want), kern.mr) * kern.mr, int64_t{kern.mr}, max_mc);
  const int64_t mblocks = ceil_div(g.m, mc);
  const int64_t per_group = threads == 1 || mblocks >= want ? panels : ceil_div(panels, ceil_div(want, mblocks));
  const int64_t groups = ceil_div(panels, per_group);
  parallel_for(mblocks * groups, threads, [&](int64_t task) {
    const int64_t mb = task / groups, pg = task % groups;
    kern.block(g, mb * mc, std::min(g.m, (mb + 1) * mc), pg * per_group, std::min(panels, (pg + 1) * per_group));
  });
}

}  // namespace effnet
