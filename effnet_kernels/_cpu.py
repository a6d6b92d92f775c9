"""torch ↔ C++ bridge for the CPU kernels: validates tensors, allocates outputs, passes pointers.

The C++ core is torch-free: it receives data addresses, shapes and element strides.
"""
from __future__ import annotations

import numbers
from typing import Tuple

import torch

from ._ext import require_cpp
from .padding import check_padding, pad_amounts


def _check_tensor(t, name: str, dim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name} must be float32 for the C++ CPU kernels, got {t.dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU for the C++ kernels, got device {t.device}")
    if t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")
    return t


def _check_stride(stride) -> int:
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral):
        raise TypeError(f"stride must be the int 1 or 2, got {type(stride).__name__} {stride!r}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    return int(stride)


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is channels_last and not also NCHW-contiguous, NCHW otherwise."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def check_dwconv_args(x, weight, bias, stride, padding) -> Tuple[int, int, str]:
    """Validate depthwise-conv arguments; returns (k, stride, padding)."""
    _check_tensor(x, "x", 4)
    _check_tensor(weight, "weight", 4)
    _check_tensor(bias, "bias", 1)
    c = x.shape[1]
    if c < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"x must have C, H, W >= 1, got shape {tuple(x.shape)}")
    k = weight.shape[-1]
    if weight.shape[0] != c or weight.shape[1] != 1 or weight.shape[2] != k:
        raise ValueError(f"weight must have shape (C, 1, k, k) = ({c}, 1, k, k) for x with C={c}, "
                         f"got {tuple(weight.shape)}")
    if k % 2 != 1:
        raise ValueError(f"weight kernel size k must be odd, got k={k}")
    if bias.shape[0] != c:
        raise ValueError(f"bias must have shape ({c},) for x with C={c}, got {tuple(bias.shape)}")
    return k, _check_stride(stride), check_padding(padding)


def dwconv_bias_swish_scalar(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                             padding: str = "symmetric", pool: bool = False):
    """y = silu(depthwise_conv2d(x, weight) + bias) by the scalar C++ reference micro-kernel.

    Returns y, or (y, pooled) with pooled the (N, C) mean of y over H×W when ``pool`` is true.
    """
    C = require_cpp("dwconv_bias_swish_scalar")
    k, stride, padding = check_dwconv_args(x, weight, bias, stride, padding)
    n, c, h, w = x.shape
    top, _, out_h = pad_amounts(h, k, stride, padding)
    left, _, out_w = pad_amounts(w, k, stride, padding)
    y = torch.empty((n, c, out_h, out_w), dtype=torch.float32, memory_format=output_memory_format(x))
    pooled = torch.empty((n, c), dtype=torch.float32) if pool else None
    weight = weight.contiguous()
    bias = bias.contiguous()
    C.dwconv_bias_swish_scalar(
        x.data_ptr(), list(x.shape), list(x.stride()), weight.data_ptr(), bias.data_ptr(), k, stride, top, left,
        y.data_ptr(), out_h, out_w, list(y.stride()), pooled.data_ptr() if pool else 0)
    return (y, pooled) if pool else y
