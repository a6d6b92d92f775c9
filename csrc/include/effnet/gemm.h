// 1x1 convolution as a GEMM on the channels-last view, with the epilogues an MBConv block needs:
//
//   C[i, j] = act(sum_k A[i, k] * s[i / rows_per_scale, k] * W[j, k] + bias[j]) + R[i, j]
//
// A is the (pixels x in-channels) NHWC activation, W the (out x in) weight of the 1x1 conv with BN
// folded, packed once per weight (gemm_pack) into panels of gemm_nr(isa) output channels, k-major, zero
// padded. s is the optional SE gate (one row of in-channel scales per sample): it is applied to A while a
// block of A rows is copied into a per-thread buffer that all the block's panels then reuse (the GotoBLAS
// "pack A" step), so the gate costs one pass over A. act is any layer activation of effnet/act.h (identity by
// default); R the optional residual.
//
// Micro-kernel: MR rows x 2 vectors of columns of accumulators held in registers (AVX2 6 x 16, AVX-512
// 8 x 32, NEON 8 x 8), one broadcast of A and two loads of packed W per k step. K is split in chunks of
// kGemmKc so a panel chunk (kc x NR floats) stays in L1 while the rows of a block stream past it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "effnet/dwconv.h"

namespace effnet {

int gemm_nr(Isa isa);  // output channels per packed panel
// Floats gemm_pack writes for an n x k weight.
size_t gemm_packed_size(int64_t n, int64_t k, Isa isa);
// w element (j, kk) at w[j * w_stride_n + kk * w_stride_k].
void gemm_pack(int64_t n, int64_t k, const float* w, int64_t w_stride_n, int64_t w_stride_k, float* packed, Isa isa);

struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;  // A[i, kk] at a[i * lda + kk]
  int64_t lda = 0;
  const float* packed = nullptr;  // gemm_pack(n, k, ..., isa) for the same isa
  const float* bias = nullptr;    // n floats, or null
  const float* scale = nullptr;   // (m / rows_per_scale) x k row-major, or null
  int64_t rows_per_scale = 0;     // rows sharing one row of scale (pixels per sample); > 0 with scale
  const float* residual = nullptr;  // R[i, j] at residual[i * ldr + j], or null
  int64_t ldr = 0;
  float* c = nullptr;  // C[i, j] at c[i * ldc + j]; must not overlap A, R or the packed weight
  int64_t ldc = 0;
  Act act = Act::kIdentity;  // after the bias, before the residual
};

// Throws std::invalid_argument on inconsistent arguments.
void gemm(const GemmArgs& g, int num_threads, Isa isa);

// One task of the threaded driver: rows [i0, i1) x panels [p0, p1), every k; and the ISA's panel width
// (NR) and rows per micro-kernel (MR). Per-ISA, see gemm_impl.inc.
#define EFFNET_DECLARE_GEMM_MICROKERNELS(ns)                                               \
  namespace ns {                                                                           \
  void gemm_block(const GemmArgs& g, int64_t i0, int64_t i1, int64_t p0, int64_t p1);      \
  int gemm_nr();                                                                           \
  int gemm_mr();                                                                           \
  }
#define EFFNET_DECLARE_GEMM_MICROKERNELS_X(name, e, lanes, has) EFFNET_DECLARE_GEMM_MICROKERNELS(name)
EFFNET_SIMD_ISAS(EFFNET_DECLARE_GEMM_MICROKERNELS_X)
#undef EFFNET_DECLARE_GEMM_MICROKERNELS_X

}  // namespace effnet
