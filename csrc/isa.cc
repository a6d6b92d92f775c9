// The instruction-set paths (listed once, in effnet/isa.h): names, what this CPU supports, the automatic
// choice and the self-tests it runs first, so that a SIMD path that could not be tested where it was built
// (CI hosts without AVX-512) can never give silent wrong answers: it is passed over with a note instead.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "effnet/dwconv.h"
#include "effnet/gemm.h"
#include "effnet/isa.h"
#include "effnet/se.h"

namespace effnet {

const char* isa_name(Isa isa) {
  switch (isa) {
#define EFFNET_CASE(name, e, lanes, has) \
    case Isa::e: return #name;
    EFFNET_ISAS(EFFNET_CASE)
#undef EFFNET_CASE
  }
  return "unknown";
}

int isa_lanes(Isa isa) {
  switch (isa) {
#define EFFNET_CASE(name, e, lanes, has) \
    case Isa::e: return lanes;
    EFFNET_ISAS(EFFNET_CASE)
#undef EFFNET_CASE
  }
  return 1;
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
#define EFFNET_CASE(name, e, lanes, has) \
    case Isa::e: return has;
    EFFNET_SIMD_ISAS(EFFNET_CASE)
#undef EFFNET_CASE
    default: return false;  // a path of another architecture
  }
}

const std::string& isa_names() {
  static const std::string names = [] {
    std::string s;
    for (Isa isa : kAllIsas) s += std::string(s.empty() ? "" : ", ") + isa_name(isa);
    return s;
  }();
  return names;
}

namespace {

std::string& note_storage() {
  static std::string note;
  return note;
}

}  // namespace

Isa best_isa() {
  static const Isa best = [] {
#define EFFNET_ENUM(name, e, lanes, has) Isa::e,
    const Isa simd[] = {EFFNET_SIMD_ISAS(EFFNET_ENUM) Isa::kScalar};  // slowest first (scalar: a sentinel)
#undef EFFNET_ENUM
    for (int i = static_cast<int>(sizeof(simd) / sizeof(simd[0])) - 2; i >= 0; --i) {
      const Isa isa = simd[i];
      if (!isa_supported(isa)) continue;
      std::string why;
      if (dwconv_self_test(isa, &why) && se_self_test(isa, &why) && gemm_self_test(isa, &why)) return isa;
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
  for (Isa isa : kAllIsas) {
    if (s == isa_name(isa)) {
      if (!isa_supported(isa))
        throw std::invalid_argument("isa '" + s + "' is not supported by this CPU/build (best: " +
                                    isa_name(best_isa()) + ")");
      return isa;
    }
  }
  throw std::invalid_argument("isa must be one of " + isa_names() + "; got '" + s + "'");
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

// ---- self-tests: each SIMD path against the scalar path on small awkward shapes ----------------------

namespace {

// The self-tests' inputs: a fixed LCG, uniform in [-1, 1) (reproducible on every CPU and build).
struct Lcg {
  uint32_t state;
  float operator()() {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>((state >> 8) & 0xFFFF) / 32768.0f - 1.0f;
  }
};

// Element strides (n, c, h, w) of a dense (N, C, H, W) tensor: NCHW (layout 0) or NHWC (layout 1).
void dense_strides(int layout, int64_t c, int64_t h, int64_t w, int64_t st[4]) {
  st[0] = c * h * w;
  if (layout == 0) { st[1] = h * w; st[2] = w; st[3] = 1; }
  else { st[1] = 1; st[2] = w * c; st[3] = c; }
}

}  // namespace

// Depthwise: both layouts, both strides, k 3/5/7, channel tails, pooling, every activation.
bool dwconv_self_test(Isa isa, std::string* why) {
  Lcg rnd{12345u};
  for (Act act : {Act::kSilu, Act::kRelu, Act::kRelu6, Act::kHardswish, Act::kIdentity})
  for (int64_t k : {3, 5, 7})
    for (int64_t stride : {1, 2})
      for (int layout = 0; layout < 2; ++layout) {
        DwConvParams p;
        p.n = 2; p.c = 19; p.h = 9; p.w = 37; p.k = k; p.stride = stride;
        p.pad_top = p.pad_left = k / 2;
        p.act = act;
        p.out_h = conv_out_size(p.h, k, stride, k / 2, k / 2);
        p.out_w = conv_out_size(p.w, k, stride, k / 2, k / 2);
        dense_strides(layout, p.c, p.h, p.w, p.x_stride);
        dense_strides(layout, p.c, p.out_h, p.out_w, p.y_stride);
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
          *why = std::string(isa_name(isa)) + " self-test failed (" + act_name(act) + " k=" + std::to_string(k) + " stride=" +
                 std::to_string(stride) + (layout ? " nhwc" : " nchw") + ", max error " + std::to_string(err) + ")";
          return false;
        }
      }
  return true;
}

// Squeeze-excitation: both layouts, a channel count off every vector width.
bool se_self_test(Isa isa, std::string* why) {
  Lcg rnd{2024u};
  const int64_t n = 2, c = 19, h = 5, w = 6, s = 3;
  std::vector<float> w1(s * c), b1(s), w2(c * s), b2(c), x(n * c * h * w);
  for (auto* v : {&w1, &b1, &w2, &b2, &x})
    for (float& e : *v) e = 2.0f * rnd();
  std::vector<float> packed(se_packed_size(c, s));
  const int64_t s1[2] = {c, 1}, s2[2] = {s, 1};
  se_pack(c, s, w1.data(), s1, b1.data(), w2.data(), s2, b2.data(), packed.data());
  for (int variant = 0; variant < 4; ++variant) {
    const int layout = variant % 2;
    const Act inner = variant < 2 ? Act::kSilu : Act::kRelu, gate = variant < 2 ? Act::kSigmoid : Act::kHardsigmoid;
    SeParams p;
    p.n = n; p.c = c; p.h = h; p.w = w;
    dense_strides(layout, c, h, w, p.x_stride);
    std::copy(p.x_stride, p.x_stride + 4, p.y_stride);
    std::vector<float> y0(x.size()), y1(x.size());
    squeeze_excite(p, s, x.data(), packed.data(), y0.data(), 1, Isa::kScalar, inner, gate);
    squeeze_excite(p, s, x.data(), packed.data(), y1.data(), 1, isa, inner, gate);
    double err = 0.0;
    for (size_t i = 0; i < x.size(); ++i) err = std::max(err, static_cast<double>(std::fabs(y1[i] - y0[i])));
    if (!(err <= 1e-5)) {
      *why = std::string(isa_name(isa)) + " squeeze-excitation self-test failed (" + act_name(gate) + ", " +
             (layout ? "nhwc" : "nchw") +
             ", max error " + std::to_string(err) + ")";
      return false;
    }
  }
  return true;
}

// GEMM: full and partial panels, row tails, two k chunks, a gate and a residual.
bool gemm_self_test(Isa isa, std::string* why) {
  if (isa == Isa::kScalar) return true;
  // A shape with full and partial panels and row tails, two k chunks, a gate and a residual.
  const int64_t m = 23, n = 2 * gemm_nr(isa) + 3, k = 300;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> a(m * k), w(n * k), bias(n), scale(2 * k), r(m * n);
  for (auto* v : {&a, &w, &bias, &scale, &r})
    for (float& x : *v) x = u(rng);
  for (Act act : {Act::kIdentity, Act::kSilu, Act::kHardswish}) {
    std::vector<float> pw(gemm_packed_size(n, k, isa)), ps(gemm_packed_size(n, k, Isa::kScalar));
    gemm_pack(n, k, w.data(), k, 1, pw.data(), isa);
    gemm_pack(n, k, w.data(), k, 1, ps.data(), Isa::kScalar);
    std::vector<float> got(m * n), want(m * n);
    GemmArgs g;
    g.m = m; g.n = n; g.k = k; g.a = a.data(); g.lda = k; g.bias = bias.data();
    g.scale = scale.data(); g.rows_per_scale = 12; g.residual = r.data(); g.ldr = n;
    g.ldc = n; g.act = act;
    g.packed = pw.data(); g.c = got.data();
    gemm(g, 1, isa);
    g.packed = ps.data(); g.c = want.data();
    gemm(g, 1, Isa::kScalar);
    for (int64_t i = 0; i < m * n; ++i)
      if (!(std::fabs(got[i] - want[i]) <= 1e-4f * (1.0f + std::fabs(want[i])))) {
        if (why != nullptr)
          *why = std::string("gemm self-test failed for ") + isa_name(isa) + " at " + std::to_string(i) + ": " +
                 std::to_string(got[i]) + " vs " + std::to_string(want[i]);
        return false;
      }
  }
  return true;
}

}  // namespace effnet
