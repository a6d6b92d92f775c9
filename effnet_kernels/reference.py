"""Pure-PyTorch eager versions of the fused ops: the baseline, the test oracle and the fallback.

They run in whatever dtype they are given (float64 for test references).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .padding import pad_amounts

__all__ = ["fold_bn", "pad_input", "dwconv_bias_swish", "dwconv_bias_swish_pool", "dwconv_bn_swish"]


def fold_bn(weight: torch.Tensor, bn_weight: torch.Tensor, bn_bias: torch.Tensor, bn_mean: torch.Tensor,
            bn_var: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fold eval-mode BatchNorm into the preceding conv: returns (weight', bias')."""
    scale = bn_weight / torch.sqrt(bn_var + eps)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.reshape(shape), bn_bias - bn_mean * scale


def pad_input(x: torch.Tensor, kernel: int, stride: int, padding: str) -> Tuple[torch.Tensor, int]:
    """Pad ``x`` explicitly when ``padding`` is asymmetric; returns (input, conv2d padding)."""
    top, bottom, _ = pad_amounts(x.shape[-2], kernel, stride, padding)
    left, right, _ = pad_amounts(x.shape[-1], kernel, stride, padding)
    if top == bottom and left == right and top == left:
        return x, top
    return F.pad(x, (left, right, top, bottom)), 0


def dwconv_bias_swish(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                      padding: str = "symmetric") -> torch.Tensor:
    """silu(depthwise_conv2d(x, weight) + bias); ``weight`` is (C, 1, k, k), BN already folded."""
    xp, pad = pad_input(x, weight.shape[-1], stride, padding)
    return F.silu(F.conv2d(xp, weight, bias, stride=stride, padding=pad, groups=x.shape[1]))


def dwconv_bias_swish_pool(x, weight, bias, stride: int = 1, padding: str = "symmetric"):
    """(y, pooled): ``dwconv_bias_swish`` and the fp32-or-wider (N, C) mean of y over H×W."""
    y = dwconv_bias_swish(x, weight, bias, stride, padding)
    acc = torch.promote_types(y.dtype, torch.float32)
    return y, y.to(acc).mean(dim=(2, 3))


def dwconv_bn_swish(x, weight, bn_weight, bn_bias, bn_mean, bn_var, eps: float = 1e-5, stride: int = 1,
                    padding: str = "symmetric") -> torch.Tensor:
    """silu(batch_norm_eval(depthwise_conv2d(x, weight))), computed unfused, as eager PyTorch does."""
    xp, pad = pad_input(x, weight.shape[-1], stride, padding)
    z = F.conv2d(xp, weight, None, stride=stride, padding=pad, groups=x.shape[1])
    return F.silu(F.batch_norm(z, bn_mean, bn_var, bn_weight, bn_bias, training=False, eps=eps))
