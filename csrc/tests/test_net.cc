// C++ tests of the whole fused forward pass (effnet::Net; run by ctest natively and under qemu-aarch64):
// a small random EfficientNet (a block without expand and with a residual, a k5 stride-2 block, a k3
// block with a residual, a k7 one; SE everywhere; then two fused-MBConv blocks (dense expand): k3 with SE and
// a residual, k5 stride 2 without SE; a 3x3 conv with a residual; and the same with the MBConv cousins' activations: ReLU6
// without SE, Hardswish with a ReLU / hardsigmoid SE, ReLU, identity) against a float64 reference written here, for every
// supported ISA, both paddings, NCHW / NHWC / strided inputs, odd sizes, batch 1 and 3, 1 and 3 threads,
// the banded expand + depthwise forced on every block and off; bad configurations throw.
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "effnet/net.h"
#include "act64.h"
#include "expect.h"

namespace {

using Vec = std::vector<float>;
using DVec = std::vector<double>;

struct BlockW {
  int64_t cin, cexp, cout, k, stride, squeeze;
  bool skip;
  bool dense;  // fused-MBConv: ew is a dense k x k conv (cexp, cin, k, k), no dw / db
  Vec ew, eb, dw, db, w1, b1, w2, b2, pw, pb;
  effnet::BlockActs acts;
};

struct Model {
  int64_t stem_c = 8;
  Vec sw, sb;
  std::vector<BlockW> blocks;
  int64_t head_c = 24, classes = 10;
  Vec rw, rb;  // a 3x3 conv 20 -> 20 with a residual (timm's ConvBnAct with a skip) before the head
  Vec hw, hb, cw, cb;
  effnet::Act stem_act = effnet::Act::kSilu, head_act = effnet::Act::kSilu;
};

Vec rnd(std::mt19937& g, int64_t n, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  Vec v(n);
  for (float& x : v) x = d(g);
  return v;
}

// acts: the cousins' activations (see the top of the file), built with the named layer calls.
Model make_model(std::mt19937& g, bool acts = false) {
  Model m;
  using effnet::Act;
  if (acts) {
    m.stem_act = Act::kHardswish;
    m.head_act = Act::kRelu6;
  }
  const effnet::BlockActs block_acts[] = {{Act::kRelu6, Act::kSilu, Act::kSigmoid},
                                          {Act::kHardswish, Act::kRelu, Act::kHardsigmoid},
                                          {Act::kRelu, Act::kSilu, Act::kSigmoid},
                                          {Act::kIdentity, Act::kRelu, Act::kHardsigmoid}};
  m.sw = rnd(g, m.stem_c * 27, 0.4f);
  m.sb = rnd(g, m.stem_c, 0.2f);
  auto add = [&](int64_t cin, int64_t cexp, int64_t cout, int64_t k, int64_t s, int64_t sq, bool skip,
                 bool dense = false) {
    if (acts && m.blocks.empty()) sq = 0;  // the first block without SE
    BlockW b{cin, cexp, cout, k, s, sq, skip, dense, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    if (acts) b.acts = block_acts[m.blocks.size() % 4];
    if (dense) {
      b.ew = rnd(g, cexp * cin * k * k, 1.0f / (k * std::sqrt(float(cin))));
      b.eb = rnd(g, cexp, 0.2f);
    } else {
      if (cexp != cin) {
        b.ew = rnd(g, cexp * cin, 1.0f / std::sqrt(float(cin)));
        b.eb = rnd(g, cexp, 0.2f);
      }
      b.dw = rnd(g, cexp * k * k, 1.0f / k);
      b.db = rnd(g, cexp, 0.2f);
    }
    if (sq > 0) {
      b.w1 = rnd(g, sq * cexp, 1.0f / std::sqrt(float(cexp)));
      b.b1 = rnd(g, sq, 0.2f);
      // (scaled up with the cousins' gates so that some of them saturate: hardsigmoid's 0 and 1)
      b.w2 = rnd(g, cexp * sq, (acts ? 4.0f : 1.0f) / std::sqrt(float(sq)));
      b.b2 = rnd(g, cexp, 0.2f);
    }
    b.pw = rnd(g, cout * cexp, 1.0f / std::sqrt(float(cexp)));
    b.pb = rnd(g, cout, 0.2f);
    m.blocks.push_back(b);
  };
  add(8, 8, 8, 3, 1, 2, true);      // no expand, residual
  add(8, 40, 12, 5, 2, 2, false);   // expand 5x, k5 stride 2
  add(12, 36, 12, 3, 1, 3, true);   // residual
  add(12, 44, 20, 7, 2, 3, false);  // k7, channels not a multiple of any vector
  add(20, 40, 20, 3, 1, 3, true, true);   // fused-MBConv: dense k3 expand, SE, residual
  add(20, 30, 20, 5, 2, 0, false, true);  // fused-MBConv: dense k5 stride 2, no SE
  m.rw = rnd(g, 20 * 20 * 9, 1.0f / (3 * std::sqrt(20.0f)));
  m.rb = rnd(g, 20, 0.2f);
  m.hw = rnd(g, m.head_c * 20, 1.0f / std::sqrt(20.0f));
  m.hb = rnd(g, m.head_c, 0.2f);
  m.cw = rnd(g, m.classes * m.head_c, 1.0f / std::sqrt(float(m.head_c)));
  m.cb = rnd(g, m.classes, 0.2f);
  return m;
}

// ---- float64 reference, NCHW, one sample ------------------------------------------------------------

struct Pad {
  int64_t before, out;
};
Pad pad_of(int64_t size, int64_t k, int64_t s, bool same) {
  if (!same) return {k / 2, (size + 2 * (k / 2) - k) / s + 1};
  const int64_t out = (size + s - 1) / s, total = std::max<int64_t>((out - 1) * s + k - size, 0);
  return {total / 2, out};
}

// Dense (groups == 1) or depthwise (groups == c) conv + bias, then act.
DVec conv(const DVec& x, int64_t c, int64_t h, int64_t w, const Vec& wt, const Vec& b, int64_t cout, int64_t k,
          int64_t s, bool depthwise, bool same, effnet::Act act, int64_t* oh, int64_t* ow) {
  const Pad py = pad_of(h, k, s, same), px = pad_of(w, k, s, same);
  *oh = py.out;
  *ow = px.out;
  DVec y(cout * py.out * px.out);
  for (int64_t o = 0; o < cout; ++o)
    for (int64_t i = 0; i < py.out; ++i)
      for (int64_t j = 0; j < px.out; ++j) {
        double acc = b[o];
        for (int64_t ci = depthwise ? o : 0; ci < (depthwise ? o + 1 : c); ++ci)
          for (int64_t ky = 0; ky < k; ++ky)
            for (int64_t kx = 0; kx < k; ++kx) {
              const int64_t iy = i * s - py.before + ky, ix = j * s - px.before + kx;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
              const int64_t widx = depthwise ? (o * k + ky) * k + kx : ((o * c + ci) * k + ky) * k + kx;
              acc += double(wt[widx]) * x[(ci * h + iy) * w + ix];
            }
        y[(o * py.out + i) * px.out + j] = act64(acc, act);
      }
  return y;
}

DVec reference(const Model& m, const DVec& x, int64_t h, int64_t w, bool same) {
  int64_t oh, ow;
  const effnet::Act none = effnet::Act::kIdentity;
  DVec a = conv(x, 3, h, w, m.sw, m.sb, m.stem_c, 3, 2, false, same, m.stem_act, &oh, &ow);
  h = oh;
  w = ow;
  int64_t c = m.stem_c;
  for (const BlockW& b : m.blocks) {
    DVec d;
    if (b.dense) {
      d = conv(a, c, h, w, b.ew, b.eb, b.cexp, b.k, b.stride, false, same, b.acts.act, &oh, &ow);
    } else {
      DVec e = b.ew.empty() ? a : conv(a, c, h, w, b.ew, b.eb, b.cexp, 1, 1, false, false, b.acts.act, &oh, &ow);
      d = conv(e, b.cexp, h, w, b.dw, b.db, b.cexp, b.k, b.stride, true, same, b.acts.act, &oh, &ow);
    }
    const int64_t plane = oh * ow;
    DVec gate(b.cexp, 1.0), hidden(b.squeeze);
    for (int64_t j = 0; j < b.squeeze; ++j) {
      double acc = b.b1[j];
      for (int64_t ci = 0; ci < b.cexp; ++ci) {
        double mean = 0.0;
        for (int64_t p = 0; p < plane; ++p) mean += d[ci * plane + p];
        acc += double(b.w1[j * b.cexp + ci]) * mean / plane;
      }
      hidden[j] = act64(acc, b.acts.se_inner);
    }
    for (int64_t ci = 0; ci < b.cexp && b.squeeze > 0; ++ci) {
      double acc = b.b2[ci];
      for (int64_t j = 0; j < b.squeeze; ++j) acc += double(b.w2[ci * b.squeeze + j]) * hidden[j];
      gate[ci] = act64(acc, b.acts.se_gate);
    }
    for (int64_t ci = 0; ci < b.cexp; ++ci)
      for (int64_t p = 0; p < plane; ++p) d[ci * plane + p] *= gate[ci];
    DVec out = conv(d, b.cexp, oh, ow, b.pw, b.pb, b.cout, 1, 1, false, false, none, &oh, &ow);
    if (b.skip)
      for (size_t i = 0; i < out.size(); ++i) out[i] += a[i];
    a = out;
    c = b.cout;
    h = oh;
    w = ow;
  }
  DVec r = conv(a, c, h, w, m.rw, m.rb, 20, 3, 1, false, same, m.stem_act, &oh, &ow);
  for (size_t i = 0; i < r.size(); ++i) a[i] += r[i];
  DVec head = conv(a, c, h, w, m.hw, m.hb, m.head_c, 1, 1, false, false, m.head_act, &oh, &ow);
  DVec logits(m.classes);
  for (int64_t o = 0; o < m.classes; ++o) {
    double acc = m.cb[o];
    for (int64_t ci = 0; ci < m.head_c; ++ci) {
      double mean = 0.0;
      for (int64_t p = 0; p < h * w; ++p) mean += head[ci * h * w + p];
      acc += double(m.cw[o * m.head_c + ci]) * mean / (h * w);
    }
    logits[o] = acc;
  }
  return logits;
}

const float* data_or_null(const Vec& v) { return v.empty() ? nullptr : v.data(); }

// The BlockSpec of test block b with padding pad.
effnet::BlockSpec spec_of(const BlockW& b, const effnet::Pad& pad) {
  effnet::BlockSpec s;
  s.pad = pad;
  s.cin = b.cin; s.cexp = b.cexp; s.cout = b.cout; s.k = b.k; s.stride = b.stride; s.squeeze = b.squeeze;
  s.skip = b.skip;
  s.dense = b.dense;
  s.acts = b.acts;
  s.expand_weight = data_or_null(b.ew); s.expand_bias = data_or_null(b.eb);
  s.dw_weight = data_or_null(b.dw); s.dw_bias = data_or_null(b.db);
  s.se_reduce_weight = data_or_null(b.w1); s.se_reduce_bias = data_or_null(b.b1);
  s.se_expand_weight = data_or_null(b.w2); s.se_expand_bias = data_or_null(b.b2);
  s.proj_weight = b.pw.data(); s.proj_bias = b.pb.data();
  return s;
}

// The whole model as one Net: stem (3x3/2 conv), blocks, head (1x1 conv), classifier; every layer padded by the
// one rule `same` (TensorFlow SAME, else k // 2).
void build(effnet::Net& net, const Model& m, bool same) {
  auto pad = [&](int64_t k) { return same ? effnet::Pad::tf_same() : effnet::Pad::symmetric(k); };
  net.add_conv("stem", 3, m.stem_c, 3, 2, pad(3), m.stem_act, m.sw.data(),
               m.sb.data());
  for (size_t i = 0; i < m.blocks.size(); ++i)
    net.add_block("blocks." + std::to_string(i), spec_of(m.blocks[i], pad(m.blocks[i].k)));
  net.add_conv("res", 20, 20, 3, 1, pad(3), m.stem_act, m.rw.data(), m.rb.data(), true);
  net.add_conv("head", 20, m.head_c, 1, 1, effnet::Pad{}, m.head_act, m.hw.data(),
               m.hb.data());
  net.set_classifier(m.head_c, m.classes, m.cw.data(), m.cb.data());
}

enum class Layout { kNCHW, kNHWC, kStrided };

void test_forward(bool acts) {
  std::mt19937 g(acts ? 4 : 3);
  const Model m = make_model(g, acts);
  for (auto isa : effnet::kAllIsas) {
    if (!effnet::isa_supported(isa)) continue;
    for (bool same : {false, true}) {
      effnet::Net net(isa);
      build(net, m, same);
      for (int64_t n : {1, 3})
        for (auto hw : {std::pair<int64_t, int64_t>{33, 29}, {16, 16}, {1, 2}})
          for (Layout layout : {Layout::kNCHW, Layout::kNHWC, Layout::kStrided}) {
            const int64_t h = hw.first, w = hw.second;
            int64_t st[4];
            if (layout == Layout::kNCHW) {
              st[3] = 1; st[2] = w; st[1] = h * w; st[0] = 3 * h * w;
            } else if (layout == Layout::kNHWC) {
              st[1] = 1; st[3] = 3; st[2] = 3 * w; st[0] = 3 * h * w;
            } else {  // every other column of a wider NCHW image, plus an offset between samples
              st[3] = 2; st[2] = 2 * w + 1; st[1] = h * st[2]; st[0] = 3 * st[1] + 5;
            }
            const int64_t span = (n - 1) * st[0] + 2 * st[1] + (h - 1) * st[2] + (w - 1) * st[3] + 1;
            std::normal_distribution<float> d(0.0f, 1.0f);
            Vec x(span);
            for (float& v : x) v = d(g);
            std::vector<DVec> want;
            for (int64_t s = 0; s < n; ++s) {
              DVec xs(3 * h * w);
              for (int64_t c = 0; c < 3; ++c)
                for (int64_t i = 0; i < h; ++i)
                  for (int64_t j = 0; j < w; ++j) xs[(c * h + i) * w + j] = x[s * st[0] + c * st[1] + i * st[2] + j * st[3]];
              want.push_back(reference(m, xs, h, w, same));
            }
            for (int threads : {1, 3})
              for (bool banded : {false, true}) {
                net.set_band_fusion(banded, banded ? 0 : effnet::Net::kDefaultBandMinFloats);
                Vec logits(n * m.classes, -1.0f);
                net.run(x.data(), n, h, w, st, logits.data(), threads);
                double err = 0.0, norm = 0.0;
                for (int64_t s = 0; s < n; ++s)
                  for (int64_t o = 0; o < m.classes; ++o) {
                    const double dlt = logits[s * m.classes + o] - want[s][o];
                    err += dlt * dlt;
                    norm += want[s][o] * want[s][o];
                  }
                const double rel = std::sqrt(err / std::max(norm, 1e-30));
                EXPECT(rel <= 1e-5 && norm > 1e-6,
                       "%s acts=%d same=%d n=%lld %lldx%lld layout=%d threads=%d banded=%d: rel err %g",
                       effnet::isa_name(isa), acts, same, (long long)n, (long long)h, (long long)w, int(layout),
                       threads, banded, rel);
              }
          }
    }
  }
}

void test_bad_configs() {
  std::mt19937 g(5);
  const Model m = make_model(g);
  auto throws = [](auto fn) {
    try {
      fn();
    } catch (const std::invalid_argument&) {
      return true;
    }
    return false;
  };
  effnet::Net net(effnet::Isa::kScalar);
  float logits[10];
  const int64_t st[4] = {3 * 8 * 8, 64, 8, 1};
  Vec x(3 * 64, 1.0f);
  EXPECT(throws([&] { net.run(x.data(), 1, 8, 8, st, logits, 1); }), "an empty net ran");
  net.add_conv("stem", 3, m.stem_c, 3, 2, effnet::Pad::symmetric(3), effnet::Act::kSilu, m.sw.data(), m.sb.data());
  const BlockW& b = m.blocks[1];
  // block 1 of the test model with one field changed (input channels 8: it follows the stem)
  auto changed = [&](auto&& edit) {
    effnet::BlockSpec s = spec_of(b, effnet::Pad::symmetric(b.k));
    s.cin = 8; s.stride = 2; s.skip = false;
    edit(s);
    return [&net, s] { net.add_block("b", s); };
  };
  EXPECT(throws(changed([](effnet::BlockSpec& s) { s.cin = 9; })),
         "a block whose input channels do not follow the stem was accepted");
  EXPECT(throws(changed([](effnet::BlockSpec& s) { s.skip = true; })), "a residual on a stride-2 block was accepted");
  EXPECT(throws(changed([](effnet::BlockSpec& s) { s.k = 9; s.stride = 1; })), "k = 9 accepted");
  EXPECT(throws(changed([](effnet::BlockSpec& s) { s.acts.act = effnet::Act::kSigmoid; })),
         "a block with a gate as its activation was accepted");
  EXPECT(throws(changed([](effnet::BlockSpec& s) { s.acts.se_gate = effnet::Act::kRelu; })),
         "a block with ReLU as its SE gate was accepted");
  EXPECT(throws(changed([](effnet::BlockSpec& s) { s.squeeze = 0; })),
         "a block with squeeze 0 and SE weights was accepted");
  EXPECT(throws(changed([](effnet::BlockSpec& s) { s.dense = true; })),
         "a dense (fused-MBConv) block with depthwise weights was accepted");
  EXPECT(throws([] { effnet::parse_act("gelu", "act"); }), "parse_act accepted gelu");
  EXPECT(throws([] { effnet::parse_act("relu", "gate", true); }), "parse_act accepted relu as a gate");
  EXPECT(throws([&] { net.add_conv("r", 8, 8, 3, 2, effnet::Pad::symmetric(3), effnet::Act::kSilu, m.rw.data(),
                                   m.rb.data(), true); }), "a conv with a residual and stride 2 was accepted");
  EXPECT(throws([&] { net.add_conv("r", 8, 8, 3, 1, effnet::Pad{}, effnet::Act::kSilu, m.rw.data(), m.rb.data(),
                                   true); }), "a conv with a residual that shrinks its input was accepted");
  net.add_conv("head", 8, m.head_c, 1, 1, effnet::Pad{}, effnet::Act::kSilu, m.hw.data(), m.hb.data());
  EXPECT(throws([&] { net.set_classifier(m.head_c + 1, m.classes, m.cw.data(), m.cb.data()); }),
         "a classifier that does not take the head's features was accepted");
  net.set_classifier(m.head_c, m.classes, m.cw.data(), m.cb.data());
  net.run(x.data(), 1, 8, 8, st, logits, 1);  // stem -> head directly: valid
  const int64_t bad[4] = {-1, 64, 8, 1};
  EXPECT(throws([&] { net.run(x.data(), 1, 8, 8, bad, logits, 1); }), "a negative stride accepted");
  EXPECT(throws([&] { net.run(x.data(), 1, 0, 8, st, logits, 1); }), "h = 0 accepted");
}

}  // namespace

// A chain split in two Nets gives the whole Net's logits bit for bit: the first (stem + some blocks) writes
// its NHWC output and the same as NCHW; the second (the other blocks with explicit pads, head, classifier)
// reads the NHWC output in place and the NCHW one through its one transpose. Explicit pads equal to the
// constructor's convention: symmetric, or at an even size TF SAME's (k - 2) / 2 before, the rest after.
void test_chain_split() {
  std::mt19937 g(11);
  const Model m = make_model(g);
  for (auto isa : effnet::kAllIsas) {
    if (!effnet::isa_supported(isa)) continue;
    for (bool same : {false, true}) {
      effnet::Net whole(isa);
      build(whole, m, same);
      for (size_t split = 0; split <= m.blocks.size(); ++split) {
        effnet::Net a(isa), b(isa);
        a.add_conv("stem", 3, m.stem_c, 3, 2, same ? effnet::Pad::tf_same() : effnet::Pad::symmetric(3),
                   effnet::Act::kSilu, m.sw.data(), m.sb.data());
        for (size_t i = 0; i < m.blocks.size(); ++i) {
          const BlockW& bw = m.blocks[i];
          // explicit amounts everywhere: symmetric, or (for same) SAME's at an even size: k - 2 in all at
          // stride 2, the extra pixel after
          const int64_t lo = (bw.k - 2) / 2, hi = bw.k - 2 - lo;
          const effnet::Pad pad = same && bw.stride == 2 ? effnet::Pad{false, lo, hi, lo, hi}
                                                         : effnet::Pad::symmetric(bw.k);
          effnet::Net& net = i < split ? a : b;
          net.add_block("b" + std::to_string(i), spec_of(bw, pad));
        }
        b.add_conv("res", 20, 20, 3, 1, effnet::Pad::symmetric(3), effnet::Act::kSilu, m.rw.data(), m.rb.data(), true);
        b.add_conv("head", 20, m.head_c, 1, 1, effnet::Pad{}, effnet::Act::kSilu, m.hw.data(), m.hb.data());
        b.set_classifier(m.head_c, m.classes, m.cw.data(), m.cb.data());
        const int64_t n = 2, h = 32, w = 32;  // even at every stride-2 block: the explicit pads are SAME's
        const int64_t st[4] = {3 * h * w, h * w, w, 1};
        std::normal_distribution<float> d(0.0f, 1.0f);
        Vec x(n * 3 * h * w);
        for (float& v : x) v = d(g);
        Vec want(n * m.classes), got(n * m.classes, -1.0f), got2(n * m.classes, -2.0f);
        whole.run(x.data(), n, h, w, st, want.data(), 2);
        const std::vector<int64_t> mid = a.out_shape(h, w);  // {c, h, w}
        const int64_t mc = mid[0], mh = mid[1], mw = mid[2];
        Vec nhwc(n * mc * mh * mw), nchw(n * mc * mh * mw, -3.0f);
        a.run(x.data(), n, h, w, st, nhwc.data(), 2, nchw.data());
        EXPECT(b.in_channels() == mc, "split %zu: the second net takes %lld channels, the first gives %lld", split,
               (long long)b.in_channels(), (long long)mc);
        const int64_t s_nhwc[4] = {mh * mw * mc, 1, mw * mc, mc}, s_nchw[4] = {mc * mh * mw, mh * mw, mw, 1};
        b.run(nhwc.data(), n, mh, mw, s_nhwc, got.data(), 2);
        b.run(nchw.data(), n, mh, mw, s_nchw, got2.data(), 2);
        EXPECT(got == want && got2 == want, "%s same=%d split %zu: the split chain's logits differ from the whole net's",
               effnet::isa_name(isa), same, split);
        EXPECT(b.out_shape(mh, mw) == (std::vector<int64_t>{m.classes, 1, 1}), "split %zu: out_shape", split);
      }
    }
  }
}

int main() {
  test_forward(false);
  test_forward(true);
  test_bad_configs();
  test_chain_split();
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
