// The C++ tests' float64 reference of each activation and gate, written from its definition (eager PyTorch's),
// independently of the kernels' rules in effnet/act.h.
#pragma once

#include <algorithm>
#include <cmath>

#include "effnet/act.h"

namespace {

double act64(double z, effnet::Act a) {
  using effnet::Act;
  const auto clamp06 = [](double t) { return std::min(std::max(t, 0.0), 6.0); };
  switch (a) {
    case Act::kSilu: return z / (1.0 + std::exp(-z));
    case Act::kRelu: return std::max(z, 0.0);
    case Act::kRelu6: return clamp06(z);
    case Act::kHardswish: return z * clamp06(z + 3.0) / 6.0;
    case Act::kSigmoid: return 1.0 / (1.0 + std::exp(-z));
    case Act::kHardsigmoid: return clamp06(z + 3.0) / 6.0;
    case Act::kIdentity: return z;
  }
  return z;
}

}  // namespace
