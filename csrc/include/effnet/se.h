// Squeeze-excitation: torch-free kernel interface (fp32, any strides).
//
//   gate[n, c] = g(b2[c] + sum_j W2[c, j] * f(b1[j] + sum_c' W1[j, c'] * mean_hw(x)[n, c']))
//   y = x * gate[n, c]
//
// f (`inner`) is a layer activation of effnet/act.h (SiLU in EfficientNet, ReLU in MobileNetV3), g (`gate`)
// sigmoid or hardsigmoid.
//
// W1 (squeeze S x C) and W2 (C x S) are the reduce / expand 1x1 convolutions of torchvision's
// SqueezeExcitation and timm's SqueezeExcite. They are packed once per weight set (se_pack) so both
// matrix-vector products run along contiguous channels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "effnet/dwconv.h"

namespace effnet {

// Shape and element strides of x (and y for se_apply), n/c/h/w order.
struct SeParams {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t x_stride[4] = {0, 0, 0, 0};
  int64_t y_stride[4] = {0, 0, 0, 0};
};

// Packed weights: W1 [S][C], b1 [S], W2 transposed [S][C], b2 [C].
inline size_t se_packed_size(int64_t c, int64_t s) { return static_cast<size_t>(2 * s * c + s + c); }
// w1 element (j, c) at w1[j * w1_stride[0] + c * w1_stride[1]]; w2 element (c, j) at
// w2[c * w2_stride[0] + j * w2_stride[1]]; biases contiguous.
void se_pack(int64_t c, int64_t s, const float* w1, const int64_t w1_stride[2], const float* b1, const float* w2,
             const int64_t w2_stride[2], const float* b2, float* packed);

// pooled (N x C, contiguous) = mean of x over H x W, accumulated in double per block of pixels.
void se_pool(const SeParams& p, const float* x, float* pooled, int num_threads, Isa isa);
// gate (N x C, contiguous) from pooled means (N x C, contiguous).
void se_gate(int64_t n, int64_t c, int64_t s, const float* packed, const float* pooled, float* gate, int num_threads,
             Isa isa, Act inner = Act::kSilu, Act gate_act = Act::kSigmoid);
// y = x * gate[n, c] (y may alias x when their strides match).
void se_apply(const SeParams& p, const float* x, const float* gate, float* y, int num_threads, Isa isa);
// The stand-alone SE: pool, gate, apply. Throws std::invalid_argument on inconsistent params.
void squeeze_excite(const SeParams& p, int64_t s, const float* x, const float* packed, float* y, int num_threads,
                    Isa isa, Act inner = Act::kSilu, Act gate_act = Act::kSigmoid);

// Per-ISA micro-kernels (declared for every ISA namespace that has them; see se_impl.inc).
#define EFFNET_DECLARE_SE_MICROKERNELS(ns)                                                              \
  namespace ns {                                                                                        \
  void se_pool_rows(const float* x, int64_t rows, int64_t xs, int64_t nc, double* sum);                 \
  double se_sum(const float* x, int64_t count);                                                         \
  void se_reduce_rows(int64_t c, int64_t s, const float* packed, const float* pooled, float* hidden,    \
                      int64_t rows, int64_t j0, int64_t j1);                                            \
  void se_expand_rows(int64_t c, int64_t s, const float* packed, const float* hidden, float* gate,      \
                      int64_t rows, int64_t c0, int64_t c1, Act gate_act);                              \
  void se_scale_rows(const float* x, int64_t xs, float* y, int64_t ys, int64_t rows, const float* g,    \
                     int64_t nc);                                                                       \
  void se_scale_const(const float* x, float* y, int64_t count, float g);                                \
  }
#define EFFNET_DECLARE_SE_MICROKERNELS_X(name, e, lanes, has) EFFNET_DECLARE_SE_MICROKERNELS(name)
EFFNET_SIMD_ISAS(EFFNET_DECLARE_SE_MICROKERNELS_X)
#undef EFFNET_DECLARE_SE_MICROKERNELS_X

}  // namespace effnet
