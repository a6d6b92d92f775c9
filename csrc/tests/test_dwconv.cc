// C++ tests of the depthwise kernels (run by ctest, natively and under qemu-aarch64).
// The scalar micro-kernel is checked against a float64 direct convolution written independently
// here (explicit padded input), on awkward sizes, both paddings, both strides and strided layouts.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "effnet/dwconv.h"
#include "act64.h"
#include "expect.h"

namespace {

enum class Layout { kNCHW, kNHWC };
enum class Padding { kSymmetric, kSame };

struct Case {
  int64_t n, c, h, w, k, stride;
  Padding padding;
  Layout layout;
  effnet::Act act = effnet::Act::kSilu;
};

using effnet::Act;
constexpr Act kLayerActs[] = {Act::kSilu, Act::kRelu, Act::kRelu6, Act::kHardswish, Act::kIdentity};

void set_strides(int64_t* s, Layout layout, int64_t c, int64_t h, int64_t w) {
  if (layout == Layout::kNCHW) {
    s[0] = c * h * w; s[1] = h * w; s[2] = w; s[3] = 1;
  } else {
    s[0] = h * w * c; s[1] = 1; s[2] = w * c; s[3] = c;
  }
}

// Leading pad and output size along one axis.
void axis_geometry(int64_t in, int64_t k, int64_t stride, Padding padding, int64_t* pad_before, int64_t* out) {
  if (padding == Padding::kSymmetric) {
    *pad_before = k / 2;
    *out = effnet::conv_out_size(in, k, stride, k / 2, k / 2);
  } else {  // TensorFlow SAME: out = ceil(in / stride), extra pad goes to the end.
    *out = (in + stride - 1) / stride;
    const int64_t total = std::max<int64_t>((*out - 1) * stride + k - in, 0);
    *pad_before = total / 2;
  }
}


void run_case(const Case& cs, std::mt19937& rng) {
  effnet::DwConvParams p;
  p.n = cs.n; p.c = cs.c; p.h = cs.h; p.w = cs.w; p.k = cs.k; p.stride = cs.stride; p.act = cs.act;
  axis_geometry(cs.h, cs.k, cs.stride, cs.padding, &p.pad_top, &p.out_h);
  axis_geometry(cs.w, cs.k, cs.stride, cs.padding, &p.pad_left, &p.out_w);
  set_strides(p.x_stride, cs.layout, p.c, p.h, p.w);
  set_strides(p.y_stride, cs.layout, p.c, p.out_h, p.out_w);
  effnet::check_params(p);

  // (x ~ N(0, 3) with the cousins' activations: outputs on both sides of their kinks at -3, 0, 3 and 6)
  std::normal_distribution<float> dist(0.0f, cs.act == Act::kSilu ? 1.0f : 3.0f);
  std::vector<float> x(p.n * p.c * p.h * p.w), wt(p.c * p.k * p.k), b(p.c);
  for (auto& v : x) v = dist(rng);
  for (auto& v : wt) v = dist(rng) / static_cast<float>(p.k);
  for (auto& v : b) v = dist(rng);
  const int64_t y_numel = p.n * p.c * p.out_h * p.out_w;
  std::vector<float> y(y_numel, NAN), pooled(p.n * p.c, NAN);
  effnet::scalar::dwconv_bias_swish(p, x.data(), wt.data(), b.data(), y.data(), pooled.data());

  // Independent float64 reference on an explicitly zero-padded NCHW copy.
  const int64_t ph = (p.out_h - 1) * p.stride + p.k, pw = (p.out_w - 1) * p.stride + p.k;
  double max_err = 0.0, max_ref = 0.0, err2 = 0.0, ref2 = 0.0, pool_err = 0.0;
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t c = 0; c < p.c; ++c) {
      std::vector<double> padded(ph * pw, 0.0);
      for (int64_t i = 0; i < ph; ++i) {
        for (int64_t j = 0; j < pw; ++j) {
          const int64_t ih = i - p.pad_top, iw = j - p.pad_left;
          if (ih >= 0 && ih < p.h && iw >= 0 && iw < p.w)
            padded[i * pw + j] = x[n * p.x_stride[0] + c * p.x_stride[1] + ih * p.x_stride[2] + iw * p.x_stride[3]];
        }
      }
      double mean = 0.0;
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        for (int64_t ow = 0; ow < p.out_w; ++ow) {
          double acc = b[c];
          for (int64_t kh = 0; kh < p.k; ++kh)
            for (int64_t kw = 0; kw < p.k; ++kw)
              acc += padded[(oh * p.stride + kh) * pw + ow * p.stride + kw] * wt[(c * p.k + kh) * p.k + kw];
          const double ref = act64(acc, cs.act);
          const double got = y[n * p.y_stride[0] + c * p.y_stride[1] + oh * p.y_stride[2] + ow * p.y_stride[3]];
          max_err = std::max(max_err, std::fabs(got - ref));
          max_ref = std::max(max_ref, std::fabs(ref));
          err2 += (got - ref) * (got - ref);
          ref2 += ref * ref;
          mean += ref;
        }
      }
      mean /= static_cast<double>(p.out_h * p.out_w);
      pool_err = std::max(pool_err, std::fabs(pooled[n * p.c + c] - mean));
    }
  }
  const double rel = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  EXPECT(rel <= 1e-5 && max_err <= 1e-4 * std::max(max_ref, 1e-30) && pool_err <= 1e-5 * std::max(max_ref, 1.0),
         "%s n=%lld c=%lld h=%lld w=%lld k=%lld s=%lld %s %s: rel=%.3g max_err=%.3g max_ref=%.3g pool_err=%.3g",
         effnet::act_name(cs.act), (long long)cs.n, (long long)cs.c, (long long)cs.h, (long long)cs.w, (long long)cs.k,
         (long long)cs.stride, cs.padding == Padding::kSame ? "same" : "symmetric",
         cs.layout == Layout::kNHWC ? "nhwc" : "nchw", rel, max_err, max_ref, pool_err);
}

// Calls fn(k, stride, padding, layout, c, h, w) for every combination; returns how many.
template <size_t NC, size_t NS, typename F>
int for_each_case(const int64_t (&channels)[NC], const int64_t (&sizes)[NS][2], F fn) {
  int cases = 0;
  for (int64_t k : {1, 3, 5, 7})
    for (int64_t stride : {1, 2})
      for (Padding pad : {Padding::kSymmetric, Padding::kSame})
        for (Layout layout : {Layout::kNCHW, Layout::kNHWC})
          for (int64_t c : channels)
            for (const auto& hw : sizes) fn(k, stride, pad, layout, c, hw[0], hw[1], cases++);
  return cases;
}

void test_awkward_shapes() {
  std::mt19937 rng(1234);
  const int64_t channels[] = {1, 3, 7, 8, 16, 17, 31, 33};
  const int64_t sizes[][2] = {{1, 1}, {2, 3}, {5, 5}, {7, 4}, {13, 11}, {14, 14}};
  const int cases = for_each_case(channels, sizes, [&](int64_t k, int64_t stride, Padding pad, Layout layout,
                                                       int64_t c, int64_t h, int64_t w, int i) {
    // every activation on every (k, stride, padding, layout): they cycle over the channel / size cases
    run_case({(c % 2) + 1, c, h, w, k, stride, pad, layout, kLayerActs[i % 5]}, rng);
  });
  std::printf("awkward shapes: %d cases\n", cases);
}

void test_efficientnet_b0_shapes() {
  // The depthwise layers of EfficientNet-B0 at 224x224 (C, H=W of the input, k, stride).
  std::mt19937 rng(99);
  const int64_t layers[][4] = {{32, 112, 3, 1}, {96, 112, 3, 2}, {144, 56, 3, 1}, {144, 56, 5, 2},
                               {240, 28, 5, 1}, {240, 28, 3, 2}, {480, 14, 3, 1}, {480, 14, 5, 1},
                               {672, 14, 5, 1}, {672, 14, 5, 2}, {1152, 7, 5, 1}, {1152, 7, 3, 1}};
  for (const auto& l : layers)
    for (Layout layout : {Layout::kNCHW, Layout::kNHWC})
      run_case({1, l[0], l[1], l[1], l[2], l[3], Padding::kSymmetric, layout}, rng);
}

void test_empty_batch() {
  // N = 0: the scalar kernel and the dispatcher on every ISA the host runs, both layouts, return without
  // writing y or pooled (buffers of guards, sized for one sample, checked untouched), and N = 0 does not skip
  // the dispatcher's validation.
  effnet::DwConvParams p;
  p.n = 0; p.c = 4; p.h = 3; p.w = 3; p.k = 3; p.stride = 1; p.pad_top = p.pad_left = 1;
  p.out_h = p.out_w = 3;
  const float guard = 12345.0f;
  std::vector<float> x(36, 1.0f), w(36, 0.5f), b(4, 0.25f), y, pooled;
  auto untouched = [&]() {
    return std::all_of(y.begin(), y.end(), [&](float v) { return v == guard; }) &&
           std::all_of(pooled.begin(), pooled.end(), [&](float v) { return v == guard; });
  };
  for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    const char* lname = layout == Layout::kNHWC ? "nhwc" : "nchw";
    set_strides(p.x_stride, layout, 4, 3, 3);
    set_strides(p.y_stride, layout, 4, 3, 3);
    effnet::check_params(p);
    y.assign(36, guard); pooled.assign(4, guard);
    effnet::scalar::dwconv_bias_swish(p, x.data(), w.data(), b.data(), y.data(), pooled.data());
    EXPECT(untouched(), "scalar::dwconv_bias_swish %s: N = 0 wrote to y or pooled", lname);
    for (effnet::Isa isa : effnet::kAllIsas) {
      if (!effnet::isa_supported(isa)) continue;
      y.assign(36, guard); pooled.assign(4, guard);
      effnet::dwconv_bias_swish(p, x.data(), w.data(), b.data(), y.data(), pooled.data(), 3, isa);
      EXPECT(untouched(), "dwconv_bias_swish isa=%s %s: N = 0 wrote to y or pooled", effnet::isa_name(isa), lname);
    }
  }
  auto bad = p;
  bad.k = 4;
  bool threw = false;
  try {
    effnet::dwconv_bias_swish(bad, x.data(), w.data(), b.data(), y.data(), pooled.data(), 1, effnet::Isa::kScalar);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw, "N = 0 with k = 4: the dispatcher must still reject the parameters");
}

void expect_invalid(effnet::DwConvParams p, const char* field) {
  bool threw = false;
  std::string msg;
  try {
    effnet::check_params(p);
  } catch (const std::invalid_argument& e) {
    threw = true;
    msg = e.what();
  }
  EXPECT(threw && msg.find(field) != std::string::npos, "expected invalid_argument naming '%s', got '%s'",
         field, msg.c_str());
}

void test_check_params() {
  effnet::DwConvParams good;
  good.n = 1; good.c = 2; good.h = 5; good.w = 5; good.k = 3; good.stride = 1;
  good.pad_top = good.pad_left = 1; good.out_h = good.out_w = 5;
  effnet::check_params(good);
  auto p = good; p.k = 4; expect_invalid(p, "k must");
  p = good; p.stride = 3; expect_invalid(p, "stride");
  p = good; p.c = 0; expect_invalid(p, "c must");
  p = good; p.out_h = 9; expect_invalid(p, "out_h");
  p = good; p.pad_top = 3; expect_invalid(p, "pad_top");
  p = good; p.act = Act::kSigmoid; expect_invalid(p, "act must");
}

void test_swish_special_values() {
  EXPECT(std::isnan(effnet::swish_ref(NAN)), "swish(nan) must be nan");
  EXPECT(effnet::swish_ref(INFINITY) == INFINITY, "swish(inf) must be inf");
  EXPECT(effnet::swish_ref(1e30f) == 1e30f, "swish(1e30) must saturate to 1e30");
  EXPECT(effnet::swish_ref(-1e30f) == 0.0f, "swish(-1e30) must saturate to -0");
  EXPECT(std::fabs(effnet::swish_ref(1.0f) - 0.7310585786f) < 1e-7f, "swish(1)");
}

// Every SIMD path the host can run, through the threaded dispatcher, against the scalar reference.
void run_isa_case(effnet::Isa isa, const Case& cs, int threads, std::mt19937& rng, bool strided_view) {
  effnet::DwConvParams p;
  p.n = cs.n; p.c = cs.c; p.h = cs.h; p.w = cs.w; p.k = cs.k; p.stride = cs.stride; p.act = cs.act;
  axis_geometry(cs.h, cs.k, cs.stride, cs.padding, &p.pad_top, &p.out_h);
  axis_geometry(cs.w, cs.k, cs.stride, cs.padding, &p.pad_left, &p.out_w);
  // Input buffer with one guard element on each side of the tensor (checked untouched), optionally a
  // view with a channel offset (x[:, 1:]-like) inside a larger buffer.
  const int64_t c_alloc = strided_view ? p.c + 1 : p.c;
  set_strides(p.x_stride, cs.layout, c_alloc, p.h, p.w);
  set_strides(p.y_stride, cs.layout, p.c, p.out_h, p.out_w);
  std::normal_distribution<float> dist(0.0f, cs.act == Act::kSilu ? 1.0f : 3.0f);
  std::vector<float> xbuf(p.n * c_alloc * p.h * p.w + 2), wt(p.c * p.k * p.k), b(p.c);
  for (auto& v : xbuf) v = dist(rng);
  for (auto& v : wt) v = dist(rng) / static_cast<float>(p.k);
  for (auto& v : b) v = dist(rng);
  const float* x = xbuf.data() + 1 + (strided_view ? (cs.layout == Layout::kNCHW ? p.h * p.w : 1) : 0);
  const int64_t y_numel = p.n * p.c * p.out_h * p.out_w;
  const float guard = 12345.0f;
  std::vector<float> y_ref(y_numel), y(y_numel + 2, guard), pool_ref(p.n * p.c), pool(p.n * p.c + 2, guard);
  effnet::scalar::dwconv_bias_swish(p, x, wt.data(), b.data(), y_ref.data(), pool_ref.data());
  effnet::dwconv_bias_swish(p, x, wt.data(), b.data(), y.data() + 1, pool.data() + 1, threads, isa);
  double err2 = 0, ref2 = 0, max_err = 0, max_ref = 0, pool_err = 0;
  for (int64_t i = 0; i < y_numel; ++i) {
    const double d = static_cast<double>(y[i + 1]) - y_ref[i];
    err2 += d * d;
    ref2 += static_cast<double>(y_ref[i]) * y_ref[i];
    max_err = std::max(max_err, std::fabs(d));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(y_ref[i])));
  }
  for (int64_t i = 0; i < p.n * p.c; ++i)
    pool_err = std::max(pool_err, std::fabs(static_cast<double>(pool[i + 1]) - pool_ref[i]));
  const double rel = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  const bool guards = y[0] == guard && y[y_numel + 1] == guard && pool[0] == guard && pool[p.n * p.c + 1] == guard;
  // Weights packed once by the caller (pack_nhwc) give the same bits as packing inside the call.
  if (const size_t pack_size = effnet::nhwc_packed_size(p, isa)) {
    std::vector<float> packed(pack_size), y2(y_numel), pool2(p.n * p.c);
    effnet::pack_nhwc(p, isa, wt.data(), b.data(), packed.data());
    effnet::dwconv_bias_swish(p, x, wt.data(), b.data(), y2.data(), pool2.data(), threads, isa, packed.data());
    EXPECT(std::equal(y2.begin(), y2.end(), y.begin() + 1) && std::equal(pool2.begin(), pool2.end(), pool.begin() + 1),
           "%s: pre-packed weights differ from packing in the call", effnet::isa_name(isa));
  }
  EXPECT(rel <= 1e-5 && max_err <= 1e-4 * std::max(max_ref, 1e-30) && pool_err <= 1e-5 * std::max(max_ref, 1.0) &&
             guards,
         "%s %s threads=%d n=%lld c=%lld h=%lld w=%lld k=%lld s=%lld %s %s%s: rel=%.3g max_err=%.3g pool_err=%.3g guards=%d",
         effnet::isa_name(isa), effnet::act_name(cs.act), threads, (long long)cs.n, (long long)cs.c, (long long)cs.h, (long long)cs.w,
         (long long)cs.k, (long long)cs.stride, cs.padding == Padding::kSame ? "same" : "symmetric",
         cs.layout == Layout::kNHWC ? "nhwc" : "nchw", strided_view ? " view" : "", rel, max_err, pool_err,
         guards);
}

void test_isa_paths() {
  std::mt19937 rng(4321);
  const int64_t channels[] = {1, 3, 4, 5, 8, 15, 16, 17, 31, 33, 64, 67};
  const int64_t sizes[][2] = {{1, 1}, {2, 3}, {5, 5}, {7, 4}, {13, 11}, {17, 40}};
  int cases = 0;
  for (effnet::Isa isa : effnet::kAllIsas) {
    if (!effnet::isa_supported(isa)) {
      std::printf("isa %s: not supported on this host, skipped\n", effnet::isa_name(isa));
      continue;
    }
    cases += for_each_case(channels, sizes, [&](int64_t k, int64_t stride, Padding pad, Layout layout, int64_t c,
                                                int64_t h, int64_t w, int i) {
      const int threads = 1 + ((cases + i) % 3);
      run_isa_case(isa, {(c % 3) + 1, c, h, w, k, stride, pad, layout, kLayerActs[i % 5]}, threads, rng, c % 4 == 1);
    });
    std::printf("isa %s: checked\n", effnet::isa_name(isa));
  }
  std::printf("isa paths: %d cases (best isa: %s)\n", cases, effnet::isa_name(effnet::best_isa()));
}

void test_swish_inplace() {
  std::vector<float> v = {0.0f, 1.0f, -1.0f, 3.5f, -7.25f, 20.0f, -20.0f, 88.5f, -88.5f, 1e30f, -1e30f,
                          INFINITY, -INFINITY, NAN, 1e-40f, -1e-40f, 0.3f, -0.3f, 5.0f};
  auto run = [&](void (*fn)(float*, int64_t, effnet::Act), const char* name) {  // the SIMD Swish: act_inplace(silu)
    std::vector<float> got = v;
    fn(got.data(), static_cast<int64_t>(got.size()), effnet::Act::kSilu);
    for (size_t i = 0; i < v.size(); ++i) {
      const float ref = effnet::swish_ref(v[i]);
      const bool same_nan = std::isnan(ref) == std::isnan(got[i]);
      const bool close = std::isnan(ref) || ref == got[i] || std::fabs(ref - got[i]) <= 2e-7f * std::fabs(ref) + 1e-35f;  // exp(-z) saturates to inf for z < -88: -0 instead of |y| < 4e-37
      EXPECT(same_nan && close, "%s swish(%g) = %g, expected %g", name, v[i], got[i], ref);
    }
  };
#define EFFNET_RUN(name, e, lanes, has) \
  if (effnet::isa_supported(effnet::Isa::e)) run(effnet::name::act_inplace, #name);
  EFFNET_SIMD_ISAS(EFFNET_RUN)
#undef EFFNET_RUN
}

// Every activation and gate of every SIMD path against the scalar rule (effnet/act.h) on special and
// ordinary values, and the scalar rule against what eager PyTorch gives for the special ones.
void test_act_inplace() {
  const float inf = INFINITY, nan = NAN;
  const std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 2.999f, 3.0f, 3.001f, -2.999f, -3.0f, -3.001f, 5.999f, 6.0f,
                                6.001f, 20.0f, -20.0f, 88.5f, -88.5f, 1e30f, -1e30f, inf, -inf, nan, 1e-40f, -1e-40f,
                                0.3f, -0.3f, 5.0f};
  const Act all[] = {Act::kSilu, Act::kRelu, Act::kRelu6, Act::kHardswish, Act::kIdentity, Act::kSigmoid,
                     Act::kHardsigmoid};
  auto run = [&](void (*fn)(float*, int64_t, Act), const char* name) {
    for (Act act : all) {
      std::vector<float> got = v;
      fn(got.data(), static_cast<int64_t>(got.size()), act);
      const bool exp_based = act == Act::kSilu || act == Act::kSigmoid;
      for (size_t i = 0; i < v.size(); ++i) {
        const float ref = effnet::act_ref(v[i], act);
        // the clamps are exact (same formula, same order); the exp-based ones within 2 ulp-ish
        const bool ok = std::isnan(ref) ? std::isnan(got[i])
                                        : (got[i] == ref || (exp_based && std::fabs(ref - got[i]) <=
                                                                              2e-7f * std::fabs(ref) + 1e-35f));
        EXPECT(ok, "%s %s(%g) = %g, expected %g", name, effnet::act_name(act), v[i], got[i], ref);
      }
    }
  };
#define EFFNET_RUN(name, e, lanes, has) \
  if (effnet::isa_supported(effnet::Isa::e)) run(effnet::name::act_inplace, #name);
  EFFNET_SIMD_ISAS(EFFNET_RUN)
#undef EFFNET_RUN
  // eager's rules (torch 2.x fp32 CPU): NaN stays NaN everywhere; clamps saturate; hardswish(-inf) is NaN
  // (-inf * relu6(-inf + 3) = -inf * 0), hardswish(inf) = inf * 6 / 6 = inf
  using effnet::act_ref;
  EXPECT(std::isnan(act_ref(nan, Act::kRelu)) && std::isnan(act_ref(nan, Act::kRelu6)) &&
             std::isnan(act_ref(nan, Act::kHardswish)) && std::isnan(act_ref(nan, Act::kHardsigmoid)) &&
             std::isnan(act_ref(nan, Act::kIdentity)),
         "NaN must stay NaN");
  EXPECT(act_ref(inf, Act::kRelu) == inf && act_ref(-inf, Act::kRelu) == 0.0f, "relu(+-inf)");
  EXPECT(act_ref(inf, Act::kRelu6) == 6.0f && act_ref(-inf, Act::kRelu6) == 0.0f && act_ref(7.0f, Act::kRelu6) == 6.0f,
         "relu6 clamps");
  EXPECT(act_ref(inf, Act::kHardswish) == inf && std::isnan(act_ref(-inf, Act::kHardswish)) &&
             act_ref(-3.5f, Act::kHardswish) == 0.0f && act_ref(4.0f, Act::kHardswish) == 4.0f,
         "hardswish(+inf) = inf, hardswish(-inf) = NaN, 0 below -3, x above 3");
  EXPECT(act_ref(1.0f, Act::kHardswish) == 1.0f * 4.0f / 6.0f, "hardswish(1) = 1 * 4 / 6");
  EXPECT(act_ref(inf, Act::kHardsigmoid) == 1.0f && act_ref(-inf, Act::kHardsigmoid) == 0.0f &&
             act_ref(0.0f, Act::kHardsigmoid) == 0.5f,
         "hardsigmoid(+-inf) = 1 / 0, hardsigmoid(0) = 0.5");
}

void test_parse_isa() {
  bool threw = false;
  try {
    effnet::parse_isa("sse9");
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw, "parse_isa must reject unknown names");
  EXPECT(effnet::parse_isa("scalar") == effnet::Isa::kScalar, "parse_isa(scalar)");
}

}  // namespace

int main() {
  test_isa_paths();
  test_swish_inplace();
  test_act_inplace();
  test_parse_isa();
  test_awkward_shapes();
  test_efficientnet_b0_shapes();
  test_empty_batch();
  test_check_params();
  test_swish_special_values();
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
