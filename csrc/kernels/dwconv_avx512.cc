// AVX-512F micro-kernels (16 fp32 lanes). Compiled with -mavx512f -mfma only; reached only when the
// CPU reports AVX-512F (see dwconv.cc).
#include <immintrin.h>

#include <cstring>

#include "effnet/dwconv.h"

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
inline vf vset1(float a) { return _mm512_set1_ps(a); }
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }

// swish(z) = z / (1 + exp(-z)), the form eager PyTorch uses, so saturation and NaN/inf match:
// exp(-z) for -z > 88 is +inf (z / inf = -0; -inf / inf = NaN), a NaN z stays NaN through the division.
inline vf vswish(vf z) {
  const vf t = _mm512_sub_ps(_mm512_setzero_ps(), z);
  const vf tc = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  // exp(tc) = 2^n * exp(r), n = round(tc / ln 2), |r| <= ln2 / 2 (Cephes expf polynomial, ~1 ulp).
  const vf n = _mm512_roundscale_ps(_mm512_mul_ps(tc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  vf r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), tc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  vf poly = _mm512_set1_ps(1.9875691500e-4f);
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.3981999507e-3f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(8.3334519073e-3f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(4.1665795894e-2f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.6666665459e-1f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(5.0000001201e-1f));
  poly = _mm512_fmadd_ps(poly, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  vf e = _mm512_mul_ps(poly, _mm512_castsi512_ps(bits));
  e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(t, _mm512_set1_ps(88.0f), _CMP_GT_OQ),
                         _mm512_set1_ps(__builtin_inff()));
  return _mm512_div_ps(z, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
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

}  // namespace avx512
}  // namespace effnet
