// A fused EfficientNet forward pass in C++ (torch-free): what fuse() runs for fp32 CPU inference, for a
// whole classifier or for any chain of layers it swapped in a larger model (a backbone's stages, one block).
//
// A Net is a chain of layers, each taking the previous one's output, and an optional classifier. Every
// weight arrives folded (BatchNorm into the convolutions) and is packed here once; a forward pass is then
// one call with no per-op dispatch:
//   conv   a dense k x k convolution (a stem, a head): im2col + GEMM with bias and an optional activation in
//          the epilogue; a 1x1 stride-1 conv is the GEMM alone;
//   block  an MBConv block: expand 1x1 GEMM + bias + act  ->  depthwise + bias + act with the SE pool in the
//          same pass  ->  SE gate (two small matrix-vector products)  ->  projection 1x1: GEMM with the gate
//          applied to A as it is packed, bias, and the residual added in the epilogue. The activation (SiLU,
//          ReLU, ReLU6, Hardswish, none) and the SE's (inner, gate) are the block's (BlockActs); a block
//          without SE goes from the depthwise conv straight to the projection;
//   classifier  global mean of the last layer (the SE pool kernel), then a GEMM.
// Activations live in NHWC buffers of an arena reused from call to call (sized for the largest layer at
// the input's shape), so a forward pass pays no allocation and no first-touch page faults after the first.
// All live Nets share one arena (a model swapped block by block runs many small Nets one after the other:
// they reuse the same warm buffers). Concurrent callers are safe: one uses the arena, the others get their
// own for that call.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "effnet/dwconv.h"

namespace effnet {

// A std::allocator that aligns to a cache line: the engine's activation buffers and packed weights start on a
// 64-byte boundary, so that the kernels' vectors (a 64-byte AVX-512 vector, a 128-byte GEMM panel, a 64-channel
// NHWC group) do not straddle cache lines — a straddling access is two line accesses, and a line shared by two
// threads' tasks (column ranges, channel groups) ping-pongs between their cores. (malloc aligns to 16 bytes
// only: large buffers from mmap sit 16 bytes past a page boundary.)
template <typename T>
struct CacheAligned {
  using value_type = T;
  static constexpr size_t kAlign = 64;
  CacheAligned() = default;
  template <typename U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(size_t n) {
    const size_t bytes = (n * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, bytes == 0 ? kAlign : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const CacheAligned<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheAligned<U>&) const { return false; }
};
using AlignedFloats = std::vector<float, CacheAligned<float>>;

// The padding of one layer: explicit amounts before / after along each axis (symmetric k // 2, or the
// fixed amounts of a model built for one image size, as efficientnet_pytorch's static SAME padding), or
// TensorFlow SAME computed from each input's size (timm tf_*, Conv2dSame).
struct Pad {
  bool same = false;
  int64_t top = 0, bottom = 0, left = 0, right = 0;
  static Pad symmetric(int64_t k) { return Pad{false, k / 2, k / 2, k / 2, k / 2}; }
  static Pad tf_same() { return Pad{true, 0, 0, 0, 0}; }
};

// The activations of one block: `act` after its expand 1x1 and its depthwise conv (SiLU in EfficientNet;
// ReLU6 in MobileNetV2 and EfficientNet-Lite, ReLU or Hardswish in MobileNetV3, ReLU in MNASNet), the SE's
// between its two 1x1 convs and its gate (effnet/act.h).
struct BlockActs {
  Act act = Act::kSilu;
  Act se_inner = Act::kSilu;
  Act se_gate = Act::kSigmoid;
};

// One MBConv block as Net::add_block takes it: its geometry, activations and folded weights (each contiguous,
// of the shape beside it). expand_weight null when cexp == cin (expand ratio 1); squeeze 0: no
// squeeze-excitation (its four pointers null): the projection reads the depthwise output as it is.
// dense: a fused-MBConv block (EfficientNetV2's early stages): the expand is a dense k x k conv of stride
// `stride` and `pad` (weight (cexp, cin, k, k), then act), there is no depthwise conv (dw pointers null), and
// the SE (if any) and the projection read the expand's output.
struct BlockSpec {
  Pad pad;  // the depthwise conv's (dense: the expand's)
  int64_t cin = 0, cexp = 0, cout = 0, k = 3, stride = 1, squeeze = 0;
  bool skip = false;   // the block adds its input
  bool dense = false;  // fused-MBConv (see above)
  BlockActs acts;
  const float* expand_weight = nullptr;     // (cexp, cin); dense: (cexp, cin, k, k)
  const float* expand_bias = nullptr;       // (cexp,)
  const float* dw_weight = nullptr;         // (cexp, k, k); dense: null
  const float* dw_bias = nullptr;           // (cexp,)
  const float* se_reduce_weight = nullptr;  // (squeeze, cexp)
  const float* se_reduce_bias = nullptr;    // (squeeze,)
  const float* se_expand_weight = nullptr;  // (cexp, squeeze)
  const float* se_expand_bias = nullptr;    // (cexp,)
  const float* proj_weight = nullptr;       // (cout, cexp)
  const float* proj_bias = nullptr;         // (cout,)
};

class Net {
 public:
  explicit Net(Isa isa);
  ~Net();

  // Layers run in the order they are added; each takes the channels the one before gives. `name` names
  // the layer's taps (see set_taps) and, for convs, its profile steps.
  // A dense conv: weight (cout, cin, k, k) contiguous; bias (cout,); `act` after the bias (kIdentity: none);
  // skip: then adds its input (stride 1, cin == cout, pads that keep the size: timm's ConvBnAct with a skip).
  void add_conv(const std::string& name, int64_t cin, int64_t cout, int64_t k, int64_t stride, const Pad& pad,
                Act act, const float* weight, const float* bias, bool skip = false);
  // An MBConv block (see BlockSpec).
  void add_block(const std::string& name, const BlockSpec& b);
  // Global mean of the last layer's output, then the linear layer: weight (classes, features). Last.
  void set_classifier(int64_t features, int64_t classes, const float* weight, const float* bias);

  int64_t in_channels() const;
  int64_t classes() const { return classes_; }
  int64_t layers() const;
  Isa isa() const { return isa_; }

  // What run writes for an (h, w) input: {c, out_h, out_w} of the last layer, or {classes, 1, 1} with a
  // classifier. Throws std::invalid_argument when a layer's output would be empty.
  std::vector<int64_t> out_shape(int64_t h, int64_t w) const;

  // x: (n, cin, h, w) at element strides x_stride (any layout; a chain that starts with a block or a 1x1
  // conv reads an NHWC-dense x in place and copies any other layout once). out: the logits (n x classes,
  // contiguous) with a classifier, else the last layer's output as dense NHWC (n, out_h, out_w, c); it
  // must not overlap x. out_nchw (no classifier): also the same output as dense NCHW there (what eager
  // code after a swapped block expects), transposed from out; out may then be null (the NHWC output stays
  // in the engine's buffers). Throws std::invalid_argument on an empty
  // net or an input it cannot take.
  void run(const float* x, int64_t n, int64_t h, int64_t w, const int64_t x_stride[4], float* out,
           int num_threads, float* out_nchw = nullptr) const;

  // An intermediate output of a run: layer `layer`'s output (no classifier after it counts) written as dense
  // NHWC to nhwc and / or as dense NCHW to nchw (either may be null): the feature maps of a backbone
  // whose stages run as one chain.
  struct Output {
    int64_t layer;
    float* nhwc;
    float* nchw;
  };
  // run with outputs of earlier layers too; layer_shape(i, h, w) is {c, out_h, out_w} of layer i.
  void run(const float* x, int64_t n, int64_t h, int64_t w, const int64_t x_stride[4], float* out,
           int num_threads, float* out_nchw, const std::vector<Output>& outputs) const;
  std::vector<int64_t> layer_shape(int64_t layer, int64_t h, int64_t w) const;

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

  // Every step's output of the last run (each layer, and each block's depthwise conv; NHWC floats) when
  // tapping is on: what the tests compare, block by block, with the source model. Off by default (a copy
  // per step).
  struct Tap {
    std::string name;  // the layer's name; "<name>.dw" for a block's depthwise output
    int64_t n, h, w, c;
    std::vector<float> data;  // n * h * w * c, NHWC
  };
  void set_taps(bool on) { taps_on_ = on; }
  std::vector<Tap> last_taps() const;

  struct Block;
  struct Layer;
  struct Arena;

 private:
  void run_with(Arena& arena, const float* x, int64_t n, int64_t h, int64_t w, const int64_t x_stride[4],
                float* out, int num_threads, float* out_nchw, const std::vector<Output>& outputs) const;
  int64_t last_channels() const;
  void check_follows(const std::string& name, int64_t cin) const;
  void add_layer(Layer&& layer);

  Isa isa_;
  std::vector<Layer> layers_;
  int64_t blocks_added_ = 0;
  int64_t classes_ = 0;
  AlignedFloats cls_packed_, cls_bias_;
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
  std::shared_ptr<Arena> arena_;  // shared by every live Net (see above)
};

}  // namespace effnet
