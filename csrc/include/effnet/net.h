// A whole fused EfficientNet forward pass in C++ (torch-free): what fuse() runs for fp32 CPU inference.
//
// Every weight arrives folded (BatchNorm into the convolutions) and is packed here once; a forward pass
// is then one call with no per-op dispatch:
//   stem   im2col of the 3x3 stride-2 conv + GEMM with bias and Swish in the epilogue;
//   block  expand 1x1: GEMM + bias + Swish  ->  depthwise + bias + Swish with the SE pool in the same pass
//          ->  SE gate (two small matrix-vector products)  ->  projection 1x1: GEMM with the gate applied
//          to A as it is packed, bias, and the residual added in the epilogue;
//   head   1x1 GEMM + bias + Swish, global mean (the SE pool kernel), classifier GEMM.
// Activations live in NHWC buffers of an arena reused from call to call (sized for the largest layer at
// the input's shape), so a forward pass pays no allocation and no first-touch page faults after the first.
// Concurrent callers are safe: one uses the arena, the others get their own for that call.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "effnet/dwconv.h"

namespace effnet {

class Net {
 public:
  // same_padding: TensorFlow SAME (timm tf_*) instead of k // 2 on every side.
  Net(bool same_padding, Isa isa);
  ~Net();

  // weight (cout, cin, k, k) contiguous; bias (cout,).
  void set_stem(int64_t cin, int64_t cout, int64_t k, int64_t stride, const float* weight, const float* bias);
  // expand_weight (cexp, cin) or null when cexp == cin (expand ratio 1); dw_weight (cexp, k, k);
  // se_reduce (squeeze, cexp), se_expand (cexp, squeeze); proj_weight (cout, cexp); all contiguous.
  void add_block(int64_t cin, int64_t cexp, int64_t cout, int64_t k, int64_t stride, int64_t squeeze, bool skip,
                 const float* expand_weight, const float* expand_bias, const float* dw_weight, const float* dw_bias,
                 const float* se_reduce_weight, const float* se_reduce_bias, const float* se_expand_weight,
                 const float* se_expand_bias, const float* proj_weight, const float* proj_bias);
  // weight (cout, cin) of the head 1x1 conv; classifier (classes, cout).
  void set_head(int64_t cin, int64_t cout, const float* weight, const float* bias);
  void set_classifier(int64_t features, int64_t classes, const float* weight, const float* bias);

  int64_t in_channels() const { return stem_cin_; }
  int64_t classes() const { return classes_; }
  Isa isa() const { return isa_; }

  // x: (n, cin, h, w) at element strides x_stride (any layout); logits: n x classes, contiguous.
  // Throws std::invalid_argument on a net that is not complete or an input it cannot take.
  void run(const float* x, int64_t n, int64_t h, int64_t w, const int64_t x_stride[4], float* logits,
           int num_threads) const;

  // Expand + depthwise in row bands (default on): for blocks whose expanded activation is large, each
  // task (sample, group of channels) runs the expand GEMM a few input rows at a time into a small
  // per-thread buffer and the depthwise conv over it, keeping the rows the next band shares; the expanded
  // tensor never goes to memory. Off: the expand GEMM writes the whole tensor, the depthwise reads it.
  // min_floats: the expanded floats per sample from which a block is banded (default 64k = 256 KB; tests
  // lower it to reach the banded path on small images).
  // band_floats: the size of one task's band buffer (floats), which sets the output rows per band.
  static constexpr int64_t kDefaultBandMinFloats = int64_t{1} << 16;
  static constexpr int64_t kDefaultBandFloats = int64_t{1} << 15;
  void set_band_fusion(bool on, int64_t min_floats = kDefaultBandMinFloats, int64_t band_floats = kDefaultBandFloats) {
    band_fusion_ = on;
    band_min_floats_ = min_floats;
    band_floats_ = band_floats;
  }

  // Per-step wall times of the last run (name, seconds) when profiling is on: what the fused model's
  // per-op profile reports. Off by default (two clock reads per step).
  void set_profiling(bool on) { profiling_ = on; }
  std::vector<std::pair<std::string, double>> last_profile() const;

  // Every step's output of the last run (stem, each block's depthwise conv and the block, head; NHWC
  // floats) when tapping is on: what the tests compare, block by block, with the source model. Off by
  // default (a copy per step).
  struct Tap {
    std::string name;  // "stem", "blocks.<i>.dw", "blocks.<i>", "head"
    int64_t n, h, w, c;
    std::vector<float> data;  // n * h * w * c, NHWC
  };
  void set_taps(bool on) { taps_on_ = on; }
  std::vector<Tap> last_taps() const;

  struct Block;
  struct Arena;

 private:
  void run_with(Arena& arena, const float* x, int64_t n, int64_t h, int64_t w, const int64_t x_stride[4],
                float* logits, int num_threads) const;

  bool same_;
  Isa isa_;
  int64_t stem_cin_ = 0, stem_cout_ = 0, stem_k_ = 0, stem_stride_ = 0;
  std::vector<float> stem_packed_, stem_bias_;
  std::vector<Block> blocks_;
  int64_t head_cin_ = 0, head_cout_ = 0;
  std::vector<float> head_packed_, head_bias_;
  int64_t classes_ = 0;
  std::vector<float> cls_packed_, cls_bias_;
  void expand_dw_banded(const Block& b, const float* in, int64_t n, int64_t h, int64_t w, int64_t pad_top,
                        int64_t pad_left, int64_t out_h, int64_t out_w, float* y, float* pooled,
                        int num_threads) const;

  bool band_fusion_ = true;
  int64_t band_min_floats_ = kDefaultBandMinFloats;
  int64_t band_floats_ = kDefaultBandFloats;
  bool profiling_ = false;
  bool taps_on_ = false;
  mutable std::vector<Tap> taps_;  // guarded by profile_mutex_
  mutable std::mutex profile_mutex_;
  mutable std::vector<std::pair<std::string, double>> profile_;
  mutable std::mutex arena_mutex_;
  std::unique_ptr<Arena> arena_;
};

}  // namespace effnet
