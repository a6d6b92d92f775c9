// C++ tests of the squeeze-excitation kernels (run by ctest, natively and under qemu-aarch64): every
// supported ISA against a float64 reference written here, on awkward shapes (channels that do not fill
// a vector, primes, squeeze width 1, 1x1 planes), NCHW, NHWC and a strided view, 1 and 3 threads (the
// larger shapes split across them), the in-place form, special values through the gate.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "effnet/se.h"
#include "effnet/threadpool.h"
#include "act64.h"
#include "expect.h"

#include <dlfcn.h>

namespace {

enum class Layout { kNCHW, kNHWC, kStrided };

// Strides for (n, c, h, w); kStrided: NHWC with a pixel stride of c + 3 and a gap between rows.
void set_strides(int64_t* s, Layout layout, int64_t c, int64_t h, int64_t w) {
  if (layout == Layout::kNCHW) {
    s[3] = 1; s[2] = w; s[1] = h * w; s[0] = c * h * w;
  } else if (layout == Layout::kNHWC) {
    s[1] = 1; s[3] = c; s[2] = w * c; s[0] = h * w * c;
  } else {
    s[1] = 1; s[3] = c + 3; s[2] = w * (c + 3) + 5; s[0] = h * s[2] + 7;
  }
}

int64_t span(const int64_t* s, int64_t n, int64_t c, int64_t h, int64_t w) {
  return 1 + (n - 1) * s[0] + (c - 1) * s[1] + (h - 1) * s[2] + (w - 1) * s[3];
}

struct Weights {
  std::vector<float> w1, b1, w2, b2, packed;
};

Weights make_weights(int64_t c, int64_t s, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  Weights wt;
  const float scale1 = 2.0f / std::sqrt(static_cast<float>(c)), scale2 = 2.0f / std::sqrt(static_cast<float>(s));
  for (int64_t i = 0; i < s * c; ++i) wt.w1.push_back(d(rng) * scale1);
  for (int64_t i = 0; i < s; ++i) wt.b1.push_back(d(rng));
  for (int64_t i = 0; i < c * s; ++i) wt.w2.push_back(d(rng) * scale2);
  for (int64_t i = 0; i < c; ++i) wt.b2.push_back(d(rng));
  wt.packed.resize(effnet::se_packed_size(c, s));
  const int64_t s1[2] = {c, 1}, s2[2] = {s, 1};  // w1 (s, c), w2 (c, s) row-major
  effnet::se_pack(c, s, wt.w1.data(), s1, wt.b1.data(), wt.w2.data(), s2, wt.b2.data(), wt.packed.data());
  return wt;
}

// float64 reference: pooled means, gate, y.

void reference(const effnet::SeParams& p, int64_t s, const std::vector<float>& x, const Weights& wt,
               std::vector<double>* pooled, std::vector<double>* gate, effnet::Act inner, effnet::Act gate_act) {
  pooled->assign(static_cast<size_t>(p.n * p.c), 0.0);
  gate->assign(static_cast<size_t>(p.n * p.c), 0.0);
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t c = 0; c < p.c; ++c) {
      double t = 0.0;
      for (int64_t h = 0; h < p.h; ++h)
        for (int64_t w = 0; w < p.w; ++w)
          t += x[n * p.x_stride[0] + c * p.x_stride[1] + h * p.x_stride[2] + w * p.x_stride[3]];
      (*pooled)[n * p.c + c] = t / static_cast<double>(p.h * p.w);
    }
    std::vector<double> hid(static_cast<size_t>(s));
    for (int64_t j = 0; j < s; ++j) {
      double z = wt.b1[j];
      for (int64_t c = 0; c < p.c; ++c) z += static_cast<double>(wt.w1[j * p.c + c]) * (*pooled)[n * p.c + c];
      hid[j] = act64(z, inner);
    }
    for (int64_t c = 0; c < p.c; ++c) {
      double z = wt.b2[c];
      for (int64_t j = 0; j < s; ++j) z += static_cast<double>(wt.w2[c * s + j]) * hid[j];
      (*gate)[n * p.c + c] = act64(z, gate_act);
    }
  }
}

void run_case(effnet::Isa isa, int64_t n, int64_t c, int64_t h, int64_t w, int64_t s, Layout layout, int threads,
              bool in_place, std::mt19937& rng, effnet::Act inner = effnet::Act::kSilu,
              effnet::Act gate_act = effnet::Act::kSigmoid) {
  effnet::SeParams p;
  p.n = n; p.c = c; p.h = h; p.w = w;
  set_strides(p.x_stride, layout, c, h, w);
  set_strides(p.y_stride, layout, c, h, w);
  std::normal_distribution<float> d(0.5f, 1.0f);
  std::vector<float> x(static_cast<size_t>(span(p.x_stride, n, c, h, w)));
  for (auto& v : x) v = d(rng);
  const Weights wt = make_weights(c, s, rng);
  std::vector<double> pooled_ref, gate_ref;
  reference(p, s, x, wt, &pooled_ref, &gate_ref, inner, gate_act);

  std::vector<float> pooled(static_cast<size_t>(n * c)), gate(static_cast<size_t>(n * c));
  effnet::se_pool(p, x.data(), pooled.data(), threads, isa);
  effnet::se_gate(n, c, s, wt.packed.data(), pooled.data(), gate.data(), threads, isa, inner, gate_act);
  std::vector<float> y = x;  // gaps keep x's values: a stray write shows
  std::vector<float> x_copy = x;
  if (in_place) {
    effnet::squeeze_excite(p, s, y.data(), wt.packed.data(), y.data(), threads, isa, inner, gate_act);
  } else {
    effnet::squeeze_excite(p, s, x.data(), wt.packed.data(), y.data(), threads, isa, inner, gate_act);
  }
  const std::string what = std::string(effnet::isa_name(isa)) + " n=" + std::to_string(n) + " c=" + std::to_string(c) +
                           " " + std::to_string(h) + "x" + std::to_string(w) + " s=" + std::to_string(s) +
                           " layout=" + std::to_string(static_cast<int>(layout)) + " threads=" + std::to_string(threads) +
                           (in_place ? " in-place" : "") + " " + effnet::act_name(inner) + "/" +
                           effnet::act_name(gate_act);
  double worst_pool = 0.0, worst_gate = 0.0, worst_y = 0.0;
  for (int64_t i = 0; i < n * c; ++i) {
    worst_pool = std::max(worst_pool, std::fabs(pooled[i] - pooled_ref[i]) / (std::fabs(pooled_ref[i]) + 1e-3));
    worst_gate = std::max(worst_gate, std::fabs(gate[i] - gate_ref[i]));
  }
  bool gaps_ok = true;
  std::vector<char> covered(x.size(), 0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t hh = 0; hh < h; ++hh)
        for (int64_t ww = 0; ww < w; ++ww) {
          const int64_t off = b * p.x_stride[0] + ch * p.x_stride[1] + hh * p.x_stride[2] + ww * p.x_stride[3];
          covered[off] = 1;
          const double ref = static_cast<double>(x_copy[off]) * gate_ref[b * c + ch];
          // relative to y, plus x times the gate's own bound (a gate near 0, as hardsigmoid's, has no
          // relative accuracy to give)
          const double tol = 1e-5 * (std::fabs(ref) + 1e-3) + 2e-6 * std::fabs(x_copy[off]);
          worst_y = std::max(worst_y, std::fabs(y[off] - ref) / tol * 1e-5);
        }
  for (size_t i = 0; i < x.size(); ++i)
    if (!covered[i] && y[i] != x_copy[i]) gaps_ok = false;
  EXPECT(worst_pool < 1e-5, "%s: pooled rel error %.3g", what.c_str(), worst_pool);
  EXPECT(worst_gate < 2e-6, "%s: gate abs error %.3g", what.c_str(), worst_gate);
  EXPECT(worst_y < 1e-5, "%s: y rel error %.3g", what.c_str(), worst_y);
  EXPECT(gaps_ok, "%s: wrote outside the view", what.c_str());
}

std::vector<effnet::Isa> isas() {
  std::vector<effnet::Isa> out;
  for (effnet::Isa isa : effnet::kAllIsas) {
    if (effnet::isa_supported(isa)) {
      out.push_back(isa);
    } else {
      std::printf("isa %s: not supported on this host, skipped\n", effnet::isa_name(isa));
    }
  }
  return out;
}

void test_shapes() {
  std::mt19937 rng(7);
  struct Shape { int64_t n, c, h, w, s; };
  const Shape shapes[] = {
      {1, 1, 1, 1, 1},      {2, 3, 5, 7, 1},     {3, 17, 4, 9, 5},      {1, 67, 3, 3, 13},
      {2, 96, 11, 13, 4},   {1, 131, 2, 70, 7},  {1, 1152, 7, 7, 48},   {3, 40, 1, 1, 10},
      {1, 16, 67, 9, 4},
      // big enough that the pool and scale split over threads (one per 16k elements): partial sums
      // reduced across row blocks, channel groups past 64
      {3, 67, 19, 23, 5},   {1, 33, 70, 31, 3},
  };
  int variant = 0;
  for (effnet::Isa isa : isas())
    for (const Shape& sh : shapes)
      for (Layout layout : {Layout::kNCHW, Layout::kNHWC, Layout::kStrided})
        for (int threads : {1, 3}) {
          // EfficientNet's SE, MobileNetV3's (ReLU inside, hardsigmoid gate), and two other pairs
          using effnet::Act;
          const Act pairs[4][2] = {{Act::kSilu, Act::kSigmoid}, {Act::kRelu, Act::kHardsigmoid},
                                   {Act::kHardswish, Act::kSigmoid}, {Act::kRelu6, Act::kHardsigmoid}};
          const auto& pr = pairs[variant++ % 4];  // each pair on every layout, over the shapes
          run_case(isa, sh.n, sh.c, sh.h, sh.w, sh.s, layout, threads, threads == 3, rng, pr[0], pr[1]);
        }
}

void test_gate_special_values() {
  // Means of +-inf / NaN through the gate: sigmoid saturates to exactly 0 and 1, NaN stays NaN.
  for (effnet::Isa isa : isas()) {
    const int64_t c = 11, s = 1;
    std::vector<float> w1(c, 0.0f), b1(1, 0.0f), w2(c, 1.0f), b2(c, 0.0f);
    b2[0] = -1e30f; b2[1] = 1e30f; b2[2] = NAN; b2[3] = -INFINITY; b2[4] = INFINITY;
    std::vector<float> packed(effnet::se_packed_size(c, s)), pooled(c, 0.0f), gate(c, -1.0f);
    const int64_t s1[2] = {c, 1}, s2[2] = {1, 1};
    effnet::se_pack(c, s, w1.data(), s1, b1.data(), w2.data(), s2, b2.data(), packed.data());
    effnet::se_gate(1, c, s, packed.data(), pooled.data(), gate.data(), 1, isa);
    const char* name = effnet::isa_name(isa);
    EXPECT(gate[0] == 0.0f && gate[3] == 0.0f, "%s: sigmoid(-big) = %g, sigmoid(-inf) = %g", name, gate[0], gate[3]);
    EXPECT(gate[1] == 1.0f && gate[4] == 1.0f, "%s: sigmoid(big) = %g, sigmoid(inf) = %g", name, gate[1], gate[4]);
    EXPECT(std::isnan(gate[2]), "%s: sigmoid(NaN) = %g", name, gate[2]);
    EXPECT(std::fabs(gate[5] - 0.5f) < 1e-7f, "%s: sigmoid(0) = %g", name, gate[5]);
    // hardsigmoid: relu6(z + 3) / 6, exactly 0 and 1 past -3 and 3, NaN kept, 0.5 at 0
    effnet::se_gate(1, c, s, packed.data(), pooled.data(), gate.data(), 1, isa, effnet::Act::kSilu,
                    effnet::Act::kHardsigmoid);
    EXPECT(gate[0] == 0.0f && gate[3] == 0.0f, "%s: hardsigmoid(-big) = %g, (-inf) = %g", name, gate[0], gate[3]);
    EXPECT(gate[1] == 1.0f && gate[4] == 1.0f, "%s: hardsigmoid(big) = %g, (inf) = %g", name, gate[1], gate[4]);
    EXPECT(std::isnan(gate[2]), "%s: hardsigmoid(NaN) = %g", name, gate[2]);
    EXPECT(gate[5] == 0.5f, "%s: hardsigmoid(0) = %g", name, gate[5]);
  }
}

void test_bad_params() {
  effnet::SeParams p;
  p.n = 1; p.c = 0; p.h = 2; p.w = 2;
  bool threw = false;
  try {
    effnet::se_pool(p, nullptr, nullptr, 1, effnet::Isa::kScalar);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw, "se_pool must reject c = 0");
  // N = 0: every entry point on every ISA returns without writing its output (buffers of guards, sized for
  // one sample, checked untouched); N = 0 does not skip validation (C = 0 is still refused).
  p.c = 2; p.n = 0;
  set_strides(p.x_stride, Layout::kNHWC, 2, 2, 2);
  set_strides(p.y_stride, Layout::kNHWC, 2, 2, 2);
  const float guard = 12345.0f;
  std::vector<float> x(8, 1.0f), w(2, 0.5f), bias(2, 0.25f), out;
  std::vector<float> packed(effnet::se_packed_size(2, 1));
  const int64_t ws1[2] = {2, 1}, ws2[2] = {1, 1};
  effnet::se_pack(2, 1, w.data(), ws1, bias.data(), w.data(), ws2, bias.data(), packed.data());
  auto untouched = [&]() { return std::all_of(out.begin(), out.end(), [&](float v) { return v == guard; }); };
  for (effnet::Isa isa : isas()) {
    const char* name = effnet::isa_name(isa);
    out.assign(8, guard);
    effnet::squeeze_excite(p, 1, x.data(), packed.data(), out.data(), 2, isa);
    EXPECT(untouched(), "%s: squeeze_excite with N = 0 wrote its output", name);
    out.assign(8, guard);
    effnet::se_pool(p, x.data(), out.data(), 2, isa);
    EXPECT(untouched(), "%s: se_pool with N = 0 wrote its output", name);
    out.assign(8, guard);
    effnet::se_gate(0, 2, 1, packed.data(), x.data(), out.data(), 2, isa);
    EXPECT(untouched(), "%s: se_gate with N = 0 wrote its output", name);
    out.assign(8, guard);
    effnet::se_apply(p, x.data(), x.data(), out.data(), 2, isa);
    EXPECT(untouched(), "%s: se_apply with N = 0 wrote its output", name);
  }
  p.c = 0;
  threw = false;
  try {
    effnet::squeeze_excite(p, 1, x.data(), packed.data(), out.data(), 1, effnet::Isa::kScalar);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw, "squeeze_excite must reject c = 0 even with N = 0");
}

void test_openmp_backend() {
  // The kernels' threads on an OpenMP runtime (in the package: torch's libgomp): the same results, bit for
  // bit, as on the package's pool (tasks never depend on the thread that runs them), and an exception in a
  // task reaches the caller. Skipped where the toolchain has no libgomp to load.
  void* handle = dlopen("libgomp.so.1", RTLD_NOW);
  if (handle == nullptr) {
    std::printf("libgomp.so.1 not found: OpenMP backend not tested\n");
    return;
  }
  std::string why;
  EXPECT(!effnet::set_openmp_runtime("libnot-loaded-anywhere.so", &why) && !why.empty(), "unloaded library accepted");
  std::mt19937 rng(11);
  effnet::SeParams p;
  p.n = 2; p.c = 67; p.h = 19; p.w = 23;
  set_strides(p.x_stride, Layout::kNHWC, p.c, p.h, p.w);
  set_strides(p.y_stride, Layout::kNHWC, p.c, p.h, p.w);
  std::normal_distribution<float> d(0.5f, 1.0f);
  std::vector<float> x(static_cast<size_t>(p.n * p.c * p.h * p.w));
  for (auto& v : x) v = d(rng);
  const Weights wt = make_weights(p.c, 5, rng);
  const effnet::Isa isa = effnet::best_isa();
  std::vector<float> y_pool(x.size()), y_omp(x.size());
  effnet::squeeze_excite(p, 5, x.data(), wt.packed.data(), y_pool.data(), 3, isa);
  EXPECT(effnet::set_openmp_runtime("libgomp.so.1", &why), "set_openmp_runtime: %s", why.c_str());
  EXPECT(std::string(effnet::parallel_backend()) == "openmp", "backend is %s", effnet::parallel_backend());
  effnet::squeeze_excite(p, 5, x.data(), wt.packed.data(), y_omp.data(), 3, isa);
  EXPECT(y_omp == y_pool, "OpenMP backend changed the results");
  bool caught = false;
  try {
    effnet::parallel_for(64, 3, [](int64_t t) {
      if (t == 37) throw std::runtime_error("task 37");
    });
  } catch (const std::runtime_error& e) {
    caught = std::string(e.what()) == "task 37";
  }
  EXPECT(caught, "an exception in an OpenMP task did not reach the caller");
  effnet::set_openmp_runtime("");
  EXPECT(std::string(effnet::parallel_backend()) == "pool", "back to the pool");
}

}  // namespace

int main() {
  test_openmp_backend();
  test_shapes();
  test_gate_special_values();
  test_bad_params();
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
