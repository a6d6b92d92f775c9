"""Tensors past 2³¹ elements (int64 indexing everywhere): opt-in with `pytest -m bigmem tests/test_bigmem.py`
(about 18 GB of memory, a minute or two on 2 cores); not part of the default run.

A 1×32×8192×8200 fp32 input (2.15e9 elements, 8.6 GB) and its output through the C++ kernels in both memory
formats; outputs are checked against a float64 reference computed on small patches around sampled positions,
including the last rows and columns, where 32-bit offsets would have wrapped."""
import pytest
import torch

from effnet_kernels import ops, reference
from effnet_kernels.padding import pad_amounts

pytestmark = pytest.mark.bigmem

# (backend, device): the C++ kernels on the CPU; the Triton kernels on a GPU when there is one (the GPU check
# script runs this file there with -k triton).
PATHS = [("cpp", "cpu")] + ([("triton", "cuda")] if torch.cuda.is_available() else [])
PATH_IDS = [b for b, _ in PATHS]

N, C, H, W = 1, 32, 8192, 8200  # C·H·W = 2,149,580,800 > 2³¹ = 2,147,483,648


def sample_positions(oh, ow, count=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = [(oh - 1, ow - 1), (oh - 1, 0), (0, ow - 1), (oh // 2, ow // 2)]
    pts += [(int(torch.randint(oh, (1,), generator=g)), int(torch.randint(ow, (1,), generator=g)))
            for _ in range(count)]
    return pts


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("k,stride,padding", [(3, 1, "symmetric"), (5, 2, "same")])
def test_dwconv_past_2_31_elements(channels_last, k, stride, padding, path):
    backend, device = path
    assert C * H * W > 2 ** 31
    g = torch.Generator().manual_seed(1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.empty((N, C, H, W), memory_format=fmt, device=device)
    # Values that differ along every axis (a wrapped offset reads a different value), filled in slabs.
    for c in range(C):
        x[0, c].copy_(torch.linspace(-3, 3, W, device=device).expand(H, W) * (1 + c / C) +
                      torch.linspace(-2, 2, H, device=device)[:, None] * ((c % 5) - 2))
    w = torch.randn(C, 1, k, k, generator=g) / k
    b = torch.randn(C, generator=g) * 0.1
    y, pooled = ops.dwconv_bias_swish_pool(x, w.to(device), b.to(device), stride, padding, backend=backend)
    oh, ow = y.shape[2:]
    assert y.is_contiguous(memory_format=fmt)
    for (i, j) in sample_positions(oh, ow):
        # The input window of output (i, j), with the padding the op applies, computed in float64.
        top = i * stride - pad_amounts(H, k, stride, padding)[0]
        left = j * stride - pad_amounts(W, k, stride, padding)[0]
        win = torch.zeros(C, k, k, dtype=torch.float64)
        r0, r1, c0, c1 = max(top, 0), min(top + k, H), max(left, 0), min(left + k, W)
        win[:, r0 - top:r1 - top, c0 - left:c1 - left] = x[0, :, r0:r1, c0:c1].double().cpu()
        ref = torch.nn.functional.silu((win * w[:, 0].double()).sum((1, 2)) + b.double())
        torch.testing.assert_close(y[0, :, i, j].double().cpu(), ref, rtol=1e-5, atol=1e-5, msg=f"output ({i}, {j})")
    # The pooled means against a float64 mean of the output itself, one channel plane at a time.
    means = torch.stack([y[0, c].double().mean() for c in range(C)])
    torch.testing.assert_close(pooled[0].double(), means, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(y[0, :, -1]).all() and torch.isfinite(y[0, :, :, -1]).all()


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_squeeze_excite_past_2_31_elements(path):
    backend, device = path
    g = torch.Generator().manual_seed(2)
    x = torch.empty((N, C, H, W), memory_format=torch.channels_last, device=device)
    for c in range(C):
        x[0, c].fill_(0.01 * (c + 1)).add_(torch.linspace(0, 1, W, device=device))
    se = (torch.randn(8, C, generator=g) / 5, torch.randn(8, generator=g), torch.randn(C, 8, generator=g) / 3,
          torch.randn(C, generator=g))
    y = ops.squeeze_excite(x, *[t.to(device) for t in se], backend=backend)
    means = torch.stack([x[0, c].double().mean() for c in range(C)]).cpu()  # a plane at a time (no 17 GB copy)
    gate = reference.se_gate(means[None], *[t.double() for t in se])[0]
    for (i, j) in sample_positions(H, W):
        torch.testing.assert_close(y[0, :, i, j].double().cpu(), x[0, :, i, j].double().cpu() * gate, rtol=1e-5,
                                   atol=1e-6)
