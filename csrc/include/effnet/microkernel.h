// What every micro-kernel translation unit (kernels/<isa>.cc) shares: the always-inline attribute, the
// exp polynomial of the vector Swish and sigmoid, and the per-thread scratch buffer.
#pragma once

#include <cstddef>

// For the per-ISA vector helpers whose calls must not survive (an out-of-line call spills every live
// vector register: GCC left vswish out of line in the GEMM's row-tail kernels).
#if defined(__GNUC__) || defined(__clang__)
#define EFFNET_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define EFFNET_ALWAYS_INLINE inline
#endif

namespace effnet {

// exp(r) ~ 1 + r (C1 + r (C2 + r (C3 + r (C4 + r C5)))) on |r| <= ln2 / 2, max relative error 1e-7
// (a minimax fit made for this project; the vector Swish kernels share it).
constexpr float kExpC1 = 0x1.fffff6p-1f;
constexpr float kExpC2 = 0x1.fffdc6p-2f;
constexpr float kExpC3 = 0x1.555a6ap-3f;
constexpr float kExpC4 = 0x1.573a54p-5f;
constexpr float kExpC5 = 0x1.0fa832p-7f;

// A per-thread float buffer of at least `count` elements (grown on demand, 64-byte aligned), for the
// micro-kernels' scratch; valid until the same thread asks again.
float* thread_scratch(size_t count);

}  // namespace effnet
