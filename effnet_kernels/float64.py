"""A module run in float64 without copying it, its depthwise and 1x1 convolutions computed faster.

The proofs of :func:`effnet_kernels.fuse` (and the tests) take a source module's float64 output as the truth.
PyTorch's CPU convolution in float64 has no oneDNN path: a depthwise conv loops over its channels one small
GEMM each (5-30x its fp32 time at EfficientNet's shapes, measured on a 2-vCPU AMD EPYC), and a 1x1 conv on a
small image runs far below the GEMM's rate. Inside :func:`float64_convs`, float64 CPU calls of
``torch.conv2d`` (``F.conv2d``, ``nn.Conv2d``) are computed as

- depthwise (``groups == in_channels == out_channels``, any kernel, stride and zero padding, dilation 1) on up
  to 4096 output pixels: the sum over the k x k taps of a strided view of the padded input times the tap's
  per-channel weight (k*k vectorized multiply-adds);
- 1x1 without padding, any stride, on images of up to 256 output pixels: one matrix product over
  (N*H*W, C_in) x (C_in, C_out);

every other call (dense k x k, dilation, padding modes given as strings, other dtypes and devices) is passed to
PyTorch unchanged. Both are float64 sums of the same products in another order (relative differences ~1e-15,
far below the fp32 errors they measure); tests/test_float64.py checks them against PyTorch's own float64
convolution on every case they take and on the ones they pass on.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

__all__ = ["float64_convs", "float64_call"]


# Where the faster forms are faster (measured on a 2-vCPU AMD EPYC, float64, 2 threads): PyTorch's depthwise
# costs a small GEMM per channel, the taps' passes cost memory traffic per pixel: faster up to about 4096
# output pixels per channel over the batch (3 x 1344 x 15 x 15: 45 vs 51 ms; 3 x 3840 x 8 x 8: 16 vs 90;
# 3 x 144 x 33 x 33: 3.4 vs 6.3), slower beyond (3 x 192 x 113 x 113: 109 vs 78 ms). PyTorch runs a 1x1 conv as one GEMM per image; one GEMM over the
# whole batch is faster on small images (3 x 816 x 5 x 5 to 3264: 17 vs 42 ms) and no faster from 16 x 16 up.
_DEPTHWISE_MAX_PIXELS = 4096
_POINTWISE_MAX_PIXELS = 256


def _pair(v):
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return tuple(v)
    return None


def _conv_args(args, kwargs):
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = (None, None, None, 1, 0, 1, 1)
    vals = dict(zip(names, defaults))
    vals.update(zip(names, args))
    vals.update(kwargs)
    return vals


def _fast_conv(a) -> "torch.Tensor | None":
    """The conv ``a`` (conv2d's arguments by name) by the faster float64 forms, or None to leave it to PyTorch."""
    x, w, b = a["input"], a["weight"], a["bias"]
    if not (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and x.dtype == torch.float64
            and w.dtype == torch.float64 and x.device.type == "cpu" and w.device.type == "cpu" and x.dim() == 4
            and w.dim() == 4 and (b is None or (isinstance(b, torch.Tensor) and b.dtype == torch.float64))):
        return None
    stride, pad, dil = _pair(a["stride"]), _pair(a["padding"]), _pair(a["dilation"])
    groups = a["groups"]
    if stride is None or pad is None or dil != (1, 1) or not isinstance(groups, int):
        return None
    n, c, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    sh, sw = stride
    ph, pw = pad
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    if ho <= 0 or wo <= 0 or n == 0:
        return None
    if groups == c == cout and cin_g == 1 and c > 1 and n * ho * wo <= _DEPTHWISE_MAX_PIXELS:  # depthwise
        xp = torch.nn.functional.pad(x, (pw, pw, ph, ph)) if ph or pw else x
        out = None
        for i in range(kh):
            for j in range(kw):
                tap = xp[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                wij = w[:, 0, i, j].view(1, c, 1, 1)
                out = tap * wij if out is None else out.addcmul_(tap, wij)
    elif groups == 1 and kh == kw == 1 and ph == pw == 0 and cin_g == c and ho * wo <= _POINTWISE_MAX_PIXELS:
        xs = x[:, :, ::sh, ::sw] if (sh, sw) != (1, 1) else x
        rows = xs.permute(0, 2, 3, 1).reshape(-1, c)
        out = torch.mm(rows, w.reshape(cout, c).t()).view(n, ho, wo, cout).permute(0, 3, 1, 2)
    else:
        return None
    if b is not None:
        out = out + b.view(1, -1, 1, 1)
    # (PyTorch returns the memory format of its input; its callers may view the result)
    fmt = torch.channels_last if (x.is_contiguous(memory_format=torch.channels_last)
                                  and not x.is_contiguous()) else torch.contiguous_format
    return out.contiguous(memory_format=fmt)


class _Float64Convs(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d:
            out = _fast_conv(_conv_args(args, kwargs))
            if out is not None:
                return out
        return func(*args, **kwargs)


@contextlib.contextmanager
def float64_convs():
    """Within it, float64 CPU depthwise and 1x1 convolutions take the faster forms above."""
    with _Float64Convs():
        yield


def float64_call(module: nn.Module, *args, **kwargs):
    """``module(*args, **kwargs)`` with its floating-point parameters and buffers in float64 (what
    ``copy.deepcopy(module).double()(*args, **kwargs)`` computes, without copying the module), under
    :func:`float64_convs`. The caller gives float64 inputs."""
    state = {n: (t.double() if t.is_floating_point() else t)
             for n, t in list(module.named_parameters()) + list(module.named_buffers())}
    with float64_convs():
        return torch.func.functional_call(module, state, args, kwargs, tie_weights=True, strict=False)
