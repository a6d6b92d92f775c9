// NEON micro-kernels of every op for aarch64 (4 fp32 lanes; depthwise, SE and GEMM bodies from *_impl.inc;
// NEON is part of the base aarch64 ISA).
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "effnet/dwconv.h"
#include "effnet/gemm.h"
#include "effnet/se.h"

namespace effnet {
namespace neon {
namespace {

using vf = float32x4_t;
constexpr int kLanes = 4;

inline vf vload(const float* p) { return vld1q_f32(p); }
inline vf vload_n(const float* p, int n) {  // reads only the first n floats
  float tmp[kLanes] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int i = 0; i < n; ++i) tmp[i] = p[i];
  return vld1q_f32(tmp);
}
inline void vstore(float* p, vf v) { vst1q_f32(p, v); }
inline void vstore_n(float* p, vf v, int n) {
  float tmp[kLanes];
  vst1q_f32(tmp, v);
  for (int i = 0; i < n; ++i) p[i] = tmp[i];
}
inline vf vkeep_n(vf v, int n) {
  const int32_t idx[kLanes] = {0, 1, 2, 3};
  return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), vcltq_s32(vld1q_s32(idx), vdupq_n_s32(n))));
}
inline vf vset1(float a) { return vdupq_n_f32(a); }
inline vf vzero() { return vdupq_n_f32(0.0f); }
inline vf vfma(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
inline vf vadd(vf a, vf b) { return vaddq_f32(a, b); }

// swish(z) = z / (1 + exp(-z)), the form eager PyTorch uses; same scheme as the AVX2 kernel (exp(-z)
// from the magic-number 2^n and a degree-5 polynomial, one division, 1 + exp(-z) = +inf past 88).
// 1 + exp(-z), +inf where -z > 88 (the denominator of swish and sigmoid).
EFFNET_ALWAYS_INLINE vf vexp_neg1p(vf z) {
  const vf neg = vnegq_f32(z);
  const vf t = vmaxq_f32(neg, vdupq_n_f32(-80.0f));  // NaN stays NaN here (vmaxq propagates it)
  const vf magic = vdupq_n_f32(12583039.0f);  // 1.5 * 2^23 + 127
  const vf j = vfmaq_f32(magic, t, vdupq_n_f32(1.44269504088896341f));
  const vf n = vsubq_f32(j, magic);
  const vf s = vreinterpretq_f32_s32(vshlq_n_s32(vreinterpretq_s32_f32(j), 23));
  vf r = vfmsq_f32(t, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  vf q = vfmaq_f32(vdupq_n_f32(kExpC4), vdupq_n_f32(kExpC5), r);
  q = vfmaq_f32(vdupq_n_f32(kExpC3), q, r);
  q = vfmaq_f32(vdupq_n_f32(kExpC2), q, r);
  q = vfmaq_f32(vdupq_n_f32(kExpC1), q, r);
  vf d = vfmaq_f32(vaddq_f32(s, vdupq_n_f32(1.0f)), vmulq_f32(r, s), q);
  d = vbslq_f32(vcgtq_f32(neg, vdupq_n_f32(88.0f)), vdupq_n_f32(HUGE_VALF), d);
  return d;
}

EFFNET_ALWAYS_INLINE vf vswish(vf z) { return vdivq_f32(z, vexp_neg1p(z)); }

inline vf vmul(vf a, vf b) { return vmulq_f32(a, b); }
// max / min of a constant c and x: NaN when x is NaN (FMAX / FMIN propagate NaN).
inline vf vmax_c(vf c, vf x) { return vmaxq_f32(c, x); }
inline vf vmin_c(vf c, vf x) { return vminq_f32(c, x); }
inline vf vdiv(vf a, vf b) { return vdivq_f32(a, b); }
// v with its subnormal lanes (0 < |v| < FLT_MIN) set to zero (see scale_row in gemm_impl.inc).
inline vf vflush_subnormal(vf v) {
  const uint32x4_t tiny = vcaltq_f32(v, vdupq_n_f32(1.17549435e-38f));  // false for NaN: NaN kept
  return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(v), tiny));
}
inline float vhsum(vf v) { return vaddvq_f32(v); }
// sigmoid(z) = 1 / (1 + exp(-z)) with vswish's denominator (vmaxq keeps a NaN, so NaN gives NaN).
EFFNET_ALWAYS_INLINE vf vsigmoid(vf z) { return vdivq_f32(vdupq_n_f32(1.0f), vexp_neg1p(z)); }

inline void deinterleave(const float* src, float* even, float* odd, int64_t pairs) {
  int64_t i = 0;
  for (; i + kLanes <= pairs; i += kLanes) {
    const float32x4x2_t v = vld2q_f32(src + 2 * i);
    vst1q_f32(even + i, v.val[0]);
    vst1q_f32(odd + i, v.val[1]);
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

}  // namespace neon
}  // namespace effnet
