"""Special values through every public op, every CPU backend and ISA path, and a fused model: NaN and ±inf in
the input propagate exactly as eager PyTorch's do (same NaN positions, same signed infinities); ±1e30 gives
eager's Swish / sigmoid saturation, never NaN from an overflowing exp approximation; denormals are ordinary
tiny numbers (no flush-to-zero leaks out: the caller's thread is checked after each call).

The Triton kernels get the same cases through the interpreter in tests/triton/test_triton_special.py.
"""
import pytest
import torch
import torch.nn.functional as F

import effnet_kernels as ek
from effnet_kernels import cpu as _cpu, ops, reference
from effnet_kernels.testing import denormals_survive
from effnet_kernels.testing import randomize_bn_

from helpers.special import (DW_CASES, PROJECT_SIZES, SE_SIZES, assert_like_eager, check_dw, check_gate, dw_case,
                             eager_dw, gate_case, project_case, se_case, sprinkle)
from helpers import ARCH_ISAS, require_isa

# (backend, isa): the default dispatch, each C++ ISA path forced, the eager reference.
PATHS = [(None, None)] + [("cpp", isa) for isa in ARCH_ISAS] + [("torch", None)]
PATH_IDS = [f"{b}-{i}" if i else str(b) for b, i in PATHS]
LAYOUTS = [torch.contiguous_format, torch.channels_last]


def _run(path, fn, *args, **kwargs):
    backend, isa = path
    if isa is None:
        return fn(*args, backend=backend, **kwargs)
    require_isa(isa)
    with _cpu.use_isa(isa):
        return fn(*args, backend=backend, **kwargs)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("k,stride,padding", DW_CASES)
@pytest.mark.parametrize("fmt", LAYOUTS, ids=["nchw", "nhwc"])
def test_dwconv_and_pool(path, k, stride, padding, fmt):
    for c in (19, 32):  # a vector tail, and whole vectors
        x, w, b, ref, bound = dw_case(c, k, stride, padding, fmt, seed=c + k + stride)
        what = f"{path} c={c}"
        check_dw(_run(path, ops.dwconv_bias_swish, x, w, b, stride, padding), None, ref, bound, what)
        check_dw(*_run(path, ops.dwconv_bias_swish_pool, x, w, b, stride, padding), ref, bound, what + " (pool)")
        assert denormals_survive(), f"{what}: flush-to-zero leaked to the caller's thread"


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("act", ["relu", "relu6", "hardswish", "identity"])
@pytest.mark.parametrize("fmt", LAYOUTS, ids=["nchw", "nhwc"])
def test_dwconv_other_activations(path, act, fmt):
    """Each activation's rules as eager gives them: NaN kept, relu6 clamped to [0, 6] (so +inf gives 6),
    hardswish(-inf) NaN and hardswish(+inf) +inf, the 1e30 / -1e30 biases saturating as eager does."""
    for (k, stride, padding), c in zip(DW_CASES[:2], (19, 32)):
        x, w, b, _, bound = dw_case(c, k, stride, padding, fmt, seed=c + k + stride)
        xp, pad = reference.pad_input(x, k, stride, padding)
        ref = reference.activation(F.conv2d(xp, w, b, stride=stride, padding=pad, groups=c), act)
        what = f"{path} {act} c={c}"
        assert_like_eager(_run(path, ops.dwconv_bias_swish, x, w, b, stride, padding, act=act), ref, bound, what=what)
        y, pooled = _run(path, ops.dwconv_bias_swish_pool, x, w, b, stride, padding, act=act)
        assert_like_eager(y, ref, bound, what=what)
        assert_like_eager(pooled, ref.mean((2, 3)), bound.mean((2, 3)), what=what + " pooled")


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("inner,gate", [("relu", "hardsigmoid"), ("hardswish", "sigmoid"), ("silu", "hardsigmoid")])
def test_se_gate_other_activations(path, inner, gate):
    for c, s in SE_SIZES:
        pooled, (w1, b1, w2, b2), _ = gate_case(c, s)
        hidden = reference.activation(F.linear(pooled, w1.reshape(s, -1), b1), inner)
        ref = reference.gate_activation(F.linear(hidden, w2.reshape(-1, s), b2), gate)
        got = _run(path, ops.se_gate, pooled, w1, b1, w2, b2, inner_act=inner, gate=gate)
        check_gate(got, ref, f"{path} {inner}/{gate} c={c}")


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_dwconv_bn_swish(path):
    c, k = 21, 3
    g = torch.Generator().manual_seed(5)
    x = sprinkle(torch.randn(2, c, 8, 8, generator=g), seed=7)
    w = torch.randn(c, 1, k, k, generator=g) / k
    bn = [torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g), torch.randn(c, generator=g) * 0.1,
          torch.rand(c, generator=g) + 0.5]
    ref = F.silu(F.batch_norm(F.conv2d(x, w, padding=1, groups=c), bn[2], bn[3], bn[0], bn[1], False, 0.0, 1e-3))
    scale = (bn[0] / (bn[3] + 1e-3).sqrt()).abs()[None, :, None, None]
    bound = F.conv2d(x.abs().nan_to_num(0, 0, 0), w.abs(), padding=1, groups=c) * scale + 10
    y = _run(path, ops.dwconv_bn_swish, x, w, bn[0], bn[1], bn[2], bn[3], eps=1e-3, stride=1, padding="symmetric")
    assert_like_eager(y, ref, bound, what=str(path))


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("fmt", LAYOUTS, ids=["nchw", "nhwc"])
def test_squeeze_excite(path, fmt):
    for c, s in SE_SIZES:
        x, weights, ref = se_case(c, s, fmt)
        assert_like_eager(_run(path, ops.squeeze_excite, x, *weights), ref, x.abs(), what=f"{path} c={c}")
        assert denormals_survive(), f"{path}: flush-to-zero leaked to the caller's thread"


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_se_gate(path):
    for c, s in SE_SIZES:
        pooled, weights, ref = gate_case(c, s)
        check_gate(_run(path, ops.se_gate, pooled, *weights), ref, f"{path} c={c}")


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("fmt", LAYOUTS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("where", ["y", "pooled", "residual"])
def test_se_project(path, fmt, where):
    for cin, cout, s in PROJECT_SIZES:
        args, ref, bound = project_case(cin, cout, s, fmt, where)
        assert_like_eager(_run(path, ops.se_project, *args), ref, bound, what=f"{path} {where} cin={cin}")


@pytest.fixture(scope="module")
def b0():
    model = ek.efficientnet("b0").eval()
    randomize_bn_(model, calibration_size=(2, 3, 64, 64))
    return model, ek.fuse(model, example_inputs=torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("fmt", LAYOUTS, ids=["nchw", "nhwc"])
def test_fused_model(b0, fmt):
    """One special value in one sample: that sample's logits go NaN (or not) exactly as eager's do, on the C++
    engine and on the registered-op path; the other samples' logits are untouched."""
    model, fused = b0
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    x[0, 1, 30, 30] = float("nan")
    x[1, 0, 0, 63] = float("inf")
    x[2, 2, 10, 11] = float("-inf")
    x[3, :, 20:40, 20:40] = 1e30
    x = x.contiguous(memory_format=fmt)
    with torch.inference_mode():
        ref, out = model(x), fused(x)
        units = [m for m in fused.modules() if isinstance(m, ek.swapped.FusedUnit)]
        for u in units:
            u.ops_backend = "cpp"  # the registered-op path
        try:
            out_ops = fused(x)
        finally:
            for u in units:
                u.ops_backend = None
        clean = fused(x[4:].clone())
    bound = ref.abs().nan_to_num(0, 0, 0).amax(1, keepdim=True).expand_as(ref)
    assert_like_eager(out, ref, bound, rtol=1e-3, what="fused B0 (C++ engine)")
    assert_like_eager(out_ops, ref, bound, rtol=1e-3, what="fused B0 (registered ops)")
    # (close, not equal: the classifier after the engine chain is the source's eager Linear, whose GEMM sums in
    # another order at batch 5 than at batch 1; a NaN or inf leaking across samples fails this)
    assert torch.allclose(out[4:], clean, rtol=1e-5, atol=1e-5 * clean.abs().max().item()), \
        "a special value in one sample changed another sample's logits"
    assert denormals_survive()


def test_denormal_inputs_are_not_flushed():
    """Denormal inputs are numbers, not zeros: outputs scale with them like eager's (a kernel running with
    DAZ would return silu(bias) exactly)."""
    c = 16
    x = torch.full((1, c, 5, 5), 1e-39)
    w = torch.full((c, 1, 3, 3), 4.0)
    b = torch.zeros(c)
    ref, _ = eager_dw(x, w, b, 1, "symmetric")
    for path in PATHS:
        y = _run(path, ops.dwconv_bias_swish, x, w, b)
        assert (y > 0).all(), path
        assert torch.allclose(y, ref, rtol=1e-3, atol=0), path
    assert denormals_survive()



@pytest.mark.parametrize("isa", ARCH_ISAS)
def test_swish_and_sigmoid_past_80_match_eager(isa):
    """Pre-activations from -100 to 100 (past ±80 the kernels' exp is clamped so that no subnormal is formed
    on the way: 1 + exp(-z) is exactly 1 there anyway): the depthwise swish and the SE gate give eager's
    values, the large negative ones included."""
    from effnet_kernels.cpu import use_isa

    require_isa(isa)
    z = torch.cat([torch.linspace(-100, 100, 401), torch.linspace(79, 90, 89), torch.linspace(-90, -79, 89)])
    c = z.numel()
    x = torch.zeros(1, c, 3, 3)
    w = torch.zeros(c, 1, 3, 3)
    with use_isa(isa):
        y = ops.dwconv_bias_swish(x, w, z, 1, "symmetric")
        gate = ops.se_gate(torch.zeros(1, c), torch.zeros(1, c), torch.zeros(1), torch.zeros(c, 1), z)
    # eager fp32; between -88.7 and -88 eager's swish is still ~3e-37 where the kernels' 1 + exp(-z) is
    # already +inf (their cutoff, 88) and they give -0: hence the absolute 1e-36
    want = F.silu(z)
    assert torch.allclose(y[0, :, 1, 1], want, rtol=2e-6, atol=1e-36), (y[0, :, 1, 1] - want).abs().max()
    assert torch.equal(y[0, :, 1, 1][z > 80], z[z > 80])  # swish(z) = z exactly past 80, as eager's
    assert torch.allclose(gate[0], torch.sigmoid(z), rtol=2e-6, atol=1.2e-38)


@pytest.mark.parametrize("isa", ARCH_ISAS)
def test_subnormal_gated_inputs_of_the_projection_are_flushed(isa):
    """The engine's projection GEMM flushes a subnormal product of its input and the SE gate to zero (each
    would cost a microcode assist per FMA): with every product subnormal and a zero bias the block gives
    exactly 0 (unflushed: ~2e-44, what eager gives), a normal product is kept, NaN stays NaN."""
    from effnet_kernels.cpu import use_isa
    from effnet_kernels.parts import BlockPart
    from effnet_kernels.swapped import FusedMBConv

    require_isa(isa)
    c, cout = 24, 8

    def block(dw_bias, gate_logit):
        # no expand, depthwise weights 0: y = swish(dw_bias) everywhere; SE gate = sigmoid(gate_logit)
        part = BlockPart(None, (torch.zeros(c, 1, 3, 3, dtype=torch.float64), dw_bias.double()), 1, (1, 1, 1, 1),
                         (torch.zeros(1, c, dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                          torch.zeros(c, 1, dtype=torch.float64), gate_logit.double()),
                         (torch.ones(cout, c, dtype=torch.float64) / c, torch.zeros(cout, dtype=torch.float64)), False)
        return FusedMBConv(part, "test")

    x = torch.zeros(1, c, 5, 5)
    with use_isa(isa), torch.inference_mode():
        # y = swish(2e-35) = 1e-35, gate = sigmoid(-20) = 2e-9: every product ~2e-44
        tiny = block(torch.full((c,), 2e-35), torch.full((c,), -20.0))(x)
        assert torch.equal(tiny, torch.zeros_like(tiny))
        mixed_bias = torch.full((c,), 2e-35)
        mixed_bias[:12] = 2.0  # y = swish(2) in half the channels: normal products with the gate 0.5
        mixed = block(mixed_bias, torch.where(torch.arange(c) < 12, 0.0, -20.0))(x)
        want = F.silu(torch.tensor(2.0, dtype=torch.float64)) * 0.5 * 12 / c
        assert torch.allclose(mixed.double(), torch.full_like(mixed.double(), want.item()), rtol=1e-6, atol=0)
        nan_bias = mixed_bias.clone()
        nan_bias[3] = float("nan")
        assert torch.isnan(block(nan_bias, torch.zeros(c))(x)).all()
