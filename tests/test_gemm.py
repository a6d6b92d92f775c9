"""The 1×1-conv GEMM (C++ micro-kernels behind effnet_kernels.cpu.Conv1x1) against float64 on B0–B7 1×1
shapes and awkward ones, every epilogue, both input layouts, a non-contiguous input, bad arguments."""
import pytest
import torch
import torch.nn.functional as F

from effnet_kernels.testing import rel_error


def reference(x, w, b, swish, residual):
    y = F.conv2d(x.double(), w.double()[:, :, None, None], b.double())
    if swish:
        y = F.silu(y)
    return y if residual is None else y + residual.double()


@pytest.mark.parametrize("n,cin,cout,h,w", [
    (1, 16, 96, 56, 56), (1, 1152, 192, 7, 7), (1, 320, 1280, 7, 7), (2, 40, 240, 28, 28),  # B0 layers
    (1, 3840, 640, 5, 5), (3, 7, 13, 5, 3), (1, 1, 1, 1, 1), (2, 257, 33, 3, 7), (1, 24, 17, 1, 13),
])
@pytest.mark.parametrize("swish,with_residual", [(True, False), (False, True), (False, False)])
def test_conv1x1_matches_float64(cpp, n, cin, cout, h, w, swish, with_residual):
    from effnet_kernels.cpu import Conv1x1
    g = torch.Generator().manual_seed(cin * 7 + cout)
    x = torch.randn(n, cin, h, w, generator=g)
    wt, b = torch.randn(cout, cin, generator=g) / cin ** 0.5, torch.randn(cout, generator=g)
    r = torch.randn(n, cout, h, w, generator=g) if with_residual else None
    conv = Conv1x1(wt, b)
    want = reference(x, wt, b, swish, r)
    for xin in (x, x.contiguous(memory_format=torch.channels_last)):
        out = conv(xin, swish=swish, residual=r)
        assert out.is_contiguous(memory_format=torch.channels_last)
        eager = F.conv2d(xin, wt[:, :, None, None], b)
        eager = (F.silu(eager) if swish else eager) + (0 if r is None else r)
        assert rel_error(out, want) <= max(2e-6, 2 * rel_error(eager, want))


def test_conv1x1_non_contiguous_and_bad_input(cpp):
    from effnet_kernels.cpu import Conv1x1
    wt, b = torch.randn(8, 5), torch.randn(8)
    conv = Conv1x1(wt, b)
    x = torch.randn(2, 10, 9, 9)[:, ::2]
    assert rel_error(conv(x), reference(x, wt, b, False, None)) <= 2e-6
    assert conv(torch.empty(0, 5, 3, 3)).shape == (0, 8, 3, 3)  # empty: null data pointers are fine
    with pytest.raises(ValueError, match=r"x must be fp32 CPU \(N, 5, H, W\)"):
        conv(torch.randn(1, 6, 3, 3))
    with pytest.raises(ValueError, match="x must be fp32"):
        conv(torch.randn(1, 5, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="residual"):
        conv(torch.randn(1, 5, 3, 3), residual=torch.randn(1, 8, 3, 4))
    with pytest.raises(ValueError, match="bias"):
        Conv1x1(wt, torch.randn(7))
    with pytest.raises(ValueError, match="weight must be fp32"):
        Conv1x1(wt.double())
