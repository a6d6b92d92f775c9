"""Pure-PyTorch eager versions of the fused ops: the baseline, the test oracle and the fallback.

They run in whatever dtype they are given (float64 for test references).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .padding import pad_amounts_unchecked

__all__ = ["ACTS", "GATES", "activation", "gate_activation", "fold_bn", "pad_input", "dwconv_bias_swish",
           "dwconv_bias_swish_pool", "dwconv_bn_swish", "se_gate", "squeeze_excite", "se_project"]

# The activations the fused kernels apply (after a depthwise conv, a 1x1 / stem / head conv, and inside an SE
# between its two 1x1 convs), and the SE gates. Each is eager PyTorch's function, with its rules for NaN and
# +-inf: relu6 clamps to [0, 6], hardswish is x * relu6(x + 3) / 6 (so hardswish(-inf) is NaN), hardsigmoid
# relu6(x + 3) / 6; NaN stays NaN in every one.
ACTS = ("silu", "relu", "relu6", "hardswish", "identity")
GATES = ("sigmoid", "hardsigmoid")


def activation(x: torch.Tensor, act: str = "silu") -> torch.Tensor:
    """Eager PyTorch's ``act`` (one of :data:`ACTS`) applied to x."""
    if act == "silu":
        return F.silu(x)
    if act == "relu":
        return F.relu(x)
    if act == "relu6":
        return F.relu6(x)
    if act == "hardswish":
        return F.hardswish(x)
    if act == "identity":
        return x
    raise ValueError(f"act must be one of {ACTS}, got {act!r}")


def gate_activation(z: torch.Tensor, gate: str = "sigmoid") -> torch.Tensor:
    """Eager PyTorch's SE gate ``gate`` (one of :data:`GATES`) applied to z."""
    if gate == "sigmoid":
        return torch.sigmoid(z)
    if gate == "hardsigmoid":
        return F.hardsigmoid(z)
    raise ValueError(f"gate must be one of {GATES}, got {gate!r}")


def fold_bn(weight: torch.Tensor, bn_weight: torch.Tensor, bn_bias: torch.Tensor, bn_mean: torch.Tensor,
            bn_var: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fold eval-mode BatchNorm into the preceding conv: returns (weight', bias')."""
    scale = bn_weight / torch.sqrt(bn_var + eps)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.reshape(shape), bn_bias - bn_mean * scale


def pad_input(x: torch.Tensor, kernel: int, stride: int, padding: str) -> Tuple[torch.Tensor, int]:
    """Pad ``x`` explicitly when ``padding`` is asymmetric; returns (input, conv2d padding)."""
    top, bottom, _ = pad_amounts_unchecked(x.shape[-2], kernel, stride, padding)
    left, right, _ = pad_amounts_unchecked(x.shape[-1], kernel, stride, padding)
    if top == bottom and left == right and top == left:
        return x, top
    return F.pad(x, (left, right, top, bottom)), 0


def dwconv_bias_swish(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                      padding: str = "symmetric", act: str = "silu") -> torch.Tensor:
    """act(depthwise_conv2d(x, weight) + bias) (SiLU by default); ``weight`` is (C, 1, k, k), BN already folded."""
    xp, pad = pad_input(x, weight.shape[-1], stride, padding)
    return activation(F.conv2d(xp, weight, bias, stride=stride, padding=pad, groups=x.shape[1]), act)


def dwconv_bias_swish_pool(x, weight, bias, stride: int = 1, padding: str = "symmetric", act: str = "silu"):
    """(y, pooled): ``dwconv_bias_swish`` and the fp32-or-wider (N, C) mean of y over H×W."""
    y = dwconv_bias_swish(x, weight, bias, stride, padding, act)
    acc = torch.promote_types(y.dtype, torch.float32)
    return y, y.to(acc).mean(dim=(2, 3))


def dwconv_bn_swish(x, weight, bn_weight, bn_bias, bn_mean, bn_var, eps: float = 1e-5, stride: int = 1,
                    padding: str = "symmetric") -> torch.Tensor:
    """silu(batch_norm_eval(depthwise_conv2d(x, weight))), computed unfused, as eager PyTorch does."""
    xp, pad = pad_input(x, weight.shape[-1], stride, padding)
    z = F.conv2d(xp, weight, None, stride=stride, padding=pad, groups=x.shape[1])
    return F.silu(F.batch_norm(z, bn_mean, bn_var, bn_weight, bn_bias, training=False, eps=eps))


def _matrix(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], w.shape[1])  # (O, I, 1, 1) or (O, I) -> (O, I)


def se_gate(pooled: torch.Tensor, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act: str = "silu",
            gate: str = "sigmoid") -> torch.Tensor:
    """gate(expand(inner_act(reduce(pooled)))) for (N, C) means (sigmoid and SiLU by default: EfficientNet's;
    MobileNetV3's is hardsigmoid and ReLU), in the weights' dtype promoted with pooled's."""
    dt = torch.promote_types(pooled.dtype, reduce_weight.dtype)
    h = activation(F.linear(pooled.to(dt), _matrix(reduce_weight).to(dt), reduce_bias.to(dt)), inner_act)
    return gate_activation(F.linear(h, _matrix(expand_weight).to(dt), expand_bias.to(dt)), gate)


def squeeze_excite(x: torch.Tensor, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act: str = "silu",
                   gate: str = "sigmoid") -> torch.Tensor:
    """x * gate(expand(inner_act(reduce(mean_hw(x))))): torchvision's SqueezeExcitation, timm's SqueezeExcite,
    as eager computes them (pool, two 1×1 convs, scale, in x's dtype)."""
    s = F.adaptive_avg_pool2d(x, 1)
    s = activation(F.conv2d(s, reduce_weight.reshape(reduce_weight.shape[0], -1, 1, 1), reduce_bias), inner_act)
    s = gate_activation(F.conv2d(s, expand_weight.reshape(expand_weight.shape[0], -1, 1, 1), expand_bias), gate)
    return x * s


def se_project(y: torch.Tensor, pooled: torch.Tensor, reduce_weight, reduce_bias, expand_weight, expand_bias,
               proj_weight, proj_bias, residual=None, inner_act: str = "silu", gate: str = "sigmoid") -> torch.Tensor:
    """conv1x1(y * gate(pooled), proj_weight) + proj_bias (+ residual): an MBConv block's SE, projection
    (BN folded into proj_weight/proj_bias) and skip connection, unfused."""
    g = se_gate(pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act, gate).to(y.dtype)
    out = F.conv2d(y * g[:, :, None, None], proj_weight.reshape(proj_weight.shape[0], -1, 1, 1), proj_bias)
    return out if residual is None else out + residual
