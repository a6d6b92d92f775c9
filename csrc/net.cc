// The fused EfficientNet forward pass (see effnet/net.h).
#include "effnet/net.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>

#include "effnet/gemm.h"
#include "effnet/se.h"
#include "effnet/threadpool.h"

namespace effnet {

struct Net::Block {
  int64_t cin = 0, cexp = 0, cout = 0, k = 1, stride = 1, squeeze = 0;  // squeeze 0: no SE
  BlockActs acts;
  bool skip = false;  // (a conv layer's Block is never set: these defaults keep its copy defined)
  bool dense = false;  // fused-MBConv: expand_packed is the dense k x k conv's, no depthwise conv
  AlignedFloats expand_packed, expand_bias;  // empty without an expand conv
  AlignedFloats dw_weight, dw_bias, dw_packed;
  int64_t group = 0;                           // channels per task of the banded expand + depthwise
  std::vector<AlignedFloats> group_packed;  // the depthwise weights packed per group
  AlignedFloats se_packed;
  AlignedFloats proj_packed, proj_bias;
};

struct Net::Layer {
  std::string name;
  Pad pad;
  bool is_block = false;
  // conv (is_block false)
  int64_t cin = 0, cout = 0, k = 1, stride = 1;
  Act act = Act::kIdentity;
  bool skip = false;  // adds its input
  AlignedFloats packed, bias;
  // block (is_block true)
  Block block;
  int64_t block_index = 0;  // among the net's blocks (profile step names)
  int64_t in_c() const { return is_block ? block.cin : cin; }
  int64_t out_c() const { return is_block ? block.cout : cout; }
};

struct Net::Arena {
  std::mutex busy;  // held by the run using the buffers
  AlignedFloats in, col, x0, x1, e, y, pooled, gate, features;  // (cache-line aligned: see net.h)
};

namespace {

// The arena all live Nets share: created with the first, freed with the last.
std::shared_ptr<Net::Arena> shared_arena() {
  static std::mutex guard;
  static std::weak_ptr<Net::Arena> current;
  std::lock_guard<std::mutex> lock(guard);
  std::shared_ptr<Net::Arena> a = current.lock();
  if (!a) {
    a = std::make_shared<Net::Arena>();
    current = a;
  }
  return a;
}

}  // namespace

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("Net: " + what);
}

// The banded expand + depthwise (Net::set_band_fusion) runs for blocks whose expanded activation holds
// more than Net::kDefaultBandMinFloats floats per sample (256 KB; measured on 2 cores, one process,
// thresholds alternated: B4 batch 1 134 ms at 64k floats, 140 at 1M, 153 unbanded; B0 batch 8 82 vs
// 98 ms unbanded). Below it the whole-plane GEMM splits better over threads and the tensor stays in L2.

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

AlignedFloats copy_of(const float* p, int64_t count, const char* name) {
  require(p != nullptr, std::string(name) + " must not be null");
  return AlignedFloats(p, p + count);
}

AlignedFloats packed_gemm(int64_t n, int64_t k, const float* w, Isa isa, const char* name) {
  require(w != nullptr, std::string(name) + " must not be null");
  AlignedFloats packed(gemm_packed_size(n, k, isa));
  gemm_pack(n, k, w, k, 1, packed.data(), isa);
  return packed;
}

// (pad before, output size) along one axis: TensorFlow SAME from the size, or the explicit amounts
// (effnet_kernels.padding). out <= 0: the window does not fit the padded input.
struct Axis {
  int64_t before, out;
};
Axis axis(int64_t size, int64_t k, int64_t stride, bool same, int64_t before, int64_t after) {
  if (!same) {
    const int64_t span = size + before + after - k;
    return {before, span < 0 ? 0 : span / stride + 1};
  }
  const int64_t out = (size + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + k - size, 0);
  return {total / 2, out};
}
Axis axis_h(const Pad& p, int64_t size, int64_t k, int64_t stride) {
  return axis(size, k, stride, p.same, p.top, p.bottom);
}
Axis axis_w(const Pad& p, int64_t size, int64_t k, int64_t stride) {
  return axis(size, k, stride, p.same, p.left, p.right);
}

void check_pad(const Pad& p, const std::string& name) {
  require(p.top >= 0 && p.bottom >= 0 && p.left >= 0 && p.right >= 0,
          name + ": padding amounts must be >= 0");
}

// Whether x at these (n, c, h, w) strides is dense NHWC (what a GEMM reads as its A matrix).
bool is_nhwc_dense(const int64_t* s, int64_t n, int64_t c, int64_t h, int64_t w) {
  return (c == 1 || s[1] == 1) && (w == 1 || s[3] == c) && (h == 1 || s[2] == w * c) &&
         (n == 1 || s[0] == h * w * c);
}

float* sized(AlignedFloats& v, int64_t count) {
  if (static_cast<int64_t>(v.size()) < count) v.resize(static_cast<size_t>(count));
  return v.data();
}

void nhwc_strides(int64_t* s, int64_t c, int64_t h, int64_t w) {
  s[0] = h * w * c;
  s[1] = 1;
  s[2] = w * c;
  s[3] = c;
}

// One output row of the stem's im2col: per output pixel, cin x k x k values in the weight's (c, kh, kw)
// order, zero where the window leaves the image. K > 0 fixes the kernel size at compile time (the stem's
// 3x3: the inner loops unroll), K == 0 takes it at run time.
template <int K>
void im2col_row(const float* x, int64_t s, int64_t oy, int64_t h, int64_t w, const int64_t* xs, int64_t cin,
                int64_t stride, int64_t top, int64_t left, int64_t out_w, float* dst, int64_t k_rt = K) {
  const int64_t k = K > 0 ? K : k_rt, cols = cin * k * k;
  // Row pointers, null outside the image: on the stack for the stems that exist (3 x 3), else on the heap.
  const float* small[32];
  std::vector<const float*> large(cin * k > 32 ? static_cast<size_t>(cin * k) : 0);
  const float** rows = cin * k > 32 ? large.data() : small;
  for (int64_t c = 0; c < cin; ++c)
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t iy = oy * stride - top + ky;
      rows[c * k + ky] = iy >= 0 && iy < h ? x + s * xs[0] + c * xs[1] + iy * xs[2] : nullptr;
    }
  for (int64_t ox = 0; ox < out_w; ++ox, dst += cols) {
    const int64_t ix0 = ox * stride - left;
    const bool inside = ix0 >= 0 && ix0 + k <= w;
    float* d = dst;
    for (int64_t r = 0; r < cin * k; ++r, d += k) {
      const float* p = rows[r];
      if (p == nullptr) {
        for (int64_t kx = 0; kx < k; ++kx) d[kx] = 0.0f;
      } else if (inside) {
        p += ix0 * xs[3];
        for (int64_t kx = 0; kx < k; ++kx) d[kx] = p[kx * xs[3]];
      } else {
        for (int64_t kx = 0; kx < k; ++kx) {
          const int64_t ix = ix0 + kx;
          d[kx] = ix >= 0 && ix < w ? p[ix * xs[3]] : 0.0f;
        }
      }
    }
  }
}

GemmArgs gemm_args(int64_t m, int64_t n, int64_t k, const float* a, const AlignedFloats& packed,
                   const AlignedFloats& bias, float* c, Act act) {
  GemmArgs g;
  g.m = m; g.n = n; g.k = k;
  g.a = a; g.lda = k;
  g.packed = packed.data();
  g.bias = bias.empty() ? nullptr : bias.data();
  g.c = c; g.ldc = n;
  g.act = act;
  return g;
}

}  // namespace

Net::Net(Isa isa) : isa_(isa), arena_(shared_arena()) {
  require(isa_supported(isa), std::string("isa ") + isa_name(isa) + " is not supported here");
}

Net::~Net() = default;

int64_t Net::in_channels() const { return layers_.empty() ? 0 : layers_.front().in_c(); }

int64_t Net::layers() const { return static_cast<int64_t>(layers_.size()); }

int64_t Net::last_channels() const { return layers_.empty() ? 0 : layers_.back().out_c(); }

// Before anything reads the weights: a layer that cannot follow the last one is refused, not packed from a
// buffer its wrong channel count would overrun.
void Net::check_follows(const std::string& name, int64_t cin) const {
  require(classes_ == 0, name + ": the classifier is the last layer, no layer can follow it");
  require(layers_.empty() || last_channels() == cin,
          name + " takes " + std::to_string(cin) + " channels, the layer before gives " +
              std::to_string(last_channels()));
}

void Net::add_layer(Layer&& layer) {
  check_follows(layer.name, layer.in_c());
  layers_.push_back(std::move(layer));
}

void Net::add_conv(const std::string& name, int64_t cin, int64_t cout, int64_t k, int64_t stride, const Pad& pad,
                   Act act, const float* weight, const float* bias, bool skip) {
  require(cin >= 1 && cout >= 1 && k >= 1 && stride >= 1, name + ": a conv needs cin, cout, k, stride >= 1");
  require(is_layer_act(act), name + ": act must be a layer activation, got " + act_name(act));
  check_pad(pad, name);
  require(!skip || (stride == 1 && cin == cout && (pad.same || (pad.top + pad.bottom == k - 1 &&
                                                                 pad.left + pad.right == k - 1))),
          name + ": a conv with a residual needs stride 1, cin == cout and pads that keep the size");
  check_follows(name, cin);
  Layer l;
  l.name = name; l.pad = pad; l.cin = cin; l.cout = cout; l.k = k; l.stride = stride; l.act = act; l.skip = skip;
  l.packed = packed_gemm(cout, cin * k * k, weight, isa_, "conv weight");
  l.bias = copy_of(bias, cout, "conv bias");
  add_layer(std::move(l));
}

void Net::add_block(const std::string& name, const BlockSpec& spec) {
  const Pad& pad = spec.pad;
  const int64_t cin = spec.cin, cexp = spec.cexp, cout = spec.cout, k = spec.k, stride = spec.stride;
  const int64_t squeeze = spec.squeeze;
  const bool skip = spec.skip, dense = spec.dense;
  const BlockActs& acts = spec.acts;
  const float *expand_weight = spec.expand_weight, *expand_bias = spec.expand_bias;
  const float *dw_weight = spec.dw_weight, *dw_bias = spec.dw_bias;
  const float *se_reduce_weight = spec.se_reduce_weight, *se_reduce_bias = spec.se_reduce_bias;
  const float *se_expand_weight = spec.se_expand_weight, *se_expand_bias = spec.se_expand_bias;
  const float *proj_weight = spec.proj_weight, *proj_bias = spec.proj_bias;
  require(cin >= 1 && cexp >= 1 && cout >= 1 && squeeze >= 0, name + ": block channel counts must be >= 1 (squeeze >= 0)");
  require(is_layer_act(acts.act) && is_layer_act(acts.se_inner),
          name + ": act and se_inner must be layer activations, got " + act_name(acts.act) + ", " +
              act_name(acts.se_inner));
  require(is_gate(acts.se_gate), name + ": se_gate must be sigmoid or hardsigmoid, got " + act_name(acts.se_gate));
  require(k >= 1 && k % 2 == 1 && k <= 7, name + ": block kernel size must be odd and <= 7, got " + std::to_string(k));
  require(stride == 1 || stride == 2, name + ": block stride must be 1 or 2, got " + std::to_string(stride));
  require(!skip || (stride == 1 && cin == cout), name + ": a block with a residual needs stride 1 and cin == cout");
  require(expand_weight != nullptr || cexp == cin, name + ": a block without an expand conv needs cexp == cin");
  require(!dense || (expand_weight != nullptr && dw_weight == nullptr && dw_bias == nullptr),
          name + ": a dense (fused-MBConv) block takes an expand weight (cexp, cin, k, k) and no depthwise weights");
  check_pad(pad, name);
  check_follows(name, cin);
  Layer l;
  l.name = name; l.pad = pad; l.is_block = true; l.block_index = blocks_added_;
  Block& b = l.block;
  b.cin = cin; b.cexp = cexp; b.cout = cout; b.k = k; b.stride = stride; b.squeeze = squeeze; b.skip = skip;
  b.dense = dense;
  b.acts = acts;
  if (expand_weight != nullptr) {
    b.expand_packed = packed_gemm(cexp, dense ? cin * k * k : cin, expand_weight, isa_, "expand weight");
    b.expand_bias = copy_of(expand_bias, cexp, "expand bias");
  }
  if (!dense) {
    b.dw_weight = copy_of(dw_weight, cexp * k * k, "dw weight");
    b.dw_bias = copy_of(dw_bias, cexp, "dw bias");
    DwConvParams p;  // the NHWC geometry every call of this block has (the packing does not depend on h, w)
    p.n = 1; p.c = cexp; p.h = p.w = k; p.out_h = p.out_w = 1; p.k = k; p.stride = stride; p.act = acts.act;
    nhwc_strides(p.x_stride, cexp, k, k);
    nhwc_strides(p.y_stride, cexp, 1, 1);
    b.dw_packed.resize(nhwc_packed_size(p, isa_));
    pack_nhwc(p, isa_, b.dw_weight.data(), b.dw_bias.data(), b.dw_packed.data());
    if (expand_weight != nullptr) {
      // Groups of whole GEMM panels (so a group's expand weights are a slice of the packed ones), about six
      // per block so that one sample already gives the threads several tasks each.
      const int64_t nr = gemm_nr(isa_);
      b.group = nr * std::max<int64_t>(1, cexp / (nr * 6));
      for (int64_t c0 = 0; c0 < cexp; c0 += b.group) {
        DwConvParams q = p;
        q.c = std::min(b.group, cexp - c0);
        nhwc_strides(q.x_stride, q.c, k, k);
        nhwc_strides(q.y_stride, cexp, 1, 1);
        b.group_packed.emplace_back(nhwc_packed_size(q, isa_));
        pack_nhwc(q, isa_, b.dw_weight.data() + c0 * k * k, b.dw_bias.data() + c0, b.group_packed.back().data());
      }
    }
  }
  if (squeeze > 0) {
    require(se_reduce_weight && se_reduce_bias && se_expand_weight && se_expand_bias,
            name + ": SE weights must not be null (squeeze > 0)");
    b.se_packed.resize(se_packed_size(cexp, squeeze));
    const int64_t s1[2] = {cexp, 1}, s2[2] = {squeeze, 1};
    se_pack(cexp, squeeze, se_reduce_weight, s1, se_reduce_bias, se_expand_weight, s2, se_expand_bias,
            b.se_packed.data());
  } else {
    require(!se_reduce_weight && !se_reduce_bias && !se_expand_weight && !se_expand_bias,
            name + ": a block without SE (squeeze 0) takes no SE weights");
  }
  b.proj_packed = packed_gemm(cout, cexp, proj_weight, isa_, "projection weight");
  b.proj_bias = copy_of(proj_bias, cout, "projection bias");
  add_layer(std::move(l));
  ++blocks_added_;
}

void Net::set_classifier(int64_t features, int64_t classes, const float* weight, const float* bias) {
  require(features >= 1 && classes >= 1, "classifier sizes must be >= 1");
  require(!layers_.empty(), "the classifier needs a layer before it");
  require(classes_ == 0, "the net has a classifier already");
  require(features == last_channels(), "the classifier takes " + std::to_string(features) +
                                           " features, the last layer gives " + std::to_string(last_channels()));
  cls_packed_ = packed_gemm(classes, features, weight, isa_, "classifier weight");
  cls_bias_ = copy_of(bias, classes, "classifier bias");
  classes_ = classes;
}

namespace {

// A conv the GEMM runs on its NHWC input as it is (no im2col): 1x1, stride 1, no padding.
bool direct_gemm(int64_t k, int64_t stride, const Pad& p) {
  return k == 1 && stride == 1 && (p.same || (p.top == 0 && p.bottom == 0 && p.left == 0 && p.right == 0));
}

}  // namespace

std::vector<int64_t> Net::out_shape(int64_t h, int64_t w) const {
  require(!layers_.empty(), "the net has no layer");
  require(h >= 1 && w >= 1, "input needs h, w >= 1");
  int64_t c = in_channels();
  for (const Layer& l : layers_) {
    const int64_t k = l.is_block ? l.block.k : l.k, s = l.is_block ? l.block.stride : l.stride;
    const int64_t oh = axis_h(l.pad, h, k, s).out, ow = axis_w(l.pad, w, k, s).out;
    require(oh >= 1 && ow >= 1, l.name + ": a " + std::to_string(h) + "x" + std::to_string(w) +
                                    " input leaves no output pixel (kernel " + std::to_string(k) +
                                    " larger than the padded input)");
    h = oh; w = ow; c = l.out_c();
  }
  if (classes_ > 0) return {classes_, 1, 1};
  return {c, h, w};
}

std::vector<int64_t> Net::layer_shape(int64_t layer, int64_t h, int64_t w) const {
  require(layer >= 0 && layer < layers(), "layer " + std::to_string(layer) + " out of range (" +
                                             std::to_string(layers()) + " layers)");
  require(h >= 1 && w >= 1, "input needs h, w >= 1");
  for (int64_t i = 0; i <= layer; ++i) {
    const Layer& l = layers_[static_cast<size_t>(i)];
    const int64_t k = l.is_block ? l.block.k : l.k, s = l.is_block ? l.block.stride : l.stride;
    const int64_t oh = axis_h(l.pad, h, k, s).out, ow = axis_w(l.pad, w, k, s).out;
    require(oh >= 1 && ow >= 1, l.name + ": the input leaves no output pixel");
    h = oh;
    w = ow;
  }
  return {layers_[static_cast<size_t>(layer)].out_c(), h, w};
}

void Net::run(const float* x, int64_t n, int64_t h, int64_t w, const int64_t x_stride[4], float* out,
              int num_threads, float* out_nchw) const {
  run(x, n, h, w, x_stride, out, num_threads, out_nchw, {});
}

void Net::run(const float* x, int64_t n, int64_t h, int64_t w, const int64_t x_stride[4], float* out,
              int num_threads, float* out_nchw, const std::vector<Output>& outputs) const {
  for (const Output& o : outputs)
    require(o.layer >= 0 && o.layer < layers() && (n == 0 || o.nhwc != nullptr || o.nchw != nullptr),
            "an output needs a layer in range and a destination");
  require(n >= 0 && h >= 1 && w >= 1, "input needs n >= 0 and h, w >= 1");
  const std::vector<int64_t> shape = out_shape(h, w);  // checks every layer's output is non-empty
  for (int i = 0; i < 4; ++i) require(x_stride[i] >= 0, "input strides must be non-negative");
  if (n == 0) return;
  require(x != nullptr && (out != nullptr || (classes_ == 0 && out_nchw != nullptr)),
          "x and out (or, without a classifier, out_nchw) must not be null");
  (void)shape;
  std::unique_lock<std::mutex> lock(arena_->busy, std::try_to_lock);
  if (lock.owns_lock()) return run_with(*arena_, x, n, h, w, x_stride, out, num_threads, out_nchw, outputs);
  Arena own;  // another thread is running: this call gets buffers of its own
  run_with(own, x, n, h, w, x_stride, out, num_threads, out_nchw, outputs);
}

void Net::run_with(Arena& arena, const float* x, int64_t n, int64_t h, int64_t w, const int64_t x_stride[4],
                   float* out, int num_threads, float* out_nchw, const std::vector<Output>& outputs) const {
  std::vector<std::pair<std::string, double>> prof;
  auto t_last = std::chrono::steady_clock::now();
  auto mark = [&](const std::string& what) {
    if (!profiling_) return;
    const auto now = std::chrono::steady_clock::now();
    prof.emplace_back(what, std::chrono::duration<double>(now - t_last).count());
    t_last = now;
  };
  std::vector<Tap> taps;
  auto tap = [&](std::string name, const float* data, int64_t th, int64_t tw, int64_t c) {
    if (!taps_on_) return;
    taps.push_back(Tap{std::move(name), n, th, tw, c, std::vector<float>(data, data + n * th * tw * c)});
  };
  // Buffer sizes for this input: walk the shapes once. x0 / x1 hold the layers' outputs in turn (the last
  // layer's goes to `out` unless a classifier follows), col the im2col of a conv, e a block's expanded
  // input, y its depthwise output.
  int64_t x_max = 0, col_max = 0, e_max = 0, y_max = 0, c_max = 1;
  {
    int64_t th = h, tw = w;
    for (const Layer& l : layers_) {
      const int64_t k = l.is_block ? l.block.k : l.k, s = l.is_block ? l.block.stride : l.stride;
      const int64_t oh = axis_h(l.pad, th, k, s).out, ow = axis_w(l.pad, tw, k, s).out;
      if (l.is_block) {
        if (l.block.dense) col_max = std::max(col_max, oh * ow * l.block.cin * k * k);
        else e_max = std::max(e_max, th * tw * l.block.cexp);
        y_max = std::max(y_max, oh * ow * l.block.cexp);
        c_max = std::max(c_max, l.block.cexp);
      } else if (!direct_gemm(l.k, l.stride, l.pad)) {
        col_max = std::max(col_max, oh * ow * l.cin * l.k * l.k);
      }
      x_max = std::max(x_max, oh * ow * l.out_c());
      th = oh; tw = ow;
    }
    c_max = std::max(c_max, last_channels());
  }
  float* bufs[2] = {sized(arena.x0, n * x_max), sized(arena.x1, n * x_max)};
  float* col = col_max > 0 ? sized(arena.col, n * col_max) : nullptr;
  float* e = e_max > 0 ? sized(arena.e, n * e_max) : nullptr;
  float* y = y_max > 0 ? sized(arena.y, n * y_max) : nullptr;
  float* pooled = sized(arena.pooled, n * c_max);
  float* gate = sized(arena.gate, n * c_max);

  // The current activation: x through its strides, or a dense NHWC buffer.
  const float* cur = x;
  int64_t cs[4] = {x_stride[0], x_stride[1], x_stride[2], x_stride[3]};
  int64_t hh = h, ww = w, cc = in_channels();
  const Layer& first = layers_.front();
  // (a conv with a residual reads its input again: NHWC)
  const bool first_reads_strides = !first.is_block && !first.skip && !direct_gemm(first.k, first.stride, first.pad);
  if (!first_reads_strides && !is_nhwc_dense(cs, n, cc, hh, ww)) {
    float* in = sized(arena.in, n * hh * ww * cc);  // one copy into NHWC
    parallel_for(n * hh, std::max(1, std::min(num_threads, static_cast<int>(n * hh / 8))), [&](int64_t row) {
      const int64_t s = row / hh, iy = row % hh;
      const float* src = x + s * cs[0] + iy * cs[2];
      float* dst = in + row * ww * cc;
      // channel-major: each channel's row is read in order, the writes stay inside one output row
      for (int64_t c = 0; c < cc; ++c)
        for (int64_t ix = 0; ix < ww; ++ix) dst[ix * cc + c] = src[ix * cs[3] + c * cs[1]];
    });
    cur = in;
    mark("input.nhwc");
  }
  if (cur != x || is_nhwc_dense(cs, n, cc, hh, ww)) nhwc_strides(cs, cc, hh, ww);
  // NHWC src -> NCHW dst (n samples of plane pixels x c channels), in tiles of 64 pixels x 16 channels: the
  // 4 KB the reads touch stay in L1 while the writes stream.
  auto to_nchw = [&](const float* src_all, float* dst_all, int64_t plane, int64_t c) {
    const int64_t tile = 64, tiles = ceil_div(plane, tile);
    parallel_for(n * tiles, std::max(1, std::min(num_threads, static_cast<int>(n * tiles / 4))), [&](int64_t t) {
      const int64_t s = t / tiles, p0 = (t % tiles) * tile, p1 = std::min(plane, p0 + tile);
      const float* src = src_all + s * plane * c;
      float* o = dst_all + s * plane * c;
      for (int64_t c0 = 0; c0 < c; c0 += 16)
        for (int64_t ch = c0; ch < std::min(c, c0 + 16); ++ch)
          for (int64_t p = p0; p < p1; ++p) o[ch * plane + p] = src[p * c + ch];
    });
  };
  // The im2col of the current activation for a dense k x k conv of cin channels into col.
  auto im2col = [&](int64_t cin, int64_t k, int64_t stride, const Axis& ay, const Axis& ax) {
    const int64_t cols = cin * k * k, oh = ay.out, ow = ax.out;
    parallel_for(n * oh, std::max(1, std::min(num_threads, static_cast<int>(n * oh / 8))), [&](int64_t row) {
      const int64_t s = row / oh, oy = row % oh;
      if (k == 3) {
        im2col_row<3>(cur, s, oy, hh, ww, cs, cin, stride, ay.before, ax.before, ow, col + row * ow * cols);
      } else {
        im2col_row<0>(cur, s, oy, hh, ww, cs, cin, stride, ay.before, ax.before, ow, col + row * ow * cols, k);
      }
    });
  };
  int next = 0;  // the ping-pong buffer the next layer writes (never the one it reads)
  for (size_t li = 0; li < layers_.size(); ++li) {
    const Layer& l = layers_[li];
    const bool last = li + 1 == layers_.size();
    float* dst = last && classes_ == 0 && out != nullptr ? out : bufs[next];
    if (!l.is_block) {
      const Axis ay = axis_h(l.pad, hh, l.k, l.stride), ax = axis_w(l.pad, ww, l.k, l.stride);
      const float* a = cur;
      if (!direct_gemm(l.k, l.stride, l.pad)) {
        im2col(l.cin, l.k, l.stride, ay, ax);
        a = col;
        mark(l.name + ".im2col");
      }
      hh = ay.out;
      ww = ax.out;
      GemmArgs g = gemm_args(n * hh * ww, l.cout, l.cin * l.k * l.k, a, l.packed, l.bias, dst, l.act);
      if (l.skip) {  // act(conv) + input (cur: dense NHWC, see first_reads_strides)
        g.residual = cur;
        g.ldr = l.cout;
      }
      gemm(g, num_threads, isa_);
      mark(l.name + ".gemm");
      tap(l.name, dst, hh, ww, l.cout);
    } else {
      const Block& b = l.block;
      const std::string bi = std::to_string(l.block_index);
      const float* in = cur;
      const float* ex = in;
      const Axis by = axis_h(l.pad, hh, b.k, b.stride), bx = axis_w(l.pad, ww, b.k, b.stride);
      const bool banded = band_fusion_ && b.group > 0 && hh * ww * b.cexp > band_min_floats_;
      float* pool_out = b.squeeze > 0 ? pooled : nullptr;  // no SE: nothing needs the depthwise means
      if (b.dense) {  // fused-MBConv: the expand is a dense k x k conv (im2col + GEMM) into y
        const float* a = in;
        if (!direct_gemm(b.k, b.stride, l.pad)) {
          im2col(b.cin, b.k, b.stride, by, bx);
          a = col;
          mark("im2col." + bi);
        }
        gemm(gemm_args(n * by.out * bx.out, b.cexp, b.cin * b.k * b.k, a, b.expand_packed, b.expand_bias, y,
                       b.acts.act), num_threads, isa_);
        mark("expand." + bi);
        if (pool_out != nullptr) {
          SeParams sp;
          sp.n = n; sp.c = b.cexp; sp.h = by.out; sp.w = bx.out;
          nhwc_strides(sp.x_stride, b.cexp, by.out, bx.out);
          se_pool(sp, y, pool_out, num_threads, isa_);
          mark("se_pool." + bi);
        }
      } else if (banded) {
        expand_dw_banded(b, in, n, hh, ww, by.before, bx.before, by.out, bx.out, y, pool_out, num_threads);
        mark("expand_dw." + bi);
      } else {
        if (!b.expand_packed.empty()) {
          gemm(gemm_args(n * hh * ww, b.cexp, b.cin, in, b.expand_packed, b.expand_bias, e, b.acts.act), num_threads,
               isa_);
          ex = e;
          mark("expand." + bi);
        }
        DwConvParams p;
        p.n = n; p.c = b.cexp; p.h = hh; p.w = ww; p.out_h = by.out; p.out_w = bx.out;
        p.k = b.k; p.stride = b.stride; p.pad_top = by.before; p.pad_left = bx.before; p.act = b.acts.act;
        nhwc_strides(p.x_stride, b.cexp, hh, ww);
        nhwc_strides(p.y_stride, b.cexp, by.out, bx.out);
        const bool packed_fits = nhwc_packed_size(p, isa_) == b.dw_packed.size() && !b.dw_packed.empty();
        dwconv_bias_swish(p, ex, b.dw_weight.data(), b.dw_bias.data(), y, pool_out, num_threads, isa_,
                          packed_fits ? b.dw_packed.data() : nullptr);
        mark("dw." + bi);
      }
      if (taps_on_) tap(l.name + ".dw", y, by.out, bx.out, b.cexp);
      if (b.squeeze > 0) {
        se_gate(n, b.cexp, b.squeeze, b.se_packed.data(), pooled, gate, num_threads, isa_, b.acts.se_inner,
                b.acts.se_gate);
        mark("se_gate." + bi);
      }
      hh = by.out;
      ww = bx.out;
      GemmArgs g = gemm_args(n * hh * ww, b.cout, b.cexp, y, b.proj_packed, b.proj_bias, dst, Act::kIdentity);
      if (b.squeeze > 0) {
        g.scale = gate;
        g.rows_per_scale = hh * ww;
      }
      if (b.skip) {
        g.residual = in;
        g.ldr = b.cout;
      }
      gemm(g, num_threads, isa_);
      mark("project." + bi);
      tap(l.name, dst, hh, ww, b.cout);
    }
    cc = l.out_c();
    cur = dst;
    nhwc_strides(cs, cc, hh, ww);
    for (const Output& o : outputs) {
      if (o.layer != static_cast<int64_t>(li)) continue;
      if (o.nhwc != nullptr && o.nhwc != dst)
        std::memcpy(o.nhwc, dst, static_cast<size_t>(n * hh * ww * cc) * sizeof(float));
      if (o.nchw != nullptr) to_nchw(dst, o.nchw, hh * ww, cc);
      mark(l.name + ".output");
    }
    if (dst == bufs[next]) next = 1 - next;
  }
  if (classes_ == 0 && out_nchw != nullptr) {
    to_nchw(cur, out_nchw, hh * ww, cc);
    mark("output.nchw");
  }
  if (classes_ > 0) {
    SeParams sp;
    sp.n = n; sp.c = cc; sp.h = hh; sp.w = ww;
    nhwc_strides(sp.x_stride, cc, hh, ww);
    float* features = sized(arena.features, n * cc);
    se_pool(sp, cur, features, num_threads, isa_);
    mark("head.pool");
    gemm(gemm_args(n, classes_, cc, features, cls_packed_, cls_bias_, out, Act::kIdentity), num_threads, isa_);
    mark("classifier");
  }
  if (profiling_ || taps_on_) {
    std::lock_guard<std::mutex> guard(profile_mutex_);
    if (profiling_) profile_ = std::move(prof);
    if (taps_on_) taps_ = std::move(taps);
  }
}

void Net::expand_dw_banded(const Block& b, const float* in, int64_t n, int64_t h, int64_t w, int64_t pad_top,
                           int64_t pad_left, int64_t out_h, int64_t out_w, float* y, float* pooled,
                           int num_threads) const {
  const int64_t s = b.stride, k = b.k, g = b.group, groups = ceil_div(b.cexp, g);
  const int64_t row_floats = w * g;
  // Output rows per band: as many as keep the band's input rows ((R - 1) s + k of them) near band_floats_.
  const int64_t bands_rows =
      std::clamp<int64_t>((band_floats_ / row_floats - (k - s)) / s, 1, out_h);
  const int64_t cap_rows = (bands_rows - 1) * s + k;
  const int nr = gemm_nr(isa_);
  std::vector<double> sums(static_cast<size_t>(n * b.cexp), 0.0);
  parallel_for(n * groups, num_threads, [&](int64_t task) {
    const int64_t smp = task / groups, gi = task % groups, c0 = gi * g, gc = std::min(g, b.cexp - c0);
    thread_local AlignedFloats band, means;
    float* buf = sized(band, cap_rows * row_floats);
    float* mean = sized(means, gc);
    GemmArgs ge;
    ge.n = gc; ge.k = b.cin; ge.lda = b.cin; ge.ldc = g; ge.act = b.acts.act;
    ge.packed = b.expand_packed.data() + (c0 / nr) * nr * b.cin;
    ge.bias = b.expand_bias.data() + c0;
    int64_t buf_lo = 0, buf_hi = 0;  // input rows [buf_lo, buf_hi) of this sample are in buf
    for (int64_t oh0 = 0; oh0 < out_h; oh0 += bands_rows) {
      const int64_t oh1 = std::min(out_h, oh0 + bands_rows);
      const int64_t lo = std::max<int64_t>(0, oh0 * s - pad_top);
      const int64_t hi = std::min(h, (oh1 - 1) * s - pad_top + k);
      int64_t have = lo;  // rows [lo, have) already expanded: the ones this band shares with the last
      if (buf_lo <= lo && lo < buf_hi) {
        if (lo > buf_lo)  // (lo == buf_lo: the rows are in place already)
          std::memmove(buf, buf + (lo - buf_lo) * row_floats,
                       static_cast<size_t>((buf_hi - lo) * row_floats) * sizeof(float));
        have = buf_hi;
      }
      if (hi > have) {
        ge.m = (hi - have) * w;
        ge.a = in + ((smp * h + have) * w) * b.cin;
        ge.c = buf + (have - lo) * row_floats;
        gemm(ge, 1, isa_);
      }
      buf_lo = lo;
      buf_hi = hi;
      DwConvParams p;
      p.n = 1; p.c = gc; p.h = hi - lo; p.w = w; p.out_h = oh1 - oh0; p.out_w = out_w;
      p.k = k; p.stride = s; p.pad_top = lo - (oh0 * s - pad_top); p.pad_left = pad_left; p.act = b.acts.act;
      nhwc_strides(p.x_stride, g, hi - lo, w);
      nhwc_strides(p.y_stride, b.cexp, out_h, out_w);
      const AlignedFloats& packed = b.group_packed[gi];
      const bool fits = !packed.empty() && nhwc_packed_size(p, isa_) == packed.size();
      dwconv_bias_swish(p, buf, b.dw_weight.data() + c0 * k * k, b.dw_bias.data() + c0,
                        y + ((smp * out_h + oh0) * out_w) * b.cexp + c0, pooled ? mean : nullptr, 1, isa_,
                        fits ? packed.data() : nullptr);
      if (pooled == nullptr) continue;
      const double count = static_cast<double>((oh1 - oh0) * out_w);
      for (int64_t j = 0; j < gc; ++j) sums[smp * b.cexp + c0 + j] += static_cast<double>(mean[j]) * count;
    }
  });
  if (pooled == nullptr) return;
  const double plane = static_cast<double>(out_h * out_w);
  for (int64_t i = 0; i < n * b.cexp; ++i) pooled[i] = static_cast<float>(sums[i] / plane);
}

std::vector<Net::Tap> Net::last_taps() const {
  std::lock_guard<std::mutex> guard(profile_mutex_);
  return taps_;
}

std::vector<std::pair<std::string, double>> Net::last_profile() const {
  std::lock_guard<std::mutex> guard(profile_mutex_);
  return profile_;
}

}  // namespace effnet
