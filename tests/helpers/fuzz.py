"""The fuzz tests' cases and checks (tests/test_fuzz.py on the CPU, tests/triton/test_triton_fuzz.py through
Triton): hypothesis strategies for depthwise and SE cases (N, C, H, W including 1, primes and sizes off every
vector width; k, stride, padding; contiguous, channels_last, sliced, strided, offset and permuted views), an
independently written float64 depthwise reference (its own SAME padding, a sum over taps), and the bounds."""
import torch
import torch.nn.functional as F
from hypothesis import settings, strategies as st

from effnet_kernels import reference
from effnet_kernels.testing import rel_error


# backend=None takes the share of the examples backend="cpp" had (the same kernels, the same examples).
DEFAULT_FUZZ = settings(max_examples=2 * settings.default.max_examples)


VIEWS = ["contiguous", "channels_last", "channel_slice", "width_step", "offset", "permuted_hw"]


def view_of(x: torch.Tensor, view: str) -> torch.Tensor:
    """x (N, C, H, W) presented as ``view``: same values, different strides / storage offset."""
    n, c, h, w = x.shape
    if view == "contiguous":
        return x.contiguous()
    if view == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if view == "channel_slice":  # x[:, 1:] of a tensor with one more channel
        big = torch.empty(n, c + 1, h, w, dtype=x.dtype)
        big[:, 1:] = x
        return big[:, 1:]
    if view == "width_step":  # x[..., ::2] of a tensor twice as wide
        big = torch.empty(n, c, h, 2 * w, dtype=x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    if view == "offset":  # a view starting 3 floats into its storage, channels_last
        flat = torch.empty(x.numel() + 3, dtype=x.dtype)
        v = flat[3:].view(n, h, w, c).permute(0, 3, 1, 2)
        v.copy_(x)
        return v
    if view == "permuted_hw":  # H and W swapped in memory
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    raise AssertionError(view)


@st.composite
def dw_case(draw):
    k = draw(st.sampled_from([1, 3, 5, 7]))
    # (N = 0 last, not the lower bound of integers(0, 3): hypothesis favours a strategy's simplest value — that
    # gave an empty batch, which checks only shapes, in 39 of 80 examples; 32 of 80 this way, and more of the
    # non-empty ones larger)
    return dict(n=draw(st.sampled_from([1, 2, 3, 0])),
                c=draw(st.sampled_from([1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 31, 33, 47])),
                h=draw(st.integers(1, 19)), w=draw(st.integers(1, 19)), k=k, stride=draw(st.sampled_from([1, 2])),
                padding=draw(st.sampled_from(["symmetric", "same"])), view=draw(st.sampled_from(VIEWS)),
                seed=draw(st.integers(0, 2 ** 16)))


def dw_inputs(case, dtype=torch.float32):
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["n"], case["c"], case["h"], case["w"], generator=g) * 2
    w = torch.randn(case["c"], 1, case["k"], case["k"], generator=g) / case["k"]
    b = torch.randn(case["c"], generator=g) * 0.3
    return view_of(x.to(dtype), case["view"]), w.to(dtype), b.to(dtype)


def bn_inputs(case):
    g = torch.Generator().manual_seed(case["seed"] + 1)
    c = case["c"]
    return [torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g) * 0.2, torch.randn(c, generator=g) * 0.1,
            torch.rand(c, generator=g) + 0.5]


def same_pads(size: int, k: int, stride: int):
    """TensorFlow SAME along one axis, written out here (not effnet_kernels.padding's, which the kernels'
    wrappers and effnet_kernels.reference both use): the output is ceil(size / stride) and the odd pixel
    of padding goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def dw_conv64(x, w, stride, padding):
    """The depthwise conv in float64 on an explicitly zero-padded input, as a sum over the k×k taps of strided
    slices (independent of F.conv2d, and much faster than its float64 depthwise path)."""
    k = w.shape[-1]
    if padding == "symmetric":
        top = bottom = left = right = k // 2
    else:
        (top, bottom), (left, right) = same_pads(x.shape[2], k, stride), same_pads(x.shape[3], k, stride)
    xp = F.pad(x.double(), (left, right, top, bottom))
    out_h, out_w = (xp.shape[2] - k) // stride + 1, (xp.shape[3] - k) // stride + 1
    taps = w.double().reshape(w.shape[0], k, k)
    y = xp.new_zeros(x.shape[0], x.shape[1], out_h, out_w)
    for i in range(k):
        for j in range(k):
            window = xp[:, :, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
            y += taps[:, i, j, None, None] * window
    return y


def dw_ref64(x, w, b, stride, padding):
    """(y, pooled) in float64: silu(depthwise conv + bias) and its mean over H×W."""
    y = F.silu(dw_conv64(x, w, stride, padding) + b.double()[:, None, None])
    return y, y.mean((2, 3))


def bn_ref64(x, w, bn, eps, stride, padding):
    """silu(batch_norm_eval(depthwise conv)) in float64, BN applied unfolded."""
    bw, bb, mean, var = [t.double() for t in bn]
    return F.silu(F.batch_norm(dw_conv64(x, w, stride, padding), mean, var, bw, bb, training=False, eps=eps))


# Bounds: eager fp32 (backend="torch") and the C++ kernels against float64 over 4000 random examples of every op
# and 20000 more of dwconv_bias_swish, squeeze_excite and se_gate (hypothesis, not derandomized) were off by at
# most 6.6e-7 norm-wise (relative to ‖ref‖ or ‖scale‖) and 6.6e-7 of the largest magnitude element-wise; TOL and
# ELEM leave 3-8x of that. A bias off by 0.01 or one tap ×1.001 is off by 1e-4 and more.
TOL, ELEM = 2e-6, 5e-6


def close64(y, ref, tol=TOL, scale=None, elem=ELEM):
    """y within ``tol`` of the float64 ``ref``, norm-wise, relative to ‖ref‖ — or to ‖scale‖ when given: the
    magnitudes whose sum ref is (where they cancel, ref is ill-conditioned and fp32 can only be that close to
    it); and no element off by more than ``elem`` of the largest magnitude."""
    if ref.numel() == 0:
        return True
    scale = ref.abs() if scale is None else scale
    err = (y.double() - ref).norm().item() / max(scale.norm().item(), 1e-30)
    return err <= tol and (y.double() - ref).abs().max().item() <= elem * max(scale.max().item(), 1e-3)


# Where an SE gate sits deep in sigmoid's tail (pre-activations of -10 and below), the gate's relative error is
# the pre-activation's absolute rounding error: fp32 itself is up to 1.01e-6 off there (the worst of the 24000
# examples above), and a kernel can be only about as close. Against the kernels' bound of 1e-6,
# ``close_or_like_eager`` then accepts a kernel no further from float64 than 2x the eager fp32 reference
# (effnet_kernels.reference run in fp32: an independent computation for the C++ and Triton kernels, never the
# op under test) — and never further than TORCH_SE_TOL.
SE_TOL = 1e-6


# The eager fp32 reference itself (backend="torch", or the default dispatch without the compiled module) against
# float64: a fixed bound, no escape (5x its worst, 1.01e-6).
TORCH_SE_TOL = 5e-6


# float64 inputs (the default dispatch runs the registered op, which runs the reference in float64): against the
# references here, which compute the same in another order (observed: below 1e-15).
F64_TOL = 1e-12


def close_or_like_eager(y, eager, ref, tol, elem=ELEM):
    """close64, or no further from float64 than 2x eager fp32 is (and than TORCH_SE_TOL)."""
    if close64(y, ref, tol, elem=elem):
        return True
    return rel_error(y, ref) <= min(2 * rel_error(eager, ref), TORCH_SE_TOL)


def check_dw(case, dwconv, dwconv_pool, dwconv_bn, dtype=torch.float32):
    """The depthwise properties of one case; the three ops are callables (x, w, b | bn…, stride, padding)."""
    x, w, b = dw_inputs(case, dtype)
    stride, padding = case["stride"], case["padding"]
    tol, elem = (TOL, ELEM) if dtype == torch.float32 else (F64_TOL, F64_TOL)
    ref, ref_pool = dw_ref64(x, w, b, stride, padding)
    y = dwconv(x, w, b, stride, padding)
    y2, pooled = dwconv_pool(x, w, b, stride, padding)
    assert y.shape == ref.shape and pooled.shape == ref.shape[:2] and y.dtype == dtype, case
    assert close64(y, ref, tol, elem=elem) and torch.equal(y, y2), case
    assert close64(pooled, ref_pool, max(tol, TOL), elem=max(elem, ELEM)), case  # (fp32, or x's dtype)
    # The unfolded-BN form (folds in float64, then the same kernel).
    bn = bn_inputs(case)
    y3 = dwconv_bn(x, w, *bn, eps=1e-3, stride=stride, padding=padding)
    assert close64(y3, bn_ref64(x, w, bn, 1e-3, stride, padding), tol, elem=elem), case


@st.composite
def se_case(draw):
    return dict(n=draw(st.sampled_from([1, 2, 3, 0])), c=draw(st.sampled_from([1, 3, 8, 9, 17, 31, 40, 67])),
                s=draw(st.sampled_from([1, 2, 5, 8, 11])), h=draw(st.integers(1, 13)), w=draw(st.integers(1, 13)),
                cout=draw(st.sampled_from([1, 4, 7, 16, 25])), flat=draw(st.booleans()),
                residual=draw(st.booleans()), view=draw(st.sampled_from(VIEWS)), seed=draw(st.integers(0, 2 ** 16)))


def se_inputs(case, dtype=torch.float32):
    g = torch.Generator().manual_seed(case["seed"])
    c, s = case["c"], case["s"]
    x = torch.randn(case["n"], c, case["h"], case["w"], generator=g) + 0.3
    se = [torch.randn(s, c, 1, 1, generator=g) * (2 / c ** 0.5), torch.randn(s, generator=g),
          torch.randn(c, s, 1, 1, generator=g) * (2 / s ** 0.5), torch.randn(c, generator=g)]
    proj = [torch.randn(case["cout"], c, 1, 1, generator=g) / c ** 0.5, torch.randn(case["cout"], generator=g)]
    if case["flat"]:
        se[0], se[2], proj[0] = se[0].flatten(1), se[2].flatten(1), proj[0].flatten(1)
    se, proj = [t.to(dtype) for t in se], [t.to(dtype) for t in proj]
    res = view_of(torch.randn(case["n"], case["cout"], case["h"], case["w"], generator=g).to(dtype), case["view"]) \
        if case["residual"] else None
    return view_of(x.to(dtype), case["view"]), se, proj, res


def check_se(case, squeeze_excite, se_gate, se_project, like_eager=True, tol=TOL, elem=ELEM, dtype=torch.float32):
    """The SE properties of one case; the three ops are callables taking and returning CPU tensors.

    ``like_eager``: the ops are kernels (C++, Triton), so the eager fp32 reference is an independent
    computation and a gate deep in sigmoid's tail may be as far off as it is (close_or_like_eager). False
    for the eager reference itself (backend="torch"; the C++-less fallback): the fixed TORCH_SE_TOL. ``tol``:
    se_project's norm-wise bound, ``elem``: every output's element-wise one (close64). ``dtype``: of x, the
    weights and the residual (float64: y and se_project within F64_TOL; the gate is fp32 whatever the dtype)."""
    x, se, proj, res = se_inputs(case, dtype)
    if dtype == torch.float64:
        tol = elem = F64_TOL
    se64 = [t.double() for t in se]
    pooled = x.double().mean((2, 3)).float()
    gate64 = reference.se_gate(pooled.double(), *se64)
    y, ref_y = squeeze_excite(x, *se), reference.squeeze_excite(x.double(), *se64)
    gate = se_gate(pooled, *se)
    assert y.shape == x.shape and y.dtype == dtype, case
    assert gate.shape == pooled.shape and gate.dtype == torch.float32, case
    if dtype == torch.float64:  # (the registered op runs effnet_kernels.reference: this checks the path to it)
        assert close64(y, ref_y, tol, elem=elem) and close64(gate, gate64, SE_TOL, elem=ELEM), case
    elif like_eager:
        assert close_or_like_eager(y, reference.squeeze_excite(x, *se), ref_y, SE_TOL, elem), case
        assert close_or_like_eager(gate, reference.se_gate(pooled, *se), gate64, SE_TOL, elem), case
    else:
        assert close64(y, ref_y, TORCH_SE_TOL, elem=elem) and close64(gate, gate64, TORCH_SE_TOL, elem=elem), case
    out = se_project(x, pooled, *se, *proj, res)
    res64 = None if res is None else res.double()
    ref = reference.se_project(x.double(), pooled.double(), *se64, *[t.double() for t in proj], res64)
    # The projection sums Cin products (and the residual): its scale is the sum of their magnitudes.
    scale = F.conv2d(x.double().abs() * gate64[:, :, None, None],
                     proj[0].double().abs().reshape(proj[0].shape[0], -1, 1, 1),
                     proj[1].double().abs()) + (0 if res is None else res64.abs())
    assert out.shape == ref.shape and close64(out, ref, tol, scale, elem), case
