// C++ tests of the 1x1-conv GEMM (run by ctest, natively and under qemu-aarch64): every supported ISA
// against a float64 reference written here. Shapes: rows that leave micro-kernel tails (1, primes, one
// under / over MR), columns that leave partial panels and partial vectors, k across the 256 chunk
// boundary; padded leading dimensions; every epilogue (bias, Swish, residual) and the per-sample gate;
// 1 and 3 threads (the split over rows and over panels); bad arguments; special values.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "effnet/gemm.h"
#include "act64.h"
#include "expect.h"

namespace {

struct Case {
  int64_t m, n, k;
  bool bias;
  effnet::Act act;
  bool residual;
  int64_t rows_per_scale;  // 0: no gate
  int64_t pad;             // extra floats per row of A, C and R
};


void run_case(effnet::Isa isa, const Case& cs, int threads, std::mt19937& rng) {
  const int64_t m = cs.m, n = cs.n, k = cs.k;
  const int64_t lda = k + cs.pad, ldc = n + cs.pad, ldr = n + 2 * cs.pad;
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> a(m * lda + 1), w(n * k), bias(n), r(m * ldr + 1);
  const int64_t samples = cs.rows_per_scale > 0 ? (m + cs.rows_per_scale - 1) / cs.rows_per_scale : 0;
  std::vector<float> scale(samples * k + 1);
  for (auto* v : {&a, &w, &bias, &r, &scale})
    for (float& x : *v) x = u(rng);
  // Weights in the (k, n) order with a column stride, as a transposed view would be.
  std::vector<float> wt(k * n);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t kk = 0; kk < k; ++kk) wt[kk * n + j] = w[j * k + kk];
  std::vector<float> packed(effnet::gemm_packed_size(n, k, isa));
  effnet::gemm_pack(n, k, wt.data(), 1, n, packed.data(), isa);
  const float sentinel = 12345.0f;
  std::vector<float> c(m * ldc + 1, sentinel);

  effnet::GemmArgs g;
  g.m = m; g.n = n; g.k = k; g.a = a.data(); g.lda = lda; g.packed = packed.data();
  g.bias = cs.bias ? bias.data() : nullptr;
  g.scale = cs.rows_per_scale > 0 ? scale.data() : nullptr;
  g.rows_per_scale = cs.rows_per_scale;
  g.residual = cs.residual ? r.data() : nullptr;
  g.ldr = ldr; g.c = c.data(); g.ldc = ldc; g.act = cs.act;
  effnet::gemm(g, threads, isa);

  int bad = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      const float got = c[i * ldc + j];
      if (j >= n) {  // padding between rows untouched
        if (got != sentinel) ++bad;
        continue;
      }
      double acc = cs.bias ? bias[j] : 0.0, mag = std::fabs(acc);
      for (int64_t kk = 0; kk < k; ++kk) {
        const double s = cs.rows_per_scale > 0 ? scale[(i / cs.rows_per_scale) * k + kk] : 1.0;
        const double t = double(a[i * lda + kk]) * s * w[j * k + kk];
        acc += t;
        mag += std::fabs(t);
      }
      double want = act64(acc, cs.act);
      if (cs.residual) want += r[i * ldr + j];
      const double tol = 2e-6 * (mag + 1.0) + 1e-6 * std::fabs(want);
      if (!(std::fabs(got - want) <= tol)) {
        if (bad < 3)
          std::fprintf(stderr, "  %s m=%lld n=%lld k=%lld (%lld,%lld): %g vs %g\n", effnet::isa_name(isa),
                       (long long)m, (long long)n, (long long)k, (long long)i, (long long)j, got, want);
        ++bad;
      }
    }
  }
  EXPECT(c[m * ldc] == sentinel, "%s: wrote past C", effnet::isa_name(isa));
  EXPECT(bad == 0, "%s m=%lld n=%lld k=%lld bias=%d act=%s residual=%d gate=%lld pad=%lld threads=%d: %d bad",
         effnet::isa_name(isa), (long long)m, (long long)n, (long long)k, cs.bias, effnet::act_name(cs.act), cs.residual,
         (long long)cs.rows_per_scale, (long long)cs.pad, threads, bad);
}

std::vector<effnet::Isa> isas() {
  std::vector<effnet::Isa> out;
  for (auto isa : effnet::kAllIsas)
    if (effnet::isa_supported(isa)) out.push_back(isa);
  return out;
}

void test_shapes() {
  std::mt19937 rng(1);
  for (auto isa : isas()) {
    const int64_t nr = effnet::gemm_nr(isa);
    for (int64_t m : {1, 5, 6, 7, 8, 9, 13, 49})
      for (int64_t n : {int64_t{1}, int64_t{3}, nr / 2 - 1, nr / 2, nr / 2 + 1, nr - 1, nr, nr + 1, nr + nr / 2,
                        2 * nr + 5})
        for (int64_t k : {1, 3, 16, 37})
          run_case(isa, {m, n, k, true, effnet::Act::kIdentity, false, 0, 0}, 1, rng);
    // Every epilogue and the gate, over the k-chunk boundary, padded rows, both thread counts.
    for (int threads : {1, 3})
      for (int64_t k : {255, 256, 257, 600})
        for (int variant = 0; variant < 6; ++variant) {
          using effnet::Act;
          const Act acts[] = {Act::kSilu, Act::kIdentity, Act::kRelu6, Act::kHardswish, Act::kSilu, Act::kRelu};
          const bool bias = variant != 1, residual = variant >= 3;
          const Act act = acts[variant];
          const int64_t gate = variant == 2 ? 7 : variant >= 4 ? 60 : 0;
          run_case(isa, {121, 2 * nr + 3, k, bias, act, residual, gate, variant == 5 ? 3 : 0}, threads, rng);
        }
    // Real EfficientNet shapes: B0's expand at 56x56 (16 -> 96 at 112x112 is the largest), the
    // projection at 7x7 with its gate, the head; big enough to take both threads and split panels.
    run_case(isa, {56 * 56, 144, 24, true, effnet::Act::kSilu, false, 0, 0}, 3, rng);
    run_case(isa, {2 * 49, 192, 1152, true, effnet::Act::kIdentity, true, 49, 0}, 3, rng);
    run_case(isa, {49, 1280, 320, true, effnet::Act::kSilu, false, 0, 0}, 3, rng);
    run_case(isa, {0, 8, 8, true, effnet::Act::kSilu, false, 0, 0}, 3, rng);
  }
}

void test_special_values() {
  for (auto isa : isas()) {
    // Swish of +-inf, NaN and huge pre-activations, as eager: z / (1 + exp(-z)).
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> zs = {0.0f, 1e30f, -1e30f, inf, -inf, nan, 88.5f, -88.5f, 3.0f};
    const int64_t m = static_cast<int64_t>(zs.size()), n = 3, k = 1;
    std::vector<float> w = {1.0f, 1.0f, 1.0f}, packed(effnet::gemm_packed_size(n, k, isa)), c(m * n);
    effnet::gemm_pack(n, k, w.data(), 1, 1, packed.data(), isa);
    effnet::GemmArgs g;
    g.m = m; g.n = n; g.k = k; g.a = zs.data(); g.lda = 1; g.packed = packed.data(); g.c = c.data(); g.ldc = n;
    g.act = effnet::Act::kSilu;
    effnet::gemm(g, 1, isa);
    for (int64_t i = 0; i < m; ++i) {
      const float want = zs[i] / (1.0f + std::exp(-zs[i]));
      const float got = c[i * n + 1];
      const bool ok = std::isnan(want) ? std::isnan(got) : (got == want || std::fabs(got - want) <= 1e-6f * std::fabs(want) + 1e-35f);  // swish(-88.5): -0 vs -3e-37
      EXPECT(ok, "%s swish(%g) = %g, want %g", effnet::isa_name(isa), zs[i], got, want);
    }
    // The other epilogues give the scalar rule of effnet/act.h bit for bit (same formula, same order).
    for (effnet::Act act : {effnet::Act::kRelu, effnet::Act::kRelu6, effnet::Act::kHardswish, effnet::Act::kIdentity}) {
      g.act = act;
      effnet::gemm(g, 1, isa);
      for (int64_t i = 0; i < m; ++i) {
        const float want = effnet::act_ref(zs[i], act), got = c[i * n + 1];
        EXPECT(std::isnan(want) ? std::isnan(got) : got == want, "%s %s(%g) = %g, want %g", effnet::isa_name(isa),
               effnet::act_name(act), zs[i], got, want);
      }
    }
  }
}

void test_bad_args() {
  std::vector<float> a(64), packed(1024), c(64);
  effnet::GemmArgs g;
  g.m = 4; g.n = 4; g.k = 4; g.a = a.data(); g.lda = 4; g.packed = packed.data(); g.c = c.data(); g.ldc = 4;
  auto throws = [](effnet::GemmArgs bad) {
    try {
      effnet::gemm(bad, 1, effnet::Isa::kScalar);
    } catch (const std::invalid_argument&) {
      return true;
    }
    return false;
  };
  effnet::GemmArgs b = g;
  b.lda = 3;
  EXPECT(throws(b), "lda < k accepted");
  b = g;
  b.ldc = 2;
  EXPECT(throws(b), "ldc < n accepted");
  b = g;
  b.c = a.data() + 2;
  EXPECT(throws(b), "c overlapping a accepted");
  b = g;
  b.scale = a.data();
  EXPECT(throws(b), "scale without rows_per_scale accepted");
  b = g;
  b.k = 0;
  EXPECT(throws(b), "k = 0 accepted");
  b = g;
  b.packed = nullptr;
  EXPECT(throws(b), "null packed accepted");
  b = g;
  b.a = nullptr;
  EXPECT(throws(b), "null a accepted");
  b.m = 0;
  b.c = nullptr;
  EXPECT(!throws(b), "m = 0 with null a and c (an empty tensor) refused");
  for (auto isa : isas()) {
    std::string why;
    EXPECT(effnet::gemm_self_test(isa, &why), "self-test %s: %s", effnet::isa_name(isa), why.c_str());
  }
}

}  // namespace

int main() {
  test_shapes();
  test_special_values();
  test_bad_args();
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
