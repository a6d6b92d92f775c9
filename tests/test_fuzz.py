"""Property-based fuzzing (hypothesis) of every public op (dwconv_bias_swish, its pooled sibling, dwconv_bn_swish,
squeeze_excite, se_gate, se_project) on every CPU backend against float64 references:
random N, C, H, W (1, primes, C off every vector width, H or W below k), k, stride, padding, memory format,
non-contiguous and offset views.

The example count is bounded for CI by the "ci" profile (tests/conftest.py); `pytest tests/test_fuzz.py
--hypothesis-profile=long` searches deeper. The Triton kernels get the same properties through the interpreter
in tests/triton/test_triton_fuzz.py.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from effnet_kernels import ops, reference
from effnet_kernels.testing import rel_error

BACKENDS = [None, *ops.available_backends("cpu")]  # None: the default dispatch (eager fast path)
VIEWS = ["contiguous", "channels_last", "channel_slice", "width_step", "offset", "permuted_hw"]


def view_of(x: torch.Tensor, view: str) -> torch.Tensor:
    """x (N, C, H, W) presented as ``view``: same values, different strides / storage offset."""
    n, c, h, w = x.shape
    if view == "contiguous":
        return x.contiguous()
    if view == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if view == "channel_slice":  # x[:, 1:] of a tensor with one more channel
        big = torch.empty(n, c + 1, h, w)
        big[:, 1:] = x
        return big[:, 1:]
    if view == "width_step":  # x[..., ::2] of a tensor twice as wide
        big = torch.empty(n, c, h, 2 * w)
        big[..., ::2] = x
        return big[..., ::2]
    if view == "offset":  # a view starting 3 floats into its storage, channels_last
        flat = torch.empty(x.numel() + 3)
        v = flat[3:].view(n, h, w, c).permute(0, 3, 1, 2)
        v.copy_(x)
        return v
    if view == "permuted_hw":  # H and W swapped in memory
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    raise AssertionError(view)


@st.composite
def dw_case(draw):
    k = draw(st.sampled_from([1, 3, 5, 7]))
    return dict(n=draw(st.integers(0, 3)), c=draw(st.sampled_from([1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 31, 33, 47])),
                h=draw(st.integers(1, 19)), w=draw(st.integers(1, 19)), k=k, stride=draw(st.sampled_from([1, 2])),
                padding=draw(st.sampled_from(["symmetric", "same"])), view=draw(st.sampled_from(VIEWS)),
                seed=draw(st.integers(0, 2 ** 16)))


def dw_inputs(case):
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["n"], case["c"], case["h"], case["w"], generator=g) * 2
    w = torch.randn(case["c"], 1, case["k"], case["k"], generator=g) / case["k"]
    b = torch.randn(case["c"], generator=g) * 0.3
    return view_of(x, case["view"]), w, b


def close64(y, ref, tol=1e-5, scale=None):
    """y within ``tol`` of the float64 ``ref``, norm-wise, relative to ‖ref‖ — or to ‖scale‖ when given: the
    magnitudes whose sum ref is (where they cancel, ref is ill-conditioned and fp32 can only be that close to
    it); and no element off by more than 1e-4 of the largest magnitude."""
    if ref.numel() == 0:
        return True
    scale = ref.abs() if scale is None else scale
    err = (y.double() - ref).norm().item() / max(scale.norm().item(), 1e-30)
    return err <= tol and (y.double() - ref).abs().max().item() <= 1e-4 * max(scale.max().item(), 1e-3)


def close_or_like_eager(y, eager, ref, tol):
    """close64, or no further from float64 than 2x eager fp32 is (an SE gate deep in sigmoid's tail amplifies
    the pre-activation's rounding: there fp32 itself is off by ~1e-6 relative)."""
    return close64(y, ref, tol) or rel_error(y, ref) <= 2 * rel_error(eager, ref)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=dw_case())
def test_dwconv_ops_match_float64(backend, case):
    x, w, b = dw_inputs(case)
    ref, ref_pool = reference.dwconv_bias_swish_pool(x.double(), w.double(), b.double(), case["stride"], case["padding"])
    y = ops.dwconv_bias_swish(x, w, b, case["stride"], case["padding"], backend=backend)
    y2, pooled = ops.dwconv_bias_swish_pool(x, w, b, case["stride"], case["padding"], backend=backend)
    assert y.shape == ref.shape and pooled.shape == ref.shape[:2], case
    assert close64(y, ref) and torch.equal(y, y2), case
    assert close64(pooled, ref_pool), case
    # The unfolded-BN form (folds in float64, then the same kernel).
    g = torch.Generator().manual_seed(case["seed"] + 1)
    c = case["c"]
    bn = [torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g) * 0.2, torch.randn(c, generator=g) * 0.1,
          torch.rand(c, generator=g) + 0.5]
    y3 = ops.dwconv_bn_swish(x, w, *bn, eps=1e-3, stride=case["stride"], padding=case["padding"], backend=backend)
    ref3 = reference.dwconv_bn_swish(x.double(), w.double(), *[t.double() for t in bn], eps=1e-3,
                                     stride=case["stride"], padding=case["padding"])
    assert close64(y3, ref3), case


@st.composite
def se_case(draw):
    return dict(n=draw(st.integers(0, 3)), c=draw(st.sampled_from([1, 3, 8, 9, 17, 31, 40, 67])),
                s=draw(st.sampled_from([1, 2, 5, 8, 11])), h=draw(st.integers(1, 13)), w=draw(st.integers(1, 13)),
                cout=draw(st.sampled_from([1, 4, 7, 16, 25])), flat=draw(st.booleans()),
                residual=draw(st.booleans()), view=draw(st.sampled_from(VIEWS)), seed=draw(st.integers(0, 2 ** 16)))


def se_inputs(case):
    g = torch.Generator().manual_seed(case["seed"])
    c, s = case["c"], case["s"]
    x = torch.randn(case["n"], c, case["h"], case["w"], generator=g) + 0.3
    se = [torch.randn(s, c, 1, 1, generator=g) * (2 / c ** 0.5), torch.randn(s, generator=g),
          torch.randn(c, s, 1, 1, generator=g) * (2 / s ** 0.5), torch.randn(c, generator=g)]
    proj = [torch.randn(case["cout"], c, 1, 1, generator=g) / c ** 0.5, torch.randn(case["cout"], generator=g)]
    if case["flat"]:
        se[0], se[2], proj[0] = se[0].flatten(1), se[2].flatten(1), proj[0].flatten(1)
    res = view_of(torch.randn(case["n"], case["cout"], case["h"], case["w"], generator=g), case["view"]) \
        if case["residual"] else None
    return view_of(x, case["view"]), se, proj, res


def check_se(case, squeeze_excite, se_gate, se_project):
    """The SE properties of one case; the three ops are callables taking and returning CPU tensors."""
    x, se, proj, res = se_inputs(case)
    se64 = [t.double() for t in se]
    y = squeeze_excite(x, *se)
    assert y.shape == x.shape, case
    assert close_or_like_eager(y, reference.squeeze_excite(x, *se), reference.squeeze_excite(x.double(), *se64),
                               1e-6), case
    pooled = x.double().mean((2, 3)).float()
    gate64 = reference.se_gate(pooled.double(), *se64)
    assert close_or_like_eager(se_gate(pooled, *se), reference.se_gate(pooled, *se), gate64, 1e-6), case
    out = se_project(x, pooled, *se, *proj, res)
    res64 = None if res is None else res.double()
    ref = reference.se_project(x.double(), pooled.double(), *se64, *[t.double() for t in proj], res64)
    # The projection sums Cin products (and the residual): its scale is the sum of their magnitudes.
    scale = torch.nn.functional.conv2d(x.double().abs() * gate64[:, :, None, None],
                                       proj[0].double().abs().reshape(proj[0].shape[0], -1, 1, 1),
                                       proj[1].double().abs()) + (0 if res is None else res64.abs())
    assert out.shape == ref.shape and close64(out, ref, scale=scale), case


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=se_case())
def test_se_ops_match_float64(backend, case):
    check_se(case, lambda *a: ops.squeeze_excite(*a, backend=backend), lambda *a: ops.se_gate(*a, backend=backend),
             lambda *a: ops.se_project(*a, backend=backend))
