// AVX2 + FMA micro-kernels of every op (8 fp32 lanes): the vector helpers, then the depthwise, SE and GEMM
// bodies (*_impl.inc) instantiated with them. Compiled with -mavx2 -mfma only; reached only when the CPU
// reports both (see isa.cc).
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "effnet/dwconv.h"
#include "effnet/gemm.h"
#include "effnet/se.h"

namespace effnet {
namespace avx2 {
namespace {

using vf = __m256;
constexpr int kLanes = 8;

inline __m256i lane_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline vf vload_n(const float* p, int n) { return _mm256_maskload_ps(p, lane_mask(n)); }  // no fault past n
inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
inline void vstore_n(float* p, vf v, int n) { _mm256_maskstore_ps(p, lane_mask(n), v); }
inline vf vkeep_n(vf v, int n) { return _mm256_and_ps(v, _mm256_castsi256_ps(lane_mask(n))); }
inline vf vset1(float a) { return _mm256_set1_ps(a); }
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }

// swish(z) = z / (1 + exp(-z)), the form eager PyTorch uses, with one division (vdivps: one issue
// slot, where rcp + Newton + multiply cost three on the FMA ports that the convolution also needs).
// exp(t), t = -z: t is raised to -80 (1 + exp(t) rounds to exactly 1 there, so swish(z) = z for z > 80,
// as with the exact exp; at -87 the 2^n scale is 2^-126 and r * 2^n a subnormal, which costs a microcode
// assist per lane: measured 2-4x slower expand + depthwise layers where many pre-activations exceed 87); the
// magic-number trick (XNNPACK-style) builds 2^n, two-constant range reduction leaves |r| <= ln2/2, and
// a degree-5 minimax polynomial gives exp(r) to 1e-7 relative. Where t > 88, 1 + exp(t) is replaced by
// +inf, so the result is z / inf as in eager: -0 for finite z, NaN for z = -inf; NaN stays NaN.
// 1 + exp(-z), +inf where -z > 88 (the denominator of swish and sigmoid).
EFFNET_ALWAYS_INLINE vf vexp_neg1p(vf z) {
  const vf neg = _mm256_sub_ps(_mm256_setzero_ps(), z);
  const vf t = _mm256_max_ps(neg, _mm256_set1_ps(-80.0f));
  const vf magic = _mm256_set1_ps(12583039.0f);  // 1.5 * 2^23 + 127: low mantissa bits hold n + 127
  const vf j = _mm256_fmadd_ps(t, _mm256_set1_ps(1.44269504088896341f), magic);
  const vf n = _mm256_sub_ps(j, magic);
  const vf s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(j), 23));  // 2^n
  vf r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), t);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  vf q = _mm256_fmadd_ps(_mm256_set1_ps(kExpC5), r, _mm256_set1_ps(kExpC4));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(kExpC3));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(kExpC2));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(kExpC1));
  // 1 + exp(t) = (1 + 2^n) + (r 2^n) q(r)
  vf d = _mm256_fmadd_ps(_mm256_mul_ps(r, s), q, _mm256_add_ps(s, _mm256_set1_ps(1.0f)));
  d = _mm256_blendv_ps(d, _mm256_set1_ps(HUGE_VALF), _mm256_cmp_ps(neg, _mm256_set1_ps(88.0f), _CMP_GT_OQ));
  return d;
}

EFFNET_ALWAYS_INLINE vf vswish(vf z) { return _mm256_div_ps(z, vexp_neg1p(z)); }

inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
// max / min of a constant c and x: x when x is NaN (the second operand is returned when either is NaN).
inline vf vmax_c(vf c, vf x) { return _mm256_max_ps(c, x); }
inline vf vmin_c(vf c, vf x) { return _mm256_min_ps(c, x); }
inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
// v with its subnormal lanes (0 < |v| < FLT_MIN) set to zero (see scale_row in gemm_impl.inc).
inline vf vflush_subnormal(vf v) {
  const vf mag = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
  return _mm256_and_ps(v, _mm256_cmp_ps(mag, _mm256_set1_ps(1.17549435e-38f), _CMP_NLT_UQ));  // NaN kept
}
inline float vhsum(vf v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
// sigmoid(z) = 1 / (1 + exp(-z)) with the same denominator as vswish; NaN in, NaN out (the max above
// turns a NaN into -87, so it is put back here).
EFFNET_ALWAYS_INLINE vf vsigmoid(vf z) {
  const vf r = _mm256_div_ps(_mm256_set1_ps(1.0f), vexp_neg1p(z));
  return _mm256_blendv_ps(r, z, _mm256_cmp_ps(z, z, _CMP_UNORD_Q));
}

inline void deinterleave(const float* src, float* even, float* odd, int64_t pairs) {
  int64_t i = 0;
  for (; i + kLanes <= pairs; i += kLanes) {
    const vf a = _mm256_loadu_ps(src + 2 * i), b = _mm256_loadu_ps(src + 2 * i + kLanes);
    // Within 128-bit lanes: a0 a2 b0 b2 | a4 a6 b4 b6, then fix the 64-bit order.
    const vf ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    const vf od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    _mm256_storeu_ps(even + i, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8)));
    _mm256_storeu_ps(odd + i, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), 0xD8)));
  }
  for (; i < pairs; ++i) {
    even[i] = src[2 * i];
    odd[i] = src[2 * i + 1];
  }
}

}  // namespace

#include "dwconv_impl.inc"
#include "se_impl.inc"
#include "gemm_impl.inc"

}  // namespace avx2
}  // namespace effnet
