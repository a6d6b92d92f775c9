"""effnet_kernels.ops depthwise conv + BN + Swish: every backend and ISA path against a float64 reference
and eager PyTorch, on the real B0–B7 layer shapes and on awkward ones."""
import random

import pytest
import torch
import torch.nn as nn

from effnet_kernels import cpu as _cpu, ops, reference
from effnet_kernels.scaling import dw_layer_shapes
from effnet_kernels.testing import rel_error

from conftest import skip_or_fail
from helpers import (ARCH_ISAS, SUPPORTED_ISAS, assert_close, assert_special_like_eager, expected_format, make_inputs,
                     memo_last, reference64, require_isa, special_values_case)


ISAS = SUPPORTED_ISAS  # the paths this CPU runs (loops inside tests); parametrized tests list ARCH_ISAS
SIMD_ISAS = [i for i in ISAS if i != "scalar"]


def test_simd_path_present():
    if not ISAS:
        skip_or_fail("effnet_kernels._C is not built")
    info = _cpu.isa_info()
    assert info["default"] == info["best"] and info["note"] == "", info
    if not SIMD_ISAS:
        skip_or_fail(f"no SIMD path on this CPU: {info}")
    missing = {"x86_64": {"avx2", "avx512"}, "aarch64": {"neon"}}.get(__import__("platform").machine(), set())
    missing -= set(ISAS)
    if missing:
        # A CPU feature, not a tool: reported, not failed (the AVX-512 path is guarded by its self-test).
        print(f"ISA paths this CPU cannot run (untested here): {sorted(missing)}")


def eager_module(x, weight, bn, eps, stride, padding):
    """nn.Conv2d(groups=C) + nn.BatchNorm2d (eval) + nn.SiLU on the same input, fp32."""
    c, k = x.shape[1], weight.shape[-1]
    conv = nn.Conv2d(c, c, k, stride, groups=c, bias=False)
    bnm = nn.BatchNorm2d(c, eps=eps).eval()
    with torch.no_grad():
        conv.weight.copy_(weight)
        bnm.weight.copy_(bn["bn_weight"]), bnm.bias.copy_(bn["bn_bias"])
        bnm.running_mean.copy_(bn["bn_mean"]), bnm.running_var.copy_(bn["bn_var"])
        xp, pad = reference.pad_input(x, k, stride, padding)
        conv.padding = (pad, pad)
        return nn.SiLU()(bnm(conv(xp)))


def run_all(x, weight, bn, stride, padding, eps=1e-5, backend=None, isa=None, check_eager=True, ref_key=None):
    """The op against float64 (and eager fp32); ``ref_key``: names x's values (not its layout), so that
    the references are computed once per key (memo_last)."""
    ref, eager = memo_last(ref_key, lambda: (reference64(x, weight, bn, eps, stride, padding),
                                             eager_module(x, weight, bn, eps, stride, padding) if check_eager else None))
    wf, bf = reference.fold_bn(weight.double(), *[bn[k].double() for k in ("bn_weight", "bn_bias", "bn_mean",
                                                                             "bn_var")], eps)
    wf, bf = wf.float(), bf.float()
    what = f"{tuple(x.shape)} k={weight.shape[-1]} s={stride} {padding} backend={backend} isa={isa}"
    if isa is not None:
        with _cpu.use_isa(isa):
            y, pooled = ops.dwconv_bias_swish_pool(x, wf, bf, stride, padding, backend=backend)
            y2 = ops.dwconv_bias_swish(x, wf, bf, stride, padding, backend=backend)
    else:
        y, pooled = ops.dwconv_bias_swish_pool(x, wf, bf, stride, padding, backend=backend)
        y2 = ops.dwconv_bias_swish(x, wf, bf, stride, padding, backend=backend)
    assert y.dtype == torch.float32 and y.shape == ref.shape and pooled.shape == ref.shape[:2]
    assert pooled.dtype == torch.float32
    assert y.is_contiguous(memory_format=expected_format(x)), f"{what}: wrong output memory format"
    assert torch.equal(y, y2), f"{what}: the pooled sibling's y differs from the plain op's"
    assert_close(y, ref, what)
    if ref.numel():
        assert rel_error(pooled, ref.mean((2, 3))) <= 1e-5, what
    if check_eager:
        assert rel_error(y, eager) <= 2e-5, what
    return y


# -- real EfficientNet layer shapes -------------------------------------------------------------------

B0_B7 = dw_layer_shapes(range(8))


@pytest.mark.parametrize("isa", [i for i in ARCH_ISAS if i != "scalar"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", B0_B7, ids=lambda s: "c{}_{}x{}_k{}_s{}".format(*s))
def test_b0_b7_layer_shapes(shape, channels_last, isa):
    require_isa(isa)
    c, h, w, k, s = shape
    x, weight, bn = make_inputs(1, c, h, w, k, channels_last, seed=c + h)
    run_all(x, weight, bn, s, "symmetric", isa=isa, check_eager=(c * h * w < 2_000_000), ref_key=("b0_b7", shape))


@pytest.mark.parametrize("shape", B0_B7[:: max(1, len(B0_B7) // 8)], ids=lambda s: "c{}_{}x{}_k{}_s{}".format(*s))
def test_b0_b7_scalar_path(cpp, shape):
    c, h, w, k, s = shape
    x, weight, bn = make_inputs(1, c, h, w, k, seed=1)
    run_all(x, weight, bn, s, "same", isa="scalar", check_eager=False)


# -- awkward shapes ------------------------------------------------------------------------------------

AWKWARD = [(1, 1, 1, 1, 3, 1), (1, 3, 2, 3, 5, 2), (3, 7, 5, 4, 7, 1), (2, 17, 13, 11, 3, 2),
           (3, 31, 7, 9, 5, 2), (1, 33, 4, 4, 7, 2), (5, 15, 1, 9, 3, 1), (1, 16, 6, 6, 1, 2),
           (2, 8, 40, 37, 5, 1), (1, 67, 3, 50, 3, 2), (1, 9, 2, 2, 5, 1)]


@pytest.mark.parametrize("isa", ARCH_ISAS)
@pytest.mark.parametrize("padding", ["symmetric", "same"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("n, c, h, w, k, s", AWKWARD)
def test_awkward_shapes(n, c, h, w, k, s, padding, channels_last, isa):
    require_isa(isa)
    x, weight, bn = make_inputs(n, c, h, w, k, channels_last, seed=n * 1000 + c)
    run_all(x, weight, bn, s, padding, eps=1e-3, isa=isa)


@pytest.mark.parametrize("view", ["channel_slice", "width_step", "permuted", "offset_nhwc"])
def test_non_contiguous_inputs(cpp, view):
    base, weight, bn = make_inputs(2, 12, 11, 18, 3)
    if view == "channel_slice":
        x = base[:, 1:]
    elif view == "width_step":
        x = base[..., ::2]
    elif view == "permuted":
        x = base.permute(0, 1, 3, 2)
    else:
        x = base.contiguous(memory_format=torch.channels_last)[:, 1:]
    c = x.shape[1]
    weight, bn = weight[:c].contiguous(), {k: v[:c].contiguous() for k, v in bn.items()}
    assert not x.is_contiguous()
    for isa in ISAS:
        run_all(x, weight, bn, 2, "same", isa=isa)


def test_random_shapes(cpp):
    rng = random.Random(7)
    for i in range(40):
        n, c, h, w = rng.randint(1, 3), rng.randint(1, 70), rng.randint(1, 19), rng.randint(1, 19)
        k, s = rng.choice([1, 3, 5, 7]), rng.choice([1, 2])
        x, weight, bn = make_inputs(n, c, h, w, k, rng.random() < 0.5, seed=i)
        run_all(x, weight, bn, s, rng.choice(["symmetric", "same"]), isa=rng.choice(ISAS))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_agree_and_are_deterministic(cpp, threads):
    x, weight, bn = make_inputs(1, 40, 30, 30, 5, channels_last=True)
    wf, bf = reference.fold_bn(weight, **bn, eps=1e-5)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1, p1 = ops.dwconv_bias_swish_pool(x, wf, bf, 1, "symmetric")
        torch.set_num_threads(threads)
        outs = [ops.dwconv_bias_swish_pool(x, wf, bf, 1, "symmetric") for _ in range(3)]
    finally:
        torch.set_num_threads(old)
    for y, p in outs:
        assert torch.equal(y, outs[0][0]) and torch.equal(p, outs[0][1])  # deterministic for a thread count
        assert torch.equal(y, y1)  # each output is computed by exactly one thread, the same way
        assert rel_error(p, p1) < 1e-6
    # … and right (the comparisons above would pass for any deterministic result).
    ref, ref_pool = reference.dwconv_bias_swish_pool(x.double(), wf.double(), bf.double(), 1, "symmetric")
    assert_close(y1, ref, "threads=1")
    assert rel_error(outs[0][1], ref_pool) <= 1e-5, f"threads={threads}: pooled"


# -- backends, registration, compile ---------------------------------------------------------------

def test_backends_agree_and_torch_backend_is_reference():
    x, weight, bn = make_inputs(2, 24, 9, 10, 3, channels_last=True)
    wf, bf = reference.fold_bn(weight, **bn, eps=1e-5)
    y_torch = ops.dwconv_bias_swish(x, wf, bf, 2, "same", backend="torch")
    assert torch.equal(y_torch, reference.dwconv_bias_swish(x, wf, bf, 2, "same"))
    for backend in [None] + (["cpp"] if ISAS else []):
        assert rel_error(ops.dwconv_bias_swish(x, wf, bf, 2, "same", backend=backend), y_torch) < 1e-5
    assert "torch" in ops.available_backends("cpu")


def test_eager_fast_path_matches_registered_op(cpp):
    x, weight, bn = make_inputs(2, 24, 9, 10, 5)
    wf, bf = reference.fold_bn(weight, **bn, eps=1e-5)
    fast = ops.dwconv_bias_swish_pool(x, wf, bf, 1, "symmetric")
    via_op = torch.ops.effnet_kernels.dwconv_bias_swish_pool(x, wf, bf, 1, "symmetric")
    assert torch.equal(fast[0], via_op[0]) and torch.equal(fast[1], via_op[1])
    assert torch.equal(ops.dwconv_bias_swish(x, wf, bf, 1, "symmetric"),
                       torch.ops.effnet_kernels.dwconv_bias_swish(x, wf, bf, 1, "symmetric"))


def test_packed_weights_follow_in_place_changes(cpp):
    # The NHWC kernels' packed weights are cached per weight tensor: an in-place change to the weight or
    # the bias, a new tensor, or an inference tensor (no version counter) must never reuse a stale pack.
    x, weight, bn = make_inputs(1, 20, 6, 7, 3, channels_last=True)
    wf, bf = reference.fold_bn(weight, **bn, eps=1e-5)

    def expect(w, b):
        got = ops.dwconv_bias_swish(x, w, b)
        assert_close(got, reference.dwconv_bias_swish(x.double(), w.double(), b.double()), "packed weights")

    expect(wf, bf)
    expect(wf, bf)  # the cached pack
    with torch.no_grad():
        wf.mul_(-0.5)
    expect(wf, bf)
    bf.add_(1.0)
    expect(wf, bf)
    expect(wf.clone(), bf)
    with torch.inference_mode():
        wi, bi = wf.clone(), bf.clone()
        expect(wi, bi)
        wi.mul_(2.0)
        expect(wi, bi)


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(cpp, channels_last):
    x, weight, bn = make_inputs(2, 16, 7, 9, 3, channels_last)
    wf, bf = reference.fold_bn(weight, **bn, eps=1e-5)
    for op, stride, padding in ((torch.ops.effnet_kernels.dwconv_bias_swish.default, 1, "symmetric"),
                                (torch.ops.effnet_kernels.dwconv_bias_swish_pool.default, 2, "same")):
        torch.library.opcheck(op, (x, wf, bf, stride, padding))
        # opcheck compares the op only with itself: the registered op (what torch.compile calls) against float64.
        ref, ref_pool = reference.dwconv_bias_swish_pool(x.double(), wf.double(), bf.double(), stride, padding)
        out = op(x, wf, bf, stride, padding)
        y = out[0] if isinstance(out, tuple) else out
        assert_close(y, ref, f"{op} {stride} {padding}")
        if isinstance(out, tuple):
            assert rel_error(out[1], ref_pool) <= 1e-5, f"{op}: pooled"


def test_torch_compile_fullgraph(cpp):
    x, weight, bn = make_inputs(2, 16, 11, 9, 5, channels_last=True)
    wf, bf = reference.fold_bn(weight, **bn, eps=1e-5)

    class Block(nn.Module):
        def forward(self, x):
            y, pooled = ops.dwconv_bias_swish_pool(x, wf, bf, 2, "same")
            return ops.dwconv_bias_swish(y, wf, bf, 1, "symmetric") * torch.sigmoid(pooled)[:, :, None, None]

    eager = Block()(x)
    compiled = torch.compile(Block(), fullgraph=True, dynamic=False)(x)
    assert torch.equal(compiled, eager)  # the same kernels, through the registered ops
    # … and both right: against the same block in float64.
    w64, b64 = wf.double(), bf.double()
    y64, pooled64 = reference.dwconv_bias_swish_pool(x.double(), w64, b64, 2, "same")
    ref = reference.dwconv_bias_swish(y64, w64, b64, 1, "symmetric") * torch.sigmoid(pooled64)[:, :, None, None]
    assert_close(compiled, ref, "torch.compile(fullgraph=True) vs float64")


def test_dwconv_bn_swish_convenience_form():
    x, weight, bn = make_inputs(2, 10, 8, 8, 5)
    ref = reference64(x, weight, bn, 1e-3, 2, "same")
    for backend in [None, "torch"]:
        y = ops.dwconv_bn_swish(x, weight, **bn, eps=1e-3, stride=2, padding="same", backend=backend)
        assert_close(y, ref, f"backend={backend}")


# -- edge cases and bad input -------------------------------------------------------------------------

def test_empty_batch(cpp):
    x, weight, bn = make_inputs(0, 5, 6, 6, 3)
    wf, bf = reference.fold_bn(weight, **bn, eps=1e-5)
    y, pooled = ops.dwconv_bias_swish_pool(x, wf, bf, 2, "same")
    assert y.shape == (0, 5, 3, 3) and pooled.shape == (0, 5)


@pytest.mark.parametrize("isa", ARCH_ISAS)
def test_special_values_propagate_like_eager(isa):
    require_isa(isa)
    x, w, b = special_values_case(20)
    for xx in (x, x.contiguous(memory_format=torch.channels_last)):
        with _cpu.use_isa(isa):
            y = ops.dwconv_bias_swish(xx, w, b, 1, "symmetric")
        assert_special_like_eager(y, xx, w, b)


def _good():
    return dict(x=torch.randn(1, 4, 5, 5), weight=torch.randn(4, 1, 3, 3), bias=torch.randn(4), stride=1,
                padding="symmetric")


@pytest.mark.parametrize("backend", [None, "cpp", "torch"])
@pytest.mark.parametrize("args, exc, match", [
    (dict(x=torch.randn(1, 4, 5, 5).double()), TypeError, "x must be float32"),
    (dict(x=torch.randn(4, 5, 5)), ValueError, "x must be 4-D"),
    (dict(weight=torch.randn(3, 1, 3, 3)), ValueError, r"weight must have shape \(C, 1, k, k\) = \(4, 1"),
    (dict(weight=torch.randn(4, 1, 4, 4)), ValueError, "k must be odd"),
    (dict(weight=torch.randn(4, 1, 9, 9)), ValueError, "at most 7"),
    (dict(bias=torch.randn(5)), ValueError, r"bias must have shape \(4,\)"),
    (dict(stride=3), ValueError, "stride must be 1 or 2"),
    (dict(stride=1.0), TypeError, "stride"),
    (dict(stride=True), TypeError, "stride"),
    (dict(weight=torch.randn(4, 1, 3, 3).double()), TypeError, "weight"),
    (dict(bias=torch.randn(4).half()), TypeError, "bias"),
    (dict(padding="valid"), ValueError, "padding must be one of"),
    (dict(x=[1.0]), TypeError, "x must be a torch.Tensor"),
    (dict(x=torch.randn(1, 4, 0, 5)), ValueError, "C, H, W >= 1"),
])
def test_bad_input(backend, args, exc, match):
    if backend == "cpp" and not ISAS:
        skip_or_fail("effnet_kernels._C is not built")
    if backend != "torch" and ISAS:
        ops.dwconv_bias_swish(**_good(), backend=backend)  # a valid call of the same shapes goes first:
        # the eager fast path (plans cached per shape) must still send every bad call to full validation
    kw = _good()
    kw.update(args)
    if backend == "torch" and match == "x must be float32":
        match = "weight and bias must have x's dtype"  # the reference accepts float64 when all agree
    elif backend is None and match == "x must be float32":
        # the default dispatch on CPU: float32 only, or (ops.dtypes_for) every float dtype when all agree
        match = "x must be float32|weight and bias must have x's dtype"
    with pytest.raises(exc, match=match):
        ops.dwconv_bias_swish(**kw, backend=backend)


def test_bad_backend_and_bn_arguments():
    kw = _good()
    with pytest.raises(ValueError, match="backend must be None or one of"):
        ops.dwconv_bias_swish(**kw, backend="cuda")
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
        ops.dwconv_bias_swish(**kw, backend="triton")
    x, weight = kw["x"], kw["weight"]
    bn = dict(bn_weight=torch.ones(4), bn_bias=torch.zeros(4), bn_mean=torch.zeros(4), bn_var=torch.ones(4))
    with pytest.raises(ValueError, match=r"bn_var must have shape \(4,\)"):
        ops.dwconv_bn_swish(x, weight, **{**bn, "bn_var": torch.ones(5)})
    with pytest.raises(ValueError, match="eps"):
        ops.dwconv_bn_swish(x, weight, **bn, eps=-1.0)
    with pytest.raises(ValueError, match="isa must be one of"):
        with _cpu.use_isa("sse9"):
            pass


def test_cpp_core_checks_its_own_arguments(cpp):
    # The torch-free C++ core validates what it is given: a bad raw call is an error, not a crash.
    x, y = torch.randn(1, 2, 5, 5), torch.empty(1, 2, 5, 5)
    w, b = torch.randn(2, 3, 3), torch.randn(2)

    def call(**over):
        geom = dict(x_shape=[1, 2, 5, 5], x_strides=list(x.stride()), k=3, stride=1, pad_top=1, pad_left=1,
                    out_h=5, out_w=5, y_strides=list(y.stride()), isa="")
        ptrs = dict(x=x.data_ptr(), weight=w.data_ptr(), bias=b.data_ptr(), y=y.data_ptr(), pooled=0,
                    num_threads=1)
        geom.update({key: v for key, v in over.items() if key in geom})
        ptrs.update({key: v for key, v in over.items() if key in ptrs})
        cpp.DwPlan(**geom).run(**ptrs)

    call()
    for over, match in ((dict(stride=3), "stride"), (dict(x=0), "null"), (dict(out_h=9), "out_h"),
                        (dict(k=4), "k must"), (dict(x_strides=[1, 2]), "x_strides"), (dict(isa="sse9"), "isa"),
                        (dict(pad_top=3), "pad_top")):
        with pytest.raises(ValueError, match=match):
            call(**over)
