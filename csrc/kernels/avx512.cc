// AVX-512F micro-kernels of every op (16 fp32 lanes; the depthwise, SE and GEMM bodies from *_impl.inc).
// Compiled with -mavx512f -mfma only; reached only when the CPU reports AVX-512F (see isa.cc).
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "effnet/dwconv.h"
#include "effnet/gemm.h"
#include "effnet/se.h"

namespace effnet {
namespace avx512 {
namespace {

using vf = __m512;
constexpr int kLanes = 16;

inline __mmask16 lane_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline vf vload_n(const float* p, int n) { return _mm512_maskz_loadu_ps(lane_mask(n), p); }  // no fault past n
inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
inline void vstore_n(float* p, vf v, int n) { _mm512_mask_storeu_ps(p, lane_mask(n), v); }
inline vf vkeep_n(vf v, int n) { return _mm512_maskz_mov_ps(lane_mask(n), v); }
inline vf vset1(float a) { return _mm512_set1_ps(a); }
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }

// swish(z) = z / (1 + exp(-z)), the form eager PyTorch uses; same scheme as the AVX2 kernel (exp(-z)
// from the magic-number 2^n and a degree-5 polynomial, one division, 1 + exp(-z) = +inf past 88).
// 1 + exp(-z), +inf where -z > 88 (the denominator of swish and sigmoid).
EFFNET_ALWAYS_INLINE vf vexp_neg1p(vf z) {
  const vf neg = _mm512_sub_ps(_mm512_setzero_ps(), z);
  const vf t = _mm512_max_ps(neg, _mm512_set1_ps(-80.0f));
  const vf magic = _mm512_set1_ps(12583039.0f);  // 1.5 * 2^23 + 127
  const vf j = _mm512_fmadd_ps(t, _mm512_set1_ps(1.44269504088896341f), magic);
  const vf n = _mm512_sub_ps(j, magic);
  const vf s = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(j), 23));
  vf r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), t);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  vf q = _mm512_fmadd_ps(_mm512_set1_ps(kExpC5), r, _mm512_set1_ps(kExpC4));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(kExpC3));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(kExpC2));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(kExpC1));
  vf d = _mm512_fmadd_ps(_mm512_mul_ps(r, s), q, _mm512_add_ps(s, _mm512_set1_ps(1.0f)));
  d = _mm512_mask_mov_ps(d, _mm512_cmp_ps_mask(neg, _mm512_set1_ps(88.0f), _CMP_GT_OQ), _mm512_set1_ps(HUGE_VALF));
  return d;
}

EFFNET_ALWAYS_INLINE vf vswish(vf z) { return _mm512_div_ps(z, vexp_neg1p(z)); }

inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
// max / min of a constant c and x: x when x is NaN (the second operand is returned when either is NaN).
inline vf vmax_c(vf c, vf x) { return _mm512_max_ps(c, x); }
inline vf vmin_c(vf c, vf x) { return _mm512_min_ps(c, x); }
inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
// v with its subnormal lanes (0 < |v| < FLT_MIN) set to zero (see scale_row in gemm_impl.inc).
inline vf vflush_subnormal(vf v) {
  const vf mag = _mm512_abs_ps(v);
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(mag, _mm512_set1_ps(1.17549435e-38f), _CMP_NLT_UQ), v);  // NaN kept
}
inline float vhsum(vf v) {  // (_mm512_reduce_add_ps trips GCC 12's -Wuninitialized in its own header)
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
// sigmoid(z) = 1 / (1 + exp(-z)) with vswish's denominator; NaN in, NaN out (put back after the max).
EFFNET_ALWAYS_INLINE vf vsigmoid(vf z) {
  const vf r = _mm512_div_ps(_mm512_set1_ps(1.0f), vexp_neg1p(z));
  return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(z, z, _CMP_UNORD_Q), z);
}

// even[i] = src[2i], odd[i] = src[2i + 1] for i < pairs.
inline void deinterleave(const float* src, float* even, float* odd, int64_t pairs) {
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  int64_t i = 0;
  for (; i + kLanes <= pairs; i += kLanes) {
    const vf a = _mm512_loadu_ps(src + 2 * i), b = _mm512_loadu_ps(src + 2 * i + kLanes);
    _mm512_storeu_ps(even + i, _mm512_permutex2var_ps(a, ie, b));
    _mm512_storeu_ps(odd + i, _mm512_permutex2var_ps(a, io, b));
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

}  // namespace avx512
}  // namespace effnet
