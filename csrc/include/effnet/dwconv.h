// Depthwise convolution + bias (folded BatchNorm) + activation (Swish unless DwConvParams::act says
// otherwise; effnet/act.h): torch-free kernel interface. The entry points keep their Swish names.
//
// Every kernel works on raw float pointers with element strides, so one entry point serves NCHW,
// NHWC (channels_last) and any other strided view. BatchNorm is folded by the caller:
//   weight'[c] = weight[c] * gamma[c] / sqrt(var[c] + eps),  bias'[c] = beta[c] - mean[c] * gamma[c] / sqrt(var[c] + eps)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "effnet/act.h"
#include "effnet/isa.h"
#include "effnet/microkernel.h"

namespace effnet {

// Shapes, strides (in elements) and padding of one depthwise call. The padding is explicit
// (top/left); bottom/right follow from out_h/out_w, so symmetric and TensorFlow SAME padding
// are both expressed here.
struct DwConvParams {
  int64_t n = 0, c = 0, h = 0, w = 0;   // input shape
  int64_t out_h = 0, out_w = 0;         // output spatial shape
  int64_t k = 3;                        // square kernel size (odd)
  int64_t stride = 1;
  int64_t pad_top = 0, pad_left = 0;
  int64_t x_stride[4] = {0, 0, 0, 0};   // n, c, h, w strides of the input
  int64_t y_stride[4] = {0, 0, 0, 0};   // n, c, h, w strides of the output
  Act act = Act::kSilu;                 // after the bias: a layer activation (not a gate)
};

// Output size along one axis for a given input size, kernel, stride and leading/trailing pad.
inline int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad_before, int64_t pad_after) {
  return (in + pad_before + pad_after - k) / stride + 1;
}

// Throws std::invalid_argument with a message naming the field when `p` is inconsistent.
void check_params(const DwConvParams& p);

namespace scalar {

// Reference micro-kernel: y = act(depthwise_conv(x, weight) + bias), any strides (act_ref of p.act).
// weight is (C, k, k) contiguous, bias is (C,). If `pooled` is non-null, it receives the (N, C)
// contiguous mean of y over the output plane, computed in the same pass.
// Accumulates in fp32 in the order (kh, kw), like the SIMD kernels.
void dwconv_bias_swish(const DwConvParams& p, const float* x, const float* weight, const float* bias,
                       float* y, float* pooled);

}  // namespace scalar

// The NHWC micro-kernels do each output row in channel groups of at most this many channels (a multiple
// of every ISA's vector width): a group's accumulators and packed weights stay in registers / L1.
constexpr int64_t kNhwcGroupChannels = 64;

// Per-ISA micro-kernels (each in its own translation unit and namespace, compiled with its own flags).
// A call computes output rows [oh0, oh1) of sample n, channels [c0, c1). If pool_sum is non-null it
// receives, per channel c in [c0, c1), the sum of those outputs (pool_sum[c - c0]). dwconv_nchw takes
// weight (C, k, k) and bias (C,) as given; dwconv_nhwc takes them packed by the dispatcher per vector
// of L channels (L = the ISA's lanes): weight [C/L][k*k][L], bias [C/L][L], zero past C, and c0 a
// multiple of L.
#define EFFNET_DECLARE_MICROKERNELS(ns)                                                              \
  namespace ns {                                                                                     \
  void dwconv_nhwc(const DwConvParams& p, const float* x, const float* weight, const float* bias,    \
                   float* y, int64_t n, int64_t c0, int64_t c1, int64_t oh0, int64_t oh1,            \
                   double* pool_sum);                                                                \
  void dwconv_nchw(const DwConvParams& p, const float* x, const float* weight, const float* bias,    \
                   float* y, int64_t n, int64_t c0, int64_t c1, int64_t oh0, int64_t oh1,            \
                   double* pool_sum);                                                                \
  void act_inplace(float* data, int64_t count, Act act);                                             \
  }
#define EFFNET_DECLARE_MICROKERNELS_X(name, e, lanes, has) EFFNET_DECLARE_MICROKERNELS(name)
EFFNET_SIMD_ISAS(EFFNET_DECLARE_MICROKERNELS_X)
#undef EFFNET_DECLARE_MICROKERNELS_X

// The NHWC SIMD micro-kernels read weights and biases packed per vector of L channels (L = the ISA's
// lanes): weight [ceil(C/L)][k*k][L] then bias [ceil(C/L)][L], zero past C. nhwc_packed_size() is the
// float count a call with (p, isa) needs, 0 when that call does not use the packed NHWC kernels (NCHW,
// other strides, the scalar path); pack_nhwc() writes it. Callers that run the same weights many times
// pack once and pass the result to dwconv_bias_swish (packing costs ~10-90 us on B0-B7's large layers).
size_t nhwc_packed_size(const DwConvParams& p, Isa isa);
void pack_nhwc(const DwConvParams& p, Isa isa, const float* weight, const float* bias, float* packed);

// Fused depthwise conv + bias + Swish (+ optional pool) over any strides: picks the micro-kernel for
// the layout (channels-contiguous NHWC, width-contiguous NCHW, else the scalar reference), splits the
// work over `num_threads` threads of our pool. Deterministic for a given shape, ISA and thread count.
// `packed`: pack_nhwc(p, isa, weight, bias) of these weights, or null (then packed here when needed).
void dwconv_bias_swish(const DwConvParams& p, const float* x, const float* weight, const float* bias,
                       float* y, float* pooled, int num_threads, Isa isa, const float* packed = nullptr);

// In-place vectorised Swish over a contiguous buffer (the activation epilogue of the fused kernels, also
// used for the 1x1 convolutions' epilogue and as the benchmarks' Swish compute floor).
void swish_inplace(float* data, int64_t count, Isa isa);
// The same for any activation or gate of effnet/act.h (resolved once per call).
void act_inplace(float* data, int64_t count, Act act, Isa isa);

// Swish (x * sigmoid(x)) with the same saturation as PyTorch's eager SiLU: x / (1 + exp(-x)).
float swish_ref(float x);

}  // namespace effnet
