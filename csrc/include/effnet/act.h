// The activations the fused kernels apply: after a depthwise conv or a 1x1 / stem / head conv (kSilu ...
// kIdentity), between the two 1x1 convs of a squeeze-excitation (the same set), and as its gate (kSigmoid,
// kHardsigmoid). Each follows eager PyTorch's fp32 function, NaN and +-inf included:
//   silu       x / (1 + exp(-x))
//   relu       max(x, 0)                  NaN stays NaN
//   relu6      min(max(x, 0), 6)          NaN stays NaN
//   hardswish  x * min(max(x + 3, 0), 6) / 6   (so hardswish(-inf) = -inf * 0 = NaN, as eager)
//   identity   x
//   sigmoid    1 / (1 + exp(-x))
//   hardsigmoid min(max(x + 3, 0), 6) / 6  NaN stays NaN
// Every kernel resolves the activation once per call or per tile of outputs (a switch outside the loops
// over elements, or a template argument), never per element.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace effnet {

enum class Act { kSilu, kRelu, kRelu6, kHardswish, kIdentity, kSigmoid, kHardsigmoid };

inline const char* act_name(Act a) {
  switch (a) {
    case Act::kSilu: return "silu";
    case Act::kRelu: return "relu";
    case Act::kRelu6: return "relu6";
    case Act::kHardswish: return "hardswish";
    case Act::kIdentity: return "identity";
    case Act::kSigmoid: return "sigmoid";
    case Act::kHardsigmoid: return "hardsigmoid";
  }
  return "unknown";
}

// The activations a layer may apply (not the gates) and the gates of an SE.
inline bool is_layer_act(Act a) { return a != Act::kSigmoid && a != Act::kHardsigmoid; }
inline bool is_gate(Act a) { return a == Act::kSigmoid || a == Act::kHardsigmoid; }

// `what` names the argument in the error ("act", "se_gate", ...); gate selects which set is allowed.
inline Act parse_act(const std::string& s, const char* what, bool gate = false) {
  const Act all[] = {Act::kSilu, Act::kRelu, Act::kRelu6, Act::kHardswish, Act::kIdentity, Act::kSigmoid,
                     Act::kHardsigmoid};
  std::string names;
  for (Act a : all) {
    if (is_gate(a) != gate) continue;
    if (s == act_name(a)) return a;
    names += std::string(names.empty() ? "" : ", ") + act_name(a);
  }
  throw std::invalid_argument(std::string(what) + " must be one of " + names + "; got '" + s + "'");
}

// The scalar rule of each (the reference the SIMD kernels are tested against; eager's formulas and order).
inline float clamp06_ref(float t) { return std::isnan(t) ? t : (t > 6.0f ? 6.0f : (t > 0.0f ? t : 0.0f)); }
template <Act A>
inline float act_apply(float x) {
  if constexpr (A == Act::kSilu) return x / (1.0f + std::exp(-x));
  else if constexpr (A == Act::kRelu) return std::isnan(x) ? x : (x > 0.0f ? x : 0.0f);
  else if constexpr (A == Act::kRelu6) return clamp06_ref(x);
  else if constexpr (A == Act::kHardswish) return x * clamp06_ref(x + 3.0f) / 6.0f;
  else if constexpr (A == Act::kSigmoid) return 1.0f / (1.0f + std::exp(-x));
  else if constexpr (A == Act::kHardsigmoid) return clamp06_ref(x + 3.0f) / 6.0f;
  else return x;
}

// Calls f(std::integral_constant-like tag) with the activation as a compile-time value: the one switch a
// kernel takes before its loops (`f` is a generic lambda taking `auto tag`, reading `decltype(tag)::value`).
template <Act A>
struct ActTag {
  static constexpr Act value = A;
};
template <typename F>
inline void with_act(Act a, F&& f) {
  switch (a) {
    case Act::kSilu: return f(ActTag<Act::kSilu>{});
    case Act::kRelu: return f(ActTag<Act::kRelu>{});
    case Act::kRelu6: return f(ActTag<Act::kRelu6>{});
    case Act::kHardswish: return f(ActTag<Act::kHardswish>{});
    case Act::kIdentity: return f(ActTag<Act::kIdentity>{});
    case Act::kSigmoid: return f(ActTag<Act::kSigmoid>{});
    case Act::kHardsigmoid: return f(ActTag<Act::kHardsigmoid>{});
  }
}

// One value (tests, error paths; kernels use act_apply<A> inside loops resolved by with_act).
inline float act_ref(float x, Act a) {
  float y = x;
  with_act(a, [&](auto tag) { y = act_apply<decltype(tag)::value>(x); });
  return y;
}

// data[0..count) through `a`, the scalar path's epilogue.
inline void act_inplace_scalar(float* data, int64_t count, Act a) {
  with_act(a, [&](auto tag) {
    for (int64_t i = 0; i < count; ++i) data[i] = act_apply<decltype(tag)::value>(data[i]);
  });
}

}  // namespace effnet
