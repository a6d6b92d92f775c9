"""effnet_kernels.float64: the float64 convolutions the proofs and the tests take as the truth, against PyTorch's
own float64 convolution on every case the faster forms take (depthwise, 1x1) and on cases they pass on; and
float64_call against a float64 deep copy of a real block."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from effnet_kernels import float64
from effnet_kernels.float64 import float64_call, float64_convs


def _ref(x, w, b, **kw):  # PyTorch's own float64 convolution, outside the mode
    return F.conv2d(x, w, b, **kw)


def _close(got, ref):
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert got.is_contiguous() == ref.is_contiguous() and got.is_contiguous(
        memory_format=torch.channels_last) == ref.is_contiguous(memory_format=torch.channels_last)  # (its views)
    # float64 sums of the same products in another order: ~1e-16 relative per term
    assert (got - ref).abs().max().item() <= 1e-12 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("n,c,h,w,k,stride,pad", [
    (1, 16, 8, 8, 3, 1, 1), (2, 7, 9, 11, 3, 2, 1), (3, 24, 13, 7, 5, 2, 2), (1, 5, 5, 5, 5, 1, 0),
    (2, 3, 17, 4, 3, 1, (0, 1)), (1, 11, 6, 9, 5, 2, (2, 1)), (1, 4, 1, 1, 3, 1, 1), (1, 6, 7, 7, 7, 3, 3),
])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_depthwise_matches_pytorch(n, c, h, w, k, stride, pad, channels_last, bias):
    g = torch.Generator().manual_seed(n * 100 + c)
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(c, 1, k, k, dtype=torch.float64, generator=g)
    b = torch.randn(c, dtype=torch.float64, generator=g) if bias else None
    ref = _ref(x, wt, b, stride=stride, padding=pad, groups=c)
    assert float64._fast_conv(float64._conv_args((x, wt, b, stride, pad, 1, c), {})) is not None  # (taken)
    with float64_convs():
        got = F.conv2d(x, wt, b, stride=stride, padding=pad, groups=c)
    _close(got, ref)


@pytest.mark.parametrize("n,c,cout,h,w,stride", [
    (1, 16, 96, 8, 8, 1), (3, 7, 13, 9, 11, 1), (1, 8, 6, 16, 16, 1), (2, 24, 5, 7, 6, 2), (1, 1, 4, 3, 3, 1), (2, 40, 40, 1, 1, 1),
])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_matches_pytorch(n, c, cout, h, w, stride, channels_last):
    g = torch.Generator().manual_seed(c * 7 + cout)
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(cout, c, 1, 1, dtype=torch.float64, generator=g)
    b = torch.randn(cout, dtype=torch.float64, generator=g)
    ref = _ref(x, wt, b, stride=stride)
    with float64_convs():
        got = nn.functional.conv2d(x, wt, b, stride)
    _close(got, ref)


def test_non_contiguous_input():
    x = torch.randn(2, 8, 12, 10, dtype=torch.float64)[:, ::2, 1:, ::3]
    wt = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    with float64_convs():
        got = F.conv2d(x, wt, padding=1, groups=4)
        got1 = F.conv2d(x, torch.randn(6, 4, 1, 1, dtype=torch.float64))
    _close(got, _ref(x, wt, None, padding=1, groups=4))
    assert got1.shape == (2, 6, 11, 4)


@pytest.mark.parametrize("case", ["dense", "dilation", "same", "float32", "multiplier", "pad1x1", "groups2",
                                  "large_dw", "large_1x1"])
def test_other_convs_are_left_to_pytorch(case):
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    if case.startswith("large"):  # (beyond the sizes where the faster forms are faster)
        x = torch.randn(2, 4, 48, 48, dtype=torch.float64)
    w = {"dense": (6, 4, 3, 3), "dilation": (4, 1, 3, 3), "same": (4, 1, 3, 3), "float32": (4, 1, 3, 3),
         "multiplier": (8, 1, 3, 3), "pad1x1": (6, 4, 1, 1), "groups2": (6, 2, 1, 1), "large_dw": (4, 1, 3, 3),
         "large_1x1": (6, 4, 1, 1)}[case]
    kw = {"dense": {}, "dilation": {"dilation": 2, "groups": 4}, "same": {"padding": "same", "groups": 4},
          "float32": {"groups": 4}, "multiplier": {"groups": 4}, "pad1x1": {"padding": 1},
          "groups2": {"groups": 2}, "large_dw": {"padding": 1, "groups": 4}, "large_1x1": {}}[case]
    wt = torch.randn(*w, dtype=torch.float64)
    if case == "float32":
        x, wt = x.float(), wt.float()
    args = dict(kw)
    assert float64._fast_conv(float64._conv_args((x, wt), args)) is None
    with float64_convs():
        got = F.conv2d(x, wt, **kw)
    assert torch.equal(got, F.conv2d(x, wt, **kw))


def test_a_wrong_tap_fails_the_bound(monkeypatch):
    """The bound above catches a small real bug: one depthwise tap's weight off by 1e-9."""
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    wt = torch.randn(8, 1, 3, 3, dtype=torch.float64)
    bad = wt.clone()
    bad[3, 0, 1, 2] += 1e-9
    with float64_convs():
        got = F.conv2d(x, bad, padding=1, groups=8)
    with pytest.raises(AssertionError):
        _close(got, _ref(x, wt, None, padding=1, groups=8))


def test_float64_call_matches_a_float64_copy_of_a_real_block():
    timm = pytest.importorskip("timm")
    model = timm.create_model("efficientnet_b0").eval()
    block = model.blocks[2][0]
    x = torch.randn(2, 24, 17, 19)
    with torch.no_grad():
        ref = copy.deepcopy(block).double()(x.double())
        got = float64_call(block, x.double())
    _close(got, ref)
    assert next(block.parameters()).dtype == torch.float32  # the module itself untouched
