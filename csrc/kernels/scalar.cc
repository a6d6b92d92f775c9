// Scalar reference micro-kernel for depthwise conv + bias + activation (any strides, any odd k).
// This is the oracle every SIMD micro-kernel is tested against and the fallback on CPUs
// without a SIMD path.
#include <cmath>
#include <stdexcept>
#include <string>

#include "effnet/dwconv.h"

namespace effnet {

float swish_ref(float x) {
  // PyTorch's CPU SiLU computes x / (1 + exp(-x)); matching it keeps NaN/inf behaviour identical.
  return x / (1.0f + std::exp(-x));
}

static void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

void check_params(const DwConvParams& p) {
  require(p.n >= 0, "n must be >= 0, got " + std::to_string(p.n));
  require(p.c >= 1, "c must be >= 1, got " + std::to_string(p.c));
  require(p.h >= 1 && p.w >= 1,
          "h and w must be >= 1, got " + std::to_string(p.h) + "x" + std::to_string(p.w));
  require(p.k >= 1 && p.k % 2 == 1, "k must be a positive odd kernel size, got " + std::to_string(p.k));
  require(p.stride == 1 || p.stride == 2, "stride must be 1 or 2, got " + std::to_string(p.stride));
  require(p.pad_top >= 0 && p.pad_left >= 0 && p.pad_top < p.k && p.pad_left < p.k,
          "pad_top/pad_left must be in [0, k), got " + std::to_string(p.pad_top) + "/" +
              std::to_string(p.pad_left));
  require(is_layer_act(p.act), std::string("act must be a layer activation (silu, relu, relu6, hardswish, "
                                            "identity), got ") + act_name(p.act));
  require(p.out_h >= 1 && p.out_w >= 1,
          "out_h and out_w must be >= 1, got " + std::to_string(p.out_h) + "x" + std::to_string(p.out_w));
  // The output must not need padding beyond k - 1 at the bottom/right.
  const int64_t pad_bottom = (p.out_h - 1) * p.stride + p.k - p.h - p.pad_top;
  const int64_t pad_right = (p.out_w - 1) * p.stride + p.k - p.w - p.pad_left;
  require(pad_bottom < p.k && pad_right < p.k && pad_bottom > -p.stride && pad_right > -p.stride,
          "out_h/out_w inconsistent with h/w, k, stride and padding (implied bottom/right pad " +
              std::to_string(pad_bottom) + "/" + std::to_string(pad_right) + ")");
}

namespace scalar {

namespace {

template <Act A>
void dwconv_bias_act(const DwConvParams& p, const float* x, const float* weight, const float* bias, float* y,
                     float* pooled) {
  const int64_t k = p.k;
  const double area = static_cast<double>(p.out_h * p.out_w);
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t c = 0; c < p.c; ++c) {
      const float* xc = x + n * p.x_stride[0] + c * p.x_stride[1];
      float* yc = y + n * p.y_stride[0] + c * p.y_stride[1];
      const float* wc = weight + c * k * k;
      const float b = bias[c];
      double sum = 0.0;
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        const int64_t ih0 = oh * p.stride - p.pad_top;
        for (int64_t ow = 0; ow < p.out_w; ++ow) {
          const int64_t iw0 = ow * p.stride - p.pad_left;
          float acc = 0.0f;
          for (int64_t kh = 0; kh < k; ++kh) {
            const int64_t ih = ih0 + kh;
            if (ih < 0 || ih >= p.h) continue;
            for (int64_t kw = 0; kw < k; ++kw) {
              const int64_t iw = iw0 + kw;
              if (iw < 0 || iw >= p.w) continue;
              acc += xc[ih * p.x_stride[2] + iw * p.x_stride[3]] * wc[kh * k + kw];
            }
          }
          const float out = act_apply<A>(acc + b);
          yc[oh * p.y_stride[2] + ow * p.y_stride[3]] = out;
          sum += out;
        }
      }
      if (pooled != nullptr) pooled[n * p.c + c] = static_cast<float>(sum / area);
    }
  }
}

}  // namespace

void dwconv_bias_swish(const DwConvParams& p, const float* x, const float* weight, const float* bias,
                       float* y, float* pooled) {
  with_act(p.act, [&](auto tag) { dwconv_bias_act<decltype(tag)::value>(p, x, weight, bias, y, pooled); });
}

}  // namespace scalar
}  // namespace effnet
