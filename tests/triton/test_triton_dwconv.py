"""The Triton depthwise kernel (backend="triton"), against a float64 reference and eager PyTorch.

On a machine with CUDA these run on the GPU (real B0–B7 layer shapes included). Without one they run
on CPU tensors through Triton's interpreter, on small shapes, in their own pytest process started with
TRITON_INTERPRET=1 (Triton reads the variable when it decorates the kernels: scripts/test.sh does this).
"""
import pytest
import torch

from effnet_kernels import ops, reference
from effnet_kernels import triton as tk
from effnet_kernels.scaling import dw_layer_shapes
from effnet_kernels.testing import rel_error

from helpers.triton import CUDA, DEVICE, needs_cuda, needs_triton  # noqa: F401  (autouse fixture)
from helpers import (assert_close, assert_special_like_eager, expected_format, make_inputs, reference64,
                     special_values_case)


def folded(weight, bn, eps=1e-5, dtype=torch.float32):
    wf, bf = reference.fold_bn(weight.double(), *[bn[k].double() for k in ("bn_weight", "bn_bias", "bn_mean",
                                                                             "bn_var")], eps)
    return wf.to(dtype), bf.to(dtype)


def check(n, c, h, w, k, s, padding, channels_last, view=None, index64=None, tile=None):
    x, weight, bn = make_inputs(n, c, h, w, k, channels_last)
    if view is not None:
        x = view(x)
    xd = x.to(DEVICE)
    # The float64 reference on the same device (CUDA convolves in float64 too; far quicker than the CPU).
    ref = reference64(xd, weight.to(DEVICE), {key: v.to(DEVICE) for key, v in bn.items()}, 1e-5, s, padding)
    wf, bf = folded(weight, bn)
    what = f"{tuple(x.shape)} k={k} s={s} {padding} cl={channels_last} i64={index64} tile={tile}"
    y, pooled = tk.dwconv_bias_swish(xd, wf.to(DEVICE), bf.to(DEVICE), s, padding, pool=True, index64=index64,
                                     tile=tile)
    assert y.device == xd.device and y.dtype == torch.float32 and y.shape == ref.shape, what
    assert y.is_contiguous(memory_format=expected_format(x)), f"{what}: wrong output memory format"
    assert_close(y, ref, what)
    if ref.numel():
        assert pooled.dtype == torch.float32 and rel_error(pooled, ref.mean((2, 3))) <= 1e-5, what
    # The public entry point (the variant without the pool) reaches the same kernel.
    if index64 is None and tile is None:
        y2 = ops.dwconv_bias_swish(xd, wf.to(DEVICE), bf.to(DEVICE), s, padding, backend="triton")
        assert torch.equal(y2, y), f"{what}: the variant without the pool differs"
    return y


# The real B0–B7 depthwise layer shapes on CUDA. Under the interpreter (each 16×16 program costs tens of
# ms on the CPU) every ninth of them, cut to at most 20 channels and 7×6 pixels, each distinct one once:
# the same kernel sizes, strides and border cases, few programs.
SHAPES = dw_layer_shapes(range(8))
if not CUDA:
    SHAPES = list(dict.fromkeys(s._replace(channels=min(s.channels, 20), height=min(s.height, 7),
                                           width=min(s.width, 6)) for i, s in enumerate(SHAPES) if i % 9 == 0))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "c{}_{}x{}_k{}_s{}".format(*s))
def test_b0_b7_layer_shapes(shape, channels_last):
    c, h, w, k, s = shape
    check(1, c, h, w, k, s, "symmetric", channels_last)


@pytest.mark.parametrize("n,c,h,w,k,s,padding", [
    (1, 1, 1, 1, 3, 1, "symmetric"),
    (3, 17, 5, 7, 3, 2, "same"),
    (2, 13, 8, 6, 5, 2, "same"),
    (1, 3, 2, 9, 5, 1, "symmetric"),
    (1, 5, 7, 7, 7, 1, "same"),
    (1, 19, 4, 3, 1, 2, "symmetric"),
    (1, 23, 6, 6, 3, 2, "symmetric"),
])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_awkward_shapes(n, c, h, w, k, s, padding, channels_last):
    check(n, c, h, w, k, s, padding, channels_last)


# Fixed tiles reach every code path of the kernel whatever the autotuner picks: 1, 2 and 4 output rows
# per program (bands past the last row), channel blocks that divide C (unmasked, vectorised) or not,
# column blocks wider than the output.
TILES = [dict(BLOCK_W=4, BLOCK_C=8, TH=1, num_warps=1), dict(BLOCK_W=8, BLOCK_C=16, TH=4, num_warps=2),
         dict(BLOCK_W=2, BLOCK_C=4, TH=2, num_warps=1)]


@pytest.mark.parametrize("tile", TILES, ids=lambda t: "w{BLOCK_W}c{BLOCK_C}th{TH}".format(**t))
@pytest.mark.parametrize("n,c,h,w,k,s,padding", [
    (2, 16, 5, 7, 3, 1, "same"),
    (1, 24, 6, 5, 5, 2, "symmetric"),
    (1, 8, 5, 11, 7, 2, "same"),
])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_every_tile_path(n, c, h, w, k, s, padding, channels_last, tile):
    check(n, c, h, w, k, s, padding, channels_last, tile=tile)


@pytest.mark.parametrize("view", [
    lambda x: torch.stack([x, x], dim=2).flatten(1, 2)[:, ::2],      # every other channel of a 2C tensor
    lambda x: x[..., 1:],                                             # cropped width: rows not contiguous
    lambda x: x.permute(0, 1, 3, 2),                                  # transposed plane
    lambda x: torch.cat([x, x], 1).contiguous(memory_format=torch.channels_last)[:, 12:],  # cl, offset
], ids=["channel-step", "crop", "transpose", "cl-offset"])
def test_non_contiguous_inputs(view):
    check(2, 12, 7, 8, 3, 1, "symmetric", False, view=view)


def test_int64_offsets_path():
    # The kernel specialised to int64 offsets (used past 2^31 elements) computes the same values.
    y64 = check(2, 11, 6, 5, 3, 2, "same", True, index64=True)
    y32 = check(2, 11, 6, 5, 3, 2, "same", True, index64=False)
    assert torch.equal(y64, y32)


def test_empty_batch():
    x = torch.randn(0, 4, 5, 5, device=DEVICE)
    y, pooled = tk.dwconv_bias_swish(x, torch.randn(4, 1, 3, 3, device=DEVICE), torch.randn(4, device=DEVICE),
                                     pool=True)
    assert y.shape == (0, 4, 5, 5) and pooled.shape == (0, 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_half_precision_within_twice_eager_error(dtype, channels_last):
    # fp32 accumulation: the error against float64 is at most twice eager's in the same dtype.
    x, weight, bn = make_inputs(2, 16, 9, 8, 5, channels_last, seed=3)
    ref = reference64(x, weight, bn, 1e-5, 2, "same")
    wf, bf = folded(weight, bn, dtype=dtype)
    xh = x.to(device=DEVICE, dtype=dtype)
    y, pooled = tk.dwconv_bias_swish(xh, wf.to(DEVICE), bf.to(DEVICE), 2, "same", pool=True)
    assert y.dtype == dtype and pooled.dtype == torch.float32
    with torch.backends.cudnn.flags(allow_tf32=False):
        eager = reference.dwconv_bias_swish(xh, wf.to(DEVICE), bf.to(DEVICE), 2, "same")
    err, eager_err = rel_error(y.cpu(), ref), rel_error(eager.cpu(), ref)
    assert err <= 2 * eager_err, f"{dtype}: error {err:.3g} vs eager's {eager_err:.3g}"
    assert rel_error(pooled.cpu(), ref.mean((2, 3))) <= 2 * max(eager_err, 1e-3)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy: exp overflow, inf * 0
def test_special_values_propagate_like_eager():
    x, w, b = special_values_case(6)
    for xx in (x, x.contiguous(memory_format=torch.channels_last)):
        y = tk.dwconv_bias_swish(xx.to(DEVICE), w.to(DEVICE), b.to(DEVICE)).cpu()
        assert_special_like_eager(y, xx, w, b)


def test_bad_input():
    x = torch.randn(1, 4, 5, 5, device=DEVICE)
    w, b = torch.randn(4, 1, 3, 3, device=DEVICE), torch.randn(4, device=DEVICE)
    with pytest.raises(TypeError, match="x must be float32 or float16 or bfloat16 for backend='triton'"):
        tk.dwconv_bias_swish(x.double(), w.double(), b.double())
    with pytest.raises(ValueError, match="k must be odd"):
        tk.dwconv_bias_swish(x, torch.randn(4, 1, 4, 4, device=DEVICE), b)
    with pytest.raises(TypeError, match="weight and bias must have x's dtype"):
        tk.dwconv_bias_swish(x, w.half(), b.half())


def test_registered_op_opcheck_and_compile_on_cuda():
    needs_cuda("the registered CUDA kernel, opcheck and torch.compile of the Triton path (fake tensors have no "
               "data for the interpreter)")
    x, weight, bn = make_inputs(2, 24, 9, 10, 3, True)
    wf, bf = folded(weight, bn)
    x, wf, bf = x.cuda(), wf.cuda(), bf.cuda()
    for op in (torch.ops.effnet_kernels.dwconv_bias_swish.default, torch.ops.effnet_kernels.dwconv_bias_swish_pool.default):
        torch.library.opcheck(op, (x, wf, bf, 1, "symmetric"))
    eager = ops.dwconv_bias_swish(x, wf, bf)
    compiled = torch.compile(lambda t: ops.dwconv_bias_swish(t, wf, bf), fullgraph=True)
    assert torch.equal(compiled(x), eager)
    if torch.cuda.device_count() > 1:
        y1 = ops.dwconv_bias_swish(x.to("cuda:1"), wf.to("cuda:1"), bf.to("cuda:1"))
        assert y1.device == torch.device("cuda:1") and torch.equal(y1.cpu(), eager.cpu())
