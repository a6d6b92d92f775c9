// pybind11 module effnet_kernels._C: thin, torch-free bindings over the C++ core.
// Tensors cross the boundary as (data pointer, shape, strides) so the module never links torch;
// the Python side validates dtype/device/shape before calling. The GIL is released in kernels.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "effnet/dwconv.h"
#include "effnet/gemm.h"
#include "effnet/net.h"
#include "effnet/se.h"
#include "effnet/threadpool.h"

namespace py = pybind11;

namespace {

template <typename T>
T* as_ptr(std::uintptr_t addr, const char* name, bool allow_null = false) {
  if (addr == 0 && !allow_null) throw std::invalid_argument(std::string(name) + " must not be a null pointer");
  return reinterpret_cast<T*>(addr);
}

std::array<int64_t, 4> as_strides(const std::vector<int64_t>& s, const char* name) {
  if (s.size() != 4)
    throw std::invalid_argument(std::string(name) + " must have 4 strides (n, c, h, w), got " +
                                std::to_string(s.size()));
  return {s[0], s[1], s[2], s[3]};
}

effnet::Isa resolve_isa(const std::string& isa) {
  return isa.empty() ? effnet::default_isa() : effnet::parse_isa(isa.c_str());
}

// One depthwise call's geometry, validated once: Python caches a plan per (shape, strides, k, stride,
// padding, isa) so a repeated call only passes six integers (pybind11 converting sixteen arguments,
// three of them sequences, cost several microseconds per call).
class DwPlan {
 public:
  DwPlan(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& x_strides, int64_t k, int64_t stride,
         int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w, const std::vector<int64_t>& y_strides,
         const std::string& isa, const std::string& act) {
    if (x_shape.size() != 4)
      throw std::invalid_argument("x_shape must be (n, c, h, w), got " + std::to_string(x_shape.size()) + " dims");
    p_.n = x_shape[0]; p_.c = x_shape[1]; p_.h = x_shape[2]; p_.w = x_shape[3];
    p_.act = effnet::parse_act(act, "act");
    p_.k = k; p_.stride = stride; p_.pad_top = pad_top; p_.pad_left = pad_left;
    p_.out_h = out_h; p_.out_w = out_w;
    const auto xs = as_strides(x_strides, "x_strides");
    const auto ys = as_strides(y_strides, "y_strides");
    for (int i = 0; i < 4; ++i) { p_.x_stride[i] = xs[i]; p_.y_stride[i] = ys[i]; }
    effnet::check_params(p_);
    isa_ = resolve_isa(isa);
  }

  // y = act(depthwise_conv(x) + bias) (+ the (N, C) mean of y into `pooled` when it is non-zero).
  void run(std::uintptr_t x, std::uintptr_t weight, std::uintptr_t bias, std::uintptr_t y, std::uintptr_t pooled,
           int num_threads, std::uintptr_t packed) const {
    const bool empty = p_.n == 0;
    const float* xp = as_ptr<const float>(x, "x", empty);
    const float* wp = as_ptr<const float>(weight, "weight");
    const float* bp = as_ptr<const float>(bias, "bias");
    float* yp = as_ptr<float>(y, "y", empty);
    float* pp = as_ptr<float>(pooled, "pooled", true);
    const float* kp = as_ptr<const float>(packed, "packed", true);
    py::gil_scoped_release release;
    effnet::dwconv_bias_swish(p_, xp, wp, bp, yp, pp, num_threads, isa_, kp);
  }

  // Floats pack() writes; 0 when this geometry's kernel reads the weights as given.
  size_t packed_size() const { return effnet::nhwc_packed_size(p_, isa_); }

  void pack(std::uintptr_t weight, std::uintptr_t bias, std::uintptr_t packed) const {
    if (packed_size() == 0) return;
    const float* wp = as_ptr<const float>(weight, "weight");
    const float* bp = as_ptr<const float>(bias, "bias");
    float* kp = as_ptr<float>(packed, "packed");
    effnet::pack_nhwc(p_, isa_, wp, bp, kp);
  }

  std::string isa() const { return effnet::isa_name(isa_); }

 private:
  effnet::DwConvParams p_;
  effnet::Isa isa_ = effnet::Isa::kScalar;
};

// One squeeze-excitation geometry (x and y shapes/strides), validated once; cached by Python like DwPlan.
class SePlan {
 public:
  SePlan(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& x_strides,
         const std::vector<int64_t>& y_strides, const std::string& isa) {
    if (x_shape.size() != 4)
      throw std::invalid_argument("x_shape must be (n, c, h, w), got " + std::to_string(x_shape.size()) + " dims");
    p_.n = x_shape[0]; p_.c = x_shape[1]; p_.h = x_shape[2]; p_.w = x_shape[3];
    const auto xs = as_strides(x_strides, "x_strides");
    const auto ys = as_strides(y_strides, "y_strides");
    for (int i = 0; i < 4; ++i) { p_.x_stride[i] = xs[i]; p_.y_stride[i] = ys[i]; }
    if (p_.n < 0 || p_.c <= 0 || p_.h <= 0 || p_.w <= 0)
      throw std::invalid_argument("x_shape must have n >= 0 and c, h, w > 0");
    isa_ = resolve_isa(isa);
  }
  void pool(std::uintptr_t x, std::uintptr_t pooled, int num_threads) const {
    const bool empty = p_.n == 0;
    const float* xp = as_ptr<const float>(x, "x", empty);
    float* pp = as_ptr<float>(pooled, "pooled", empty);
    py::gil_scoped_release release;
    effnet::se_pool(p_, xp, pp, num_threads, isa_);
  }
  void apply(std::uintptr_t x, std::uintptr_t gate, std::uintptr_t y, int num_threads) const {
    const bool empty = p_.n == 0;
    const float* xp = as_ptr<const float>(x, "x", empty);
    const float* gp = as_ptr<const float>(gate, "gate", empty);
    float* yp = as_ptr<float>(y, "y", empty);
    py::gil_scoped_release release;
    effnet::se_apply(p_, xp, gp, yp, num_threads, isa_);
  }
  void run(std::uintptr_t x, std::uintptr_t packed, int64_t squeeze, std::uintptr_t y, int num_threads,
           const std::string& inner_act, const std::string& gate) const {
    const effnet::Act inner = effnet::parse_act(inner_act, "inner_act"), g = effnet::parse_act(gate, "gate", true);
    const bool empty = p_.n == 0;
    if (squeeze <= 0) throw std::invalid_argument("squeeze must be > 0, got " + std::to_string(squeeze));
    const float* xp = as_ptr<const float>(x, "x", empty);
    const float* kp = as_ptr<const float>(packed, "packed");
    float* yp = as_ptr<float>(y, "y", empty);
    py::gil_scoped_release release;
    effnet::squeeze_excite(p_, squeeze, xp, kp, yp, num_threads, isa_, inner, g);
  }
  std::string isa() const { return effnet::isa_name(isa_); }

 private:
  effnet::SeParams p_;
  effnet::Isa isa_ = effnet::Isa::kScalar;
};

void se_pack(int64_t c, int64_t s, std::uintptr_t w1, const std::vector<int64_t>& w1_strides, std::uintptr_t b1,
             std::uintptr_t w2, const std::vector<int64_t>& w2_strides, std::uintptr_t b2, std::uintptr_t packed) {
  if (w1_strides.size() != 2 || w2_strides.size() != 2)
    throw std::invalid_argument("w1_strides and w2_strides must have 2 entries");
  const int64_t s1[2] = {w1_strides[0], w1_strides[1]}, s2[2] = {w2_strides[0], w2_strides[1]};
  effnet::se_pack(c, s, as_ptr<const float>(w1, "w1"), s1, as_ptr<const float>(b1, "b1"),
                  as_ptr<const float>(w2, "w2"), s2, as_ptr<const float>(b2, "b2"), as_ptr<float>(packed, "packed"));
}

void se_gate(int64_t n, int64_t c, int64_t s, std::uintptr_t packed, std::uintptr_t pooled, std::uintptr_t gate,
             int num_threads, const std::string& isa, const std::string& inner_act, const std::string& gate_act) {
  const effnet::Isa chosen = resolve_isa(isa);
  const effnet::Act inner = effnet::parse_act(inner_act, "inner_act"), g = effnet::parse_act(gate_act, "gate", true);
  const float* kp = as_ptr<const float>(packed, "packed");
  const float* pp = as_ptr<const float>(pooled, "pooled", n == 0);
  float* gp = as_ptr<float>(gate, "gate", n == 0);
  py::gil_scoped_release release;
  effnet::se_gate(n, c, s, kp, pp, gp, num_threads, chosen, inner, g);
}

void swish_inplace(std::uintptr_t data, int64_t count, const std::string& isa) {
  if (count < 0) throw std::invalid_argument("count must be >= 0, got " + std::to_string(count));
  float* p = as_ptr<float>(data, "data", count == 0);
  const effnet::Isa chosen = resolve_isa(isa);
  py::gil_scoped_release release;
  effnet::swish_inplace(p, count, chosen);
}

void act_inplace(std::uintptr_t data, int64_t count, const std::string& act, const std::string& isa) {
  if (count < 0) throw std::invalid_argument("count must be >= 0, got " + std::to_string(count));
  float* p = as_ptr<float>(data, "data", count == 0);
  effnet::Act a;
  try {
    a = effnet::parse_act(act, "act");
  } catch (const std::invalid_argument&) {  // or a gate (the error names both sets)
    try {
      a = effnet::parse_act(act, "act", true);
    } catch (const std::invalid_argument&) {
      throw std::invalid_argument("act must be one of silu, relu, relu6, hardswish, identity, sigmoid, "
                                  "hardsigmoid; got '" + act + "'");
    }
  }
  const effnet::Isa chosen = resolve_isa(isa);
  py::gil_scoped_release release;
  effnet::act_inplace(p, count, a, chosen);
}

// The 1x1-conv GEMM over raw pointers (tests and benchmarks reach the kernel through this; fuse() runs it
// inside Net). Arguments as in effnet::GemmArgs; 0 for an absent bias / scale / residual.
void gemm(int64_t m, int64_t n, int64_t k, std::uintptr_t a, int64_t lda, std::uintptr_t packed, std::uintptr_t bias,
          std::uintptr_t scale, int64_t rows_per_scale, std::uintptr_t residual, int64_t ldr, std::uintptr_t c,
          int64_t ldc, const std::string& act, int num_threads, const std::string& isa) {
  effnet::GemmArgs g;
  g.m = m; g.n = n; g.k = k;
  g.a = as_ptr<const float>(a, "a", m == 0);
  g.lda = lda;
  g.packed = as_ptr<const float>(packed, "packed");
  g.bias = as_ptr<const float>(bias, "bias", true);
  g.scale = as_ptr<const float>(scale, "scale", true);
  g.rows_per_scale = rows_per_scale;
  g.residual = as_ptr<const float>(residual, "residual", true);
  g.ldr = ldr;
  g.c = as_ptr<float>(c, "c", m == 0);
  g.ldc = ldc;
  g.act = effnet::parse_act(act, "act");
  const effnet::Isa chosen = resolve_isa(isa);
  py::gil_scoped_release release;
  effnet::gemm(g, num_threads, chosen);
}

void gemm_pack(int64_t n, int64_t k, std::uintptr_t w, int64_t stride_n, int64_t stride_k, std::uintptr_t packed,
               const std::string& isa) {
  effnet::gemm_pack(n, k, as_ptr<const float>(w, "w"), stride_n, stride_k, as_ptr<float>(packed, "packed"),
                    resolve_isa(isa));
}

// A layer's padding from Python: [] for TensorFlow SAME, [top, bottom, left, right] for explicit amounts.
effnet::Pad as_pad(const std::vector<int64_t>& pad, const std::string& name) {
  if (pad.empty()) return effnet::Pad::tf_same();
  if (pad.size() != 4)
    throw std::invalid_argument(name + ": pad must be [] (TensorFlow SAME) or [top, bottom, left, right], got " +
                                std::to_string(pad.size()) + " values");
  return effnet::Pad{false, pad[0], pad[1], pad[2], pad[3]};
}

// effnet::BlockSpec from Python: the pad as a list ([] for TensorFlow SAME), activations by name, weights as
// addresses (0: null).
struct PyBlockSpec {
  std::vector<int64_t> pad;
  int64_t cin = 0, cexp = 0, cout = 0, k = 3, stride = 1, squeeze = 0;
  bool skip = false, dense = false;
  std::string act = "silu", se_inner = "silu", se_gate = "sigmoid";
  std::uintptr_t expand_weight = 0, expand_bias = 0, dw_weight = 0, dw_bias = 0, se_reduce_weight = 0,
                 se_reduce_bias = 0, se_expand_weight = 0, se_expand_bias = 0, proj_weight = 0, proj_bias = 0;
};

// effnet::Net with pointer arguments (weights are copied and packed in the calls that take them).
class PyNet {
 public:
  explicit PyNet(const std::string& isa) : net_(resolve_isa(isa)) {}
  void set_classifier(int64_t features, int64_t classes, std::uintptr_t w, std::uintptr_t b) {
    net_.set_classifier(features, classes, as_ptr<const float>(w, "weight"), as_ptr<const float>(b, "bias"));
  }
  void add_conv(const std::string& name, int64_t cin, int64_t cout, int64_t k, int64_t stride,
                const std::vector<int64_t>& pad, const std::string& act, std::uintptr_t w, std::uintptr_t b,
                bool skip) {
    net_.add_conv(name, cin, cout, k, stride, as_pad(pad, name), effnet::parse_act(act, "act"),
                  as_ptr<const float>(w, "weight"), as_ptr<const float>(b, "bias"), skip);
  }
  void add_block(const std::string& name, const PyBlockSpec& s) {
    effnet::BlockSpec b;
    b.pad = as_pad(s.pad, name);
    b.cin = s.cin; b.cexp = s.cexp; b.cout = s.cout; b.k = s.k; b.stride = s.stride; b.squeeze = s.squeeze;
    b.skip = s.skip;
    b.dense = s.dense;
    b.acts.act = effnet::parse_act(s.act, "act");
    b.acts.se_inner = effnet::parse_act(s.se_inner, "se_inner");
    b.acts.se_gate = effnet::parse_act(s.se_gate, "se_gate", true);
    const bool no_se = s.squeeze == 0;  // then the four SE pointers must be 0
    b.expand_weight = as_ptr<const float>(s.expand_weight, "expand_weight", true);
    b.expand_bias = as_ptr<const float>(s.expand_bias, "expand_bias", s.expand_weight == 0);
    b.dw_weight = as_ptr<const float>(s.dw_weight, "dw_weight", s.dense);
    b.dw_bias = as_ptr<const float>(s.dw_bias, "dw_bias", s.dense);
    b.se_reduce_weight = as_ptr<const float>(s.se_reduce_weight, "se_reduce_weight", no_se);
    b.se_reduce_bias = as_ptr<const float>(s.se_reduce_bias, "se_reduce_bias", no_se);
    b.se_expand_weight = as_ptr<const float>(s.se_expand_weight, "se_expand_weight", no_se);
    b.se_expand_bias = as_ptr<const float>(s.se_expand_bias, "se_expand_bias", no_se);
    b.proj_weight = as_ptr<const float>(s.proj_weight, "proj_weight");
    b.proj_bias = as_ptr<const float>(s.proj_bias, "proj_bias");
    net_.add_block(name, b);
  }
  std::vector<int64_t> out_shape(int64_t h, int64_t w) const { return net_.out_shape(h, w); }
  std::vector<int64_t> layer_shape(int64_t layer, int64_t h, int64_t w) const { return net_.layer_shape(layer, h, w); }
  void run_outputs(std::uintptr_t x, int64_t n, int64_t h, int64_t w, const std::vector<int64_t>& strides,
                   std::uintptr_t out, int num_threads, std::uintptr_t out_nchw,
                   const std::vector<std::tuple<int64_t, std::uintptr_t, std::uintptr_t>>& outputs) const {
    const auto s = as_strides(strides, "x_strides");
    const float* xp = as_ptr<const float>(x, "x", n == 0);
    float* op = as_ptr<float>(out, "out", n == 0);
    float* np = as_ptr<float>(out_nchw, "out_nchw", true);
    std::vector<effnet::Net::Output> outs;
    for (const auto& [layer, nhwc, nchw] : outputs)
      outs.push_back({layer, as_ptr<float>(nhwc, "nhwc", true), as_ptr<float>(nchw, "nchw", true)});
    py::gil_scoped_release release;
    net_.run(xp, n, h, w, s.data(), op, num_threads, np, outs);
  }
  void run(std::uintptr_t x, int64_t n, int64_t h, int64_t w, const std::vector<int64_t>& strides,
           std::uintptr_t out, int num_threads, std::uintptr_t out_nchw) const {
    const auto s = as_strides(strides, "x_strides");
    const float* xp = as_ptr<const float>(x, "x", n == 0);
    float* op = as_ptr<float>(out, "out", n == 0 || out_nchw != 0);
    float* np = as_ptr<float>(out_nchw, "out_nchw", true);
    py::gil_scoped_release release;
    net_.run(xp, n, h, w, s.data(), op, num_threads, np);
  }
  int64_t classes() const { return net_.classes(); }
  int64_t in_channels() const { return net_.in_channels(); }
  int64_t layers() const { return net_.layers(); }
  void set_profiling(bool on) { net_.set_profiling(on); }
  void set_band_fusion(bool on, int64_t min_floats, int64_t band_floats) {
    if (min_floats < 0 || band_floats < 1)
      throw std::invalid_argument("min_floats must be >= 0 and band_floats >= 1, got " + std::to_string(min_floats) +
                                  " and " + std::to_string(band_floats));
    net_.set_band_fusion(on, min_floats, band_floats);
  }
  std::vector<std::pair<std::string, double>> last_profile() const { return net_.last_profile(); }
  void set_taps(bool on) { net_.set_taps(on); }
  py::list last_taps() const {
    py::list out;
    for (const auto& t : net_.last_taps())
      out.append(py::make_tuple(t.name, py::make_tuple(t.n, t.h, t.w, t.c),
                                py::bytes(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float))));
    return out;
  }
  std::string isa() const { return effnet::isa_name(net_.isa()); }

 private:
  effnet::Net net_;
};

py::dict isa_info() {
  py::dict d;
  py::list supported, known;
  for (effnet::Isa isa : effnet::kAllIsas) {
    known.append(effnet::isa_name(isa));
    if (effnet::isa_supported(isa)) supported.append(effnet::isa_name(isa));
  }
  py::list compiled;
  compiled.append(effnet::isa_name(effnet::Isa::kScalar));
#define EFFNET_NAME(name, e, lanes, has) compiled.append(#name);
  EFFNET_SIMD_ISAS(EFFNET_NAME)
#undef EFFNET_NAME
  d["known"] = known;        // every path any build has
  d["compiled"] = compiled;  // this build's (its architecture's): supported where the CPU has the features
  d["default"] = effnet::isa_name(effnet::default_isa());
  d["best"] = effnet::isa_name(effnet::best_isa());
  d["supported"] = supported;
  d["note"] = effnet::isa_note();
  d["pool_threads"] = effnet::pool_size() + 1;
  d["parallel_backend"] = effnet::parallel_backend();
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "effnet_kernels C++ core (torch-free): fused depthwise conv + bias + Swish and squeeze-excitation kernels";
  py::class_<DwPlan>(m, "DwPlan",
                     "A validated depthwise call geometry: y = act(depthwise_conv(x, weight) + bias), act one of "
                     "silu (default), relu, relu6, hardswish, identity. Shapes "
                     "and strides in elements; isa '' (default path) or a name of isa_info()['known'].")
      .def(py::init<const std::vector<int64_t>&, const std::vector<int64_t>&, int64_t, int64_t, int64_t, int64_t,
                    int64_t, int64_t, const std::vector<int64_t>&, const std::string&, const std::string&>(),
           py::arg("x_shape"), py::arg("x_strides"), py::arg("k"), py::arg("stride"), py::arg("pad_top"),
           py::arg("pad_left"), py::arg("out_h"), py::arg("out_w"), py::arg("y_strides"), py::arg("isa") = "",
           py::arg("act") = "silu")
      .def("run", &DwPlan::run, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("y"),
           py::arg("pooled") = 0, py::arg("num_threads") = 1, py::arg("packed") = 0,
           "Run on fp32 buffers at these data addresses (weight (C, k, k) contiguous; pooled, when non-zero, "
           "receives the (N, C) mean of y; packed, when non-zero, what pack() wrote for these weight and "
           "bias). Releases the GIL.")
      .def_property_readonly("packed_size", &DwPlan::packed_size)
      .def("pack", &DwPlan::pack, py::arg("weight"), py::arg("bias"), py::arg("packed"),
           "Write the weights and biases in the layout this geometry's kernel reads (packed_size floats), "
           "so repeated calls with the same weights skip packing.")
      .def_property_readonly("isa", &DwPlan::isa);
  py::class_<SePlan>(m, "SePlan",
                     "A validated squeeze-excitation geometry (x shape, x and y strides in elements).")
      .def(py::init<const std::vector<int64_t>&, const std::vector<int64_t>&, const std::vector<int64_t>&,
                    const std::string&>(),
           py::arg("x_shape"), py::arg("x_strides"), py::arg("y_strides"), py::arg("isa") = "")
      .def("pool", &SePlan::pool, py::arg("x"), py::arg("pooled"), py::arg("num_threads") = 1,
           "pooled (N, C contiguous fp32) = mean of x over H x W. Releases the GIL.")
      .def("apply", &SePlan::apply, py::arg("x"), py::arg("gate"), py::arg("y"), py::arg("num_threads") = 1,
           "y = x * gate[n, c] (gate (N, C) contiguous). Releases the GIL.")
      .def("run", &SePlan::run, py::arg("x"), py::arg("packed"), py::arg("squeeze"), py::arg("y"),
           py::arg("num_threads") = 1, py::arg("inner_act") = "silu", py::arg("gate") = "sigmoid",
           "The whole SE (pool, gate, apply) with se_pack()ed weights.")
      .def_property_readonly("isa", &SePlan::isa);
  m.def("se_packed_size", &effnet::se_packed_size, py::arg("channels"), py::arg("squeeze"));
  m.def("se_pack", &se_pack, py::arg("channels"), py::arg("squeeze"), py::arg("w1"), py::arg("w1_strides"),
        py::arg("b1"), py::arg("w2"), py::arg("w2_strides"), py::arg("b2"), py::arg("packed"),
        "Pack reduce (S, C) and expand (C, S) weights (element strides given) with their biases.");
  m.def("se_gate", &se_gate, py::arg("n"), py::arg("channels"), py::arg("squeeze"), py::arg("packed"),
        py::arg("pooled"), py::arg("gate"), py::arg("num_threads") = 1, py::arg("isa") = "",
        py::arg("inner_act") = "silu", py::arg("gate_act") = "sigmoid",
        "gate (N, C) = gate_act(expand(inner_act(reduce(pooled)))) from packed weights.");
  m.def("swish_inplace", &swish_inplace, py::arg("data"), py::arg("count"), py::arg("isa") = "",
        "In-place Swish over `count` contiguous fp32 values at address `data` (single thread).");
  m.def("act_inplace", &act_inplace, py::arg("data"), py::arg("count"), py::arg("act"), py::arg("isa") = "",
        "In-place activation (silu, relu, relu6, hardswish, identity, sigmoid, hardsigmoid) over `count` "
        "contiguous fp32 values at address `data` (single thread).");
  m.def("set_openmp_runtime",
        [](const std::string& library) {
          std::string why;
          if (!effnet::set_openmp_runtime(library.c_str(), &why)) throw std::invalid_argument(why);
        },
        py::arg("library"),
        "Run the kernels' threads on the OpenMP runtime at this path (already loaded, e.g. torch's "
        "libgomp); '' for the package's own pool.");
  m.def("parallel_backend", &effnet::parallel_backend);
  m.def("set_pool_spin_us", &effnet::set_pool_spin_us, py::arg("us"),
        "How long idle pool workers busy-wait for the next job before sleeping (microseconds).");
  m.def("pool_spin_us", &effnet::pool_spin_us);
  m.def("gemm", &gemm, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("a"), py::arg("lda"), py::arg("packed"),
        py::arg("bias"), py::arg("scale"), py::arg("rows_per_scale"), py::arg("residual"), py::arg("ldr"),
        py::arg("c"), py::arg("ldc"), py::arg("act"), py::arg("num_threads"), py::arg("isa") = "",
        "C = act(A diag(scale[i / rows_per_scale]) W^T + bias) + residual over raw fp32 pointers (see gemm.h).");
  m.def("gemm_packed_size", [](int64_t n, int64_t k, const std::string& isa) {
    return effnet::gemm_packed_size(n, k, resolve_isa(isa)); }, py::arg("n"), py::arg("k"), py::arg("isa") = "");
  m.def("gemm_pack", &gemm_pack, py::arg("n"), py::arg("k"), py::arg("w"), py::arg("stride_n"), py::arg("stride_k"),
        py::arg("packed"), py::arg("isa") = "");
  py::class_<PyBlockSpec>(m, "BlockSpec", "One MBConv block for Net.add_block: geometry, activations, weight "
                                         "addresses (see csrc/include/effnet/net.h)")
      .def(py::init<>())
      .def_readwrite("pad", &PyBlockSpec::pad)
      .def_readwrite("cin", &PyBlockSpec::cin)
      .def_readwrite("cexp", &PyBlockSpec::cexp)
      .def_readwrite("cout", &PyBlockSpec::cout)
      .def_readwrite("k", &PyBlockSpec::k)
      .def_readwrite("stride", &PyBlockSpec::stride)
      .def_readwrite("squeeze", &PyBlockSpec::squeeze)
      .def_readwrite("skip", &PyBlockSpec::skip)
      .def_readwrite("dense", &PyBlockSpec::dense)
      .def_readwrite("act", &PyBlockSpec::act)
      .def_readwrite("se_inner", &PyBlockSpec::se_inner)
      .def_readwrite("se_gate", &PyBlockSpec::se_gate)
      .def_readwrite("expand_weight", &PyBlockSpec::expand_weight)
      .def_readwrite("expand_bias", &PyBlockSpec::expand_bias)
      .def_readwrite("dw_weight", &PyBlockSpec::dw_weight)
      .def_readwrite("dw_bias", &PyBlockSpec::dw_bias)
      .def_readwrite("se_reduce_weight", &PyBlockSpec::se_reduce_weight)
      .def_readwrite("se_reduce_bias", &PyBlockSpec::se_reduce_bias)
      .def_readwrite("se_expand_weight", &PyBlockSpec::se_expand_weight)
      .def_readwrite("se_expand_bias", &PyBlockSpec::se_expand_bias)
      .def_readwrite("proj_weight", &PyBlockSpec::proj_weight)
      .def_readwrite("proj_bias", &PyBlockSpec::proj_bias);
  py::class_<PyNet>(m, "Net", "A fused chain of layers, optionally ending in a classifier (see csrc/include/effnet/net.h).")
      .def(py::init<const std::string&>(), py::arg("isa") = "")
      .def("set_classifier", &PyNet::set_classifier)
      .def("add_conv", &PyNet::add_conv, py::arg("name"), py::arg("cin"), py::arg("cout"), py::arg("k"),
           py::arg("stride"), py::arg("pad"), py::arg("act"), py::arg("weight"), py::arg("bias"),
           py::arg("skip") = false,
           "a dense conv layer; pad [] for TensorFlow SAME or [top, bottom, left, right]; skip: adds its input")
      .def("add_block", &PyNet::add_block, py::arg("name"), py::arg("spec"),
           "an MBConv block described by a BlockSpec (see csrc/include/effnet/net.h)")
      .def("out_shape", &PyNet::out_shape, py::arg("h"), py::arg("w"),
           "[c, out_h, out_w] run writes for an (h, w) input ([classes, 1, 1] with a classifier)")
      .def("layer_shape", &PyNet::layer_shape, py::arg("layer"), py::arg("h"), py::arg("w"),
           "[c, out_h, out_w] of layer `layer`'s output for an (h, w) input")
      .def("run_outputs", &PyNet::run_outputs, py::arg("x"), py::arg("n"), py::arg("h"), py::arg("w"),
           py::arg("x_strides"), py::arg("out"), py::arg("num_threads"), py::arg("out_nchw"), py::arg("outputs"),
           "run, also writing [(layer, nhwc ptr or 0, nchw ptr or 0)] intermediate outputs")
      .def_property_readonly("in_channels", &PyNet::in_channels)
      .def_property_readonly("layers", &PyNet::layers)
      .def("run", &PyNet::run, py::arg("x"), py::arg("n"), py::arg("h"), py::arg("w"), py::arg("x_strides"),
           py::arg("out"), py::arg("num_threads"), py::arg("out_nchw") = 0,
           "x (n, c, h, w) at x_strides; out: the logits, or the last layer's output as dense NHWC; out_nchw "
           "(0: none) the same output as dense NCHW too")
      .def("set_profiling", &PyNet::set_profiling, py::arg("on"))
      .def("set_band_fusion", &PyNet::set_band_fusion, py::arg("on"),
           py::arg("min_floats") = effnet::Net::kDefaultBandMinFloats,
           py::arg("band_floats") = effnet::Net::kDefaultBandFloats,
           "expand + depthwise in row bands for large layers (default on; see net.h)")
      .def("last_profile", &PyNet::last_profile, "[(step, seconds)] of the last run with profiling on")
      .def("set_taps", &PyNet::set_taps, py::arg("on"))
      .def("last_taps", &PyNet::last_taps,
           "[(name, (n, h, w, c), NHWC float32 bytes)] of every step's output in the last run with taps on")
      .def_property_readonly("classes", &PyNet::classes)
      .def_property_readonly("isa", &PyNet::isa);
  m.def("isa_info", &isa_info, "ISA paths: default, best, supported, note (why a path was passed over).");
#ifdef __aarch64__
  m.attr("arch") = "aarch64";
#elif defined(__x86_64__)
  m.attr("arch") = "x86_64";
#else
  m.attr("arch") = "other";
#endif
}
