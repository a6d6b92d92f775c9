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
  int64_t cin, cexp, cout, k, stride, squeeze;
  bool skip;
  std::vector<float> expand_packed, expand_bias;  // empty without an expand conv
  std::vector<float> dw_weight, dw_bias, dw_packed;
  int64_t group = 0;                           // channels per task of the banded expand + depthwise
  std::vector<std::vector<float>> group_packed;  // the depthwise weights packed per group
  std::vector<float> se_packed;
  std::vector<float> proj_packed, proj_bias;
};

struct Net::Arena {
  std::vector<float> col, x0, x1, e, y, pooled, gate, features;
};

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("Net: " + what);
}

// The banded expand + depthwise (Net::set_band_fusion) runs for blocks whose expanded activation holds
// more than Net::kDefaultBandMinFloats floats per sample (256 KB; measured on 2 cores, one process,
// thresholds alternated: B4 batch 1 134 ms at 64k floats, 140 at 1M, 153 unbanded; B0 batch 8 82 vs
// 98 ms unbanded). Below it the whole-plane GEMM splits better over threads and the tensor stays in L2.

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::vector<float> copy_of(const float* p, int64_t count, const char* name) {
  require(p != nullptr, std::string(name) + " must not be null");
  return std::vector<float>(p, p + count);
}

std::vector<float> packed_gemm(int64_t n, int64_t k, const float* w, Isa isa, const char* name) {
  require(w != nullptr, std::string(name) + " must not be null");
  std::vector<float> packed(gemm_packed_size(n, k, isa));
  gemm_pack(n, k, w, k, 1, packed.data(), isa);
  return packed;
}

// (pad before, output size) along one axis, for both padding conventions (effnet_kernels.padding).
struct Axis {
  int64_t before, out;
};
Axis axis(int64_t size, int64_t k, int64_t stride, bool same) {
  if (!same) return {k / 2, (size + 2 * (k / 2) - k) / stride + 1};
  const int64_t out = (size + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + k - size, 0);
  return {total / 2, out};
}

float* sized(std::vector<float>& v, int64_t count) {
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

GemmArgs gemm_args(int64_t m, int64_t n, int64_t k, const float* a, const std::vector<float>& packed,
                   const std::vector<float>& bias, float* c, bool swish) {
  GemmArgs g;
  g.m = m; g.n = n; g.k = k;
  g.a = a; g.lda = k;
  g.packed = packed.data();
  g.bias = bias.empty() ? nullptr : bias.data();
  g.c = c; g.ldc = n;
  g.swish = swish;
  return g;
}

}  // namespace

Net::Net(bool same_padding, Isa isa) : same_(same_padding), isa_(isa), arena_(std::make_unique<Arena>()) {
  require(isa_supported(isa), std::string("isa ") + isa_name(isa) + " is not supported here");
}

Net::~Net() = default;

void Net::set_stem(int64_t cin, int64_t cout, int64_t k, int64_t stride, const float* weight, const float* bias) {
  require(cin >= 1 && cout >= 1 && k >= 1 && k % 2 == 1 && stride >= 1,
          "stem needs cin, cout >= 1, odd k and stride >= 1");
  stem_cin_ = cin; stem_cout_ = cout; stem_k_ = k; stem_stride_ = stride;
  stem_packed_ = packed_gemm(cout, cin * k * k, weight, isa_, "stem weight");
  stem_bias_ = copy_of(bias, cout, "stem bias");
}

void Net::add_block(int64_t cin, int64_t cexp, int64_t cout, int64_t k, int64_t stride, int64_t squeeze, bool skip,
                    const float* expand_weight, const float* expand_bias, const float* dw_weight,
                    const float* dw_bias, const float* se_reduce_weight, const float* se_reduce_bias,
                    const float* se_expand_weight, const float* se_expand_bias, const float* proj_weight,
                    const float* proj_bias) {
  require(cin >= 1 && cexp >= 1 && cout >= 1 && squeeze >= 1, "block channel counts must be >= 1");
  require(k >= 1 && k % 2 == 1 && k <= 7, "block kernel size must be odd and <= 7, got " + std::to_string(k));
  require(stride == 1 || stride == 2, "block stride must be 1 or 2, got " + std::to_string(stride));
  require(!skip || (stride == 1 && cin == cout), "a block with a residual needs stride 1 and cin == cout");
  require(expand_weight != nullptr || cexp == cin, "a block without an expand conv needs cexp == cin");
  const int64_t prev = blocks_.empty() ? stem_cout_ : blocks_.back().cout;
  require(prev == cin, "block " + std::to_string(blocks_.size()) + " takes " + std::to_string(cin) +
                           " channels, the layer before gives " + std::to_string(prev));
  Block b;
  b.cin = cin; b.cexp = cexp; b.cout = cout; b.k = k; b.stride = stride; b.squeeze = squeeze; b.skip = skip;
  if (expand_weight != nullptr) {
    b.expand_packed = packed_gemm(cexp, cin, expand_weight, isa_, "expand weight");
    b.expand_bias = copy_of(expand_bias, cexp, "expand bias");
  }
  b.dw_weight = copy_of(dw_weight, cexp * k * k, "dw weight");
  b.dw_bias = copy_of(dw_bias, cexp, "dw bias");
  DwConvParams p;  // the NHWC geometry every call of this block has (the packing does not depend on h, w)
  p.n = 1; p.c = cexp; p.h = p.w = k; p.out_h = p.out_w = 1; p.k = k; p.stride = stride;
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
  require(se_reduce_weight && se_reduce_bias && se_expand_weight && se_expand_bias, "SE weights must not be null");
  b.se_packed.resize(se_packed_size(cexp, squeeze));
  const int64_t s1[2] = {cexp, 1}, s2[2] = {squeeze, 1};
  se_pack(cexp, squeeze, se_reduce_weight, s1, se_reduce_bias, se_expand_weight, s2, se_expand_bias,
          b.se_packed.data());
  b.proj_packed = packed_gemm(cout, cexp, proj_weight, isa_, "projection weight");
  b.proj_bias = copy_of(proj_bias, cout, "projection bias");
  blocks_.push_back(std::move(b));
}

void Net::set_head(int64_t cin, int64_t cout, const float* weight, const float* bias) {
  require(cin >= 1 && cout >= 1, "head channel counts must be >= 1");
  head_cin_ = cin; head_cout_ = cout;
  head_packed_ = packed_gemm(cout, cin, weight, isa_, "head weight");
  head_bias_ = copy_of(bias, cout, "head bias");
}

void Net::set_classifier(int64_t features, int64_t classes, const float* weight, const float* bias) {
  require(features >= 1 && classes >= 1, "classifier sizes must be >= 1");
  require(features == head_cout_, "the classifier takes " + std::to_string(features) + " features, the head gives " +
                                      std::to_string(head_cout_));
  classes_ = classes;
  cls_packed_ = packed_gemm(classes, features, weight, isa_, "classifier weight");
  cls_bias_ = copy_of(bias, classes, "classifier bias");
}

void Net::run(const float* x, int64_t n, int64_t h, int64_t w, const int64_t x_stride[4], float* logits,
              int num_threads) const {
  require(stem_cout_ > 0 && head_cout_ > 0 && classes_ > 0, "the net is incomplete (stem, head, classifier)");
  const int64_t last = blocks_.empty() ? stem_cout_ : blocks_.back().cout;
  require(head_cin_ == last, "the head takes " + std::to_string(head_cin_) + " channels, the last block gives " +
                                 std::to_string(last));
  require(n >= 0 && h >= 1 && w >= 1, "input needs n >= 0 and h, w >= 1");
  for (int i = 0; i < 4; ++i) require(x_stride[i] >= 0, "input strides must be non-negative");
  if (n == 0) return;
  require(x != nullptr && logits != nullptr, "x and logits must not be null");
  std::unique_lock<std::mutex> lock(arena_mutex_, std::try_to_lock);
  if (lock.owns_lock()) return run_with(*arena_, x, n, h, w, x_stride, logits, num_threads);
  Arena own;  // another thread is running: this call gets buffers of its own
  run_with(own, x, n, h, w, x_stride, logits, num_threads);
}

void Net::run_with(Arena& arena, const float* x, int64_t n, int64_t h, int64_t w, const int64_t x_stride[4],
                   float* logits, int num_threads) const {
  std::vector<std::pair<std::string, double>> prof;
  auto t_last = std::chrono::steady_clock::now();
  auto mark = [&](const char* what, int64_t index) {
    if (!profiling_) return;
    const auto now = std::chrono::steady_clock::now();
    prof.emplace_back(index >= 0 ? std::string(what) + "." + std::to_string(index) : std::string(what),
                      std::chrono::duration<double>(now - t_last).count());
    t_last = now;
  };
  std::vector<Tap> taps;
  auto tap = [&](std::string name, const float* data, int64_t th, int64_t tw, int64_t c) {
    if (!taps_on_) return;
    taps.push_back(Tap{std::move(name), n, th, tw, c, std::vector<float>(data, data + n * th * tw * c)});
  };
  // Stem: im2col (columns in the weight's (c, kh, kw) order, zeros where the window leaves the image).
  const Axis ay = axis(h, stem_k_, stem_stride_, same_), ax = axis(w, stem_k_, stem_stride_, same_);
  int64_t hh = ay.out, ww = ax.out;
  const int64_t cols = stem_cin_ * stem_k_ * stem_k_;
  float* col = sized(arena.col, n * hh * ww * cols);
  parallel_for(n * hh, std::max(1, std::min(num_threads, static_cast<int>(n * hh / 8))), [&](int64_t row) {
    const int64_t s = row / hh, oy = row % hh;
    if (stem_k_ == 3) {
      im2col_row<3>(x, s, oy, h, w, x_stride, stem_cin_, stem_stride_, ay.before, ax.before, ww, col + row * ww * cols);
    } else {
      im2col_row<0>(x, s, oy, h, w, x_stride, stem_cin_, stem_stride_, ay.before, ax.before, ww, col + row * ww * cols,
                    stem_k_);
    }
  });
  // Buffer sizes for this input: walk the shapes once.
  // (e holds the expand outputs and, at the last resolution, the head's: not the head at the stem's resolution)
  int64_t x_max = hh * ww * stem_cout_, e_max = 0, y_max = 0, c_max = head_cout_;
  {
    int64_t th = hh, tw = ww;
    for (const Block& b : blocks_) {
      e_max = std::max(e_max, th * tw * b.cexp);
      th = axis(th, b.k, b.stride, same_).out;
      tw = axis(tw, b.k, b.stride, same_).out;
      y_max = std::max(y_max, th * tw * b.cexp);
      x_max = std::max(x_max, th * tw * b.cout);
      c_max = std::max(c_max, b.cexp);
    }
    e_max = std::max(e_max, th * tw * head_cout_);
  }
  float* bufs[2] = {sized(arena.x0, n * x_max), sized(arena.x1, n * x_max)};
  float* e = sized(arena.e, n * e_max);
  float* y = sized(arena.y, n * y_max);
  float* pooled = sized(arena.pooled, n * c_max);
  float* gate = sized(arena.gate, n * c_max);

  mark("stem.im2col", -1);
  gemm(gemm_args(n * hh * ww, stem_cout_, cols, col, stem_packed_, stem_bias_, bufs[0], true), num_threads, isa_);
  mark("stem.gemm", -1);
  tap("stem", bufs[0], hh, ww, stem_cout_);
  int cur = 0;
  int64_t bi = 0;
  for (const Block& b : blocks_) {
    const float* in = bufs[cur];
    const float* ex = in;
    const Axis by = axis(hh, b.k, b.stride, same_), bx = axis(ww, b.k, b.stride, same_);
    const bool banded = band_fusion_ && b.group > 0 && hh * ww * b.cexp > band_min_floats_;
    if (banded) {
      expand_dw_banded(b, in, n, hh, ww, by.before, bx.before, by.out, bx.out, y, pooled, num_threads);
      mark("expand_dw", bi);
      if (taps_on_) tap("blocks." + std::to_string(bi) + ".dw", y, by.out, bx.out, b.cexp);
    } else if (!b.expand_packed.empty()) {
      gemm(gemm_args(n * hh * ww, b.cexp, b.cin, in, b.expand_packed, b.expand_bias, e, true), num_threads, isa_);
      ex = e;
      mark("expand", bi);
    }
    if (!banded) {
    DwConvParams p;
    p.n = n; p.c = b.cexp; p.h = hh; p.w = ww; p.out_h = by.out; p.out_w = bx.out;
    p.k = b.k; p.stride = b.stride; p.pad_top = by.before; p.pad_left = bx.before;
    nhwc_strides(p.x_stride, b.cexp, hh, ww);
    nhwc_strides(p.y_stride, b.cexp, by.out, bx.out);
    const bool packed_fits = nhwc_packed_size(p, isa_) == b.dw_packed.size() && !b.dw_packed.empty();
    dwconv_bias_swish(p, ex, b.dw_weight.data(), b.dw_bias.data(), y, pooled, num_threads, isa_,
                      packed_fits ? b.dw_packed.data() : nullptr);
    mark("dw", bi);
    if (taps_on_) tap("blocks." + std::to_string(bi) + ".dw", y, by.out, bx.out, b.cexp);
    }
    se_gate(n, b.cexp, b.squeeze, b.se_packed.data(), pooled, gate, num_threads, isa_);
    mark("se_gate", bi);
    hh = by.out;
    ww = bx.out;
    GemmArgs g = gemm_args(n * hh * ww, b.cout, b.cexp, y, b.proj_packed, b.proj_bias, bufs[1 - cur], false);
    g.scale = gate;
    g.rows_per_scale = hh * ww;
    if (b.skip) {
      g.residual = in;
      g.ldr = b.cout;
    }
    gemm(g, num_threads, isa_);
    mark("project", bi);
    if (taps_on_) tap("blocks." + std::to_string(bi), bufs[1 - cur], hh, ww, b.cout);
    ++bi;
    cur = 1 - cur;
  }
  gemm(gemm_args(n * hh * ww, head_cout_, head_cin_, bufs[cur], head_packed_, head_bias_, e, true), num_threads,
       isa_);
  mark("head.gemm", -1);
  tap("head", e, hh, ww, head_cout_);
  SeParams sp;
  sp.n = n; sp.c = head_cout_; sp.h = hh; sp.w = ww;
  nhwc_strides(sp.x_stride, head_cout_, hh, ww);
  float* features = sized(arena.features, n * head_cout_);
  se_pool(sp, e, features, num_threads, isa_);
  mark("head.pool", -1);
  gemm(gemm_args(n, classes_, head_cout_, features, cls_packed_, cls_bias_, logits, false), num_threads, isa_);
  mark("classifier", -1);
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
    thread_local std::vector<float> band, means;
    float* buf = sized(band, cap_rows * row_floats);
    float* mean = sized(means, gc);
    GemmArgs ge;
    ge.n = gc; ge.k = b.cin; ge.lda = b.cin; ge.ldc = g; ge.swish = true;
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
      p.k = k; p.stride = s; p.pad_top = lo - (oh0 * s - pad_top); p.pad_left = pad_left;
      nhwc_strides(p.x_stride, g, hi - lo, w);
      nhwc_strides(p.y_stride, b.cexp, out_h, out_w);
      const std::vector<float>& packed = b.group_packed[gi];
      const bool fits = !packed.empty() && nhwc_packed_size(p, isa_) == packed.size();
      dwconv_bias_swish(p, buf, b.dw_weight.data() + c0 * k * k, b.dw_bias.data() + c0,
                        y + ((smp * out_h + oh0) * out_w) * b.cexp + c0, mean, 1, isa_,
                        fits ? packed.data() : nullptr);
      const double count = static_cast<double>((oh1 - oh0) * out_w);
      for (int64_t j = 0; j < gc; ++j) sums[smp * b.cexp + c0 + j] += static_cast<double>(mean[j]) * count;
    }
  });
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
